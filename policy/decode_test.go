package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// want describes one expected problem: its severity, its exact field path,
// and a fragment its message must contain.
type want struct {
	sev   Severity
	field string
	msg   string
}

func e(field, msg string) want { return want{SeverityError, field, msg} }
func w(field, msg string) want { return want{SeverityWarning, field, msg} }

var testMeta = Meta{Namespace: "default", Name: "p", Origin: Location{File: "mesh.yaml", Line: 7},
	CreationTimestamp: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}

// decodeYAML converts a YAML spec to JSON as sources do, then decodes it.
func decodeYAML(t *testing.T, apiVersion, kind, spec string) (Object, Problems) {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(spec))
	if err != nil {
		t.Fatalf("test YAML does not parse: %v", err)
	}
	return Decode(apiVersion, kind, testMeta, js)
}

// checkProblems compares problems with want in order: severity, field and a
// message fragment each.
func checkProblems(t *testing.T, got Problems, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("got %d problems, want %d:\n%s", len(got), len(wants), render(got))
	}
	for i, wp := range wants {
		p := got[i]
		if p.Severity != wp.sev || p.Field != wp.field || !strings.Contains(p.Message, wp.msg) {
			t.Errorf("problem %d = %s %q %q; want %s %q containing %q", i, p.Severity, p.Field, p.Message, wp.sev, wp.field, wp.msg)
		}
	}
}

func render(ps Problems) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.Error() + "\n")
	}
	return b.String()
}

func TestDecodePeerAuthentication(t *testing.T) {
	obj, ps := decodeYAML(t, "security.istio.io/v1", KindPeerAuthentication, `
selector:
  matchLabels: {app: product}
mtls: {}
portLevelMtls:
  "8080": {mode: DISABLE}
  "9090": {}
`)
	checkProblems(t, ps, nil)
	got, ok := obj.(*PeerAuthentication)
	if !ok {
		t.Fatalf("Decode returned %T, want *PeerAuthentication", obj)
	}
	wantMeta := testMeta
	wantMeta.Kind = KindPeerAuthentication
	wantSpec := PeerAuthenticationSpec{
		Selector:      &WorkloadSelector{MatchLabels: map[string]string{"app": "product"}},
		MTLS:          &MutualTLS{Mode: ModeUnset},
		PortLevelMTLS: map[uint32]MutualTLS{8080: {Mode: ModeDisable}, 9090: {Mode: ModeUnset}},
	}
	if diff := cmp.Diff(wantMeta, got.Meta); diff != "" {
		t.Errorf("meta (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantSpec, got.Spec); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
}

func TestDecodeDestinationRuleDefaultsTLSMode(t *testing.T) {
	obj, ps := decodeYAML(t, "networking.istio.io/v1alpha3", KindDestinationRule, `
host: product
trafficPolicy:
  tls: {}
  portLevelSettings:
  - port: {number: 80}
    tls: {}
`)
	checkProblems(t, ps, []want{
		w("spec.trafficPolicy.tls.mode", "default DISABLE"),
		w("spec.trafficPolicy.portLevelSettings[0].tls.mode", "default DISABLE"),
	})
	dr := obj.(*DestinationRule)
	if got := dr.Spec.TrafficPolicy.TLS.Mode; got != TLSDisable {
		t.Errorf("tls.mode = %q, want DISABLE", got)
	}
	if got := dr.Spec.TrafficPolicy.PortLevelSettings[0].TLS.Mode; got != TLSDisable {
		t.Errorf("portLevelSettings[0].tls.mode = %q, want DISABLE", got)
	}
}

func TestDecodeEmptySpecIsDenyAll(t *testing.T) {
	for _, spec := range []string{"", "null", "{}", "  "} {
		obj, ps := Decode("security.istio.io/v1beta1", KindAuthorizationPolicy, testMeta, []byte(spec))
		checkProblems(t, ps, nil)
		ap, ok := obj.(*AuthorizationPolicy)
		if !ok {
			t.Fatalf("spec %q: Decode returned %T", spec, obj)
		}
		if ap.Spec.EffectiveAction() != ActionAllow || len(ap.Spec.Rules) != 0 || ap.Spec.Selector != nil {
			t.Errorf("spec %q: got %+v, want ALLOW with no rules and no selector", spec, ap.Spec)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name       string
		apiVersion string
		kind       string
		spec       string
		want       []want
	}{{
		name: "unknown field names path and allowed fields",
		kind: KindPeerAuthentication,
		spec: `{mtls: {mod: STRICT}}`,
		want: []want{e("spec.mtls.mod", "unknown field; allowed: mode")},
	}, {
		name: "every unknown field at once, with validation errors",
		kind: KindPeerAuthentication,
		spec: `{selectr: {}, mtls: {mode: STRIKT, extra: 1}, portLevelMTLS: {}}`,
		want: []want{
			e("spec.mtls.extra", "unknown field; allowed: mode"),
			e("spec.portLevelMTLS", `unknown field; allowed: selector, mtls, portLevelMtls (names are case-sensitive: did you mean "portLevelMtls"?)`),
			e("spec.selectr", "unknown field; allowed: selector, mtls, portLevelMtls"),
			e("spec.mtls.mode", `"STRIKT" is not one of UNSET, DISABLE, PERMISSIVE, STRICT`),
		},
	}, {
		name: "wrong type reported once, not again as a missing field",
		kind: KindRequestAuthentication,
		spec: `{jwtRules: [{issuer: 5, jwksUri: "https://example.com/jwks"}]}`,
		want: []want{e("spec.jwtRules[0].issuer", "must be a string, not a number")},
	}, {
		name: "list element type errors keep the indices of the others",
		kind: KindAuthorizationPolicy,
		spec: `{rules: [{from: [{source: {principals: [5, "a*b"]}}]}]}`,
		want: []want{
			e("spec.rules[0].from[0].source.principals[0]", "must be a string"),
			e("spec.rules[0].from[0].source.principals[1]", `"a*b" has a "*" that is not at the start or the end`),
		},
	}, {
		name: "null list element",
		kind: KindAuthorizationPolicy,
		spec: `{rules: [null, {to: [{operation: {methods: [GET]}}]}]}`,
		want: []want{e("spec.rules[0]", "is empty (null)")},
	}, {
		name: "object expected",
		kind: KindPeerAuthentication,
		spec: `{mtls: STRICT}`,
		want: []want{e("spec.mtls", "must be an object, not a string")},
	}, {
		name: "list expected",
		kind: KindAuthorizationPolicy,
		spec: `{rules: {from: []}}`,
		want: []want{e("spec.rules", "must be a list, not an object")},
	}, {
		name: "boolean expected",
		kind: KindRequestAuthentication,
		spec: `{jwtRules: [{issuer: a, jwks: '{"keys":[{}]}', forwardOriginalToken: "yes"}]}`,
		want: []want{e("spec.jwtRules[0].forwardOriginalToken", "must be true or false, not a string")},
	}, {
		name: "port key not a number",
		kind: KindPeerAuthentication,
		spec: `{selector: {matchLabels: {app: a}}, portLevelMtls: {http: {mode: STRICT}}}`,
		want: []want{e("spec.portLevelMtls[http]", `key "http" is not a port number`)},
	}, {
		name: "number out of range",
		kind: KindDestinationRule,
		spec: `{host: a, trafficPolicy: {portLevelSettings: [{port: {number: 99999999999}}, {port: {number: 1.5}}]}}`,
		want: []want{
			e("spec.trafficPolicy.portLevelSettings[0].port.number", "not a whole number from 0 to 4294967295"),
			e("spec.trafficPolicy.portLevelSettings[1].port.number", "not a whole number"),
		},
	}, {
		name: "spec not an object",
		kind: KindPeerAuthentication,
		spec: `[1, 2]`,
		want: []want{e("spec", "must be an object, not a list")},
	}, {
		name:       "wrong apiVersion lists the accepted ones",
		apiVersion: "security.istio.io/v1alpha1",
		kind:       KindPeerAuthentication,
		spec:       `{}`,
		want:       []want{e("apiVersion", "use security.istio.io/v1 or security.istio.io/v1beta1")},
	}, {
		name:       "DestinationRule in the security group",
		apiVersion: "security.istio.io/v1",
		kind:       KindDestinationRule,
		spec:       `{host: a}`,
		want:       []want{e("apiVersion", "networking.istio.io/v1, networking.istio.io/v1beta1 or networking.istio.io/v1alpha3")},
	}, {
		name:       "not a policy kind",
		apiVersion: "networking.istio.io/v1",
		kind:       "VirtualService",
		spec:       `{}`,
		want:       []want{e("kind", `"VirtualService" is not a policy kind`)},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			apiVersion := tt.apiVersion
			if apiVersion == "" {
				apiVersion = acceptedVersions[tt.kind][0]
			}
			obj, ps := decodeYAML(t, apiVersion, tt.kind, tt.spec)
			if obj != nil {
				t.Errorf("Decode returned an object despite errors: %+v", obj)
			}
			checkProblems(t, ps, tt.want)
			for _, p := range ps {
				if p.Namespace != "default" || p.Name != "p" || p.Location != testMeta.Origin || p.Kind != tt.kind {
					t.Errorf("problem %q does not identify the object: %+v", p.Error(), p)
				}
			}
		})
	}
}

func TestDecodeInvalidJSON(t *testing.T) {
	for _, spec := range []string{`{"mtls":`, `{} {}`} {
		obj, ps := Decode("security.istio.io/v1", KindPeerAuthentication, testMeta, []byte(spec))
		if obj != nil {
			t.Errorf("%q: got object", spec)
		}
		checkProblems(t, ps, []want{e("spec", "is not valid JSON")})
	}
}

func TestProblemError(t *testing.T) {
	_, ps := decodeYAML(t, "security.istio.io/v1", KindPeerAuthentication, `{mtls: {mode: STRIKT}}`)
	const wantText = `mesh.yaml:7: PeerAuthentication default/p: spec.mtls.mode: "STRIKT" is not one of UNSET, DISABLE, PERMISSIVE, STRICT`
	if len(ps) != 1 || ps[0].Error() != wantText {
		t.Fatalf("got %q, want %q", render(ps), wantText)
	}
	if err := ps.Err(); err == nil || !strings.Contains(err.Error(), wantText) {
		t.Errorf("Problems.Err() = %v, want it to contain %q", err, wantText)
	}
}

func TestIsPolicyKind(t *testing.T) {
	tests := []struct {
		apiVersion, kind string
		want             bool
	}{
		{"security.istio.io/v1", KindPeerAuthentication, true},
		{"security.istio.io/v1beta1", KindAuthorizationPolicy, true},
		{"security.istio.io/v1", KindRequestAuthentication, true},
		{"networking.istio.io/v1alpha3", KindDestinationRule, true},
		// Wrong version still routes here so Decode can explain it.
		{"security.istio.io/v2", KindPeerAuthentication, true},
		{"networking.istio.io/v1", "VirtualService", false},
		{"v1", "Service", false},
		{"example.com/v1", KindPeerAuthentication, false},
		{"", KindPeerAuthentication, false},
	}
	for _, tt := range tests {
		if got := IsPolicyKind(tt.apiVersion, tt.kind); got != tt.want {
			t.Errorf("IsPolicyKind(%q, %q) = %v, want %v", tt.apiVersion, tt.kind, got, tt.want)
		}
	}
}

func TestSetAdd(t *testing.T) {
	var s Set
	objs := []Object{
		&PeerAuthentication{Meta: Meta{Namespace: "b", Name: "x"}},
		&PeerAuthentication{Meta: Meta{Namespace: "a", Name: "y"}},
		&DestinationRule{Meta: Meta{Namespace: "a", Name: "dr"}},
		&AuthorizationPolicy{Meta: Meta{Namespace: "a", Name: "ap"}},
		&RequestAuthentication{Meta: Meta{Namespace: "a", Name: "ra"}},
	}
	for _, o := range objs {
		s.Add(o)
	}
	s.Sort()
	if len(s.PeerAuthentications) != 2 || s.PeerAuthentications[0].Key() != "a/y" || s.PeerAuthentications[1].Key() != "b/x" {
		t.Errorf("PeerAuthentications not added and sorted: %v", s.PeerAuthentications)
	}
	if len(s.DestinationRules) != 1 || len(s.AuthorizationPolicies) != 1 || len(s.RequestAuthentications) != 1 {
		t.Errorf("objects not added to the right slices: %+v", s)
	}
}

// FuzzDecode checks that no input makes Decode panic, and that it returns an
// object exactly when it reports no error.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{}`, `null`, `[]`, `{"mtls":{"mode":"STRICT"}}`,
		`{"selector":{"matchLabels":{"app":"a"}},"portLevelMtls":{"8080":{"mode":"DISABLE"},"x":1}}`,
		`{"host":"*.a","trafficPolicy":{"tls":{"mode":"MUTUAL"},"portLevelSettings":[null,{"port":{"number":-1}}]}}`,
		`{"rules":[{"from":[{"source":{"principals":[1,null,"*a*"]}}],"when":[{"key":"request.auth.claims[a][b]"}]}]}`,
		`{"jwtRules":[{"issuer":"a","jwks":"{\"keys\":7}","fromHeaders":[{}]}]}`,
	} {
		for kind := range acceptedVersions {
			f.Add(kind, []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, kind string, spec []byte) {
		versions, ok := acceptedVersions[kind]
		if !ok {
			return
		}
		obj, ps := Decode(versions[0], kind, testMeta, spec)
		if (obj != nil) == ps.HasErrors() {
			t.Fatalf("object=%v with errors=%v:\n%s", obj != nil, ps.HasErrors(), render(ps))
		}
	})
}

// TestDecodeDryRun checks Istio's istio.io/dry-run annotation: "true" makes
// an AuthorizationPolicy a dry run, "false" enforces it, any other value
// refuses the object (Istio would enforce it), and on other kinds it is
// ignored with a warning, as Istio ignores it.
func TestDecodeDryRun(t *testing.T) {
	for _, c := range []struct {
		kind, value string
		dryRun      bool
		wants       []want
	}{
		{KindAuthorizationPolicy, "true", true, nil},
		{KindAuthorizationPolicy, "false", false, nil},
		{KindAuthorizationPolicy, "True", false, []want{e("metadata.annotations.istio.io/dry-run", `"True" is not one of "true", "false"`)}},
		{KindAuthorizationPolicy, "", false, []want{e("metadata.annotations.istio.io/dry-run", `"" is not one of`)}},
		{KindPeerAuthentication, "true", false, []want{w("metadata.annotations.istio.io/dry-run", "is read only on an AuthorizationPolicy")}},
	} {
		t.Run(c.kind+"/"+c.value, func(t *testing.T) {
			meta := testMeta
			meta.Annotations = map[string]string{AnnotationDryRun: c.value, "kubectl.kubernetes.io/last-applied-configuration": "{}"}
			obj, ps := Decode("security.istio.io/v1", c.kind, meta, []byte(`{}`))
			checkProblems(t, ps, c.wants)
			if ps.HasErrors() {
				if obj != nil {
					t.Fatalf("an object with an error was returned: %+v", obj)
				}
				return
			}
			ap, ok := obj.(*AuthorizationPolicy)
			if got := ok && ap.DryRun; got != c.dryRun {
				t.Errorf("DryRun = %v, want %v", got, c.dryRun)
			}
		})
	}
	obj, ps := Decode("security.istio.io/v1", KindAuthorizationPolicy, testMeta, []byte(`{}`))
	checkProblems(t, ps, nil)
	if obj.(*AuthorizationPolicy).DryRun {
		t.Error("a policy without the annotation is a dry run")
	}
}
