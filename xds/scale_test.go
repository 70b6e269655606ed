package xds

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/xds/ca"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// scaleMesh is services × 4 endpoints, and proxies client pods spread over
// workloads deployments (proxy groups), all in one namespace.
func scaleMesh(tb testing.TB, services, proxies, workloads int, extraEndpoint bool) (*model.Snapshot, []string) {
	tb.Helper()
	var b strings.Builder
	ip := 0
	nextIP := func() string {
		ip++
		return fmt.Sprintf("10.%d.%d.%d", ip/62500%250+1, ip/250%250, ip%250+1)
	}
	for i := range services {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: svc-%[1]d, namespace: default}
spec:
  clusterIP: 10.96.%[2]d.%[3]d
  selector: {app: svc-%[1]d}
  ports: [{name: http, port: 8080, targetPort: 8080}]
`, i, i/250, i%250+1)
		for r := range 4 {
			fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata: {name: svc-%[1]d-%[2]d, namespace: default, labels: {app: svc-%[1]d, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: svc-%[1]d, containers: [{name: app, image: x, ports: [{containerPort: 8080}]}]}
status: {podIP: %[3]s, conditions: [{type: Ready, status: "True"}]}
`, i, r, nextIP())
		}
	}
	nodes := make([]string, 0, proxies)
	for p := range proxies {
		w := p % workloads
		podIP := nextIP()
		name := fmt.Sprintf("client-%d-%d", w, p)
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: default, labels: {app: client-%[2]d, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: client-%[2]d, containers: [{name: app, image: x, ports: [{containerPort: 9090}]}]}
status: {podIP: %[3]s, conditions: [{type: Ready, status: "True"}]}
`, name, w, podIP)
		nodes = append(nodes, nodeID(name, "default", podIP))
	}
	if extraEndpoint {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata: {name: svc-0-extra, namespace: default, labels: {app: svc-0, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: svc-0, containers: [{name: app, image: x, ports: [{containerPort: 8080}]}]}
status: {podIP: %s, conditions: [{type: Ready, status: "True"}]}
`, nextIP())
	}
	m := file.Build([]file.File{{Path: "scale.yaml", Data: []byte(b.String())}}, file.Options{})
	for _, p := range m.Problems {
		if p.Severity == "error" {
			tb.Fatalf("scale mesh problem: %v", p)
		}
	}
	return m, nodes
}

// rawProxy is a minimal SOTW proxy for load: it subscribes to every type
// (wildcard, secrets by name) and ACKs each response without decoding it,
// so that the CPU the benchmark measures is the server's.
func rawProxy(ctx context.Context, conn *grpc.ClientConn, node string, acked func(typeURL, version string), bytes *atomic.Int64) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	names := map[string][]string{xdstest.SDS: {SecretDefault, SecretRootCA}}
	for i, t := range []string{xdstest.CDS, xdstest.EDS, xdstest.LDS, xdstest.RDS, xdstest.SDS} {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: t, ResourceNames: names[t]}
		if i == 0 {
			req.Node = &corev3.Node{Id: node}
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		for _, r := range resp.GetResources() {
			bytes.Add(int64(len(r.GetValue())))
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{
			TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), ResourceNames: names[resp.GetTypeUrl()],
		}); err != nil {
			return err
		}
		acked(resp.GetTypeUrl(), resp.GetVersionInfo())
	}
}

// scaleRun serves m, connects one raw proxy per node and returns how long
// it took until every proxy had ACKed all five types, then how long an
// endpoint change took to reach every proxy (after the debounce).
func scaleRun(tb testing.TB, m *model.Snapshot, nodes []string, change *model.Snapshot) (full, eds time.Duration, sent int64) {
	tb.Helper()
	authority, err := ca.New(ca.Options{Dir: tb.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := New(Options{
		DebounceAfter: 10 * time.Millisecond, DebounceMax: 100 * time.Millisecond,
		CA: authority, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	}()
	n := srv.pushesDone.Load()
	srv.Update(m)
	for srv.pushesDone.Load() == n {
		time.Sleep(time.Millisecond)
	}

	const conns = 8
	var cc []*grpc.ClientConn
	for range conns {
		c, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			tb.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		cc = append(cc, c)
	}
	var mu sync.Mutex
	acked := map[string]map[string]string{} // node → type → version
	complete, edsDone := 0, 0
	allDone, edsAll := make(chan struct{}), make(chan struct{})
	var wantEDS string
	var bytes atomic.Int64
	start := time.Now()
	for i, node := range nodes {
		go func() {
			_ = rawProxy(ctx, cc[i%conns], node, func(typeURL, version string) {
				mu.Lock()
				defer mu.Unlock()
				a := acked[node]
				if a == nil {
					a = map[string]string{}
					acked[node] = a
				}
				before := len(a)
				a[typeURL] = version
				if before == 4 && len(a) == 5 {
					complete++
					if complete == len(nodes) {
						close(allDone)
					}
				}
				if typeURL == xdstest.EDS && wantEDS != "" && srv.eds.holds(version, wantEDS) {
					edsDone++
					if edsDone == len(nodes) {
						close(edsAll)
					}
				}
			}, &bytes)
		}()
	}
	select {
	case <-allDone:
	case <-time.After(2 * time.Minute):
		tb.Fatalf("only %d of %d proxies got a full configuration", complete, len(nodes))
	}
	full = time.Since(start)
	if change == nil {
		return full, 0, bytes.Load()
	}
	before := bytes.Load()
	mu.Lock()
	n = srv.pushesDone.Load()
	mu.Unlock()
	changed := time.Now()
	srv.Update(change)
	for srv.pushesDone.Load() == n {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	srv.mu.Lock()
	for _, g := range srv.groups {
		wantEDS, _ = srv.eds.flavor(g.proxy.Flavor).required(g.edsNames)
		break
	}
	srv.mu.Unlock()
	for _, a := range acked {
		if srv.eds.holds(a[xdstest.EDS], wantEDS) {
			edsDone++
		}
	}
	if edsDone == len(nodes) {
		close(edsAll)
	}
	mu.Unlock()
	select {
	case <-edsAll:
	case <-time.After(time.Minute):
		tb.Fatalf("only %d of %d proxies got the endpoint change", edsDone, len(nodes))
	}
	return full, time.Since(changed) - 10*time.Millisecond, bytes.Load() - before
}

// BenchmarkScale serves issue 4's scale target: 1,000 services × 4
// endpoints to 1,000 proxies in 50 groups, then one endpoint change.
//
//	go test -run '^$' -bench Scale -benchtime 1x ./xds/
func BenchmarkScale(b *testing.B) {
	m, nodes := scaleMesh(b, 1000, 1000, 50, false)
	// The change: one more endpoint for the first service.
	change, _ := scaleMesh(b, 1000, 1000, 50, true)
	b.ResetTimer()
	for range b.N {
		full, eds, sent := scaleRun(b, m, nodes, change)
		b.ReportMetric(full.Seconds(), "s-full-config")
		b.ReportMetric(eds.Seconds()*1000, "ms-eds-change")
		b.ReportMetric(float64(sent)/float64(len(nodes)), "B/proxy-eds-change")
	}
}
