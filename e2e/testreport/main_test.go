package main

import (
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:9: boom\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:3: envoy not on PATH\n"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestB"}`,
		`{"Action":"fail","Package":"p","Elapsed":1.5}`,
		`{"Action":"pass","Package":"q","Elapsed":0.2}`,
	}, "\n")
	var out strings.Builder
	if code := run(strings.NewReader(in), &out); code != 1 {
		t.Errorf("exit code %d with a failed test, want 1", code)
	}
	for _, want := range []string{"FAIL\tp\t1.5s", "ok\tq\t0.2s", "--- FAIL: TestA (p)", "a_test.go:9: boom", "SKIP p TestB: envoy not on PATH", "1 of 2 packages FAILED"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run(strings.NewReader(`{"Action":"pass","Package":"q"}`), &out); code != 0 {
		t.Errorf("exit code %d when everything passed:\n%s", code, out.String())
	}
	if code := run(strings.NewReader(""), &out); code != 1 {
		t.Error("no results at all counted as a pass")
	}
}

func TestReportShowsCompileErrorsAndSkippedSteps(t *testing.T) {
	in := strings.Join([]string{
		`{"ImportPath":"p [p.test]","Action":"build-output","Output":"./a.go:3:1: undefined: x\n"}`,
		`{"ImportPath":"p [p.test]","Action":"build-fail"}`,
		`{"Action":"fail","Package":"p","Elapsed":0}`,
	}, "\n")
	var out strings.Builder
	if code := run(strings.NewReader(in), &out, "the race run: no C compiler"); code != 1 {
		t.Errorf("exit code %d for a package that does not build, want 1", code)
	}
	for _, want := range []string{"./a.go:3:1: undefined: x", "SKIP (step) the race run: no C compiler"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
