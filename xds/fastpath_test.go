package xds

import (
	"strings"
	"sync/atomic"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/translate"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// groupSnaps returns every group's current snapshot by key.
func groupSnaps(h *harness) map[string]*cachev3.Snapshot {
	h.srv.mu.Lock()
	defer h.srv.mu.Unlock()
	out := map[string]*cachev3.Snapshot{}
	for k, g := range h.srv.groups {
		out[k] = g.snap
	}
	return out
}

// TestEndpointOnlyChangeSkipsTranslation checks the fast path: a change
// that touches only endpoints translates no group, keeps every group's
// listeners, routes and clusters (the very same resources, same versions)
// and swaps in the new assignments; a policy change translates again.
func TestEndpointOnlyChangeSkipsTranslation(t *testing.T) {
	h := newHarness(t, nil)
	var calls atomic.Int64
	h.srv.translate = func(m *model.Snapshot, p translate.Proxy, o translate.Options) *translate.Resources {
		calls.Add(1)
		return translate.Translate(m, p, o)
	}
	// product-1 starts not ready: becoming ready is an endpoint-only
	// change for both flavours (the set of in-mesh workloads, which
	// proxyless server listeners read, stays the same).
	product1 := pod("product-1", "product", "product", "127.0.0.5")
	notReady := strings.Replace(product1, `status: "True"`, `status: "False"`, 1)
	h.update(mesh(t, shopWith(notReady)...))
	gw := h.client("product-gateway-0", "default", "127.0.0.4", false, nil)
	grpc := h.client("product-0", "default", "127.0.0.2", true, func(o *xdstest.Options) {
		o.Metadata = map[string]string{"GENERATOR": "grpc"}
	})
	h.waitComplete(gw)
	// Proxyless clients read certificates from files, not SDS.
	h.waitFor(grpc, "the proxyless client's configuration", func() bool {
		return grpc.Complete() == nil && len(grpc.Resources(xdstest.EDS)) > 0
	})
	before := groupSnaps(h)
	if len(before) != 2 {
		t.Fatalf("groups = %d, want 2 (one per flavour)", len(before))
	}
	edsBefore := groupEDSVersions(h)
	gwBefore, gwEDS, grpcEDS := snapshotOf(gw), gw.Version(xdstest.EDS), grpc.Version(xdstest.EDS)

	calls.Store(0)
	h.update(mesh(t, shopWith(product1)...))
	if got := calls.Load(); got != 0 {
		t.Errorf("translations on an endpoint-only change = %d, want 0", got)
	}
	after := groupSnaps(h)
	for key, old := range before {
		now := after[key]
		if now == nil {
			t.Fatalf("group %s disappeared", key)
		}
		for _, typ := range []types.ResponseType{types.Listener, types.Route, types.Cluster} {
			o, n := old.Resources[typ], now.Resources[typ]
			if o.Version != n.Version {
				t.Errorf("group %s type %d: version %s → %s on an endpoint-only change", key, typ, o.Version, n.Version)
			}
			if len(o.Items) != len(n.Items) {
				t.Errorf("group %s type %d: %d resources → %d", key, typ, len(o.Items), len(n.Items))
			}
			for name, r := range o.Items {
				if n.Items[name].Resource != r.Resource {
					t.Errorf("group %s type %d: resource %q was rebuilt, want the same one kept", key, typ, name)
				}
			}
		}
		if len(now.Resources[types.Endpoint].Items) != 0 {
			t.Errorf("group %s: its snapshot holds assignments; the endpoint cache serves them", key)
		}
	}
	for key, v := range groupEDSVersions(h) {
		if v == edsBefore[key] {
			t.Errorf("group %s: EDS version unchanged after a new product endpoint", key)
		}
	}

	// Both flavours receive the new endpoint, and nothing else.
	h.waitFor(gw, "the gateway's new endpoints", func() bool { return gw.Version(xdstest.EDS) != gwEDS })
	h.waitFor(grpc, "the proxyless client's new endpoints", func() bool { return grpc.Version(xdstest.EDS) != grpcEDS })
	gwAfter := snapshotOf(gw)
	for _, typ := range []string{typeLDS, typeCDS, typeRDS, typeSDS} {
		if gwAfter[typ] != gwBefore[typ] {
			t.Errorf("gateway %s: %s → %s on an endpoint-only change", typ, gwBefore[typ], gwAfter[typ])
		}
	}
	if !hasEndpoint(gw, "127.0.0.5") || !hasEndpoint(grpc, "127.0.0.5") {
		t.Error("the new endpoint 127.0.0.5 did not reach both proxies")
	}

	// A new in-mesh pod is endpoint-only for Envoy, but proxyless
	// server listeners list every in-mesh address: that group alone is
	// translated.
	calls.Store(0)
	h.update(mesh(t, shopWith(product1, pod("stock-1", "stock", "stock", "127.0.0.7"))...))
	if got := calls.Load(); got != 1 {
		t.Errorf("translations after a new in-mesh pod = %d, want 1 (the proxyless group)", got)
	}

	// A policy change is not endpoint-only: every group is translated.
	calls.Store(0)
	h.update(mesh(t, shopWith(product1, pod("stock-1", "stock", "stock", "127.0.0.7"), `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: product, namespace: default}
spec:
  selector: {matchLabels: {app: product}}
  mtls: {mode: STRICT}`)...))
	if got := calls.Load(); got != 2 {
		t.Errorf("translations on a policy change = %d, want 2 (one per group)", got)
	}
}

// groupEDSVersions returns the EDS version of every group, as syncz shows it.
func groupEDSVersions(h *harness) map[string]string {
	out := map[string]string{}
	for _, g := range h.srv.SyncStatus().Groups {
		out[g.Key] = g.Versions[typeEDS]
	}
	return out
}

// hasEndpoint reports whether any assignment the client holds lists ip.
func hasEndpoint(c *xdstest.Client, ip string) bool {
	for _, r := range c.Resources(xdstest.EDS) {
		cla, _ := r.(*endpointv3.ClusterLoadAssignment)
		for _, loc := range cla.GetEndpoints() {
			for _, e := range loc.GetLbEndpoints() {
				if e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == ip {
					return true
				}
			}
		}
	}
	return false
}
