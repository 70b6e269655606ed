package kubeenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// crdGVR is the resource of CustomResourceDefinitions.
var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// ApplyOptions change how Apply sends objects.
type ApplyOptions struct {
	// DryRun asks the API server to validate and admit every object
	// without storing it (server-side dry run).
	DryRun bool
	// Namespace is used for namespaced objects that name none.
	Namespace string
}

// Apply server-side-applies every document of a multi-document YAML (or
// JSON) manifest, in order, as the admin user. A CustomResourceDefinition is
// waited for until it is Established, so later documents (or the caller) can
// use its kind at once. The error names the document that failed.
func (e *Env) Apply(ctx context.Context, manifest []byte, opts ApplyOptions) error {
	return Apply(ctx, e.RESTConfig(), manifest, opts)
}

// Apply is Env.Apply for any API server.
func Apply(ctx context.Context, cfg *rest.Config, manifest []byte, opts ApplyOptions) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("build a discovery client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("build a dynamic client: %w", err)
	}
	cache := memory.NewMemCacheClient(dc)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(cache)

	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for i := 1; ; i++ {
		var raw map[string]any
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("document %d: parse: %w", i, err)
		}
		if len(raw) == 0 {
			continue // an empty document between two "---"
		}
		obj := &unstructured.Unstructured{Object: raw}
		gvk := obj.GroupVersionKind()
		what := fmt.Sprintf("document %d (%s %s)", i, gvk.Kind, obj.GetName())

		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			// The kind may come from a CRD applied a moment ago.
			mapper.Reset()
			if mapping, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
				return fmt.Errorf("%s: the API server does not serve this kind: %w", what, err)
			}
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == "namespace" {
			ns := obj.GetNamespace()
			if ns == "" {
				ns = opts.Namespace
			}
			if ns == "" {
				ns = metav1.NamespaceDefault
			}
			obj.SetNamespace(ns)
			ri = dyn.Resource(mapping.Resource).Namespace(ns)
		}
		data, err := json.Marshal(obj.Object)
		if err != nil {
			return fmt.Errorf("%s: encode: %w", what, err)
		}
		po := metav1.PatchOptions{FieldManager: "kubeenv", Force: ptr(true), FieldValidation: "Strict"}
		if opts.DryRun {
			po.DryRun = []string{metav1.DryRunAll}
		}
		if _, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, po); err != nil {
			return fmt.Errorf("%s: apply: %w", what, err)
		}
		if mapping.Resource == crdGVR && !opts.DryRun {
			if err := waitEstablished(ctx, dyn, obj.GetName()); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			mapper.Reset()
		}
	}
}

func waitEstablished(ctx context.Context, dyn dynamic.Interface, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		crd, err := dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // retried until the timeout
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("CustomResourceDefinition %s did not become Established: %w", name, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
