package debugauth_test

// Against a real kube-apiserver (e2e/kubeenv): meshd's own service account
// with the ClusterRole of rbac.yaml reviews the tokens, and only a service
// account bound to minimesh-debug-reader may read /debug/*.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	kubesource "github.com/minimesh/minimesh/discovery/kubernetes"
	"github.com/minimesh/minimesh/e2e/kubeenv"
	"github.com/minimesh/minimesh/xds/debugauth"
)

func token(t *testing.T, c kubernetes.Interface, ns, sa string) string {
	t.Helper()
	exp := int64(3600)
	tr, err := c.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

func TestDebugAPIWithTokenReviewAndSubjectAccessReview(t *testing.T) {
	env := kubeenv.Start(t)
	ctx := t.Context()
	manifest := string(kubesource.RBAC()) + kubeenv.MeshdAccount + `---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: minimesh-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: stranger, namespace: minimesh-system}
` + kubeenv.MeshdBinding + `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: minimesh-debug-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: minimesh-debug-reader}
subjects: [{kind: ServiceAccount, name: reader, namespace: minimesh-system}]
`
	if err := env.Apply(ctx, []byte(manifest), kubeenv.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	admin := env.Client()
	// meshd asks as itself, with nothing but rbac.yaml's permissions.
	asMeshd := rest.AnonymousClientConfig(env.RESTConfig())
	asMeshd.BearerToken = token(t, admin, "minimesh-system", "meshd")
	meshdClient, err := kubernetes.NewForConfig(asMeshd)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(debugauth.Guard(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "the mesh")
	}), debugauth.NewKubernetes(meshdClient), slog.New(slog.DiscardHandler)))
	defer srv.Close()

	reader := token(t, admin, "minimesh-system", "reader")
	stranger := token(t, admin, "minimesh-system", "stranger")
	for _, tc := range []struct {
		name, path, token string
		code              int
	}{
		{"no token", "/debug/syncz", "", http.StatusUnauthorized},
		{"a token the API server did not issue", "/debug/syncz", "not-a-token", http.StatusUnauthorized},
		{"an account without the role", "/debug/syncz", stranger, http.StatusForbidden},
		{"an account bound to minimesh-debug-reader", "/debug/syncz", reader, http.StatusOK},
		{"the reader, another debug path", "/debug/config_dump", reader, http.StatusOK},
		{"the reader, a path the role does not name", "/other", reader, http.StatusForbidden},
		{"metrics without a token", "/metrics", "", http.StatusOK},
		{"readiness without a token", "/readyz", "", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Errorf("%s %s: %d %q, want %d", tc.name, tc.path, resp.StatusCode, body, tc.code)
			}
		})
	}
}
