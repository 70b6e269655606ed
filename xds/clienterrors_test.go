package xds

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// unavailable is an authenticator that cannot reach what it depends on,
// and says so with a path of meshd's.
type unavailable struct{}

const serverPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"

func (unavailable) Authenticate(context.Context, string) (auth.Identity, error) {
	return auth.Identity{}, fmt.Errorf("%w: reading %s: permission denied", auth.ErrUnavailable, serverPath)
}

// What a refused client is told names none of meshd's files; meshd's own
// log keeps the detail.
func TestRefusalsNameNoServerPaths(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "xds-tokens")
	if err := os.WriteFile(file, []byte("gw-token,default,product-gateway\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.LoadStaticTokens(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		authn auth.Authenticator
		code  codes.Code
		path  string // in the log, not in the status
	}{
		{"unknown static token", tokens, codes.Unauthenticated, ""},
		{"authenticator unavailable", unavailable{}, codes.Unavailable, serverPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(o *Options) { o.Authenticator = tc.authn })
			h.update(mesh(t, shop...))
			c := h.client("product-gateway-0", "default", "127.0.0.4", false, func(o *xdstest.Options) { o.Token = "forged" })
			h.waitFor(c, "the stream to end", func() bool { return c.Err() != nil })
			st := status.Convert(errors.Unwrap(c.Err()))
			if st.Code() != tc.code {
				st = status.Convert(c.Err())
			}
			if st.Code() != tc.code {
				t.Fatalf("the stream ended with %v; want %v", c.Err(), tc.code)
			}
			for _, p := range []string{dir, serverPath, "/var/"} {
				if strings.Contains(st.Message(), p) {
					t.Errorf("the client was told %q, which names %s", st.Message(), p)
				}
			}
			if tc.path != "" && !strings.Contains(h.logs.String(), tc.path) {
				t.Errorf("meshd's log does not keep the detail %s", tc.path)
			}
		})
	}
}

// A client's strings reach meshd's log clipped: a node ID that does not
// parse, and a NACK message, which syncz keeps up to maxNackError.
func TestClientStringsAreClippedInLogs(t *testing.T) {
	h := newHarness(t, nil)
	h.update(mesh(t, shop...))
	long := strings.Repeat("z", 100_000)

	bad := h.client("x", "y", "z", false, func(o *xdstest.Options) { o.NodeID = "sidecar~" + long })
	h.waitFor(bad, "the stream to end", func() bool { return bad.Err() != nil })
	if len(bad.Err().Error()) > 1000 {
		t.Errorf("the refusal quotes %d bytes of the client's node ID", len(bad.Err().Error()))
	}

	node := nodeID("product-0", "default", "127.0.0.2")
	c := h.client("product-0", "default", "127.0.0.2", false, func(o *xdstest.Options) {
		o.Reject = func(typeURL, _ string, _ map[string]proto.Message) error {
			if typeURL == xdstest.CDS {
				return errors.New(long)
			}
			return nil
		}
	})
	h.waitFor(c, "a NACK", func() bool { return c.Nacks(xdstest.CDS) > 0 })
	h.eventually("the NACK in syncz", func() bool {
		ps, ok := h.proxyStatus(node)
		return ok && ps.Types[typeCDS].State == StateNacked
	})
	ps, _ := h.proxyStatus(node)
	if got := len(ps.Types[typeCDS].NackError); got == 0 || got > maxNackError+len("…") {
		t.Errorf("syncz keeps %d bytes of the NACK message; want 1 to %d", got, maxNackError)
	}
	if logs := h.logs.String(); strings.Contains(logs, strings.Repeat("z", maxNackError+1)) {
		t.Error("meshd's log quotes more than maxNackError bytes of a client's string")
	} else if !strings.Contains(logs, strings.Repeat("z", 100)) {
		t.Error("meshd's log does not quote the NACK message at all")
	}
}
