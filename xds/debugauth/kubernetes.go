package debugauth

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// reviewTimeout bounds each review with the API server.
const reviewTimeout = 10 * time.Second

// Kubernetes authorizes a request with the API server: a TokenReview of
// its bearer token, then a SubjectAccessReview of the user it names for
// the request's verb on its path. meshd needs RBAC create on
// tokenreviews.authentication.k8s.io and
// subjectaccessreviews.authorization.k8s.io.
type Kubernetes struct {
	client kubernetes.Interface
}

// NewKubernetes returns an Authorizer that asks the API server through
// client. Tokens are reviewed for the API server's own audiences, so a
// token from `kubectl create token` works, as with kube-rbac-proxy.
func NewKubernetes(client kubernetes.Interface) *Kubernetes {
	return &Kubernetes{client: client}
}

// Authorize implements Authorizer. The token never appears in an error.
func (k *Kubernetes) Authorize(r *http.Request) error {
	token, err := bearerToken(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), reviewTimeout)
	defer cancel()
	tr, err := k.client.AuthenticationV1().TokenReviews().Create(ctx,
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("%w: reviewing the token with the Kubernetes API server (may meshd create tokenreviews?): %w", ErrUnavailable, err)
	}
	if !tr.Status.Authenticated {
		why := "it did not say why"
		if tr.Status.Error != "" {
			why = "it says: " + tr.Status.Error
		}
		return fmt.Errorf("%w: the Kubernetes API server does not accept the bearer token (%s)", ErrUnauthenticated, why)
	}
	user := tr.Status.User
	attrs := &authorizationv1.NonResourceAttributes{Path: r.URL.Path, Verb: verb(r.Method)}
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := k.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra, NonResourceAttributes: attrs,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("%w: asking the Kubernetes API server whether %s may %s %s (may meshd create subjectaccessreviews?): %w",
			ErrUnavailable, user.Username, attrs.Verb, attrs.Path, err)
	}
	if !sar.Status.Allowed {
		return fmt.Errorf("%w: user %q may not %s %s; bind it to the ClusterRole minimesh-debug-reader (nonResourceURLs /debug/*, verb get)",
			ErrForbidden, user.Username, attrs.Verb, attrs.Path)
	}
	return nil
}

// verb is the Kubernetes verb of an HTTP method, as kube-rbac-proxy maps
// it for non-resource URLs.
func verb(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	default:
		return strings.ToLower(method)
	}
}
