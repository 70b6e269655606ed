package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// Secret names meshd serves over SDS, the names Istio uses.
const (
	SecretDefault = "default"
	SecretRootCA  = "ROOTCA"
)

// Certificate describes the workload certificate on disk; never the key.
type Certificate struct {
	SPIFFEID  string
	Serial    string // lowercase hex, as xds/ca reports it
	NotBefore time.Time
	NotAfter  time.Time
}

// secretSet is a validated SDS response.
type secretSet struct {
	chain, key, root []byte
	cert             Certificate
}

// parseSecrets extracts and checks the workload certificate and trust
// bundle from an SDS response. prev supplies a part the response does not
// carry: in SOTW an absent secret is not a deletion.
func parseSecrets(resp *discoveryv3.DiscoveryResponse, prev *secretSet) (*secretSet, error) {
	s := &secretSet{}
	if prev != nil {
		*s = *prev
	}
	for _, res := range resp.GetResources() {
		var sec tlsv3.Secret
		if err := res.UnmarshalTo(&sec); err != nil {
			return nil, fmt.Errorf("a resource in the SDS response is not a Secret: %w", err)
		}
		switch sec.GetName() {
		case SecretDefault:
			tc := sec.GetTlsCertificate()
			chain := tc.GetCertificateChain().GetInlineBytes()
			key := tc.GetPrivateKey().GetInlineBytes()
			if len(chain) == 0 || len(key) == 0 {
				return nil, errors.New(`secret "default" has no inline certificate chain and private key`)
			}
			s.chain, s.key = chain, key
		case SecretRootCA:
			root := sec.GetValidationContext().GetTrustedCa().GetInlineBytes()
			if len(root) == 0 {
				return nil, errors.New(`secret "ROOTCA" has no inline trusted CA`)
			}
			s.root = root
		}
	}
	if s.chain == nil || s.root == nil {
		return nil, nil // not complete yet; wait for the other secret
	}
	pair, err := tls.X509KeyPair(s.chain, s.key)
	if err != nil {
		return nil, fmt.Errorf(`secret "default": the certificate chain and private key do not form a key pair: %w`, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf(`secret "default": %w`, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.root) {
		return nil, errors.New(`secret "ROOTCA" holds no PEM certificate`)
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf(`secret "default": an intermediate certificate: %w`, err)
		}
		inter.AddCert(c)
	}
	// A certificate that does not chain to the bundle would make every
	// handshake fail; refusing it keeps the last good files in place.
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		CurrentTime:   leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2),
	}); err != nil {
		return nil, fmt.Errorf(`secret "default" does not chain to the trust bundle in "ROOTCA": %w`, err)
	}
	s.cert = Certificate{
		Serial:    leaf.SerialNumber.Text(16),
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
	}
	for _, u := range leaf.URIs {
		if u.Scheme == "spiffe" {
			s.cert.SPIFFEID = u.String()
			break
		}
	}
	return s, nil
}

// write puts the three files into dir. Each file is replaced atomically.
// The key and chain go first and the bundle last: gRPC's file_watcher reads
// all three and keeps its previous credentials when the pair does not match,
// so a reader between two renames sees at worst one stale refresh.
func (s *secretSet) write(dir string) error {
	if err := writeFileAtomic(filepath.Join(dir, KeyFile), s.key, 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, CertChainFile), s.chain, 0o644); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, RootCertFile), s.root, 0o644)
}

// writeFileAtomic writes data to a temporary file in the same directory and
// renames it over path, so a reader sees the old or the new content, never
// a mix. The mode is set before any byte is written.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
