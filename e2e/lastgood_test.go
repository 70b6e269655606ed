package e2e

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/e2e/harness"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// lastGoodPolicies are valid policies of every kind the mesh reads, in
// one file each; the test then breaks each in turn.
var lastGoodPolicies = map[string]string{
	"lg-strict.yaml": `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
`,
	"lg-product-ports.yaml": `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: product-ports, namespace: default}
spec:
  selector: {matchLabels: {app: product}}
  portLevelMtls:
    8080: {mode: STRICT}
`,
	"lg-deny.yaml": `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-writes, namespace: default}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/demo.v1.Product/UpdateProduct"]
`,
	"lg-dr.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: stock, namespace: default}
spec:
  host: stock
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
`,
	"lg-jwt.yaml": `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  selector: {matchLabels: {app: product}}
  jwtRules:
  - issuer: https://issuer.example
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}'
`,
}

// TestInvalidEditKeepsServedConfig is issue 12's first case against the
// real meshd, with Envoy-like proxies connected: editing any object into an
// invalid version leaves every proxy's served configuration byte-identical
// (meshd's config dump, and the versions the proxies hold), the object is
// listed as held in /debug/model and /debug/syncz, and only removing the
// object removes it.
func TestInvalidEditKeepsServedConfig(t *testing.T) {
	t.Parallel()
	m := startADSMesh(t)
	ctx := t.Context()
	for name, content := range lastGoodPolicies {
		m.writeConfig(name, content)
	}
	product := m.client(ctx, harness.Product, productSA, xdstest.Options{})
	gateway := m.client(ctx, harness.Gateway, gatewaySA, xdstest.Options{})
	clients := map[string]*xdstest.Client{nodeIDOf(harness.Product): product, nodeIDOf(harness.Gateway): gateway}
	// Wait until meshd has loaded every policy and both proxies hold it.
	m.waitModel(ctx, "every policy loaded", func(s model.Snapshot) bool {
		p := s.Policies
		return len(p.PeerAuthentications) == 2 && len(p.AuthorizationPolicies) == 1 && len(p.DestinationRules) == 1 &&
			len(p.RequestAuthentications) == 1 && len(s.Problems) == 0
	})
	for id, c := range clients {
		m.waitConfig(ctx, c, "the configuration of "+id, nil)
		m.waitSyncz(ctx, id, "every type SYNCED", allSynced)
	}

	served := func() map[string][]byte {
		out := map[string][]byte{}
		for id := range clients {
			body, err := httpBody(ctx, "http://"+m.monitoring+"/debug/config_dump?proxy="+url.QueryEscape(id))
			if err != nil {
				t.Fatal(err)
			}
			out[id] = body
		}
		return out
	}
	versions := func() map[string]string {
		out := map[string]string{}
		for id, c := range clients {
			for typ, v := range typeState(c) {
				out[id+" "+typ] = v
			}
		}
		return out
	}
	// Take the baseline once meshd has stopped pushing: two dumps 300 ms
	// apart agree.
	before, beforeVersions := served(), versions()
	for deadline := time.Now().Add(adsPushTimeout); ; {
		time.Sleep(300 * time.Millisecond)
		again, againVersions := served(), versions()
		if mapsEqual(beforeVersions, againVersions) && dumpsEqual(before, again) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the served configuration does not settle: versions %v, then %v", beforeVersions, againVersions)
		}
		before, beforeVersions = again, againVersions
	}

	for _, tc := range []struct {
		name, file, kind, object string
		edit                     func(string) string
	}{
		{"PeerAuthentication mode typo", "lg-strict.yaml", "PeerAuthentication", "default/default",
			func(s string) string { return strings.Replace(s, "mode: STRICT", "mode: STRICTT", 1) }},
		{"PeerAuthentication field typo", "lg-strict.yaml", "PeerAuthentication", "default/default",
			func(s string) string { return strings.Replace(s, "mtls:", "mTLS:", 1) }},
		{"port-level typo", "lg-product-ports.yaml", "PeerAuthentication", "default/product-ports",
			func(s string) string { return strings.Replace(s, "{mode: STRICT}", "{mode: STRICT, extra: 1}", 1) }},
		{"DENY rule field typo", "lg-deny.yaml", "AuthorizationPolicy", "default/deny-writes",
			func(s string) string { return strings.Replace(s, "paths:", "path:", 1) }},
		{"DestinationRule mode typo", "lg-dr.yaml", "DestinationRule", "default/stock",
			func(s string) string { return strings.Replace(s, "ISTIO_MUTUAL", "ISTIO_MUTUA", 1) }},
		{"RequestAuthentication wrong type", "lg-jwt.yaml", "RequestAuthentication", "default/jwt",
			func(s string) string {
				return strings.Replace(s, "issuer: https://issuer.example", "issuer: [https://issuer.example]", 1)
			}},
		{"Service port typo", "stock.yaml", "Service", "default/stock",
			func(s string) string { return strings.Replace(s, "port: 8081", "port: 80810", 1) }},
		{"Pod field typo", "product.yaml", "Pod", "default/product-0",
			func(s string) string {
				return strings.Replace(s, "serviceAccountName: product", "serviceAcountName: product", 1)
			}},
		{"kind typo", "lg-strict.yaml", "PeerAuthentication", "default/default",
			func(s string) string {
				return strings.Replace(s, "kind: PeerAuthentication", "kind: PeerAuthenticaton", 1)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.editConfig(tc.file, tc.edit)
			m.waitModel(ctx, tc.kind+" "+tc.object+" held", func(s model.Snapshot) bool {
				return slices.ContainsFunc(s.Held, func(h model.Held) bool {
					return h.Kind == tc.kind && strings.TrimPrefix(h.Namespace+"/"+h.Name, "/") == tc.object
				})
			})
			// meshctl validate reads the directory as meshd does and
			// reports the same errors (it has no history, so nothing is
			// held there: it refuses).
			out, err := exec.CommandContext(ctx, bins.Meshctl, "validate", "-f", m.configDir).CombinedOutput()
			if err == nil {
				t.Errorf("meshctl validate accepted the invalid edit of %s:\n%s", tc.file, out)
			}
			var snap model.Snapshot
			if err := m.debugJSON(ctx, "/debug/model", &snap); err != nil {
				t.Fatal(err)
			}
			errs := 0
			for _, p := range snap.Problems {
				if p.Severity != "error" {
					continue
				}
				errs++
				if filepath.Base(p.Location.File) != tc.file || !strings.Contains(string(out), p.Message) {
					t.Errorf("meshd reports %q at %s; meshctl validate does not say the same about %s:\n%s", p.Message, p.Location, tc.file, out)
				}
			}
			if errs == 0 {
				t.Errorf("/debug/model reports no error for the invalid edit of %s", tc.file)
			}
			// The held object shows in /debug/syncz, which meshctl
			// proxy-config prints.
			var st struct {
				Held []model.Held `json:"held"`
			}
			if err := m.debugJSON(ctx, "/debug/syncz", &st); err != nil || len(st.Held) != 1 {
				t.Errorf("/debug/syncz held = %+v (error %v), want the one refused object", st.Held, err)
			}
			// Any push would have been built by now; a short grace
			// catches one still on the wire.
			time.Sleep(300 * time.Millisecond)
			after := served()
			for id, b := range before {
				if !bytes.Equal(b, after[id]) {
					t.Errorf("the served configuration of %s changed after an invalid edit of %s", id, tc.file)
				}
			}
			if got := versions(); !mapsEqual(beforeVersions, got) {
				t.Errorf("proxies received new versions after an invalid edit: before %v, after %v", beforeVersions, got)
			}
			// Put the good version back: nothing is held any more.
			restore(m, tc.file)
			m.waitModel(ctx, "nothing held", func(s model.Snapshot) bool { return len(s.Held) == 0 && len(s.Problems) == 0 })
		})
	}

	// Removing an object does remove it.
	lds := product.Version(xdstest.LDS)
	m.removeConfig("lg-deny.yaml")
	m.waitModel(ctx, "the DENY policy removed", func(s model.Snapshot) bool { return len(s.Policies.AuthorizationPolicies) == 0 })
	m.waitConfig(ctx, product, "product's listeners without the DENY rule", func() bool { return product.Version(xdstest.LDS) != lds })
}

func dumpsEqual(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(b[k], v) {
			return false
		}
	}
	return true
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// restore writes back the original content of name: from
// lastGoodPolicies, or from examples/mesh.
func restore(m *adsMesh, name string) {
	m.t.Helper()
	if content, ok := lastGoodPolicies[name]; ok {
		m.writeConfig(name, content)
		return
	}
	root, err := harness.RepoRoot()
	if err != nil {
		m.t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "examples", "mesh", name))
	if err != nil {
		m.t.Fatal(err)
	}
	m.writeConfig(name, string(data))
}

// removeConfig deletes a manifest from the config dir.
func (m *adsMesh) removeConfig(name string) {
	m.t.Helper()
	if err := os.Remove(filepath.Join(m.configDir, name)); err != nil {
		m.t.Fatal(err)
	}
}

// waitModel polls /debug/model until ok accepts it.
func (m *adsMesh) waitModel(ctx context.Context, what string, ok func(model.Snapshot) bool) {
	m.t.Helper()
	deadline := time.Now().Add(adsPushTimeout)
	for {
		var s model.Snapshot
		err := m.debugJSON(ctx, "/debug/model", &s)
		if err == nil && ok(s) {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("/debug/model does not show %s within %s (error: %v); held %+v, problems %v", what, adsPushTimeout, err, s.Held, s.Problems)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
