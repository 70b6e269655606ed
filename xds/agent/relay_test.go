package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// workloadStream is one ADS stream a workload opens on the agent's socket,
// as gRPC's xDS client does for each dial target: it subscribes to one
// listener and ACKs what it gets.
type workloadStream struct {
	t        *testing.T
	listener string
	stream   discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	cancel   context.CancelFunc
	resps    chan *discoveryv3.DiscoveryResponse
	ended    chan error // the stream's final error, once
}

// dialAgent connects to the agent's local xDS endpoint as the workload.
func dialAgent(t *testing.T, a *Agent) discoveryv3.AggregatedDiscoveryServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(a.ProxyURI(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
}

// openWorkloadStream opens a stream and asks for listener.
func openWorkloadStream(t *testing.T, c discoveryv3.AggregatedDiscoveryServiceClient, listener string) *workloadStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := c.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatalf("opening a workload stream on the agent: %v", err)
	}
	w := &workloadStream{t: t, listener: listener, stream: s, cancel: cancel,
		resps: make(chan *discoveryv3.DiscoveryResponse, 16), ended: make(chan error, 1)}
	go func() {
		for {
			r, err := s.Recv()
			if err != nil {
				w.ended <- err
				return
			}
			w.resps <- r
		}
	}()
	// The node gRPC would send from the bootstrap; the agent replaces it.
	w.send(&discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: "from-the-workload-bootstrap", UserAgentName: "gRPC Go"},
		TypeUrl:       resourcev3.ListenerType,
		ResourceNames: []string{listener},
	})
	return w
}

func (w *workloadStream) send(req *discoveryv3.DiscoveryRequest) {
	w.t.Helper()
	// io.EOF means the agent already ended the stream (a stream over
	// the limit may be refused before its first request is sent); gRPC
	// then gives the status to Recv, which expect and expectEnd read.
	if err := w.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		w.t.Fatalf("stream for %s: sending to the agent: %v", w.listener, err)
	}
}

// expect waits for a response of version carrying the stream's listener,
// and ACKs it.
func (w *workloadStream) expect(version string) {
	w.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case r := <-w.resps:
			if r.GetVersionInfo() != version {
				continue // an older version still in flight
			}
			var names []string
			for _, res := range r.GetResources() {
				var l listenerv3.Listener
				if err := res.UnmarshalTo(&l); err != nil {
					w.t.Fatalf("stream for %s: a response resource is not a Listener: %v", w.listener, err)
				}
				names = append(names, l.GetName())
			}
			if !slices.Equal(names, []string{w.listener}) {
				w.t.Errorf("stream for %s got listeners %v, want only its own", w.listener, names)
			}
			w.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{w.listener},
				VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
			return
		case err := <-w.ended:
			w.t.Fatalf("stream for %s ended while waiting for version %s: %v", w.listener, version, err)
		case <-deadline:
			w.t.Fatalf("stream for %s: no response of version %s", w.listener, version)
		}
	}
}

// expectEnd waits for the stream to end and returns its status.
func (w *workloadStream) expectEnd() *status.Status {
	w.t.Helper()
	select {
	case err := <-w.ended:
		return status.Convert(err)
	case <-time.After(10 * time.Second):
		w.t.Fatalf("stream for %s did not end", w.listener)
		return nil
	}
}

// stillOpen fails the test if the stream has ended.
func (w *workloadStream) stillOpen() {
	w.t.Helper()
	select {
	case err := <-w.ended:
		w.t.Errorf("stream for %s ended: %v", w.listener, err)
	default:
	}
}

// meshWithCertificate starts a fake meshd and an agent with a token, and
// waits until the agent wrote the first certificate.
func meshWithCertificate(t *testing.T) (*fakeMeshd, *Agent) {
	t.Helper()
	meshd := newFakeMeshd(t, "")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("workload-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, Options{XDSAddress: meshd.addr, TokenFile: tokenFile})
	if err := a.WaitForCertificate(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	return meshd, a
}

// certFiles reads the three certificate files.
func certFiles(t *testing.T, a *Agent) [][]byte {
	t.Helper()
	var out [][]byte
	for _, f := range []string{CertChainFile, KeyFile, RootCertFile} {
		out = append(out, readFile(t, filepath.Join(a.CertDir(), f)))
	}
	return out
}

// checkCertificateSession checks that no stream asked meshd for secrets,
// that meshd signed one certificate, and that the files and the
// certificate are still those of before: workload streams, whatever
// happens to them, never touch the certificate.
func checkCertificateSession(t *testing.T, meshd *fakeMeshd, a *Agent, files [][]byte, serial string) {
	t.Helper()
	meshd.mu.Lock()
	sds, csrs := meshd.sdsStreams(), len(meshd.csrs)
	meshd.mu.Unlock()
	if len(sds) != 0 || csrs != 1 {
		t.Errorf("streams that asked meshd for secrets: %v, certificate requests: %d; want none and one", sds, csrs)
	}
	if got := certFiles(t, a); !slices.EqualFunc(got, files, bytes.Equal) {
		t.Error("the certificate files changed although meshd rotated nothing")
	}
	if c, _ := a.Certificate(); c.Serial != serial {
		t.Errorf("certificate serial = %s, want the first one, %s", c.Serial, serial)
	}
}

func TestAgentRelaysConcurrentWorkloadStreams(t *testing.T) {
	meshd, a := meshWithCertificate(t)
	files := certFiles(t, a)
	first, _ := a.Certificate()
	names := []string{"product.default.svc.cluster.local:8080", "stock.default.svc.cluster.local:8081",
		fmt.Sprintf(ServerListenerTemplate, testIP+":8080")}
	meshd.setListeners(a.NodeID(), names...)
	v := fmt.Sprint(meshd.version)

	client := dialAgent(t, a)
	var streams []*workloadStream
	for _, n := range names {
		streams = append(streams, openWorkloadStream(t, client, n))
	}
	for _, w := range streams {
		w.expect(v)
	}

	// A new version reaches every stream: none was replaced by another.
	meshd.setListeners(a.NodeID(), names...)
	v = fmt.Sprint(meshd.version)
	for _, w := range streams {
		w.expect(v)
		w.stillOpen()
	}

	// meshd saw one stream per workload stream, each with the token and
	// the agent's node.
	meshd.mu.Lock()
	lds := map[string]int64{}
	for _, r := range meshd.requests {
		if r.req.GetTypeUrl() != resourcev3.ListenerType {
			continue
		}
		if got := r.req.GetNode().GetId(); got != a.NodeID() {
			t.Errorf("relayed request node = %q, want the agent's %q", got, a.NodeID())
		}
		for _, n := range r.req.GetResourceNames() {
			if prev, ok := lds[n]; ok && prev != r.stream {
				t.Errorf("requests for %s came on streams %d and %d; a workload stream must keep one upstream stream", n, prev, r.stream)
			}
			lds[n] = r.stream
		}
	}
	if ids := slices.Compact(slices.Sorted(maps.Values(lds))); len(ids) != len(names) {
		t.Errorf("the %d workload streams were relayed on meshd streams %v; want one each", len(names), ids)
	}
	if len(meshd.tokens) != len(names) {
		t.Errorf("meshd saw %d streams, want %d (one per workload stream)", len(meshd.tokens), len(names))
	}
	for i, tok := range meshd.tokens {
		if tok != "Bearer workload-token" {
			t.Errorf("stream %d authorization = %q, want the token from the file", i, tok)
		}
	}
	if meshd.closed != 0 {
		t.Errorf("meshd saw %d streams close while every workload stream was open", meshd.closed)
	}
	meshd.mu.Unlock()
	checkCertificateSession(t, meshd, a, files, first.Serial)

	// A stream opened after the projected token rotated carries the new
	// token: the agent reads the file for every upstream stream.
	if err := os.WriteFile(a.opts.TokenFile, []byte("rotated-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	openWorkloadStream(t, client, names[0]).expect(v)
	meshd.mu.Lock()
	if last := meshd.tokens[len(meshd.tokens)-1]; last != "Bearer rotated-token" {
		t.Errorf("authorization of a stream opened after the token rotated = %q, want %q", last, "Bearer rotated-token")
	}
	meshd.mu.Unlock()
}

func TestAgentEndsOnlyTheWorkloadStreamThatEnded(t *testing.T) {
	meshd, a := meshWithCertificate(t)
	files := certFiles(t, a)
	first, _ := a.Certificate()
	names := []string{"a.default.svc.cluster.local:80", "b.default.svc.cluster.local:80", "c.default.svc.cluster.local:80", failListener}
	meshd.setListeners(a.NodeID(), names...)
	v := fmt.Sprint(meshd.version)
	client := dialAgent(t, a)
	var streams []*workloadStream
	for _, n := range names[:3] {
		w := openWorkloadStream(t, client, n)
		w.expect(v)
		streams = append(streams, w)
	}
	openUpstream := func() int {
		meshd.mu.Lock()
		defer meshd.mu.Unlock()
		return len(meshd.open)
	}
	if n := openUpstream(); n != 3 {
		t.Fatalf("meshd has %d streams open, want 3 (one per workload stream)", n)
	}

	// The workload closes one stream: its upstream stream closes too.
	streams[0].cancel()
	meshd.waitFor("the closed workload stream's upstream stream to close", func() bool { return len(meshd.open) == 2 })

	// meshd ends another stream's upstream: only that workload stream
	// ends, with Unavailable, so that gRPC reconnects it.
	streams[1].send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: []string{streams[1].listener, failListener}})
	st := streams[1].expectEnd()
	if st.Code() != codes.Unavailable {
		t.Errorf("a workload stream whose upstream failed ended with %s, want Unavailable", st.Code())
	}
	if !strings.Contains(st.Message(), "the test refuses") {
		t.Errorf("status message = %q, want it to carry meshd's reason", st.Message())
	}
	meshd.waitFor("the failed upstream stream to be gone", func() bool { return len(meshd.open) == 1 })

	// The third stream still gets updates, and the certificate was not
	// touched by any of it.
	meshd.setListeners(a.NodeID(), names...)
	streams[2].expect(fmt.Sprint(meshd.version))
	streams[2].stillOpen()
	checkCertificateSession(t, meshd, a, files, first.Serial)

	// A stopping agent ends the workload streams with Unavailable too.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if st := streams[2].expectEnd(); st.Code() != codes.Unavailable {
		t.Errorf("a workload stream ended with %s when the agent stopped, want Unavailable", st.Code())
	}
}

func TestAgentBoundsWorkloadStreams(t *testing.T) {
	meshd, a := meshWithCertificate(t)
	meshd.setListeners(a.NodeID(), "l")
	v := fmt.Sprint(meshd.version)
	client := dialAgent(t, a)
	var streams []*workloadStream
	for range maxWorkloadStreams {
		w := openWorkloadStream(t, client, "l")
		streams = append(streams, w)
	}
	for _, w := range streams {
		w.expect(v)
	}

	over := openWorkloadStream(t, client, "l")
	st := over.expectEnd()
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), fmt.Sprint(maxWorkloadStreams)) {
		t.Errorf("stream beyond the limit ended with %s %q, want ResourceExhausted naming the limit", st.Code(), st.Message())
	}

	// A closed stream frees its place.
	streams[0].cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.streamsMu.Lock()
		n := a.streams
		a.streamsMu.Unlock()
		if n < maxWorkloadStreams {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent still counts %d workload streams after one closed", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	openWorkloadStream(t, client, "l").expect(v)
	for _, w := range streams[1:] {
		w.stillOpen()
	}
}
