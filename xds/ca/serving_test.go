package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestServingCertificate(t *testing.T) {
	now, set := fakeClock(t0)
	c := newSelfSigned(t, t.TempDir(), now)
	var logs bytes.Buffer
	s, err := c.NewServingCertificate([]string{"meshd.minimesh-system.svc", "127.0.0.1", "::1"}, testLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(c.RootPEM())
	for _, host := range []string{"meshd.minimesh-system.svc", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: t0,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("certificate does not verify for %s against the mesh root: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.minimesh-system.svc", Roots: roots, CurrentTime: t0}); err == nil {
		t.Error("certificate verifies for a host it was not issued for")
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || len(leaf.URIs) != 0 || leaf.IsCA {
		t.Errorf("ext key usage %v, URIs %v, CA %v; want server auth only, no SPIFFE identity, not a CA", leaf.ExtKeyUsage, leaf.URIs, leaf.IsCA)
	}
	if got, want := leaf.NotAfter, t0.Add(DefaultWorkloadTTL); !got.Equal(want) {
		t.Errorf("NotAfter = %s, want %s (the CA's TTL)", got, want)
	}

	// Before half its lifetime the same certificate is served; after, a new
	// one with a new key.
	set(t0.Add(DefaultWorkloadTTL/2 - time.Second))
	if again, _ := s.GetCertificate(nil); again != first {
		t.Error("certificate replaced before half its lifetime")
	}
	set(t0.Add(DefaultWorkloadTTL / 2))
	renewed, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 || renewed.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("renewal kept the serial number or the key")
	}
	if !strings.Contains(logs.String(), "serving certificate renewed") {
		t.Errorf("renewal not logged; log:\n%s", logs.String())
	}
}

func TestServingCertificateServesOverTLS(t *testing.T) {
	c := newSelfSigned(t, t.TempDir(), nil)
	s, err := c.NewServingCertificate([]string{"127.0.0.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: s.GetCertificate, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		conn, err := lis.Accept()
		if err == nil {
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(c.RootPEM())
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", port), &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("a client trusting only the mesh root cannot connect: %v", err)
	}
	if err := conn.Close(); err != nil {
		t.Error(err)
	}
}

func TestServingCertificateHosts(t *testing.T) {
	c := newSelfSigned(t, t.TempDir(), nil)
	for _, tt := range []struct {
		hosts []string
		want  string
	}{
		{nil, "needs at least one DNS name or IP address"},
		{[]string{"Meshd.svc"}, `host "Meshd.svc" is neither an IP address nor a DNS name: it has 'M' at position 1`},
		{[]string{"*.minimesh-system.svc"}, `host "*.minimesh-system.svc" is neither`},
		{[]string{"fe80::1%eth0"}, "with a zone cannot go into a certificate"},
	} {
		_, err := c.NewServingCertificate(tt.hosts, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewServingCertificate(%q) = %v, want an error containing %q", tt.hosts, err, tt.want)
		}
	}
}

func TestServingCertificateOfPluginCA(t *testing.T) {
	pki := newTestPKI(t, t0.Add(-time.Hour), t0.Add(365*24*time.Hour))
	opts := pki.options()
	opts.Now = func() time.Time { return t0 }
	c, err := New(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.NewServingCertificate([]string{"meshd.minimesh-system.svc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := s.GetCertificate(nil)
	if len(cert.Certificate) != 2 {
		t.Fatalf("chain has %d certificates, want the leaf and the plug-in intermediate", len(cert.Certificate))
	}
	inter, err := x509.ParseCertificate(cert.Certificate[1])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(c.RootPEM())
	intermediates := x509.NewCertPool()
	intermediates.AddCert(inter)
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: "meshd.minimesh-system.svc", Roots: roots,
		Intermediates: intermediates, CurrentTime: t0}); err != nil {
		t.Errorf("certificate does not verify through the plug-in chain: %v", err)
	}
}

func TestServingCertificateAfterCAExpiry(t *testing.T) {
	pki := newTestPKI(t, t0.Add(-time.Hour), t0.Add(DefaultWorkloadTTL))
	now, set := fakeClock(t0)
	opts := pki.options()
	opts.Now = now
	c, err := New(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.NewServingCertificate([]string{"127.0.0.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	set(t0.Add(DefaultWorkloadTTL + time.Second))
	if _, err := s.GetCertificate(nil); err == nil || !strings.Contains(err.Error(), "the CA certificate expired") {
		t.Errorf("GetCertificate after the CA expired = %v, want an error saying the CA certificate expired", err)
	}
}
