package ca

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func makeCSR(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignCSRUsesTheAuthenticatedIdentity(t *testing.T) {
	now, _ := fakeClock(t0)
	c := newSelfSigned(t, t.TempDir(), now)
	key := mustKey(t)
	// The request claims to be an administrator; the caller authenticated
	// default/web, and only that may end up in the certificate.
	evil, _ := url.Parse("spiffe://cluster.local/ns/kube-system/sa/admin")
	csrPEM := makeCSR(t, key, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		DNSNames:    []string{"kubernetes.default.svc"},
		URIs:        []*url.URL{evil},
		IPAddresses: nil,
	})
	cert, err := c.SignCSR(csrPEM, "default", "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.KeyPEM) != 0 {
		t.Errorf("a CSR-signed certificate carries a key; the agent keeps its own")
	}
	leaf := verifyLeaf(t, cert.ChainPEM, c.RootPEM(), now())
	const want = "spiffe://cluster.local/ns/default/sa/web"
	if cert.SPIFFEID != want || len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Errorf("URI SANs = %v (SPIFFEID %q), want only %s", leaf.URIs, cert.SPIFFEID, want)
	}
	if len(leaf.DNSNames) != 0 || len(leaf.Subject.Names) != 0 {
		t.Errorf("claims from the request leaked into the certificate: DNS %v, subject %q", leaf.DNSNames, leaf.Subject)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Errorf("certificate is not for the request's public key")
	}
}

func TestSignCSRErrors(t *testing.T) {
	now, _ := fakeClock(t0)
	c := newSelfSigned(t, t.TempDir(), now)
	good := makeCSR(t, mustKey(t), &x509.CertificateRequest{})

	// Flip a bit in the signature, which is the last bytes of the DER.
	block, _ := pem.Decode(good)
	tampered := bytes.Clone(block.Bytes)
	tampered[len(tampered)-3] ^= 0xff
	badSig := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered})

	tests := []struct {
		name   string
		csr    []byte
		ns, sa string
		want   string
	}{
		{"not PEM", []byte("hello"), "default", "web", "is not PEM"},
		{"wrong block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), "default", "web", `"CERTIFICATE"`},
		{"not DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("junk")}), "default", "web", "is not valid"},
		{"bad signature", badSig, "default", "web", "bad signature"},
		{"weak RSA key", makeCSR(t, rsaKey(t, 1024), &x509.CertificateRequest{}), "default", "web", "1024 bits is too small"},
		{"Ed25519 key", makeCSR(t, ed25519Key(t), &x509.CertificateRequest{}), "default", "web", "ed25519.PublicKey keys are not supported"},
		{"too large", append(bytes.Repeat([]byte("#"), MaxCSRSize), good...), "default", "web", "more than the 65536 a request may have"},
		{"bad identity", good, "default", "a/b", `service account "a/b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.SignCSR(tt.csr, tt.ns, tt.sa, 0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if badRequest := tt.name != "bad identity"; errors.Is(err, ErrBadCSR) != badRequest {
				t.Errorf("errors.Is(err, ErrBadCSR) = %v, want %v", !badRequest, badRequest)
			}
		})
	}
}

// TestSignCSRMakesNoKey is the contract of the workload path: what it
// returns holds no private key anywhere, and the certificate is for the
// request's own public key, so the key can only be the one the caller made.
func TestSignCSRMakesNoKey(t *testing.T) {
	now, _ := fakeClock(t0)
	c := newSelfSigned(t, t.TempDir(), now)
	key := mustKey(t)
	cert, err := c.SignCSR(makeCSR(t, key, &x509.CertificateRequest{}), "default", "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	v := reflect.ValueOf(*cert)
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Uint8 && bytes.Contains(f.Bytes(), []byte("PRIVATE KEY")) {
			t.Errorf("Certificate.%s holds a private key", v.Type().Field(i).Name)
		}
	}
	if len(cert.KeyPEM) != 0 {
		t.Errorf("KeyPEM is %d bytes, want none", len(cert.KeyPEM))
	}
	for i, b := 0, cert.ChainPEM; ; i++ {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Errorf("chain block %d is %q, want only certificates", i, block.Type)
		}
	}
	leaf := verifyLeaf(t, cert.ChainPEM, c.RootPEM(), now())
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Errorf("the certificate is for another key than the request's")
	}
}

func TestSignCSRLifetime(t *testing.T) {
	now, _ := fakeClock(t0)
	c := newSelfSigned(t, t.TempDir(), now) // workload lifetime 24h
	csr := makeCSR(t, mustKey(t), &x509.CertificateRequest{})
	for _, tt := range []struct {
		ask, want time.Duration
	}{
		{0, DefaultWorkloadTTL},
		{-time.Hour, DefaultWorkloadTTL},
		{time.Hour, time.Hour},
		{365 * 24 * time.Hour, DefaultWorkloadTTL},
		{time.Second, minWorkloadTTL},
	} {
		cert, err := c.SignCSR(csr, "default", "web", tt.ask)
		if err != nil {
			t.Fatal(err)
		}
		if got := cert.NotAfter.Sub(t0); got != tt.want {
			t.Errorf("asked for %s: lifetime %s, want %s", tt.ask, got, tt.want)
		}
	}
}

func ed25519Key(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
