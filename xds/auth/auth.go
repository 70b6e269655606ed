// Package auth decides who is on the other end of an xDS stream: it reads
// the proxy's node ID, authenticates the bearer token the proxy sends, and
// checks that the two agree before any secret is served.
//
// The xDS server calls, per stream:
//
//	token, err := auth.BearerToken(ctx)            // skipped when the authenticator is None
//	id, err := authenticator.Authenticate(ctx, token)
//	node, err := auth.ParseNodeID(req.Node.Id)
//	identity, err := auth.Authorize(id, node, podServiceAccount)
//
// and issues certificates only for the identity Authorize returns. Errors
// wrap ErrUnauthenticated, ErrUnavailable, ErrPermissionDenied, ErrBadNodeID
// or ErrPodUnknown so the server can pick the gRPC status code and metric.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/minimesh/minimesh/xds/internal/clip"
)

// Error classes. Every error from this package wraps exactly one of them.
var (
	// ErrUnauthenticated: no token, a malformed header, or a token the
	// authenticator does not accept (gRPC Unauthenticated).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrUnavailable: the authenticator could not decide, because
	// something it depends on (the Kubernetes API server for TokenReview)
	// is unreachable. Not the client's fault: gRPC Unavailable, so the
	// client retries with the same token instead of giving up.
	ErrUnavailable = errors.New("authentication unavailable")
	// ErrPermissionDenied: the token is valid but the node ID claims a
	// different namespace or service account (gRPC PermissionDenied).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrBadNodeID: the node ID does not have Istio's form (gRPC
	// InvalidArgument).
	ErrBadNodeID = errors.New("bad node ID")
	// ErrPodUnknown: the namespace checks out but discovery has not seen
	// the pod yet, so its service account is unknown. Not a refusal: keep
	// the stream open and call Authorize again when the pod appears.
	ErrPodUnknown = errors.New("pod not known yet")
)

// Identity is what a token proves: a Kubernetes service account.
type Identity struct {
	Namespace      string
	ServiceAccount string
	// Anonymous is set by None: nothing was proved, and Authorize takes the
	// identity from the node ID and the pod instead.
	Anonymous bool
}

// String is "namespace/serviceaccount", or "anonymous".
func (id Identity) String() string {
	if id.Anonymous {
		return "anonymous"
	}
	return id.Namespace + "/" + id.ServiceAccount
}

// Authenticator turns a bearer token into an identity. Implementations
// must never put the token itself into an error or a log line.
//
// A Kubernetes implementation will send the token to the TokenReview API
// with the audience meshd expects (Istio uses "istio-ca"), so that a token
// minted for another service cannot be replayed here; it fits this
// interface unchanged.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// None accepts every caller without a token. The server then trusts the
// node ID, so any local process can obtain any workload's certificate: use
// it only for local development, and log a warning at start.
type None struct{}

// Authenticate implements Authenticator.
func (None) Authenticate(context.Context, string) (Identity, error) {
	return Identity{Anonymous: true}, nil
}

// BearerToken returns the token in the stream's "authorization: Bearer
// <token>" metadata, the header Envoy sends when its bootstrap sets
// initial_metadata and gRPC-Go sends with per-RPC credentials.
func BearerToken(ctx context.Context) (string, error) {
	const want = `send the header "authorization: Bearer <token>"`
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", fmt.Errorf("%w: the stream carries no metadata; %s", ErrUnauthenticated, want)
	}
	values := md.Get("authorization")
	switch len(values) {
	case 0:
		return "", fmt.Errorf("%w: the stream has no authorization header; %s", ErrUnauthenticated, want)
	case 1:
	default:
		return "", fmt.Errorf("%w: the stream has %d authorization headers; %s exactly once", ErrUnauthenticated, len(values), want)
	}
	scheme, token, found := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		// Only the scheme is quoted: the rest may be a credential.
		if !found {
			return "", fmt.Errorf("%w: the authorization header has no scheme; %s", ErrUnauthenticated, want)
		}
		return "", fmt.Errorf("%w: the authorization header uses scheme %q; %s", ErrUnauthenticated, clip.String(scheme), want)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", fmt.Errorf("%w: the authorization header has no token after Bearer; %s", ErrUnauthenticated, want)
	}
	if strings.ContainsAny(token, " \t") {
		return "", fmt.Errorf("%w: the bearer token contains whitespace; %s", ErrUnauthenticated, want)
	}
	return token, nil
}

// Authorize checks that a proxy presenting node may act as id, given the
// service account of the pod the node ID names (podSA, from discovery;
// empty when the pod is not known yet). It returns the identity to issue
// certificates for.
//
// The namespace is checked first because it needs only the node ID: a
// token for namespace a claiming a pod in namespace b is refused at once.
// The service account needs the pod; until discovery has seen it the error
// wraps ErrPodUnknown. With None (id.Anonymous) the identity is the node's
// namespace and the pod's service account.
func Authorize(id Identity, node NodeID, podSA string) (Identity, error) {
	pod := node.Namespace + "/" + node.Pod
	if id.Anonymous {
		if podSA == "" {
			return Identity{}, fmt.Errorf("%w: pod %s has no known service account yet", ErrPodUnknown, pod)
		}
		return Identity{Namespace: node.Namespace, ServiceAccount: podSA}, nil
	}
	if id.Namespace == "" || id.ServiceAccount == "" {
		// A broken authenticator must not open every door.
		return Identity{}, fmt.Errorf("%w: the authenticator returned an incomplete identity %q", ErrPermissionDenied, id.String())
	}
	if node.Namespace != id.Namespace {
		return Identity{}, fmt.Errorf("%w: node %s claims namespace %q, but its token is for service account %s",
			ErrPermissionDenied, node, node.Namespace, id)
	}
	if podSA == "" {
		return Identity{}, fmt.Errorf("%w: pod %s has no known service account yet", ErrPodUnknown, pod)
	}
	if podSA != id.ServiceAccount {
		return Identity{}, fmt.Errorf("%w: pod %s runs as service account %s/%s, but the token of node %s is for %s",
			ErrPermissionDenied, pod, node.Namespace, podSA, node, id)
	}
	return id, nil
}
