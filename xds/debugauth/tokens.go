package debugauth

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Tokens accepts the bearer tokens listed in a file: for meshd with the
// file source, where there is no API server to ask.
type Tokens struct {
	digests map[[sha256.Size]byte]bool // never the tokens themselves
}

// LoadTokens reads a file of tokens, one a line; blank lines and lines
// starting with # are skipped. A file that lists none is an error: it
// would lock everyone out without saying so.
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading debug token file: %w", err)
	}
	defer f.Close()
	t := &Tokens{digests: map[[sha256.Size]byte]bool{}}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			return nil, fmt.Errorf("debug token file %s:%d: a token contains whitespace, which an Authorization header cannot carry", path, n)
		}
		t.digests[sha256.Sum256([]byte(line))] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading debug token file %s: %w", path, err)
	}
	if len(t.digests) == 0 {
		return nil, fmt.Errorf("debug token file %s lists no tokens; add one a line", path)
	}
	return t, nil
}

// Authorize implements Authorizer.
func (t *Tokens) Authorize(r *http.Request) error {
	token, err := bearerToken(r)
	if err != nil {
		return err
	}
	if !t.digests[sha256.Sum256([]byte(token))] {
		return fmt.Errorf("%w: the bearer token is not one of meshd's debug tokens", ErrUnauthenticated)
	}
	return nil
}
