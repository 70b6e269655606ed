package debugauth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/minimesh/minimesh/xds/xdstest"
)

// authorizerFunc adapts a function to Authorizer.
type authorizerFunc func(*http.Request) error

func (f authorizerFunc) Authorize(r *http.Request) error { return f(r) }

// served answers 200 "served" for any path.
var served = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "served") })

func get(t *testing.T, h http.Handler, path, token string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestGuardLeavesMetricsAndProbesOpen(t *testing.T) {
	asked := 0
	h := Guard(served, authorizerFunc(func(*http.Request) error {
		asked++
		return fmt.Errorf("%w: no", ErrUnauthenticated)
	}), slog.New(slog.DiscardHandler))
	for _, p := range []string{"/metrics", "/healthz", "/readyz"} {
		if w := get(t, h, p, ""); w.Code != http.StatusOK {
			t.Errorf("%s: %d, want 200 without a token", p, w.Code)
		}
	}
	if asked != 0 {
		t.Errorf("the authorizer was asked %d times for open paths", asked)
	}
	// Everything else is guarded, including paths the guard does not
	// know and spellings the mux would clean up.
	for _, p := range []string{"/debug/syncz", "/debug/", "/debug/pprof/heap", "/metrics/../debug/syncz", "//debug/model", "/other"} {
		if w := get(t, h, p, ""); w.Code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", p, w.Code)
		}
	}
}

func TestGuardAnswersEachRefusal(t *testing.T) {
	logs := &xdstest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	for _, tc := range []struct {
		err    error
		code   int
		body   string
		hidden string // in the log, not in the body
	}{
		{nil, http.StatusOK, "served", ""},
		{fmt.Errorf("%w: no token", ErrUnauthenticated), http.StatusUnauthorized, "no token", ""},
		{fmt.Errorf("%w: user alice may not", ErrForbidden), http.StatusForbidden, "alice", ""},
		{fmt.Errorf("%w: dial tcp 10.96.0.1:443: refused", ErrUnavailable), http.StatusServiceUnavailable, "retry", "10.96.0.1"},
	} {
		h := Guard(served, authorizerFunc(func(*http.Request) error { return tc.err }), log)
		w := get(t, h, "/debug/syncz", "t")
		if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.body) {
			t.Errorf("%v: %d %q, want %d containing %q", tc.err, w.Code, w.Body.String(), tc.code, tc.body)
		}
		if tc.code == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%v: a 401 without WWW-Authenticate", tc.err)
		}
		if tc.hidden != "" && (strings.Contains(w.Body.String(), tc.hidden) || !strings.Contains(logs.String(), tc.hidden)) {
			t.Errorf("%v: %q should be in meshd's log only; body %q", tc.err, tc.hidden, w.Body.String())
		}
	}
}

// fakeCluster is a clientset whose API server knows two tokens, alice's
// and bob's, and lets alice get /debug/*: enough to see which reviews
// the authorizer asks for and what it does with the answers. The real
// API server is in kube_test.go.
func fakeCluster(t *testing.T, reviewErr error) (*fake.Clientset, *[]authorizationv1.SubjectAccessReviewSpec) {
	t.Helper()
	c := fake.NewClientset()
	var asked []authorizationv1.SubjectAccessReviewSpec
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if reviewErr != nil {
			return true, nil, reviewErr
		}
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		switch tr.Spec.Token {
		case "alice-token":
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{
				Username: "alice", UID: "u1", Groups: []string{"devs"}, Extra: map[string]authenticationv1.ExtraValue{"k": {"v"}}}}
		case "bob-token":
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "bob"}}
		default:
			tr.Status = authenticationv1.TokenReviewStatus{Error: "invalid bearer token"}
		}
		return true, tr, nil
	})
	c.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		asked = append(asked, sar.Spec)
		na := sar.Spec.NonResourceAttributes
		sar.Status.Allowed = sar.Spec.User == "alice" && na != nil && na.Verb == "get" && strings.HasPrefix(na.Path, "/debug/")
		return true, sar, nil
	})
	return c, &asked
}

func TestKubernetesReviewsTokenThenAccess(t *testing.T) {
	c, asked := fakeCluster(t, nil)
	k := NewKubernetes(c)
	for _, tc := range []struct {
		token string
		want  error
		text  string
	}{
		{"", ErrUnauthenticated, "needs a bearer token"},
		{"forged", ErrUnauthenticated, "invalid bearer token"},
		{"bob-token", ErrForbidden, `user "bob" may not get /debug/syncz`},
		{"alice-token", nil, ""},
	} {
		r := httptest.NewRequest(http.MethodGet, "/debug/syncz", nil)
		if tc.token != "" {
			r.Header.Set("Authorization", "Bearer "+tc.token)
		}
		err := k.Authorize(r)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("token %q: %v, want %v", tc.token, err, tc.want)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tc.text) {
			t.Errorf("token %q: %q does not say %q", tc.token, err, tc.text)
		}
		if tc.token != "" && err != nil && strings.Contains(err.Error(), tc.token) {
			t.Errorf("the error shows the token: %q", err)
		}
	}
	// Access is asked for the user the token named, with its groups and
	// extra, for get on the request's path.
	var alice *authorizationv1.SubjectAccessReviewSpec
	for i, s := range *asked {
		if s.User == "alice" {
			alice = &(*asked)[i]
		}
	}
	if alice == nil || alice.UID != "u1" || len(alice.Groups) != 1 || alice.Groups[0] != "devs" || alice.Extra["k"][0] != "v" ||
		alice.NonResourceAttributes == nil || *alice.NonResourceAttributes != (authorizationv1.NonResourceAttributes{Path: "/debug/syncz", Verb: "get"}) {
		t.Errorf("the access review for alice was %+v", alice)
	}
	if len(*asked) != 2 {
		t.Errorf("%d access reviews, want 2 (only for authenticated users)", len(*asked))
	}
}

func TestKubernetesUnavailable(t *testing.T) {
	c, _ := fakeCluster(t, errors.New("connection refused"))
	r := httptest.NewRequest(http.MethodGet, "/debug/syncz", nil)
	r.Header.Set("Authorization", "Bearer alice-token")
	if err := NewKubernetes(c).Authorize(r); !errors.Is(err, ErrUnavailable) {
		t.Errorf("with the API server down: %v, want ErrUnavailable", err)
	}
}

func TestTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "debug-tokens")
	if err := os.WriteFile(path, []byte("# readers\nreader-one\n\n  reader-two  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	h := Guard(served, tokens, slog.New(slog.DiscardHandler))
	for token, code := range map[string]int{"reader-one": 200, "reader-two": 200, "": 401, "reader": 401, "# readers": 401} {
		if w := get(t, h, "/debug/model", token); w.Code != code {
			t.Errorf("token %q: %d, want %d", token, w.Code, code)
		}
	}
	for name, content := range map[string]string{"empty": "# nobody\n", "space": "two words\n"} {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadTokens(p); err == nil {
			t.Errorf("LoadTokens accepted a file that is %s", name)
		}
	}
}
