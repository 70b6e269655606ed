package admission

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// DefaultConfigName is the name of the ValidatingWebhookConfiguration in
// webhook.yaml, and the only one rbac.yaml lets meshd patch.
const DefaultConfigName = "minimesh-validator"

// caBundleResync is how often the cached configuration is checked again
// without a change. Watch events already bring every change; this only
// covers a patch that failed for longer than the retries.
const caBundleResync = 10 * time.Minute

// CABundleOptions configure CABundle.
type CABundleOptions struct {
	Client kubernetes.Interface
	// Name of the ValidatingWebhookConfiguration to keep current.
	Name string
	// Bundle is the PEM trust bundle every webhook's caBundle must hold
	// (the mesh CA's RootPEM).
	Bundle []byte
	// Log receives what was patched and why not; slog.Default() when nil.
	Log *slog.Logger
}

// CABundle keeps webhooks[*].clientConfig.caBundle of one
// ValidatingWebhookConfiguration equal to Bundle until ctx ends, then
// returns nil. It watches only that object (a metadata.name field
// selector, which RBAC resourceNames can restrict), and patches it
// whenever any webhook's caBundle differs: when meshd starts, when the
// configuration is created or re-applied without one, or when someone
// edits it. A configuration that does not exist yet is logged and waited
// for. Failed patches are retried with backoff. Several meshd replicas
// sharing one CA agree on the value, so they never undo each other.
func CABundle(ctx context.Context, opts CABundleOptions) error {
	if opts.Client == nil || opts.Name == "" || len(opts.Bundle) == 0 {
		return errors.New("caBundle controller: Client, Name and Bundle are required")
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("validatingWebhookConfiguration", opts.Name)

	factory := informers.NewSharedInformerFactoryWithOptions(opts.Client, caBundleResync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", opts.Name).String()
		}))
	informer := factory.Admissionregistration().V1().ValidatingWebhookConfigurations()
	lister := informer.Lister()
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "cabundle"})
	defer queue.ShutDown()
	enqueue := func(any) { queue.Add(opts.Name) }
	if _, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("caBundle controller: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), informer.Informer().HasSynced) {
		return nil // ctx ended first
	}
	// The first look happens even when nothing exists, to say so.
	queue.Add(opts.Name)
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()

	k := &keeper{client: opts.Client, bundle: opts.Bundle, log: log}
	for {
		key, shutdown := queue.Get()
		if shutdown {
			return nil
		}
		cfg, err := lister.Get(key)
		switch {
		case apierrors.IsNotFound(err):
			k.missing()
			queue.Forget(key)
		case err != nil:
			log.Warn("cannot read the cached configuration", "err", err)
			queue.AddRateLimited(key)
		default:
			if err := k.sync(ctx, cfg); err != nil {
				log.Warn("cannot update the webhook's caBundle; the API server cannot call the webhook until it is current, retrying", "err", err)
				queue.AddRateLimited(key)
			} else {
				queue.Forget(key)
			}
		}
		queue.Done(key)
	}
}

// keeper compares and patches; only CABundle's loop uses it.
type keeper struct {
	client kubernetes.Interface
	bundle []byte
	log    *slog.Logger
	// reportedMissing keeps a missing configuration to one log line.
	reportedMissing bool
}

func (k *keeper) missing() {
	if !k.reportedMissing {
		k.log.Warn("the ValidatingWebhookConfiguration does not exist, so the API server does not call the webhook; " +
			"apply webhook.yaml and meshd fills in its caBundle")
		k.reportedMissing = true
	}
}

// patchOp is one JSON Patch (RFC 6902) operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// sync patches every webhook whose caBundle differs from the bundle. The
// patch first tests the resourceVersion it was computed from, so it never
// applies to a version of the configuration it has not seen (webhooks
// added, removed or reordered meanwhile); a failed test is retried from
// the informer's newer copy.
func (k *keeper) sync(ctx context.Context, cfg *admissionregistrationv1.ValidatingWebhookConfiguration) error {
	k.reportedMissing = false
	ops := []patchOp{{Op: "test", Path: "/metadata/resourceVersion", Value: cfg.ResourceVersion}}
	var names []string
	for i, w := range cfg.Webhooks {
		if bytes.Equal(w.ClientConfig.CABundle, k.bundle) {
			continue
		}
		// "add" replaces a member that exists and creates one that does
		// not; the []byte is sent as base64, as the API expects.
		ops = append(ops, patchOp{Op: "add", Path: fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), Value: k.bundle})
		names = append(names, w.Name)
	}
	if len(names) == 0 {
		return nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	_, err = k.client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Patch(ctx, cfg.Name,
		types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "meshd"})
	if err != nil {
		return err
	}
	k.log.Info("set the webhook's caBundle to the mesh root", "webhooks", names)
	return nil
}
