package xds

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/ca"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// waitBound bounds every wait in these tests. It is only reached when the
// behaviour under test is broken; passing tests finish in milliseconds.
const waitBound = 10 * time.Second

// testClock is a settable clock for Options.Now and the CA.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type harness struct {
	t     *testing.T
	srv   *Server
	reg   *prometheus.Registry
	ca    *ca.CA
	clock *testClock
	logs  *xdstest.Buffer
	conn  *grpc.ClientConn
	ctx   context.Context
}

// newHarness serves a Server on loopback with a fresh CA and a short
// debounce. tweak may change the options before New.
func newHarness(t *testing.T, tweak func(*Options)) *harness {
	t.Helper()
	clock := &testClock{now: time.Now()}
	logs := &xdstest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	authority, err := ca.New(ca.Options{Dir: t.TempDir(), Now: clock.Now}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts := Options{
		DebounceAfter: 5 * time.Millisecond,
		DebounceMax:   50 * time.Millisecond,
		CA:            authority,
		Registry:      reg,
		Log:           log,
		Now:           clock.Now,
	}
	if tweak != nil {
		tweak(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close() // TestDisconnectForgetsProxy may have closed it
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after its context ended; want nil", err)
		}
	})
	return &harness{t: t, srv: srv, reg: reg, ca: authority, clock: clock, logs: logs, conn: conn, ctx: ctx}
}

// update publishes a model and waits until its push has been processed.
func (h *harness) update(m *model.Snapshot) {
	h.t.Helper()
	n := h.srv.pushesDone.Load()
	h.srv.Update(m)
	h.eventually("the push to finish", func() bool { return h.srv.pushesDone.Load() > n })
}

// eventually polls cond until it holds (bounded by waitBound). It is used
// only for server-side state that has no notification.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(waitBound)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// client starts an Envoy-like ADS client for a pod.
func (h *harness) client(pod, ns, ip string, delta bool, tweak func(*xdstest.Options)) *xdstest.Client {
	h.t.Helper()
	opts := xdstest.Options{NodeID: nodeID(pod, ns, ip), Delta: delta}
	if tweak != nil {
		tweak(&opts)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	h.t.Cleanup(cancel)
	return xdstest.Start(ctx, h.conn, opts)
}

// waitComplete waits until the client holds a closed set of resources
// including its secrets.
func (h *harness) waitComplete(c *xdstest.Client) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, waitBound)
	defer cancel()
	err := c.WaitFor(ctx, func() bool {
		return c.Complete() == nil && len(c.Resources(xdstest.SDS)) == 2
	})
	if err != nil {
		h.t.Fatalf("%v (still: %v)", err, c.Complete())
	}
}

func (h *harness) waitFor(c *xdstest.Client, what string, cond func() bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, waitBound)
	defer cancel()
	if err := c.WaitFor(ctx, cond); err != nil {
		h.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// proxyStatus returns the syncz entry of a node.
func (h *harness) proxyStatus(node string) (ProxyStatus, bool) {
	for _, p := range h.srv.SyncStatus().Proxies {
		if p.NodeID == node {
			return p, true
		}
	}
	return ProxyStatus{}, false
}

func nodeID(pod, ns, ip string) string {
	return auth.SidecarNodeID(ip, pod, ns, "cluster.local").String()
}

// mesh builds a model from manifests with the file source's own parser.
func mesh(t *testing.T, docs ...string) *model.Snapshot {
	t.Helper()
	m := file.Build([]file.File{{Path: "mesh.yaml", Data: []byte(strings.Join(docs, "\n---\n"))}}, file.Options{})
	if err := m.Problems; len(err) > 0 {
		for _, p := range err {
			if p.Severity == "error" {
				t.Fatalf("test manifest problem: %v", p)
			}
		}
	}
	return m
}

func service(name string, port int) string {
	return strings.NewReplacer("{name}", name, "{octet}", strconv.Itoa(port)).Replace(`
apiVersion: v1
kind: Service
metadata: {name: {name}, namespace: default}
spec:
  clusterIP: 10.96.0.{octet}
  selector: {app: {name}}
  ports: [{name: http, port: 8080, targetPort: 8080}]`)
}

func pod(name, app, sa, ip string) string {
	return strings.NewReplacer("{name}", name, "{app}", app, "{sa}", sa, "{ip}", ip).Replace(`
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  labels: {app: {app}, security.istio.io/tlsMode: istio}
spec:
  serviceAccountName: {sa}
  containers: [{name: app, image: example/{app}, ports: [{containerPort: 8080}]}]
status:
  podIP: {ip}
  conditions: [{type: Ready, status: "True"}]`)
}

// The seeds' shop: a gateway calling product and stock.
var (
	gatewayPod = pod("product-gateway-0", "product-gateway", "product-gateway", "127.0.0.4")
	productPod = pod("product-0", "product", "product", "127.0.0.2")
	stockPod   = pod("stock-0", "stock", "stock", "127.0.0.3")
	shop       = []string{service("product", 11), service("stock", 12), service("product-gateway", 13), gatewayPod, productPod, stockPod}
)

func shopWith(extra ...string) []string {
	return append(append([]string{}, shop...), extra...)
}
