package xds

import (
	"hash/maphash"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"weak"
)

// What delta clients hold, shared.
//
// go-control-plane's delta server keeps, for every stream and type, a map
// of the resources the client holds with their versions (the stream's
// "returned" map): it installs the map a response carries when it sends
// the response, and writes to it when the client unsubscribes. A sidecar
// holds every cluster and every assignment, so at 1,000 sidecars and 1,000
// services these maps are two million entries, a third of meshd's heap.
// Yet every proxy of a group holds the same versions.
//
// So minimesh's caches answer delta watches with small maps: an entry
// naming a shared, immutable heldBase (heldBaseKey), plus what only this
// stream holds differently, which is go-control-plane's own writes and the
// names the client unsubscribed from since (heldDropped). A heldView reads
// the two layers as one map.
//
// A base is named by an anchor (see anchor), the value of heldBaseKey, so
// it lives exactly as long as some stream's map (or a cache) refers to it,
// without reference counting, and only the anchor itself (not a string a
// client sends with the same bytes, in initial_resource_versions) names
// it. Bases are interned by content: proxies that reach the same versions
// by different paths (connected a change later, or reconnected with what
// they held) share one too.

// heldBaseKey is the entry of a delta stream's returned map that names its
// base. Like every name minimesh reserves in these maps, it starts with
// reservedPrefix, which no resource name minimesh serves has.
const heldBaseKey = reservedPrefix + "base"

// heldDropped, as the version of a name in a stream's own map, says the
// client no longer holds it although the base does: it unsubscribed.
const heldDropped = reservedPrefix + "dropped"

const reservedPrefix = "\x00minimesh:"

// heldBase is the versions a delta client holds after a response, shared
// by every stream that holds exactly those. Immutable.
type heldBase struct {
	anchor   anchor
	versions map[string]string
	sum      uint64 // heldSum of versions
}

// String returns the base's anchor.
func (b *heldBase) String() string { return b.anchor.String() }

// heldBases is the registry of live bases, by anchor and by content.
type heldBases struct {
	*anchors[heldBase]
	sumMu sync.Mutex
	bySum map[uint64][]weak.Pointer[heldBase]
}

func newHeldBases() *heldBases {
	return &heldBases{
		anchors: newAnchors("held", func(b *heldBase) *anchor { return &b.anchor }),
		bySum:   map[uint64][]weak.Pointer[heldBase]{},
	}
}

var heldSeed = maphash.MakeSeed()

// heldEntry is the hash of one entry of a version map; heldSum adds them
// up, so that a map's sum does not depend on its order and follows a
// change of a few entries without looking at the others.
func heldEntry(name, version string) uint64 {
	return maphash.String(heldSeed, name)*0x9e3779b97f4a7c15 ^ maphash.String(heldSeed, version)
}

func heldSum(versions map[string]string) uint64 {
	var sum uint64
	for n, v := range versions {
		sum += heldEntry(n, v)
	}
	return sum
}

// intern returns the live base holding exactly versions (whose heldSum is
// sum), or a new one holding versions, which must not be changed
// afterwards.
func (h *heldBases) intern(versions map[string]string, sum uint64) *heldBase {
	if b := h.find(sum, func(b *heldBase) bool { return maps.Equal(b.versions, versions) }); b != nil {
		return b
	}
	return h.add(versions, sum)
}

// add returns a new base holding versions (whose heldSum is sum), which
// must not be changed afterwards.
func (h *heldBases) add(versions map[string]string, sum uint64) *heldBase {
	b := &heldBase{versions: versions, sum: sum}
	h.name(b)
	h.sumMu.Lock()
	h.bySum[sum] = append(h.bySum[sum], weak.Make(b))
	h.sumMu.Unlock()
	runtime.AddCleanup(b, h.forgetSum, sum)
	return b
}

// find returns a live base with the given sum for which same holds.
func (h *heldBases) find(sum uint64, same func(*heldBase) bool) *heldBase {
	h.sumMu.Lock()
	candidates := slices.Clone(h.bySum[sum])
	h.sumMu.Unlock()
	for _, p := range candidates {
		if b := p.Value(); b != nil && same(b) {
			return b
		}
	}
	return nil
}

// forgetSum drops collected bases from the index by content.
func (h *heldBases) forgetSum(sum uint64) {
	h.sumMu.Lock()
	defer h.sumMu.Unlock()
	live := slices.DeleteFunc(h.bySum[sum], func(p weak.Pointer[heldBase]) bool { return p.Value() == nil })
	if len(live) == 0 {
		delete(h.bySum, sum)
	} else {
		h.bySum[sum] = live
	}
}

// of returns the base a stream's map m names, or nil.
func (h *heldBases) of(m map[string]string) *heldBase {
	s, ok := m[heldBaseKey]
	if !ok {
		return nil
	}
	return h.lookup(s)
}

// view returns what a stream's map m says its client holds.
func (h *heldBases) view(m map[string]string) heldView {
	return heldView{own: m, base: h.of(m)}
}

// unsubscribed records in a stream's own map m that its client dropped
// names its base holds. go-control-plane deletes an unsubscribed name from
// the map, which cannot remove it from the shared base. Called on the
// stream's goroutine (in CreateDeltaWatch), like go-control-plane's own
// writes to m.
func (h *heldBases) unsubscribed(m map[string]string, names []string) {
	b := h.of(m)
	if b == nil {
		return
	}
	for _, n := range names {
		if _, own := m[n]; own {
			continue // go-control-plane marked it to be sent again ("")
		}
		if _, ok := b.versions[n]; ok {
			m[n] = heldDropped
		}
	}
}

// subscribing records in a stream's own map m that its client does not
// hold names it now subscribes to, unless it says it does (initial, its
// initial_resource_versions when it reconnects). A client never holds a
// name it is newly subscribing to, but the map may still say it does: an
// unsubscribe is recorded in the map that is current when go-control-plane
// handles the request, and a response already on its way to the stream
// then installs a map made before, without the record. Called on the
// stream's goroutine, like unsubscribed.
func (h *heldBases) subscribing(m map[string]string, names []string, initial map[string]string) {
	if m == nil {
		return
	}
	v := h.view(m)
	for _, n := range names {
		if _, claimed := initial[n]; claimed || n == "*" {
			continue
		}
		if s, ok := m[n]; ok && (s == "" || s == heldDropped) {
			continue // already to be sent
		}
		if _, ok := v.get(n); ok {
			m[n] = heldDropped
		}
	}
}

// heldView is what a delta client holds: its stream's own map over its
// base (if any).
type heldView struct {
	own  map[string]string
	base *heldBase
}

// get returns the version of name the client holds.
func (v heldView) get(name string) (string, bool) {
	if s, ok := v.own[name]; ok {
		if s == heldDropped || strings.HasPrefix(name, reservedPrefix) {
			return "", false
		}
		return s, true
	}
	if v.base != nil {
		s, ok := v.base.versions[name]
		return s, ok
	}
	return "", false
}

// each calls f with every name the client holds, in no order.
func (v heldView) each(f func(name string)) {
	for n, s := range v.own {
		if s != heldDropped && !strings.HasPrefix(n, reservedPrefix) {
			f(n)
		}
	}
	if v.base != nil {
		for n := range v.base.versions {
			if _, ok := v.own[n]; !ok {
				f(n)
			}
		}
	}
}

// onlyBase reports whether the client holds exactly its base: its own map
// has nothing but reserved entries.
func (v heldView) onlyBase() bool {
	for n := range v.own {
		if !strings.HasPrefix(n, reservedPrefix) {
			return false
		}
	}
	return true
}

// flatten returns what the client holds as one new map, with room for
// extra more entries.
func (v heldView) flatten(extra int) map[string]string {
	n := len(v.own)
	if v.base != nil {
		n += len(v.base.versions)
	}
	out := make(map[string]string, n+extra)
	v.each(func(name string) {
		out[name], _ = v.get(name)
	})
	return out
}
