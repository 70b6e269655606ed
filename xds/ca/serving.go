package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// servingRetry is how long a serving certificate whose renewal failed is
// used before the CA is asked again; the certificate is still valid then
// (renewal starts at half its lifetime), and each TLS handshake would
// otherwise retry and log.
const servingRetry = 10 * time.Second

// ServingCertificate is a TLS server certificate for meshd's own servers
// (the admission webhook): DNS and IP SANs instead of a SPIFFE identity,
// signed by the CA, so whoever trusts the mesh root (RootPEM) can verify
// it. Its ECDSA P-256 key is generated here and never leaves the process.
// It is replaced at half its lifetime (the CA's workload TTL), on the first
// handshake after that, so no timer runs. Safe for concurrent use.
type ServingCertificate struct {
	ca    *CA
	dns   []string
	ips   []net.IP
	hosts string // for logs and errors
	log   *slog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	renewAt time.Time
}

// NewServingCertificate returns a serving certificate for hosts, each a DNS
// name or an IP address. The first certificate is issued at once, so a
// host that cannot go into a certificate, or a CA that cannot sign, is a
// start-up error.
func (c *CA) NewServingCertificate(hosts []string, log *slog.Logger) (*ServingCertificate, error) {
	if log == nil {
		log = slog.Default()
	}
	dns, ips, err := splitHosts(hosts)
	if err != nil {
		return nil, err
	}
	s := &ServingCertificate{ca: c, dns: dns, ips: ips, hosts: strings.Join(hosts, ","), log: log}
	cert, renewAt, err := s.issue()
	if err != nil {
		return nil, err
	}
	s.current, s.renewAt = cert, renewAt
	return s, nil
}

// CheckServingHosts reports whether every host can go into a serving
// certificate (NewServingCertificate checks the same), so a command line
// can be checked before anything starts.
func CheckServingHosts(hosts []string) error {
	_, _, err := splitHosts(hosts)
	return err
}

// splitHosts sorts hosts into DNS names and IP addresses, refusing what a
// certificate cannot name: the error names the host and the rule.
func splitHosts(hosts []string) (dns []string, ips []net.IP, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("a serving certificate needs at least one DNS name or IP address")
	}
	for _, h := range hosts {
		if ip, err := netip.ParseAddr(h); err == nil {
			if ip.Zone() != "" {
				return nil, nil, fmt.Errorf("serving certificate host %q: an IP address with a zone cannot go into a certificate", h)
			}
			ips = append(ips, net.IP(ip.AsSlice()))
			continue
		}
		if err := validateDNSSubdomain(h); err != nil {
			return nil, nil, fmt.Errorf("serving certificate host %q is neither an IP address nor a DNS name: it %w", h, err)
		}
		dns = append(dns, h)
	}
	return dns, ips, nil
}

// GetCertificate is for tls.Config.GetCertificate: the current certificate,
// replaced first when it is due. If the CA cannot sign a new one, the
// current one is served until it expires and the failure is logged.
func (s *ServingCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.ca.now()
	if now.Before(s.renewAt) {
		return s.current, nil
	}
	cert, renewAt, err := s.issue()
	if err != nil {
		if now.Before(s.current.Leaf.NotAfter) {
			s.log.Warn("cannot renew the serving certificate; serving the current one until it expires",
				"hosts", s.hosts, "notAfter", s.current.Leaf.NotAfter, "err", err)
			s.renewAt = now.Add(servingRetry)
			return s.current, nil
		}
		return nil, fmt.Errorf("serving certificate for %s expired and cannot be renewed: %w", s.hosts, err)
	}
	s.current, s.renewAt = cert, renewAt
	s.log.Info("serving certificate renewed", "hosts", s.hosts, "notAfter", cert.Leaf.NotAfter)
	return cert, nil
}

// issue signs a new certificate with a new key.
func (s *ServingCertificate) issue() (*tls.Certificate, time.Time, error) {
	c := s.ca
	what := "the serving certificate of " + s.hosts
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("generating the key of %s: %w", what, err)
	}
	now, notBefore, notAfter, err := c.validity(what, c.ttl)
	if err != nil {
		return nil, time.Time{}, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, time.Time{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		DNSNames:              s.dns,
		IPAddresses:           s.ips,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("signing %s: %w", what, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, time.Time{}, err
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), c.intermediatesPEM...)
	cert, err := tls.X509KeyPair(chain, keyPEM)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("loading %s: %w", what, err)
	}
	// Renew at half the lifetime, counted from issue rather than from the
	// backdated NotBefore (see Certificate.IssuedAt).
	renewAt := now.Add(notAfter.Sub(now) / 2)
	return &cert, renewAt, nil
}
