package xds

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"
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
// A base's anchor string, the value of heldBaseKey, has its bytes inside
// the base, so any map holding the string keeps the base alive: a base
// lives exactly as long as some stream's map (or a cache) refers to it,
// without reference counting. The registry finds a base from its string
// through a weak pointer, so it keeps none alive, and only the anchor
// itself (not a string a client sent with the same bytes, in
// initial_resource_versions) names a base.

// heldBaseKey is the entry of a delta stream's returned map that names its
// base. Like every name minimesh reserves in these maps, it starts with
// reservedPrefix, which no resource name minimesh serves has.
const heldBaseKey = reservedPrefix + "base"

// heldDropped, as the version of a name in a stream's own map, says the
// client no longer holds it although the base does: it unsubscribed.
const heldDropped = reservedPrefix + "dropped"

const reservedPrefix = "\x00minimesh:"

// heldAnchorLen is the length of an anchor: 12 random hex digits, a dash
// and a 20-digit serial.
const heldAnchorLen = 12 + 1 + 20

// heldBase is the versions a delta client holds after a response, shared
// by every stream that holds exactly those. Immutable.
type heldBase struct {
	anchor   [heldAnchorLen]byte
	versions map[string]string
}

// String returns the base's anchor: the string that names it, whose bytes
// are the base's own.
func (b *heldBase) String() string { return unsafe.String(&b.anchor[0], len(b.anchor)) }

// heldBases is the registry of live bases.
type heldBases struct {
	prefix string
	mu     sync.Mutex
	byName map[string]weak.Pointer[heldBase]
	serial uint64
}

func newHeldBases() *heldBases {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &heldBases{prefix: hex.EncodeToString(b[:]), byName: map[string]weak.Pointer[heldBase]{}}
}

// make returns a new base holding versions, which must not be changed
// afterwards.
func (h *heldBases) make(versions map[string]string) *heldBase {
	b := &heldBase{versions: versions}
	h.mu.Lock()
	h.serial++
	copy(b.anchor[:], fmt.Sprintf("%s-%020d", h.prefix, h.serial))
	name := string(b.anchor[:]) // the registry's own copy
	h.byName[name] = weak.Make(b)
	h.mu.Unlock()
	runtime.AddCleanup(b, h.forget, name)
	return b
}

// forget drops a collected base from the registry.
func (h *heldBases) forget(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p, ok := h.byName[name]; ok && p.Value() == nil {
		delete(h.byName, name)
	}
}

// count returns how many bases are registered, for tests.
func (h *heldBases) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byName)
}

// of returns the base a stream's map m names, or nil.
func (h *heldBases) of(m map[string]string) *heldBase {
	s, ok := m[heldBaseKey]
	if !ok || len(s) != heldAnchorLen {
		return nil
	}
	h.mu.Lock()
	p, ok := h.byName[s]
	h.mu.Unlock()
	if !ok {
		return nil
	}
	b := p.Value()
	if b == nil || unsafe.StringData(s) != &b.anchor[0] {
		return nil // equal bytes, but not the anchor: a client's
	}
	return b
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
