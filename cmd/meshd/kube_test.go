package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubesource "github.com/minimesh/minimesh/discovery/kubernetes"
	"github.com/minimesh/minimesh/e2e/kubeenv"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// saToken requests a token of service account ns/name from env's API
// server.
func saToken(t *testing.T, env *kubeenv.Env, ns, name string) string {
	t.Helper()
	exp := int64(3600)
	tok, err := env.Client().CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request a token for %s/%s: %v", ns, name, err)
	}
	return tok.Status.Token
}

// writeSAKubeconfig writes a kubeconfig for env's API server that
// authenticates as service account ns/name.
func writeSAKubeconfig(t *testing.T, env *kubeenv.Env, ns, name string) string {
	t.Helper()
	token := saToken(t, env, ns, name)
	rc := env.RESTConfig()
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, rc.Host, rc.CAFile, token)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func freeLocalAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeKubernetesWaitsForLists runs `meshd serve --kubeconfig` as a
// service account that may not list anything yet: meshd must stay unready
// (and serve nothing) rather than publish an empty mesh, and become ready
// with the whole mesh as soon as the RBAC in rbac.yaml is granted. It also
// checks the wiring around the source: the invalid-objects metric in
// meshd's registry, Events recorded as component minimesh, and the debug
// API guarded by TokenReview and SubjectAccessReview.
func TestServeKubernetesWaitsForLists(t *testing.T) {
	env := kubeenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := env.Apply(ctx, kubesource.CRDs(), kubeenv.ApplyOptions{}); err != nil {
		t.Fatalf("apply the CRDs: %v", err)
	}
	if err := env.Apply(ctx, []byte(kubeenv.MeshdAccount+`---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad-principal, namespace: shop}
spec:
  rules:
  - from:
    - source:
        principals: ["a*b"]
`), kubeenv.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeconfig := writeSAKubeconfig(t, env, "minimesh-system", "meshd")

	mon := freeLocalAddr(t)
	var stdout, stderr xdstest.Buffer
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"serve", "--kubeconfig", kubeconfig, "--log-format", "json",
			"--ca-dir", t.TempDir(), "--xds-addr", "127.0.0.1:0", "--monitoring-addr", mon, "--webhook-addr", "127.0.0.1:0"}, &stdout, &stderr)
	}()
	t.Cleanup(func() {
		stop()
		waitServeStopped(t, done, 15*time.Second)
		if t.Failed() {
			t.Logf("meshd log:\n%s", stderr.String())
		}
	})

	// Without RBAC every list is forbidden: meshd keeps retrying and must
	// not become ready meanwhile.
	deadline := time.Now().Add(3 * time.Second)
	sawNotReady := false
	for time.Now().Before(deadline) {
		code, body := httpGet("http://" + mon + "/readyz")
		if code == http.StatusOK {
			t.Fatalf("/readyz answered 200 (%q) before meshd could list anything", body)
		}
		sawNotReady = sawNotReady || code == http.StatusServiceUnavailable
		time.Sleep(100 * time.Millisecond)
	}
	if !sawNotReady {
		t.Fatal("/readyz never answered 503 while the lists were forbidden")
	}
	for _, l := range logLines(t, stderr.String()) {
		if l["msg"] == "mesh loaded" {
			t.Fatalf("meshd published a mesh before it could list anything: %v", l)
		}
	}

	if err := env.Apply(ctx, append(kubesource.RBAC(), kubeenv.MeshdBinding...), kubeenv.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	// The informers back off after a forbidden list; give them time.
	waitFor(t, 60*time.Second, "/readyz to answer 200 once RBAC is granted", func() bool {
		code, _ := httpGet("http://" + mon + "/readyz")
		return code == http.StatusOK
	})
	first := waitLog(t, &stderr, "the first mesh", func(l map[string]any) bool { return l["msg"] == "mesh loaded" })
	if first["namespaces"].(float64) < 2 || first["errors"] != 1.0 {
		t.Errorf("first mesh loaded = %v, want the namespaces listed and the one invalid policy", first)
	}

	waitFor(t, 30*time.Second, "the invalid-objects metric", func() bool {
		_, body := httpGet("http://" + mon + "/metrics")
		return strings.Contains(body, `minimesh_discovery_invalid_objects_total{kind="AuthorizationPolicy"} 1`)
	})
	var ev corev1.Event
	waitFor(t, 30*time.Second, "an Event on shop/bad-principal", func() bool {
		evs, err := env.Client().CoreV1().Events("shop").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=bad-principal"})
		if err != nil || len(evs.Items) == 0 {
			return false
		}
		ev = evs.Items[0]
		return true
	})
	if ev.Source.Component != "minimesh" || ev.Reason != kubesource.ReasonInvalidPolicy || !strings.Contains(ev.Message, "principals") {
		t.Errorf("event from %q, reason %q, message %q; want from minimesh, reason %s, naming principals",
			ev.Source.Component, ev.Reason, ev.Message, kubesource.ReasonInvalidPolicy)
	}

	// The debug API (default --debug-auth=kubernetes): a token reviewed
	// by the API server, whose user rbac.yaml's minimesh-debug-reader
	// lets get /debug/*.
	if err := env.Apply(ctx, []byte(`
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: minimesh-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: minimesh-debug-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: minimesh-debug-reader}
subjects: [{kind: ServiceAccount, name: reader, namespace: minimesh-system}]
`), kubeenv.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sa string
		code     int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"meshd's own account, not a reader", "meshd", http.StatusForbidden},
		{"an account bound to minimesh-debug-reader", "reader", http.StatusOK},
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+mon+"/debug/syncz", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.sa != "" {
			req.Header.Set("Authorization", "Bearer "+saToken(t, env, "minimesh-system", tc.sa))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("/debug/syncz, %s: %d %q, want %d", tc.name, resp.StatusCode, body, tc.code)
		}
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
