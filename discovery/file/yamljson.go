package file

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unique"

	yaml "go.yaml.in/yaml/v3"
)

// maxExpandedValues bounds how many JSON values one document may expand to.
// Aliases let a few lines of YAML describe gigabytes ("billion laughs"); a
// real manifest is far below this.
const maxExpandedValues = 100_000

// fieldIndex remembers where each field of one document was written, so a
// problem found later (by the Kubernetes decoder or by policy validation)
// can point at the line of the field instead of the line of the document.
type fieldIndex struct {
	docLine int
	// lines maps a field path ("spec.ports[0].targetPort") to its line.
	lines map[string]int
	// spans lists where each JSON value starts in the generated JSON, in
	// increasing order, so a decoder's byte offset leads back to a field.
	spans []span
}

type span struct {
	offset, end int
	path        string
	line        int
}

// line returns the line of path, or of the nearest enclosing field that is
// known, or of the document. Map keys may be written either as ".key" or
// "[key]" by different validators; both are indexed.
func (ix *fieldIndex) line(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := ix.lines[p]; ok {
			return l
		}
	}
	return ix.docLine
}

// lineUnder is like line for a path that may be written relative to
// prefix ("mtls.mode" for "spec.mtls.mode"), as validators that were handed
// only the spec report it.
func (ix *fieldIndex) lineUnder(prefix, path string) int {
	if path == "" {
		return ix.docLine
	}
	if l, ok := ix.lines[path]; ok {
		return l
	}
	if l, ok := ix.lines[prefix+path]; ok {
		return l
	}
	if strings.HasPrefix(path, prefix) {
		return ix.line(path)
	}
	return ix.line(prefix + path)
}

// find locates the value a type error is about. The offset is right for
// fields decoded by encoding/json itself; for types with their own decoder
// (intstr, Quantity, Time) it is relative to that value, so the span it
// leads to is only trusted when it agrees with the error's field (a path
// without indices), and otherwise the first field with that path is taken.
// The offset points just past the value encoding/json could not use, so the
// value is the last one that starts before it.
func (ix *fieldIndex) find(field string, offset int64, omit map[string]bool) (span, bool) {
	i := sort.Search(len(ix.spans), func(i int) bool { return int64(ix.spans[i].offset) >= offset })
	if i > 0 {
		if s := ix.spans[i-1]; s.path != "" && stripIndices(s.path) == field && !omit[s.path] {
			return s, true
		}
	}
	for _, s := range ix.spans {
		if s.path != "" && stripIndices(s.path) == field && !omit[s.path] {
			return s, true
		}
	}
	return span{}, false
}

// stripIndices turns "spec.ports[0].port" into "spec.ports.port", the form
// encoding/json uses in its errors.
func stripIndices(path string) string {
	var b strings.Builder
	depth := 0
	for _, r := range path {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// parentPath drops the last ".name" or "[index]" of a field path.
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

// fieldIssue is a problem with one field found while converting YAML.
type fieldIssue struct {
	path, msg string
	line      int
}

// toJSON converts one YAML node to JSON the way Kubernetes does (keys are
// always strings, so Istio's `portLevelMtls: {8080: ...}` works), recording
// the line of every field. Problems that make the document unusable are
// returned as issues; the JSON is then incomplete and must not be used.
// Fields whose paths are in omit are written as null, which a decoder
// leaves at their zero value: that is how a value already reported as
// wrong is kept from hiding the problems after it.
func toJSON(n *yaml.Node, omit map[string]bool) ([]byte, *fieldIndex, []fieldIssue) {
	c := &converter{ix: &fieldIndex{docLine: n.Line, lines: map[string]int{}}, active: map[*yaml.Node]bool{}, omit: omit}
	c.value(n, "")
	return c.buf.Bytes(), c.ix, c.issues
}

type converter struct {
	buf    bytes.Buffer
	ix     *fieldIndex
	issues []fieldIssue
	count  int
	// active holds the anchors being expanded, to refuse an alias that
	// contains itself instead of recursing forever.
	active map[*yaml.Node]bool
	omit   map[string]bool
}

func (c *converter) fail(n *yaml.Node, path, format string, args ...any) {
	c.issues = append(c.issues, fieldIssue{path: path, line: n.Line, msg: fmt.Sprintf(format, args...)})
}

func (c *converter) value(n *yaml.Node, path string) {
	c.count++
	if c.count > maxExpandedValues {
		if c.count == maxExpandedValues+1 {
			c.fail(n, path, "the document expands to more than %d values (YAML aliases?); split it up", maxExpandedValues)
		}
		c.buf.WriteString("null")
		return
	}
	if _, seen := c.ix.lines[path]; !seen && path != "" {
		c.ix.lines[path] = n.Line
	}
	idx := len(c.ix.spans)
	c.ix.spans = append(c.ix.spans, span{offset: c.buf.Len(), path: path, line: n.Line})
	defer func() { c.ix.spans[idx].end = c.buf.Len() }()
	if c.omit[path] {
		c.buf.WriteString("null")
		return
	}
	if n.Anchor != "" {
		// An anchored value may not contain an alias to itself.
		c.active[n] = true
		defer delete(c.active, n)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			c.buf.WriteString("null")
			return
		}
		c.value(n.Content[0], path)
	case yaml.AliasNode:
		if n.Alias == nil || c.active[n.Alias] {
			c.fail(n, path, "alias *%s refers to a value that contains itself", n.Value)
			c.buf.WriteString("null")
			return
		}
		c.active[n.Alias] = true
		c.value(n.Alias, path)
		delete(c.active, n.Alias)
	case yaml.MappingNode:
		c.mapping(n, path)
	case yaml.SequenceNode:
		c.buf.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				c.buf.WriteByte(',')
			}
			c.value(item, unique.Make(path+"["+strconv.Itoa(i)+"]").Value())
		}
		c.buf.WriteByte(']')
	case yaml.ScalarNode:
		c.scalar(n, path)
	default:
		c.fail(n, path, "unexpected YAML node")
		c.buf.WriteString("null")
	}
}

func (c *converter) mapping(n *yaml.Node, path string) {
	c.buf.WriteByte('{')
	seen := map[string]int{}
	first := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			c.fail(k, path, "a mapping key must be a plain value, not a list or a mapping")
			continue
		}
		if k.ShortTag() == "!!merge" {
			c.fail(k, path, "YAML merge keys (<<) are not supported; write the fields out")
			continue
		}
		key := k.Value
		child := key
		if path != "" {
			child = path + "." + key
		}
		if prev, dup := seen[key]; dup {
			c.fail(k, child, "field %q appears twice in one mapping (first at line %d); remove one", key, prev)
			continue
		}
		seen[key] = k.Line
		// Index map keys in the bracket form too: validators that
		// report map entries write "portLevelMtls[8080]".
		// Paths are interned: thousands of documents of one kind share
		// them, and the index outlives the parse.
		child = unique.Make(child).Value()
		if path != "" {
			c.ix.lines[unique.Make(path+"["+key+"]").Value()] = k.Line
		}
		c.ix.lines[child] = k.Line
		if !first {
			c.buf.WriteByte(',')
		}
		first = false
		kb, _ := json.Marshal(key) // a string always marshals
		c.buf.Write(kb)
		c.buf.WriteByte(':')
		c.value(v, child)
	}
	c.buf.WriteByte('}')
}

func (c *converter) scalar(n *yaml.Node, path string) {
	switch n.ShortTag() {
	case "!!null":
		c.buf.WriteString("null")
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			c.fail(n, path, "%q is not a boolean", n.Value)
			c.buf.WriteString("null")
			return
		}
		c.buf.WriteString(strconv.FormatBool(b))
	case "!!int":
		var v any
		if err := n.Decode(&v); err != nil {
			c.fail(n, path, "%q is not an integer JSON can hold", n.Value)
			c.buf.WriteString("null")
			return
		}
		switch x := v.(type) {
		case int:
			c.buf.WriteString(strconv.Itoa(x))
		case int64:
			c.buf.WriteString(strconv.FormatInt(x, 10))
		case uint64:
			c.buf.WriteString(strconv.FormatUint(x, 10))
		default:
			// Too large for 64 bits: yaml.v3 falls back to a float or string.
			c.fail(n, path, "integer %s is out of range", n.Value)
			c.buf.WriteString("null")
		}
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			c.fail(n, path, "%q is not a finite number", n.Value)
			c.buf.WriteString("null")
			return
		}
		c.buf.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
	default:
		// Strings, timestamps (Kubernetes keeps them as RFC 3339 text),
		// binary and custom tags all stay text.
		b, _ := json.Marshal(n.Value)
		c.buf.Write(b)
	}
}
