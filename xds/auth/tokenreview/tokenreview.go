// Package tokenreview authenticates xDS clients by their Kubernetes
// service-account token, asking the API server's TokenReview API
// (authentication.k8s.io/v1) whether the token is valid, for which audience,
// and whom it names. It implements auth.Authenticator.
//
// The API server does the cryptography and the revocation checks (a token
// bound to a deleted pod or service account stops working at once); this
// package only insists that the token is for one of the configured
// audiences and names a service account, and turns the answer into an
// identity. meshd needs RBAC "create" on tokenreviews.authentication.k8s.io.
package tokenreview

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/minimesh/minimesh/xds/auth"
)

// DefaultTimeout bounds one TokenReview call.
const DefaultTimeout = 10 * time.Second

// Error classes, each wrapping auth.ErrUnauthenticated so the xDS server
// refuses the stream with codes.Unauthenticated. A failure to reach the API
// server wraps none of them but auth.ErrUnavailable instead: that is not the
// client's fault, and the server answers Unavailable so the client retries.
var (
	// ErrMissingToken: the token is empty.
	ErrMissingToken = fmt.Errorf("%w: no service-account token", auth.ErrUnauthenticated)
	// ErrInvalidToken: the API server does not accept the token: bad
	// signature, unknown issuer, or bound to an object that is gone.
	ErrInvalidToken = fmt.Errorf("%w: invalid service-account token", auth.ErrUnauthenticated)
	// ErrExpiredToken: the token is past its expiry.
	ErrExpiredToken = fmt.Errorf("%w: expired service-account token", auth.ErrUnauthenticated)
	// ErrWrongAudience: the token is valid but was issued for another
	// audience, so it may be a token replayed from another service.
	ErrWrongAudience = fmt.Errorf("%w: service-account token for another audience", auth.ErrUnauthenticated)
	// ErrNotServiceAccount: the token is valid but names a user, not a
	// service account.
	ErrNotServiceAccount = fmt.Errorf("%w: token is not a service-account token", auth.ErrUnauthenticated)
)

// Options configure an Authenticator.
type Options struct {
	// Audiences the token must be issued for (any one of them). Empty
	// means the API server's own audiences, which every ordinary pod
	// token has; set it (Istio uses "istio-ca") so that only tokens
	// projected for meshd are accepted.
	Audiences []string
	// Timeout bounds one review; DefaultTimeout when zero.
	Timeout time.Duration
}

// Authenticator reviews tokens with the API server.
type Authenticator struct {
	client    kubernetes.Interface
	audiences []string
	timeout   time.Duration
}

var _ auth.Authenticator = (*Authenticator)(nil)

// New returns an Authenticator that reviews tokens through client.
func New(client kubernetes.Interface, opts Options) *Authenticator {
	a := &Authenticator{client: client, audiences: slices.Clone(opts.Audiences), timeout: opts.Timeout}
	if a.timeout <= 0 {
		a.timeout = DefaultTimeout
	}
	return a
}

// Authenticate implements auth.Authenticator. The token never appears in an
// error.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (auth.Identity, error) {
	if strings.TrimSpace(token) == "" {
		return auth.Identity{}, fmt.Errorf("%w: mount a projected service-account token and pass it with --token-file", ErrMissingToken)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	review, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: a.audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return auth.Identity{}, fmt.Errorf("%w: cannot review the token with the Kubernetes API server (check that it is reachable and that meshd may create tokenreviews): %w", auth.ErrUnavailable, err)
	}
	st := review.Status
	if !st.Authenticated {
		return auth.Identity{}, a.classify(st.Error)
	}
	// The API server checks audiences itself; check again so that a server
	// that ignores spec.audiences cannot make us accept a foreign token.
	if len(a.audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(aud string) bool { return slices.Contains(a.audiences, aud) }) {
		return auth.Identity{}, fmt.Errorf("%w: the token is for %s, meshd accepts %s; project a token with audience %q",
			ErrWrongAudience, quoteList(st.Audiences), quoteList(a.audiences), a.audiences[0])
	}
	return parseUsername(st.User.Username)
}

// classify turns the API server's reason for refusing a token into one of
// the error classes. The reasons are free text (from the JWT library and the
// service-account authenticator); anything unrecognised is ErrInvalidToken.
func (a *Authenticator) classify(reason string) error {
	lower := strings.ToLower(reason)
	switch {
	case strings.Contains(lower, "expired"):
		return fmt.Errorf("%w (the API server says: %s); the token file must be refreshed by the kubelet, or request a new token", ErrExpiredToken, reason)
	case strings.Contains(lower, "audience"):
		want := "the API server's default audience"
		if len(a.audiences) > 0 {
			want = quoteList(a.audiences)
		}
		return fmt.Errorf("%w (the API server says: %s); meshd accepts %s", ErrWrongAudience, reason, want)
	case reason == "":
		return fmt.Errorf("%w: the API server did not authenticate it", ErrInvalidToken)
	default:
		return fmt.Errorf("%w (the API server says: %s)", ErrInvalidToken, reason)
	}
}

// parseUsername reads "system:serviceaccount:<namespace>:<name>".
func parseUsername(username string) (auth.Identity, error) {
	const prefix = "system:serviceaccount:"
	rest, ok := strings.CutPrefix(username, prefix)
	if !ok {
		return auth.Identity{}, fmt.Errorf("%w: it authenticates user %q; use a service account's token", ErrNotServiceAccount, username)
	}
	ns, sa, ok := strings.Cut(rest, ":")
	if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(sa)) > 0 {
		return auth.Identity{}, fmt.Errorf("%w: username %q is not of the form %s<namespace>:<name>", ErrNotServiceAccount, username, prefix)
	}
	return auth.Identity{Namespace: ns, ServiceAccount: sa}, nil
}

func quoteList(s []string) string {
	if len(s) == 0 {
		return "no audience"
	}
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

// IsUnavailable reports whether err means the API server could not be
// asked (as opposed to the token being refused). It is errors.Is(err,
// auth.ErrUnavailable), kept for callers that know only this package.
func IsUnavailable(err error) bool {
	return errors.Is(err, auth.ErrUnavailable)
}
