package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"unicode/utf16"

	"github.com/google/go-cmp/cmp"

	"github.com/minimesh/minimesh/discovery/model"
)

// errCannotMake is returned by a case's setup when this machine cannot
// create the case (no permission to make a device, or running as root,
// where mode 000 does not stop reading).
var errCannotMake = errors.New("cannot be made here")

// badInputCases are every kind of input meshd and `meshctl validate` must
// report alike. Each case's directory also holds ok.yaml (namespace "ok"),
// which must load whatever else is wrong. want lists every problem
// expected, as "path:line severity field: message" prefixes (path
// relative to the directory); anything else reported fails the case.
var badInputCases = []struct {
	name  string
	setup func(t *testing.T, dir string) error
	want  []string
}{{
	name: "named pipe is never opened",
	setup: func(t *testing.T, dir string) error {
		return syscall.Mkfifo(filepath.Join(dir, "pipe.yaml"), 0o644)
	},
	want: []string{"pipe.yaml:0 error : the file is a named pipe (FIFO), not a regular file, and is never opened; no object in this file was loaded"},
}, {
	name: "device node is never opened",
	setup: func(t *testing.T, dir string) error {
		// /dev/null's numbers (1, 3); making a device needs CAP_MKNOD.
		if err := syscall.Mknod(filepath.Join(dir, "null.yaml"), syscall.S_IFCHR|0o644, 1<<8|3); err != nil {
			return fmt.Errorf("%w: mknod: %w", errCannotMake, err)
		}
		return nil
	},
	want: []string{"null.yaml:0 error : the file is a device, not a regular file, and is never opened"},
}, {
	name:  "link to a device is never opened",
	setup: symlink("/dev/zero", "zero.yaml"),
	want:  []string{"zero.yaml:0 error : the file is a symbolic link to a device, not to a regular file, and is never opened"},
}, {
	name: "symbolic link loop",
	setup: func(t *testing.T, dir string) error {
		return errors.Join(symlink("b.yaml", "a.yaml")(t, dir), symlink("a.yaml", "b.yaml")(t, dir))
	},
	want: []string{
		"a.yaml:0 error : the file is a symbolic link that loops (it leads back to itself)",
		"b.yaml:0 error : the file is a symbolic link that loops (it leads back to itself)",
	},
}, {
	name:  "dangling symbolic link",
	setup: symlink("policies/missing.yaml", "gone.yaml"),
	want:  []string{"gone.yaml:0 error : the file is a symbolic link to policies/missing.yaml, which does not exist"},
}, {
	name: "link to a directory is not followed",
	setup: func(t *testing.T, dir string) error {
		write(t, filepath.Join(dir, "real", "x.yaml"), nsYAML("x", ""))
		return symlink("real", "linked")(t, dir)
	},
	want: []string{"linked:0 error : this is a symbolic link to a directory, which is not followed"},
}, {
	name: "unreadable file",
	setup: func(t *testing.T, dir string) error {
		write(t, filepath.Join(dir, "secret.yaml"), nsYAML("secret", ""))
		return unreadable(t, filepath.Join(dir, "secret.yaml"))
	},
	want: []string{"secret.yaml:0 error : the file cannot be read: permission denied; no object in this file was loaded"},
}, {
	name: "unreadable directory",
	setup: func(t *testing.T, dir string) error {
		write(t, filepath.Join(dir, "locked", "x.yaml"), nsYAML("locked", ""))
		return unreadable(t, filepath.Join(dir, "locked"))
	},
	want: []string{"locked:0 error : the directory cannot be read: permission denied; no manifest in it was loaded"},
}, {
	name: "file over the size limit",
	setup: func(t *testing.T, dir string) error {
		path := filepath.Join(dir, "huge.yaml")
		write(t, path, nsYAML("huge", ""))
		return os.Truncate(path, MaxFileSize+1) // sparse: cheap to make
	},
	want: []string{"huge.yaml:0 error : the file is 4.0 MiB; files over 4 MiB are not read: split it into smaller files"},
}, {
	name: "UTF-16 with a byte-order mark",
	setup: func(t *testing.T, dir string) error {
		write(t, filepath.Join(dir, "wide.yaml"), utf16Text(nsYAML("wide", ""), binary.LittleEndian, true))
		return nil
	},
	want: []string{"wide.yaml:1 error : the file's encoding is UTF-16; save as UTF-8"},
}, {
	name: "UTF-16 without a byte-order mark",
	setup: func(t *testing.T, dir string) error {
		write(t, filepath.Join(dir, "wide.yaml"), utf16Text(nsYAML("wide", ""), binary.BigEndian, false))
		return nil
	},
	want: []string{"wide.yaml:1 error : the file's encoding is UTF-16; save as UTF-8"},
}, {
	name: "UTF-8 byte-order mark is accepted",
	setup: func(t *testing.T, dir string) error {
		write(t, filepath.Join(dir, "bom.yaml"), "\uFEFF"+nsYAML("bom", ""))
		return nil
	},
}, {
	name: "hidden entries and other extensions are not manifests",
	setup: func(t *testing.T, dir string) error {
		write(t, filepath.Join(dir, ".swap.yaml"), "a: [")
		write(t, filepath.Join(dir, ".git", "x.yaml"), "a: [")
		write(t, filepath.Join(dir, "notes.txt"), "a: [")
		return symlink("missing", "dangling.txt")(t, dir)
	},
}, {
	name: "unsafe YAML tag",
	setup: writeFile("tags.yaml", nsYAML("tagged", "")+"---\n"+
		"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: python\n  labels: !!python/object:os.system {a: b}\n---\n"+
		"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: local\n  labels: {a: !Ref b}\n"),
	want: []string{
		"tags.yaml:11 error metadata.labels: the YAML tag !!python/object:os.system is not allowed",
		"tags.yaml:17 error metadata.labels.a: the YAML tag !Ref is not allowed",
	},
}, {
	name: "alias bomb",
	setup: writeFile("lol.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: lol\n  annotations:\n"+
		"    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"+
		"    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"+
		"    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"+
		"    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"+
		"    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"+
		"    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"+
		"    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"+
		"    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"+
		"    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n"),
	want: []string{"lol.yaml:10 error metadata.annotations.e[7]: the YAML aliases of this document expand to more than 100000 values or 8 MiB (an alias bomb?)"},
}, {
	name: "names Kubernetes refuses",
	setup: writeFile("names.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n---\n"+
		"apiVersion: v1\nkind: Service\nmetadata: {name: "+strings.Repeat("s", 64)+", namespace: ok}\nspec: {ports: [{port: 80}]}\n---\n"+
		"apiVersion: v1\nkind: Pod\nmetadata: {name: "+strings.Repeat("p", 64)+", namespace: ok}\nspec: {containers: [{name: app, image: app}]}\n"),
	want: []string{
		`names.yaml:3 error metadata.name: "a.b" is not a valid Namespace name: Kubernetes requires a DNS-1123 label`,
		`names.yaml:7 error metadata.name: "` + strings.Repeat("s", 64) + `" is not a valid Service name: Kubernetes requires a DNS-1035 label: ` +
			`at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (this one has 64)`,
	},
}, {
	name: "two pods with one IP",
	setup: writeFile("pods.yaml", podYAML("a", "10.0.0.1", "")+"---\n"+podYAML("b", "10.0.0.1", "")+"---\n"+
		podYAML("done", "10.0.0.1", "")+"  phase: Succeeded\n"),
	want: []string{"pods.yaml:31 warning status.podIP: 10.0.0.1 is also the IP of pod default/a; one pod holds an IP at a time"},
}, {
	name: "selector that selects nothing",
	setup: writeFile("policy.yaml", podYAML("cart-0", "10.0.0.1", "")+"---\n"+
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: cart, namespace: default}\n"+
		"spec:\n  selector:\n    matchLabels: {app: kart}\n"),
	want: []string{"policy.yaml:21 warning spec.selector: selects no workload: no pod in namespace default has the labels app=kart"},
}}

// TestBadInputAgree runs every bad-input case through what `meshctl
// validate` does (ReadPaths, then Build) and through a live Source, as
// meshd runs it, and checks that both report exactly the expected
// problems, identically, while the rest of the directory loads.
func TestBadInputAgree(t *testing.T) {
	for _, tc := range badInputCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, "ok.yaml"), nsYAML("ok", ""))
			if err := tc.setup(t, dir); errors.Is(err, errCannotMake) {
				t.Skipf("this case is not checked on this machine: %v", err)
			} else if err != nil {
				t.Fatal(err)
			}

			files, err := ReadPaths(dir)
			if err != nil {
				t.Fatalf("ReadPaths: %v", err)
			}
			validated := Build(files, Options{})
			live := firstSnapshot(t, dir)

			if diff := cmp.Diff(validated.Problems, live.Problems); diff != "" {
				t.Errorf("validate and a live source disagree (-validate +live):\n%s", diff)
			}
			if !slices.Contains(namespaces(live), "ok") {
				t.Errorf("ok.yaml did not load next to the bad input: namespaces %v", namespaces(live))
			}
			got := relativeBriefs(dir, live.Problems)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("problem %d:\n got %s\nwant %s…", i, got[i], w)
				}
			}
		})
	}
}

// firstSnapshot runs a Source on dir and returns its first snapshot.
func firstSnapshot(t *testing.T, dir string) *model.Snapshot {
	t.Helper()
	ch, stop := runSource(t, dir)
	defer stop()
	return waitFor(t, ch, "the first load", func(*model.Snapshot) bool { return true })
}

// runSource runs a Source on dir until stop is called.
func runSource(t *testing.T, dir string) (<-chan *model.Snapshot, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan *model.Snapshot, 100)
	done := make(chan error, 1)
	src := New(dir, Options{}, nil)
	go func() { done <- src.Run(ctx, func(s *model.Snapshot) { ch <- s }) }()
	return ch, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// relativeBriefs renders problems as brief does, with paths relative to
// dir.
func relativeBriefs(dir string, ps []model.Problem) []string {
	out := []string{}
	for _, p := range ps {
		rel, err := filepath.Rel(dir, p.Location.File)
		if err != nil {
			rel = p.Location.File
		}
		out = append(out, fmt.Sprintf("%s:%d %s %s: %s", rel, p.Location.Line, p.Severity, p.Field, p.Message))
	}
	return out
}

func symlink(target, name string) func(*testing.T, string) error {
	return func(_ *testing.T, dir string) error { return os.Symlink(target, filepath.Join(dir, name)) }
}

func writeFile(name, data string) func(*testing.T, string) error {
	return func(t *testing.T, dir string) error {
		write(t, filepath.Join(dir, name), data)
		return nil
	}
}

// unreadable sets mode 000 on a file or directory, or reports
// errCannotMake when it can still be read, as it can by root.
func unreadable(t *testing.T, path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0); err != nil {
		return err
	}
	t.Cleanup(func() { _ = os.Chmod(path, info.Mode().Perm()) }) // so TempDir can remove it
	if info.IsDir() {
		_, err = os.ReadDir(path)
	} else {
		_, err = os.ReadFile(path)
	}
	if err == nil {
		return fmt.Errorf("%w: mode 000 does not stop this user from reading (root?); make test runs it again as user nobody (make unprivileged)", errCannotMake)
	}
	return nil
}

// utf16Text encodes s as UTF-16 in the given byte order, with or without
// a byte-order mark.
func utf16Text(s string, order binary.AppendByteOrder, bom bool) string {
	var b []byte
	if bom {
		b = order.AppendUint16(b, 0xFEFF)
	}
	for _, u := range utf16.Encode([]rune(s)) {
		b = order.AppendUint16(b, u)
	}
	return string(b)
}
