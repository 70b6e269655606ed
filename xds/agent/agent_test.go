package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
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
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	securityv1alpha1 "istio.io/api/security/v1alpha1"

	"github.com/minimesh/minimesh/xds/auth"
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
	// listeners is what the snapshot holds (setListeners).
	listeners []types.Resource

	// The certificate service: signer signs every request for
	// default/product and the answer ends with bundle (signer's own root
	// when nil), unless fail is set; csrs records every call.
	signer *ca.CA
	bundle []byte
	fail   codes.Code
	csrs   []csrCall
}

// csrCall is one CreateCertificate call the fake meshd received.
type csrCall struct {
	token, nodeID string
	csr           *x509.CertificateRequest
	at            time.Time
	serial        string // of the certificate sent; empty when refused
}

// fakeCertService is the fake meshd's IstioCertificateService.
type fakeCertService struct {
	securityv1alpha1.UnimplementedIstioCertificateServiceServer
	f *fakeMeshd
}

func (c fakeCertService) CreateCertificate(ctx context.Context, req *securityv1alpha1.IstioCertificateRequest) (*securityv1alpha1.IstioCertificateResponse, error) {
	f := c.f
	md, _ := metadata.FromIncomingContext(ctx)
	call := csrCall{
		token:  strings.Join(md.Get("authorization"), ","),
		nodeID: req.GetMetadata().GetFields()[auth.MetadataNodeID].GetStringValue(),
		at:     time.Now(),
	}
	if block, _ := pem.Decode([]byte(req.GetCsr())); block != nil {
		call.csr, _ = x509.ParseCertificateRequest(block.Bytes)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notifyLocked()
	if f.fail != codes.OK {
		f.csrs = append(f.csrs, call)
		return nil, status.Error(f.fail, "the test refuses certificate requests")
	}
	cert, err := f.signer.SignCSR([]byte(req.GetCsr()), testNS, "product", 0)
	if err != nil {
		f.csrs = append(f.csrs, call)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	bundle := f.bundle
	if bundle == nil {
		bundle = f.signer.RootPEM()
	}
	call.serial = cert.Serial
	f.csrs = append(f.csrs, call)
	return &securityv1alpha1.IstioCertificateResponse{CertChain: []string{string(cert.ChainPEM), string(bundle)}}, nil
}

// setCA makes the fake sign with signer and send bundle as the trust
// bundle (signer's root when nil), and stop refusing.
func (f *fakeMeshd) setCA(signer *ca.CA, bundle []byte) {
	f.mu.Lock()
	f.signer, f.bundle, f.fail = signer, bundle, codes.OK
	f.mu.Unlock()
}

// refuseCSRs makes every certificate request fail with code.
func (f *fakeMeshd) refuseCSRs(code codes.Code) {
	f.mu.Lock()
	f.fail = code
	f.mu.Unlock()
}

// signed lists the calls that got a certificate. Call with mu held.
func (f *fakeMeshd) signed() []csrCall {
	var out []csrCall
	for _, c := range f.csrs {
		if c.serial != "" {
			out = append(out, c)
		}
	}
	return out
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
	f := &fakeMeshd{t: t, cache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil), changed: make(chan struct{}), open: map[int64]bool{},
		signer: newCA(t, 0)}
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
	securityv1alpha1.RegisterIstioCertificateServiceServer(f.srv, fakeCertService{f: f})
	go func() { _ = f.srv.Serve(lis) }()
}

func (f *fakeMeshd) stop() { f.srv.Stop() }

func (f *fakeMeshd) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
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
	res := map[resourcev3.Type][]types.Resource{resourcev3.ListenerType: f.listeners}
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

// newCA is a CA with workload lifetime ttl (0: the default, 24h).
func newCA(t *testing.T, ttl time.Duration) *ca.CA {
	t.Helper()
	c, err := ca.New(ca.Options{Dir: t.TempDir(), WorkloadTTL: ttl}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startAgent(t *testing.T, opts Options) *Agent {
	t.Helper()
	opts.Pod, opts.Namespace, opts.IP = testPod, testNS, testIP
	if opts.CertDir == "" {
		opts.CertDir = t.TempDir()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
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

// The agent makes its key, has meshd sign a request for it with its token
// and node ID, writes key, chain and bundle, and renews at half the
// lifetime with a new key.
func TestAgentWritesAndRotatesCertificates(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	const ttl = 10 * time.Second // the CA's shortest: renewal after about 5s
	authority := newCA(t, ttl)
	meshd.setCA(authority, nil)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("token-one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, Options{XDSAddress: meshd.addr, TokenFile: tokenFile})
	if err := a.WaitForCertificate(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	dir := a.CertDir()
	first, _ := a.Certificate()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertChainFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatalf("the files on disk do not form a key pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, RootCertFile)); !bytes.Equal(got, authority.RootPEM()) {
		t.Errorf("%s does not hold the bundle meshd sent", RootCertFile)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("%s has mode %o, want 600", KeyFile, mode)
	}
	if first.Serial != leaf.SerialNumber.Text(16) || first.SPIFFEID != "spiffe://cluster.local/ns/default/sa/product" {
		t.Errorf("Certificate() = %+v, want the file's serial and the product SPIFFE ID", first)
	}
	meshd.mu.Lock()
	call := meshd.csrs[0]
	meshd.mu.Unlock()
	if call.token != "Bearer token-one" || call.nodeID != a.NodeID() {
		t.Errorf("the request came with authorization %q and node ID %q, want %q and %q", call.token, call.nodeID, "Bearer token-one", a.NodeID())
	}
	if call.csr == nil || !leaf.PublicKey.(*ecdsa.PublicKey).Equal(call.csr.PublicKey) {
		t.Errorf("the certificate on disk is not for the key of the request meshd signed")
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("the workload key is %T, want ECDSA P-256", leaf.PublicKey)
	}

	// Renewal at half the lifetime, with a new key.
	rotated, err := a.WaitForNewCertificate(ctxTimeout(t, 15*time.Second), first.Serial)
	if err != nil {
		t.Fatal(err)
	}
	meshd.mu.Lock()
	calls := meshd.signed()
	meshd.mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("meshd signed %d requests, want 2", len(calls))
	}
	if gap := calls[1].at.Sub(calls[0].at); gap < 4*time.Second || gap > 7*time.Second {
		t.Errorf("renewed %s after the first certificate, want about half of %s", gap.Round(time.Millisecond), ttl)
	}
	if rotated.Serial != calls[1].serial {
		t.Errorf("rotated serial = %s, want %s", rotated.Serial, calls[1].serial)
	}
	again, err := tls.LoadX509KeyPair(filepath.Join(dir, CertChainFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatalf("the files on disk do not form a key pair after rotation: %v", err)
	}
	if bytes.Equal(again.Certificate[0], pair.Certificate[0]) || calls[0].csr.PublicKey.(*ecdsa.PublicKey).Equal(calls[1].csr.PublicKey) {
		t.Errorf("the renewal kept the old certificate or key")
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left in the cert dir: %s", e.Name())
		}
	}
}

// When renewal fails the workload keeps its files, and the agent retries
// with growing waits, reading the token file again each time.
func TestAgentKeepsFilesWhenRenewalFails(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	meshd.setCA(newCA(t, 10*time.Second), nil)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("before"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, Options{XDSAddress: meshd.addr, TokenFile: tokenFile})
	if err := a.WaitForCertificate(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	first, _ := a.Certificate()
	files := certFiles(t, a)

	meshd.refuseCSRs(codes.Unavailable)
	if err := os.WriteFile(tokenFile, []byte("after"), 0o600); err != nil {
		t.Fatal(err)
	}
	const failures = 4
	meshd.waitFor("failed renewals", func() bool { return len(meshd.csrs)-1 >= failures })
	if got := certFiles(t, a); !slices.EqualFunc(got, files, bytes.Equal) {
		t.Error("the certificate files changed although renewal failed")
	}
	if c, _ := a.Certificate(); c.Serial != first.Serial {
		t.Errorf("certificate serial = %s after failed renewals, want the first, %s", c.Serial, first.Serial)
	}
	meshd.mu.Lock()
	failed := slices.Clone(meshd.csrs[1:])
	meshd.mu.Unlock()
	for i := 2; i < len(failed); i++ {
		if prev, gap := failed[i-1].at.Sub(failed[i-2].at), failed[i].at.Sub(failed[i-1].at); gap <= prev {
			t.Errorf("retry %d came %s after the one before, which came %s after its own; want growing waits", i, gap, prev)
		}
	}
	if failed[0].token != "Bearer after" {
		t.Errorf("a renewal sent authorization %q, want the re-read token %q", failed[0].token, "Bearer after")
	}

	meshd.refuseCSRs(codes.OK)
	if _, err := a.WaitForNewCertificate(ctxTimeout(t, 15*time.Second), first.Serial); err != nil {
		t.Fatalf("no certificate after meshd signed again: %v", err)
	}
}

func TestAgentRejectsCertificateFromAnotherCA(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	trusted, other := newCA(t, 0), newCA(t, 0)
	meshd.setCA(other, trusted.RootPEM())
	var logs xdstest.Buffer
	a := startAgent(t, Options{XDSAddress: meshd.addr, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	meshd.waitFor("two answers", func() bool { return len(meshd.signed()) >= 2 })
	if _, err := os.Stat(filepath.Join(a.CertDir(), CertChainFile)); !os.IsNotExist(err) {
		t.Errorf("a certificate that does not verify was written (stat: %v)", err)
	}
	if _, ok := a.Certificate(); ok {
		t.Error("Certificate() reports a certificate that does not verify")
	}
	if !strings.Contains(logs.String(), "does not chain to the trust bundle") {
		t.Errorf("the agent's log does not say why it refused the certificate:\n%s", logs.String())
	}

	// A good one afterwards is accepted.
	meshd.setCA(trusted, nil)
	if err := a.WaitForCertificate(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestBootstrapDrivesGRPCThroughTheAgent feeds the agent's bootstrap to
// gRPC's own xDS resolver: gRPC must accept it and reach the agent's
// socket, and the agent must relay the LDS request of each channel to
// meshd on a stream of its own, under its node, and ask meshd for no
// secret. gRPC-Go opens an xDS stream per dial target; none may knock
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
		for _, r := range meshd.requests {
			if r.req.GetTypeUrl() != resourcev3.ListenerType {
				continue
			}
			if r.req.GetNode() != nil && r.req.GetNode().GetId() != a.NodeID() {
				problems[fmt.Sprintf("relayed request node = %q, want %q", r.req.GetNode().GetId(), a.NodeID())] = true
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
	if sds := meshd.sdsStreams(); len(sds) != 0 {
		t.Errorf("streams %v asked meshd for secrets; the agent gets its certificate by CSR only", sds)
	}
}

func TestRunPropagatesExitStatusAndBootstrap(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	dir := t.TempDir()
	opts := Options{Pod: testPod, Namespace: testNS, IP: testIP, XDSAddress: meshd.addr, CertDir: dir, Log: slog.New(slog.DiscardHandler)}

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
	meshd := newFakeMeshd(t, "")
	meshd.refuseCSRs(codes.Unavailable)
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

func TestNewSecretSetChecksTheKeyPair(t *testing.T) {
	authority := newCA(t, 0)
	issue := func() *ca.Certificate {
		cert, err := authority.Issue(testNS, "product")
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	one, two := issue(), issue()
	if _, err := newSecretSet(one.ChainPEM, []byte(two.KeyPEM), authority.RootPEM()); err == nil || !strings.Contains(err.Error(), "do not form a key pair") {
		t.Errorf("a chain with another certificate's key: err = %v, want a key pair error", err)
	}
	s, err := newSecretSet(one.ChainPEM, []byte(one.KeyPEM), authority.RootPEM())
	if err != nil {
		t.Fatal(err)
	}
	if s.cert.Serial != one.Serial {
		t.Errorf("serial = %s, want %s", s.cert.Serial, one.Serial)
	}
}

// TestRunForwardsSignals: the signals a workload uses (here SIGHUP for a
// reload, then SIGTERM) reach the command, and the agent exits with the
// command's status, not killed by them itself.
func TestRunForwardsSignals(t *testing.T) {
	meshd := newFakeMeshd(t, "")
	dir := t.TempDir()
	opts := Options{Pod: testPod, Namespace: testNS, IP: testIP, XDSAddress: meshd.addr, CertDir: dir, Log: slog.New(slog.DiscardHandler)}

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
	meshd := newFakeMeshd(t, "")
	meshd.refuseCSRs(codes.Unavailable) // the agent waits
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
