package xds

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// bounded is a context for one stream of a test that expects the server
// to end it: if the server does not, the stream ends with
// DeadlineExceeded after waitBound.
func bounded(t *testing.T, h *harness) context.Context {
	ctx, cancel := context.WithTimeout(h.ctx, waitBound)
	t.Cleanup(cancel)
	return ctx
}

// streamEnd reads a stream until it ends and returns its status.
func streamEnd[T any](t *testing.T, recv func() (T, error)) *status.Status {
	t.Helper()
	for {
		if _, err := recv(); err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatal("the stream ended without a status")
			}
			return status.Convert(err)
		}
	}
}

func wantStatus(t *testing.T, got *status.Status, code codes.Code, text ...string) {
	t.Helper()
	if got.Code() != code {
		t.Fatalf("the stream ended with %v %q; want %v", got.Code(), got.Message(), code)
	}
	for _, s := range text {
		if !strings.Contains(got.Message(), s) {
			t.Errorf("the stream ended with %q; want it to say %q", got.Message(), s)
		}
	}
}

// A request with more names than a stream may hold is refused before
// its names are decoded, whatever its type.
func TestStreamRefusesRequestWithTooManyNames(t *testing.T) {
	h := newHarness(t, nil)
	h.update(mesh(t, shop...))
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn)
	node := &corev3.Node{Id: nodeID("product-0", "default", "127.0.0.2")}
	for _, typeURL := range []string{resourcev3.EndpointType, resourcev3.RouteType} {
		t.Run(shortType(typeURL), func(t *testing.T) {
			st, err := ads.StreamAggregatedResources(bounded(t, h))
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: listNames(0, maxStreamNames+1)}); err != nil {
				t.Fatal(err)
			}
			wantStatus(t, streamEnd(t, st.Recv), codes.ResourceExhausted, "131072")
		})
	}
	t.Run("delta unsubscriptions", func(t *testing.T) {
		st, err := ads.DeltaAggregatedResources(bounded(t, h))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType,
			ResourceNamesUnsubscribe: listNames(0, maxStreamNames+1)}); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, streamEnd(t, st.Recv), codes.ResourceExhausted, "unsubscriptions")
	})
	if got := h.srv.eds.lists.tokens.count(); got != 0 {
		t.Errorf("refused requests left %d endpoint lists", got)
	}
}

// A delta stream's subscriptions add up; past maxStreamNames names, or
// maxRequestSize bytes of names, of one type the stream is refused. A
// stream that unsubscribes as it subscribes stays within the bound (see
// TestClientStateReleasedOnDisconnect, which sends 60 such lists).
func TestDeltaStreamSubscriptionsAreBounded(t *testing.T) {
	h := newHarness(t, nil)
	h.update(mesh(t, shop...))
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn)
	node := &corev3.Node{Id: nodeID("product-0", "default", "127.0.0.2")}
	big := func(i int) []string { // 9 names of 1 MiB: two are more than maxRequestSize
		out := make([]string, 9)
		for j := range out {
			out[j] = strings.Repeat(string(rune('a'+i)), 1<<20-1) + string(rune('0'+j))
		}
		return out
	}
	for _, tc := range []struct {
		name, typeURL string
		lists         func(i int) []string
		want          string
	}{
		{"endpoint names", resourcev3.EndpointType, func(i int) []string { return listNames(i, 100_000) }, "200000 names"},
		{"cluster names", resourcev3.ClusterType, func(i int) []string { return listNames(i, 100_000) }, "200000 names"},
		{"bytes of cluster names", resourcev3.ClusterType, big, "bytes in all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ads.DeltaAggregatedResources(bounded(t, h))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: tc.typeURL, ResourceNamesSubscribe: tc.lists(i)}
				if i == 0 {
					req.Node = node
				}
				if err := st.Send(req); err != nil {
					t.Fatal(err)
				}
			}
			wantStatus(t, streamEnd(t, st.Recv), codes.ResourceExhausted, tc.want, shortType(tc.typeURL))
		})
	}
}

// A type meshd does not serve ends the stream, naming the type (clipped)
// and the types it serves.
func TestStreamRefusesUnknownTypes(t *testing.T) {
	h := newHarness(t, nil)
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(h.conn)
	st, err := ads.StreamAggregatedResources(bounded(t, h))
	if err != nil {
		t.Fatal(err)
	}
	typeURL := "type.googleapis.com/" + strings.Repeat("x", 10_000)
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: nodeID("product-0", "default", "127.0.0.2")}, TypeUrl: typeURL}); err != nil {
		t.Fatal(err)
	}
	got := streamEnd(t, st.Recv)
	wantStatus(t, got, codes.InvalidArgument, "does not serve type", resourcev3.ClusterType)
	if len(got.Message()) > 1000 {
		t.Errorf("the refusal quotes %d bytes of the client's type URL", len(got.Message()))
	}
	if logs := h.logs.String(); strings.Contains(logs, strings.Repeat("x", 200)) {
		t.Error("the log quotes the client's type URL in full")
	}
}

// Requests read ahead of go-control-plane are bounded by their weight:
// the reader stops reading once the queue weighs readAheadBytes, and
// reads on as go-control-plane takes requests.
func TestReadAheadIsBounded(t *testing.T) {
	feed := make(chan int, 4)
	for range cap(feed) {
		feed <- readAheadBytes / 2
	}
	recv := func() (int, error) { return <-feed, nil }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := readAhead(ctx, recv, func(w int) int { return w })
	waitQueued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(waitBound)
		for len(q.ch) != n {
			if time.Now().After(deadline) {
				t.Fatalf("the queue holds %d requests; want %d", len(q.ch), n)
			}
			runtime.Gosched()
		}
	}
	// Weight is counted before a request is queued, and the reader
	// checks it before each read: with two queued it cannot read again.
	waitQueued(2)
	if len(feed) != 2 {
		t.Fatalf("the reader read %d requests with the queue full; want 2", 4-len(feed))
	}
	if _, err := q.next(); err != nil {
		t.Fatal(err)
	}
	waitQueued(2)
	if len(feed) != 1 {
		t.Fatalf("after one request was taken the reader read %d in all; want 3", 4-len(feed))
	}
}

// The codec does not decode the names of a request carrying too many,
// and keeps its type; it counts each repeated field on its own.
func TestRequestCodecStandsInForTooManyNames(t *testing.T) {
	c := testCodec()
	wire, err := proto.Marshal(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: listNames(0, maxStreamNames+1)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeRaw(c, wire)
	if err != nil {
		t.Fatal(err)
	}
	if !(request{sotw: r}).carriesTooMany() || r.GetTypeUrl() != resourcev3.ClusterType {
		t.Errorf("decoded as %d names of type %q; want the too-many stand-in and the type", len(r.ResourceNames), r.GetTypeUrl())
	}
	within := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType,
		ResourceNamesSubscribe: listNames(1, maxStreamNames), ResourceNamesUnsubscribe: listNames(2, maxStreamNames)}
	if wire, err = proto.Marshal(within); err != nil {
		t.Fatal(err)
	}
	d, err := decodeDeltaWith(c, wire)
	if err != nil {
		t.Fatal(err)
	}
	if (request{delta: d}).carriesTooMany() || len(d.ResourceNamesSubscribe) != maxStreamNames || len(d.ResourceNamesUnsubscribe) != maxStreamNames {
		t.Errorf("a request with %d names in each of two fields was refused or changed", maxStreamNames)
	}
}
