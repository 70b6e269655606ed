package xds

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
	"weak"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/go-multierror"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/minimesh/minimesh/translate"
)

// endpointCache serves ClusterLoadAssignments (EDS). Unlike listeners,
// routes and clusters, an assignment is the same for every proxy of a
// flavour that uses its cluster, so each flavour has one assignmentCache
// holding every assignment once, and every proxy's EDS watch is answered
// from it: an endpoint change sends only the changed assignment, and only
// to the proxies subscribed to it, in state of the world as in delta. xDS
// allows partial state-of-the-world responses for EDS (only LDS and CDS
// must be complete), and Envoy and gRPC keep the assignments a response
// does not mention. A per-node snapshot of every assignment would instead
// resend all of them to every proxy on every change: at 1,000 services and
// 1,000 proxies, half a gigabyte per endpoint change.
type endpointCache struct {
	prefix string
	byFlav map[translate.Flavor]*assignmentCache
	// names maps every assignment name to the string the cache holds,
	// so that the names a thousand sidecars send in their requests (every
	// cluster's, in each state-of-the-world request) are kept once.
	names atomic.Pointer[map[string]string]
	// lists are the name lists of requests, which requestCodec decodes
	// and the caches read (see nameLists.endpointList).
	lists *nameLists
}

func newEndpointCache() *endpointCache {
	var b [4]byte
	_, _ = rand.Read(b[:])
	e := &endpointCache{prefix: hex.EncodeToString(b[:]) + "-", byFlav: map[translate.Flavor]*assignmentCache{}}
	e.lists = newNameLists(e.canonical)
	for _, f := range []translate.Flavor{translate.FlavorEnvoy, translate.FlavorProxyless} {
		e.byFlav[f] = newAssignmentCache(e.prefix)
		e.byFlav[f].lists = e.lists
	}
	return e
}

// refreshNames rebuilds the name table after the assignments changed.
func (e *endpointCache) refreshNames() {
	m := map[string]string{}
	for _, c := range e.byFlav {
		c.mu.Lock()
		for n, a := range c.items {
			m[n] = a.name
		}
		c.mu.Unlock()
	}
	e.names.Store(&m)
}

// canonical returns the cache's copy of the assignment name b, if it is
// one. It does not allocate.
func (e *endpointCache) canonical(b []byte) (string, bool) {
	m := e.names.Load()
	if m == nil {
		return "", false
	}
	s, ok := (*m)[string(b)]
	return s, ok
}

// edsMuxKey is the MuxCache key of a flavour's assignments.
func edsMuxKey(f translate.Flavor) string { return "eds/" + string(f) }

// caches returns the flavours' caches by MuxCache key.
func (e *endpointCache) caches() map[string]cachev3.Cache {
	out := map[string]cachev3.Cache{}
	for f, c := range e.byFlav {
		out[edsMuxKey(f)] = c
	}
	return out
}

// flavor returns f's assignments; an unknown flavour gets Envoy's (the
// default flavour of a node, see flavorOf).
func (e *endpointCache) flavor(f translate.Flavor) *assignmentCache {
	if c, ok := e.byFlav[f]; ok {
		return c
	}
	return e.byFlav[translate.FlavorEnvoy]
}

// holds reports whether acked, a version a proxy ACKed, is at least
// required (as returned by assignmentCache.required). Versions of another
// meshd process never are.
func (e *endpointCache) holds(acked, required string) bool {
	a, ok1 := parseVersion(e.prefix, acked)
	r, ok2 := parseVersion(e.prefix, required)
	return ok1 && ok2 && a >= r
}

// parseVersion returns the cache version of v, a version of this process
// (prefix): "<prefix><cache version>".
func parseVersion(prefix, v string) (uint64, bool) {
	rest, found := strings.CutPrefix(v, prefix)
	if !found {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	return n, err == nil
}

// assignmentCache is the go-control-plane cache (cachev3.Cache) of one
// flavour's assignments; go-control-plane's server does the protocol
// (streams, nonces, subscriptions, ACKs) and asks it what to send.
//
// go-control-plane's LinearCache has these semantics but indexes every
// watch under each name it subscribes to; an Envoy sidecar subscribes to
// every cluster's assignment, and each response and each ACK removes and
// re-adds its watch, so at 1,000 proxies × 1,000 clusters every endpoint
// change cost two million map operations (0.7 s). Here a watch is
// registered once, and a change looks at each open watch for the few names
// it touched: the cost of a change is proportional to the proxies it
// reaches, not to everything they subscribe to.
//
// Versions. The cache numbers its states: every update increments its
// version, prefixed with a string unique to this meshd process so that a
// version from a previous run is never mistaken for a current one. A
// state-of-the-world response carries the cache version, and each
// assignment's version is the one that last changed it. A proxy holds
// everything it subscribes to once it has ACKed a response at least as new
// as the newest change among its group's assignments (required). In delta,
// per-resource versions are go-control-plane's hash of the encoding, as for
// the other types, so a proxy that reconnects (to this meshd or a
// restarted one) with the assignments it had is sent nothing.
//
// The cache answers no watch before its first update, so a proxy
// reconnecting to a restarted meshd that has not loaded the mesh yet is
// not told, from an empty cache, that its assignments were removed.
//
// Responses are sent on the channels go-control-plane gives each watch
// while mu is held; they never block, because a stream has at most one
// watch per type and its channel holds one response per type.
type assignmentCache struct {
	prefix string

	mu      sync.Mutex
	opened  bool // the first update happened
	version uint64
	items   map[string]*assignment
	// invalid holds the assignments whose latest content failed
	// validation, by name; proxies keep the last valid one (if any).
	invalid map[string]error
	// history lists recent changes, oldest first, for the convergence
	// metric.
	history []edsChange
	watches map[uint64]*edsWatch
	nextID  uint64
	// lists resolves the stand-ins of state-of-the-world requests (nil
	// in tests that build requests themselves).
	lists *nameLists
	// exact remembers which request name lists name exactly the
	// names of which held sets (see holdsExactly).
	exact map[exactKey]struct{}
	// bases are what delta clients hold (see heldBase), and
	// transitions the responses of this version that led from one to
	// another (see nextBase); they are forgotten when the version
	// changes.
	bases       *heldBases
	transitions map[weak.Pointer[heldBase]][]deltaTransition
}

// exactKey identifies a request's name list (as requestCodec shares it)
// and a held set. It holds both weakly, so that remembering the pair keeps
// neither alive, and a list or set made later at the same address never
// matches it.
type exactKey struct {
	names weak.Pointer[string]
	n     int
	held  weak.Pointer[heldBase]
}

// assignment is one published ClusterLoadAssignment, shared by every
// response that carries it (read-only from then on).
type assignment struct {
	name    string
	any     *anypb.Any            // SOTW form
	delta   *discoveryv3.Resource // delta form
	res     types.Resource        // for the config dump
	hash    string                // delta version: HashResource of the encoding
	changed uint64                // cache version that last changed it
}

type edsChange struct {
	version uint64
	at      time.Time // zero when not caused by a model change
	names   map[string]bool
	removed []string
}

// edsHistory bounds the change history per flavour. A proxy ACKs within
// moments of a change; a sample is only lost when more changes than this
// happen in between.
const edsHistory = 64

// edsWatch is an open watch of one stream. Exactly one of sotw and delta
// is set.
type edsWatch struct {
	sotw  *cachev3.Request
	delta *cachev3.DeltaRequest
	sub   cachev3.Subscription
	out   chan cachev3.Response
	dout  chan cachev3.DeltaResponse
	// What a state-of-the-world watch subscribes to: the request's
	// names (or those its stand-in stands for), their set, and whether
	// it is a wildcard watch. For a delta watch: the names the request
	// subscribes to (stand-ins read) and the set of all the stream
	// subscribes to (see deltaSubscribed).
	names      []string
	subscribed map[string]struct{}
	wildcard   bool
	// replyEvenIfEmpty: the client must get an answer even with nothing
	// new (a SOTW client that holds nothing of this process's, a delta
	// wildcard client's first request).
	replyEvenIfEmpty bool
}

var _ cachev3.Cache = (*assignmentCache)(nil)

func newAssignmentCache(prefix string) *assignmentCache {
	return &assignmentCache{prefix: prefix, items: map[string]*assignment{}, invalid: map[string]error{}, watches: map[uint64]*edsWatch{},
		exact: map[exactKey]struct{}{}, bases: newHeldBases()}
}

func (c *assignmentCache) versionString(n uint64) string { return c.prefix + strconv.FormatUint(n, 10) }

// update makes the assignments those of checked: new and changed ones are
// published in one new version, and at is recorded as the time of the
// change they carry. Assignments no longer in checked are not removed here
// but returned, so that the caller can remove them once no published
// cluster refers to them. An assignment whose new content failed its check
// is not published: proxies keep its last valid version, and the returned
// error says which and why.
func (c *assignmentCache) update(checked map[string]checkedAssignment, at time.Time) (gone []string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var invalid *multierror.Error
	var modified []string
	for _, name := range slices.Sorted(maps.Keys(checked)) {
		ca := checked[name]
		if ca.err != nil {
			invalid = multierror.Append(invalid, ca.err)
			c.invalid[name] = ca.err
			continue
		}
		delete(c.invalid, name)
		if old, ok := c.items[name]; ok && old.hash == ca.version {
			continue
		}
		modified = append(modified, name)
	}
	for name := range c.items {
		if _, ok := checked[name]; !ok {
			gone = append(gone, name)
		}
	}
	for name := range c.invalid {
		if _, ok := checked[name]; !ok {
			delete(c.invalid, name)
		}
	}
	slices.Sort(gone)
	if len(modified) > 0 || !c.opened {
		c.version++
		c.transitions = nil
		change := edsChange{version: c.version, at: at, names: make(map[string]bool, len(modified))}
		for _, name := range modified {
			ca := checked[name]
			value, merr := cachev3.MarshalResource(ca.res)
			if merr != nil {
				invalid = multierror.Append(invalid, fmt.Errorf("eds resource %q does not encode: %w", name, merr))
				continue
			}
			a := &assignment{name: name, res: ca.res, hash: ca.version, changed: c.version,
				any: &anypb.Any{TypeUrl: resourcev3.EndpointType, Value: value}}
			a.delta = &discoveryv3.Resource{Name: name, Version: a.hash, Resource: a.any}
			c.items[name] = a
			change.names[name] = true
		}
		c.record(change)
		c.notify(modified)
	}
	return gone, invalid.ErrorOrNil()
}

// remove withdraws assignments that no cluster uses any more.
func (c *assignmentCache) remove(names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var del []string
	for _, n := range names {
		if _, ok := c.items[n]; ok {
			delete(c.items, n)
			del = append(del, n)
		}
	}
	if len(del) > 0 {
		c.version++
		c.transitions = nil
		c.record(edsChange{version: c.version, removed: del})
		c.notify(del)
	}
}

func (c *assignmentCache) record(ch edsChange) {
	if len(c.history) >= edsHistory {
		c.history = slices.Delete(c.history, 0, 1)
	}
	c.history = append(c.history, ch)
}

// notify answers the open watches that modified concerns. Before the first
// update, every watch is looked at in full. Called with mu held.
func (c *assignmentCache) notify(modified []string) {
	first := !c.opened
	c.opened = true
	for id, w := range c.watches {
		var sent bool
		if first {
			sent = c.respond(w, nil, w.replyEvenIfEmpty)
		} else {
			sent = c.respond(w, modified, false)
		}
		if sent {
			delete(c.watches, id)
		}
	}
}

// respond answers w if something it subscribes to differs from what its
// client holds, or if even is set, and reports whether it did. It looks at
// the names in candidates, or, when candidates is nil, at everything the
// watch subscribes to (and everything there is, for a wildcard watch).
// Called with mu held.
func (c *assignmentCache) respond(w *edsWatch, candidates []string, even bool) bool {
	if w.sotw != nil {
		return c.respondSotw(w, candidates, even)
	}
	return c.respondDelta(w, candidates, even)
}

// respondSotw answers a state-of-the-world watch. Its request's version is
// the cache version of the last response the client accepted (or, after a
// NACK, rejected; see guardNack), so an assignment it holds is stale
// exactly when it changed after that version: every later change either
// reached the watch or happened after the response.
//
// Which assignments the stream holds is a held set, a heldBase interned
// like a delta client's versions (see heldBase), so the thousand sidecars
// of fifty deployments share fifty and a change to one assignment copies
// none. The stream's returned map in go-control-plane is its own, one
// entry naming its set (heldBaseKey): a
// response carries a new one, which go-control-plane installs when it
// sends the response (not if it drops it for a newer request). A map
// without the entry (a new stream) holds nothing, so a proxy that
// reconnects is sent everything it subscribes to. A request that drops
// names gets its set reduced at once, in that stream's map, so that a
// later subscription sends them again; go-control-plane, shown a stand-in
// (requestCodec), does not do that bookkeeping itself.
func (c *assignmentCache) respondSotw(w *edsWatch, candidates []string, even bool) bool {
	stream := w.sub.ReturnedResources()
	base := c.bases.of(stream)
	var known map[string]string
	if base != nil {
		known = base.versions
	}
	subscribed, wildcard := w.subscribed, w.wildcard
	since, _ := parseVersion(c.prefix, w.sotw.GetVersionInfo()) // 0 unless ours
	if !even && candidates == nil && !wildcard && since == c.version &&
		c.holdsExactly(w.names, base, len(subscribed)) {
		// The ACK of the latest version, naming what it names: the
		// client holds everything it subscribes to, as it is now.
		return false
	}
	var changed []*assignment
	added, heldSubscribed := false, 0
	consider := func(n string) {
		a, exists := c.items[n]
		if !exists {
			return // state of the world cannot say it is gone
		}
		if _, held := known[n]; !held {
			added = true
			changed = append(changed, a)
		} else if a.changed > since {
			changed = append(changed, a)
		}
	}
	switch {
	case candidates != nil:
		eachSubscribed(candidates, subscribed, wildcard, consider)
	case wildcard:
		for n := range c.items {
			consider(n)
		}
	case since == c.version:
		// The client has this version of the whole cache: only names
		// it does not hold yet can be due.
		for n := range subscribed {
			if _, held := known[n]; held {
				heldSubscribed++
			} else {
				consider(n)
			}
		}
	default:
		for n := range subscribed {
			if _, held := known[n]; held {
				heldSubscribed++
			}
			consider(n)
		}
	}
	// Names no longer subscribed are forgotten at once, in the stream's
	// own map, so that a later subscription sends them again.
	if candidates == nil && !wildcard && heldSubscribed < len(known) {
		reduced := make(map[string]string, heldSubscribed)
		for n := range known {
			if _, ok := subscribed[n]; ok {
				reduced[n] = held
			}
		}
		base = c.internHeld(reduced)
		known = base.versions
		if stream != nil {
			stream[heldBaseKey] = base.String()
		}
	}
	if !even && len(changed) == 0 {
		return false
	}
	next := base
	if added || next == nil {
		returned := make(map[string]string, len(known)+len(changed))
		for n := range known {
			returned[n] = held
		}
		for _, a := range changed {
			returned[a.name] = held
		}
		next = c.internHeld(returned)
	}
	version := c.versionString(c.version)
	anys := make([]*anypb.Any, len(changed))
	slices.SortFunc(changed, func(a, b *assignment) int { return strings.Compare(a.name, b.name) })
	for i, a := range changed {
		anys[i] = a.any
	}
	w.out <- &edsResponse{req: w.sotw, version: version, resources: anys,
		returned: map[string]string{heldBaseKey: next.String()}}
	return true
}

// holdsExactly reports whether the names of a request, which subscribe to
// subscribed distinct names, are exactly the names of held. Every
// state-of-the-world ACK names every cluster its sidecar uses, a thousand
// for a sidecar that sees every service, and nearly all ACK the version
// they were sent with the names they subscribed to already; so the answer
// is remembered for the pair of list and set, which requestCodec and
// internHeld share between the sidecars of a deployment. Neither changes
// once shared.
// Called with mu held.
func (c *assignmentCache) holdsExactly(names []string, held *heldBase, subscribed int) bool {
	if len(names) == 0 || held == nil || len(held.versions) != subscribed {
		return false
	}
	key := exactKey{weak.Make(&names[0]), len(names), weak.Make(held)}
	if _, ok := c.exact[key]; ok {
		return true
	}
	for _, n := range names {
		if _, ok := held.versions[n]; !ok {
			return false
		}
	}
	if len(c.exact) >= maxExact {
		clear(c.exact)
	}
	c.exact[key] = struct{}{}
	return true
}

// eachSubscribed calls f with each of names that a watch subscribing to
// subscribed (or to everything, wildcard) subscribes to.
func eachSubscribed(names []string, subscribed map[string]struct{}, wildcard bool, f func(string)) {
	for _, n := range names {
		if _, ok := subscribed[n]; ok || wildcard {
			f(n)
		}
	}
}

// held is the value of every entry of a state-of-the-world held set:
// only the names matter (see respondSotw).
const held = "held"

// maxExact bounds the pairs holdsExactly remembers, and the bases whose
// transitions nextBase remembers.
const maxExact = 4096

// internHeld returns the held set with the same names as m, which must
// not be changed afterwards (see heldBases.intern). Called with mu held.
func (c *assignmentCache) internHeld(m map[string]string) *heldBase {
	return c.bases.intern(m, heldSum(m))
}

// mapPointer identifies a map.
func mapPointer(m map[string]string) unsafe.Pointer { return reflect.ValueOf(m).UnsafePointer() }

// deltaSynced is the entry of a delta stream's returned map that says up
// to which cache version the map is complete: every change since is in the
// history, so a request (an ACK, mostly) need only look at the names those
// changes touched and the names it subscribes or unsubscribes, not at the
// thousand names a sidecar holds. The entry is not a resource name a client
// can hold (it starts with a NUL); if a client unsubscribes it anyway, the
// next request looks at everything.
const deltaSynced = reservedPrefix + "synced"

// dueSince returns the names a delta request must be compared on, or nil
// when the stream's map does not say since when it is complete or the
// history no longer reaches back that far (then everything is compared).
// The result is not nil otherwise, even when empty. Called with mu held.
func (c *assignmentCache) dueSince(known map[string]string, subscribe, unsubscribe []string) []string {
	since, err := strconv.ParseUint(known[deltaSynced], 10, 64)
	if err != nil || len(c.history) == 0 || c.history[0].version > since+1 ||
		slices.Contains(subscribe, "*") || slices.Contains(unsubscribe, "*") {
		// Also when the request changes to or from everything.
		return nil
	}
	due := make([]string, 0, len(subscribe)+len(unsubscribe))
	due = append(due, subscribe...)
	due = append(due, unsubscribe...)
	for _, ch := range c.history {
		if ch.version <= since {
			continue
		}
		for n := range ch.names {
			due = append(due, n)
		}
		due = append(due, ch.removed...)
	}
	slices.Sort(due) // a name may be in several changes; it is sent once
	return slices.Compact(due)
}

// deltaTransition is a base a delta response led to (see nextBase), held
// weakly: a transition keeps neither base alive.
type deltaTransition struct {
	changed []*assignment
	removed []string
	to      weak.Pointer[heldBase]
}

// nextBase returns the base a delta client holds after a response sending
// changed (sorted by name) and removing removed (sorted) to a client that
// held view. Every proxy of a group holds the same base and is sent the
// same change, so the transition is remembered for the cache's version
// (transitions): the group's proxies share the base it leads to, and the
// thousand entries of a sidecar's versions are looked at once per group,
// not per proxy. Other transitions find an equal base by content (see
// heldBases.intern), so that a proxy that reached the same versions
// another way shares it too; only a base nobody holds yet is made. Called
// with mu held.
func (c *assignmentCache) nextBase(view heldView, changed []*assignment, removed []string) *heldBase {
	if !view.onlyBase() {
		// The stream holds something of its own (unsubscribed names,
		// the versions it reconnected with): read it all.
		versions := applyChange(view.flatten(len(changed)), changed, removed)
		return c.bases.intern(versions, heldSum(versions))
	}
	from := weak.Make(view.base)
	for _, t := range c.transitions[from] {
		if slices.Equal(t.changed, changed) && slices.Equal(t.removed, removed) {
			if to := t.to.Value(); to != nil {
				return to
			}
		}
	}
	b := c.applyToBase(view.base, changed, removed)
	if c.transitions == nil || len(c.transitions) >= maxExact {
		c.transitions = map[weak.Pointer[heldBase]][]deltaTransition{}
	}
	c.transitions[from] = append(c.transitions[from], deltaTransition{changed: slices.Clone(changed), removed: slices.Clone(removed), to: weak.Make(b)})
	return b
}

// applyToBase returns the base holding from's versions (none when from is
// nil) with changed set and removed deleted: a live one if there is one,
// found without copying from's versions, or a new one. changed and
// removed are sorted and name each name once (respondDelta puts a name in
// one of them at most); a name in both is read slowly, as removed.
func (c *assignmentCache) applyToBase(from *heldBase, changed []*assignment, removed []string) *heldBase {
	var old map[string]string
	var sum uint64
	if from != nil {
		old, sum = from.versions, from.sum
	}
	for _, n := range removed {
		if _, both := slices.BinarySearchFunc(changed, n, func(a *assignment, n string) int { return strings.Compare(a.name, n) }); both {
			versions := make(map[string]string, len(old)+len(changed))
			maps.Copy(versions, old)
			versions = applyChange(versions, changed, removed)
			return c.bases.intern(versions, heldSum(versions))
		}
	}
	size := len(old)
	for _, a := range changed {
		if v, ok := old[a.name]; ok {
			sum -= heldEntry(a.name, v)
		} else {
			size++
		}
		sum += heldEntry(a.name, a.hash)
	}
	for _, n := range removed {
		if v, ok := old[n]; ok {
			sum -= heldEntry(n, v)
			size--
		}
	}
	byName := func(a *assignment, n string) int { return strings.Compare(a.name, n) }
	same := func(b *heldBase) bool {
		if len(b.versions) != size {
			return false
		}
		for n, v := range b.versions {
			if i, ok := slices.BinarySearchFunc(changed, n, byName); ok {
				if changed[i].hash != v {
					return false
				}
				continue
			}
			if _, gone := slices.BinarySearch(removed, n); gone {
				return false
			}
			if w, ok := old[n]; !ok || w != v {
				return false
			}
		}
		return true
	}
	if b := c.bases.find(sum, same); b != nil {
		return b
	}
	versions := make(map[string]string, size)
	maps.Copy(versions, old)
	return c.bases.add(applyChange(versions, changed, removed), sum)
}

// applyChange sets changed in versions and deletes removed from it, and
// returns it.
func applyChange(versions map[string]string, changed []*assignment, removed []string) map[string]string {
	for _, a := range changed {
		versions[a.name] = a.hash
	}
	for _, n := range removed {
		delete(versions, n)
	}
	return versions
}

// respondDelta answers a delta watch. Delta clients name the version of
// each resource they hold, so versions are compared one by one and a
// removal is sent for a subscribed assignment that is gone.
func (c *assignmentCache) respondDelta(w *edsWatch, candidates []string, even bool) bool {
	known := w.sub.ReturnedResources()
	view := c.bases.view(known)
	subscribed := w.subscribed
	wildcard := w.sub.IsWildcard()
	if candidates == nil && !even {
		candidates = c.dueSince(known, w.names, w.delta.GetResourceNamesUnsubscribe())
	}
	var changed []*assignment
	var removed []string
	consider := func(n string) {
		a, exists := c.items[n]
		held, isKnown := view.get(n)
		switch {
		case !exists:
			if isKnown {
				removed = append(removed, n)
			}
		case !isKnown || held != a.hash:
			changed = append(changed, a)
		}
	}
	switch {
	case candidates != nil:
		eachSubscribed(candidates, subscribed, wildcard, consider)
	case wildcard:
		for n := range c.items {
			consider(n)
		}
		view.each(func(n string) {
			if _, ok := c.items[n]; !ok {
				consider(n)
			}
		})
	default:
		for n := range subscribed {
			consider(n)
		}
	}
	if !even && len(changed) == 0 && len(removed) == 0 {
		if known != nil {
			known[deltaSynced] = strconv.FormatUint(c.version, 10)
		}
		return false
	}
	slices.SortFunc(changed, func(a, b *assignment) int { return strings.Compare(a.name, b.name) })
	slices.Sort(removed)
	// The stream's new map is its own (go-control-plane writes to it)
	// and small: what it holds is in the base.
	returned := map[string]string{
		deltaSynced: strconv.FormatUint(c.version, 10),
		heldBaseKey: c.nextBase(view, changed, removed).String(),
	}
	res := make([]*discoveryv3.Resource, len(changed))
	for i, a := range changed {
		res[i] = a.delta
	}
	w.dout <- &edsDeltaResponse{req: w.delta, version: c.versionString(c.version), resources: res, removed: removed, returned: returned}
	return true
}

// watch registers w unless it can be answered at once, and returns its
// cancel function.
func (c *assignmentCache) watch(w *edsWatch) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opened && c.respond(w, nil, w.replyEvenIfEmpty) {
		return func() {}
	}
	c.nextID++
	id := c.nextID
	c.watches[id] = w
	return func() {
		c.mu.Lock()
		delete(c.watches, id)
		c.mu.Unlock()
	}
}

// CreateWatch implements cachev3.ConfigWatcher for state of the world.
func (c *assignmentCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	if req.GetTypeUrl() != resourcev3.EndpointType {
		return nil, fmt.Errorf("the endpoint cache serves %s, not %s", resourcev3.EndpointType, req.GetTypeUrl())
	}
	// A client that holds nothing of this process's must be answered,
	// even with nothing, to complete its initialisation.
	even := !strings.HasPrefix(req.GetVersionInfo(), c.prefix)
	w := &edsWatch{sotw: req, sub: sub, out: out, replyEvenIfEmpty: even,
		names: req.GetResourceNames(), subscribed: sub.SubscribedResources(), wildcard: sub.IsWildcard()}
	names, set, standIn, err := c.lists.subscription(req.GetResourceNames())
	if err != nil {
		return nil, err
	}
	if standIn {
		w.names, w.subscribed, w.wildcard = names, set, false
	}
	return c.watch(w), nil
}

// CreateDeltaWatch implements cachev3.ConfigWatcher for delta.
func (c *assignmentCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	if req.GetTypeUrl() != resourcev3.EndpointType {
		return nil, fmt.Errorf("the endpoint cache serves %s, not %s", resourcev3.EndpointType, req.GetTypeUrl())
	}
	// Envoy waits for an answer to its first wildcard request.
	even := sub.IsWildcard() && req.GetResponseNonce() == ""
	subscribed, shared, err := c.deltaSubscribed(sub, req)
	if err != nil {
		return nil, err
	}
	if !shared && changesSubscription(req) {
		// A list's own set is within bounds: the codec made it
		// from one request.
		if err := checkSubscribed(req.GetTypeUrl(), subscribed); err != nil {
			return nil, err
		}
	}
	subscribe, err := c.lists.deltaNames(req.GetResourceNamesSubscribe())
	if err != nil {
		return nil, err
	}
	c.bases.unsubscribed(sub.ReturnedResources(), req.GetResourceNamesUnsubscribe())
	c.bases.subscribing(sub.ReturnedResources(), subscribe, req.GetInitialResourceVersions())
	return c.watch(&edsWatch{delta: req, sub: sub, dout: out, replyEvenIfEmpty: even,
		subscribed: subscribed, names: subscribe}), nil
}

// deltaSubscribed returns the names a delta stream subscribes to, after
// go-control-plane's server applied req to its set of them.
//
// That set holds the token of a stand-in in place of the names it stands
// for (see nameLists.decodeDelta). A set of just one token, the usual
// state of a sidecar's stream, is read as the token's list, whose set
// every stream subscribing to that list shares. A stream that then
// subscribes to more or unsubscribes gets a set of its own: the token is
// replaced, in go-control-plane's set, by its names, less those req
// unsubscribes (go-control-plane could not remove them). The set is the
// stream's and this is its goroutine, which writes to it anyway. After
// each request the set is one token or holds none. shared reports a
// list's set.
func (c *assignmentCache) deltaSubscribed(sub cachev3.Subscription, req *cachev3.DeltaRequest) (names map[string]struct{}, shared bool, err error) {
	set := sub.SubscribedResources()
	switch {
	case len(set) == 1:
		for t := range set {
			_, listSet, ok, err := c.lists.token(t)
			if !ok || err != nil {
				return set, false, err
			}
			if len(req.GetResourceNamesUnsubscribe()) == 0 {
				return listSet, true, nil
			}
		}
	case len(set) > 1 && len(req.GetResourceNamesSubscribe()) > 0:
		// New subscriptions: a token among them, or added to one.
	default:
		return set, false, nil
	}
	var tokens []string
	for n := range set {
		if _, _, ok, _ := c.lists.token(n); ok {
			tokens = append(tokens, n)
		}
	}
	for _, t := range tokens {
		names, _, _, err := c.lists.token(t)
		if err != nil {
			return nil, false, err
		}
		delete(set, t)
		for _, n := range names {
			set[n] = struct{}{}
		}
	}
	if len(tokens) > 0 {
		for _, n := range req.GetResourceNamesUnsubscribe() {
			delete(set, n)
		}
	}
	return set, false, nil
}

// Fetch implements cachev3.ConfigFetcher; minimesh serves ADS streams only.
func (c *assignmentCache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errors.New("minimesh serves endpoints over ADS streams only")
}

// required is the version a proxy using the assignments names must have
// ACKed to hold all of them as they are now, and whether all of them are
// published at all.
func (c *assignmentCache) required(names []string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.opened {
		return "", false
	}
	var newest uint64
	for _, n := range names {
		a, ok := c.items[n]
		if !ok {
			return "", false
		}
		newest = max(newest, a.changed)
	}
	return c.versionString(newest), true
}

// hashes returns the delta versions of the named assignments.
func (c *assignmentCache) hashes(names []string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(names))
	for _, n := range names {
		if a, ok := c.items[n]; ok {
			out[n] = a.hash
		}
	}
	return out
}

// resources returns the published assignments among names.
func (c *assignmentCache) resources(names []string) map[string]types.ResourceWithTTL {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]types.ResourceWithTTL, len(names))
	for _, n := range names {
		if a, ok := c.items[n]; ok {
			out[n] = types.ResourceWithTTL{Resource: a.res}
		}
	}
	return out
}

// missing explains why an assignment among names is not published, or
// returns nil when all are.
func (c *assignmentCache) missing(names []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		if _, ok := c.items[n]; ok {
			continue
		}
		if err := c.invalid[n]; err != nil {
			return err
		}
		return fmt.Errorf("load assignment %q does not exist", n)
	}
	return nil
}

// invalidAmong returns why assignments among names were not published.
func (c *assignmentCache) invalidAmong(names []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var result *multierror.Error
	for _, n := range names {
		if err := c.invalid[n]; err != nil {
			result = multierror.Append(result, err)
		}
	}
	return result.ErrorOrNil()
}

// converged finds the change a proxy using names completed by ACKing
// version acked, given that it had already ACKed since on this stream
// (empty if nothing yet): the newest change at or before acked, after
// since, that touched one of names and was caused by a model change after
// the stream opened.
func (c *assignmentCache) converged(names []string, acked, since string, openedAt time.Time) (time.Time, bool) {
	a, ok := parseVersion(c.prefix, acked)
	if !ok {
		return time.Time{}, false
	}
	s, _ := parseVersion(c.prefix, since)
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.history) - 1; i >= 0; i-- {
		ch := c.history[i]
		if ch.version > a {
			continue
		}
		if ch.version <= s {
			break
		}
		if ch.at.IsZero() || !ch.at.After(openedAt) || !touches(ch.names, names) {
			continue
		}
		return ch.at, true
	}
	return time.Time{}, false
}

// touches reports whether a change of the names in changed concerns a
// group using names (sorted). It looks up the smaller side: a change
// usually touches one assignment, and every proxy's ACK asks this of its
// group's thousand names, under the server's lock.
func touches(changed map[string]bool, names []string) bool {
	if len(changed) < len(names) {
		for n := range changed {
			if _, found := slices.BinarySearch(names, n); found {
				return true
			}
		}
		return false
	}
	for _, n := range names {
		if changed[n] {
			return true
		}
	}
	return false
}

// edsResponse is a state-of-the-world response of the endpoint cache. Its
// resources are shared with every other response carrying them.
type edsResponse struct {
	req       *cachev3.Request
	version   string
	resources []*anypb.Any
	returned  map[string]string
}

var _ cachev3.Response = (*edsResponse)(nil)

// GetDiscoveryResponse returns a new message each time: the server sets
// its nonce.
func (r *edsResponse) GetDiscoveryResponse() (*discoveryv3.DiscoveryResponse, error) {
	return &discoveryv3.DiscoveryResponse{VersionInfo: r.version, Resources: r.resources, TypeUrl: resourcev3.EndpointType}, nil
}
func (r *edsResponse) GetRequest() *discoveryv3.DiscoveryRequest { return r.req }
func (r *edsResponse) GetVersion() (string, error)               { return r.version, nil }
func (r *edsResponse) GetResponseVersion() string                { return r.version }
func (r *edsResponse) GetReturnedResources() map[string]string   { return r.returned }
func (r *edsResponse) GetContext() context.Context               { return context.Background() }

// edsDeltaResponse is a delta response of the endpoint cache.
type edsDeltaResponse struct {
	req       *cachev3.DeltaRequest
	version   string
	resources []*discoveryv3.Resource
	removed   []string
	returned  map[string]string
}

var _ cachev3.DeltaResponse = (*edsDeltaResponse)(nil)

func (r *edsDeltaResponse) GetDeltaDiscoveryResponse() (*discoveryv3.DeltaDiscoveryResponse, error) {
	return &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: r.version, Resources: r.resources, RemovedResources: r.removed, TypeUrl: resourcev3.EndpointType,
	}, nil
}
func (r *edsDeltaResponse) GetDeltaRequest() *discoveryv3.DeltaDiscoveryRequest { return r.req }
func (r *edsDeltaResponse) GetSystemVersion() (string, error)                   { return r.version, nil }
func (r *edsDeltaResponse) GetResponseVersion() string                          { return r.version }
func (r *edsDeltaResponse) GetNextVersionMap() map[string]string                { return r.returned }
func (r *edsDeltaResponse) GetReturnedResources() map[string]string             { return r.returned }
func (r *edsDeltaResponse) GetContext() context.Context                         { return context.Background() }
