package file

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/minimesh/minimesh/discovery/model"
)

func nsYAML(name string, labels string) string {
	return "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + name + "\n  labels: {" + labels + "}\n"
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func namespaces(s *model.Snapshot) []string {
	var out []string
	for _, n := range s.Namespaces {
		name := n.Name
		for _, k := range sortedKeys(n.Labels) {
			name += " " + k + "=" + n.Labels[k]
		}
		out = append(out, name)
	}
	return out
}

// waitFor returns the first published snapshot for which ok holds, failing
// the test if none arrives in time. Snapshots published in between (an
// editor's intermediate states) are skipped.
func waitFor(t *testing.T, ch <-chan *model.Snapshot, what string, ok func(*model.Snapshot) bool) *model.Snapshot {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var last *model.Snapshot
	for {
		select {
		case s := <-ch:
			if ok(s) {
				return s
			}
			last = s
		case <-timeout:
			if last != nil {
				t.Fatalf("timed out waiting for %s; last snapshot: namespaces %v, problems %v", what, namespaces(last), briefs(last.Problems))
			}
			t.Fatalf("timed out waiting for %s; nothing was published", what)
		}
	}
}

func hasNamespaces(want ...string) func(*model.Snapshot) bool {
	return func(s *model.Snapshot) bool { return slices.Equal(namespaces(s), want) }
}

func TestSourceWatches(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, nsYAML("a", "v: one"))
	write(t, filepath.Join(dir, "notes.txt"), "not a manifest")

	var observedMu sync.Mutex
	var observed []time.Time
	observe := func(at time.Time) {
		observedMu.Lock()
		observed = append(observed, at)
		observedMu.Unlock()
	}
	src := New(dir, Options{Observe: observe}, slog.New(slog.DiscardHandler))
	src.quiet = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan *model.Snapshot, 100)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(s *model.Snapshot) { ch <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	})

	waitFor(t, ch, "the first load", hasNamespaces("a v=one"))

	before := time.Now()
	write(t, a, nsYAML("a", "v: two"))
	s := waitFor(t, ch, "an edit", hasNamespaces("a v=two"))
	// The snapshot says when the file event came, which is after the
	// write began and before the snapshot was handed over; the observer
	// was told of it then.
	if s.ObservedAt.Before(before) || s.ObservedAt.After(time.Now()) {
		t.Errorf("the edit's snapshot says it was observed at %v; the write began at %v", s.ObservedAt, before)
	}
	observedMu.Lock()
	if !slices.ContainsFunc(observed, func(at time.Time) bool { return at.Equal(s.ObservedAt) }) {
		t.Errorf("the observer was told of changes at %v, not of the edit's at %v", observed, s.ObservedAt)
	}
	observedMu.Unlock()

	// A new subdirectory is watched too, including files written into it
	// right after it was created.
	b := filepath.Join(dir, "sub", "deeper", "b.yaml")
	write(t, b, nsYAML("b", ""))
	waitFor(t, ch, "a file in a new subdirectory", hasNamespaces("a v=two", "b"))
	write(t, b, nsYAML("b", "edited: yes"))
	waitFor(t, ch, "an edit in the subdirectory", hasNamespaces("a v=two", "b edited=yes"))

	// A broken file keeps its last good objects and is reported.
	write(t, a, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [a\n")
	s = waitFor(t, ch, "the broken file to be reported", func(s *model.Snapshot) bool { return len(s.Problems) > 0 })
	if got, want := namespaces(s), []string{"a v=two", "b edited=yes"}; !slices.Equal(got, want) {
		t.Errorf("while a.yaml is broken, namespaces = %v, want the last good %v", got, want)
	}
	if len(s.Problems) != 1 || s.Problems[0].Location.File != a ||
		!strings.Contains(s.Problems[0].Message, "its last valid version stays in force") {
		t.Errorf("problems = %v, want one about %s keeping its last valid version", briefs(s.Problems), a)
	}

	// Fixed by an editor-style save: write a temporary file, rename it over.
	tmp := filepath.Join(dir, ".a.yaml.swp")
	write(t, tmp, nsYAML("a", "v: three"))
	if err := os.Rename(tmp, a); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, ch, "the fixed file", hasNamespaces("a v=three", "b edited=yes"))
	if len(s.Problems) != 0 {
		t.Errorf("problems after the fix: %v", briefs(s.Problems))
	}

	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, "a removed file", hasNamespaces("a v=three"))

	// Removing a whole directory removes its files' objects.
	write(t, filepath.Join(dir, "sub", "c.yml"), nsYAML("c", ""))
	waitFor(t, ch, "a .yml file", hasNamespaces("a v=three", "c"))
	if err := os.RemoveAll(filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, "a removed directory", hasNamespaces("a v=three"))

	// A file that never parsed contributes nothing but its problem.
	write(t, filepath.Join(dir, "new.yaml"), "a: b: c\n")
	s = waitFor(t, ch, "a new broken file", func(s *model.Snapshot) bool { return len(s.Problems) == 1 })
	if !strings.Contains(s.Problems[0].Message, "no object in this file was loaded") {
		t.Errorf("problem = %s", brief(s.Problems[0]))
	}
}

// TestSourcePublishesOnlyChanges drives reload directly, so it can say
// exactly when nothing may be published.
func TestSourcePublishesOnlyChanges(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, nsYAML("a", ""))
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	src := New(dir, Options{}, nil)
	var published []*model.Snapshot
	step := func(observed time.Time) {
		t.Helper()
		if err := src.reload(w); err != nil {
			t.Fatal(err)
		}
		src.publishIfChanged(func(s *model.Snapshot) { published = append(published, s) }, observed)
	}

	step(time.Time{})
	if len(published) != 1 {
		t.Fatalf("first load published %d snapshots, want 1", len(published))
	}
	if !published[0].ObservedAt.IsZero() {
		t.Errorf("the first load says it observed a change at %v", published[0].ObservedAt)
	}
	write(t, a, nsYAML("a", "")) // same bytes
	write(t, filepath.Join(dir, "README.md"), "# not a manifest")
	write(t, filepath.Join(dir, "b.yaml"), "# only a comment\n")
	step(time.Now())
	if len(published) != 1 {
		t.Errorf("an unchanged mesh was published again")
	}
	write(t, a, nsYAML("a", "x: y"))
	observed := time.Now().Add(-time.Second)
	step(observed)
	if len(published) != 2 {
		t.Fatalf("a change was not published")
	}
	if !published[1].ObservedAt.Equal(observed) {
		t.Errorf("the change's snapshot says it was observed at %v, want the first event's %v", published[1].ObservedAt, observed)
	}
	if published[0] == published[1] || len(published[0].Namespaces[0].Labels) != 0 {
		t.Errorf("the first snapshot was changed after it was published: %+v", published[0].Namespaces)
	}

	// A vanished directory keeps the last mesh instead of emptying it.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := src.reload(w); err == nil {
		t.Errorf("reload of a removed directory succeeded")
	}
	if len(src.files) != 2 {
		t.Errorf("a failed reload dropped files: %d of 2 left", len(src.files))
	}
}

func TestSourceRunErrors(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "a.yaml")
	write(t, f, nsYAML("a", ""))
	for _, path := range []string{filepath.Join(dir, "missing"), f} {
		err := New(path, Options{}, nil).Run(context.Background(), func(*model.Snapshot) { t.Error("published") })
		if err == nil {
			t.Errorf("Run(%s) succeeded", path)
		}
	}
}

// TestSourceKeepsFilesThatBecomeUnusable: a file meshd has read keeps its
// objects when it can no longer be used, whatever the reason, until it is
// fixed or removed, exactly as a file that stops parsing does.
func TestSourceKeepsFilesThatBecomeUnusable(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "sub", "a.yaml")
	write(t, a, nsYAML("a", ""))
	write(t, filepath.Join(dir, "b.yaml"), nsYAML("b", ""))
	ch, stop := runSource(t, dir)
	defer stop()
	waitFor(t, ch, "the first load", hasNamespaces("a", "b"))

	// replace swaps a's path for what make creates, atomically, as an
	// editor's save does, so no reload sees the file missing.
	replace := func(make func(tmp string) error) func() error {
		return func() error {
			tmp := filepath.Join(dir, "sub", ".tmp")
			if err := make(tmp); err != nil {
				return err
			}
			return os.Rename(tmp, a)
		}
	}
	restore := replace(func(tmp string) error { return os.WriteFile(tmp, []byte(nsYAML("a", "")), 0o644) })
	steps := []struct {
		name         string
		breakIt, fix func() error
		want         string // the problem's message, up to the ";"
		at           string // the problem's path
	}{{
		name:    "replaced by a named pipe",
		breakIt: replace(func(tmp string) error { return syscall.Mkfifo(tmp, 0o644) }),
		fix:     restore,
		want:    "the file is a named pipe (FIFO), not a regular file, and is never opened", at: a,
	}, {
		name:    "replaced by a dangling link",
		breakIt: replace(func(tmp string) error { return os.Symlink("nowhere.yaml", tmp) }),
		fix:     restore,
		want:    "the file is a symbolic link to nowhere.yaml, which does not exist", at: a,
	}, {
		name:    "grown over the size limit",
		breakIt: func() error { return os.Truncate(a, MaxFileSize+1) },
		fix:     restore,
		want:    "the file is 4.0 MiB; files over 4 MiB are not read: split it into smaller files", at: a,
	}, {
		name: "saved as UTF-16",
		breakIt: func() error {
			return os.WriteFile(a, []byte(utf16Text(nsYAML("a", ""), binary.LittleEndian, true)), 0o644)
		},
		fix:  restore,
		want: "the file's encoding is UTF-16", at: a,
	}, {
		name:    "made unreadable",
		breakIt: func() error { return unreadable(t, a) },
		fix:     func() error { return os.Chmod(a, 0o644) },
		want:    "the file cannot be read: permission denied", at: a,
	}, {
		name:    "its directory made unreadable",
		breakIt: func() error { return unreadable(t, filepath.Dir(a)) },
		fix:     func() error { return os.Chmod(filepath.Dir(a), 0o755) },
		want:    "the directory cannot be read: permission denied", at: filepath.Dir(a),
	}}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := st.breakIt(); errors.Is(err, errCannotMake) {
				_ = st.fix()
				t.Skipf("this step is not checked on this machine: %v", err)
			} else if err != nil {
				t.Fatal(err)
			}
			s := waitFor(t, ch, "the problem", func(s *model.Snapshot) bool { return len(s.Problems) > 0 })
			if got := namespaces(s); !slices.Equal(got, []string{"a", "b"}) {
				t.Errorf("namespaces = %v, want a's last version kept next to b", got)
			}
			if len(s.Problems) != 1 || s.Problems[0].Location.File != st.at ||
				!strings.HasPrefix(s.Problems[0].Message, st.want+";") ||
				!strings.Contains(s.Problems[0].Message, "last valid version") {
				t.Errorf("problems = %v, want one at %s: %s; … last valid version …", briefs(s.Problems), st.at, st.want)
			}
			if err := st.fix(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ch, "the fix", func(s *model.Snapshot) bool { return len(s.Problems) == 0 })
		})
	}
}
