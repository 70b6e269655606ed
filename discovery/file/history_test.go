package file

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// round builds files (path -> content) as a Source would, with history h,
// at now.
func round(t *testing.T, h *history, now time.Time, files map[string]string) *model.Snapshot {
	t.Helper()
	var docs []document
	var problems []model.Problem
	for _, p := range slices.Sorted(maps.Keys(files)) {
		d, prob := parseFile(File{Path: p, Data: []byte(files[p])})
		if prob != nil {
			problems = append(problems, *prob)
			continue
		}
		docs = append(docs, d...)
	}
	h.begin(now)
	return assemble(docs, problems, Options{}, h)
}

// served is what a snapshot serves: everything but problems, held
// objects and when it was observed.
func served(s *model.Snapshot) model.Snapshot {
	c := *s
	c.Problems, c.Held = nil, nil
	return c
}

const meshBase = `apiVersion: v1
kind: Service
metadata: {name: product, namespace: default}
spec:
  selector: {app: product}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: product-0, namespace: default, labels: {app: product, security.istio.io/tlsMode: istio}}
spec: {serviceAccountName: product, containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.0.0.1}
`

// The good and bad versions of one object of each kind. Each bad version
// keeps the object's kind, namespace and name and is wrong the way a
// hurried edit is: a misspelt value, a misspelt field, a wrong type.
var lastGoodCases = []struct {
	name      string
	kind      string
	good, bad string
}{
	{"PeerAuthentication mode typo", policy.KindPeerAuthentication,
		"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n",
		"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICTT}}\n"},
	{"PeerAuthentication field typo", policy.KindPeerAuthentication,
		"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n",
		"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mTLS: {mode: STRICT}}\n"},
	{"PeerAuthentication port-level typo", policy.KindPeerAuthentication,
		"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: default}\nspec: {selector: {matchLabels: {app: product}}, mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}}}\n",
		"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: default}\nspec: {selector: {matchLabels: {app: product}}, mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLED}}}\n"},
	{"PeerAuthentication apiVersion typo", policy.KindPeerAuthentication,
		"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n",
		"apiVersion: security.istio.io/v2\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n"},
	{"AuthorizationPolicy DENY field typo", policy.KindAuthorizationPolicy,
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-writes, namespace: default}\nspec: {action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}\n",
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-writes, namespace: default}\nspec: {action: DENY, rules: [{to: [{operation: {method: [POST]}}]}]}\n"},
	{"DestinationRule mode typo", policy.KindDestinationRule,
		"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: product, namespace: default}\nspec: {host: product, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n",
		"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: product, namespace: default}\nspec: {host: product, trafficPolicy: {tls: {mode: ISTIO_MUTUALL}}}\n"},
	{"RequestAuthentication wrong type", policy.KindRequestAuthentication,
		"apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: default}\nspec: {jwtRules: [{issuer: https://issuer.example, jwks: '{\"keys\":[]}'}]}\n",
		"apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: default}\nspec: {jwtRules: [{issuer: [https://issuer.example], jwks: '{\"keys\":[]}'}]}\n"},
	{"Service port out of range", "Service",
		"apiVersion: v1\nkind: Service\nmetadata: {name: stock, namespace: default}\nspec: {selector: {app: stock}, ports: [{name: http, port: 9090}]}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: stock, namespace: default}\nspec: {selector: {app: stock}, ports: [{name: http, port: 90900}]}\n"},
	{"Pod field typo", "Pod",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: stock-0, namespace: default, labels: {app: stock}}\nspec: {serviceAccountName: stock, containers: [{name: app}]}\nstatus: {podIP: 10.0.0.2}\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: stock-0, namespace: default, labels: {app: stock}}\nspec: {serviceAcountName: stock, containers: [{name: app}]}\nstatus: {podIP: 10.0.0.2}\n"},
	{"Namespace bad label", "Namespace",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: 'a b'}}\n"},
	{"EndpointSlice bad address", "EndpointSlice",
		"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: product-x, namespace: default, labels: {kubernetes.io/service-name: product}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.9]}]\nports: [{name: http, port: 8080}]\n",
		"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: product-x, namespace: default, labels: {kubernetes.io/service-name: product}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.999]}]\nports: [{name: http, port: 8080}]\n"},
}

func TestInvalidEditKeepsLastGoodVersion(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for _, tc := range lastGoodCases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHistory()
			good := round(t, h, t0, map[string]string{"mesh.yaml": meshBase, "obj.yaml": tc.good})
			if policy.Problems(good.Problems).HasErrors() {
				t.Fatalf("the good version has errors: %v", good.Problems)
			}

			bad := round(t, h, t0.Add(time.Minute), map[string]string{"mesh.yaml": meshBase, "obj.yaml": tc.bad})
			if diff := cmp.Diff(served(good), served(bad)); diff != "" {
				t.Errorf("an invalid edit changed what is served (-before +after):\n%s", diff)
			}
			if !slices.ContainsFunc(bad.Problems, func(p model.Problem) bool {
				return p.Severity == policy.SeverityError && p.Kind == tc.kind && p.Location.File == "obj.yaml"
			}) {
				t.Errorf("the invalid version is not reported as an error: %v", bad.Problems)
			}
			if len(bad.Held) != 1 || bad.Held[0].Kind != tc.kind || bad.Held[0].Refused != "obj.yaml:1" ||
				!strings.HasPrefix(bad.Held[0].Serving, "obj.yaml:1 as loaded at 2026-12-07T10:00:00Z") {
				t.Errorf("held = %+v, want the %s refused at obj.yaml:1 and served as loaded at 10:00", bad.Held, tc.kind)
			}

			// Still invalid a minute later: still held, nothing changes.
			again := round(t, h, t0.Add(2*time.Minute), map[string]string{"mesh.yaml": meshBase, "obj.yaml": tc.bad})
			if !again.SameMesh(bad) {
				t.Errorf("a reload of the same invalid edit changed the snapshot")
			}

			// Removing the document removes the object.
			gone := round(t, h, t0.Add(3*time.Minute), map[string]string{"mesh.yaml": meshBase})
			want := round(t, newHistory(), t0, map[string]string{"mesh.yaml": meshBase})
			if diff := cmp.Diff(served(want), served(gone)); diff != "" {
				t.Errorf("removing the document did not remove the object (-want +got):\n%s", diff)
			}
			if len(gone.Held) != 0 {
				t.Errorf("held after removal: %+v", gone.Held)
			}

			// An object that never had a valid version is skipped.
			fresh := round(t, newHistory(), t0, map[string]string{"mesh.yaml": meshBase, "obj.yaml": tc.bad})
			if diff := cmp.Diff(served(want), served(fresh)); diff != "" {
				t.Errorf("an invalid object with no valid version was served (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnnamedDocumentKeepsItsFilesObjects(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	strict := "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n"
	other := "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow, namespace: default}\nspec: {action: ALLOW, rules: [{}]}\n"
	for _, tc := range []struct{ name, edit string }{
		{"kind misspelt", strings.Replace(strict, "kind: PeerAuthentication", "kind: PeerAuthentcation", 1)},
		{"name missing", strings.Replace(strict, "name: default, ", "naem: default, ", 1)},
		{"name invalid", strings.Replace(strict, "name: default", "name: Default", 1)},
		{"not a mapping", "- apiVersion: security.istio.io/v1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHistory()
			good := round(t, h, t0, map[string]string{"mesh.yaml": meshBase, "policy.yaml": strict + other})
			bad := round(t, h, t0.Add(time.Minute), map[string]string{"mesh.yaml": meshBase, "policy.yaml": tc.edit + other})
			// The other policy moved up the file; only its origin changes.
			if diff := cmp.Diff(served(good), served(bad), cmpopts.IgnoreFields(policy.Meta{}, "Origin")); diff != "" {
				t.Errorf("an unnamed document changed what is served (-before +after):\n%s", diff)
			}
			if len(bad.Held) != 1 || bad.Held[0].Name != "default" || !strings.Contains(bad.Held[0].Reason, "cannot be tied to an object") {
				t.Errorf("held = %+v, want default/default held because of the unnamed document", bad.Held)
			}
			// Another file's unnamed document holds nothing of this one's.
			h2 := newHistory()
			round(t, h2, t0, map[string]string{"mesh.yaml": meshBase, "policy.yaml": strict})
			moved := round(t, h2, t0.Add(time.Minute), map[string]string{"mesh.yaml": meshBase, "other.yaml": tc.edit})
			if len(moved.Policies.PeerAuthentications) != 0 || len(moved.Held) != 0 {
				t.Errorf("removing policy.yaml kept its object because other.yaml has an unnamed document: %+v", moved.Held)
			}
		})
	}
}

func TestPeerAuthenticationConflictsKeepWhatIsServing(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	pa := func(name, mode string) string {
		return "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name +
			", namespace: default}\nspec: {mtls: {mode: " + mode + "}}\n"
	}
	modes := func(s *model.Snapshot) []string {
		var out []string
		for _, p := range s.Policies.PeerAuthentications {
			out = append(out, p.Name+"="+string(p.Spec.MTLS.Mode))
		}
		return out
	}

	// At startup neither is older: the first by name is served, with a warning.
	start := round(t, newHistory(), t0, map[string]string{"mesh.yaml": meshBase, "a.yaml": pa("b-strict", "STRICT"), "b.yaml": pa("a-permissive", "PERMISSIVE")})
	if got := modes(start); !slices.Equal(got, []string{"a-permissive=PERMISSIVE"}) {
		t.Errorf("at startup, served %v, want the first by name", got)
	}
	if !hasProblem(start, policy.SeverityWarning, "b-strict", "neither is older") {
		t.Errorf("no warning for the startup tie: %v", start.Problems)
	}

	// A newcomer never displaces the policy in force, whatever its name.
	h := newHistory()
	round(t, h, t0, map[string]string{"mesh.yaml": meshBase, "a.yaml": pa("z-strict", "STRICT")})
	later := round(t, h, t0.Add(time.Minute), map[string]string{"mesh.yaml": meshBase, "a.yaml": pa("z-strict", "STRICT"), "b.yaml": pa("a-disable", "DISABLE")})
	if got := modes(later); !slices.Equal(got, []string{"z-strict=STRICT"}) {
		t.Errorf("after a conflicting newcomer, served %v, want z-strict=STRICT only", got)
	}
	if !hasProblem(later, policy.SeverityError, "a-disable", "default/z-strict was already in force") {
		t.Errorf("the newcomer is not refused with an error naming both: %v", later.Problems)
	}
	// Once the older one is removed, the newcomer applies.
	after := round(t, h, t0.Add(2*time.Minute), map[string]string{"mesh.yaml": meshBase, "b.yaml": pa("a-disable", "DISABLE")})
	if got := modes(after); !slices.Equal(got, []string{"a-disable=DISABLE"}) {
		t.Errorf("after removing the older policy, served %v", got)
	}
}

func hasProblem(s *model.Snapshot, sev policy.Severity, name, text string) bool {
	return slices.ContainsFunc(s.Problems, func(p model.Problem) bool {
		return p.Severity == sev && p.Name == name && strings.Contains(p.Message, text)
	})
}
