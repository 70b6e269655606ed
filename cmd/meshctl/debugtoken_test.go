package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minimesh/minimesh/xds/debugauth"
)

// TestDebugToken runs proxy-status and proxy-config against a meshd that
// checks who reads its debug API: the token comes from --token-file or
// $MESHCTL_TOKEN, and a refusal says what to pass.
func TestDebugToken(t *testing.T) {
	m, _ := shop(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "meshd-debug-tokens")
	if err := os.WriteFile(tokens, []byte("reader-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	guard, err := debugauth.LoadTokens(tokens)
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(debugauth.Guard(m.srv.Handler(), guard, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer web.Close()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte("reader-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("someone-else\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	meshctl := func(env string, args ...string) (int, string, string) {
		t.Setenv(tokenEnv, env)
		var out, errOut bytes.Buffer
		code := run(append(args, "--meshd", web.URL), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	for _, tc := range []struct {
		name    string
		env     string
		args    []string
		code    int
		wantOut string
	}{
		{"no token", "", []string{"proxy-status"}, exitFailed, "401 Unauthorized for /debug/syncz"},
		{"a token file", "", []string{"proxy-status", "--token-file", good}, exitOK, "product-gateway-0.default"},
		{"the environment", "reader-token", []string{"proxy-status"}, exitOK, "product-gateway-0.default"},
		{"the file wins over the environment", "reader-token", []string{"proxy-status", "--token-file", bad}, exitFailed, "401 Unauthorized"},
		{"proxy-config", "", []string{"proxy-config", "clusters", "product-gateway-0", "--token-file", good}, exitOK, "outbound|80||stock.default.svc.cluster.local"},
		{"a missing token file", "", []string{"proxy-status", "--token-file", filepath.Join(dir, "nope")}, exitUsage, "--token-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := meshctl(tc.env, tc.args...)
			if code != tc.code || !strings.Contains(stdout+stderr, tc.wantOut) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, stdout, stderr, tc.code, tc.wantOut)
			}
			if tc.name == "no token" && !strings.Contains(stderr, "--token-file or $"+tokenEnv) {
				t.Errorf("the refusal does not say how to pass a token: %q", stderr)
			}
		})
	}
}
