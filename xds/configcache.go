package xds

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// published is a group snapshot ready to be sent: every resource encoded
// once, as the Any that every response carrying it shares. Immutable.
type published struct {
	snap  *cachev3.Snapshot
	types map[string]*publishedType // by type URL
}

type publishedType struct {
	version string
	items   map[string]*publishedItem
	sorted  []*publishedItem // by name
	// deltaComplete is what a delta client holds after a response with
	// every resource: each name with its resource version. base is the
	// same as a heldBase, which wildcard delta responses name (see
	// respondConfigDelta); made on first use, under configCache.mu.
	deltaComplete map[string]string
	base          *heldBase
}

// typeOf returns p's resources of a type, nil when p is nil or has none.
func (p *published) typeOf(typeURL string) *publishedType {
	if p == nil {
		return nil
	}
	return p.types[typeURL]
}

type publishedItem struct {
	name  string
	any   *anypb.Any
	delta *discoveryv3.Resource
}

// publish prepares a group snapshot for the config cache. The snapshot's
// resources are the resource table's pre-encoded shells, whose encoding is
// their unknown fields: the Anys share those bytes, so publishing copies
// nothing, and the table keeps one publishedItem per shell for every group
// (table may be nil).
func publish(snap *cachev3.Snapshot, table *resourceTable) (*published, error) {
	p := &published{snap: snap, types: map[string]*publishedType{}}
	for _, typeURL := range configTypes {
		items := snap.GetResourcesAndTTL(typeURL)
		pt := &publishedType{
			version:       snap.GetVersion(typeURL),
			items:         make(map[string]*publishedItem, len(items)),
			sorted:        make([]*publishedItem, 0, len(items)),
			deltaComplete: snap.VersionMap[typeURL],
		}
		for name, r := range items {
			version := snap.VersionMap[typeURL][name]
			it := table.itemFor(r.Resource, func() *publishedItem {
				if value := r.Resource.ProtoReflect().GetUnknown(); len(value) > 0 {
					return newPublishedItem(typeURL, name, version, value)
				}
				return nil
			})
			if it == nil || it.name != name || it.delta.GetVersion() != version || it.any.GetTypeUrl() != typeURL {
				value := []byte(r.Resource.ProtoReflect().GetUnknown())
				if len(value) == 0 {
					var err error
					if value, err = cachev3.MarshalResource(r.Resource); err != nil {
						return nil, fmt.Errorf("encoding %s %q: %w", shortType(typeURL), name, err)
					}
				}
				it = newPublishedItem(typeURL, name, version, value)
			}
			pt.items[name] = it
			pt.sorted = append(pt.sorted, it)
		}
		slices.SortFunc(pt.sorted, func(a, b *publishedItem) int { return strings.Compare(a.name, b.name) })
		p.types[typeURL] = pt
	}
	return p, nil
}

func newPublishedItem(typeURL, name, version string, value []byte) *publishedItem {
	a := &anypb.Any{TypeUrl: typeURL, Value: value}
	return &publishedItem{name: name, any: a, delta: &discoveryv3.Resource{Name: name, Version: version, Resource: a}}
}

// configCache is the go-control-plane cache (cachev3.Cache) of listeners,
// routes and clusters. go-control-plane's server does the protocol and
// asks it what to send; it answers from each proxy's group snapshot, keyed
// by node ID, with the semantics of go-control-plane's SnapshotCache: a
// state-of-the-world watch is answered when the type's version differs
// from the request's (or it subscribes to a resource it was not sent), a
// delta watch with the resources whose versions differ and the removals.
//
// It exists for what SnapshotCache costs at scale: for every response to
// every proxy, SnapshotCache wraps each resource anew and encodes it again
// into a fresh Any (a thousand clusters: a megabyte and a thousand small
// objects per proxy, all alive at once when a thousand proxies connect).
// Here a response is a small struct pointing at its group's shared,
// already encoded resources.
//
// As in SnapshotCache, responses are sent on go-control-plane's channels
// while mu is held; they never block, because a stream has at most one
// watch per type and its channel holds a response per type.
type configCache struct {
	mu     sync.Mutex
	nodes  map[string]*configNode
	nextID uint64
	bases  *heldBases
}

type configNode struct {
	pub     *published
	watches map[uint64]*configWatch
}

// configWatch is an open watch; exactly one of sotw and delta is set.
type configWatch struct {
	sotw  *cachev3.Request
	delta *cachev3.DeltaRequest
	sub   cachev3.Subscription
	out   chan cachev3.Response
	dout  chan cachev3.DeltaResponse
}

func (w *configWatch) typeURL() string {
	if w.sotw != nil {
		return w.sotw.GetTypeUrl()
	}
	return w.delta.GetTypeUrl()
}

var _ cachev3.Cache = (*configCache)(nil)

func newConfigCache() *configCache {
	return &configCache{nodes: map[string]*configNode{}, bases: newHeldBases()}
}

func (c *configCache) node(id string) *configNode {
	n := c.nodes[id]
	if n == nil {
		n = &configNode{watches: map[uint64]*configWatch{}}
		c.nodes[id] = n
	}
	return n
}

// SetSnapshot makes pub what node is served, answering its open watches
// for which something changed.
func (c *configCache) SetSnapshot(node string, pub *published) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(node)
	n.pub = pub
	for id, w := range n.watches {
		if c.respond(n, w, false) {
			delete(n.watches, id)
		}
	}
}

// ClearSnapshot forgets node. Its streams are gone; any watch still open
// stays until go-control-plane cancels it.
func (c *configCache) ClearSnapshot(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[node]; n != nil {
		n.pub = nil
		if len(n.watches) == 0 {
			delete(c.nodes, node)
		}
	}
}

// served returns what node is served, for tests.
func (c *configCache) served(node string) *published {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[node]; n != nil {
		return n.pub
	}
	return nil
}

func (c *configCache) watch(node string, w *configWatch) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(node)
	if c.respond(n, w, true) {
		return func() {}
	}
	c.nextID++
	id := c.nextID
	n.watches[id] = w
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if n := c.nodes[node]; n != nil {
			delete(n.watches, id)
			if len(n.watches) == 0 && n.pub == nil {
				delete(c.nodes, node)
			}
		}
	}
}

// CreateWatch implements cachev3.ConfigWatcher for state of the world.
func (c *configCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	if !slices.Contains(configTypes, req.GetTypeUrl()) {
		return nil, fmt.Errorf("the configuration cache does not serve %s", req.GetTypeUrl())
	}
	return c.watch(req.GetNode().GetId(), &configWatch{sotw: req, sub: sub, out: out}), nil
}

// CreateDeltaWatch implements cachev3.ConfigWatcher for delta.
func (c *configCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	if !slices.Contains(configTypes, req.GetTypeUrl()) {
		return nil, fmt.Errorf("the configuration cache does not serve %s", req.GetTypeUrl())
	}
	c.bases.unsubscribed(sub.ReturnedResources(), req.GetResourceNamesUnsubscribe())
	c.bases.subscribing(sub.ReturnedResources(), req.GetResourceNamesSubscribe(), req.GetInitialResourceVersions())
	return c.watch(req.GetNode().GetId(), &configWatch{delta: req, sub: sub, dout: out}), nil
}

// Fetch implements cachev3.ConfigFetcher; minimesh serves ADS streams only.
func (c *configCache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errors.New("minimesh serves configuration over ADS streams only")
}

// respond answers w from n's snapshot if it should be, and reports
// whether it did; onCreate is set when the watch is being created, unset
// when n's snapshot changed. Called with mu held.
func (c *configCache) respond(n *configNode, w *configWatch, onCreate bool) bool {
	if n.pub == nil {
		return false // the pod is not known yet: the watch waits
	}
	pt := n.pub.types[w.typeURL()]
	if pt == nil {
		return false
	}
	if w.sotw != nil {
		return respondConfigSotw(pt, w, onCreate)
	}
	return c.respondConfigDelta(pt, w)
}

// respondConfigSotw answers, with every resource the client subscribes
// to, when the type's version differs from the request's, or, when the
// watch is created (onCreate), the client subscribes to a resource this
// stream has not sent it. A watch that waited for its node's first
// snapshot is only compared by version: it comes from a proxy that
// resumed after a reconnect or a meshd restart, which holds that version
// of everything it subscribes to.
//
// A response to a wildcard watch holds every resource, so its returned map
// would be the group's, shared by every proxy; go-control-plane writes to a
// stream's returned map when its client changes to naming resources, so
// those responses return none instead (nil), which says the client holds
// all of that version. Responses naming resources return a map of their
// own.
func respondConfigSotw(pt *publishedType, w *configWatch, onCreate bool) bool {
	known := w.sub.ReturnedResources()
	subscribed := w.sub.SubscribedResources()
	wildcard := w.sub.IsWildcard()
	if w.sotw.GetVersionInfo() == pt.version && onCreate {
		missing := false
		switch {
		case wildcard && known == nil:
			// Holds every resource of this version.
		case wildcard:
			for name := range pt.items {
				if _, ok := known[name]; !ok {
					missing = true
					break
				}
			}
		default:
			for name := range subscribed {
				_, have := pt.items[name]
				if _, ok := known[name]; have && !ok {
					missing = true
					break
				}
			}
		}
		if !missing {
			return false
		}
	} else if w.sotw.GetVersionInfo() == pt.version {
		return false
	}
	var anys []*anypb.Any
	var returned map[string]string
	if wildcard {
		anys = make([]*anypb.Any, len(pt.sorted))
		for i, it := range pt.sorted {
			anys[i] = it.any
		}
	} else {
		returned = make(map[string]string, len(subscribed))
		for _, it := range pt.sorted {
			if _, ok := subscribed[it.name]; ok {
				anys = append(anys, it.any)
				returned[it.name] = pt.version
			}
		}
	}
	w.out <- &configResponse{req: w.sotw, version: pt.version, resources: anys, returned: returned}
	return true
}

// respondConfigDelta answers with the resources whose versions differ from
// what the client holds, and the removal of those it holds that are gone;
// a wildcard client's first request is answered even when nothing is.
//
// After a response a wildcard client holds exactly the type's resources,
// so its map names the type's heldBase, which every proxy of the group
// shares, instead of holding a thousand clusters of its own. Called with
// mu held.
func (c *configCache) respondConfigDelta(pt *publishedType, w *configWatch) bool {
	known := w.sub.ReturnedResources()
	view := c.bases.view(known)
	subscribed := w.sub.SubscribedResources()
	wildcard := w.sub.IsWildcard()
	first := wildcard && w.delta.GetResponseNonce() == ""
	if wildcard && !first && view.base != nil && view.base == pt.base && view.onlyBase() {
		return false // holds exactly this version
	}
	var changed []*discoveryv3.Resource
	var removed []string
	consider := func(name string) {
		it, exists := pt.items[name]
		held, isKnown := view.get(name)
		switch {
		case !exists:
			if isKnown {
				removed = append(removed, name)
			}
		case !isKnown || held != it.delta.GetVersion():
			changed = append(changed, it.delta)
		}
	}
	if wildcard {
		for _, it := range pt.sorted {
			consider(it.name)
		}
		view.each(func(name string) {
			if _, ok := pt.items[name]; !ok {
				consider(name)
			}
		})
	} else {
		for _, name := range slices.Sorted(maps.Keys(subscribed)) {
			consider(name)
		}
	}
	if len(changed) == 0 && len(removed) == 0 && !first {
		return false
	}
	var returned map[string]string
	if wildcard {
		// The map is the stream's own, and small: go-control-plane
		// writes to it when the client unsubscribes.
		if pt.base == nil {
			pt.base = c.bases.intern(pt.deltaComplete, heldSum(pt.deltaComplete))
		}
		returned = map[string]string{heldBaseKey: pt.base.String()}
	} else {
		returned = view.flatten(len(changed))
		for _, r := range changed {
			returned[r.GetName()] = r.GetVersion()
		}
		for _, name := range removed {
			delete(returned, name)
		}
	}
	slices.Sort(removed)
	w.dout <- &configDeltaResponse{req: w.delta, version: pt.version, resources: changed, removed: removed, returned: returned}
	return true
}

// configResponse is a state-of-the-world response of the configuration
// cache; its resources are shared with other responses, its returned map
// (nil for a complete response, see respondConfigSotw) is not.
type configResponse struct {
	req       *cachev3.Request
	version   string
	resources []*anypb.Any
	returned  map[string]string
}

var _ cachev3.Response = (*configResponse)(nil)

// GetDiscoveryResponse returns a new message each time: the server sets
// its nonce.
func (r *configResponse) GetDiscoveryResponse() (*discoveryv3.DiscoveryResponse, error) {
	return &discoveryv3.DiscoveryResponse{VersionInfo: r.version, Resources: r.resources, TypeUrl: r.req.GetTypeUrl()}, nil
}
func (r *configResponse) GetRequest() *discoveryv3.DiscoveryRequest { return r.req }
func (r *configResponse) GetVersion() (string, error)               { return r.version, nil }
func (r *configResponse) GetResponseVersion() string                { return r.version }
func (r *configResponse) GetReturnedResources() map[string]string   { return r.returned }
func (r *configResponse) GetContext() context.Context               { return context.Background() }

// configDeltaResponse is a delta response of the configuration cache.
type configDeltaResponse struct {
	req       *cachev3.DeltaRequest
	version   string
	resources []*discoveryv3.Resource
	removed   []string
	returned  map[string]string
}

var _ cachev3.DeltaResponse = (*configDeltaResponse)(nil)

func (r *configDeltaResponse) GetDeltaDiscoveryResponse() (*discoveryv3.DeltaDiscoveryResponse, error) {
	return &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: r.version, Resources: r.resources, RemovedResources: r.removed, TypeUrl: r.req.GetTypeUrl(),
	}, nil
}
func (r *configDeltaResponse) GetDeltaRequest() *discoveryv3.DeltaDiscoveryRequest { return r.req }
func (r *configDeltaResponse) GetSystemVersion() (string, error)                   { return r.version, nil }
func (r *configDeltaResponse) GetResponseVersion() string                          { return r.version }
func (r *configDeltaResponse) GetNextVersionMap() map[string]string                { return r.returned }
func (r *configDeltaResponse) GetReturnedResources() map[string]string             { return r.returned }
func (r *configDeltaResponse) GetContext() context.Context                         { return context.Background() }
