package file

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/minimesh/minimesh/discovery"
	"github.com/minimesh/minimesh/discovery/model"
)

// Source watches a directory of manifests and publishes a new snapshot
// whenever what the directory describes changes. It implements
// discovery.Source.
type Source struct {
	dir  string
	opts Options
	log  *slog.Logger

	// quiet is how long the directory must be still before it is read
	// again, so that the events of one save (write, rename, chmod) make
	// one reload; maxDelay bounds the wait under a steady stream of
	// writes. It is short because it only saves reloads: the xDS layer
	// debounces pushes (100ms of quiet by default), so a file read
	// half-written and read again a moment later is pushed once, whole.
	quiet, maxDelay time.Duration
	// retry is how often an unreadable directory is tried again.
	retry time.Duration

	files   map[string]*fileState
	watched map[string]bool
	// dirProblems reports the subdirectories that cannot be listed.
	dirProblems []model.Problem
	last        *model.Snapshot
	// hist is what the last build served, object by object (see history).
	hist *history
}

// fileState is what the source remembers about one file between reloads.
type fileState struct {
	data []byte
	// good is the file's last parse that was valid YAML; it stays in force
	// while the file is broken, so a half-saved edit does not drop the
	// file's services and policies from the mesh.
	good    []document
	hasGood bool
	// broken describes why the current bytes do not parse, or is nil.
	broken *model.Problem
}

var _ discovery.Source = (*Source)(nil)

// New returns a source for dir. Nothing is read until Run.
func New(dir string, opts Options, log *slog.Logger) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{
		dir: dir, opts: opts, log: log,
		quiet: 10 * time.Millisecond, maxDelay: 500 * time.Millisecond, retry: time.Second,
		files: map[string]*fileState{}, watched: map[string]bool{}, hist: newHistory(),
	}
}

// Run loads the directory, publishes the first snapshot, then watches the
// directory (and every subdirectory, including ones created later) and
// publishes again after each change that alters the snapshot. It returns nil
// when ctx ends, or an error if the directory cannot be read or watched at
// the start.
func (s *Source) Run(ctx context.Context, publish func(*model.Snapshot)) error {
	info, err := os.Stat(s.dir)
	if err != nil {
		return fmt.Errorf("config directory %s cannot be read: %w", s.dir, err)
	}
	if !info.IsDir() {
		return fmt.Errorf("config directory %s is a file; pass the directory that holds it", s.dir)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("cannot watch config directory %s: %w", s.dir, err)
	}
	defer func() { _ = w.Close() }()
	if err := s.reload(w); err != nil {
		return err
	}
	s.publishIfChanged(publish, time.Time{})

	// A stopped timer whose channel is drained: armed when events arrive.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// firstPending is when the first event of the coming reload arrived;
	// unread when that of a change a failed reload could not read did.
	var firstPending, unread time.Time
	// arm is called for every change: it tells the observer and starts
	// (or shortens) the wait before the reload.
	arm := func(d time.Duration) {
		now := time.Now()
		s.opts.Observe.Observe(now)
		if firstPending.IsZero() {
			firstPending = now
		}
		if wait := firstPending.Add(s.maxDelay).Sub(now); wait < d {
			d = max(wait, 0)
		}
		timer.Reset(d)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("the file watcher stopped unexpectedly")
			}
			// Every event may change what is read, including events on
			// hidden names (Kubernetes ConfigMap volumes swap a hidden
			// "..data" link to update all files) and chmod, which can
			// make an unreadable file readable again.
			s.log.Debug("config directory changed", "path", ev.Name, "op", ev.Op.String())
			arm(s.quiet)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("the file watcher stopped unexpectedly")
			}
			// An overflow means events were lost: read everything again.
			s.log.Warn("file watcher reported an error; re-reading the config directory", "dir", s.dir, "err", err)
			arm(s.quiet)
		case <-timer.C:
			observed := firstPending
			if !unread.IsZero() && (observed.IsZero() || unread.Before(observed)) {
				observed = unread
			}
			firstPending = time.Time{}
			started := time.Now()
			if err := s.reload(w); err != nil {
				s.log.Error("config directory cannot be read; keeping the last loaded mesh and trying again",
					"dir", s.dir, "err", err, "retry", s.retry)
				unread = observed
				timer.Reset(s.retry)
				continue
			}
			unread = time.Time{}
			s.publishIfChanged(publish, observed)
			s.log.Debug("config directory re-read", "took", time.Since(started))
		}
	}
}

// reload reads every manifest under the directory (see readTree), keeping
// the last good version of files that no longer parse or can no longer be
// read, and makes sure every directory is watched. Files below a
// subdirectory that can no longer be listed keep their state too. It
// fails only when the directory itself cannot be read, in which case
// nothing is changed (a vanished mount must not empty the mesh).
func (s *Source) reload(w *fsnotify.Watcher) error {
	dirs := map[string]bool{}
	files, err := readTree(s.dir, func(dir string) {
		dirs[dir] = true
		// Watch before the directory is listed, so a file created
		// meanwhile raises an event.
		if !s.watched[dir] {
			if err := w.Add(dir); err != nil {
				s.log.Warn("cannot watch directory; changes in it need a restart", "path", dir, "err", err)
			}
		}
	})
	if err != nil {
		return err
	}
	for d := range s.watched {
		if !dirs[d] {
			_ = w.Remove(d) // the kernel drops watches of deleted directories itself
		}
	}
	s.watched = dirs

	present := map[string]bool{}
	var dirProblems []model.Problem
	for _, f := range files {
		if f.dir {
			kept := false
			for p := range s.files {
				if strings.HasPrefix(p, f.Path+string(filepath.Separator)) {
					present[p], kept = true, true
				}
			}
			dirProblems = append(dirProblems, dirProblem(f, kept))
			continue
		}
		present[f.Path] = true
		st := s.files[f.Path]
		if st == nil {
			st = &fileState{}
			s.files[f.Path] = st
		}
		if f.Err == nil && st.broken == nil && st.data != nil && slices.Equal(st.data, f.Data) {
			continue
		}
		st.data = f.Data
		docs, prob := parseFile(f)
		if prob != nil {
			st.broken = prob
			continue
		}
		st.good, st.hasGood, st.broken = docs, true, nil
	}
	for p := range s.files {
		if !present[p] {
			delete(s.files, p)
		}
	}
	s.dirProblems = dirProblems
	return nil
}

// dirProblem reports a subdirectory that cannot be listed; kept says
// whether files read from it before keep their last version.
func dirProblem(f File, kept bool) model.Problem {
	p := *entryProblem(f)
	if kept {
		p.Message += "; the files read from it before keep their last valid version until it is fixed"
	} else {
		p.Message += noManifestLoaded
	}
	return p
}

// snapshot assembles the current files, in path order.
func (s *Source) snapshot() *model.Snapshot {
	paths := make([]string, 0, len(s.files))
	for p := range s.files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var docs []document
	problems := slices.Clone(s.dirProblems)
	for _, p := range paths {
		st := s.files[p]
		if st.broken != nil {
			prob := *st.broken
			if st.hasGood {
				prob.Message += "; its last valid version stays in force until it is fixed"
			} else {
				prob.Message += "; no object in this file was loaded"
			}
			problems = append(problems, prob)
		}
		docs = append(docs, st.good...)
	}
	s.hist.begin(time.Now())
	return assemble(docs, problems, s.opts, s.hist)
}

// publishIfChanged publishes the directory's snapshot unless it describes
// the same mesh as the last one. observed is when the first file event of
// the change arrived (zero for the first load).
func (s *Source) publishIfChanged(publish func(*model.Snapshot), observed time.Time) {
	snap := s.snapshot()
	if s.last != nil && s.last.SameMesh(snap) {
		s.log.Debug("config directory re-read; nothing changed")
		return
	}
	snap.ObservedAt = observed
	s.last = snap
	publish(snap)
}
