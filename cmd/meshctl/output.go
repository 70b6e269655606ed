package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// Output formats of the commands that print resources.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

// checkFormat rejects an -o value before any work is done.
func checkFormat(format string, allowed ...string) error {
	for _, a := range allowed {
		if format == a {
			return nil
		}
	}
	return fmt.Errorf("-o %q is not one of %s", format, strings.Join(allowed, ", "))
}

// parseInterleaved parses flags that may come before, between or after
// positional arguments ("proxy-config listeners pod --port 15006"), as
// istioctl users type them. The flag package alone stops at the first
// positional argument.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		// After "--" everything is positional.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// table prints aligned columns; the header is upper case, as istioctl's.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	line := func(cells []string) {
		for i, c := range cells {
			if c == "" {
				c = "-"
			}
			// A tab or newline inside a cell would break the columns.
			c = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprint(tw, "\n")
	}
	line(t.header)
	for _, r := range t.rows {
		line(r)
	}
	return tw.Flush()
}

// writeProtos prints messages as one JSON array (protojson field names,
// as Envoy's admin and istioctl print them) or as the same in YAML.
func writeProtos(w io.Writer, format string, msgs []proto.Message) error {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, m := range msgs {
		b, err := protojson.Marshal(m)
		if err != nil {
			return fmt.Errorf("rendering %T as JSON: %w", m, err)
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(b)
	}
	buf.WriteByte(']')
	// protojson's spacing is deliberately unstable; normalise it.
	var out bytes.Buffer
	if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
		return fmt.Errorf("formatting JSON: %w", err)
	}
	switch format {
	case formatJSON:
		out.WriteByte('\n')
		_, err := w.Write(out.Bytes())
		return err
	case formatYAML:
		y, err := yaml.JSONToYAML(out.Bytes())
		if err != nil {
			return fmt.Errorf("converting JSON to YAML: %w", err)
		}
		_, err = w.Write(y)
		return err
	}
	return errors.New("unknown output format " + format)
}
