package translate

import (
	"sync"

	"github.com/minimesh/minimesh/discovery/model"
)

// Batch translates one model snapshot for many proxy groups. The outbound
// half of a translation (the listeners, routes, clusters and assignments
// toward every service in the mesh) depends on the model, the flavour and
// the proxy's namespace only: DestinationRules are chosen by the caller's
// namespace, and so are the short host names a caller may use. A Batch
// builds it once per flavour and namespace, and every group of that
// namespace shares the result, so a mesh of fifty deployments in ten
// namespaces translates its thousand services ten times, not fifty. The
// shared resources are never modified after they are built.
//
// A Batch is safe for concurrent use; Translate(snap, p, opts) is
// NewBatch(snap, opts).Translate(p).
type Batch struct {
	snap *model.Snapshot
	opts Options

	mu       sync.Mutex
	outbound map[outboundKey]*sharedOutbound
}

type outboundKey struct {
	flavor    Flavor
	namespace string
}

type sharedOutbound struct {
	once     sync.Once
	res      *Resources
	panicked any // a bug in translation, re-raised in every group that uses it
}

// NewBatch starts a batch for snap (nil is an empty mesh).
func NewBatch(snap *model.Snapshot, opts Options) *Batch {
	if snap == nil {
		snap = &model.Snapshot{}
	}
	return &Batch{snap: snap, opts: opts.WithDefaults(), outbound: map[outboundKey]*sharedOutbound{}}
}

// outboundFor returns the outbound resources of flavour f for proxies in
// namespace ns, building them on first use.
func (b *Batch) outboundFor(f Flavor, ns string, build func() *Resources) *Resources {
	key := outboundKey{f, ns}
	b.mu.Lock()
	so := b.outbound[key]
	if so == nil {
		so = &sharedOutbound{}
		b.outbound[key] = so
	}
	b.mu.Unlock()
	so.once.Do(func() {
		defer func() { so.panicked = recover() }()
		so.res = build()
	})
	if so.panicked != nil {
		panic(so.panicked)
	}
	return so.res
}

// add appends shared resources to r.
func (r *Resources) add(shared *Resources) {
	r.Listeners = append(r.Listeners, shared.Listeners...)
	r.Routes = append(r.Routes, shared.Routes...)
	r.Clusters = append(r.Clusters, shared.Clusters...)
	r.Endpoints = append(r.Endpoints, shared.Endpoints...)
	r.Problems = append(r.Problems, shared.Problems...)
}
