// Package debugauth decides who may read meshd's debug API. /debug/*
// reveals the whole mesh (every proxy, what it is served, the model), so
// Guard puts an Authorizer in front of every path except /metrics,
// /healthz and /readyz, which stay open for scrapers and probes.
//
// Kubernetes checks a request the way kube-rbac-proxy does: its bearer
// token with a TokenReview, then, with a SubjectAccessReview, whether the
// user the token names may use the request's verb on its path as a
// non-resource URL (get on /debug/syncz). The ClusterRole
// minimesh-debug-reader in discovery/kubernetes/rbac.yaml grants get on
// /debug and /debug/*. Tokens accepts the bearer tokens of a file, for a
// meshd with the file source on an address other processes can reach.
package debugauth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
)

// Refusal classes; Guard answers each with its HTTP status.
var (
	// ErrUnauthenticated: no token, or one that is not accepted (401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the token's user may not read this path (403).
	ErrForbidden = errors.New("forbidden")
	// ErrUnavailable: what the check depends on (the API server) could
	// not be asked (503); not the caller's fault.
	ErrUnavailable = errors.New("cannot check credentials")
)

// Authorizer decides whether a request may be served. Its errors wrap one
// of the refusal classes; they are shown to the caller, except those
// wrapping ErrUnavailable, which are logged only.
type Authorizer interface {
	Authorize(r *http.Request) error
}

// open are the paths served to anyone: metrics and probes say nothing
// about the mesh's configuration.
var open = map[string]bool{"/metrics": true, "/healthz": true, "/readyz": true}

// Guard serves next, asking a first for every path except the open ones:
// a path it does not know is guarded too, so a handler added later (the
// profiler under /debug/pprof/) is never served unchecked.
func Guard(next http.Handler, a Authorizer, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if open[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		err := a.Authorize(r)
		switch {
		case err == nil:
			next.ServeHTTP(w, r)
			return
		case errors.Is(err, ErrUnavailable):
			log.Warn("cannot check a debug API request's credentials", "path", r.URL.Path, "peer", r.RemoteAddr, "error", err)
			http.Error(w, "meshd cannot check credentials right now; retry", http.StatusServiceUnavailable)
		case errors.Is(err, ErrForbidden):
			log.Info("refused a debug API request", "path", r.URL.Path, "peer", r.RemoteAddr, "error", err)
			http.Error(w, err.Error(), http.StatusForbidden)
		default:
			log.Info("refused a debug API request", "path", r.URL.Path, "peer", r.RemoteAddr, "error", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshd"`)
			http.Error(w, err.Error(), http.StatusUnauthorized)
		}
	})
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header.
func bearerToken(r *http.Request) (string, error) {
	const want = "send the header Authorization: Bearer <token> (meshctl: --token-file or MESHCTL_TOKEN)"
	values := r.Header.Values("Authorization")
	if len(values) != 1 {
		return "", fmt.Errorf("%w: the debug API needs a bearer token; %s", ErrUnauthenticated, want)
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", fmt.Errorf("%w: the Authorization header holds no bearer token; %s", ErrUnauthenticated, want)
	}
	return token, nil
}
