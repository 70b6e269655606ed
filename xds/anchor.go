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

// Anchors: strings that keep what they name alive.
//
// Some of minimesh's shared state is named by a string that go-control-plane
// keeps per stream: the token standing for an endpoint request's names (in
// its set of subscribed names) and the base of what a delta client holds
// (in its map of returned resources). Such a state must live exactly as
// long as some stream still holds its name, and go-control-plane does not
// say when a stream drops one. So the name is an anchor: a string whose
// bytes lie inside the value it names. While any map holds the string, the
// garbage collector keeps the value alive; once none does, the value is
// collected. A registry finds the value from its name through a weak
// pointer, so it keeps nothing alive itself, and it accepts only the anchor
// itself, not another string with the same bytes (one a client sent).

// anchorLen is the length of every anchor: a prefix naming the kind and
// the process (random), and a serial filling the rest.
const anchorLen = 48

// anchor is the bytes of an anchor string; values embed one.
type anchor [anchorLen]byte

// String returns the anchor string, whose bytes are a's own.
func (a *anchor) String() string { return unsafe.String(&a[0], anchorLen) }

// anchors is a registry of values of type T named by anchors.
type anchors[T any] struct {
	prefix   string
	anchorOf func(*T) *anchor
	mu       sync.Mutex
	byName   map[string]weak.Pointer[T]
	serial   uint64
}

// newAnchors returns a registry whose anchors start with a NUL, kind and
// random bytes: no resource name a proxy uses starts with a NUL, and no
// client can guess one.
func newAnchors[T any](kind string, anchorOf func(*T) *anchor) *anchors[T] {
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := reservedPrefix + kind + "-" + hex.EncodeToString(b[:]) + "-"
	if len(prefix) > anchorLen-10 {
		panic("anchor kind too long: " + kind)
	}
	return &anchors[T]{prefix: prefix, anchorOf: anchorOf, byName: map[string]weak.Pointer[T]{}}
}

// name gives v a new anchor, registers it, and returns the anchor string.
// v must not have been named before.
func (a *anchors[T]) name(v *T) string {
	an := a.anchorOf(v)
	a.mu.Lock()
	a.serial++
	copy(an[:], fmt.Sprintf("%s%0*d", a.prefix, anchorLen-len(a.prefix), a.serial))
	key := string(an[:]) // the registry's own copy, which keeps nothing alive
	a.byName[key] = weak.Make(v)
	a.mu.Unlock()
	runtime.AddCleanup(v, a.forget, key)
	return an.String()
}

// forget drops a collected value's name.
func (a *anchors[T]) forget(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.byName[key]; ok && p.Value() == nil {
		delete(a.byName, key)
	}
}

// isName reports whether s has the form of one of this registry's names.
func (a *anchors[T]) isName(s string) bool {
	return len(s) == anchorLen && strings.HasPrefix(s, a.prefix)
}

// lookup returns the value s is the anchor of, or nil.
func (a *anchors[T]) lookup(s string) *T {
	if !a.isName(s) {
		return nil
	}
	a.mu.Lock()
	p, ok := a.byName[s]
	a.mu.Unlock()
	if !ok {
		return nil
	}
	v := p.Value()
	if v == nil || unsafe.StringData(s) != &a.anchorOf(v)[0] {
		return nil // equal bytes, but not the anchor: a client's
	}
	return v
}

// count returns how many values are registered, for tests (see
// collectedDownTo).
func (a *anchors[T]) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byName)
}
