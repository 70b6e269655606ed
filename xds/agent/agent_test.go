package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/minimesh/minimesh/xds/ca"
	"github.com/minimesh/minimesh/xds/xdstest"
)

const (
	testPod = "product-0"
	testNS  = "default"
	testIP  = "127.0.0.12"
)

// fakeMeshd is a go-control-plane ADS server that serves whatever secrets a
// test sets and records what the agent sends.
type fakeMeshd struct {
	t     *testing.T
	addr  string
	cache cachev3.SnapshotCache
	srv   *grpc.Server

	mu       sync.Mutex
	tokens   []string // authorization header per stream
	requests []recorded
	open     map[int64]bool // streams open now
	closed   int            // streams closed so far
	changed  chan struct{}
	version  int
	// What the snapshot holds besides nothing: set with setSecrets and
	// setListeners, published together.
	secrets, listeners []types.Resource
}

// failListener is a listener name that makes the fake meshd end the
// stream that asks for it, as a real server ends one it refuses.
const failListener = "fail-me"

type recorded struct {
	stream int64
	req    *discoveryv3.DiscoveryRequest
}

func newFakeMeshd(t *testing.T, addr string) *fakeMeshd {
	t.Helper()
	f := &fakeMeshd{t: t, cache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil), changed: make(chan struct{}), open: map[int64]bool{}}
	f.start(addr)
	t.Cleanup(f.stop)
	return f
}

func (f *fakeMeshd) start(addr string) {
	f.t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	// The port of a stopped server can take a moment to be free again.
	for range 50 {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		f.t.Fatalf("listen: %v", err)
	}
	f.addr = lis.Addr().String()
	cb := serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			md, _ := metadata.FromIncomingContext(ctx)
			f.mu.Lock()
			f.tokens = append(f.tokens, strings.Join(md.Get("authorization"), ","))
			f.open[id] = true
			f.notifyLocked()
			f.mu.Unlock()
			return nil
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) {
			f.mu.Lock()
			delete(f.open, id)
			f.closed++
			f.notifyLocked()
			f.mu.Unlock()
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			f.mu.Lock()
			f.requests = append(f.requests, recorded{id, req})
			f.notifyLocked()
			f.mu.Unlock()
			if slices.Contains(req.GetResourceNames(), failListener) {
				return errors.New("this stream asked for a listener the test refuses")
			}
			return nil
		},
	}
	f.srv = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(f.srv, serverv3.NewServer(context.Background(), f.cache, cb))
	go func() { _ = f.srv.Serve(lis) }()
}

func (f *fakeMeshd) stop() { f.srv.Stop() }

func (f *fakeMeshd) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// setSecrets publishes a certificate and bundle for the node.
func (f *fakeMeshd) setSecrets(nodeID string, chain, key, root []byte) {
	f.t.Helper()
	f.mu.Lock()
	f.secrets = []types.Resource{
		&tlsv3.Secret{Name: SecretDefault, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: chain}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: key}},
		}}},
		&tlsv3.Secret{Name: SecretRootCA, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: root}},
		}}},
	}
	f.mu.Unlock()
	f.publish(nodeID)
}

// setListeners publishes (empty) listeners with these names for the node,
// under a new version.
func (f *fakeMeshd) setListeners(nodeID string, names ...string) {
	f.t.Helper()
	f.mu.Lock()
	f.listeners = nil
	for _, n := range names {
		f.listeners = append(f.listeners, &listenerv3.Listener{Name: n})
	}
	f.mu.Unlock()
	f.publish(nodeID)
}

func (f *fakeMeshd) publish(nodeID string) {
	f.t.Helper()
	f.mu.Lock()
	f.version++
	v := fmt.Sprint(f.version)
	res := map[resourcev3.Type][]types.Resource{resourcev3.SecretType: f.secrets, resourcev3.ListenerType: f.listeners}
	f.mu.Unlock()
	snap, err := cachev3.NewSnapshot(v, res)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		f.t.Fatal(err)
	}
}

// sdsStreams lists the streams that asked for secrets. Call with mu held.
func (f *fakeMeshd) sdsStreams() []int64 {
	var ids []int64
	for _, r := range f.requests {
		if r.req.GetTypeUrl() == resourcev3.SecretType && !slices.Contains(ids, r.stream) {
			ids = append(ids, r.stream)
		}
	}
	return ids
}

// waitFor polls cond under the lock until it holds or the test times out.
func (f *fakeMeshd) waitFor(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		f.mu.Lock()
		ok, ch := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			f.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func newCA(t *testing.T) *ca.CA {
	t.Helper()
	c, err := ca.New(ca.Options{Dir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func issue(t *testing.T, c *ca.CA) *ca.Certificate {
	t.Helper()
	cert, err := c.Issue(testNS, "product")
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func startAgent(t *testing.T, opts Options) *Agent {
	t.Helper()
	opts.Pod, opts.Namespace, opts.IP = testPod, testNS, testIP
	if opts.CertDir == "" {
		opts.CertDir = t.TempDir()
	}
	opts.Log = slog.New(slog.DiscardHandler)
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAgentWritesAndRotatesCertificates(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	authority := newCA(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("token-one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, Options{XDSAddress: meshd.addr, TokenFile: tokenFile})
	first := issue(t, authority)
	meshd.setSecrets(a.NodeID(), first.ChainPEM, []byte(first.KeyPEM), authority.RootPEM())

	if err := a.WaitForCertificate(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	dir := a.CertDir()
	if got := readFile(t, filepath.Join(dir, CertChainFile)); !bytes.Equal(got, first.ChainPEM) {
		t.Errorf("%s does not hold the served chain", CertChainFile)
	}
	if got := readFile(t, filepath.Join(dir, KeyFile)); !bytes.Equal(got, []byte(first.KeyPEM)) {
		t.Errorf("%s does not hold the served key", KeyFile)
	}
	if got := readFile(t, filepath.Join(dir, RootCertFile)); !bytes.Equal(got, authority.RootPEM()) {
		t.Errorf("%s does not hold the served bundle", RootCertFile)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("%s has mode %o, want 600", KeyFile, mode)
	}
	got, _ := a.Certificate()
	if got.Serial != first.Serial || got.SPIFFEID != "spiffe://cluster.local/ns/default/sa/product" {
		t.Errorf("Certificate() = %+v, want serial %s and the product SPIFFE ID", got, first.Serial)
	}
	meshd.waitFor("the bearer token", func() bool { return len(meshd.tokens) > 0 })
	meshd.mu.Lock()
	if meshd.tokens[0] != "Bearer token-one" {
		t.Errorf("authorization = %q, want %q", meshd.tokens[0], "Bearer token-one")
	}
	meshd.mu.Unlock()

	// Rotation: a new certificate replaces the files.
	second := issue(t, authority)
	meshd.setSecrets(a.NodeID(), second.ChainPEM, []byte(second.KeyPEM), authority.RootPEM())
	rotated, err := a.WaitForNewCertificate(ctxTimeout(t, 10*time.Second), first.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Serial != second.Serial {
		t.Errorf("rotated serial = %s, want %s", rotated.Serial, second.Serial)
	}
	if got := readFile(t, filepath.Join(dir, CertChainFile)); !bytes.Equal(got, second.ChainPEM) {
		t.Errorf("%s was not rewritten with the rotated chain", CertChainFile)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, CertChainFile), filepath.Join(dir, KeyFile)); err != nil {
		t.Errorf("the files on disk do not form a key pair after rotation: %v", err)
	}
	// Each response was ACKed with its version.
	meshd.waitFor("the ACK of the rotated secrets", func() bool {
		for _, r := range meshd.requests {
			if r.req.GetTypeUrl() == resourcev3.SecretType && r.req.GetVersionInfo() == "2" && r.req.GetErrorDetail() == nil {
				return true
			}
		}
		return false
	})
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left in the cert dir: %s", e.Name())
		}
	}
}

func TestAgentKeepsFilesDuringOutageAndRereadsToken(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	authority := newCA(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("before"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, Options{XDSAddress: meshd.addr, TokenFile: tokenFile})
	cert := issue(t, authority)
	meshd.setSecrets(a.NodeID(), cert.ChainPEM, []byte(cert.KeyPEM), authority.RootPEM())
	if err := a.WaitForCertificate(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}

	// meshd goes away; the projected token rotates meanwhile.
	meshd.stop()
	if err := os.WriteFile(tokenFile, []byte("after"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a few failed attempts
	if got := readFile(t, filepath.Join(a.CertDir(), CertChainFile)); !bytes.Equal(got, cert.ChainPEM) {
		t.Fatal("the certificate file changed while meshd was down")
	}

	// meshd is back on the same address with a fresh cache.
	back := newFakeMeshd(t, meshd.addr)
	renewed := issue(t, authority)
	back.setSecrets(a.NodeID(), renewed.ChainPEM, []byte(renewed.KeyPEM), authority.RootPEM())
	if _, err := a.WaitForNewCertificate(ctxTimeout(t, 15*time.Second), cert.Serial); err != nil {
		t.Fatalf("no certificate after meshd came back: %v", err)
	}
	back.mu.Lock()
	defer back.mu.Unlock()
	if len(back.tokens) == 0 || back.tokens[0] != "Bearer after" {
		t.Errorf("tokens after reconnect = %q, want the re-read token %q", back.tokens, "Bearer after")
	}
}

func TestAgentRejectsCertificateFromAnotherCA(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	trusted, other := newCA(t), newCA(t)
	a := startAgent(t, Options{XDSAddress: meshd.addr})
	foreign := issue(t, other)
	meshd.setSecrets(a.NodeID(), foreign.ChainPEM, []byte(foreign.KeyPEM), trusted.RootPEM())

	meshd.waitFor("a NACK", func() bool {
		for _, r := range meshd.requests {
			if r.req.GetErrorDetail() != nil {
				if !strings.Contains(r.req.GetErrorDetail().GetMessage(), "does not chain to the trust bundle") {
					t.Errorf("NACK message = %q, want it to say the chain does not verify", r.req.GetErrorDetail().GetMessage())
				}
				return true
			}
		}
		return false
	})
	if _, err := os.Stat(filepath.Join(a.CertDir(), CertChainFile)); !os.IsNotExist(err) {
		t.Errorf("a certificate that does not verify was written (stat: %v)", err)
	}
	if _, ok := a.Certificate(); ok {
		t.Error("Certificate() reports a certificate after a NACK")
	}

	// A good one afterwards is accepted.
	good := issue(t, trusted)
	meshd.setSecrets(a.NodeID(), good.ChainPEM, []byte(good.KeyPEM), trusted.RootPEM())
	if err := a.WaitForCertificate(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestBootstrapDrivesGRPCThroughTheAgent feeds the agent's bootstrap to
// gRPC's own xDS resolver: gRPC must accept it and reach the agent's
// socket, and the agent must relay the LDS request of each channel to
// meshd on a stream of its own, under its node, next to the certificate
// session. gRPC-Go opens an xDS stream per dial target; none may knock
// another off.
func TestBootstrapDrivesGRPCThroughTheAgent(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	a := startAgent(t, Options{XDSAddress: meshd.addr})

	var b map[string]any
	if err := json.Unmarshal(a.Bootstrap(), &b); err != nil {
		t.Fatalf("bootstrap is not JSON: %v", err)
	}
	node := b["node"].(map[string]any)
	if node["id"] != "sidecar~127.0.0.12~product-0.default~default.svc.cluster.local" {
		t.Errorf("node id = %v", node["id"])
	}
	if md := node["metadata"].(map[string]any); md["GENERATOR"] != "grpc" {
		t.Errorf("node metadata GENERATOR = %v, want grpc", md["GENERATOR"])
	}
	if b["server_listener_resource_name_template"] != ServerListenerTemplate {
		t.Errorf("server listener template = %v", b["server_listener_resource_name_template"])
	}
	fw := b["certificate_providers"].(map[string]any)[CertificateProvider].(map[string]any)
	if fw["plugin_name"] != "file_watcher" {
		t.Errorf("certificate provider plugin = %v", fw["plugin_name"])
	}
	onDisk := readFile(t, a.BootstrapPath())
	if !bytes.Equal(onDisk, a.Bootstrap()) {
		t.Error("the bootstrap file differs from Bootstrap()")
	}

	resolver, err := xds.NewXDSResolverWithConfigForTesting(onDisk)
	if err != nil {
		t.Fatalf("gRPC rejects the bootstrap: %v", err)
	}
	targets := []string{"product.default.svc.cluster.local:8080", "stock.default.svc.cluster.local:8081"}
	for _, target := range targets {
		cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		cc.Connect()
	}

	// ldsStream maps each target to the meshd stream its LDS request came
	// on; the problems are collected and reported once the requests are in.
	ldsStream := map[string]int64{}
	problems := map[string]bool{}
	meshd.waitFor("each channel's LDS request", func() bool {
		sds := meshd.sdsStreams()
		for _, r := range meshd.requests {
			if r.req.GetTypeUrl() != resourcev3.ListenerType {
				continue
			}
			if r.req.GetNode() != nil && r.req.GetNode().GetId() != a.NodeID() {
				problems[fmt.Sprintf("relayed request node = %q, want %q", r.req.GetNode().GetId(), a.NodeID())] = true
			}
			if slices.Contains(sds, r.stream) {
				problems[fmt.Sprintf("the workload's LDS request came on the certificate session's stream %d", r.stream)] = true
			}
			for _, n := range r.req.GetResourceNames() {
				if slices.Contains(targets, n) {
					ldsStream[n] = r.stream
				}
			}
		}
		return len(ldsStream) == len(targets)
	})
	for _, p := range slices.Sorted(maps.Keys(problems)) {
		t.Error(p)
	}
	if ldsStream[targets[0]] == ldsStream[targets[1]] {
		t.Errorf("both channels' LDS requests came on meshd stream %d; gRPC opens one xDS stream per target", ldsStream[targets[0]])
	}
	// A stream replaced by another would be closed at once; give a
	// replacement the time to show, then check that every stream lives.
	time.Sleep(500 * time.Millisecond)
	meshd.mu.Lock()
	defer meshd.mu.Unlock()
	for target, id := range ldsStream {
		if !meshd.open[id] {
			t.Errorf("the stream relaying %s was closed while its channel lives", target)
		}
	}
	if sds := meshd.sdsStreams(); len(sds) != 1 || !meshd.open[sds[0]] {
		t.Errorf("certificate session streams = %v (open: %v), want one that stays open", sds, meshd.open)
	}
}

func TestRunPropagatesExitStatusAndBootstrap(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	authority := newCA(t)
	dir := t.TempDir()
	opts := Options{Pod: testPod, Namespace: testNS, IP: testIP, XDSAddress: meshd.addr, CertDir: dir, Log: slog.New(slog.DiscardHandler)}
	nodeID := "sidecar~127.0.0.12~product-0.default~default.svc.cluster.local"
	cert := issue(t, authority)
	meshd.setSecrets(nodeID, cert.ChainPEM, []byte(cert.KeyPEM), authority.RootPEM())

	var out bytes.Buffer
	code, err := Run(context.Background(), opts,
		[]string{"sh", "-c", `echo "$GRPC_XDS_BOOTSTRAP"; test -s "$(dirname "$GRPC_XDS_BOOTSTRAP")/cert-chain.pem" && exit 7`},
		IO{Stdout: &out, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if code != 7 {
		t.Errorf("exit code = %d, want 7 (the command's own status; the certificate must be on disk before it starts)", code)
	}
	if got := strings.TrimSpace(out.String()); got != filepath.Join(dir, BootstrapFile) {
		t.Errorf("GRPC_XDS_BOOTSTRAP = %q, want %q", got, filepath.Join(dir, BootstrapFile))
	}

	// A command ended by a signal reports 128+signal, as a shell does.
	code, err = Run(context.Background(), opts, []string{"sh", "-c", "kill -TERM $$"}, IO{Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if code != 128+15 {
		t.Errorf("exit code of a command killed by SIGTERM = %d, want 143", code)
	}
}

func TestRunTimesOutWithoutCertificate(t *testing.T) {
	meshd := newFakeMeshd(t, "") // serves no secrets
	opts := Options{Pod: testPod, Namespace: testNS, IP: testIP, XDSAddress: meshd.addr, CertDir: t.TempDir(),
		CertTimeout: 300 * time.Millisecond, Log: slog.New(slog.DiscardHandler)}
	code, err := Run(context.Background(), opts, []string{"true"}, IO{})
	if err == nil || code == 0 {
		t.Fatalf("Run = %d, %v; want an error", code, err)
	}
	if !strings.Contains(err.Error(), "no workload certificate from meshd") {
		t.Errorf("error = %q, want it to say no certificate arrived", err)
	}
}

func TestNewRejectsBadIdentity(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"missing pod", Options{Namespace: "default", IP: "127.0.0.1"}},
		{"bad IP", Options{Pod: "p", Namespace: "default", IP: "not-an-ip"}},
		{"namespace with tilde", Options{Pod: "p", Namespace: "a~b", IP: "127.0.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.CertDir = t.TempDir()
			if a, err := New(tc.opts); err == nil {
				_ = a.Close()
				t.Fatal("New accepted an identity that cannot form a node ID")
			}
		})
	}
}

func TestParseSecretsChecksTheKeyPair(t *testing.T) {
	authority := newCA(t)
	one, two := issue(t, authority), issue(t, authority)
	resp := func(chain, key, root []byte) *discoveryv3.DiscoveryResponse {
		f := &fakeMeshd{t: t, cache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)}
		f.setSecrets("n", chain, key, root)
		snap, _ := f.cache.GetSnapshot("n")
		var r discoveryv3.DiscoveryResponse
		for _, res := range snap.GetResources(resourcev3.SecretType) {
			a, err := anyOf(res)
			if err != nil {
				t.Fatal(err)
			}
			r.Resources = append(r.Resources, a)
		}
		return &r
	}
	if _, err := parseSecrets(resp(one.ChainPEM, []byte(two.KeyPEM), authority.RootPEM()), nil); err == nil {
		t.Error("a chain with another certificate's key was accepted")
	}
	s, err := parseSecrets(resp(one.ChainPEM, []byte(one.KeyPEM), authority.RootPEM()), nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(mustDER(t, one.ChainPEM))
	if s.cert.Serial != leaf.SerialNumber.Text(16) || s.cert.Serial != one.Serial {
		t.Errorf("serial = %s, want %s", s.cert.Serial, one.Serial)
	}
}

func anyOf(r types.Resource) (*anypb.Any, error) { return anypb.New(r) }

func mustDER(t *testing.T, p []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(p)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}

// TestRunForwardsSignals: the signals a workload uses (here SIGHUP for a
// reload, then SIGTERM) reach the command, and the agent exits with the
// command's status, not killed by them itself.
func TestRunForwardsSignals(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	authority := newCA(t)
	dir := t.TempDir()
	opts := Options{Pod: testPod, Namespace: testNS, IP: testIP, XDSAddress: meshd.addr, CertDir: dir, Log: slog.New(slog.DiscardHandler)}
	cert := issue(t, authority)
	meshd.setSecrets("sidecar~127.0.0.12~product-0.default~default.svc.cluster.local", cert.ChainPEM, []byte(cert.KeyPEM), authority.RootPEM())

	ready := filepath.Join(t.TempDir(), "ready")
	script := `trap 'echo hup' HUP; trap 'echo term; exit 9' TERM; : > "` + ready + `"; while :; do sleep 0.05; done`
	var out xdstest.Buffer
	done := make(chan int, 1)
	go func() {
		code, err := Run(context.Background(), opts, []string{"sh", "-c", script}, IO{Stdout: &out, Stderr: io.Discard})
		if err != nil {
			t.Error(err)
		}
		done <- code
	}()
	waitFile(t, ready)
	for _, s := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM} {
		if err := syscall.Kill(os.Getpid(), s); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case code := <-done:
		if code != 9 {
			t.Errorf("exit code = %d, want 9 (the command's, after its TERM trap)", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the command did not end after SIGTERM was forwarded")
	}
	if got := out.String(); !strings.Contains(got, "hup") || !strings.Contains(got, "term") {
		t.Errorf("the command saw %q, want both hup and term", got)
	}
}

// TestRunStopsOnSignalBeforeTheWorkloadStarts: SIGTERM while the agent
// still waits for its first certificate ends it with 128+15 and never
// starts the command.
func TestRunStopsOnSignalBeforeTheWorkloadStarts(t *testing.T) {
	meshd := newFakeMeshd(t, "") // serves no secrets: the agent waits
	opts := Options{Pod: testPod, Namespace: testNS, IP: testIP, XDSAddress: meshd.addr, CertDir: t.TempDir(),
		CertTimeout: time.Minute, Log: slog.New(slog.DiscardHandler)}
	started := filepath.Join(t.TempDir(), "started")
	done := make(chan int, 1)
	go func() {
		code, _ := Run(context.Background(), opts, []string{"sh", "-c", `: > "` + started + `"`}, IO{})
		done <- code
	}()
	time.Sleep(300 * time.Millisecond) // Run has installed its handler by now
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 128+15 {
			t.Errorf("exit code = %d, want 143", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not stop an agent waiting for its certificate")
	}
	if _, err := os.Stat(started); err == nil {
		t.Error("the command was started although the agent was told to stop")
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", path)
}
