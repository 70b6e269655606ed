package translate

import (
	"net/netip"
	"reflect"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/minimesh/minimesh/discovery/model"
)

// usableEndpoints picks the endpoints that receive traffic: ready ones
// (EndpointSlice "ready" already implies serving and not terminating); when
// there are none, serving endpoints that are
// terminating, so that a rollout where every old pod is draining still
// serves (the fallback kube-proxy and Envoy Gateway apply). Endpoints that
// are neither are never sent.
func usableEndpoints(eps []model.Endpoint) []model.Endpoint {
	var ready, draining []model.Endpoint
	for _, e := range eps {
		switch {
		case e.Ready && !e.Terminating:
			ready = append(ready, e)
		case e.Serving && e.Terminating:
			draining = append(draining, e)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return draining
}

// ClusterLoadAssignment lists the endpoints of one outbound cluster in a
// single locality with equal weights. In-mesh endpoints carry the metadata
// the cluster's transport_socket_matches select mTLS with. targetPort is
// used for endpoints whose port is unknown (0).
func ClusterLoadAssignment(cluster string, eps []model.Endpoint, targetPort uint32) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	usable := usableEndpoints(eps)
	if len(usable) == 0 {
		return cla
	}
	lbs := make([]*endpointv3.LbEndpoint, 0, len(usable))
	for _, e := range usable {
		port := uint32(e.Port)
		if e.Port <= 0 {
			port = targetPort
		}
		lb := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(e.IP, port),
			}},
			LoadBalancingWeight: wrapperspb.UInt32(1),
		}
		if e.InMesh {
			lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				transportSocketMatchFilter: {Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModeIstio)}},
			}}
		}
		lbs = append(lbs, lb)
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{
		Locality:            &corev3.Locality{},
		LbEndpoints:         lbs,
		LoadBalancingWeight: wrapperspb.UInt32(uint32(len(lbs))),
	}}
	return cla
}

// EndpointsFor builds the ClusterLoadAssignment of every outbound cluster a
// proxy of flavour f can have, keyed by cluster name. Assignments depend on
// the mesh and the flavour only, never on the proxy (which clusters a proxy
// has may: a proxyless client is not offered a port its DestinationRule
// makes unusable, so the map can hold names a given group does not use).
// Translate takes its assignments from here, and the xDS layer calls it
// once per flavour on a change that touches only endpoints (see
// OnlyEndpointsDiffer), instead of translating every group again.
func EndpointsFor(snap *model.Snapshot, f Flavor, opts Options) map[string]*endpointv3.ClusterLoadAssignment {
	inputs := AssignmentInputs(snap, f, opts)
	out := make(map[string]*endpointv3.ClusterLoadAssignment, len(inputs))
	for name, in := range inputs {
		out[name] = Assignment(f, name, in)
	}
	return out
}

// assignmentsFor returns the assignment of each outbound cluster of
// flavour f by name: EndpointsFor's, or, with Options.AssignmentNamesOnly,
// one that only names its cluster.
func assignmentsFor(snap *model.Snapshot, f Flavor, opts Options) func(string) *endpointv3.ClusterLoadAssignment {
	if opts.AssignmentNamesOnly {
		return func(name string) *endpointv3.ClusterLoadAssignment {
			return &endpointv3.ClusterLoadAssignment{ClusterName: name}
		}
	}
	all := EndpointsFor(snap, f, opts)
	return func(name string) *endpointv3.ClusterLoadAssignment { return all[name] }
}

// AssignmentInput is everything one outbound cluster's assignment is built
// from (see Assignment): equal inputs give equal assignments.
type AssignmentInput struct {
	// Endpoints as auto-mTLS sees them: InMesh is set only on endpoints
	// whose server accepts mTLS on that port (acceptsMTLS), which is what
	// the assignment's tlsMode metadata says.
	Endpoints  []model.Endpoint
	TargetPort uint32
}

// Equal reports whether a and b give the same assignment.
func (a AssignmentInput) Equal(b AssignmentInput) bool {
	return a.TargetPort == b.TargetPort && slices.Equal(a.Endpoints, b.Endpoints)
}

// AssignmentInputs returns the input of every assignment EndpointsFor
// builds, keyed by cluster name, so that a caller keeping the previous
// assignments can rebuild only those whose input changed.
func AssignmentInputs(snap *model.Snapshot, f Flavor, opts Options) map[string]AssignmentInput {
	opts = opts.WithDefaults()
	if snap == nil {
		return map[string]AssignmentInput{}
	}
	out := make(map[string]AssignmentInput, len(snap.Services))
	accepts := newAcceptsMTLS(snap, opts.RootNamespace)
	for i := range snap.Services {
		s := &snap.Services[i]
		fqdn := FQDN(s.Name, s.Namespace, opts.ClusterDomain)
		for _, sp := range s.Ports {
			if !outboundPort(f, sp) {
				continue
			}
			name := OutboundClusterName(uint32(sp.Port), fqdn)
			if _, dup := out[name]; dup {
				continue // the first port wins, as in translation
			}
			var eps []model.Endpoint
			if se := snap.EndpointsFor(s.Namespace, s.Name, sp.Port); se != nil {
				eps = se.Endpoints
			}
			out[name] = AssignmentInput{Endpoints: accepts.endpoints(s.Namespace, eps, uint32(sp.TargetPort)), TargetPort: uint32(sp.TargetPort)}
		}
	}
	return out
}

// Assignment builds the assignment of cluster name for flavour f.
func Assignment(f Flavor, name string, in AssignmentInput) *endpointv3.ClusterLoadAssignment {
	if f == FlavorProxyless {
		return ProxylessClusterLoadAssignment(name, in.Endpoints, in.TargetPort)
	}
	return ClusterLoadAssignment(name, in.Endpoints, in.TargetPort)
}

// outboundPort reports whether a service port can have an outbound cluster
// for flavour f at all; translation may still leave it out for a proxy.
func outboundPort(f Flavor, sp model.ServicePort) bool {
	if !isTCP(sp.Protocol) {
		return false
	}
	if f == FlavorProxyless {
		// gRPC only speaks HTTP/2: a port not declared as HTTP or gRPC
		// is not offered to proxyless clients, as in Istio.
		return PortProtocol(sp).IsHTTP() && sp.Port > 0 && sp.Port <= 65535
	}
	port := uint32(sp.Port)
	return port != VirtualInboundPort && port != VirtualOutboundPort
}

// OnlyEndpointsDiffer reports whether translating b gives every proxy of
// flavour f the same listeners, route configurations, clusters and problems
// as translating a, so that only ClusterLoadAssignments can differ and
// EndpointsFor(b) completes the previous translation of a.
//
// It compares everything translation reads except the parts of endpoints
// that only assignments read. What else reads endpoints is listed here and
// must stay in step with translation:
//
//   - cluster TLS (both flavours): the SPIFFE IDs of every endpoint's
//     service account (serviceSANs);
//   - proxyless auto mTLS: whether any usable endpoint accepts mTLS
//     (acceptsMTLS), and the addresses of usable endpoints that do not
//     (autoMTLS picks the transport from both and names the latter in a
//     problem); a workload's labels decide its PeerAuthentication, so
//     they are read through this too;
//   - proxyless server listeners: the addresses of in-mesh workloads
//     (meshSourceRanges). Envoy translation never reads Workloads; a
//     workload's own changes reach it through its Proxy (its group key).
//
// Model problems are not compared: translation never reads them.
func OnlyEndpointsDiffer(a, b *model.Snapshot, f Flavor, opts Options) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	if !reflect.DeepEqual(a.Namespaces, b.Namespaces) || !reflect.DeepEqual(a.Services, b.Services) ||
		!reflect.DeepEqual(a.Policies, b.Policies) {
		return false
	}
	if f == FlavorProxyless && !slices.Equal(meshAddrs(a.Workloads), meshAddrs(b.Workloads)) {
		return false
	}
	opts = opts.WithDefaults()
	return reflect.DeepEqual(endpointInputs(a, f, opts), endpointInputs(b, f, opts))
}

// endpointKey names one service port's endpoints.
type endpointKey struct {
	namespace, service string
	port               int32
}

// endpointInput is what translation reads from one service port's
// endpoints apart from its ClusterLoadAssignment (see OnlyEndpointsDiffer).
type endpointInput struct {
	serviceAccounts []string
	anyInside       bool     // proxyless only: a usable endpoint is in the mesh
	outside         []string // proxyless only: usable endpoints outside the mesh
}

// endpointInputs lists the endpointInput of every service port that has
// any, so that an absent entry and one without endpoints compare equal.
func endpointInputs(snap *model.Snapshot, f Flavor, opts Options) map[endpointKey]endpointInput {
	out := make(map[endpointKey]endpointInput, len(snap.Endpoints))
	accepts := newAcceptsMTLS(snap, opts.RootNamespace)
	for _, se := range snap.Endpoints {
		var in endpointInput
		for _, e := range se.Endpoints {
			if e.ServiceAccount != "" {
				in.serviceAccounts = append(in.serviceAccounts, e.ServiceAccount)
			}
		}
		slices.Sort(in.serviceAccounts)
		in.serviceAccounts = slices.Compact(in.serviceAccounts)
		if f == FlavorProxyless {
			for _, e := range usableEndpoints(accepts.endpoints(se.Namespace, se.Endpoints, targetPort(snap, se))) {
				if e.InMesh {
					in.anyInside = true
				} else {
					in.outside = append(in.outside, e.IP)
				}
			}
			slices.Sort(in.outside)
			in.outside = slices.Compact(in.outside)
		}
		if len(in.serviceAccounts) == 0 && !in.anyInside && len(in.outside) == 0 {
			continue
		}
		out[endpointKey{se.Namespace, se.Service, se.Port}] = in
	}
	return out
}

// targetPort is the numeric target port of the service port se belongs
// to, or 0 when it is named (then every endpoint knows its own port).
func targetPort(snap *model.Snapshot, se model.ServiceEndpoints) uint32 {
	if svc := snap.Service(se.Namespace, se.Service); svc != nil {
		for _, sp := range svc.Ports {
			if sp.Port == se.Port {
				return uint32(sp.TargetPort)
			}
		}
	}
	return 0
}

// meshAddrs are the addresses meshSourceRanges builds its ranges from.
func meshAddrs(ws []model.Workload) []netip.Addr {
	var addrs []netip.Addr
	for i := range ws {
		if !ws[i].InMesh {
			continue
		}
		if a, err := netip.ParseAddr(ws[i].IP); err == nil {
			addrs = append(addrs, a.Unmap())
		}
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(addrs)
}
