package tokenreview

import (
	"context"
	"errors"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/minimesh/minimesh/xds/auth"
)

// fakeReviewer answers every TokenReview with status, and records the
// request's spec.
func fakeReviewer(status authenticationv1.TokenReviewStatus, reviewErr error, seen *authenticationv1.TokenReviewSpec) *fake.Clientset {
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		if seen != nil {
			*seen = tr.Spec
		}
		if reviewErr != nil {
			return true, nil, reviewErr
		}
		out := tr.DeepCopy()
		out.Status = status
		return true, out, nil
	})
	return c
}

func TestAuthenticate(t *testing.T) {
	sa := func(name string) authenticationv1.UserInfo { return authenticationv1.UserInfo{Username: name} }
	tests := []struct {
		name      string
		token     string
		audiences []string
		status    authenticationv1.TokenReviewStatus
		reviewErr error
		want      auth.Identity
		wantErr   error // nil: success
		wantText  string
	}{
		{
			name: "service account", token: "t", audiences: []string{"istio-ca"},
			status: authenticationv1.TokenReviewStatus{Authenticated: true, User: sa("system:serviceaccount:default:product"), Audiences: []string{"istio-ca"}},
			want:   auth.Identity{Namespace: "default", ServiceAccount: "product"},
		},
		{
			name: "no audience configured accepts the server's default", token: "t",
			status: authenticationv1.TokenReviewStatus{Authenticated: true, User: sa("system:serviceaccount:ns:sa.with.dots")},
			want:   auth.Identity{Namespace: "ns", ServiceAccount: "sa.with.dots"},
		},
		{name: "missing token", token: "  ", wantErr: ErrMissingToken, wantText: "--token-file"},
		{
			name: "expired", token: "t",
			status:  authenticationv1.TokenReviewStatus{Error: "[invalid bearer token, service account token has expired]"},
			wantErr: ErrExpiredToken, wantText: "has expired",
		},
		{
			name: "audience refused by the API server", token: "t", audiences: []string{"istio-ca"},
			status:  authenticationv1.TokenReviewStatus{Error: `token audiences ["other"] is invalid for the target audiences ["istio-ca"]`},
			wantErr: ErrWrongAudience, wantText: `"istio-ca"`,
		},
		{
			name: "audience not checked by the API server is checked here", token: "t", audiences: []string{"istio-ca"},
			status:  authenticationv1.TokenReviewStatus{Authenticated: true, User: sa("system:serviceaccount:a:b"), Audiences: []string{"other"}},
			wantErr: ErrWrongAudience, wantText: `"other"`,
		},
		{
			name: "invalid signature", token: "t",
			status:  authenticationv1.TokenReviewStatus{Error: "invalid bearer token"},
			wantErr: ErrInvalidToken, wantText: "invalid bearer token",
		},
		{name: "refused without a reason", token: "t", wantErr: ErrInvalidToken},
		{
			name: "a user, not a service account", token: "t",
			status:  authenticationv1.TokenReviewStatus{Authenticated: true, User: sa("alice")},
			wantErr: ErrNotServiceAccount, wantText: `"alice"`,
		},
		{
			name: "malformed service-account username", token: "t",
			status:  authenticationv1.TokenReviewStatus{Authenticated: true, User: sa("system:serviceaccount:Bad_NS")},
			wantErr: ErrNotServiceAccount,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var seen authenticationv1.TokenReviewSpec
			a := New(fakeReviewer(tc.status, tc.reviewErr, &seen), Options{Audiences: tc.audiences})
			got, err := a.Authenticate(context.Background(), tc.token)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if got != tc.want {
					t.Errorf("identity = %+v, want %+v", got, tc.want)
				}
				if seen.Token != tc.token || strings.Join(seen.Audiences, ",") != strings.Join(tc.audiences, ",") {
					t.Errorf("review spec = %+v, want token %q audiences %v", seen, tc.token, tc.audiences)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("err = %v, want %v (and auth.ErrUnauthenticated)", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("err = %q, want it to mention %q", err, tc.wantText)
			}
			if IsUnavailable(err) {
				t.Errorf("IsUnavailable(%v) = true for a refused token", err)
			}
		})
	}
}

func TestAPIServerUnreachableIsNotARefusal(t *testing.T) {
	a := New(fakeReviewer(authenticationv1.TokenReviewStatus{}, errors.New("connection refused"), nil), Options{})
	_, err := a.Authenticate(context.Background(), "secret-token-value")
	if err == nil || errors.Is(err, auth.ErrUnauthenticated) || !errors.Is(err, auth.ErrUnavailable) || !IsUnavailable(err) {
		t.Fatalf("err = %v, want auth.ErrUnavailable, not auth.ErrUnauthenticated", err)
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("err = %q, want it to keep the API server's error", err)
	}
	if strings.Contains(err.Error(), "secret-token-value") {
		t.Errorf("the error %q contains the token", err)
	}
}
