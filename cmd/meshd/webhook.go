package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"

	"github.com/minimesh/minimesh/discovery/kubernetes/admission"
	"github.com/minimesh/minimesh/xds/ca"
)

// Webhook defaults: istiod's webhook port, and the DNS name the API server
// connects to for examples/kind's Service (meshd in minimesh-system).
const (
	defaultWebhookAddr  = ":15017"
	defaultWebhookHosts = "meshd.minimesh-system.svc"
)

// checkWebhook resolves --webhook-addr (on by default in Kubernetes mode,
// never with --config-dir: there is no API server to call it) and splits
// --webhook-hosts.
func checkWebhook(cfg *serveConfig, hosts string) error {
	switch {
	case cfg.WebhookAddr == "off":
		cfg.WebhookAddr = ""
		return nil
	case !cfg.kubeMode():
		if cfg.WebhookAddr != "" {
			return usagef("--webhook-addr serves the Kubernetes API server's admission requests, so it needs --kubeconfig or --in-cluster; " +
				"with --config-dir, check files with meshctl validate")
		}
		return nil
	case cfg.WebhookAddr == "":
		cfg.WebhookAddr = defaultWebhookAddr
	}
	if _, _, err := net.SplitHostPort(cfg.WebhookAddr); err != nil {
		return usagef("--webhook-addr %q is not host:port or off: %v", cfg.WebhookAddr, err)
	}
	for h := range strings.SplitSeq(hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.WebhookHosts = append(cfg.WebhookHosts, h)
		}
	}
	if len(cfg.WebhookHosts) == 0 {
		return usagef("--webhook-hosts is empty; name the DNS name the API server connects to (default %s), or pass --webhook-addr=off", defaultWebhookHosts)
	}
	if err := ca.CheckServingHosts(cfg.WebhookHosts); err != nil {
		return usagef("--webhook-hosts: %v", err)
	}
	return nil
}

// webhook is the admission webhook with its listener, serving certificate
// and caBundle controller.
type webhook struct {
	lis     net.Listener
	cert    *ca.ServingCertificate
	client  kubernetes.Interface
	bundle  []byte
	cfgName string
	log     *slog.Logger
}

// newWebhook issues the serving certificate and listens, so a bad host
// name or a port in use is a start-up error.
func newWebhook(cfg serveConfig, client kubernetes.Interface, authority *ca.CA, log *slog.Logger) (*webhook, error) {
	cert, err := authority.NewServingCertificate(cfg.WebhookHosts, log)
	if err != nil {
		return nil, fmt.Errorf("--webhook-hosts: %w", err)
	}
	lis, err := net.Listen("tcp", cfg.WebhookAddr)
	if err != nil {
		return nil, fmt.Errorf("--webhook-addr %s: %w", cfg.WebhookAddr, err)
	}
	log.Info("admission webhook", "addr", lis.Addr().String(), "path", admission.Path, "hosts", cfg.WebhookHosts,
		"validatingWebhookConfiguration", cfg.WebhookConfigName)
	return &webhook{lis: lis, cert: cert, client: client, bundle: authority.RootPEM(), cfgName: cfg.WebhookConfigName, log: log}, nil
}

// run serves the webhook and keeps the caBundle current until ctx ends.
func (w *webhook) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return admission.Serve(ctx, w.lis, admission.ServeOptions{GetCertificate: w.cert.GetCertificate, Log: w.log})
	})
	if w.cfgName != "" {
		g.Go(func() error {
			return admission.CABundle(ctx, admission.CABundleOptions{Client: w.client, Name: w.cfgName, Bundle: w.bundle, Log: w.log})
		})
	}
	return g.Wait()
}
