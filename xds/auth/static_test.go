package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStaticTokens(t *testing.T) {
	const file = `# token,namespace,serviceaccount
front-end-token,front-end,default

  back-end-token , back-end , hello-world-rest-api
back-end-next,back-end,hello-world-rest-api
`
	path := filepath.Join(t.TempDir(), "tokens.csv")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadStaticTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 3 {
		t.Errorf("Len = %d, want 3", s.Len())
	}
	tests := []struct {
		token   string
		want    Identity
		wantErr string
	}{
		{"front-end-token", Identity{Namespace: "front-end", ServiceAccount: "default"}, ""},
		{"back-end-token", Identity{Namespace: "back-end", ServiceAccount: "hello-world-rest-api"}, ""},
		{"back-end-next", Identity{Namespace: "back-end", ServiceAccount: "hello-world-rest-api"}, ""},
		{"back-end-tokenX", Identity{}, "not listed"},
		{"Front-end-token", Identity{}, "not listed"},
		{"", Identity{}, "no bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) {
			got, err := s.Authenticate(context.Background(), tt.token)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Authenticate = %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Authenticate = %+v, %v; want ErrUnauthenticated containing %q", got, err, tt.wantErr)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error %q shows the token", err)
			}
			// The error goes to the client: it names no file of meshd's.
			if strings.Contains(err.Error(), path) {
				t.Errorf("error %q shows the token file's path", err)
			}
		})
	}
}

func TestStaticTokensErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		// wants are fragments the error must contain; every bad line is
		// reported, not only the first.
		wants []string
	}{
		{"too few fields", "tok-a,default\n", []string{"tokens:1: expected token,namespace,serviceaccount; found 2"}},
		{"too many fields", "# c\ntok-a,default,web,extra\n", []string{"tokens:2: expected", "found 4"}},
		{"empty token", ",default,web\n", []string{"tokens:1: the token is empty"}},
		{"token with space", "tok a,default,web\n", []string{"tokens:1: the token contains whitespace"}},
		{"bad namespace", "tok-a,Default,web\n", []string{`tokens:1: namespace "Default"`}},
		{"bad service account", "tok-a,default,a/b\n", []string{`tokens:1: service account "a/b"`}},
		{"duplicate token", "tok-a,default,web\n\ntok-a,prod,db\n", []string{"tokens:3: the token is already listed on line 1"}},
		{"all errors reported", "tok-a,default\nok,default,web\ntok-b,default,a/b\n", []string{"tokens:1:", "tokens:3:", "2 errors"}},
		{"no tokens", "# only a comment\n\n", []string{"lists no tokens"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseStaticTokens(strings.NewReader(tt.input), "tokens")
			if err == nil {
				t.Fatalf("ParseStaticTokens succeeded, want an error")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, secret := range []string{"tok-a", "tok-b", "tok a"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a token", err)
				}
			}
		})
	}
}

func TestLoadStaticTokensMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.csv")
	if _, err := LoadStaticTokens(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want one naming %s", err, path)
	}
}
