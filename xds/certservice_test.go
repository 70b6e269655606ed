package xds

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	securityv1alpha1 "istio.io/api/security/v1alpha1"

	"github.com/minimesh/minimesh/xds/auth"
)

// csrHarness serves meshd on loopback with static tokens for default/web
// ("web-token") and default/db ("db-token").
func csrHarness(t *testing.T, tweak func(*Options)) (*harness, securityv1alpha1.IstioCertificateServiceClient) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "xds-tokens")
	if err := os.WriteFile(file, []byte("web-token,default,web\ndb-token,default,db\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.LoadStaticTokens(file)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(o *Options) {
		o.Authenticator = tokens
		if tweak != nil {
			tweak(o)
		}
	})
	return h, securityv1alpha1.NewIstioCertificateServiceClient(h.conn)
}

func newCSR(t *testing.T, key crypto.Signer, uris ...string) string {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func p256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// verifyChain checks an IstioCertificateResponse the way a peer would: the
// leaf verifies to the root at the end of the chain, which is meshd's
// bundle, and it carries exactly one URI SAN.
func verifyChain(t *testing.T, h *harness, resp *securityv1alpha1.IstioCertificateResponse) *x509.Certificate {
	t.Helper()
	chain := resp.GetCertChain()
	if len(chain) < 2 {
		t.Fatalf("cert_chain has %d entries; want the leaf, any intermediates and the root", len(chain))
	}
	if last := chain[len(chain)-1]; last != string(h.ca.RootPEM()) {
		t.Fatalf("the last entry of cert_chain is not meshd's trust bundle")
	}
	var certs []*x509.Certificate
	for i, p := range chain[:len(chain)-1] {
		block, rest := pem.Decode([]byte(p))
		if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
			t.Fatalf("cert_chain[%d] is not one PEM certificate", i)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.ca.RootPEM())
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: h.clock.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the certificate does not verify to meshd's root: %v", err)
	}
	if len(certs[0].URIs) != 1 {
		t.Fatalf("the certificate has URI SANs %v; want exactly one", certs[0].URIs)
	}
	return certs[0]
}

func TestCreateCertificateSignsForTheToken(t *testing.T) {
	h, client := csrHarness(t, nil)
	key := p256(t)
	resp, err := client.CreateCertificate(withToken(h.ctx, "web-token"), &securityv1alpha1.IstioCertificateRequest{
		Csr:              newCSR(t, key),
		ValidityDuration: 3600,
	})
	if err != nil {
		t.Fatal(err)
	}
	leaf := verifyChain(t, h, resp)
	if got, want := leaf.URIs[0].String(), "spiffe://cluster.local/ns/default/sa/web"; got != want {
		t.Errorf("URI SAN %s, want %s", got, want)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Errorf("the certificate is not for the request's key")
	}
	if got := leaf.NotAfter.Sub(h.clock.Now()); got > time.Hour+time.Second || got < time.Hour-time.Minute {
		t.Errorf("lifetime %s; asked for 1h", got)
	}
	for _, p := range resp.GetCertChain() {
		if strings.Contains(p, "PRIVATE KEY") {
			t.Errorf("the response holds a private key")
		}
	}
}

// A token for default/web with a request that asks for default/db, or for
// another namespace, gets default/web: the request's claims count for
// nothing.
func TestCreateCertificateIgnoresClaimedIdentity(t *testing.T) {
	h, client := csrHarness(t, nil)
	for _, claim := range []string{
		"spiffe://cluster.local/ns/default/sa/db",
		"spiffe://cluster.local/ns/kube-system/sa/admin",
	} {
		resp, err := client.CreateCertificate(withToken(h.ctx, "web-token"), &securityv1alpha1.IstioCertificateRequest{Csr: newCSR(t, p256(t), claim)})
		if err != nil {
			t.Fatalf("claim %s: %v", claim, err)
		}
		leaf := verifyChain(t, h, resp)
		if got, want := leaf.URIs[0].String(), "spiffe://cluster.local/ns/default/sa/web"; got != want {
			t.Errorf("token for default/web, request for %s: certificate for %s, want %s", claim, got, want)
		}
	}
}

func TestCreateCertificateRefusals(t *testing.T) {
	h, client := csrHarness(t, nil)
	good := newCSR(t, p256(t))
	block, _ := pem.Decode([]byte(good))
	tampered := bytes.Clone(block.Bytes)
	tampered[len(tampered)-3] ^= 0xff
	badSig := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}))

	for _, tt := range []struct {
		name  string
		ctx   context.Context
		csr   string
		code  codes.Code
		words string
	}{
		{"no token", h.ctx, good, codes.Unauthenticated, "no authorization header"},
		{"unknown token", withToken(h.ctx, "forged"), good, codes.Unauthenticated, "refused"},
		{"not PEM", withToken(h.ctx, "web-token"), "hello", codes.InvalidArgument, "not PEM"},
		{"bad signature", withToken(h.ctx, "web-token"), badSig, codes.InvalidArgument, "bad signature"},
		{"too large", withToken(h.ctx, "web-token"), strings.Repeat("#", 64<<10+1), codes.InvalidArgument, "more than the 65536"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.CreateCertificate(tt.ctx, &securityv1alpha1.IstioCertificateRequest{Csr: tt.csr})
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.words) {
				t.Fatalf("got %v; want %v with a message containing %q", err, tt.code, tt.words)
			}
		})
	}
}

// One identity over its burst is refused with ResourceExhausted; another
// identity is not affected.
func TestCreateCertificateRateLimitsPerIdentity(t *testing.T) {
	h, client := csrHarness(t, func(o *Options) { o.CSRRate, o.CSRBurst = 0.001, 3 })
	req := &securityv1alpha1.IstioCertificateRequest{Csr: newCSR(t, p256(t))}
	for i := range 3 {
		if _, err := client.CreateCertificate(withToken(h.ctx, "web-token"), req); err != nil {
			t.Fatalf("request %d within the burst: %v", i+1, err)
		}
	}
	_, err := client.CreateCertificate(withToken(h.ctx, "web-token"), req)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("request over the burst: %v; want ResourceExhausted", err)
	}
	if _, err := client.CreateCertificate(withToken(h.ctx, "db-token"), req); err != nil {
		t.Fatalf("another identity was limited too: %v", err)
	}
}

// With authentication off the identity is that of the pod the node ID in
// the metadata names, as on xDS; the request's own SAN counts for nothing,
// and a pod meshd does not know yet is Unavailable, to be retried.
func TestCreateCertificateWithoutAuthentication(t *testing.T) {
	h := newHarness(t, nil)
	h.update(mesh(t, shop...))
	client := securityv1alpha1.NewIstioCertificateServiceClient(h.conn)
	asNode := func(id string) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{auth.MetadataNodeID: structpb.NewStringValue(id)}}
	}
	resp, err := client.CreateCertificate(h.ctx, &securityv1alpha1.IstioCertificateRequest{
		Csr:      newCSR(t, p256(t), "spiffe://cluster.local/ns/kube-system/sa/admin"),
		Metadata: asNode(nodeID("product-0", "default", "127.0.0.2")),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := verifyChain(t, h, resp).URIs[0].String(); got != "spiffe://cluster.local/ns/default/sa/product" {
		t.Errorf("certificate for %s, want product's", got)
	}
	for _, tt := range []struct {
		name  string
		md    *structpb.Struct
		code  codes.Code
		words string
	}{
		{"no node ID", nil, codes.InvalidArgument, auth.MetadataNodeID},
		{"bad node ID", asNode("product-0"), codes.InvalidArgument, "bad node ID"},
		{"other cluster domain", asNode(auth.SidecarNodeID("127.0.0.2", "product-0", "default", "example.org").String()), codes.InvalidArgument, "cluster domain"},
		{"unknown pod", asNode(nodeID("ghost-0", "default", "127.0.0.9")), codes.Unavailable, "not known yet"},
	} {
		_, err := client.CreateCertificate(h.ctx, &securityv1alpha1.IstioCertificateRequest{Csr: newCSR(t, p256(t)), Metadata: tt.md})
		if st := status.Convert(err); st.Code() != tt.code || !strings.Contains(st.Message(), tt.words) {
			t.Errorf("%s: %v; want %v with a message containing %q", tt.name, err, tt.code, tt.words)
		}
	}
}

func TestIdentityLimiter(t *testing.T) {
	l := newIdentityLimiter(2, 2) // 2 a second, burst 2
	t0 := time.Unix(1000, 0)
	for i, want := range []bool{true, true, false} {
		if got := l.allow("a", t0); got != want {
			t.Fatalf("call %d at t0: allow = %v, want %v", i+1, got, want)
		}
	}
	if !l.allow("b", t0) {
		t.Fatalf("identity b shares a's bucket")
	}
	if !l.allow("a", t0.Add(500*time.Millisecond)) {
		t.Fatalf("no token after half a second at 2 a second")
	}
	if l.allow("a", t0.Add(500*time.Millisecond)) {
		t.Fatalf("two tokens after half a second at 2 a second")
	}
}

func TestIdentityLimiterIsBounded(t *testing.T) {
	l := newIdentityLimiter(1, 1)
	t0 := time.Unix(1000, 0)
	for i := range maxLimitedIdentities {
		l.allow(string(rune(i+0x1000)), t0)
	}
	if l.allow("new", t0) {
		t.Fatalf("a new identity got a bucket while the table is full of busy ones")
	}
	// A second later every bucket has refilled and is forgotten.
	if !l.allow("new", t0.Add(time.Second)) {
		t.Fatalf("a new identity was refused after the others went quiet")
	}
	if n := len(l.buckets); n != 1 {
		t.Fatalf("%d buckets kept; want only the new one", n)
	}
}
