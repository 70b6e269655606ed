package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
)

// fleet is every simulated proxy plus what they share: the state cache,
// the byte counters and the endpoint change being watched for.
type fleet struct {
	cache   *stateCache
	delta   bool
	proxies []*proxy

	bytes        [numTypes]atomic.Int64
	responses    [numTypes]atomic.Int64
	lastResponse atomic.Int64 // UnixNano of the last response any proxy received

	completed   atomic.Int64
	allComplete chan struct{}

	marker atomic.Pointer[marker]
	errs   chan error
}

// marker is an endpoint change the proxies look for in EDS responses: the
// endpoint assignment of cluster containing the new pod's address.
type marker struct {
	round   int
	cluster string
	ip      []byte
	acked   []atomic.Int64 // per proxy: UnixNano of its ACK, 0 until then
	count   atomic.Int64
	done    chan struct{}
	proxies int64
}

func newMarker(round int, cluster, ip string, proxies int) *marker {
	return &marker{
		round: round, cluster: cluster, ip: encodedAddress(ip),
		acked: make([]atomic.Int64, proxies), done: make(chan struct{}), proxies: int64(proxies),
	}
}

// in reports whether a response carries the change: the new address,
// encoded as a whole SocketAddress.address field, in the raw bytes of the
// one assignment it belongs to. Matching the encoded field rather than the
// text keeps 10.0.0.1 from matching 10.0.0.10.
func (m *marker) in(res []resource) bool {
	for _, r := range res {
		if string(r.name) == m.cluster {
			return bytes.Contains(r.value, m.ip)
		}
	}
	return false
}

// encodedAddress is how SocketAddress.address (field 2, a string) holds ip.
func encodedAddress(ip string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), ip)
}

func (m *marker) ack(proxy int, at int64) {
	m.acked[proxy].Store(at)
	if m.count.Add(1) == m.proxies {
		close(m.done)
	}
}

func newFleet(pods []pod, delta bool) *fleet {
	f := &fleet{
		cache: newStateCache(), delta: delta,
		allComplete: make(chan struct{}),
		errs:        make(chan error, len(pods)),
	}
	for i, p := range pods {
		f.proxies = append(f.proxies, &proxy{
			f: f, idx: i, pod: p,
			node: &corev3.Node{Id: p.nodeID(), Cluster: "minimesh-scale"},
		})
	}
	return f
}

// run runs every proxy's stream on its own connection, as every Envoy has
// its own, until ctx ends. dial opens one proxy's connection.
func (f *fleet) run(ctx context.Context, dial func() (*grpc.ClientConn, error)) error {
	for _, p := range f.proxies {
		conn, err := dial()
		if err != nil {
			return fmt.Errorf("connecting proxy %s: %w", p.pod.Name, err)
		}
		go func() {
			defer func() { _ = conn.Close() }()
			var err error
			if f.delta {
				err = p.runDelta(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn))
			} else {
				err = p.runSotw(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn))
			}
			if ctx.Err() == nil {
				if err == nil || errors.Is(err, io.EOF) {
					err = errors.New("meshd closed the stream")
				}
				f.errs <- fmt.Errorf("proxy %s: %w", p.node.Id, err)
			}
		}()
	}
	return nil
}

// received counts a response for the byte and quiet-time figures.
func (f *fleet) received(t int, size int) {
	f.bytes[t].Add(int64(size))
	f.responses[t].Add(1)
	f.lastResponse.Store(nowNanos())
}

// counters returns the bytes and responses so far, by type.
func (f *fleet) counters() (b, r byType) {
	for t := range numTypes {
		b[t], r[t] = f.bytes[t].Load(), f.responses[t].Load()
	}
	return b, r
}

// proxy is one simulated sidecar. Everything but its atomics belongs to
// its stream goroutine.
type proxy struct {
	f    *fleet
	idx  int
	pod  pod
	node *corev3.Node

	held      [numTypes]*typeState
	version   [numTypes]string // SOTW: last accepted version_info
	nonce     [numTypes]string // SOTW: last response nonce
	asked     [numTypes]*nameList
	requested [numTypes]bool
	lastRound int

	completeAt atomic.Int64 // UnixNano when it first held a full config
}

// want is what the proxy must subscribe to of a referenced type: endpoint
// assignments of its clusters, route configurations of its listeners,
// secrets of both.
func (p *proxy) want(t int) *nameList {
	cds, lds := p.held[tCDS], p.held[tLDS]
	switch t {
	case tEDS:
		if cds != nil {
			return cds.eds
		}
	case tRDS:
		if lds != nil {
			return lds.rds
		}
	case tSDS:
		var a, b *nameList
		if cds != nil {
			a = cds.sds
		}
		if lds != nil {
			b = lds.sds
		}
		return p.f.cache.union(a, b)
	}
	return nil
}

// complete reports whether the proxy holds a closed configuration: clusters
// and listeners, and every endpoint assignment, route configuration and
// secret they reference, all ACKed (the harness ACKs everything).
func (p *proxy) complete() bool {
	if p.held[tCDS] == nil || p.held[tLDS] == nil {
		return false
	}
	for _, t := range []int{tEDS, tRDS, tSDS} {
		if !p.f.cache.holds(p.held[t], p.want(t)) {
			return false
		}
	}
	return true
}

// after runs once a response of type t has been applied and its ACK sent:
// it records full configuration and the endpoint change.
func (p *proxy) after(t int, res []resource) {
	now := nowNanos()
	if t == tEDS {
		if m := p.f.marker.Load(); m != nil && p.lastRound < m.round && m.in(res) {
			p.lastRound = m.round
			m.ack(p.idx, now)
		}
	}
	if p.completeAt.Load() == 0 && p.complete() {
		p.completeAt.Store(now)
		if p.f.completed.Add(1) == int64(len(p.f.proxies)) {
			close(p.f.allComplete)
		}
	}
}

// runSotw speaks state-of-the-world ADS as Envoy does: wildcard CDS and
// LDS, then EDS, RDS and SDS by the names they reference, requested before
// ACKing the response that references them.
func (p *proxy) runSotw(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) error {
	st, err := ads.StreamAggregatedResources(ctx, grpc.ForceCodecV2(wireCodec{}))
	if err != nil {
		return err
	}
	first := true
	send := func(req *sotwRequest) error {
		if first {
			req.req.Node, first = p.node, false
		}
		return st.SendMsg(req)
	}
	request := func(t int) *sotwRequest {
		req := &sotwRequest{req: &discoveryv3.DiscoveryRequest{TypeUrl: typeURLs[t], VersionInfo: p.version[t], ResponseNonce: p.nonce[t]}}
		if t >= tEDS {
			req.names = p.asked[t]
		}
		return req
	}
	for _, t := range []int{tCDS, tLDS} {
		p.requested[t] = true
		if err := send(request(t)); err != nil {
			return err
		}
	}
	resp := &wireResponse{}
	defer resp.release()
	for {
		if err := st.RecvMsg(resp); err != nil {
			return err
		}
		t := typeIndex(resp.typeURL)
		if t < 0 {
			continue // not a type this proxy asked for
		}
		p.f.received(t, resp.size)
		// Listeners and clusters come complete in every response; for
		// the other types a response carries what changed, and the
		// proxy keeps the rest, as Envoy does.
		var prev *typeState
		if t != tCDS && t != tLDS {
			prev = p.held[t]
		}
		state, err := p.f.cache.apply(t, prev, resp.content, resp.resources, nil)
		if err != nil {
			return err
		}
		p.held[t] = state
		p.version[t], p.nonce[t] = resp.version, resp.nonce
		var out []*sotwRequest
		if t == tCDS || t == tLDS {
			for _, d := range []int{tEDS, tRDS, tSDS} {
				w := p.want(d)
				if w.signature() == p.asked[d].signature() {
					continue
				}
				// An empty name list would mean "everything" to the
				// server, so it is sent only to drop an earlier request.
				if w.len() == 0 && !p.requested[d] {
					continue
				}
				p.asked[d], p.requested[d] = w, true
				out = append(out, request(d))
			}
		}
		out = append(out, request(t)) // the ACK
		for _, req := range out {
			if err := send(req); err != nil {
				return err
			}
		}
		p.after(t, resp.resources)
		resp.release()
	}
}

// runDelta speaks incremental ADS as Envoy does: wildcard CDS and LDS,
// then subscribes to and unsubscribes from the referenced names as they
// change.
func (p *proxy) runDelta(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) error {
	st, err := ads.DeltaAggregatedResources(ctx, grpc.ForceCodecV2(wireCodec{}))
	if err != nil {
		return err
	}
	first := true
	send := func(req *discoveryv3.DeltaDiscoveryRequest) error {
		if first {
			req.Node, first = p.node, false
		}
		return st.Send(req)
	}
	for _, t := range []int{tCDS, tLDS} {
		p.requested[t] = true
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURLs[t]}); err != nil {
			return err
		}
	}
	resp := &wireResponse{delta: true}
	defer resp.release()
	for {
		if err := st.RecvMsg(resp); err != nil {
			return err
		}
		t := typeIndex(resp.typeURL)
		if t < 0 {
			continue
		}
		p.f.received(t, resp.size)
		state, err := p.f.cache.apply(t, p.held[t], resp.content, resp.resources, resp.removed)
		if err != nil {
			return err
		}
		p.held[t] = state
		var out []*discoveryv3.DeltaDiscoveryRequest
		if t == tCDS || t == tLDS {
			for _, d := range []int{tEDS, tRDS, tSDS} {
				w := p.want(d)
				if w.signature() == p.asked[d].signature() {
					continue
				}
				req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURLs[d]}
				for _, n := range w.names {
					if _, had := p.asked[d].setOrNil()[n]; !had {
						req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, n)
					}
				}
				for _, n := range p.asked[d].namesOrNil() {
					if _, keep := w.setOrNil()[n]; !keep {
						req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, n)
					}
				}
				p.asked[d], p.requested[d] = w, true
				out = append(out, req)
			}
		}
		out = append(out, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURLs[t], ResponseNonce: resp.nonce})
		for _, req := range out {
			if err := send(req); err != nil {
				return err
			}
		}
		p.after(t, resp.resources)
		resp.release()
	}
}

func (l *nameList) setOrNil() map[string]struct{} {
	if l == nil {
		return nil
	}
	return l.set
}

func (l *nameList) namesOrNil() []string {
	if l == nil {
		return nil
	}
	return l.names
}
