package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/minimesh/minimesh/e2e/harness"
	"github.com/minimesh/minimesh/policy"
	"github.com/minimesh/minimesh/translate"
	"github.com/minimesh/minimesh/xds"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// adsMesh is meshd alone on a copy of examples/mesh, with static xDS
// tokens, for tests that speak xDS to it directly as Envoy sidecars would
// (no workloads run). The example's pod IPs stay as written: nothing binds
// them, so two adsMeshes on one machine do not collide.
type adsMesh struct {
	t          *testing.T
	dir        string
	configDir  string
	caDir      string
	tokenFile  string
	xdsAddr    string
	monitoring string
	// tokens maps "namespace/serviceaccount" to its bearer token.
	tokens map[string]string
	meshd  *kproc
	starts int
	conn   *grpc.ClientConn
}

// The identities the token file knows.
const (
	productSA = "default/product"
	gatewaySA = "default/product-gateway"
)

// ADS test timings: meshd's debounce, and how long a push may take before
// a test gives up on it (generous: this machine is shared).
const (
	adsDebounceAfter = 100 * time.Millisecond
	adsDebounceMax   = time.Second
	adsPushTimeout   = 5 * time.Second
)

// startADSMesh copies examples/mesh, writes a token file for
// default/product and default/product-gateway and starts meshd with
// --xds-auth=static. meshd stops when t ends; its work directory is kept,
// and its path logged, if t failed.
func startADSMesh(t *testing.T) *adsMesh {
	t.Helper()
	dir, err := os.MkdirTemp("", "minimesh-e2e-ads-")
	if err != nil {
		t.Fatalf("creating a work directory: %v", err)
	}
	// Registered first, so it runs after meshd (registered later) stopped.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("work directory kept for inspection: %s (meshd logs in %s)", dir, filepath.Join(dir, "logs"))
			return
		}
		_ = os.RemoveAll(dir)
	})
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	m := &adsMesh{
		t:          t,
		dir:        dir,
		configDir:  filepath.Join(dir, "config"),
		caDir:      filepath.Join(dir, "ca"),
		tokenFile:  filepath.Join(dir, "xds-tokens.csv"),
		xdsAddr:    freeAddrOn(t, "127.0.0.1"),
		monitoring: freeAddrOn(t, "127.0.0.1"),
		tokens:     map[string]string{},
	}
	if err := os.CopyFS(m.configDir, os.DirFS(filepath.Join(root, "examples", "mesh"))); err != nil {
		t.Fatalf("copying examples/mesh: %v", err)
	}
	var lines strings.Builder
	for _, id := range []string{productSA, gatewaySA} {
		m.tokens[id] = randomToken(t)
		ns, sa, _ := strings.Cut(id, "/")
		fmt.Fprintf(&lines, "%s,%s,%s\n", m.tokens[id], ns, sa)
	}
	if err := os.WriteFile(m.tokenFile, []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	m.startMeshd()
	m.dial()
	t.Cleanup(func() { _ = m.conn.Close() })
	return m
}

// dial replaces the gRPC connection to meshd with a new one.
func (m *adsMesh) dial() {
	m.t.Helper()
	conn, err := grpc.NewClient(m.xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		m.t.Fatalf("dialling meshd: %v", err)
	}
	if m.conn != nil {
		_ = m.conn.Close()
	}
	m.conn = conn
}

func randomToken(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// startMeshd starts meshd (again) on the same ports, config and CA
// directory, and waits for /readyz.
func (m *adsMesh) startMeshd() {
	t := m.t
	t.Helper()
	m.starts++
	name := "meshd"
	if m.starts > 1 {
		name += "-" + strconv.Itoa(m.starts) // one log per run
	}
	m.meshd = startProc(t, t, m.dir, name, "", bins.Meshd, "serve",
		"--config-dir", m.configDir,
		"--xds-auth", "static",
		"--xds-token-file", m.tokenFile,
		"--ca-dir", m.caDir,
		"--workload-cert-ttl", "1h",
		"--xds-addr", m.xdsAddr,
		"--monitoring-addr", m.monitoring,
		"--debounce-after", adsDebounceAfter.String(),
		"--debounce-max", adsDebounceMax.String(),
	)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := httpGet("http://" + m.monitoring + "/readyz"); code == http.StatusOK {
			return
		}
		if m.meshd.exited() || time.Now().After(deadline) {
			t.Fatalf("meshd did not become ready within 30s:\n%s", m.meshd.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client opens an Envoy-like ADS stream as pod w with the token of
// identity ("" sends none); opts may set Delta, Reject and the like.
func (m *adsMesh) client(ctx context.Context, w harness.Workload, identity string, opts xdstest.Options) *xdstest.Client {
	opts.NodeID = nodeIDOf(w)
	opts.Token = m.tokens[identity]
	return xdstest.Start(ctx, m.conn, opts)
}

// nodeIDOf is the node ID an Istio sidecar of w sends.
func nodeIDOf(w harness.Workload) string {
	return auth.SidecarNodeID(w.IP, w.Pod, w.Namespace, "cluster.local").String()
}

// waitConfig waits until c holds a complete configuration that satisfies
// ok (nil: any), or fails the test with what is missing.
func (m *adsMesh) waitConfig(ctx context.Context, c *xdstest.Client, what string, ok func() bool) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, adsPushTimeout)
	defer cancel()
	err := c.WaitFor(ctx, func() bool { return c.Complete() == nil && (ok == nil || ok()) })
	if err != nil {
		m.t.Fatalf("%s: %v; the client holds: %v (meshd log:\n%s)", what, err, c.Complete(), m.meshd.logTail())
	}
}

// editConfig rewrites one manifest of the config dir atomically (meshd
// never reads half a file); the edit must change it.
func (m *adsMesh) editConfig(name string, edit func(string) string) {
	m.t.Helper()
	path := filepath.Join(m.configDir, name)
	old, err := os.ReadFile(path)
	if err != nil {
		m.t.Fatal(err)
	}
	updated := edit(string(old))
	if updated == string(old) {
		m.t.Fatalf("the edit of %s changes nothing: the test's expectation of examples/mesh is out of date", name)
	}
	m.writeConfig(name, updated)
}

// writeConfig writes a manifest into the config dir atomically.
func (m *adsMesh) writeConfig(name, content string) {
	m.t.Helper()
	tmp := filepath.Join(m.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.configDir, name)); err != nil {
		m.t.Fatal(err)
	}
}

// debugJSON decodes one of meshd's debug endpoints into v.
func (m *adsMesh) debugJSON(ctx context.Context, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.monitoring+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("asking meshd for %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading meshd's %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("meshd answered %s for %s: %s", resp.Status, path, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("meshd's %s is not the expected JSON: %w", path, err)
	}
	return nil
}

// proxyStatus is /debug/syncz's row for nodeID, if meshd lists it.
func (m *adsMesh) proxyStatus(ctx context.Context, nodeID string) (xds.ProxyStatus, bool, error) {
	var s xds.SyncStatus
	if err := m.debugJSON(ctx, "/debug/syncz", &s); err != nil {
		return xds.ProxyStatus{}, false, err
	}
	for _, p := range s.Proxies {
		if p.NodeID == nodeID {
			return p, true, nil
		}
	}
	return xds.ProxyStatus{}, false, nil
}

// waitSyncz polls /debug/syncz until ok accepts nodeID's row, or fails the
// test showing the last row.
func (m *adsMesh) waitSyncz(ctx context.Context, nodeID, what string, ok func(xds.ProxyStatus) bool) xds.ProxyStatus {
	m.t.Helper()
	deadline := time.Now().Add(adsPushTimeout)
	for {
		p, found, err := m.proxyStatus(ctx, nodeID)
		if err == nil && found && ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("/debug/syncz does not show %s for %s within %s (listed: %t, error: %v): %+v", what, nodeID, adsPushTimeout, found, err, p.Types)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// modelProblems are /debug/model's problems.
func (m *adsMesh) modelProblems(ctx context.Context) (policy.Problems, error) {
	var snap struct {
		Problems policy.Problems `json:"problems"`
	}
	err := m.debugJSON(ctx, "/debug/model", &snap)
	return snap.Problems, err
}

// allSynced reports whether every type the proxy asked for is SYNCED.
func allSynced(p xds.ProxyStatus) bool {
	if len(p.Types) == 0 {
		return false
	}
	for _, ts := range p.Types {
		if ts.State != "SYNCED" {
			return false
		}
	}
	return true
}

// checkConfig checks what c holds as Envoy would need it: every
// referenced endpoint assignment, route configuration and secret arrived
// (Complete); every resource passes ValidateAll, including the configs
// packed in Anys (translate's deep validation); the resources join up
// (translate.CheckReferences and go-control-plane's Consistent).
func checkConfig(t *testing.T, c *xdstest.Client) {
	t.Helper()
	if err := c.Complete(); err != nil {
		t.Errorf("the configuration is not complete: %v", err)
	}
	r := received(c)
	if err := r.Validate(); err != nil {
		t.Errorf("the configuration received does not validate: %v", err)
	}
	if err := r.CheckReferences(); err != nil {
		t.Errorf("the configuration received does not join up: %v", err)
	}
	byType := map[string][]types.Resource{}
	for _, typ := range []string{xdstest.CDS, xdstest.EDS, xdstest.LDS, xdstest.RDS, xdstest.SDS} {
		held := c.Resources(typ)
		for _, name := range slices.Sorted(maps.Keys(held)) {
			res := held[name]
			byType[typ] = append(byType[typ], res)
			if v, ok := res.(interface{ ValidateAll() error }); ok {
				if err := v.ValidateAll(); err != nil {
					t.Errorf("%s %q is invalid: %v", typ, name, err)
				}
			}
		}
	}
	snap, err := cachev3.NewSnapshot("received", byType)
	if err != nil {
		t.Errorf("the configuration received does not form a snapshot: %v", err)
	} else if err := snap.Consistent(); err != nil {
		t.Errorf("the configuration received is not consistent: %v", err)
	}
}

// received is what c holds, as translation's output type, so that
// translation's own checks can judge it.
func received(c *xdstest.Client) *translate.Resources {
	r := &translate.Resources{}
	r.Listeners = sortedAs[*listenerv3.Listener](c.Resources(xdstest.LDS))
	r.Routes = sortedAs[*routev3.RouteConfiguration](c.Resources(xdstest.RDS))
	r.Clusters = sortedAs[*clusterv3.Cluster](c.Resources(xdstest.CDS))
	r.Endpoints = sortedAs[*endpointv3.ClusterLoadAssignment](c.Resources(xdstest.EDS))
	return r
}

// sortedAs lists resources by name as their concrete type; one of
// another type (which xdstest would not store under this type) is left
// out, and then the reference checks report it missing.
func sortedAs[T proto.Message](res map[string]proto.Message) []T {
	var out []T
	for _, name := range slices.Sorted(maps.Keys(res)) {
		if r, ok := res[name].(T); ok {
			out = append(out, r)
		}
	}
	return out
}

// endpointAddrs are the ip:port addresses of an endpoint assignment.
func endpointAddrs(m proto.Message) []string {
	cla, _ := m.(*endpointv3.ClusterLoadAssignment)
	var out []string
	for _, le := range cla.GetEndpoints() {
		for _, lb := range le.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
		}
	}
	slices.Sort(out)
	return out
}

// checkSecrets checks a proxy's SDS secrets: "default" is an ECDSA P-256
// certificate for wantID whose chain verifies against ROOTCA and against
// the root in caDir, and whose key matches it. It returns ROOTCA's PEM.
func checkSecrets(t *testing.T, secrets map[string]proto.Message, caDir, wantID string) []byte {
	t.Helper()
	def, _ := secrets[translate.SecretDefault].(*tlsv3.Secret)
	rootca, _ := secrets[translate.SecretRootCA].(*tlsv3.Secret)
	if def == nil || rootca == nil {
		t.Fatalf("secrets %q and %q must both arrive; got %v", translate.SecretDefault, translate.SecretRootCA, slices.Sorted(maps.Keys(secrets)))
	}
	chainPEM := def.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
	keyPEM := def.GetTlsCertificate().GetPrivateKey().GetInlineBytes()
	bundlePEM := rootca.GetValidationContext().GetTrustedCa().GetInlineBytes()

	chain, err := parseCerts(chainPEM)
	if err != nil {
		t.Fatalf("secret default's certificate chain: %v", err)
	}
	leaf := chain[0]
	if uris := fmt.Sprint(leaf.URIs); len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
		t.Errorf("the workload certificate carries URI SANs %s; want exactly %s", uris, wantID)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("the workload key is %T; want ECDSA P-256", leaf.PublicKey)
	}
	// X509KeyPair refuses a key that does not match the leaf's public key.
	if _, err := tls.X509KeyPair(chainPEM, keyPEM); err != nil {
		t.Errorf("secret default's private key does not match its certificate: %v", err)
	}

	fileRoot, err := os.ReadFile(filepath.Join(caDir, "root-cert.pem"))
	if err != nil {
		t.Fatalf("reading meshd's root: %v", err)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	for _, roots := range []struct {
		name string
		pem  []byte
	}{{"ROOTCA", bundlePEM}, {"--ca-dir's root-cert.pem", fileRoot}} {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(roots.pem) {
			t.Errorf("%s holds no certificate", roots.name)
			continue
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			t.Errorf("the workload certificate does not verify against %s: %v", roots.name, err)
		}
	}
	// ROOTCA may bundle more roots (a plug-in CA's chain), but it must
	// hold the one on disk.
	fileCerts, err := parseCerts(fileRoot)
	if err != nil {
		t.Fatalf("meshd's root-cert.pem: %v", err)
	}
	bundle, err := parseCerts(bundlePEM)
	if err != nil {
		t.Fatalf("secret ROOTCA: %v", err)
	}
	if !slices.ContainsFunc(bundle, fileCerts[0].Equal) {
		t.Errorf("ROOTCA does not hold the root certificate of %s", filepath.Join(caDir, "root-cert.pem"))
	}
	if bytes.Contains(chainPEM, []byte("PRIVATE KEY")) {
		t.Errorf("secret default's certificate chain contains a private key")
	}
	return bundlePEM
}
