package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Certificate describes the workload certificate on disk; never the key.
type Certificate struct {
	SPIFFEID  string
	Serial    string // lowercase hex, as xds/ca reports it
	NotBefore time.Time
	NotAfter  time.Time
}

// secretSet is a workload certificate chain, its key and the trust
// bundle, checked to belong together.
type secretSet struct {
	chain, key, root []byte
	cert             Certificate
}

// newSecretSet checks that chain and key form a key pair and that the
// chain verifies to the bundle in root, so that files that would make
// every handshake fail are never written.
func newSecretSet(chain, key, root []byte) (*secretSet, error) {
	pair, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("the certificate chain and private key do not form a key pair: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("the workload certificate: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(root) {
		return nil, errors.New("the trust bundle holds no PEM certificate")
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("an intermediate certificate: %w", err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		CurrentTime:   leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2),
	}); err != nil {
		return nil, fmt.Errorf("the workload certificate does not chain to the trust bundle: %w", err)
	}
	s := &secretSet{chain: chain, key: key, root: root, cert: Certificate{
		Serial:    leaf.SerialNumber.Text(16),
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
	}}
	for _, u := range leaf.URIs {
		if u.Scheme == "spiffe" {
			s.cert.SPIFFEID = u.String()
			break
		}
	}
	return s, nil
}

// Names of the atomic layout in Options.CertDir, those of Kubernetes'
// atomic writer (the one behind projected and secret volumes), so an
// operator who has looked into a pod's secret volume recognises them:
//
//	..2026_12_07_10_00_00.123456789/{cert-chain,key,root-cert}.pem  one generation
//	..data -> ..2026_12_07_10_00_00.123456789                      the current one
//	cert-chain.pem -> ..data/cert-chain.pem                        what the bootstrap names
const (
	dataLink         = "..data"
	generationLayout = "..2006_01_02_15_04_05."
)

// linkedFiles are the files of one generation, each linked from the directory.
var linkedFiles = []string{CertChainFile, KeyFile, RootCertFile}

// write makes s the certificate files in dir, all of them at once: the
// key, the chain and the bundle go into a new generation directory, and
// one rename of the ..data symlink switches every file the bootstrap
// names to it. A reader therefore never finds the new key next to the old
// chain, which an implementation that reloads between two single-file
// renames would load as a mismatched pair (one failed call: "Invalid
// private key"). A reader that reads the chain and then the key can still
// straddle the switch; it then sees both files change (new inode and
// mtime), which is what the file watchers that compare them before and
// after reading look for, and gRPC-Go refuses the pair and keeps its last
// one. Older generations are removed after the switch.
func (s *secretSet) write(dir string) error {
	gen, err := os.MkdirTemp(dir, time.Now().UTC().Format(generationLayout))
	if err != nil {
		return fmt.Errorf("creating a certificate directory in %s: %w", dir, err)
	}
	// MkdirTemp makes it 0700; the files keep their own modes.
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{KeyFile, s.key, 0o600}, {CertChainFile, s.chain, 0o644}, {RootCertFile, s.root, 0o644}} {
		if err := writeFileSync(filepath.Join(gen, f.name), f.data, f.mode); err != nil {
			_ = os.RemoveAll(gen)
			return err
		}
	}
	if err := syncDir(gen); err != nil {
		_ = os.RemoveAll(gen)
		return err
	}
	// The switch: every file below now resolves into gen.
	if err := replaceSymlink(filepath.Base(gen), filepath.Join(dir, dataLink)); err != nil {
		_ = os.RemoveAll(gen)
		return err
	}
	// The per-file links are made once; they also replace the regular
	// files an agent of an older layout left in dir.
	for _, name := range linkedFiles {
		target := filepath.Join(dataLink, name)
		if cur, err := os.Readlink(filepath.Join(dir, name)); err == nil && cur == target {
			continue
		}
		if err := replaceSymlink(target, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return removeOldGenerations(dir, filepath.Base(gen))
}

// replaceSymlink points the symlink at path to target with one rename, so
// path always resolves to the old target or the new one.
func replaceSymlink(target, path string) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp) // left by an agent that was killed here
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("switching %s to %s: %w", path, target, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("switching %s to %s: %w", path, target, err)
	}
	return nil
}

// removeOldGenerations deletes every generation directory but keep.
func removeOldGenerations(dir, keep string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == keep || !isGeneration(e.Name()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("removing old certificates: %w", err)
		}
	}
	return nil
}

// isGeneration tells a generation directory by its name: ".." and a
// timestamp in generationLayout, then MkdirTemp's random suffix.
func isGeneration(name string) bool {
	n := len(generationLayout)
	if len(name) <= n {
		return false
	}
	_, err := time.Parse(generationLayout, name[:n])
	return err == nil
}

// writeFileSync creates path with mode (set before any byte is written)
// and syncs it.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return fillFile(f, path, data, mode)
}

// fillFile sets f's mode (the umask may have narrowed it), writes data,
// syncs and closes f; errors name path.
func fillFile(f *os.File, path string, data []byte, mode os.FileMode) error {
	err := f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
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
	if err := fillFile(f, path, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
