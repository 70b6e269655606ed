package e2e

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/minimesh/minimesh/e2e/kubeenv"
)

// expiredToken is a service-account token for p that the API server would
// have issued an hour ago with a one-hour life: correctly signed, right
// issuer and audience, bound to p's real service account, but expired.
func expiredToken(t *testing.T, env *kubeenv.Env, p *kpod) string {
	t.Helper()
	sa, err := env.Client().CoreV1().ServiceAccounts(p.namespace).Get(t.Context(), p.sa, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := map[string]any{
		"iss": kubeenv.Issuer, "sub": "system:serviceaccount:" + p.namespace + ":" + p.sa, "aud": []string{tokenAudience},
		"iat": now.Add(-2 * time.Hour).Unix(), "nbf": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix(),
		"kubernetes.io": map[string]any{"namespace": p.namespace, "serviceaccount": map[string]any{"name": p.sa, "uid": string(sa.UID)}},
	}
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := env.ServiceAccountSigningKey().Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// certHasURI reports whether the first certificate of a PEM chain carries
// uri as a URI SAN.
func certHasURI(t *testing.T, chain []byte, uri string) bool {
	t.Helper()
	block, _ := pem.Decode(chain)
	if block == nil {
		t.Errorf("the certificate chain is not PEM: %q", chain)
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Errorf("parsing the workload certificate: %v", err)
		return false
	}
	for _, u := range cert.URIs {
		if u.String() == uri {
			return true
		}
	}
	t.Logf("certificate URIs: %v", cert.URIs)
	return false
}
