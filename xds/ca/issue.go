package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"time"
)

// Issue signs a certificate for the workload identity (ns, sa) with a new
// ECDSA P-256 key, so every proxy holds its own key pair and one leaked
// key never affects another proxy.
func (c *CA) Issue(ns, sa string) (*Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a workload key: %w", err)
	}
	cert, err := c.sign(key.Public(), ns, sa)
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

// SignCSR signs the public key in a PEM certificate request for (ns, sa),
// the identity the caller authenticated. Whatever subject or SANs the
// request claims are ignored: a request is only proof that its sender holds
// the private key, never of who it is.
func (c *CA) SignCSR(csrPEM []byte, ns, sa string) (*Certificate, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, fmt.Errorf("certificate request for %s/%s is not PEM", ns, sa)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("certificate request for %s/%s: PEM block is %q; expected CERTIFICATE REQUEST", ns, sa, block.Type)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request for %s/%s is not valid: %w", ns, sa, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request for %s/%s has a bad signature, so it does not prove possession of its key: %w", ns, sa, err)
	}
	if err := checkWorkloadKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("certificate request for %s/%s: %w", ns, sa, err)
	}
	return c.sign(csr.PublicKey, ns, sa)
}

// sign issues the workload certificate for pub. The subject is left empty,
// as Istio does: the identity is the URI SAN alone, which x509 then marks
// critical as RFC 5280 requires for an empty subject.
func (c *CA) sign(pub crypto.PublicKey, ns, sa string) (*Certificate, error) {
	if err := ValidateIdentity(ns, sa); err != nil {
		return nil, fmt.Errorf("cannot issue a certificate: %w", err)
	}
	id := SPIFFEID(c.trustDomain, ns, sa)
	uri, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("cannot issue a certificate: SPIFFE ID %q: %w", id, err)
	}
	now, notBefore, notAfter, err := c.validity(id)
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

// validity is the lifetime of a certificate issued now: the CA's TTL,
// backdated for clock skew, and never beyond the signing certificate's own
// lifetime. what names the certificate in the error.
func (c *CA) validity(what string) (now, notBefore, notAfter time.Time, err error) {
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
	notAfter = now.Add(c.ttl)
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
