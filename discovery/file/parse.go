package file

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	yaml2 "go.yaml.in/yaml/v2"
	yaml "go.yaml.in/yaml/v3"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// File is one manifest file: its path (used only in problem locations) and
// its bytes.
type File struct {
	Path string
	Data []byte
	// Err, when set, says why the entry at Path cannot be used (a named
	// pipe, a dangling link, a file too large or unreadable, a directory
	// that cannot be listed); Data is then empty, and Build reports Err
	// as an error about Path.
	Err error
	// dir marks an Err about a directory rather than a file.
	dir bool
}

// document is one YAML document of a file, converted to JSON with the line
// of every field remembered.
type document struct {
	file string
	line int
	// root is the kind of the document's top node; only mappings are objects.
	root   yaml.Kind
	ix     *fieldIndex
	issues []fieldIssue

	// memo keeps what decoding the document produced. A document never
	// changes once parsed, and an unchanged file keeps its documents, so
	// a directory of thousands of objects is decoded once, not on every
	// change to one of them. A pointer, shared by copies of the document.
	memo *docMemo
}

// docMemo is what decoding a document produced: its header, and the
// object of a strict decode that found nothing wrong. node is the parsed
// YAML and json the document as JSON, with the offsets of its values in
// the field index: needed to decode it and to explain a decode that fails,
// and dropped once the document has decoded cleanly. The field index keeps
// the line of every field, for problems found later.
type docMemo struct {
	node    *yaml.Node
	json    []byte
	hdr     *identity
	decoded any
	// checked: the checks that the document alone decides (a Pod's or a
	// Service's fields) found nothing wrong.
	checked bool
}

// yamlLine finds the line yaml.v3 puts in its syntax errors
// ("yaml: line 7: did not find expected key").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// parseFile splits a file into its documents. A YAML syntax error anywhere
// makes the whole file unusable, because the parser cannot tell where the
// broken document ends; the file is then reported with the line of the error
// and contributes no objects. So is an entry that could not be read, and a
// file in a wide encoding (see wideEncoding). A UTF-8 byte-order mark is
// accepted and ignored, as kubectl accepts it.
func parseFile(f File) ([]document, *model.Problem) {
	if f.Err != nil {
		return nil, entryProblem(f)
	}
	if enc := wideEncoding(f.Data); enc != "" {
		return nil, &model.Problem{Severity: policy.SeverityError, Location: policy.Location{File: f.Path, Line: 1},
			Message: "the file's encoding is " + enc + "; save as UTF-8"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(f.Data))
	var docs []document
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, yamlProblem(f.Path, f.Data, err)
		}
		if isEmptyDocument(&n) {
			continue
		}
		root := n.Content[0]
		data, ix, issues := toJSON(root, nil)
		docs = append(docs, document{file: f.Path, line: root.Line, root: root.Kind, ix: ix, issues: issues, memo: &docMemo{node: root, json: data}})
	}
}

// entryProblem is the error about an entry that could not be read.
func entryProblem(f File) *model.Problem {
	return &model.Problem{Severity: policy.SeverityError, Location: policy.Location{File: f.Path}, Message: f.Err.Error()}
}

// noManifestLoaded ends the problem about a directory that cannot be
// listed and had no files read from it before.
const noManifestLoaded = "; no manifest in it was loaded"

// wideEncoding names the encoding of data when it is UTF-16 or UTF-32,
// told by a byte-order mark or, without one, by the zero bytes ASCII
// text has in those encodings; it returns "" otherwise. YAML allows them,
// but kubectl, the API server and most tools expect UTF-8, and without a
// mark the parser would only complain of control characters. A file
// saved that way is refused with its encoding named, so the fix is plain.
func wideEncoding(data []byte) string {
	switch {
	case bytes.HasPrefix(data, []byte{0, 0, 0xFE, 0xFF}), bytes.HasPrefix(data, []byte{0xFF, 0xFE, 0, 0}):
		return "UTF-32"
	case bytes.HasPrefix(data, []byte{0xFE, 0xFF}), bytes.HasPrefix(data, []byte{0xFF, 0xFE}):
		return "UTF-16"
	case len(data) < 4:
		return ""
	case data[0] == 0 && data[1] == 0 && data[2] == 0 && data[3] != 0,
		data[0] != 0 && data[1] == 0 && data[2] == 0 && data[3] == 0:
		return "UTF-32"
	case data[0] == 0 && data[1] != 0, data[0] != 0 && data[1] == 0:
		return "UTF-16"
	}
	return ""
}

// isEmptyDocument reports whether a document holds nothing: only comments,
// a bare "---", or an explicit null. Such documents are common at the end of
// generated files and are skipped silently, as kubectl does.
func isEmptyDocument(n *yaml.Node) bool {
	if n.Kind != yaml.DocumentNode || len(n.Content) == 0 {
		return true
	}
	c := n.Content[0]
	return c.Kind == yaml.ScalarNode && c.ShortTag() == "!!null"
}

// yamlProblem describes a syntax error. yaml.v3 reports the line where the
// enclosing block starts, which can be far above the mistake; yaml.v2 (the
// same libyaml parser) reports the line where parsing failed. Both are
// given when they differ, the precise one first.
func yamlProblem(path string, data []byte, err error) *model.Problem {
	msg, line := splitYAMLError(err)
	if msg2, line2 := splitYAMLError(firstV2Error(data)); line2 > 0 && line2 != line && msg2 == msg {
		if line > 0 {
			msg += " (in the block that starts at line " + strconv.Itoa(line) + ")"
		}
		line = line2
	}
	if line == 0 {
		// Both parsers omit the line when the mark is on the first line
		// (they test the 0-based line for 0 to mean "unknown").
		line = 1
	}
	return &model.Problem{
		Severity: policy.SeverityError,
		Location: policy.Location{File: path, Line: line},
		Message:  "the file is not valid YAML: " + msg,
	}
}

// parserProblems are the messages of libyaml's parser (as opposed to its
// scanner). Both yaml.v2 and yaml.v3 print the line of a parser error
// counting from 0, so one is added to it.
var parserProblems = []string{
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"did not find expected '-' indicator",
	"did not find expected <document start>",
	"did not find expected <stream-start>",
	"did not find expected key",
	"did not find expected node content",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

// splitYAMLError returns the message of a YAML error and its line
// (counting from 1), or 0 if it names none.
func splitYAMLError(err error) (string, int) {
	if err == nil {
		return "", 0
	}
	msg := err.Error()
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return strings.TrimPrefix(msg, "yaml: "), 0
	}
	line, _ := strconv.Atoi(m[1])
	msg = msg[len(m[0]):]
	if slices.Contains(parserProblems, msg) {
		line++
	}
	return msg, line
}

// firstV2Error parses data with yaml.v2 and returns its first error.
func firstV2Error(data []byte) error {
	dec := yaml2.NewDecoder(bytes.NewReader(data))
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
