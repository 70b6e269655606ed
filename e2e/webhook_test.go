package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	kubesource "github.com/minimesh/minimesh/discovery/kubernetes"
	"github.com/minimesh/minimesh/discovery/kubernetes/admission"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/e2e/kubeenv"
	"github.com/minimesh/minimesh/xds/ca"
)

// TestKubernetesWebhook runs the meshd binary in Kubernetes mode as a
// service account holding only rbac.yaml, with its admission webhook on
// loopback and webhook.yaml installed with a url clientConfig. meshd must
// fill in the caBundle itself, and `apply` of an invalid policy must then
// be refused with exactly the lines the meshctl binary's validate prints
// for the same file (less its file:line). With meshd stopped,
// failurePolicy Ignore admits the same mistake, and meshd, started again,
// skips it, reports it, and refuses the next one.
func TestKubernetesWebhook(t *testing.T) {
	env := kubeenv.Start(t)
	ctx := t.Context()
	admin := env.Client()
	dir := t.TempDir()
	if err := env.Apply(ctx, kubesource.CRDs(), kubeenv.ApplyOptions{}); err != nil {
		t.Fatalf("apply the CRDs: %v", err)
	}
	if err := env.Apply(ctx, append(kubesource.RBAC(), []byte(kubeenv.MeshdAccount+kubeenv.MeshdBinding+`---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
`)...), kubeenv.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}

	webhookAddr := freeAddrOn(t, "127.0.0.1")
	var cfg admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(admission.WebhookConfiguration(), &cfg); err != nil {
		t.Fatalf("webhook.yaml: %v", err)
	}
	url := "https://" + webhookAddr + admission.Path
	cfg.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
	webhooks := admin.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if _, err := webhooks.Create(ctx, &cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	kubeconfig := serviceAccountKubeconfig(t, env, dir, "minimesh-system", "meshd")
	monitoring := freeAddrOn(t, "127.0.0.1")
	caDir := filepath.Join(dir, "ca")
	startMeshd := func(name string) *kproc {
		p := startProc(t, t, dir, name, "", bins.Meshd, "serve",
			"--kubeconfig", kubeconfig, "--ca-dir", caDir,
			"--xds-addr", "127.0.0.1:0", "--monitoring-addr", monitoring,
			"--webhook-addr", webhookAddr, "--webhook-hosts", "127.0.0.1",
			// The test reads /debug/model; the debug API's own
			// authentication is tested in cmd/meshd and xds/debugauth.
			"--debug-auth", "none")
		waitUntil(t, p, "meshd to be ready", func() bool {
			code, _ := httpGet("http://" + monitoring + "/readyz")
			return code == http.StatusOK
		})
		return p
	}
	meshd := startMeshd("meshd")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "logs", "meshd.log"))
			t.Logf("meshd log:\n%s", b)
		}
	})
	root, err := os.ReadFile(filepath.Join(caDir, ca.RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, meshd, "meshd to set the caBundle to its root", func() bool {
		c, err := webhooks.Get(ctx, cfg.Name, metav1.GetOptions{})
		return err == nil && bytes.Equal(c.Webhooks[0].ClientConfig.CABundle, root)
	})

	// Both mistakes get past the CRD schema (it keeps unknown fields, and
	// cannot say that port-level settings need a selector); the webhook
	// must catch them.
	invalid := `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  mTLS: {mode: STRICT}
  portLevelMtls:
    "8080": {mode: DISABLE}
`
	validated := meshctlValidateErrors(t, dir, invalid)
	apply := func(manifest string, dryRun bool) error {
		return env.Apply(ctx, []byte(manifest), kubeenv.ApplyOptions{DryRun: dryRun})
	}
	waitUntil(t, meshd, "the API server to call meshd's webhook", func() bool {
		err := apply(invalid, true)
		return err != nil && strings.Contains(err.Error(), "denied the request")
	})

	err = apply(invalid, false)
	const denied = `admission webhook "validation.minimesh.io" denied the request: `
	if err == nil {
		t.Fatal("an invalid PeerAuthentication was admitted")
	}
	if _, msg, _ := strings.Cut(err.Error(), denied); msg != validated {
		t.Errorf("apply refused with:\n%v\nwant %q followed by what meshctl validate prints:\n%s", err, denied, validated)
	}
	valid := `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  mtls: {mode: STRICT}
`
	if err := apply(valid, false); err != nil {
		t.Fatalf("a valid PeerAuthentication was refused: %v", err)
	}

	meshd.stop()
	whileDown := strings.Replace(invalid, "name: strict", "name: while-down", 1)
	if err := apply(whileDown, false); err != nil {
		t.Fatalf("with meshd stopped, failurePolicy Ignore should admit: %v", err)
	}
	meshd = startMeshd("meshd-again")
	_, body := httpGet("http://" + monitoring + "/debug/model")
	var snap model.Snapshot
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatalf("/debug/model: %v: %s", err, body)
	}
	var names, lines []string
	for _, pa := range snap.Policies.PeerAuthentications {
		names = append(names, pa.Namespace+"/"+pa.Name)
	}
	for _, p := range snap.Problems {
		lines = append(lines, p.Line())
	}
	if !slices.Equal(names, []string{"shop/strict"}) {
		t.Errorf("meshd serves PeerAuthentications %q, want only the valid shop/strict", names)
	}
	for _, l := range strings.Split(meshctlValidateErrors(t, dir, whileDown), "\n") {
		if !slices.Contains(lines, l) {
			t.Errorf("meshd does not report %q; it reports %q", l, lines)
		}
	}
	// Restarted with the same CA, meshd's webhook refuses again.
	afterRestart := strings.Replace(invalid, "name: strict", "name: after-restart", 1)
	waitUntil(t, meshd, "the restarted meshd's webhook to answer", func() bool {
		err := apply(afterRestart, true)
		return err != nil && strings.Contains(err.Error(), denied)
	})
	if err := apply(afterRestart, false); err == nil || !strings.Contains(err.Error(), denied) {
		t.Errorf("apply after meshd restarted: %v; want the webhook to refuse it", err)
	}
}

// lineLocation is the "path:line: " meshctl validate starts a line with.
var lineLocation = regexp.MustCompile(`^[^:]+:\d+: `)

// meshctlValidateErrors runs `meshctl validate` on manifest and returns its
// error lines without their file:line, joined by newlines.
func meshctlValidateErrors(t *testing.T, dir, manifest string) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("validate-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bins.Meshctl, "validate", "-f", path).Output()
	if err == nil {
		t.Fatalf("meshctl validate accepts:\n%s", manifest)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, path+":") {
			continue
		}
		l = lineLocation.ReplaceAllString(l, "")
		if strings.HasPrefix(l, "error: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		t.Fatalf("meshctl validate printed no error line:\n%s", out)
	}
	return strings.Join(lines, "\n")
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates to env
// as service account ns/name.
func serviceAccountKubeconfig(t *testing.T, env *kubeenv.Env, dir, ns, name string) string {
	t.Helper()
	exp := int64(3600)
	tr, err := env.Client().CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc := env.RESTConfig()
	path := filepath.Join(dir, name+".kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, rc.Host, rc.CAFile, tr.Status.Token)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitUntil polls ok until it holds, failing if p exits or a minute passes.
func waitUntil(t *testing.T, p *kproc, what string, ok func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for !ok() {
		if p.exited() {
			t.Fatalf("%s exited while waiting for %s:\n%s", p.name, what, p.logTail())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s:\n%s", what, p.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
