package xds

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// testCodec is a requestCodec whose canonical names are canon.
func testCodec(canon ...string) requestCodec {
	m := map[string]string{}
	for _, c := range canon {
		m[c] = c
	}
	return newRequestCodec(newNameLists(func(b []byte) (string, bool) {
		s, ok := m[string(b)]
		return s, ok
	}))
}

// decodeWith runs b through the codec as gRPC would, split into two
// buffers so that the codec must join them, and puts back the names an
// endpoint request's stand-in stands for.
func decodeWith(c requestCodec, b []byte) (*discoveryv3.DiscoveryRequest, error) {
	req, err := decodeRaw(c, b)
	if err != nil {
		return req, err
	}
	if names, _, ok, err := c.lists.subscription(req.ResourceNames); ok {
		if err != nil {
			return req, err
		}
		req.ResourceNames = names
	}
	return req, nil
}

// decodeRaw is decodeWith without putting back stood-in names.
func decodeRaw(c requestCodec, b []byte) (*discoveryv3.DiscoveryRequest, error) {
	half := len(b) / 2
	data := mem.BufferSlice{mem.SliceBuffer(b[:half]), mem.SliceBuffer(b[half:])}
	req := &discoveryv3.DiscoveryRequest{}
	return req, c.Unmarshal(data, req)
}

// interleaved is a request whose resource names are not contiguous on the
// wire: a name, the type URL, another name, an unknown field, a third.
func interleaved() []byte {
	var b []byte
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, "a")
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, resourcev3.EndpointType)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, "b")
	b = protowire.AppendTag(b, 99, protowire.VarintType)
	b = protowire.AppendVarint(b, 7)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, "a")
	return b
}

// longTags is a request whose names are one run except that the middle
// one's tag is written in two bytes (0x9a 0x00), which protobuf allows.
func longTags() []byte {
	var b []byte
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, "a")
	b = append(b, 0x9a, 0x00)
	b = protowire.AppendString(b, "b")
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, "c")
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, resourcev3.ClusterType)
	return b
}

func TestRequestCodecDecodesAsProtoDoes(t *testing.T) {
	mustMarshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, wire := range map[string][]byte{
		"empty": nil,
		"first request": mustMarshal(&discoveryv3.DiscoveryRequest{
			Node:    &corev3.Node{Id: "sidecar~127.0.0.2~p.ns~ns.svc.cluster.local", Cluster: "c"},
			TypeUrl: resourcev3.ClusterType,
		}),
		"ACK with names": mustMarshal(&discoveryv3.DiscoveryRequest{
			VersionInfo: "v1", TypeUrl: resourcev3.EndpointType, ResponseNonce: "3",
			ResourceNames: []string{"outbound|80||a.ns.svc.cluster.local", "outbound|80||b.ns.svc.cluster.local", "*"},
		}),
		"NACK": mustMarshal(&discoveryv3.DiscoveryRequest{
			TypeUrl: resourcev3.EndpointType, ResponseNonce: "4", ResourceNames: []string{"x"},
			ErrorDetail: &statuspb.Status{Code: 3, Message: "bad"},
		}),
		"names between other fields, an unknown field, a repeat": interleaved(),
		"a name's tag in its two-byte form":                      longTags(),
		"empty name":                                             mustMarshal(&discoveryv3.DiscoveryRequest{ResourceNames: []string{""}}),
	} {
		t.Run(name, func(t *testing.T) {
			want := &discoveryv3.DiscoveryRequest{}
			if err := proto.Unmarshal(wire, want); err != nil {
				t.Fatal(err)
			}
			got, err := decodeWith(testCodec("a"), wire)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("the codec decoded differently from proto.Unmarshal (-want +got):\n%s", diff)
			}
		})
	}
}

// Endpoint lists are shared while a stand-in for them is held; in every
// list, a name the endpoint cache holds is the cache's string.
func TestRequestCodecSharesLists(t *testing.T) {
	const known = "outbound|80||a.ns.svc.cluster.local"
	c := testCodec(known)
	encode := func(typeURL string, names ...string) []byte {
		b, err := proto.Marshal(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	r1, err := decodeWith(c, encode(resourcev3.EndpointType, known, "other", "third"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := decodeWith(c, encode(resourcev3.EndpointType, known, "other", "third"))
	if err != nil {
		t.Fatal(err)
	}
	if &r1.ResourceNames[0] != &r2.ResourceNames[0] {
		t.Error("two endpoint requests with the same names got different lists")
	}
	if cap(r1.ResourceNames) != len(r1.ResourceNames) {
		t.Error("a shared list has room to append into")
	}
	r3, err := decodeWith(c, encode(resourcev3.EndpointType, "other", known))
	if err != nil {
		t.Fatal(err)
	}
	if &r3.ResourceNames[0] == &r1.ResourceNames[0] || r3.ResourceNames[0] != "other" {
		t.Errorf("names in another order decoded as %v, sharing the first list", r3.ResourceNames)
	}
	routes, err := decodeWith(c, encode(resourcev3.RouteType, known, "other"))
	if err != nil {
		t.Fatal(err)
	}
	for _, names := range [][]string{r1.ResourceNames, routes.ResourceNames} {
		if unsafe.StringData(names[0]) != unsafe.StringData(c.lists.canonicalForTest(known)) {
			t.Errorf("a known name in %q is a copy, not the endpoint cache's string", names)
		}
	}
}

// canonicalForTest returns the string canonical gives for s.
func (l *nameLists) canonicalForTest(s string) string {
	c, _ := l.canonical([]byte(s))
	return c
}

func TestRequestCodecRefusesWhatProtoRefuses(t *testing.T) {
	badUTF8 := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte{0xff, 'a'})
	truncated := protowire.AppendTag(nil, 3, protowire.BytesType)
	truncated = protowire.AppendVarint(truncated, 10)
	truncated = append(truncated, "abc"...)
	for name, wire := range map[string][]byte{"invalid UTF-8 in a name": badUTF8, "a truncated name": truncated} {
		t.Run(name, func(t *testing.T) {
			if err := proto.Unmarshal(wire, &discoveryv3.DiscoveryRequest{}); err == nil {
				t.Fatal("proto.Unmarshal accepts it; the case is wrong")
			}
			if _, err := decodeWith(testCodec(), wire); err == nil {
				t.Error("the codec accepted a request that proto.Unmarshal refuses")
			}
		})
	}
}

func TestRequestCodecLeavesOtherMessagesToProto(t *testing.T) {
	want := &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.EndpointType, VersionInfo: "1", Nonce: "a"}
	b, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got := &discoveryv3.DiscoveryResponse{}
	if err := testCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if testCodec().Name() != "proto" {
		t.Errorf("the codec is named %q; clients send content-subtype proto", testCodec().Name())
	}
}

// decodeDeltaWith is decodeWith for a delta request.
func decodeDeltaWith(c requestCodec, b []byte) (*discoveryv3.DeltaDiscoveryRequest, error) {
	half := len(b) / 2
	req := &discoveryv3.DeltaDiscoveryRequest{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:half]), mem.SliceBuffer(b[half:])}, req); err != nil {
		return req, err
	}
	names, err := c.lists.deltaNames(req.ResourceNamesSubscribe)
	req.ResourceNamesSubscribe = names
	return req, err
}

// FuzzRequestCodec checks that the codec agrees with proto.Unmarshal on
// any input, for both kinds of request: both refuse it, or both decode
// the same request. The one deliberate difference, a request with more
// names than a stream may hold (see TestRequestCodecStandsInForTooManyNames),
// takes more input than the fuzzer makes.
func FuzzRequestCodec(f *testing.F) {
	f.Add(interleaved())
	f.Add(longTags())
	f.Add([]byte{})
	ack, _ := proto.Marshal(&discoveryv3.DiscoveryRequest{VersionInfo: "v", ResourceNames: []string{"a", "b"}, ResponseNonce: "1"})
	f.Add(ack)
	delta, _ := proto.Marshal(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"a", "b"},
		ResourceNamesUnsubscribe: []string{"c"}, InitialResourceVersions: map[string]string{"a": "1"}, ResponseNonce: "1"})
	f.Add(delta)
	f.Fuzz(func(t *testing.T, wire []byte) {
		want := &discoveryv3.DiscoveryRequest{}
		werr := proto.Unmarshal(wire, want)
		got, gerr := decodeWith(testCodec("a"), wire)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("proto.Unmarshal: %v; codec: %v", werr, gerr)
		}
		if werr == nil && !proto.Equal(want, got) {
			t.Fatalf("decoded differently:\nproto: %v\ncodec: %v", want, got)
		}
		wantDelta := &discoveryv3.DeltaDiscoveryRequest{}
		werr = proto.Unmarshal(wire, wantDelta)
		gotDelta, gerr := decodeDeltaWith(testCodec("a"), wire)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("delta: proto.Unmarshal: %v; codec: %v", werr, gerr)
		}
		if werr == nil && !proto.Equal(wantDelta, gotDelta) {
			t.Fatalf("delta decoded differently:\nproto: %v\ncodec: %v", wantDelta, gotDelta)
		}
	})
}

// A delta endpoint request's subscriptions are shown to go-control-plane
// as a token alone, which stands for the list; other types, and lists
// naming "*", are passed on as they are.
func TestRequestCodecStandsInForDeltaEndpointNames(t *testing.T) {
	c := testCodec()
	encode := func(m *discoveryv3.DeltaDiscoveryRequest) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	full := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"b", "a"},
		ResourceNamesUnsubscribe: []string{"c"}, ResponseNonce: "7"}
	r, err := decodeDeltaWith(c, encode(full))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(full, r, protocmp.Transform()); diff != "" {
		t.Errorf("with its stand-in read, the request differs (-want +got):\n%s", diff)
	}
	raw := &discoveryv3.DeltaDiscoveryRequest{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(encode(full))}, raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.ResourceNamesSubscribe) != 1 || !c.lists.tokens.isName(raw.ResourceNamesSubscribe[0]) {
		t.Fatalf("go-control-plane is shown %q, want one token", raw.ResourceNamesSubscribe)
	}
	if !slices.Equal(raw.ResourceNamesUnsubscribe, []string{"c"}) {
		t.Errorf("unsubscriptions %q were changed", raw.ResourceNamesUnsubscribe)
	}
	for _, m := range []*discoveryv3.DeltaDiscoveryRequest{
		{TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{"a", "b"}},
		{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{"*", "a"}},
	} {
		got := &discoveryv3.DeltaDiscoveryRequest{}
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(encode(m))}, got); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.ResourceNamesSubscribe, m.ResourceNamesSubscribe) {
			t.Errorf("%s %q decoded as %q", m.TypeUrl, m.ResourceNamesSubscribe, got.ResourceNamesSubscribe)
		}
	}
}

func TestRequestCodecStandsInForEndpointNames(t *testing.T) {
	c := testCodec()
	encode := func(typeURL string, names ...string) []byte {
		b, err := proto.Marshal(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	r1, err := decodeRaw(c, encode(resourcev3.EndpointType, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r1.ResourceNames) != 2 || r1.ResourceNames[0] != "*" {
		t.Fatalf("an endpoint request's names decoded as %q, want the stand-in [* token]", r1.ResourceNames)
	}
	names, set, ok, err := c.lists.subscription(r1.ResourceNames)
	if !ok || err != nil || !slices.Equal(names, []string{"a", "b"}) || len(set) != 2 {
		t.Fatalf("the stand-in stands for %v %v (%v, %v), want [a b]", names, set, ok, err)
	}
	r2, err := decodeRaw(c, encode(resourcev3.EndpointType, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	_, set2, _, _ := c.lists.subscription(r2.ResourceNames)
	if &r2.ResourceNames[0] != &r1.ResourceNames[0] || reflect.ValueOf(set2).UnsafePointer() != reflect.ValueOf(set).UnsafePointer() {
		t.Error("two requests naming the same endpoints got different stand-ins or sets")
	}
	// Passed on as they are: other types, and lists naming "*" themselves.
	for _, tc := range []struct {
		typeURL string
		names   []string
	}{{resourcev3.RouteType, []string{"a", "b"}}, {resourcev3.EndpointType, []string{"*", "a"}}} {
		r, err := decodeRaw(c, encode(tc.typeURL, tc.names...))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.ResourceNames, tc.names) {
			t.Errorf("%s %v decoded as %v", tc.typeURL, tc.names, r.ResourceNames)
		}
	}
	// A client cannot name a list by sending a token of its own.
	forged := []string{"*", "\x00minimesh-names-000000000000-1"}
	if _, _, ok, _ := c.lists.subscription(forged); ok {
		t.Error("a token without this process's random prefix was taken for a stand-in")
	}
	// A stand-in whose list is gone is an error, not a wildcard.
	forgetTokens(c.lists)
	if _, _, ok, err := c.lists.subscription(r1.ResourceNames); !ok || err == nil {
		t.Errorf("a forgotten stand-in: ok %v, err %v; want an error", ok, err)
	}
}

// forgetTokens makes the registry forget every token, as if their lists
// had been collected.
func forgetTokens(l *nameLists) {
	l.tokens.mu.Lock()
	clear(l.tokens.byName)
	l.tokens.mu.Unlock()
}

// A list lives while something holds its stand-in, however many other
// lists come and go and however often the collector runs; once nothing
// does, it is collected and the codec forgets it: the next request naming
// the same endpoints gets a new list.
func TestRequestCodecListsLiveWhileStoodIn(t *testing.T) {
	c := testCodec()
	standIn := func(names ...string) []string {
		t.Helper()
		b, err := proto.Marshal(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: names})
		if err != nil {
			t.Fatal(err)
		}
		r, err := decodeRaw(c, b)
		if err != nil {
			t.Fatal(err)
		}
		return r.ResourceNames
	}
	held := standIn("a", "b")
	for i := range 100 {
		standIn("other-" + strconv.Itoa(i))
	}
	if n := collectedDownTo(c.lists.tokens.count, 1); n != 1 {
		t.Errorf("%d lists have a token; want 1, the one still held", n)
	}
	if names, _, ok, err := c.lists.subscription(held); !ok || err != nil || !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("a held stand-in after the collector ran: %v, ok %v, err %v", names, ok, err)
	}
	again := standIn("a", "b")
	if &again[0] != &held[0] {
		t.Error("a request naming a held list got a new stand-in")
	}
	token := strings.Clone(held[1])
	held, again = nil, nil
	if n := collectedDownTo(c.lists.tokens.count, 0); n != 0 {
		t.Errorf("%d lists have a token after nothing holds one", n)
	}
	indexed := func() int {
		c.lists.mu.RLock()
		defer c.lists.mu.RUnlock()
		return len(c.lists.byWire)
	}
	if n := collectedDownTo(indexed, 0); n != 0 {
		t.Errorf("the index still has %d entries after every list was collected", n)
	}
	if fresh := standIn("a", "b"); fresh[1] == token {
		t.Error("a collected list's token was handed out again")
	}
}
