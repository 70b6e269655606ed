package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/minimesh/minimesh/xds/internal/clip"
)

// Issue signs a certificate for the workload identity (ns, sa) with a new
// ECDSA P-256 key, so every proxy holds its own key pair and one leaked
// key never affects another proxy.
func (c *CA) Issue(ns, sa string) (*Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a workload key: %w", err)
	}
	cert, err := c.sign(key.Public(), ns, sa, c.ttl)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	cert.KeyPEM = keyPEM
	return cert, nil
}

// MaxCSRSize bounds a PEM certificate request. A P-256 request is about
// 400 bytes and a 4096-bit RSA one under 2 KiB; 64 KiB leaves room for any
// extensions a client adds and nothing else.
const MaxCSRSize = 64 << 10

// ErrBadCSR is wrapped by every SignCSR error that is
// the request's fault (not PEM, not a request, a bad signature, a key type
// workloads cannot use), so a server can answer InvalidArgument.
var ErrBadCSR = errors.New("bad certificate request")

// SignCSR signs the public key in a PEM certificate request for (ns, sa),
// the identity the caller authenticated. Whatever subject or SANs the
// request claims are ignored: a request is only proof that its sender holds
// the private key, never of who it is.
//
// This is the CA's only path for keys it did not make, and it makes none:
// the certificate carries the request's public key and KeyPEM stays empty.
// ttl is the lifetime the caller asks for; zero or anything longer than
// the CA's workload lifetime gets the CA's, anything shorter than 10s gets
// 10s, so a client can shorten its certificate but never lengthen it.
func (c *CA) SignCSR(csrPEM []byte, ns, sa string, ttl time.Duration) (*Certificate, error) {
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate request for %s/%s: %w", ns, sa, err)
	}
	return c.sign(csr.PublicKey, ns, sa, c.clampTTL(ttl))
}

// parseCSR decodes a PEM certificate request and checks its size, its
// signature (proof that the sender holds the key) and its key type.
func parseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	if len(csrPEM) > MaxCSRSize {
		return nil, fmt.Errorf("%w: it is %d bytes, more than the %d a request may have", ErrBadCSR, len(csrPEM), MaxCSRSize)
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: it is not PEM", ErrBadCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: its PEM block is %q; expected CERTIFICATE REQUEST", ErrBadCSR, clip.String(block.Type))
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: it is not valid: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: it has a bad signature, so it does not prove possession of its key: %w", ErrBadCSR, err)
	}
	if err := checkWorkloadKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	return csr, nil
}

// clampTTL is the lifetime granted for a requested one (see SignCSR).
func (c *CA) clampTTL(ttl time.Duration) time.Duration {
	switch {
	case ttl <= 0 || ttl > c.ttl:
		return c.ttl
	case ttl < minWorkloadTTL:
		return minWorkloadTTL
	}
	return ttl
}

// sign issues the workload certificate for pub. The subject is left empty,
// as Istio does: the identity is the URI SAN alone, which x509 then marks
// critical as RFC 5280 requires for an empty subject.
func (c *CA) sign(pub crypto.PublicKey, ns, sa string, ttl time.Duration) (*Certificate, error) {
	if err := ValidateIdentity(ns, sa); err != nil {
		return nil, fmt.Errorf("cannot issue a certificate: %w", err)
	}
	id := SPIFFEID(c.trustDomain, ns, sa)
	uri, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("cannot issue a certificate: SPIFFE ID %q: %w", id, err)
	}
	now, notBefore, notAfter, err := c.validity(id, ttl)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{uri},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("signing the certificate for %s: %w", id, err)
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, c.intermediatesPEM...)
	return &Certificate{
		ChainPEM:  chain,
		SPIFFEID:  id,
		Serial:    serial.Text(16),
		NotBefore: notBefore.Truncate(time.Second),
		NotAfter:  notAfter.Truncate(time.Second),
		IssuedAt:  now,
	}, nil
}

// validity is the lifetime of a certificate issued now: ttl,
// backdated for clock skew, and never beyond the signing certificate's own
// lifetime. what names the certificate in the error.
func (c *CA) validity(what string, ttl time.Duration) (now, notBefore, notAfter time.Time, err error) {
	now = c.now()
	if !now.Before(c.cert.NotAfter) {
		return now, notBefore, notAfter, fmt.Errorf("cannot issue a certificate for %s: the CA certificate expired at %s",
			what, c.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notBefore = now.Add(-clockSkew)
	if notBefore.Before(c.cert.NotBefore) {
		notBefore = c.cert.NotBefore
	}
	// A certificate cannot outlive its issuer: peers would reject the
	// chain, so shorten it and let renewal (at half life) pick up the slack.
	notAfter = now.Add(ttl)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	return now, notBefore, notAfter, nil
}

// checkWorkloadKey accepts the key types and sizes that both Envoy and
// gRPC handle and that are still considered strong; Envoy does not load
// Ed25519 workload certificates, so they are refused here rather than
// failing later inside a proxy.
func checkWorkloadKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s is not supported; use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too small; use at least 2048", k.N.BitLen())
		}
	default:
		return fmt.Errorf("%T keys are not supported; use ECDSA P-256", pub)
	}
	return nil
}
