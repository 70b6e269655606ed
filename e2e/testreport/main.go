// Command testreport reads `go test -json` and prints what a reader of a
// CI log needs: one line per package, the full output of every failed
// test, and every skipped test with the reason it gave, so that a skip
// is never mistaken for a pass. It exits 1 when anything failed (or the
// input has no test results at all).
//
//	go test -json ./... | go run ./e2e/testreport
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	os.Exit(run(os.Stdin, os.Stdout))
}

func run(in io.Reader, out io.Writer) int {
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
			// Not JSON: the build's own messages (compile errors).
			fmt.Fprintln(out, sc.Text())
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
	if len(skipped) > 0 {
		fmt.Fprintf(out, "\n%d tests were SKIPPED (a skip is not a pass):\n", len(skipped))
		slices.SortFunc(skipped, func(a, b key) int { return strings.Compare(a.pkg+a.test, b.pkg+b.test) })
		for _, k := range skipped {
			fmt.Fprintf(out, "  SKIP %s %s: %s\n", k.pkg, k.test, reasons[k])
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
