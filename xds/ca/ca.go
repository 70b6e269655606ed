// Package ca is minimesh's certificate authority. It signs the X.509
// workload certificates that carry each proxy's SPIFFE identity, serves
// the trust bundle proxies validate peers against, and issues the TLS
// serving certificate of meshd's own admission webhook
// (ServingCertificate), which the API server checks against the same
// bundle.
//
// The signing certificate comes from one of two places:
//
//   - a self-signed root that the CA creates in Options.Dir on first start
//     and reuses on every restart, so identities and trust survive restarts;
//   - a plug-in CA (Options.CertFile, KeyFile, ChainFile): an intermediate
//     signed by an organisation root, whose chain file names the roots
//     workloads must trust.
//
// A CA is immutable after New and safe for concurrent use.
package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside Options.Dir, the same names Istio uses for its
// self-signed root so operators recognise them.
const (
	RootCertFile = "root-cert.pem"
	RootKeyFile  = "root-key.pem"
)

// Defaults.
const (
	DefaultWorkloadTTL = 24 * time.Hour
	// rootTTL is long because rotating a root means re-trusting every
	// workload; minimesh does not rotate roots.
	rootTTL = 10 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so a peer whose clock runs a little
	// behind does not reject a certificate that was just issued.
	clockSkew = 5 * time.Minute
	// minWorkloadTTL keeps renewals (at half the lifetime) from turning into
	// a busy loop; 10s still allows rotation demos with --workload-cert-ttl 30s.
	minWorkloadTTL = 10 * time.Second
)

// Options configure a CA. Set either Dir (self-signed root) or all of
// CertFile, KeyFile and ChainFile (plug-in CA); when the plug-in files are
// set, Dir is not used.
type Options struct {
	// Dir holds the self-signed root; it is created with mode 0700.
	Dir string
	// CertFile is the plug-in CA certificate (an intermediate), PEM.
	CertFile string
	// KeyFile is the plug-in CA's private key, PEM (PKCS #8, SEC 1 or PKCS #1).
	KeyFile string
	// ChainFile holds the chain from CertFile's issuer up to and including
	// the organisation root; self-signed certificates in it become the
	// trust bundle. It may start with CertFile's certificate itself.
	ChainFile string
	// TrustDomain is the SPIFFE trust domain (default cluster.local).
	TrustDomain string
	// WorkloadTTL is the lifetime of workload certificates (default 24h).
	WorkloadTTL time.Duration
	// Now is the clock (default time.Now); tests pass a fake one.
	Now func() time.Time
}

// CA signs workload certificates.
type CA struct {
	trustDomain string
	ttl         time.Duration
	now         func() time.Time

	cert *x509.Certificate // signs workload certificates
	key  crypto.Signer
	// intermediatesPEM follows the workload certificate in every chain:
	// the plug-in CA certificate and any intermediates above it. Empty for
	// a self-signed root, which peers already hold in the trust bundle.
	intermediatesPEM []byte
	roots            []*x509.Certificate
	rootPEM          []byte
}

// New loads or creates the signing certificate described by opts.
func New(opts Options, log *slog.Logger) (*CA, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &CA{
		trustDomain: opts.TrustDomain,
		ttl:         opts.WorkloadTTL,
		now:         opts.Now,
	}
	if c.trustDomain == "" {
		c.trustDomain = DefaultTrustDomain
	}
	if err := validateTrustDomain(c.trustDomain); err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	if c.ttl == 0 {
		c.ttl = DefaultWorkloadTTL
	}
	if c.ttl < minWorkloadTTL {
		return nil, fmt.Errorf("CA: workload certificate lifetime %s is too short; use at least %s", c.ttl, minWorkloadTTL)
	}
	if c.now == nil {
		c.now = time.Now
	}

	pluginSet := opts.CertFile != "" || opts.KeyFile != "" || opts.ChainFile != ""
	var err error
	switch {
	case pluginSet:
		if opts.Dir != "" {
			log.Info("plug-in CA files are set; the CA directory is not used", "dir", opts.Dir)
		}
		err = c.loadPlugin(opts, log)
	case opts.Dir != "":
		err = c.loadOrCreateRoot(opts.Dir, log)
	default:
		err = errors.New("no CA configured: set a directory for the self-signed root, or the plug-in CA certificate, key and chain files")
	}
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	if c.cert.NotAfter.Before(c.now().Add(c.ttl)) {
		log.Warn("CA certificate expires before a full workload certificate lifetime; workload certificates will be cut short",
			"ca_not_after", c.cert.NotAfter, "workload_ttl", c.ttl)
	}
	return c, nil
}

// TrustDomain is the SPIFFE trust domain of issued certificates.
func (c *CA) TrustDomain() string { return c.trustDomain }

// WorkloadTTL is the lifetime of issued certificates.
func (c *CA) WorkloadTTL() time.Duration { return c.ttl }

// RootPEM is the trust bundle served to workloads as ROOTCA: the
// self-signed root, or every root in the plug-in chain file. The caller gets
// its own copy.
func (c *CA) RootPEM() []byte { return bytes.Clone(c.rootPEM) }

// RootExpiry is when the first root in the trust bundle expires.
func (c *CA) RootExpiry() time.Time {
	first := c.roots[0].NotAfter
	for _, r := range c.roots[1:] {
		if r.NotAfter.Before(first) {
			first = r.NotAfter
		}
	}
	return first
}

// SigningCertExpiry is when the certificate that signs workload certificates
// expires. For a plug-in CA this is the intermediate, which usually expires
// well before the root; after it no certificate can be issued.
func (c *CA) SigningCertExpiry() time.Time { return c.cert.NotAfter }

// loadOrCreateRoot reuses the root in dir, or creates one if the directory
// has neither file. A directory with only one of the two is an error rather
// than a reason to start over, because a new root would silently break
// trust with every workload that holds the old one.
func (c *CA) loadOrCreateRoot(dir string, log *slog.Logger) error {
	certPath := filepath.Join(dir, RootCertFile)
	keyPath := filepath.Join(dir, RootKeyFile)
	certExists, err := exists(certPath)
	if err != nil {
		return err
	}
	keyExists, err := exists(keyPath)
	if err != nil {
		return err
	}
	switch {
	case certExists && keyExists:
		if err := c.loadRoot(certPath, keyPath, log); err != nil {
			return err
		}
		log.Info("CA loaded its self-signed root", "dir", dir, "not_after", c.cert.NotAfter)
		return nil
	case certExists:
		return fmt.Errorf("%s exists but %s does not; restore the key, or remove both files to create a new root (every workload will then need new certificates)", certPath, keyPath)
	case keyExists:
		return fmt.Errorf("%s exists but %s does not; restore the certificate, or remove both files to create a new root (every workload will then need new certificates)", keyPath, certPath)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating CA directory: %w", err)
	}
	certPEM, keyPEM, err := c.createRoot()
	if err != nil {
		return err
	}
	// The key goes first: a crash between the two renames leaves a key
	// without a certificate, which the next start reports instead of
	// silently replacing.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return err
	}
	log.Info("CA created a self-signed root; keep this directory to keep identities across restarts",
		"dir", dir, "not_after", c.cert.NotAfter)
	return nil
}

func (c *CA) loadRoot(certPath, keyPath string, log *slog.Logger) error {
	certs, err := readCertificates(certPath)
	if err != nil {
		return err
	}
	if len(certs) != 1 {
		return fmt.Errorf("%s holds %d certificates; a self-signed root file holds exactly one", certPath, len(certs))
	}
	key, err := readKey(keyPath, log)
	if err != nil {
		return err
	}
	root := certs[0]
	if err := checkSigner(root, key, certPath, keyPath); err != nil {
		return err
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return fmt.Errorf("%s is not a self-signed root: %w", certPath, err)
	}
	if err := c.checkValidNow(root, certPath); err != nil {
		return err
	}
	c.cert, c.key = root, key
	c.roots = []*x509.Certificate{root}
	c.rootPEM = encodeCerts(c.roots)
	return nil
}

// createRoot makes a new self-signed root and returns it as PEM.
func (c *CA) createRoot() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "minimesh", Organization: []string{"minimesh"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(rootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing the root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the new root certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	c.cert, c.key = root, key
	c.roots = []*x509.Certificate{root}
	c.rootPEM = encodeCerts(c.roots)
	return c.rootPEM, keyPEM, nil
}

// loadPlugin loads an intermediate CA and verifies that it chains to a root
// in the chain file, so a misconfigured plug-in CA fails at start instead of
// handing out certificates no peer accepts.
func (c *CA) loadPlugin(opts Options, log *slog.Logger) error {
	var missing []string
	for _, f := range []struct{ name, value string }{
		{"certificate", opts.CertFile}, {"key", opts.KeyFile}, {"chain", opts.ChainFile},
	} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("a plug-in CA needs its certificate, key and chain files; the %s file is not set", strings.Join(missing, " and "))
	}
	certs, err := readCertificates(opts.CertFile)
	if err != nil {
		return err
	}
	caCert := certs[0]
	key, err := readKey(opts.KeyFile, log)
	if err != nil {
		return err
	}
	if err := checkSigner(caCert, key, opts.CertFile, opts.KeyFile); err != nil {
		return err
	}
	chain, err := readCertificates(opts.ChainFile)
	if err != nil {
		return err
	}
	// The certificate file may carry its own chain too; both count.
	var intermediates, roots []*x509.Certificate
	for _, cert := range append(certs[1:], chain...) {
		switch {
		case cert.Equal(caCert):
			// Some tools write the CA certificate at the top of the chain;
			// a root used directly as the plug-in CA is its own trust bundle.
			if isSelfSigned(cert) {
				roots = append(roots, cert)
			}
		case isSelfSigned(cert):
			roots = append(roots, cert)
		default:
			intermediates = append(intermediates, cert)
		}
	}
	if len(roots) == 0 {
		return fmt.Errorf("%s holds no self-signed root certificate; the chain file must end with the organisation root that workloads trust", opts.ChainFile)
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	interPool := x509.NewCertPool()
	for _, i := range intermediates {
		interPool.AddCert(i)
	}
	verified, err := caCert.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: interPool,
		CurrentTime:   c.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("%s does not chain to a root in %s: %w", opts.CertFile, opts.ChainFile, err)
	}
	// Serve exactly the path that verified, without the root: the
	// intermediates a peer needs, in order, and nothing unrelated.
	path := verified[0]
	c.cert, c.key = caCert, key
	c.intermediatesPEM = encodeCerts(path[:len(path)-1])
	c.roots = roots
	c.rootPEM = encodeCerts(roots)
	log.Info("CA loaded a plug-in CA", "cert", opts.CertFile, "subject", caCert.Subject.String(),
		"not_after", caCert.NotAfter, "roots", len(roots))
	return nil
}

// checkSigner rejects a key that does not belong to the certificate, or a
// certificate that may not sign others.
func checkSigner(cert *x509.Certificate, key crypto.Signer, certPath, keyPath string) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("the key in %s does not match the certificate in %s", keyPath, certPath)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return fmt.Errorf("%s is not a CA certificate (basic constraints CA:TRUE missing)", certPath)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%s may not sign certificates (key usage lacks certSign)", certPath)
	}
	return nil
}

func (c *CA) checkValidNow(cert *x509.Certificate, path string) error {
	now := c.now()
	if now.After(cert.NotAfter) {
		return fmt.Errorf("%s expired at %s", path, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("%s is not valid until %s; check the system clock", path, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

func isSelfSigned(cert *x509.Certificate) bool {
	return bytes.Equal(cert.RawSubject, cert.RawIssuer) && cert.CheckSignatureFrom(cert) == nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("checking %s: %w", path, err)
	}
}

// randomSerial is a positive 128-bit serial number, as RFC 5280 allows and
// the CA/Browser Forum asks (at least 64 bits of randomness).
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generating a serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
