package admission

import (
	"net/http"
	"slices"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// raw turns a YAML object into the JSON an AdmissionRequest carries.
func raw(t *testing.T, y string) runtime.RawExtension {
	t.Helper()
	if y == "" {
		return runtime.RawExtension{}
	}
	b, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return runtime.RawExtension{Raw: b}
}

const (
	strictPA = `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  mtls: {mode: STRICT}
`
	stricttPA = `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  mtls: {mode: STRICTT}
`
	stricttMsg = `error: PeerAuthentication shop/strict: spec.mtls.mode: "STRICTT" is not one of UNSET, DISABLE, PERMISSIVE, STRICT`
)

func TestReview(t *testing.T) {
	tests := []struct {
		name      string
		op        admissionv1.Operation
		namespace string // of the request
		object    string
		old       string
		// wantDenied is the status message of a refusal; empty means allowed.
		wantDenied   string
		wantWarnings []string
	}{
		{name: "valid policy", op: admissionv1.Create, object: strictPA},
		{name: "invalid mode", op: admissionv1.Create, object: stricttPA, wantDenied: stricttMsg},
		{
			name: "every error, one line each, as meshctl validate prints them",
			op:   admissionv1.Create,
			object: `
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: typo, namespace: shop}
spec:
  mTLS: {mode: STRICT}
  selector: {matchLabels: {app: "a*"}}
`,
			wantDenied: `error: PeerAuthentication shop/typo: spec.mTLS: unknown field; allowed: selector, mtls, portLevelMtls (names are case-sensitive: did you mean "mtls"?)` + "\n" +
				`error: PeerAuthentication shop/typo: spec.selector.matchLabels[app]: wildcards are not supported in selectors; use the exact label name and value`,
		},
		{
			name: "warnings are admitted and returned",
			op:   admissionv1.Create,
			object: `
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
`,
			wantWarnings: []string{"DestinationRule shop/web: spec.trafficPolicy.loadBalancer: ignored by minimesh: only tls is implemented in a traffic policy"},
		},
		{
			name: "a version minimesh does not read",
			op:   admissionv1.Create,
			object: `
apiVersion: security.istio.io/v2
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
`,
			wantDenied: `error: AuthorizationPolicy shop/p: apiVersion: "security.istio.io/v2" is not accepted for AuthorizationPolicy; use security.istio.io/v1 or security.istio.io/v1beta1`,
		},
		{
			name:      "the namespace comes from the request when the object has none",
			op:        admissionv1.Create,
			namespace: "shop",
			object: `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict}
spec:
  mtls: {mode: STRICTT}
`,
			wantDenied: stricttMsg,
		},
		{name: "update into an invalid version", op: admissionv1.Update, object: stricttPA, old: strictPA, wantDenied: stricttMsg},
		{
			name: "update that keeps an invalid spec (a new label)",
			op:   admissionv1.Update,
			object: `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop, labels: {team: a}}
spec:
  mtls: {mode: STRICTT}
`,
			old:          stricttPA,
			wantWarnings: []string{stricttMsg},
		},
		{
			name: "update of an object being deleted (a finalizer removed)",
			op:   admissionv1.Update,
			object: `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop, deletionTimestamp: "2026-01-01T00:00:00Z"}
spec:
  mtls: {mode: STRICTT}
`,
			old: `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop, deletionTimestamp: "2026-01-01T00:00:00Z", finalizers: [x]}
spec:
  mtls: {mode: STRICT}
`,
			wantWarnings: []string{stricttMsg},
		},
		{name: "delete", op: admissionv1.Delete, old: stricttPA},
		{name: "connect", op: admissionv1.Connect},
		{
			name: "a kind minimesh does not read",
			op:   admissionv1.Create,
			object: `
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: shop}
data: {mode: STRICTT}
`,
		},
		{
			name:       "an object that cannot be read",
			op:         admissionv1.Create,
			object:     `{apiVersion: security.istio.io/v1, metadata: {name: p}}`,
			wantDenied: "the object in the admission request cannot be read: Object 'Kind' is missing in '{\"apiVersion\":\"security.istio.io/v1\",\"metadata\":{\"name\":\"p\"}}'",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &admissionv1.AdmissionRequest{
				UID: "uid-1", Operation: tt.op, Namespace: tt.namespace,
				Object: raw(t, tt.object), OldObject: raw(t, tt.old),
			}
			resp := Review(req)
			if resp.UID != req.UID {
				t.Errorf("response UID %q, want the request's %q", resp.UID, req.UID)
			}
			if tt.wantDenied == "" {
				if !resp.Allowed {
					t.Errorf("refused with %q, want allowed", resp.Result.Message)
				}
			} else {
				switch {
				case resp.Allowed:
					t.Errorf("allowed, want refused with %q", tt.wantDenied)
				case resp.Result == nil:
					t.Error("refused without a status")
				default:
					if resp.Result.Message != tt.wantDenied {
						t.Errorf("message:\n%s\nwant:\n%s", resp.Result.Message, tt.wantDenied)
					}
					if resp.Result.Code != http.StatusUnprocessableEntity || resp.Result.Reason != metav1.StatusReasonInvalid {
						t.Errorf("status %d %s, want 422 Invalid", resp.Result.Code, resp.Result.Reason)
					}
				}
			}
			if !slices.Equal(resp.Warnings, tt.wantWarnings) {
				t.Errorf("warnings %q, want %q", resp.Warnings, tt.wantWarnings)
			}
		})
	}
}
