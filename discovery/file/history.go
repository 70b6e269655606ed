package file

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// history is what a Source remembers about the objects it served, from
// one build to the next, so that a mistake never removes what proxies
// have:
//
//   - An object whose new version is refused (invalid) keeps its last
//     valid version in force. Only removing its document removes it.
//   - A file with a document minimesh cannot name (no kind or name, a kind
//     it does not read, a name Kubernetes would refuse) might be any of
//     the file's objects, edited; so every object last served from that
//     file and not found in it now keeps its last valid version.
//   - Each object remembers when it was first served (policy.Meta's
//     Admitted), so a newcomer never wins a tie against a policy in force.
//
// Build has no history: it sees every object for the first time, which is
// what meshctl validate and a starting meshd do.
type history struct {
	now  time.Time
	prev map[string]*servedObject // by "Kind/namespace/name", as of the last build
	next map[string]*servedObject // filled by the build under way
}

// servedObject is the version of one object in force.
type servedObject struct {
	// restore adds the object to a builder, exactly as it was admitted.
	restore func(*builder)
	at      policy.Location
	// memo identifies the document the version came from; an unchanged
	// file keeps its documents (and so its memos) across reloads.
	memo *docMemo
	// since is when the object was first served; loaded when this
	// version of it was.
	since, loaded time.Time
}

func newHistory() *history { return &history{prev: map[string]*servedObject{}} }

// begin starts a build at now.
func (h *history) begin(now time.Time) {
	h.now = now
	h.next = map[string]*servedObject{}
}

// commit makes the finished build the one the next build compares with.
func (h *history) commit() {
	h.prev, h.next = h.next, nil
}

func (o obj) key() string { return o.kind + "/" + o.ns + "/" + o.name }

// firstServed is when the object o names was first served: now for an
// object not served before, zero without history.
func (b *builder) firstServed(o obj) time.Time {
	if b.hist == nil {
		return time.Time{}
	}
	if prev := b.hist.prev[o.key()]; prev != nil {
		return prev.since
	}
	return b.hist.now
}

// served adds an admitted object and remembers it as the version in force.
func (b *builder) served(o obj, restore func(*builder)) {
	restore(b)
	if b.hist == nil {
		return
	}
	so := &servedObject{restore: restore, at: policy.Location{File: o.d.file, Line: o.d.line}, memo: o.d.memo,
		since: b.firstServed(o), loaded: b.hist.now}
	if prev := b.hist.prev[o.key()]; prev != nil && prev.memo == o.d.memo {
		so.loaded = prev.loaded
	}
	b.hist.next[o.key()] = so
}

// refuse notes an object whose document names it but is invalid.
func (b *builder) refuse(o obj) { b.refused = append(b.refused, o) }

// unnamed notes a document that cannot be tied to an object.
func (b *builder) unnamed(o obj) {
	if b.unnamedDocs == nil {
		b.unnamedDocs = map[string]int{}
	}
	if _, ok := b.unnamedDocs[o.d.file]; !ok {
		b.unnamedDocs[o.d.file] = o.d.line
	}
}

// restoreHeld puts back the last valid version of every object whose
// newest version was refused, or whose file has a document that cannot be
// named, unless another valid copy of it was admitted in this build.
func (b *builder) restoreHeld() {
	if b.hist == nil {
		return
	}
	for _, o := range b.refused {
		key := o.key()
		if _, claimed := b.seen[key]; claimed {
			continue
		}
		if prev := b.hist.prev[key]; prev != nil {
			b.hold(o.kind, o.ns, o.name, prev, policy.Location{File: o.d.file, Line: o.d.line},
				"this version is invalid (see the errors there)")
		}
	}
	files := make([]string, 0, len(b.unnamedDocs))
	for f := range b.unnamedDocs {
		files = append(files, f)
	}
	slices.Sort(files)
	keys := make([]string, 0, len(b.hist.prev))
	for k := range b.hist.prev {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, f := range files {
		at := policy.Location{File: f, Line: b.unnamedDocs[f]}
		for _, key := range keys {
			prev := b.hist.prev[key]
			if prev.at.File != f {
				continue
			}
			if _, claimed := b.seen[key]; claimed {
				continue
			}
			kind, ns, name := splitKey(key)
			b.hold(kind, ns, name, prev, at,
				"its file has a document there that cannot be tied to an object, "+
					"so minimesh cannot tell whether this object was edited or removed")
		}
	}
}

// hold serves prev in place of a refused version and says so.
func (b *builder) hold(kind, ns, name string, prev *servedObject, refusedAt policy.Location, reason string) {
	refused := refusedAt.String()
	prev.restore(b)
	b.seen[kind+"/"+ns+"/"+name] = prev.at
	b.hist.next[kind+"/"+ns+"/"+name] = prev
	serving := fmt.Sprintf("%s as loaded at %s", prev.at, prev.loaded.UTC().Format(time.RFC3339))
	b.held = append(b.held, model.Held{Kind: kind, Namespace: ns, Name: name, Refused: refused, Serving: serving, Reason: reason})
	b.problems = append(b.problems, model.Problem{
		Severity: policy.SeverityWarning, Kind: kind, Namespace: ns, Name: name,
		Location: refusedAt,
		Message: fmt.Sprintf("the version at %s is refused (%s); the last valid version, %s, stays in force "+
			"until it is fixed or the object is removed", refused, reason, serving),
	})
}

// splitKey undoes obj.key; names and namespaces never contain "/".
func splitKey(key string) (kind, ns, name string) {
	parts := strings.SplitN(key, "/", 3)
	return parts[0], parts[1], parts[2]
}
