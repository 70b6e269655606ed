// Command testreport reads `go test -json` and prints what a reader of a
// CI log needs: one line per package, the full output of every failed
// test, and every skipped test with the reason it gave, so that a skip
// is never mistaken for a pass. It exits 1 when anything failed (or the
// input has no test results at all).
//
//	go test -json ./... | go run ./e2e/testreport [-skipped-steps FILE]
//
// FILE, when it exists, lists steps outside `go test` that were skipped
// (the race run without a C compiler), one per line; they are reported
// with the skipped tests.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action     string
	Package    string
	ImportPath string // of build-output events
	Test       string
	Output     string
	Elapsed    float64
}

func main() {
	steps := flag.String("skipped-steps", "", "a file listing skipped steps outside go test, one per line")
	flag.Parse()
	var skippedSteps []string
	if *steps != "" {
		if b, err := os.ReadFile(*steps); err == nil {
			for l := range strings.Lines(string(b)) {
				if l = strings.TrimSpace(l); l != "" {
					skippedSteps = append(skippedSteps, l)
				}
			}
		}
	}
	os.Exit(run(os.Stdin, os.Stdout, skippedSteps...))
}

func run(in io.Reader, out io.Writer, skippedSteps ...string) int {
	type key struct{ pkg, test string }
	outputs := map[key][]string{}
	var skipped, failed []key
	reasons := map[key]string{}
	packages, failedPackages := 0, 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not JSON: anything a tool printed around the tests.
			fmt.Fprintln(out, sc.Text())
			continue
		}
		if e.Action == "build-output" {
			// Compile errors (Go 1.24 and later report them as
			// events of the package being built).
			fmt.Fprint(out, e.ImportPath, ": ", e.Output)
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output":
			outputs[k] = append(outputs[k], e.Output)
		case "skip":
			if e.Test != "" {
				skipped = append(skipped, k)
				reasons[k] = skipReason(outputs[k])
			}
		case "fail":
			if e.Test == "" {
				packages++
				failedPackages++
				fmt.Fprintf(out, "FAIL\t%s\t%.1fs\n", e.Package, e.Elapsed)
				// A package that failed outside any test (build
				// error, panic, timeout) has its output here.
				for _, l := range outputs[k] {
					fmt.Fprint(out, "\t", l)
				}
			} else {
				failed = append(failed, k)
			}
		case "pass":
			if e.Test == "" {
				packages++
				fmt.Fprintf(out, "ok\t%s\t%.1fs\n", e.Package, e.Elapsed)
			}
		}
		if e.Test == "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip") {
			delete(outputs, k)
		}
	}
	for _, k := range failed {
		fmt.Fprintf(out, "\n--- FAIL: %s (%s)\n", k.test, k.pkg)
		for _, l := range outputs[k] {
			fmt.Fprint(out, "    ", l)
		}
	}
	if len(skipped)+len(skippedSteps) > 0 {
		fmt.Fprintf(out, "\n%d tests or steps were SKIPPED (a skip is not a pass):\n", len(skipped)+len(skippedSteps))
		slices.SortFunc(skipped, func(a, b key) int { return strings.Compare(a.pkg+a.test, b.pkg+b.test) })
		for _, k := range skipped {
			fmt.Fprintf(out, "  SKIP %s %s: %s\n", k.pkg, k.test, reasons[k])
		}
		for _, s := range skippedSteps {
			fmt.Fprintf(out, "  SKIP (step) %s\n", s)
		}
	}
	switch {
	case packages == 0:
		fmt.Fprintln(out, "testreport: no test results in the input")
		return 1
	case failedPackages > 0 || len(failed) > 0:
		fmt.Fprintf(out, "\n%d of %d packages FAILED\n", failedPackages, packages)
		return 1
	}
	fmt.Fprintf(out, "\nall %d packages passed\n", packages)
	return 0
}

// skipReason is the message a test gave t.Skip: its last output line
// other than the --- SKIP line itself.
func skipReason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "--- SKIP") || strings.HasPrefix(l, "=== ") {
			continue
		}
		// t.Skip output is "file.go:NN: message".
		if _, msg, ok := strings.Cut(l, ": "); ok && strings.Contains(l[:len(l)-len(msg)], ".go:") {
			return msg
		}
		return l
	}
	return "(no reason given)"
}
