package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/minimesh/minimesh/e2e/harness"
	"github.com/minimesh/minimesh/policy"
	"github.com/minimesh/minimesh/translate"
	"github.com/minimesh/minimesh/xds"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// TestEnvoyADS runs meshd on examples/mesh with static xDS tokens and
// talks to it as Envoy sidecars would, over state-of-the-world and delta
// ADS (issue 4, "How it is checked"): the configuration is complete, valid
// and consistent; the workload certificate chains to the root and names
// the workload; an endpoint change arrives as EDS only; a policy change
// arrives promptly; a bad policy keeps the last good configuration; a
// NACKed version is not re-sent in a loop; a restart keeps the root; and
// a token cannot obtain another service account's secrets.
//
// The steps build on each other (each starts from the configuration the
// previous one left), so they run in order inside one subtest per flavour.
func TestEnvoyADS(t *testing.T) {
	t.Parallel()
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testEnvoyADS(t, delta)
		})
	}
}

// Names from examples/mesh and translation's naming rules.
var (
	stockCluster   = translate.OutboundClusterName(8080, translate.FQDN("stock", "default", "cluster.local"))
	productCluster = translate.OutboundClusterName(8080, translate.FQDN("product", "default", "cluster.local"))
	productID      = translate.SpiffeID("cluster.local", "default", "product")
	gatewayID      = translate.SpiffeID("cluster.local", "default", "product-gateway")
)

func testEnvoyADS(t *testing.T, delta bool) {
	m := startADSMesh(t)
	ctx := t.Context()
	nodeID := nodeIDOf(harness.Product)
	nack := &nackVersion{typeURL: xdstest.LDS}
	c := m.client(ctx, harness.Product, productSA, xdstest.Options{Delta: delta, Reject: nack.reject})

	// 1. Complete, valid, consistent, and what the example makes.
	m.waitConfig(ctx, c, "the first configuration", func() bool { return len(c.Resources(xdstest.SDS)) == 2 })
	checkConfig(t, c)
	for typ, names := range map[string][]string{
		xdstest.LDS: {translate.VirtualInboundListenerName, translate.VirtualOutboundListenerName, translate.HTTPListenerName(8080)},
		xdstest.CDS: {stockCluster, productCluster, translate.InboundClusterName(8080), translate.PassthroughCluster},
		xdstest.RDS: {translate.RouteName(8080)},
		xdstest.EDS: {stockCluster, productCluster},
		xdstest.SDS: {translate.SecretDefault, translate.SecretRootCA},
	} {
		for _, n := range names {
			if _, ok := c.Resources(typ)[n]; !ok {
				t.Errorf("%s %q did not arrive; the client holds %v", typ, n, sortedNames(c.Resources(typ)))
			}
		}
	}
	if got, want := endpointAddrs(c.Resources(xdstest.EDS)[stockCluster]), []string{"127.0.0.13:8080"}; !slices.Equal(got, want) {
		t.Errorf("endpoints of %s = %v; want %v (stock-0's pod IP in examples/mesh)", stockCluster, got, want)
	}
	st := m.waitSyncz(ctx, nodeID, "every type SYNCED", allSynced)
	if st.Workload != "default/product-0" || st.Identity == "" {
		t.Errorf("/debug/syncz lists the proxy as workload %q, identity %q; want default/product-0 and the token's identity", st.Workload, st.Identity)
	}

	// meshd's /debug/config_dump shows what the proxy holds, without the key.
	dump, err := m.configDumpState(ctx, nodeID)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []struct {
		name string
		dump map[string]string
		typ  string
	}{{"listeners", dump.listeners, xdstest.LDS}, {"clusters", dump.clusters, xdstest.CDS}} {
		if got, want := slices.Sorted(maps.Keys(kind.dump)), sortedNames(c.Resources(kind.typ)); !slices.Equal(got, want) {
			t.Errorf("/debug/config_dump lists %s %v; the proxy holds %v", kind.name, got, want)
		}
	}
	if key := privateKey(c); len(key) == 0 || bytes.Contains(dump.raw, key) || bytes.Contains(dump.raw, []byte(base64.StdEncoding.EncodeToString(key))) {
		t.Errorf("/debug/config_dump shows the proxy's private key (or the secret has none)")
	}

	// 2. The workload certificate.
	rootCA := checkSecrets(t, c.Resources(xdstest.SDS), m.caDir, productID)
	rootSecret := c.Resources(xdstest.SDS)[translate.SecretRootCA]

	// 3. An endpoint change arrives as EDS only.
	before := typeState(c)
	m.editConfig("stock.yaml", func(s string) string {
		return strings.Replace(s, "podIP: 127.0.0.13\n", "podIP: 127.0.0.113\n", 1)
	})
	m.waitConfig(ctx, c, "stock's new pod IP in EDS", func() bool {
		return slices.Equal(endpointAddrs(c.Resources(xdstest.EDS)[stockCluster]), []string{"127.0.0.113:8080"})
	})
	// Any other type of the same push would be on the wire already; a
	// short grace catches one sent just after the assignment.
	time.Sleep(300 * time.Millisecond)
	if diff := cmp.Diff(before, typeState(c)); diff != "" {
		t.Errorf("an endpoint change reached the proxy as more than EDS (-before +after, per type: version, responses):\n%s", diff)
	}
	checkConfig(t, c)

	// 4. A policy change arrives within the debounce time.
	lds := c.Version(xdstest.LDS)
	chainsBefore := chainNames(c)
	written := time.Now()
	m.writeConfig(harness.FileStrict, harness.PolicyStrict)
	m.waitConfig(ctx, c, "the listeners after a STRICT PeerAuthentication", func() bool { return c.Version(xdstest.LDS) != lds })
	t.Logf("STRICT PeerAuthentication written → new LDS version at the proxy: %s (debounce %s, at most %s)",
		time.Since(written).Round(time.Millisecond), adsDebounceAfter, adsDebounceMax)
	if chainsAfter := chainNames(c); !slices.Contains(chainsBefore, plaintextChain) || slices.Contains(chainsAfter, plaintextChain) {
		t.Errorf("inbound filter chains %v → %v under STRICT; want %q (PERMISSIVE's plaintext chain) to go", chainsBefore, chainsAfter, plaintextChain)
	}
	checkConfig(t, c)

	// 5. A bad policy file keeps the last good configuration.
	before = typeState(c)
	listeners := c.Resources(xdstest.LDS)
	const badFile = "zz-bad-peer-authentication.yaml"
	m.writeConfig(badFile, badPeerAuthentication)
	problem := m.waitProblem(ctx, badFile)
	t.Logf("meshd reports: %s", problem)
	if problem.Name != "product-plaintext" || !strings.Contains(problem.Error(), "DISABLED") {
		t.Errorf("the problem %q does not name the policy product-plaintext and its bad mode DISABLED", problem)
	}
	// An endpoint change written after the bad file is a marker: once its
	// assignment arrives, meshd has pushed from a model that holds the bad
	// file.
	m.editConfig("stock.yaml", func(s string) string {
		return strings.Replace(s, "podIP: 127.0.0.113\n", "podIP: 127.0.0.114\n", 1)
	})
	m.waitConfig(ctx, c, "the marker endpoint change after the bad file", func() bool {
		return slices.Equal(endpointAddrs(c.Resources(xdstest.EDS)[stockCluster]), []string{"127.0.0.114:8080"})
	})
	time.Sleep(300 * time.Millisecond)
	if diff := cmp.Diff(before, typeState(c)); diff != "" {
		t.Errorf("a bad policy file changed the proxy's configuration (-before +after, per type: version, responses):\n%s", diff)
	}
	if diff := cmp.Diff(listeners, c.Resources(xdstest.LDS), protocmp.Transform()); diff != "" {
		t.Errorf("the listeners changed after a bad policy file (-before +after):\n%s", diff)
	}

	// 6. A NACKed version is not re-sent in a loop.
	responses, nacks := c.Responses(xdstest.LDS), c.Nacks(xdstest.LDS)
	lds = c.Version(xdstest.LDS)
	nack.arm()
	if err := os.Remove(filepath.Join(m.configDir, harness.FileStrict)); err != nil {
		t.Fatal(err)
	}
	m.waitConfig(ctx, c, "a NACK of the listeners after STRICT is removed", func() bool { return c.Nacks(xdstest.LDS) > nacks })
	nackedAt := c.Responses(xdstest.LDS)
	time.Sleep(time.Second)
	resent := c.Responses(xdstest.LDS) - nackedAt
	t.Logf("LDS version %s NACKed; LDS responses in the second after the NACK: %d", nack.rejected(), resent)
	if resent > 1 {
		t.Errorf("meshd sent %d LDS responses in the second after the proxy NACKed version %s; want at most 1 (no resend loop)", resent, nack.rejected())
	}
	if got := c.Responses(xdstest.LDS) - responses; got < 1 {
		t.Errorf("no LDS response after the policy change")
	}
	if c.Version(xdstest.LDS) != lds {
		t.Errorf("the client accepted LDS version %s although it NACKed %s", c.Version(xdstest.LDS), nack.rejected())
	}
	st = m.waitSyncz(ctx, nodeID, "lds NACKED with the proxy's error", func(p xds.ProxyStatus) bool {
		ts := p.Types["lds"]
		return ts.State == "NACKED" && strings.Contains(ts.NackError, nackReason)
	})
	if got := st.Types["lds"].Nacked; got != nack.rejected() {
		t.Errorf("/debug/syncz shows lds version %q NACKED; the proxy NACKed %q", got, nack.rejected())
	}

	// 7. A restart with the same --ca-dir keeps the root.
	rootFile, err := os.ReadFile(filepath.Join(m.caDir, "root-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	m.meshd.stop()
	select {
	case <-c.Done():
	case <-time.After(adsPushTimeout):
		t.Fatalf("the ADS stream is still open %s after meshd stopped", adsPushTimeout)
	}
	m.startMeshd()
	// A new connection, as Envoy reconnects: the old one may be in back-off.
	m.dial()
	rootFile2, err := os.ReadFile(filepath.Join(m.caDir, "root-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rootFile, rootFile2) {
		t.Errorf("root-cert.pem changed across a restart with the same --ca-dir")
	}
	c2 := m.client(ctx, harness.Product, productSA, xdstest.Options{Delta: delta})
	m.waitConfig(ctx, c2, "the configuration after meshd restarted", func() bool { return len(c2.Resources(xdstest.SDS)) == 2 })
	checkConfig(t, c2)
	if rootCA2 := checkSecrets(t, c2.Resources(xdstest.SDS), m.caDir, productID); !bytes.Equal(rootCA, rootCA2) {
		t.Errorf("ROOTCA changed across a restart with the same --ca-dir")
	}
	if diff := cmp.Diff(rootSecret, c2.Resources(xdstest.SDS)[translate.SecretRootCA], protocmp.Transform()); diff != "" {
		t.Errorf("secret ROOTCA after the restart differs (-before +after):\n%s", diff)
	}
	if got, want := endpointAddrs(c2.Resources(xdstest.EDS)[stockCluster]), []string{"127.0.0.114:8080"}; !slices.Equal(got, want) {
		t.Errorf("after the restart, endpoints of %s = %v; want %v (the config dir's current pod IP)", stockCluster, got, want)
	}

	// 8. A token for one service account cannot obtain another's secrets.
	refusedCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	refused := m.client(refusedCtx, harness.Gateway, productSA, xdstest.Options{Delta: delta})
	select {
	case <-refused.Done():
	case <-refusedCtx.Done():
	}
	if code := status.Code(refused.Err()); code != codes.PermissionDenied {
		t.Errorf("a stream as product-gateway-0 with default/product's token ended with %v (%v); want PermissionDenied", code, refused.Err())
	}
	if got := refused.Resources(xdstest.SDS); len(got) > 0 {
		t.Errorf("a refused stream received secrets %v", sortedNames(got))
	}
	gw := m.client(ctx, harness.Gateway, gatewaySA, xdstest.Options{Delta: delta})
	m.waitConfig(ctx, gw, "product-gateway-0's configuration with its own token", func() bool { return len(gw.Resources(xdstest.SDS)) == 2 })
	checkSecrets(t, gw.Resources(xdstest.SDS), m.caDir, gatewayID)
}

// privateKey is the key of the proxy's secret "default".
func privateKey(c *xdstest.Client) []byte {
	s, _ := c.Resources(xdstest.SDS)[translate.SecretDefault].(*tlsv3.Secret)
	return s.GetTlsCertificate().GetPrivateKey().GetInlineBytes()
}

// plaintextChain is the inbound chain PERMISSIVE adds for product's port.
var plaintextChain = translate.InboundClusterName(8080) + "plaintext"

// badPeerAuthentication parses but is invalid (DISABLED is not a mode); if
// meshd read it leniently, product would accept plaintext.
const badPeerAuthentication = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: product-plaintext
  namespace: default
spec:
  selector:
    matchLabels:
      app: product
  mtls:
    mode: DISABLED
`

// typeState is, per type other than EDS and SDS, the accepted version and
// the number of responses received: what an endpoint change must leave
// alone.
func typeState(c *xdstest.Client) map[string]string {
	out := map[string]string{}
	for _, typ := range []string{xdstest.LDS, xdstest.CDS, xdstest.RDS} {
		out[typ] = fmt.Sprintf("version %s, %d responses", c.Version(typ), c.Responses(typ))
	}
	return out
}

// chainNames are the filter-chain names of the inbound listener.
func chainNames(c *xdstest.Client) []string {
	l, _ := c.Resources(xdstest.LDS)[translate.VirtualInboundListenerName].(*listenerv3.Listener)
	var out []string
	for _, fc := range l.GetFilterChains() {
		out = append(out, fc.GetName())
	}
	return out
}

func sortedNames(m map[string]proto.Message) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// waitProblem waits until /debug/model reports an error in file.
func (m *adsMesh) waitProblem(ctx context.Context, file string) policy.Problem {
	m.t.Helper()
	deadline := time.Now().Add(adsPushTimeout)
	for {
		problems, err := m.modelProblems(ctx)
		for _, p := range problems {
			if filepath.Base(p.Location.File) == file && p.Severity == policy.SeverityError {
				return p
			}
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("/debug/model does not report %s within %s (error: %v); it reports %q", file, adsPushTimeout, err, problems)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nackReason starts the error detail of a NACK the test asks for.
const nackReason = "e2e: rejecting this version on purpose"

// nackVersion NACKs one version of one type, chosen when armed: the first
// version of typeURL that arrives after arm. It keeps rejecting that
// version, as Envoy would if it were sent again.
type nackVersion struct {
	typeURL string

	mu      sync.Mutex
	armed   bool
	version string
}

func (n *nackVersion) arm() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.armed = true
}

func (n *nackVersion) rejected() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.version
}

func (n *nackVersion) reject(typeURL, version string, _ map[string]proto.Message) error {
	if typeURL != n.typeURL {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.armed && n.version == "" {
		n.version = version
	}
	if n.version != "" && version == n.version {
		return fmt.Errorf("%s: version %s", nackReason, version)
	}
	return nil
}
