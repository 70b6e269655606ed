package auth

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/go-multierror"

	"github.com/minimesh/minimesh/xds/ca"
)

// StaticTokens authenticates tokens listed in a file, one per line:
//
//	# token,namespace,serviceaccount
//	3f1c...e9,back-end,hello-world-rest-api
//
// Blank lines and lines starting with '#' are ignored; spaces around fields
// are trimmed. Several tokens may map to one identity (for rotation); one
// token may not map to two. It is meant for the file discovery source,
// where there is no Kubernetes API to review tokens.
type StaticTokens struct {
	source string
	// Tokens are kept as SHA-256 digests: a lookup then takes the same
	// path whatever the token's prefix, and a heap dump holds no tokens.
	byDigest map[[sha256.Size]byte]Identity
}

// LoadStaticTokens reads a token file.
func LoadStaticTokens(path string) (*StaticTokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading token file: %w", err)
	}
	defer f.Close()
	return ParseStaticTokens(f, path)
}

// ParseStaticTokens reads token lines from r; source names r in errors
// (usually the file path). Every bad line is reported, each with its line
// number, and never with the token itself.
func ParseStaticTokens(r io.Reader, source string) (*StaticTokens, error) {
	s := &StaticTokens{source: source, byDigest: map[[sha256.Size]byte]Identity{}}
	firstLine := map[[sha256.Size]byte]int{}
	var errs *multierror.Error
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ",")
		if len(fields) != 3 {
			errs = multierror.Append(errs, fmt.Errorf("%s:%d: expected token,namespace,serviceaccount; found %d comma-separated fields", source, n, len(fields)))
			continue
		}
		for i := range fields {
			fields[i] = strings.TrimSpace(fields[i])
		}
		token, ns, sa := fields[0], fields[1], fields[2]
		if token == "" {
			errs = multierror.Append(errs, fmt.Errorf("%s:%d: the token is empty", source, n))
			continue
		}
		if strings.ContainsAny(token, " \t") {
			errs = multierror.Append(errs, fmt.Errorf("%s:%d: the token contains whitespace, which an authorization header cannot carry", source, n))
			continue
		}
		if err := ca.ValidateIdentity(ns, sa); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("%s:%d: %w", source, n, err))
			continue
		}
		digest := sha256.Sum256([]byte(token))
		if prev, dup := firstLine[digest]; dup {
			errs = multierror.Append(errs, fmt.Errorf("%s:%d: the token is already listed on line %d; each token must name one identity", source, n, prev))
			continue
		}
		firstLine[digest] = n
		s.byDigest[digest] = Identity{Namespace: ns, ServiceAccount: sa}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", source, err)
	}
	if err := errs.ErrorOrNil(); err != nil {
		return nil, fmt.Errorf("token file %s has errors: %w", source, err)
	}
	if len(s.byDigest) == 0 {
		return nil, fmt.Errorf("token file %s lists no tokens, so every proxy would be refused; add lines token,namespace,serviceaccount", source)
	}
	return s, nil
}

// Len is the number of tokens, for a start-up log line.
func (s *StaticTokens) Len() int { return len(s.byDigest) }

// Authenticate implements Authenticator.
func (s *StaticTokens) Authenticate(_ context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, fmt.Errorf("%w: no bearer token was sent", ErrUnauthenticated)
	}
	id, ok := s.byDigest[sha256.Sum256([]byte(token))]
	if !ok {
		// Not the file's path: the error goes to the client.
		return Identity{}, fmt.Errorf("%w: the bearer token is not listed in meshd's token file", ErrUnauthenticated)
	}
	return id, nil
}
