package main

import (
	"errors"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/minimesh/minimesh/translate"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// decodeWire runs bytes through the codec as gRPC would, split into
// chunks the way HTTP/2 frames split a message.
func decodeWire(t *testing.T, m proto.Message, delta bool) (*wireResponse, error) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var data mem.BufferSlice
	for len(b) > 0 {
		n := min(len(b), 7)
		data = append(data, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	r := &wireResponse{delta: delta}
	return r, wireCodec{}.Unmarshal(data, r)
}

type parsed struct {
	TypeURL, Version, Nonce string
	Size                    int
	Names                   []string
	Removed                 []string
}

func summary(r *wireResponse) parsed {
	p := parsed{TypeURL: r.typeURL, Version: r.version, Nonce: r.nonce, Size: r.size, Removed: r.removed}
	for _, res := range r.resources {
		p.Names = append(p.Names, string(res.name))
	}
	return p
}

func TestWireCodecReadsSotwResponses(t *testing.T) {
	cl := &clusterv3.Cluster{Name: "outbound|8080||a.ns.svc.cluster.local", ConnectTimeout: durationpb.New(1e9)}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|8080||b.ns.svc.cluster.local"}
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo:  "v1",
		Resources:    []*anypb.Any{mustAny(t, cl), mustAny(t, cla)},
		Canary:       true, // a varint field the codec must skip
		TypeUrl:      typeURLs[tCDS],
		Nonce:        "n1",
		ControlPlane: &corev3.ControlPlane{Identifier: "meshd"},
	}
	r, err := decodeWire(t, resp, false)
	if err != nil {
		t.Fatal(err)
	}
	want := parsed{
		TypeURL: typeURLs[tCDS], Version: "v1", Nonce: "n1", Size: proto.Size(resp),
		Names: []string{cl.Name, cla.ClusterName},
	}
	if diff := cmp.Diff(want, summary(r)); diff != "" {
		t.Errorf("parsed response (-want +got):\n%s", diff)
	}
	// The resource bytes are the resource, ready to decode.
	var got clusterv3.Cluster
	if err := proto.Unmarshal(r.resources[0].value, &got); err != nil || got.GetName() != cl.Name {
		t.Errorf("resource 0 decodes to %q, %v; want cluster %q", got.GetName(), err, cl.Name)
	}
	r.release()
}

func TestWireCodecReadsDeltaResponses(t *testing.T) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "c1"}
	resp := &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: "sys",
		Resources: []*discoveryv3.Resource{
			{Name: "c1", Version: "h1", Resource: mustAny(t, cla)},
			{Name: "only-a-name"}, // no body: nothing to apply
		},
		TypeUrl:          typeURLs[tEDS],
		Nonce:            "n2",
		RemovedResources: []string{"gone-1", "gone-2"},
	}
	r, err := decodeWire(t, resp, true)
	if err != nil {
		t.Fatal(err)
	}
	want := parsed{
		TypeURL: typeURLs[tEDS], Version: "sys", Nonce: "n2", Size: proto.Size(resp),
		Names: []string{"c1"}, Removed: []string{"gone-1", "gone-2"},
	}
	if diff := cmp.Diff(want, summary(r)); diff != "" {
		t.Errorf("parsed response (-want +got):\n%s", diff)
	}
}

func TestWireCodecContentHash(t *testing.T) {
	resp := func(ip string, version, nonce string) *discoveryv3.DiscoveryResponse {
		return &discoveryv3.DiscoveryResponse{VersionInfo: version, Nonce: nonce, TypeUrl: typeURLs[tEDS],
			Resources: []*anypb.Any{mustAny(t, cla("c", ip))}}
	}
	hash := func(m proto.Message) uint64 {
		r, err := decodeWire(t, m, false)
		if err != nil {
			t.Fatal(err)
		}
		return r.content
	}
	// Two proxies get the same content under different nonces: one state.
	if hash(resp("10.0.0.1", "v1", "a")) != hash(resp("10.0.0.1", "v1", "b")) {
		t.Error("equal resources under different nonces hash differently")
	}
	if hash(resp("10.0.0.1", "v1", "a")) == hash(resp("10.0.0.2", "v1", "a")) {
		t.Error("different resources hash the same")
	}
}

func TestWireCodecRejectsMalformedInput(t *testing.T) {
	good, err := proto.Marshal(&discoveryv3.DiscoveryResponse{TypeUrl: typeURLs[tCDS],
		Resources: []*anypb.Any{mustAny(t, &clusterv3.Cluster{Name: "c"})}})
	if err != nil {
		t.Fatal(err)
	}
	nameless, err := proto.Marshal(&discoveryv3.DiscoveryResponse{TypeUrl: typeURLs[tCDS],
		Resources: []*anypb.Any{mustAny(t, &clusterv3.Cluster{ConnectTimeout: durationpb.New(1)})}})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"truncated":             good[:len(good)-3],
		"bad tag":               {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"length past the end":   protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte("abc"))[:3],
		"resource with no name": nameless,
	} {
		t.Run(name, func(t *testing.T) {
			r := &wireResponse{}
			err := wireCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, r)
			if !errors.Is(err, errMalformed) {
				t.Errorf("Unmarshal = %v, want a malformed-response error", err)
			}
		})
	}
}

func cla(name, ip string) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
				}}},
			}},
		}}}},
	}
}

// TestReferencesOfRealTranslation checks the proxies' idea of what to
// subscribe to against what minimesh's translation actually produces for a
// generated client: every endpoint assignment its clusters reference, the
// route configurations its listeners reference, and its secrets.
func TestReferencesOfRealTranslation(t *testing.T) {
	g, _, snap := loadMesh(t, smallMesh)
	c := g.clients[0]
	res := translate.Translate(snap, translate.ProxyFor(translate.FlavorEnvoy, snap.Workload(c.Namespace, c.Name)), translate.Options{})
	if err := res.Validate(); err != nil {
		t.Fatalf("translation of a generated client is invalid: %v", err)
	}

	cache := newStateCache()
	apply := func(typ int, msgs []proto.Message) *typeState {
		t.Helper()
		resp := &discoveryv3.DiscoveryResponse{TypeUrl: typeURLs[typ], VersionInfo: "1", Nonce: "1"}
		for _, m := range msgs {
			resp.Resources = append(resp.Resources, mustAny(t, m))
		}
		r, err := decodeWire(t, resp, false)
		if err != nil {
			t.Fatal(err)
		}
		s, err := cache.apply(typ, nil, r.content, r.resources, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var clusters, listeners []proto.Message
	for _, cl := range res.Clusters {
		clusters = append(clusters, cl)
	}
	for _, l := range res.Listeners {
		listeners = append(listeners, l)
	}
	cds, lds := apply(tCDS, clusters), apply(tLDS, listeners)

	var wantEDS, wantRDS []string
	for _, e := range res.Endpoints {
		wantEDS = append(wantEDS, e.GetClusterName())
	}
	for _, r := range res.Routes {
		wantRDS = append(wantRDS, r.GetName())
	}
	slices.Sort(wantEDS)
	slices.Sort(wantRDS)
	if diff := cmp.Diff(wantEDS, cds.eds.names); diff != "" {
		t.Errorf("EDS names the clusters reference (-translated +harness):\n%s", diff)
	}
	if diff := cmp.Diff(wantRDS, lds.rds.names); diff != "" {
		t.Errorf("RDS names the listeners reference (-translated +harness):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ROOTCA", "default"}, cache.union(cds.sds, lds.sds).names); diff != "" {
		t.Errorf("SDS names (-want +got):\n%s", diff)
	}
	// Every service is reachable: the marker's EDS name is among them.
	for i := range smallMesh.Services {
		if !slices.Contains(cds.eds.names, smallMesh.edsName(i)) {
			t.Errorf("the clusters do not reference %s, which the endpoint change waits for", smallMesh.edsName(i))
		}
	}
}

func TestWireCodecWritesRequestsWithEncodedNames(t *testing.T) {
	names := newNameList(map[string]struct{}{"outbound|80||b.ns.svc.cluster.local": {}, "outbound|80||a.ns.svc.cluster.local": {}})
	for _, tc := range []struct {
		name  string
		names *nameList
		want  []string
	}{
		{"with names", names, []string{"outbound|80||a.ns.svc.cluster.local", "outbound|80||b.ns.svc.cluster.local"}},
		{"without", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &discoveryv3.DiscoveryRequest{TypeUrl: "t", VersionInfo: "v1", ResponseNonce: "7", Node: &corev3.Node{Id: "n"}}
			data, err := wireCodec{}.Marshal(&sotwRequest{req: req, names: tc.names})
			if err != nil {
				t.Fatal(err)
			}
			got := &discoveryv3.DiscoveryRequest{}
			if err := proto.Unmarshal(data.Materialize(), got); err != nil {
				t.Fatal(err)
			}
			want := proto.Clone(req).(*discoveryv3.DiscoveryRequest)
			want.ResourceNames = tc.want
			if !proto.Equal(got, want) {
				t.Errorf("decoded %v, want %v", got, want)
			}
		})
	}
}
