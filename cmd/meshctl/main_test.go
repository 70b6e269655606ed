package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// TestValidate runs validate on fixture directories and compares its whole
// output with a golden file, so the wording users see is reviewed in diffs.
func TestValidate(t *testing.T) {
	tests := []struct {
		golden   string
		args     []string
		wantCode int
	}{
		{golden: "valid", args: []string{"-f", "testdata/valid"}, wantCode: 0},
		{golden: "warnings", args: []string{"-f", "testdata/warnings/mesh.yaml"}, wantCode: 0},
		{golden: "errors", args: []string{"-f", "testdata/errors"}, wantCode: 1},
		{golden: "errors-one-file", args: []string{"-f", "testdata/errors/b.yaml", "-f", "testdata/valid"}, wantCode: 1},
		{golden: "errors-namespace", args: []string{"-n", "shop", "-f", "testdata/errors/a.yaml"}, wantCode: 1},
		{golden: "examples-bad", args: []string{"-f", "../../examples/bad"}, wantCode: 1},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"validate"}, tt.args...), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stderr: %s", code, tt.wantCode, stderr.String())
			}
			if stderr.Len() > 0 {
				t.Errorf("unexpected stderr: %s", stderr.String())
			}
			path := filepath.Join("testdata", tt.golden+".golden")
			if *update {
				if err := os.WriteFile(path, stdout.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), stdout.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

// TestExamplesValidate keeps the shipped examples loadable: they must
// produce no problem at all, not even a warning.
func TestExamplesValidate(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"validate", "-f", "../../examples/mesh", "-f", "../../examples/policies"}, &stdout, &stderr)
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if code != 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "valid: 0 errors") {
		t.Errorf("examples do not validate cleanly (exit %d):\n%s%s", code, stdout.String(), stderr.String())
	}
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		args             []string
		wantCode         int
		wantOut, wantErr string
	}{
		{args: nil, wantCode: 2, wantErr: "Commands:\n  validate"},
		{args: []string{"--help"}, wantCode: 0, wantOut: "Commands:\n  validate"},
		{args: []string{"help"}, wantCode: 0, wantOut: "Run 'meshctl COMMAND --help'"},
		{args: []string{"bogus"}, wantCode: 2, wantErr: `unknown command "bogus"`},
		{args: []string{"validate", "--help"}, wantCode: 0, wantOut: "Usage: meshctl validate -f FILE|DIR"},
		{args: []string{"validate"}, wantCode: 2, wantErr: "nothing to validate; pass -f FILE or -f DIR"},
		{args: []string{"validate", "testdata/valid"}, wantCode: 2, wantErr: `unexpected argument "testdata/valid"; name inputs with -f`},
		{args: []string{"validate", "-x"}, wantCode: 2, wantErr: "flag provided but not defined: -x"},
		{args: []string{"validate", "-f", ""}, wantCode: 2, wantErr: "must name a file or directory"},
		{args: []string{"validate", "-f", "testdata/missing"}, wantCode: 1, wantErr: "cannot read testdata/missing"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.wantOut)
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantErr)
			}
		})
	}
}
