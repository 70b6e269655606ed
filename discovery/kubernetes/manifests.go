package kubernetes

import (
	"bytes"
	"embed"
	"io/fs"
	"path"
)

//go:embed crds/*.yaml
var crdFiles embed.FS

//go:embed rbac.yaml
var rbac []byte

// CRDs returns the CustomResourceDefinitions of the four policy kinds as
// one multi-document YAML manifest, for `kubectl apply -f -` and for tests.
func CRDs() []byte {
	// The embedded directory always exists and is read in name order, so
	// neither call can fail.
	entries, _ := fs.ReadDir(crdFiles, "crds")
	var out bytes.Buffer
	for _, e := range entries {
		b, _ := crdFiles.ReadFile(path.Join("crds", e.Name()))
		out.WriteString("---\n")
		out.Write(b)
	}
	return out.Bytes()
}

// RBAC returns the ClusterRoles of rbac.yaml: minimesh-meshd, what meshd
// needs (read access to what discovery watches, Events, TokenReviews,
// SubjectAccessReviews, and the caBundle of its
// ValidatingWebhookConfiguration, see package admission), and
// minimesh-debug-reader, who may read meshd's debug API.
func RBAC() []byte { return bytes.Clone(rbac) }
