package admission_test

// These tests run the webhook against a real kube-apiserver and etcd
// (e2e/kubeenv): the API server calls it over loopback, with a url
// clientConfig, so no Service is needed. They are skipped, with the command
// that builds the binaries, when those are missing.

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/minimesh/minimesh/discovery/file"
	"github.com/minimesh/minimesh/discovery/kubernetes"
	"github.com/minimesh/minimesh/discovery/kubernetes/admission"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/e2e/kubeenv"
	"github.com/minimesh/minimesh/policy"
	"github.com/minimesh/minimesh/xds/ca"
)

const waitTimeout = 30 * time.Second

var peerAuthentications = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}

// peerAuthentication is a PeerAuthentication in namespace shop with spec.
func peerAuthentication(name, spec string) string {
	return `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: ` + name + `
  namespace: shop
spec:
` + spec
}

// Specs of PeerAuthentications. The CRD schema keeps fields it does not
// know, so the misspelt mTLS reaches the webhook, as does a wildcard in a
// label value, which the schema cannot express.
const (
	strictSpec  = "  mtls: {mode: STRICT}\n"
	invalidSpec = "  mTLS: {mode: STRICT}\n  selector: {matchLabels: {app: \"web*\"}}\n"
)

func object(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(y), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

// validateErrors is what `meshctl validate` prints for the errors in
// manifest, which it reads as a file: the same lines, without the
// file:line a Kubernetes object does not have.
func validateErrors(t *testing.T, manifest string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := file.ReadPaths(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, p := range file.Build(files, file.Options{}).Problems {
		if p.Severity == policy.SeverityError {
			if !strings.HasPrefix(p.Location.File, path) {
				t.Fatalf("problem %v is not located in %s", p, path)
			}
			p.Location = policy.Location{}
			lines = append(lines, p.Line())
		}
	}
	if len(lines) == 0 {
		t.Fatalf("meshctl validate finds no error in:\n%s", manifest)
	}
	return strings.Join(lines, "\n")
}

// webhookConfiguration is the shipped webhook.yaml with a url clientConfig
// pointing at url instead of meshd's Service.
func webhookConfiguration(t *testing.T, url string) *admissionregistrationv1.ValidatingWebhookConfiguration {
	t.Helper()
	var cfg admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(admission.WebhookConfiguration(), &cfg); err != nil {
		t.Fatalf("webhook.yaml: %v", err)
	}
	if cfg.Name != admission.DefaultConfigName || len(cfg.Webhooks) != 1 {
		t.Fatalf("webhook.yaml holds %q with %d webhooks; want %s with one", cfg.Name, len(cfg.Webhooks), admission.DefaultConfigName)
	}
	if fp := cfg.Webhooks[0].FailurePolicy; fp == nil || *fp != admissionregistrationv1.Ignore {
		t.Fatalf("webhook.yaml: failurePolicy %v, want Ignore", fp)
	}
	cfg.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
	return &cfg
}

// warnings collects the warnings the API server sends a client.
type warnings struct {
	mu   sync.Mutex
	seen []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, text)
}

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestWebhookAgainstAPIServer installs the shipped webhook configuration
// (its clientConfig changed to a url on loopback), serves the webhook with
// a serving certificate from a mesh CA, and lets CABundle fill in the
// caBundle: the same three pieces meshd wires together. The API server
// must then call the webhook for every policy write.
func TestWebhookAgainstAPIServer(t *testing.T) {
	env := kubeenv.Start(t)
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	if err := env.Apply(ctx, kubernetes.CRDs(), kubeenv.ApplyOptions{}); err != nil {
		t.Fatalf("apply the CRDs: %v", err)
	}
	admin := env.Client()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	authority, err := ca.New(ca.Options{Dir: t.TempDir()}, log)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := authority.NewServingCertificate([]string{"127.0.0.1"}, log)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hookCtx, stopHook := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- admission.Serve(hookCtx, lis, admission.ServeOptions{GetCertificate: serving.GetCertificate, Log: log})
	}()
	t.Cleanup(func() {
		stopHook()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after its context ended, want nil", err)
		}
	})

	// The controller starts before the configuration exists, as meshd may.
	bundleCtx, stopBundle := context.WithCancel(ctx)
	bundleDone := make(chan error, 1)
	go func() {
		bundleDone <- admission.CABundle(bundleCtx, admission.CABundleOptions{
			Client: admin, Name: admission.DefaultConfigName, Bundle: authority.RootPEM(), Log: log})
	}()
	t.Cleanup(func() {
		stopBundle()
		if err := <-bundleDone; err != nil {
			t.Errorf("CABundle returned %v after cancel, want nil", err)
		}
	})
	webhooks := admin.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if _, err := webhooks.Create(ctx, webhookConfiguration(t, "https://"+lis.Addr().String()+admission.Path), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	caBundleIsRoot := func() bool {
		cfg, err := webhooks.Get(ctx, admission.DefaultConfigName, metav1.GetOptions{})
		return err == nil && bytes.Equal(cfg.Webhooks[0].ClientConfig.CABundle, authority.RootPEM())
	}
	waitFor(t, "CABundle to set the caBundle to the mesh root", caBundleIsRoot)

	rc := env.RESTConfig()
	warned := &warnings{}
	rc.WarningHandler = warned
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	pas := dyn.Resource(peerAuthentications).Namespace("shop")
	invalid := peerAuthentication("strict", invalidSpec)
	want := `admission webhook "validation.minimesh.io" denied the request: ` + validateErrors(t, invalid)

	// The API server reads webhook configurations through an informer:
	// until it has seen the caBundle, failurePolicy Ignore admits.
	waitFor(t, "the API server to call the webhook", func() bool {
		_, err := pas.Create(ctx, object(t, invalid), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err != nil && strings.Contains(err.Error(), "denied the request")
	})

	t.Run("an invalid policy is refused with meshctl validate's message", func(t *testing.T) {
		_, err := pas.Create(ctx, object(t, invalid), metav1.CreateOptions{})
		if err == nil || err.Error() != want || !apierrors.IsInvalid(err) {
			t.Fatalf("create: %v\nwant the Invalid error: %s", err, want)
		}
		if _, err := pas.Get(ctx, "strict", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the refused policy was stored: get returned %v", err)
		}
	})
	t.Run("an invalid policy is refused at server-side apply", func(t *testing.T) {
		err := env.Apply(ctx, []byte(invalid), kubeenv.ApplyOptions{})
		if err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Fatalf("apply: %v\nwant it to end with: %s", err, want)
		}
	})
	t.Run("a mode outside the enum is refused by the CRD schema first", func(t *testing.T) {
		_, err := pas.Create(ctx, object(t, peerAuthentication("strictt", "  mtls: {mode: STRICTT}\n")), metav1.CreateOptions{})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), `spec.mtls.mode: Unsupported value: "STRICTT"`) {
			t.Errorf("create with mode STRICTT: %v; want the schema's Invalid error naming spec.mtls.mode", err)
		}
	})
	t.Run("kubectl apply shows the message", func(t *testing.T) {
		kubectl, err := exec.LookPath("kubectl")
		if err != nil {
			t.Skip("kubectl is not installed; the server-side apply above covers the API server's answer")
		}
		path := filepath.Join(t.TempDir(), "strict.yaml")
		if err := os.WriteFile(path, []byte(invalid), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", env.Kubeconfig(), "apply", "-f", path).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || !strings.Contains(string(out), validateErrors(t, invalid)) {
			t.Errorf("kubectl apply: %v\n%s\nwant a failure showing:\n%s", err, out, validateErrors(t, invalid))
		}
	})
	t.Run("a server-side dry run is checked too", func(t *testing.T) {
		_, err := pas.Create(ctx, object(t, invalid), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil || err.Error() != want {
			t.Errorf("dry-run create: %v\nwant: %s", err, want)
		}
	})
	t.Run("a valid policy is admitted, an update into an invalid version is not", func(t *testing.T) {
		if _, err := pas.Create(ctx, object(t, peerAuthentication("strict", strictSpec)), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create a valid policy: %v", err)
		}
		stored, err := pas.Get(ctx, "strict", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		stored.Object["spec"] = object(t, invalid).Object["spec"]
		if _, err := pas.Update(ctx, stored, metav1.UpdateOptions{}); err == nil || err.Error() != want {
			t.Errorf("update into the invalid spec: %v\nwant: %s", err, want)
		}
		now, err := pas.Get(ctx, "strict", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if mode, _, _ := unstructured.NestedString(now.Object, "spec", "mtls", "mode"); mode != "STRICT" {
			t.Errorf("stored spec is %v after the refused update, want mtls.mode STRICT", now.Object["spec"])
		}
		if err := pas.Delete(ctx, "strict", metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete: %v", err)
		}
	})
	t.Run("warnings reach the client", func(t *testing.T) {
		dr := `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
`
		drs := dyn.Resource(schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1beta1", Resource: "destinationrules"}).Namespace("shop")
		if _, err := drs.Create(ctx, object(t, dr), metav1.CreateOptions{}); err != nil {
			t.Fatalf("a policy with only warnings was refused: %v", err)
		}
		const w = "DestinationRule shop/web: spec.trafficPolicy.loadBalancer: ignored by minimesh: only tls is implemented in a traffic policy"
		if !slices.Contains(warned.all(), w) {
			t.Errorf("warnings %q; want %q", warned.all(), w)
		}
	})
	t.Run("a caBundle removed by re-applying webhook.yaml is put back", func(t *testing.T) {
		cfg, err := webhooks.Get(ctx, admission.DefaultConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Webhooks[0].ClientConfig.CABundle = nil
		if _, err := webhooks.Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "CABundle to put the caBundle back", caBundleIsRoot)
	})

	t.Run("with the webhook down, failurePolicy Ignore admits and the source still refuses", func(t *testing.T) {
		stopHook()
		if err := <-served; err != nil {
			t.Fatalf("Serve returned %v after its context ended, want nil", err)
		}
		served <- nil // for the cleanup
		down := peerAuthentication("while-down", invalidSpec)
		if _, err := pas.Create(ctx, object(t, down), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create with the webhook down: %v; failurePolicy Ignore should admit", err)
		}
		snap := firstSnapshot(t, rc, log)
		if len(snap.Policies.PeerAuthentications) != 0 {
			t.Errorf("the source accepted %v", snap.Policies.PeerAuthentications)
		}
		var lines []string
		for _, p := range snap.Problems {
			lines = append(lines, p.Line())
		}
		for _, l := range strings.Split(validateErrors(t, down), "\n") {
			if !slices.Contains(lines, l) {
				t.Errorf("the source reported %q; want %q among them", lines, l)
			}
		}
	})
}

// firstSnapshot runs the Kubernetes source until it publishes.
func firstSnapshot(t *testing.T, rc *rest.Config, log *slog.Logger) *model.Snapshot {
	t.Helper()
	src, err := kubernetes.New(kubernetes.Options{Config: rc, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	snaps := make(chan *model.Snapshot, 10)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(s *model.Snapshot) { snaps <- s }) }()
	select {
	case s := <-snaps:
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the source returned %v after cancel, want nil", err)
		}
		return s
	case err := <-done:
		t.Fatalf("the source stopped: %v", err)
	case <-time.After(waitTimeout):
		t.Fatalf("the source published nothing within %s", waitTimeout)
	}
	return nil
}
