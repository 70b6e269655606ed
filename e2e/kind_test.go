package e2e

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	kubesource "github.com/minimesh/minimesh/discovery/kubernetes"
	"github.com/minimesh/minimesh/discovery/kubernetes/admission"
	"github.com/minimesh/minimesh/e2e/harness"
	"github.com/minimesh/minimesh/e2e/kubeenv"
)

// TestKindManifests validates every manifest in examples/kind with a
// server-side dry run against a real API server (after installing the CRDs,
// the ClusterRole and the webhook configuration the guide tells users to
// apply), so that the guide's
// manifests cannot rot: a misspelt field, a wrong enum value or a bad
// apiVersion fails here. The namespaces they create are created for real
// first, because a dry run cannot create an object in a namespace that
// does not exist yet.
func TestKindManifests(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	err = filepath.WalkDir(filepath.Join(root, "examples", "kind"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("found only %d manifests in examples/kind (%v); the walk-through needs meshd, back end, front end and policies", len(files), files)
	}

	env := kubeenv.Start(t)
	ctx := t.Context()
	if err := env.Apply(ctx, append(kubesource.CRDs(), append([]byte("\n---\n"), kubesource.RBAC()...)...), kubeenv.ApplyOptions{}); err != nil {
		t.Fatalf("apply the CRDs and rbac.yaml, as the guide does: %v", err)
	}
	// The guide applies webhook.yaml too. No meshd answers it here, so its
	// failurePolicy Ignore must let the policies' dry runs through.
	if err := env.Apply(ctx, admission.WebhookConfiguration(), kubeenv.ApplyOptions{}); err != nil {
		t.Fatalf("apply webhook.yaml, as the guide does: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if ns := namespaceDocs(t, data); len(ns) > 0 {
			if err := env.Apply(ctx, ns, kubeenv.ApplyOptions{}); err != nil {
				t.Fatalf("%s: create its namespaces: %v", f, err)
			}
		}
	}
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		t.Run(rel, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := env.Apply(ctx, data, kubeenv.ApplyOptions{DryRun: true}); err != nil {
				t.Errorf("server-side dry run of %s: %v", rel, err)
			}
		})
	}
}

// namespaceDocs returns the Namespace documents of a manifest.
func namespaceDocs(t *testing.T, manifest []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return out.Bytes()
			}
			t.Fatalf("parse: %v", err)
		}
		if doc["kind"] == "Namespace" && doc["apiVersion"] == "v1" {
			meta, _ := doc["metadata"].(map[string]any)
			name, _ := meta["name"].(string)
			out.WriteString("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + name + "\n")
		}
	}
}
