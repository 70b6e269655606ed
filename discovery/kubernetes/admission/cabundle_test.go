package admission

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestCABundlePatchesOnlyStaleWebhooks checks the patch itself (the API
// server test covers the watch): only webhooks whose caBundle differs are
// written, and the patch applies only to the version it was computed from.
func TestCABundlePatchesOnlyStaleWebhooks(t *testing.T) {
	bundle := []byte("-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n")
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultConfigName, ResourceVersion: "7"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{
			{Name: "current.minimesh.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: bundle}},
			{Name: "stale.minimesh.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: []byte("old")}},
			{Name: "empty.minimesh.io"},
		},
	}
	client := fake.NewClientset(cfg)
	k := &keeper{client: client, bundle: bundle, log: slog.New(slog.DiscardHandler)}
	if err := k.sync(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}

	var patches []k8stesting.PatchAction
	for _, a := range client.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok {
			patches = append(patches, p)
		}
	}
	if len(patches) != 1 {
		t.Fatalf("%d patches, want 1", len(patches))
	}
	var ops []map[string]any
	if err := json.Unmarshal(patches[0].GetPatch(), &ops); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, op := range ops {
		paths = append(paths, op["op"].(string)+" "+op["path"].(string))
	}
	want := []string{"test /metadata/resourceVersion", "add /webhooks/1/clientConfig/caBundle", "add /webhooks/2/clientConfig/caBundle"}
	if len(paths) != len(want) {
		t.Fatalf("patch operations %q, want %q", paths, want)
	}
	for i := range want {
		if paths[i] != want[i] {
			t.Errorf("patch operations %q, want %q", paths, want)
		}
	}
	got, err := client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(t.Context(), DefaultConfigName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range got.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
			t.Errorf("webhook %s has caBundle %q after the patch", w.Name, w.ClientConfig.CABundle)
		}
	}

	// Up to date: nothing is written.
	client.ClearActions()
	if err := k.sync(t.Context(), got); err != nil {
		t.Fatal(err)
	}
	if n := len(client.Actions()); n != 0 {
		t.Errorf("%d API calls for a configuration that is up to date, want none", n)
	}

	// Computed from a version that is no longer stored: refused, retried.
	old := cfg.DeepCopy()
	old.ResourceVersion = "6"
	if err := k.sync(t.Context(), old); err == nil {
		t.Error("a patch computed from resourceVersion 6 applied to version 7")
	}
}
