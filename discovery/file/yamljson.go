package file

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unique"

	yaml "go.yaml.in/yaml/v3"
)

// Aliases let a few lines of YAML stand for gigabytes ("billion laughs").
// What a document holds without them is bounded by MaxFileSize; what its
// aliases add is bounded here: before anything is expanded, the values
// and the bytes of text its aliases stand for are counted (aliasTotal),
// and a document whose sum passes either bound is refused without
// expanding any alias. A manifest that shares a rule or a label set
// through an anchor stays far below both, and a document without aliases
// of any size is never refused by them.
const (
	maxAliasValues = 100_000
	maxAliasBytes  = 8 << 20
)

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
	total := c.aliasTotal(n)
	c.aliasRefused = total.values > maxAliasValues || total.bytes > maxAliasBytes
	c.value(n, "")
	return c.buf.Bytes(), c.ix, c.issues
}

type converter struct {
	buf    bytes.Buffer
	ix     *fieldIndex
	issues []fieldIssue
	// active holds the anchors being expanded, to refuse an alias that
	// contains itself instead of recursing forever.
	active map[*yaml.Node]bool
	omit   map[string]bool
	// unshared counts the list items past maxSharedIndex being converted.
	unshared int
	// aliasRefused is set when the document's aliases stand for more than
	// the bounds allow (see aliasTotal); every alias is then written as
	// null, and the one at which the sum passes a bound is reported:
	// aliasValues and aliasBytes sum what the aliases met so far stand for.
	aliasValues, aliasBytes     int
	aliasRefused, aliasReported bool
	// sizes memoizes expansion.
	sizes map[*yaml.Node]nodeSize
}

// nodeSize is what a YAML node expands to: its JSON values, and its text
// (scalars and keys, plus a little for punctuation) in bytes.
type nodeSize struct{ values, bytes int }

// expansion returns what n expands to, aliases included, without
// expanding it: each node's size is computed once, so a chain of anchors
// that would expand to billions of values is measured in as many steps as
// it has nodes. Sizes saturate well above the bounds instead of
// overflowing. An alias that contains itself counts as nothing here; it is
// refused when converted.
func (c *converter) expansion(n *yaml.Node) nodeSize {
	if size, ok := c.sizes[n]; ok {
		return size
	}
	if c.sizes == nil {
		c.sizes = map[*yaml.Node]nodeSize{}
	}
	c.sizes[n] = nodeSize{} // while n is being measured, an alias to it counts as nothing
	size := nodeSize{values: 1, bytes: len(n.Value) + 4}
	switch n.Kind {
	case yaml.AliasNode:
		size = nodeSize{}
		if n.Alias != nil {
			size = c.expansion(n.Alias)
		}
	case yaml.DocumentNode, yaml.MappingNode, yaml.SequenceNode:
		for _, child := range n.Content {
			cs := c.expansion(child)
			size.values = min(size.values+cs.values, 1<<40)
			size.bytes = min(size.bytes+cs.bytes, 1<<50)
		}
		if n.Kind == yaml.MappingNode {
			size.values -= len(n.Content) / 2 // keys are text, not values
		}
	}
	c.sizes[n] = size
	return size
}

// aliasTotal returns what the aliases written in the document starting at
// n stand for, all together: the aliases the conversion meets outside
// other aliases are exactly those in the tree, whose expansions include
// the aliases inside them.
func (c *converter) aliasTotal(n *yaml.Node) nodeSize {
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return nodeSize{}
		}
		return c.expansion(n.Alias)
	}
	var total nodeSize
	for _, child := range n.Content {
		cs := c.aliasTotal(child)
		total.values = min(total.values+cs.values, 1<<40)
		total.bytes = min(total.bytes+cs.bytes, 1<<50)
	}
	return total
}

// maxSharedIndex is the first list index whose paths are not interned.
// Paths of the first items of lists ("spec.ports[0].port") recur in
// every document of a kind and are worth sharing; those of a long list's
// later items ("spec.rules[9000].from[0]") belong to one document, and
// interning them would only cost time.
const maxSharedIndex = 16

// intern returns path interned, unless it is below a list item past
// maxSharedIndex.
func (c *converter) intern(path string) string {
	if c.unshared > 0 {
		return path
	}
	return unique.Make(path).Value()
}

func (c *converter) fail(n *yaml.Node, path, format string, args ...any) {
	c.issues = append(c.issues, fieldIssue{path: path, line: n.Line, msg: fmt.Sprintf(format, args...)})
}

func (c *converter) value(n *yaml.Node, path string) {
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
		if c.aliasRefused {
			size := c.expansion(n.Alias)
			c.aliasValues = min(c.aliasValues+size.values, 1<<40)
			c.aliasBytes = min(c.aliasBytes+size.bytes, 1<<50)
			if !c.aliasReported && (c.aliasValues > maxAliasValues || c.aliasBytes > maxAliasBytes) {
				c.aliasReported = true
				c.fail(n, path, "the YAML aliases of this document expand to more than %d values or %d MiB (an alias bomb?); "+
					"write the values out, or split the document", maxAliasValues, maxAliasBytes>>20)
			}
			c.buf.WriteString("null")
			return
		}
		c.active[n.Alias] = true
		c.value(n.Alias, path)
		delete(c.active, n.Alias)
	case yaml.MappingNode:
		if tag := n.ShortTag(); tag != "!!map" {
			c.badTag(n, path, tag)
			return
		}
		c.mapping(n, path)
	case yaml.SequenceNode:
		if tag := n.ShortTag(); tag != "!!seq" {
			c.badTag(n, path, tag)
			return
		}
		c.buf.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				c.buf.WriteByte(',')
			}
			child := path + "[" + strconv.Itoa(i) + "]"
			if i >= maxSharedIndex {
				c.unshared++
			}
			c.value(item, c.intern(child))
			if i >= maxSharedIndex {
				c.unshared--
			}
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
		if tag := k.ShortTag(); !slices.Contains(scalarTags, tag) {
			c.fail(k, path, "the YAML tag %s is not allowed on a key; keys are plain values", tag)
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
		child = c.intern(child)
		if path != "" {
			c.ix.lines[c.intern(path+"["+key+"]")] = k.Line
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

// scalarTags are the tags a scalar may carry: YAML's core schema, plus
// the timestamps and binary values YAML 1.1 files use, which stay text.
// Any other tag (`!!python/object`, `!Ref`, ...) asks for a type that
// Kubernetes manifests do not have, and some YAML libraries construct
// objects from such tags, so they are refused rather than read as text.
var scalarTags = []string{"!!str", "!!int", "!!float", "!!bool", "!!null", "!!timestamp", "!!binary"}

// badTag refuses a value with a tag outside scalarTags, !!map and !!seq.
func (c *converter) badTag(n *yaml.Node, path, tag string) {
	c.fail(n, path, "the YAML tag %s is not allowed; manifests use plain values, lists and mappings "+
		"(tags %s, !!map, !!seq)", tag, strings.Join(scalarTags, ", "))
	c.buf.WriteString("null")
}

func (c *converter) scalar(n *yaml.Node, path string) {
	if tag := n.ShortTag(); !slices.Contains(scalarTags, tag) {
		c.badTag(n, path, tag)
		return
	}
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
		// Strings, timestamps (Kubernetes keeps them as RFC 3339 text)
		// and binary values stay text.
		b, _ := json.Marshal(n.Value)
		c.buf.Write(b)
	}
}
