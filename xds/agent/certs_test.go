package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testSecretSets makes n secret sets, each a self-signed certificate with
// a key of its own, so any two of them mixed are a mismatched pair.
func testSecretSets(t *testing.T, n int) []*secretSet {
	t.Helper()
	var out []*secretSet
	for i := range n {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		out = append(out, &secretSet{
			chain: chain,
			key:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
			root:  chain,
		})
	}
	return out
}

// TestRotationSwapsKeyAndChainTogether rotates the files many times while
// a reader reads them the way gRPC's file watchers do: through the paths
// the bootstrap names, the chain and then the key, with a stat of both
// before and after. A read during which neither file changed must be a
// matching pair; a read that straddled a switch sees the files change and
// is retried, as the watchers do. Writing the key and the chain as two
// separate renames fails this: between them both files are stable and do
// not match.
func TestRotationSwapsKeyAndChainTogether(t *testing.T) {
	dir := t.TempDir()
	sets := testSecretSets(t, 3)
	if err := sets[0].write(dir); err != nil {
		t.Fatal(err)
	}
	chainPath, keyPath := filepath.Join(dir, CertChainFile), filepath.Join(dir, KeyFile)

	const rotations = 100
	done := make(chan struct{})
	var wg sync.WaitGroup
	var stable, straddled, mismatched int
	var firstMismatch error
	wg.Add(1)
	go func() {
		defer wg.Done()
		same := func(a, b os.FileInfo) bool { return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) }
		for {
			select {
			case <-done:
				return
			default:
			}
			c0, err1 := os.Stat(chainPath)
			k0, err2 := os.Stat(keyPath)
			chain, err3 := os.ReadFile(chainPath)
			key, err4 := os.ReadFile(keyPath)
			c1, err5 := os.Stat(chainPath)
			k1, err6 := os.Stat(keyPath)
			if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil || err6 != nil ||
				!same(c0, c1) || !same(k0, k1) {
				straddled++ // a watcher retries at its next refresh
				continue
			}
			stable++
			if _, err := tls.X509KeyPair(chain, key); err != nil {
				mismatched++
				if firstMismatch == nil {
					firstMismatch = err
				}
			}
		}
	}()
	for i := range rotations {
		if err := sets[(i+1)%len(sets)].write(dir); err != nil {
			close(done)
			wg.Wait()
			t.Fatalf("rotation %d: %v", i+1, err)
		}
	}
	close(done)
	wg.Wait()
	t.Logf("%d rotations: %d stable reads, %d reads straddled a switch", rotations, stable, straddled)
	if mismatched > 0 {
		t.Errorf("%d of %d stable reads found a key and a chain that do not match (first: %v)", mismatched, stable, firstMismatch)
	}
	if stable == 0 {
		t.Fatal("the reader never completed a stable read; the test checked nothing")
	}

	// What is left: one generation, linked, the last one written.
	last := sets[rotations%len(sets)]
	checkLayout(t, dir, last)
}

// TestRotationReplacesAnOlderLayout starts from the regular files an
// agent before the atomic layout left behind (they are kept across
// restarts): the first write turns them into links to a generation.
func TestRotationReplacesAnOlderLayout(t *testing.T) {
	dir := t.TempDir()
	sets := testSecretSets(t, 2)
	for _, f := range []struct {
		name string
		data []byte
	}{{KeyFile, sets[0].key}, {CertChainFile, sets[0].chain}, {RootCertFile, sets[0].root}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := sets[1].write(dir); err != nil {
		t.Fatal(err)
	}
	checkLayout(t, dir, sets[1])
}

// checkLayout checks that dir holds exactly one generation, that every
// file the bootstrap names is a link through ..data into it, and that
// the files hold want with the key private.
func checkLayout(t *testing.T, dir string, want *secretSet) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var gens []string
	for _, e := range entries {
		if isGeneration(e.Name()) {
			gens = append(gens, e.Name())
		}
	}
	if len(gens) != 1 {
		t.Fatalf("%d generation directories left, want 1: %v", len(gens), gens)
	}
	if target, err := os.Readlink(filepath.Join(dir, dataLink)); err != nil || target != gens[0] {
		t.Errorf("%s -> %q (%v), want %q", dataLink, target, err, gens[0])
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{CertChainFile, want.chain}, {KeyFile, want.key}, {RootCertFile, want.root}} {
		path := filepath.Join(dir, f.name)
		if target, err := os.Readlink(path); err != nil || target != filepath.Join(dataLink, f.name) {
			t.Errorf("%s -> %q (%v), want a link to %s", f.name, target, err, filepath.Join(dataLink, f.name))
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(f.data) {
			t.Errorf("%s does not hold the last certificate written", f.name)
		}
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("%s has mode %o, want 600", KeyFile, mode)
	}
}
