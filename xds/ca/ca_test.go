package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// t0 is a fixed instant for the fake clock.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock returns a clock the test can move.
func fakeClock(start time.Time) (now func() time.Time, set func(time.Time)) {
	cur := start
	return func() time.Time { return cur }, func(t time.Time) { cur = t }
}

// testLogger returns a logger writing into buf, to assert on warnings.
func testLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newSelfSigned(t *testing.T, dir string, now func() time.Time) *CA {
	t.Helper()
	var logs bytes.Buffer
	c, err := New(Options{Dir: dir, Now: now}, testLogger(&logs))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func parsePEMCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			t.Fatalf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("parse certificate: %v", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("no certificates in PEM")
	}
	return out
}

// verifyLeaf checks that chainPEM's first certificate verifies against
// rootPEM for both server and client use, at time at, and returns it.
func verifyLeaf(t *testing.T, chainPEM, rootPEM []byte, at time.Time) *x509.Certificate {
	t.Helper()
	chain := parsePEMCerts(t, chainPEM)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("root PEM holds no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := chain[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{usage},
		}); err != nil {
			t.Fatalf("workload certificate does not verify for usage %v: %v", usage, err)
		}
	}
	return chain[0]
}

func TestSelfSignedRootCreatedOnceAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	now, set := fakeClock(t0)
	first := newSelfSigned(t, dir, now)

	certPath, keyPath := filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile)
	for path, want := range map[string]os.FileMode{dir: 0o700, keyPath: 0o600, certPath: 0o644} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s mode = %#o, want %#o", path, got, want)
		}
	}
	certBytes, _ := os.ReadFile(certPath)
	keyBytes, _ := os.ReadFile(keyPath)
	if !bytes.Equal(first.RootPEM(), certBytes) {
		t.Errorf("RootPEM differs from %s", certPath)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("CA directory holds %d entries, want 2 (no temporary files left)", len(entries))
	}

	root := parsePEMCerts(t, first.RootPEM())[0]
	if !root.IsCA || root.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("root IsCA=%v KeyUsage=%v, want a CA allowed to sign certificates", root.IsCA, root.KeyUsage)
	}
	if root.Subject.CommonName != "minimesh" || len(root.Subject.Organization) != 1 || root.Subject.Organization[0] != "minimesh" {
		t.Errorf("root subject = %s, want CN=minimesh,O=minimesh", root.Subject)
	}
	if got, want := root.NotAfter, t0.Add(rootTTL); !got.Equal(want) {
		t.Errorf("root NotAfter = %s, want %s", got, want)
	}
	if !first.RootExpiry().Equal(root.NotAfter) {
		t.Errorf("RootExpiry = %s, want %s", first.RootExpiry(), root.NotAfter)
	}
	issued, err := first.Issue("default", "web")
	if err != nil {
		t.Fatal(err)
	}

	// A restart a day later must reuse the same root and leave the files alone.
	set(t0.Add(24 * time.Hour))
	second := newSelfSigned(t, dir, now)
	if !bytes.Equal(first.RootPEM(), second.RootPEM()) {
		t.Fatalf("root changed across restarts")
	}
	certAfter, _ := os.ReadFile(certPath)
	keyAfter, _ := os.ReadFile(keyPath)
	if !bytes.Equal(certBytes, certAfter) || !bytes.Equal(keyBytes, keyAfter) {
		t.Errorf("restart rewrote the root files")
	}
	// Certificates from before the restart and after it trust each other.
	verifyLeaf(t, issued.ChainPEM, second.RootPEM(), now())
	again, err := second.Issue("default", "web")
	if err != nil {
		t.Fatal(err)
	}
	verifyLeaf(t, again.ChainPEM, first.RootPEM(), now())
}

func TestIssue(t *testing.T) {
	now, _ := fakeClock(t0.Add(time.Hour))
	c, err := New(Options{Dir: t.TempDir(), TrustDomain: "example.org", Now: now}, testLogger(new(bytes.Buffer)))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Issue("back-end", "hello-world-rest-api")
	if err != nil {
		t.Fatal(err)
	}
	leaf := verifyLeaf(t, cert.ChainPEM, c.RootPEM(), now())

	const wantID = "spiffe://example.org/ns/back-end/sa/hello-world-rest-api"
	if cert.SPIFFEID != wantID {
		t.Errorf("SPIFFEID = %q, want %q", cert.SPIFFEID, wantID)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
		t.Errorf("URI SANs = %v, want [%s]", leaf.URIs, wantID)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("unexpected extra SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if len(leaf.Subject.Names) != 0 {
		t.Errorf("subject = %q, want empty", leaf.Subject)
	}
	if !sanCritical(t, leaf) {
		t.Errorf("subject alternative name extension is not critical although the subject is empty")
	}
	if leaf.IsCA {
		t.Errorf("workload certificate is a CA")
	}
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != want {
		t.Errorf("KeyUsage = %v, want %v", leaf.KeyUsage, want)
	}
	if leaf.SerialNumber.Text(16) != cert.Serial {
		t.Errorf("Serial = %s, certificate has %s", cert.Serial, leaf.SerialNumber.Text(16))
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("workload key is %T, want ECDSA P-256", leaf.PublicKey)
	}
	// The key belongs to the certificate, as a TLS stack would check.
	if _, err := tls.X509KeyPair(cert.ChainPEM, cert.KeyPEM); err != nil {
		t.Errorf("chain and key do not form a key pair: %v", err)
	}
	if !leaf.NotBefore.Equal(cert.NotBefore) || !leaf.NotAfter.Equal(cert.NotAfter) {
		t.Errorf("Certificate times %s..%s differ from the certificate's %s..%s", cert.NotBefore, cert.NotAfter, leaf.NotBefore, leaf.NotAfter)
	}

	// Every call gets its own key and serial.
	other, err := c.Issue("back-end", "hello-world-rest-api")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.KeyPEM, cert.KeyPEM) {
		t.Errorf("two issues share a private key")
	}
	if other.Serial == cert.Serial {
		t.Errorf("two issues share serial %s", cert.Serial)
	}
}

// sanCritical reports whether leaf's subjectAltName extension is critical.
func sanCritical(t *testing.T, leaf *x509.Certificate) bool {
	t.Helper()
	sanOID := asn1.ObjectIdentifier{2, 5, 29, 17}
	for _, ext := range leaf.Extensions {
		if ext.Id.Equal(sanOID) {
			return ext.Critical
		}
	}
	t.Fatalf("no subjectAltName extension")
	return false
}

func TestWorkloadValidity(t *testing.T) {
	// The plug-in intermediate is valid from t0 to t0+48h, so both the
	// NotBefore floor and the NotAfter ceiling can be exercised.
	pki := newTestPKI(t, t0, t0.Add(48*time.Hour))
	tests := []struct {
		name          string
		ttl           time.Duration
		at            time.Time
		wantNotBefore time.Time
		wantNotAfter  time.Time
	}{
		{"default ttl, backdated for skew", 0, t0.Add(time.Hour), t0.Add(time.Hour - clockSkew), t0.Add(25 * time.Hour)},
		{"custom ttl", time.Hour, t0.Add(2 * time.Hour), t0.Add(2*time.Hour - clockSkew), t0.Add(3 * time.Hour)},
		{"not before the CA's NotBefore", time.Hour, t0.Add(time.Minute), t0, t0.Add(time.Hour + time.Minute)},
		{"not after the CA's NotAfter", 24 * time.Hour, t0.Add(40 * time.Hour), t0.Add(40*time.Hour - clockSkew), t0.Add(48 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now, set := fakeClock(t0.Add(time.Minute))
			opts := pki.options()
			opts.WorkloadTTL, opts.Now = tt.ttl, now
			c, err := New(opts, testLogger(new(bytes.Buffer)))
			if err != nil {
				t.Fatal(err)
			}
			set(tt.at)
			cert, err := c.Issue("default", "web")
			if err != nil {
				t.Fatal(err)
			}
			leaf := verifyLeaf(t, cert.ChainPEM, c.RootPEM(), tt.at)
			if !leaf.NotBefore.Equal(tt.wantNotBefore) || !leaf.NotAfter.Equal(tt.wantNotAfter) {
				t.Errorf("validity %s..%s, want %s..%s", leaf.NotBefore, leaf.NotAfter, tt.wantNotBefore, tt.wantNotAfter)
			}
			// Renewal is half way from the moment of issue, not from the
			// backdated NotBefore: a 30s certificate must not be due at once.
			if want := tt.at.Add(tt.wantNotAfter.Sub(tt.at) / 2); !cert.RenewAt().Equal(want) {
				t.Errorf("RenewAt = %s, want %s", cert.RenewAt(), want)
			}
		})
	}
}

func TestIssueAfterCAExpiryFails(t *testing.T) {
	pki := newTestPKI(t, t0, t0.Add(48*time.Hour))
	now, set := fakeClock(t0.Add(time.Hour))
	opts := pki.options()
	opts.Now = now
	c, err := New(opts, testLogger(new(bytes.Buffer)))
	if err != nil {
		t.Fatal(err)
	}
	set(t0.Add(49 * time.Hour))
	if _, err := c.Issue("default", "web"); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Issue after the CA expired: err = %v, want an error saying it expired", err)
	}
}

func TestPluginCA(t *testing.T) {
	pki := newTestPKI(t, t0.Add(-time.Hour), t0.Add(365*24*time.Hour))
	now, _ := fakeClock(t0)
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
	}{
		{"chain is root only", []*x509.Certificate{pki.root}},
		{"chain starts with the CA certificate", []*x509.Certificate{pki.inter, pki.root}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := pki.options()
			opts.Now = now
			writePEM(t, opts.ChainFile, encodeCerts(tc.chain), 0o644)
			c, err := New(opts, testLogger(new(bytes.Buffer)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c.RootPEM(), encodeCerts([]*x509.Certificate{pki.root})) {
				t.Errorf("trust bundle is not the organisation root")
			}
			if !c.RootExpiry().Equal(pki.root.NotAfter) || !c.SigningCertExpiry().Equal(pki.inter.NotAfter) {
				t.Errorf("RootExpiry %s, SigningCertExpiry %s; want %s and %s", c.RootExpiry(), c.SigningCertExpiry(), pki.root.NotAfter, pki.inter.NotAfter)
			}
			cert, err := c.Issue("default", "product")
			if err != nil {
				t.Fatal(err)
			}
			chain := parsePEMCerts(t, cert.ChainPEM)
			if len(chain) != 2 || !chain[1].Equal(pki.inter) {
				t.Fatalf("chain has %d certificates, want the workload certificate then the intermediate", len(chain))
			}
			leaf := verifyLeaf(t, cert.ChainPEM, c.RootPEM(), now())
			if leaf.URIs[0].String() != "spiffe://cluster.local/ns/default/sa/product" {
				t.Errorf("URI SAN = %s", leaf.URIs[0])
			}
			if !bytes.Equal(leaf.RawIssuer, pki.inter.RawSubject) {
				t.Errorf("workload certificate is not issued by the intermediate")
			}
		})
	}
}

func TestPluginCATwoLevels(t *testing.T) {
	// org root -> regional intermediate -> minimesh's CA: every certificate
	// between the workload and the root must travel in the chain.
	pki := newTestPKI(t, t0.Add(-time.Hour), t0.Add(365*24*time.Hour))
	midKey := mustKey(t)
	midTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(10), Subject: pkix.Name{CommonName: "regional"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	mid := mustCreate(t, midTmpl, pki.root, midKey.Public(), pki.rootKey)
	caKey := mustKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(11), Subject: pkix.Name{CommonName: "minimesh"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caCert := mustCreate(t, caTmpl, mid, caKey.Public(), midKey)
	caKeyPEM, err := encodeKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, pki.certFile, encodeCerts([]*x509.Certificate{caCert}), 0o644)
	writePEM(t, pki.keyFile, caKeyPEM, 0o600)
	writePEM(t, pki.chainFile, encodeCerts([]*x509.Certificate{mid, pki.root}), 0o644)

	now, _ := fakeClock(t0)
	opts := pki.options()
	opts.Now = now
	c, err := New(opts, testLogger(new(bytes.Buffer)))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Issue("default", "web")
	if err != nil {
		t.Fatal(err)
	}
	chain := parsePEMCerts(t, cert.ChainPEM)
	if len(chain) != 3 || !chain[1].Equal(caCert) || !chain[2].Equal(mid) {
		t.Fatalf("chain has %d certificates, want workload, minimesh CA, regional", len(chain))
	}
	verifyLeaf(t, cert.ChainPEM, c.RootPEM(), now())
}

func TestPluginCAErrors(t *testing.T) {
	// other is an unrelated organisation; it is never modified.
	other := newTestPKI(t, t0.Add(-time.Hour), t0.Add(365*24*time.Hour))
	tests := []struct {
		name  string
		edit  func(o *Options, p *testPKI)
		wants func(p *testPKI) []string
	}{
		{"chain file not set", func(o *Options, _ *testPKI) { o.ChainFile = "" },
			func(*testPKI) []string { return []string{"chain file is not set"} }},
		{"key and chain not set", func(o *Options, _ *testPKI) { o.KeyFile, o.ChainFile = "", "" },
			func(*testPKI) []string { return []string{"key and chain file is not set"} }},
		{"key of another CA", func(o *Options, _ *testPKI) { o.KeyFile = other.keyFile },
			func(p *testPKI) []string { return []string{other.keyFile, p.certFile, "does not match"} }},
		{"chain of another organisation", func(o *Options, _ *testPKI) { o.ChainFile = other.chainFile },
			func(p *testPKI) []string { return []string{p.certFile, other.chainFile, "does not chain"} }},
		{"chain without a root", func(o *Options, p *testPKI) {
			writePEM(t, o.ChainFile, encodeCerts([]*x509.Certificate{p.inter}), 0o644)
		}, func(p *testPKI) []string { return []string{p.chainFile, "no self-signed root"} }},
		{"certificate is not a CA", func(o *Options, p *testPKI) {
			writePEM(t, o.CertFile, encodeCerts([]*x509.Certificate{p.notCA}), 0o644)
			writePEM(t, o.KeyFile, p.notCAKeyPEM, 0o600)
		}, func(p *testPKI) []string { return []string{p.certFile, "is not a CA certificate"} }},
		{"corrupt chain", func(o *Options, _ *testPKI) { writePEM(t, o.ChainFile, []byte("not pem"), 0o644) },
			func(p *testPKI) []string { return []string{p.chainFile, "holds no PEM certificate"} }},
		{"missing key file", func(o *Options, p *testPKI) { o.KeyFile = filepath.Join(p.dir, "nope.pem") },
			func(p *testPKI) []string { return []string{filepath.Join(p.dir, "nope.pem"), "no such file"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pki := newTestPKI(t, t0.Add(-time.Hour), t0.Add(365*24*time.Hour))
			opts := pki.options()
			opts.Now, _ = fakeClock(t0)
			tt.edit(&opts, pki)
			_, err := New(opts, testLogger(new(bytes.Buffer)))
			if err == nil {
				t.Fatalf("New succeeded, want an error")
			}
			for _, w := range tt.wants(pki) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestSelfSignedErrors(t *testing.T) {
	wrongKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wrongKeyPEM, err := encodeKey(wrongKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// edit damages a freshly created CA directory.
		edit func(t *testing.T, certPath, keyPath string)
		// wantFile is the file the error must name.
		wantFile func(certPath, keyPath string) string
		want     string
	}{
		{"corrupt certificate", func(t *testing.T, c, _ string) { writePEM(t, c, []byte("garbage"), 0o644) },
			func(c, _ string) string { return c }, "holds no PEM certificate"},
		{"truncated certificate", func(t *testing.T, c, _ string) { truncate(t, c) },
			func(c, _ string) string { return c }, "holds no PEM certificate"},
		{"corrupt key", func(t *testing.T, _, k string) {
			writePEM(t, k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}), 0o600)
		}, func(_, k string) string { return k }, "not a valid key"},
		{"key is a certificate", func(t *testing.T, c, k string) { data, _ := os.ReadFile(c); writePEM(t, k, data, 0o600) },
			func(_, k string) string { return k }, `"CERTIFICATE"`},
		{"mismatched key", func(t *testing.T, _, k string) { writePEM(t, k, wrongKeyPEM, 0o600) },
			func(_, k string) string { return k }, "does not match"},
		{"key missing", func(t *testing.T, _, k string) { _ = os.Remove(k) },
			func(_, k string) string { return k }, "exists but"},
		{"certificate missing", func(t *testing.T, c, _ string) { _ = os.Remove(c) },
			func(c, _ string) string { return c }, "exists but"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			now, _ := fakeClock(t0)
			newSelfSigned(t, dir, now)
			certPath, keyPath := filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile)
			tt.edit(t, certPath, keyPath)
			_, err := New(Options{Dir: dir, Now: now}, testLogger(new(bytes.Buffer)))
			if err == nil {
				t.Fatalf("New succeeded, want an error")
			}
			if f := tt.wantFile(certPath, keyPath); !strings.Contains(err.Error(), f) {
				t.Errorf("error %q does not name %s", err, f)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestExpiredRootRefused(t *testing.T) {
	dir := t.TempDir()
	now, set := fakeClock(t0)
	newSelfSigned(t, dir, now)
	set(t0.Add(rootTTL + time.Hour))
	_, err := New(Options{Dir: dir, Now: now}, testLogger(new(bytes.Buffer)))
	if err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), RootCertFile) {
		t.Fatalf("err = %v, want an error naming %s and saying it expired", err, RootCertFile)
	}
}

func TestLooseKeyFileModeWarns(t *testing.T) {
	dir := t.TempDir()
	now, _ := fakeClock(t0)
	newSelfSigned(t, dir, now)
	keyPath := filepath.Join(dir, RootKeyFile)

	var quiet bytes.Buffer
	if _, err := New(Options{Dir: dir, Now: now}, testLogger(&quiet)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(quiet.String(), "chmod 600") {
		t.Errorf("warned about a key file with mode 0600: %s", quiet.String())
	}

	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	if _, err := New(Options{Dir: dir, Now: now}, testLogger(&logs)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "chmod 600") || !strings.Contains(logs.String(), keyPath) {
		t.Errorf("no warning naming %s in logs: %s", keyPath, logs.String())
	}
}

func TestOptionErrors(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"nothing configured", Options{}, "no CA configured"},
		{"uppercase trust domain", Options{Dir: "unused", TrustDomain: "Cluster.Local"}, `trust domain "Cluster.Local" contains 'C'`},
		{"trust domain with a path", Options{Dir: "unused", TrustDomain: "a/b"}, `contains '/'`},
		{"ttl too short", Options{Dir: "unused", WorkloadTTL: time.Second}, "too short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts, testLogger(new(bytes.Buffer)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestIdentityValidation(t *testing.T) {
	now, _ := fakeClock(t0)
	c := newSelfSigned(t, t.TempDir(), now)
	tests := []struct {
		ns, sa string
		want   string // "" means valid
	}{
		{"default", "default", ""},
		{"back-end", "hello-world-rest-api", ""},
		{"a1", "svc.v1", ""},
		{strings.Repeat("a", 63), strings.Repeat("b", 253), ""},
		{"", "web", `namespace "" is empty`},
		{"team/x", "web", `namespace "team/x" has '/'`},
		{"Default", "web", `namespace "Default" has 'D'`},
		{"-ns", "web", `namespace "-ns" has '-'`},
		{"ns-", "web", `namespace "ns-" has '-'`},
		{"a.b", "web", `namespace "a.b" has '.'`},
		{strings.Repeat("a", 64), "web", "is 64 characters long"},
		{"default", "", `service account "" is empty`},
		{"default", "sa/../admin", `service account "sa/../admin" has '/'`},
		{"default", "a..b", "has an empty part at position 3"},
		{"default", "web ", `has ' '`},
		{"default", strings.Repeat("b", 254), "is 254 characters long"},
	}
	for _, tt := range tests {
		t.Run(tt.ns+"/"+tt.sa, func(t *testing.T) {
			_, err := c.Issue(tt.ns, tt.sa)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Issue(%q, %q): %v", tt.ns, tt.sa, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Issue(%q, %q): err = %v, want one containing %q", tt.ns, tt.sa, err, tt.want)
			}
		})
	}
}

func TestSPIFFEID(t *testing.T) {
	if got, want := SPIFFEID("cluster.local", "default", "bookinfo-productpage"), "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"; got != want {
		t.Errorf("SPIFFEID = %q, want %q", got, want)
	}
}

// --- test PKI: an organisation root and an intermediate, as files ---

type testPKI struct {
	root, inter, notCA                *x509.Certificate
	rootKey                           *ecdsa.PrivateKey
	notCAKeyPEM                       []byte
	certFile, keyFile, chainFile, dir string
}

func (p *testPKI) options() Options {
	return Options{CertFile: p.certFile, KeyFile: p.keyFile, ChainFile: p.chainFile}
}

// newTestPKI builds org root → intermediate (valid interFrom..interTo) and
// writes the intermediate, its key and the chain (intermediate + root) to
// files in a fresh directory.
func newTestPKI(t *testing.T, interFrom, interTo time.Time) *testPKI {
	t.Helper()
	rootKey := mustKey(t)
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Example Org Root", Organization: []string{"Example"}},
		NotBefore: t0.Add(-24 * time.Hour), NotAfter: t0.Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	root := mustCreate(t, rootTmpl, rootTmpl, rootKey.Public(), rootKey)

	interKey := mustKey(t)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "minimesh intermediate", Organization: []string{"Example"}},
		NotBefore: interFrom, NotAfter: interTo,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	inter := mustCreate(t, interTmpl, root, interKey.Public(), rootKey)

	leafKey := mustKey(t)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "not a ca"},
		NotBefore: interFrom, NotAfter: interTo, BasicConstraintsValid: true,
	}
	notCA := mustCreate(t, leafTmpl, root, leafKey.Public(), rootKey)
	notCAKeyPEM, err := encodeKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	p := &testPKI{
		root: root, rootKey: rootKey, inter: inter, notCA: notCA, notCAKeyPEM: notCAKeyPEM, dir: dir,
		certFile:  filepath.Join(dir, "ca-cert.pem"),
		keyFile:   filepath.Join(dir, "ca-key.pem"),
		chainFile: filepath.Join(dir, "cert-chain.pem"),
	}
	interKeyPEM, err := encodeKey(interKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, p.certFile, encodeCerts([]*x509.Certificate{inter}), 0o644)
	writePEM(t, p.keyFile, interKeyPEM, 0o600)
	writePEM(t, p.chainFile, encodeCerts([]*x509.Certificate{inter, root}), 0o644)
	return p
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCreate(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writePEM(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, data[:len(data)/2], 0o644)
}

// rsaKey is used by the CSR tests for a key that is too small.
func rsaKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPluginKeyFormats(t *testing.T) {
	ecKey := mustKey(t)
	rsaCAKey := rsaKey(t, 2048)
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		key   crypto.Signer
		block *pem.Block
	}{
		{"PKCS #8", ecKey, &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}},
		{"SEC 1", ecKey, &pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}},
		{"PKCS #1 RSA", rsaCAKey, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaCAKey)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pki := newTestPKI(t, t0.Add(-time.Hour), t0.Add(365*24*time.Hour))
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(20), Subject: pkix.Name{CommonName: "minimesh " + tt.name},
				NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
				IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
			}
			inter := mustCreate(t, tmpl, pki.root, tt.key.Public(), pki.rootKey)
			writePEM(t, pki.certFile, encodeCerts([]*x509.Certificate{inter}), 0o644)
			writePEM(t, pki.keyFile, pem.EncodeToMemory(tt.block), 0o600)
			now, _ := fakeClock(t0)
			opts := pki.options()
			opts.Now = now
			c, err := New(opts, testLogger(new(bytes.Buffer)))
			if err != nil {
				t.Fatal(err)
			}
			cert, err := c.Issue("default", "web")
			if err != nil {
				t.Fatal(err)
			}
			verifyLeaf(t, cert.ChainPEM, c.RootPEM(), now())
		})
	}
}

func TestShortLifetimeIsNotDueAtOnce(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	pki := newTestPKI(t, t0, t0.Add(48*time.Hour))
	now, _ := fakeClock(t0.Add(time.Hour))
	opts := pki.options()
	opts.WorkloadTTL, opts.Now = 30*time.Second, now
	c, err := New(opts, testLogger(new(bytes.Buffer)))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Issue("default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cert.RenewAt(), t0.Add(time.Hour+15*time.Second); !got.Equal(want) {
		t.Errorf("RenewAt = %s, want %s (15s after issue)", got, want)
	}
}
