package xds

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/translate"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// modes runs a test over both ADS variants.
func modes(t *testing.T, f func(t *testing.T, delta bool)) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) { f(t, delta) })
	}
}

func TestFullConfigArrives(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		h.update(mesh(t, shop...))
		if !h.srv.Ready() {
			t.Fatal("server not ready after the first push")
		}
		node := nodeID("product-gateway-0", "default", "127.0.0.4")
		c := h.client("product-gateway-0", "default", "127.0.0.4", delta, nil)
		h.waitComplete(c)

		clusters := c.Resources(xdstest.CDS)
		for _, want := range []string{"outbound|8080||product.default.svc.cluster.local", "outbound|8080||stock.default.svc.cluster.local"} {
			if _, ok := clusters[want]; !ok {
				t.Errorf("cluster %q missing; got %v", want, keys(clusters))
			}
		}
		listeners := c.Resources(xdstest.LDS)
		for _, want := range []string{"virtualInbound", "virtualOutbound"} {
			if _, ok := listeners[want]; !ok {
				t.Errorf("listener %q missing; got %v", want, keys(listeners))
			}
		}
		if len(c.Resources(xdstest.EDS)) == 0 || len(c.Resources(xdstest.RDS)) == 0 {
			t.Errorf("no endpoints or routes: eds %v rds %v", keys(c.Resources(xdstest.EDS)), keys(c.Resources(xdstest.RDS)))
		}
		if c.Nacks(xdstest.CDS)+c.Nacks(xdstest.LDS)+c.Nacks(xdstest.EDS)+c.Nacks(xdstest.RDS)+c.Nacks(xdstest.SDS) != 0 {
			t.Error("the client rejected part of a full configuration")
		}

		// The certificate chains to the CA's root and names the pod's
		// service account.
		spiffe := leafSPIFFE(t, c, h)
		if want := "spiffe://cluster.local/ns/default/sa/product-gateway"; spiffe != want {
			t.Errorf("certificate SPIFFE ID = %q, want %q", spiffe, want)
		}

		h.eventually("every type SYNCED in syncz", func() bool {
			ps, ok := h.proxyStatus(node)
			if !ok || len(ps.Types) != 5 {
				return false
			}
			for _, ts := range ps.Types {
				if ts.State != StateSynced {
					return false
				}
			}
			return true
		})
		ps, _ := h.proxyStatus(node)
		if ps.Workload != "default/product-gateway-0" || ps.Waiting || ps.Delta != delta || ps.Flavor != "envoy" {
			t.Errorf("syncz entry = %+v", ps)
		}
		if ps.Certificate == nil || ps.Certificate.SPIFFEID != spiffe {
			t.Errorf("syncz certificate = %+v", ps.Certificate)
		}
		if got := value(h.srv.m.connected); got != 1 {
			t.Errorf("connected proxies = %v, want 1", got)
		}
		if got := value(h.srv.m.certsIssued); got != 1 {
			t.Errorf("certificates issued = %v, want 1", got)
		}
	})
}

// leafSPIFFE verifies the served certificate against the served trust
// bundle and returns its SPIFFE ID.
func leafSPIFFE(t *testing.T, c *xdstest.Client, h *harness) string {
	t.Helper()
	secrets := c.Resources(xdstest.SDS)
	def, _ := secrets[SecretDefault].(*tlsv3.Secret)
	root, _ := secrets[SecretRootCA].(*tlsv3.Secret)
	if def == nil || root == nil {
		t.Fatalf("secrets = %v, want default and ROOTCA", keys(secrets))
	}
	if string(root.GetValidationContext().GetTrustedCa().GetInlineBytes()) != string(h.ca.RootPEM()) {
		t.Error("ROOTCA is not the CA's root")
	}
	if len(def.GetTlsCertificate().GetPrivateKey().GetInlineBytes()) == 0 {
		t.Error("default secret has no private key")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root.GetValidationContext().GetTrustedCa().GetInlineBytes())
	var chain []*x509.Certificate
	rest := def.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	if len(chain) == 0 {
		t.Fatal("default secret has no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: h.clock.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("workload certificate does not chain to ROOTCA: %v", err)
	}
	if len(chain[0].URIs) != 1 {
		t.Fatalf("certificate URI SANs = %v, want one SPIFFE ID", chain[0].URIs)
	}
	return chain[0].URIs[0].String()
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// versions returns the client's accepted versions and response counts.
func snapshotOf(c *xdstest.Client) map[string]string {
	out := map[string]string{}
	for _, t := range []string{xdstest.CDS, xdstest.LDS, xdstest.RDS, xdstest.EDS, xdstest.SDS} {
		out[shortType(t)] = fmt.Sprintf("%s/%d", c.Version(t), c.Responses(t))
	}
	return out
}

func TestEndpointChangePushesOnlyEDS(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		h.update(mesh(t, shop...))
		c := h.client("product-gateway-0", "default", "127.0.0.4", delta, nil)
		h.waitComplete(c)
		before := snapshotOf(c)
		eds := c.Version(xdstest.EDS)

		// A second product replica: same service account, new endpoint.
		h.update(mesh(t, shopWith(pod("product-1", "product", "product", "127.0.0.5"))...))
		h.waitFor(c, "the new endpoint", func() bool { return c.Version(xdstest.EDS) != eds })
		if !strings.Contains(fmt.Sprint(c.Resources(xdstest.EDS)), "127.0.0.5") {
			t.Error("the new endpoint 127.0.0.5 is not in the ClusterLoadAssignments")
		}
		after := snapshotOf(c)
		for _, typ := range []string{typeCDS, typeLDS, typeRDS, typeSDS} {
			if before[typ] != after[typ] {
				t.Errorf("%s changed on an endpoint-only change: %s → %s", typ, before[typ], after[typ])
			}
		}
		// The server never even built a new version of the other types.
		g := h.srv.SyncStatus().Groups
		if len(g) != 1 {
			t.Fatalf("groups = %+v, want the gateway's only", g)
		}
		if g[0].Versions[typeCDS] != c.Version(xdstest.CDS) || g[0].Versions[typeLDS] != c.Version(xdstest.LDS) {
			t.Errorf("group versions %v differ from what the client holds", g[0].Versions)
		}
		// The change's convergence was measured when the proxy ACKed it.
		h.eventually("an EDS convergence sample", func() bool {
			return histogramCount(h.srv.m.convergence.WithLabelValues(typeEDS)) >= 1
		})
	})
}

func TestNackedVersionIsNotResent(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		h.update(mesh(t, shop...))
		const rejected = "outbound|8080||reviews.default.svc.cluster.local"
		c := h.client("product-gateway-0", "default", "127.0.0.4", delta, func(o *xdstest.Options) {
			o.Reject = func(typeURL, _ string, res map[string]proto.Message) error {
				if _, ok := res[rejected]; ok && typeURL == xdstest.CDS {
					return errors.New("cluster reviews: simulated rejection")
				}
				return nil
			}
		})
		h.waitComplete(c)
		node := nodeID("product-gateway-0", "default", "127.0.0.4")
		cdsBefore := c.Responses(xdstest.CDS)
		accepted := c.Version(xdstest.CDS)

		h.update(mesh(t, shopWith(service("reviews", 14), pod("reviews-0", "reviews", "reviews", "127.0.0.6"))...))
		h.waitFor(c, "the NACK", func() bool { return c.Nacks(xdstest.CDS) >= 1 })
		h.eventually("the NACK in syncz", func() bool {
			ps, _ := h.proxyStatus(node)
			return ps.Types[typeCDS].State == StateNacked
		})
		ps, _ := h.proxyStatus(node)
		if !strings.Contains(ps.Types[typeCDS].NackError, "simulated rejection") || ps.Types[typeCDS].Acked != accepted {
			t.Errorf("syncz cds = %+v, want the NACK's error and the earlier version still ACKed", ps.Types[typeCDS])
		}

		// Another change that touches only endpoints goes through a full
		// debounce and push. A NACK loop would have re-sent the rejected
		// clusters many times over by then.
		eds := c.Version(xdstest.EDS)
		h.update(mesh(t, shopWith(service("reviews", 14), pod("reviews-0", "reviews", "reviews", "127.0.0.6"), pod("stock-1", "stock", "stock", "127.0.0.7"))...))
		h.waitFor(c, "the endpoint change", func() bool { return c.Version(xdstest.EDS) != eds })
		if got := c.Nacks(xdstest.CDS); got != 1 {
			t.Errorf("the client NACKed %d times; the rejected version was re-sent", got)
		}
		if got := c.Responses(xdstest.CDS); got != cdsBefore+1 {
			t.Errorf("CDS responses after the NACK = %d, want exactly %d (the rejected version once)", got, cdsBefore+1)
		}
		if c.Version(xdstest.CDS) != accepted {
			t.Error("the client's accepted clusters changed although it rejected the update")
		}
		if got := value(h.srv.m.nacks.WithLabelValues(typeCDS)); got != 1 {
			t.Errorf("nacks_total{type=cds} = %v, want 1", got)
		}
		if got := strings.Count(h.logs.String(), "proxy rejected configuration"); got != 1 {
			t.Errorf("NACK logged %d times, want once", got)
		}

		// A change that fixes the problem is sent and accepted. Versions
		// are content hashes, so going back to the old clusters means
		// going back to the version the proxy already accepted.
		h.update(mesh(t, shopWith(pod("stock-1", "stock", "stock", "127.0.0.7"))...))
		h.waitFor(c, "the next cluster response", func() bool { return c.Responses(xdstest.CDS) == cdsBefore+2 })
		if c.Nacks(xdstest.CDS) != 1 || c.Version(xdstest.CDS) != accepted {
			t.Errorf("after the fix: nacks %d, version %q; want 1 and %q", c.Nacks(xdstest.CDS), c.Version(xdstest.CDS), accepted)
		}
		h.eventually("cds SYNCED again", func() bool {
			ps, _ := h.proxyStatus(node)
			return ps.Types[typeCDS].State == StateSynced
		})
	})
}

func TestWaitingPodGetsConfigWhenItAppears(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		h.update(mesh(t, shop...))
		node := nodeID("reviews-0", "default", "127.0.0.6")
		c := h.client("reviews-0", "default", "127.0.0.6", delta, nil)
		h.eventually("the proxy listed as waiting", func() bool {
			ps, ok := h.proxyStatus(node)
			return ok && ps.Waiting && ps.Workload == ""
		})
		if ps, _ := h.proxyStatus(node); ps.WaitReason != "pod default/reviews-0 not found in the mesh" {
			t.Errorf("a waiting proxy's reason is %q; want it to name the pod it waits for", ps.WaitReason)
		}
		if n := c.Responses(xdstest.CDS) + c.Responses(xdstest.LDS); n != 0 {
			t.Fatalf("a proxy of an unknown pod got %d responses", n)
		}
		select {
		case <-c.Done():
			t.Fatalf("the stream of a waiting proxy ended: %v", c.Err())
		default:
		}

		h.update(mesh(t, shopWith(service("reviews", 14), pod("reviews-0", "reviews", "reviews", "127.0.0.6"))...))
		h.waitComplete(c)
		if got, want := leafSPIFFE(t, c, h), "spiffe://cluster.local/ns/default/sa/reviews"; got != want {
			t.Errorf("SPIFFE ID = %q, want %q", got, want)
		}
		ps, _ := h.proxyStatus(node)
		if ps.Waiting || ps.WaitReason != "" || ps.Workload != "default/reviews-0" {
			t.Errorf("syncz entry after the pod appeared = %+v", ps)
		}
	})
}

func TestBadNodeIDIsRefused(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		h.update(mesh(t, shop...))
		c := h.client("x", "y", "z", delta, func(o *xdstest.Options) { o.NodeID = "not-a-node-id" })
		h.waitFor(c, "the stream to end", func() bool { return c.Err() != nil })
		if got := status.Code(errors.Unwrap(c.Err())); got != codes.InvalidArgument && status.Code(c.Err()) != codes.InvalidArgument {
			t.Errorf("stream ended with %v, want InvalidArgument", c.Err())
		}
		if !strings.Contains(c.Err().Error(), "node ID") {
			t.Errorf("error %q does not say what is wrong", c.Err())
		}
		if got := value(h.srv.m.rejected.WithLabelValues("node_id")); got != 1 {
			t.Errorf("rejected_streams_total{reason=node_id} = %v, want 1", got)
		}
	})
}

// The node ID's DNS domain is its namespace's, in the mesh's cluster
// domain: a node ID naming another namespace or cluster domain is refused
// with what meshd expected.
func TestNodeIDDomainIsChecked(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Translate.ClusterDomain = "example.org" })
	h.update(mesh(t, shop...))
	for _, tc := range []struct{ id, want string }{
		{"sidecar~127.0.0.2~product-0.default~default.svc.cluster.local", "default.svc.example.org"},
		{"sidecar~127.0.0.2~product-0.default~test.svc.example.org", "default.svc.<cluster domain>"},
	} {
		c := h.client("x", "y", "z", false, func(o *xdstest.Options) { o.NodeID = tc.id })
		h.waitFor(c, "the stream to end", func() bool { return c.Err() != nil })
		if got := status.Code(errors.Unwrap(c.Err())); got != codes.InvalidArgument && status.Code(c.Err()) != codes.InvalidArgument {
			t.Errorf("%s: stream ended with %v, want InvalidArgument", tc.id, c.Err())
		}
		if !strings.Contains(c.Err().Error(), tc.want) {
			t.Errorf("%s: error %q does not say it wants %s", tc.id, c.Err(), tc.want)
		}
	}
	ok := h.client("product-0", "default", "127.0.0.2", false, func(o *xdstest.Options) {
		o.NodeID = "sidecar~127.0.0.2~product-0.default~default.svc.example.org"
	})
	h.waitComplete(ok)
}

func TestTokenOnlyObtainsItsOwnSecrets(t *testing.T) {
	tokens, err := auth.ParseStaticTokens(strings.NewReader("gw-token,default,product-gateway\n"), "tokens")
	if err != nil {
		t.Fatal(err)
	}
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, func(o *Options) { o.Authenticator = tokens })
		h.update(mesh(t, shop...))

		// Its own pod: served, certificate for its own service account.
		own := h.client("product-gateway-0", "default", "127.0.0.4", delta, func(o *xdstest.Options) { o.Token = "gw-token" })
		h.waitComplete(own)
		if got, want := leafSPIFFE(t, own, h), "spiffe://cluster.local/ns/default/sa/product-gateway"; got != want {
			t.Errorf("SPIFFE ID = %q, want %q", got, want)
		}

		tests := []struct {
			name            string
			pod, ns, ip     string
			token           string
			code            codes.Code
			metricReason    string
			wantErrContains string
		}{
			{"another service account's pod", "stock-0", "default", "127.0.0.3", "gw-token", codes.PermissionDenied, "permission_denied", "stock"},
			{"another namespace", "product-gateway-0", "test", "127.0.0.4", "gw-token", codes.PermissionDenied, "permission_denied", "namespace"},
			{"no token", "product-gateway-0", "default", "127.0.0.4", "", codes.Unauthenticated, "unauthenticated", "authorization"},
			{"unknown token", "product-gateway-0", "default", "127.0.0.4", "forged", codes.Unauthenticated, "unauthenticated", ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := value(h.srv.m.rejected.WithLabelValues(tt.metricReason))
				c := h.client(tt.pod, tt.ns, tt.ip, delta, func(o *xdstest.Options) { o.Token = tt.token })
				h.waitFor(c, "the stream to end", func() bool { return c.Err() != nil })
				if got := status.Code(c.Err()); got != tt.code {
					t.Errorf("stream ended with %v, want %v", c.Err(), tt.code)
				}
				if !strings.Contains(c.Err().Error(), tt.wantErrContains) {
					t.Errorf("error %q does not mention %q", c.Err(), tt.wantErrContains)
				}
				if n := len(c.Resources(xdstest.SDS)); n != 0 {
					t.Errorf("a refused proxy received %d secrets", n)
				}
				if got := value(h.srv.m.rejected.WithLabelValues(tt.metricReason)); got != before+1 {
					t.Errorf("rejected_streams_total{reason=%s} = %v, want %v", tt.metricReason, got, before+1)
				}
			})
		}
	})
}

func TestBadSnapshotKeepsLastGood(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		var breakGateway atomic.Bool
		h.srv.translate = func(m *model.Snapshot, p translate.Proxy, o translate.Options) *translate.Resources {
			res := translate.Translate(m, p, o)
			if breakGateway.Load() && p.Labels["app"] == "product-gateway" {
				// Drop every endpoint assignment: EDS clusters without
				// their CLAs would leave Envoy warming forever.
				res.Endpoints = nil
			}
			return res
		}
		h.update(mesh(t, shop...))
		gw := h.client("product-gateway-0", "default", "127.0.0.4", delta, nil)
		stock := h.client("stock-0", "default", "127.0.0.3", delta, nil)
		h.waitComplete(gw)
		h.waitComplete(stock)
		gwBefore := snapshotOf(gw)
		stockEDS := stock.Version(xdstest.EDS)

		breakGateway.Store(true)
		// A new replica under another service account changes the
		// clusters' SANs, so every group is translated again (an
		// endpoint-only change would not call translate at all).
		h.update(mesh(t, shopWith(pod("product-1", "product", "product-v2", "127.0.0.5"))...))
		// The other group is unaffected and gets the new endpoint.
		h.waitFor(stock, "stock's update", func() bool { return stock.Version(xdstest.EDS) != stockEDS })
		// The gateway keeps its listeners, routes and clusters.
		// Endpoints are shared by every proxy of a flavour and valid:
		// they keep flowing (a new endpoint whose identity the old
		// clusters do not accept fails its TLS handshake, closed).
		got := snapshotOf(gw)
		for _, typ := range []string{typeCDS, typeLDS, typeRDS, typeSDS} {
			if got[typ] != gwBefore[typ] {
				t.Errorf("the gateway received %s that failed the checks: %s → %s", typ, gwBefore[typ], got[typ])
			}
		}
		var bad *GroupStatus
		for _, g := range h.srv.SyncStatus().Groups {
			if g.Error != "" {
				g := g
				bad = &g
			}
		}
		if bad == nil || bad.ErrorKind != errInconsistent || !strings.Contains(bad.Error, "no cluster load assignment") {
			t.Fatalf("syncz groups do not show the gateway's error: %+v", h.srv.SyncStatus().Groups)
		}
		if bad.Versions[typeCDS] != gw.Version(xdstest.CDS) {
			t.Errorf("the failing group should still list its last good versions; got %v", bad.Versions)
		}
		if got := value(h.srv.m.configErrors.WithLabelValues(errInconsistent)); got != 1 {
			t.Errorf("config_errors_total{kind=inconsistent} = %v, want 1", got)
		}

		// Once translation is sound again, the gateway catches up.
		breakGateway.Store(false)
		cds := gw.Version(xdstest.CDS)
		h.update(mesh(t, shopWith(pod("product-1", "product", "product-v2", "127.0.0.5"))...))
		h.waitFor(gw, "the gateway's catch-up", func() bool { return gw.Version(xdstest.CDS) != cds })
		for _, g := range h.srv.SyncStatus().Groups {
			if g.Error != "" {
				t.Errorf("group %s still shows an error after a good push: %s", g.Key, g.Error)
			}
		}
	})
}

func TestCertificateRenewalPushesOnlySecrets(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		h.update(mesh(t, shop...))
		c := h.client("product-gateway-0", "default", "127.0.0.4", delta, nil)
		h.waitComplete(c)
		before := snapshotOf(c)
		sds := c.Version(xdstest.SDS)
		serial := func() string {
			ps, _ := h.proxyStatus(nodeID("product-gateway-0", "default", "127.0.0.4"))
			if ps.Certificate == nil {
				return ""
			}
			return ps.Certificate.Serial
		}
		first := serial()

		// Nothing is due yet.
		h.srv.renewDue()
		if got := value(h.srv.m.certsIssued); got != 1 {
			t.Fatalf("certificates issued before renewal time = %v, want 1", got)
		}
		h.clock.Advance(h.srv.opts.CA.WorkloadTTL()/2 + 1)
		h.srv.renewDue()
		h.waitFor(c, "the renewed certificate", func() bool { return c.Version(xdstest.SDS) != sds })
		if serial() == first {
			t.Error("renewal kept the certificate serial")
		}
		after := snapshotOf(c)
		for _, typ := range []string{typeCDS, typeLDS, typeRDS, typeEDS} {
			if before[typ] != after[typ] {
				t.Errorf("%s changed on a certificate renewal: %s → %s", typ, before[typ], after[typ])
			}
		}
		leafSPIFFE(t, c, h) // still valid and chained
	})
}

func TestProxylessFlavorFromMetadata(t *testing.T) {
	h := newHarness(t, nil)
	var flavors []translate.Flavor
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	h.srv.translate = func(m *model.Snapshot, p translate.Proxy, o translate.Options) *translate.Resources {
		<-mu
		flavors = append(flavors, p.Flavor)
		mu <- struct{}{}
		return translate.Translate(m, translate.Proxy{Flavor: translate.FlavorEnvoy, Namespace: p.Namespace, Labels: p.Labels, Ports: p.Ports}, o)
	}
	h.update(mesh(t, shop...))
	c := h.client("product-0", "default", "127.0.0.2", false, func(o *xdstest.Options) {
		o.Metadata = map[string]string{"GENERATOR": "grpc"}
	})
	h.waitComplete(c)
	ps, _ := h.proxyStatus(nodeID("product-0", "default", "127.0.0.2"))
	if ps.Flavor != string(translate.FlavorProxyless) {
		t.Errorf("flavor = %q, want %q", ps.Flavor, translate.FlavorProxyless)
	}
	<-mu
	defer func() { mu <- struct{}{} }()
	if len(flavors) != 1 || flavors[0] != translate.FlavorProxyless {
		t.Errorf("translated for flavours %v, want [grpc]", flavors)
	}
}

func TestReplicasShareOneTranslation(t *testing.T) {
	h := newHarness(t, nil)
	var calls atomic.Int64
	h.srv.translate = func(m *model.Snapshot, p translate.Proxy, o translate.Options) *translate.Resources {
		calls.Add(1)
		return translate.Translate(m, p, o)
	}
	replica := pod("product-1", "product", "product", "127.0.0.5")
	h.update(mesh(t, shopWith(replica)...))
	a := h.client("product-0", "default", "127.0.0.2", false, nil)
	h.waitComplete(a)
	b := h.client("product-1", "default", "127.0.0.5", true, nil)
	h.waitComplete(b)
	if got := calls.Load(); got != 1 {
		t.Errorf("translations for two replicas = %d, want 1", got)
	}
	calls.Store(0)
	// Another service account behind stock changes its cluster's SANs:
	// not an endpoint-only change, so the group is translated again.
	h.update(mesh(t, shopWith(replica, pod("stock-1", "stock", "stock-v2", "127.0.0.7"))...))
	if got := calls.Load(); got != 1 {
		t.Errorf("translations per push for one group = %d, want 1", got)
	}
	// Each replica still has its own key pair.
	ka := a.Resources(xdstest.SDS)[SecretDefault].(*tlsv3.Secret).GetTlsCertificate().GetPrivateKey().GetInlineBytes()
	kb := b.Resources(xdstest.SDS)[SecretDefault].(*tlsv3.Secret).GetTlsCertificate().GetPrivateKey().GetInlineBytes()
	if string(ka) == string(kb) {
		t.Error("two replicas share a private key")
	}
	if len(h.srv.SyncStatus().Groups) != 1 {
		t.Errorf("groups = %d, want 1", len(h.srv.SyncStatus().Groups))
	}
}

// value reads a counter or gauge (one series).
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	go func() { c.Collect(ch); close(ch) }()
	var total float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			return -1
		}
		total += d.GetCounter().GetValue() + d.GetGauge().GetValue()
	}
	return total
}

// histogramCount is the number of observations of a histogram.
func histogramCount(o prometheus.Observer) uint64 {
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		return 0
	}
	return m.GetHistogram().GetSampleCount()
}

func TestRelabelledPodMovesGroup(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		strictProduct := `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: product, namespace: default}
spec:
  selector: {matchLabels: {app: product}}
  mtls: {mode: STRICT}`
		h.update(mesh(t, shopWith(strictProduct)...))
		c := h.client("stock-0", "default", "127.0.0.3", delta, nil)
		h.waitComplete(c)
		node := nodeID("stock-0", "default", "127.0.0.3")
		ps, _ := h.proxyStatus(node)
		oldGroup, lds := ps.Group, c.Version(xdstest.LDS)

		// stock-0 now carries the product label: it belongs to another
		// group, and product's STRICT policy changes its inbound side.
		moved := strings.Replace(stockPod, "app: stock", "app: product", 1)
		h.update(mesh(t, service("product", 11), service("stock", 12), service("product-gateway", 13), gatewayPod, productPod, moved, strictProduct))
		h.waitFor(c, "the new inbound configuration", func() bool { return c.Version(xdstest.LDS) != lds })
		ps, _ = h.proxyStatus(node)
		if ps.Group == oldGroup {
			t.Error("the relabelled pod kept its group")
		}
		if err := c.Complete(); err != nil {
			t.Error(err)
		}
	})
}

func TestPodRemovedWhileConnectedKeepsConfig(t *testing.T) {
	h := newHarness(t, nil)
	h.update(mesh(t, shop...))
	c := h.client("stock-0", "default", "127.0.0.3", false, nil)
	h.waitComplete(c)
	before := snapshotOf(c)
	h.update(mesh(t, service("product", 11), service("stock", 12), gatewayPod, productPod))
	ps, _ := h.proxyStatus(nodeID("stock-0", "default", "127.0.0.3"))
	if !ps.Waiting || ps.WaitReason != "pod default/stock-0 not found in the mesh" {
		t.Errorf("a proxy whose pod left discovery should be listed as waiting for it: %+v", ps)
	}
	// It keeps its listeners, routes, clusters and secrets. Endpoints
	// are shared by the whole flavour and stay current: it still has an
	// assignment for every cluster.
	after := snapshotOf(c)
	for _, typ := range []string{typeCDS, typeLDS, typeRDS, typeSDS} {
		if after[typ] != before[typ] {
			t.Errorf("a proxy whose pod left discovery lost its %s: %s → %s", typ, before[typ], after[typ])
		}
	}
	if err := c.Complete(); err != nil {
		t.Errorf("a proxy whose pod left discovery lost part of its configuration: %v", err)
	}
}
