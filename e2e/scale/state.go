package main

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The simulated proxies keep almost nothing of their own. What a proxy
// holds of one type is a pointer to an immutable, shared typeState; the
// states are interned by (previous state, response content), so the 20
// replicas of a workload that receive the same responses walk the same
// chain of states and each response's resources are decoded once for all
// of them, not once per proxy. A thousand proxies then cost about what a
// handful of distinct configurations cost, and the harness leaves the CPU
// to meshd.

// xDS types, indexed in the order Envoy subscribes.
const (
	tCDS = iota
	tLDS
	tEDS
	tRDS
	tSDS
	numTypes
)

var typeURLs = [numTypes]string{
	"type.googleapis.com/envoy.config.cluster.v3.Cluster",
	"type.googleapis.com/envoy.config.listener.v3.Listener",
	"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
	"type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
	"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
}

var typeNames = [numTypes]string{"cds", "lds", "eds", "rds", "sds"}

// typeIndex maps a type URL to its index, or -1.
func typeIndex(url string) int {
	for i, u := range typeURLs {
		if u == url {
			return i
		}
	}
	return -1
}

// nameList is an immutable, sorted set of resource names with a
// signature, so two proxies (or two versions) compare in O(1).
type nameList struct {
	names []string
	set   map[string]struct{}
	sig   uint64
	// wire is names as a DiscoveryRequest's resource_names fields.
	wire []byte
}

var seed = maphash.MakeSeed()

func newNameList(set map[string]struct{}) *nameList {
	l := &nameList{names: slices.Sorted(maps.Keys(set)), set: set}
	var h maphash.Hash
	h.SetSeed(seed)
	for _, n := range l.names {
		h.WriteString(n)
		h.WriteByte(0)
	}
	l.sig = h.Sum64()
	for _, n := range l.names {
		l.wire = protowire.AppendString(protowire.AppendTag(l.wire, resourceNamesField, protowire.BytesType), n)
	}
	return l
}

func (l *nameList) len() int {
	if l == nil {
		return 0
	}
	return len(l.names)
}

func (l *nameList) signature() uint64 {
	if l == nil {
		return 0
	}
	return l.sig
}

// union merges two lists, interned so proxies share the result.
func (c *stateCache) union(a, b *nameList) *nameList {
	switch {
	case a.len() == 0:
		return b
	case b.len() == 0 || a.sig == b.sig:
		return a
	}
	key := [2]uint64{a.sig, b.sig}
	c.mu.Lock()
	defer c.mu.Unlock()
	if u, ok := c.unions[key]; ok {
		return u
	}
	set := maps.Clone(a.set)
	maps.Copy(set, b.set)
	u := newNameList(set)
	c.unions[key] = u
	return u
}

// refs are the names one cluster or listener makes Envoy subscribe to.
type refs struct {
	eds, rds, sds []string
}

// typeState is what a proxy holds of one type after a response: the names,
// and for clusters and listeners the names they reference.
type typeState struct {
	id    uint64
	names map[string]*refs // refs are nil for EDS, RDS and SDS
	// Referenced names (clusters and listeners only): EDS from clusters,
	// RDS from listeners, SDS from both.
	eds, rds, sds *nameList
}

// resource is one resource of a response, as the wire carries it. Both
// slices alias the response's buffer.
type resource struct {
	name  []byte
	value []byte
}

// stateCache interns type states and decoded references for all proxies.
type stateCache struct {
	mu     sync.Mutex
	nextID uint64
	states map[uint64]*typeState // by transition key
	refs   map[uint64]*refs      // by resource content
	subset map[[2]uint64]bool    // (held state id, wanted signature) → held ⊇ wanted
	unions map[[2]uint64]*nameList
}

func newStateCache() *stateCache {
	return &stateCache{states: map[uint64]*typeState{}, refs: map[uint64]*refs{}, subset: map[[2]uint64]bool{}, unions: map[[2]uint64]*nameList{}}
}

// apply returns the state after a response of type t. prev is the state
// before it (nil for a complete response: listeners and clusters in state
// of the world); removed lists names a delta response removes. A resource that
// cannot be decoded is an error: it means the harness and meshd disagree
// on the protocol, and the measurement would be meaningless.
func (c *stateCache) apply(t int, prev *typeState, content uint64, res []resource, removed []string) (*typeState, error) {
	var h maphash.Hash
	h.SetSeed(seed)
	var b [17]byte
	b[0] = byte(t)
	if prev != nil {
		binary.LittleEndian.PutUint64(b[1:], prev.id)
	}
	binary.LittleEndian.PutUint64(b[9:], content)
	h.Write(b[:])
	for _, n := range removed {
		h.WriteString(n)
		h.WriteByte(0)
	}
	key := h.Sum64()

	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.states[key]; ok {
		return s, nil
	}
	s := &typeState{names: make(map[string]*refs, len(res))}
	if prev != nil {
		maps.Copy(s.names, prev.names)
	}
	for _, r := range res {
		var rf *refs
		if t == tCDS || t == tLDS {
			var err error
			if rf, err = c.refsLocked(t, r.value); err != nil {
				return nil, fmt.Errorf("%s resource %q: %w", typeNames[t], r.name, err)
			}
		}
		s.names[string(r.name)] = rf
	}
	for _, n := range removed {
		delete(s.names, n)
	}
	if t == tCDS || t == tLDS {
		eds, rds, sds := map[string]struct{}{}, map[string]struct{}{}, map[string]struct{}{}
		for _, rf := range s.names {
			for _, n := range rf.eds {
				eds[n] = struct{}{}
			}
			for _, n := range rf.rds {
				rds[n] = struct{}{}
			}
			for _, n := range rf.sds {
				sds[n] = struct{}{}
			}
		}
		s.eds, s.rds, s.sds = newNameList(eds), newNameList(rds), newNameList(sds)
	}
	c.nextID++
	s.id = c.nextID
	c.states[key] = s
	return s, nil
}

// refsLocked decodes one cluster or listener, once per distinct content.
func (c *stateCache) refsLocked(t int, value []byte) (*refs, error) {
	key := maphash.Bytes(seed, value)
	if rf, ok := c.refs[key]; ok {
		return rf, nil
	}
	var rf *refs
	var err error
	if t == tCDS {
		rf, err = clusterRefs(value)
	} else {
		rf, err = listenerRefs(value)
	}
	if err != nil {
		return nil, err
	}
	c.refs[key] = rf
	return rf, nil
}

// holds reports whether held has every name in want.
func (c *stateCache) holds(held *typeState, want *nameList) bool {
	if want.len() == 0 {
		return true
	}
	if held == nil {
		return false
	}
	key := [2]uint64{held.id, want.sig}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok, found := c.subset[key]; found {
		return ok
	}
	ok := true
	for _, n := range want.names {
		if _, has := held.names[n]; !has {
			ok = false
			break
		}
	}
	c.subset[key] = ok
	return ok
}

// clusterRefs finds the EDS name and SDS secrets a cluster references.
func clusterRefs(value []byte) (*refs, error) {
	var cl clusterv3.Cluster
	if err := proto.Unmarshal(value, &cl); err != nil {
		return nil, fmt.Errorf("decoding a cluster: %w", err)
	}
	rf := &refs{}
	if cl.GetType() == clusterv3.Cluster_EDS {
		rf.eds = append(rf.eds, cmp.Or(cl.GetEdsClusterConfig().GetServiceName(), cl.GetName()))
	}
	rf.sds = append(rf.sds, socketSecrets(cl.GetTransportSocket())...)
	for _, m := range cl.GetTransportSocketMatches() {
		rf.sds = append(rf.sds, socketSecrets(m.GetTransportSocket())...)
	}
	return rf, nil
}

// listenerRefs finds the route configurations (RDS) and secrets a listener
// references, in filter chains and in a gRPC API listener.
func listenerRefs(value []byte) (*refs, error) {
	var l listenerv3.Listener
	if err := proto.Unmarshal(value, &l); err != nil {
		return nil, fmt.Errorf("decoding a listener: %w", err)
	}
	rf := &refs{}
	addHCM := func(a *anypb.Any) error {
		hcm := &hcmv3.HttpConnectionManager{}
		if a == nil || !a.MessageIs(hcm) {
			return nil
		}
		if err := a.UnmarshalTo(hcm); err != nil {
			return fmt.Errorf("decoding an HTTP connection manager: %w", err)
		}
		if r := hcm.GetRds(); r != nil {
			rf.rds = append(rf.rds, r.GetRouteConfigName())
		}
		return nil
	}
	if err := addHCM(l.GetApiListener().GetApiListener()); err != nil {
		return nil, err
	}
	chains := l.GetFilterChains()
	if d := l.GetDefaultFilterChain(); d != nil {
		chains = append(slices.Clip(chains), d)
	}
	for _, fc := range chains {
		rf.sds = append(rf.sds, socketSecrets(fc.GetTransportSocket())...)
		for _, f := range fc.GetFilters() {
			if err := addHCM(f.GetTypedConfig()); err != nil {
				return nil, err
			}
		}
	}
	return rf, nil
}

// socketSecrets lists the SDS secrets a TLS transport socket names.
func socketSecrets(ts *corev3.TransportSocket) []string {
	a := ts.GetTypedConfig()
	if a == nil {
		return nil
	}
	var common *tlsv3.CommonTlsContext
	up, down := &tlsv3.UpstreamTlsContext{}, &tlsv3.DownstreamTlsContext{}
	switch {
	case a.MessageIs(up):
		if a.UnmarshalTo(up) == nil {
			common = up.GetCommonTlsContext()
		}
	case a.MessageIs(down):
		if a.UnmarshalTo(down) == nil {
			common = down.GetCommonTlsContext()
		}
	}
	var names []string
	for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
		names = append(names, s.GetName())
	}
	if s := common.GetValidationContextSdsSecretConfig(); s != nil {
		names = append(names, s.GetName())
	}
	if s := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); s != nil {
		names = append(names, s.GetName())
	}
	return names
}
