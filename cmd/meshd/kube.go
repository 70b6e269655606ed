package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/minimesh/minimesh/discovery"
	kubesource "github.com/minimesh/minimesh/discovery/kubernetes"
	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/auth/tokenreview"
)

// DefaultTokenAudience is the audience meshd asks TokenReview to check by
// default: Istio's, so that a pod spec written for istiod's projected token
// works unchanged, and an ordinary pod token (audience: the API server) is
// refused.
const DefaultTokenAudience = "istio-ca"

// kubeMode reports whether meshd discovers the mesh from an API server.
func (c serveConfig) kubeMode() bool { return c.Kubeconfig != "" || c.InCluster }

// kubeRESTConfig loads the client configuration: the kubeconfig file (its
// current context), or the pod's own service account when in a cluster.
func kubeRESTConfig(cfg serveConfig) (*rest.Config, error) {
	if cfg.InCluster {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("--in-cluster: %w (is meshd running in a pod with a service-account token mounted?)", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s cannot be used: %w", cfg.Kubeconfig, err)
	}
	return rc, nil
}

// kubeParts is what Kubernetes mode adds to meshd: the client (which also
// checks debug API tokens and keeps the webhook's caBundle), the discovery
// source, the TokenReview authenticator, and the Event broadcaster to stop.
type kubeParts struct {
	client kubernetes.Interface
	source *kubesource.Source
	authn  auth.Authenticator // nil unless --xds-auth=kubernetes
	stop   func()
}

// newKubeParts builds the Kubernetes discovery source and, with
// --xds-auth=kubernetes, the TokenReview authenticator, sharing one client.
// client-go's own logs (klog) are routed through log, so they have meshd's
// format and level. Nothing contacts the API server yet.
func newKubeParts(ctx context.Context, cfg serveConfig, registry prometheus.Registerer, log *slog.Logger, observe discovery.Observer) (*kubeParts, error) {
	klog.SetSlogLogger(log.With("component", "client-go"))
	rc, err := kubeRESTConfig(cfg)
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "meshd (minimesh)"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("cannot build a Kubernetes client for %s: %w", rc.Host, err)
	}

	invalid := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minimesh_discovery_invalid_objects_total",
		Help: "Policy objects skipped because they failed validation, counted once per rejected version, by kind.",
	}, []string{"kind"})
	if err := registry.Register(invalid); err != nil {
		return nil, fmt.Errorf("registering the invalid-objects metric: %w", err)
	}

	// One broadcaster for the process: it batches and rate-limits Events
	// so that a flapping object cannot flood the API server.
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	host, _ := os.Hostname()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: kubesource.EventComponent, Host: host})

	src, err := kubesource.New(kubesource.Options{
		Config:         rc,
		Client:         client,
		RootNamespace:  cfg.RootNamespace,
		Logger:         log.With("source", "kubernetes"),
		InvalidObjects: invalid,
		EventRecorder:  recorder,
		Observe:        observe,
	})
	if err != nil {
		broadcaster.Shutdown()
		return nil, err
	}
	parts := &kubeParts{client: client, source: src, stop: broadcaster.Shutdown}
	if cfg.XDSAuth == "kubernetes" {
		parts.authn = newReviewFallback(tokenreview.New(client, tokenreview.Options{Audiences: cfg.XDSTokenAudiences}),
			log.With("component", "xds-auth"))
	}
	log.Info("kubernetes discovery", "server", rc.Host, "inCluster", cfg.InCluster,
		"xdsAuth", cfg.XDSAuth, "tokenAudiences", cfg.XDSTokenAudiences, "debugAuth", cfg.DebugAuth)
	return parts, nil
}

// errNoKubeAuth explains why --xds-auth=kubernetes needs Kubernetes mode.
var errNoKubeAuth = errors.New("--xds-auth=kubernetes reviews tokens with the API server, so it needs --kubeconfig or --in-cluster")

// maxFallbackAge bounds how long a review result may stand in for the API
// server when the token's own expiry cannot be read.
const maxFallbackAge = time.Hour

// maxRemembered bounds the reviews kept for fallback: one per live token
// of every proxy, with room to spare.
const maxRemembered = 50000

// reviewFallback remembers each token's last successful TokenReview and
// answers with it only while the API server cannot be asked, until the
// token expires. Proxies reconnect to meshd (and `meshctl agent` opens a
// new stream whenever its workload reconnects), so without this a short
// API server outage would cut every reconnecting proxy off from its
// configuration and certificates. When the API server answers, its answer
// always wins, so a revoked token (deleted pod or service account) is
// refused as soon as the API server can say so.
type reviewFallback struct {
	next auth.Authenticator
	log  *slog.Logger
	now  func() time.Time

	mu   sync.Mutex
	seen map[[sha256.Size]byte]rememberedReview
}

type rememberedReview struct {
	id      auth.Identity
	expires time.Time
}

func newReviewFallback(next auth.Authenticator, log *slog.Logger) *reviewFallback {
	return &reviewFallback{next: next, log: log, now: time.Now, seen: map[[sha256.Size]byte]rememberedReview{}}
}

// Authenticate implements auth.Authenticator.
func (f *reviewFallback) Authenticate(ctx context.Context, token string) (auth.Identity, error) {
	key := sha256.Sum256([]byte(token)) // never keep the token itself
	id, err := f.next.Authenticate(ctx, token)
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		f.remember(key, id, tokenExpiry(token, now), now)
		return id, nil
	}
	if !tokenreview.IsUnavailable(err) {
		delete(f.seen, key) // refused: never vouch for it again
		return id, err
	}
	if r, ok := f.seen[key]; ok && now.Before(r.expires) {
		f.log.Warn("the API server cannot review tokens; accepting a token it accepted before",
			"identity", r.id.String(), "validUntil", r.expires.Format(time.RFC3339), "error", err)
		return r.id, nil
	}
	return auth.Identity{}, err
}

func (f *reviewFallback) remember(key [sha256.Size]byte, id auth.Identity, expires, now time.Time) {
	if len(f.seen) >= maxRemembered {
		for k, r := range f.seen {
			if !now.Before(r.expires) {
				delete(f.seen, k)
			}
		}
		if len(f.seen) >= maxRemembered {
			return // full of live tokens: skip rather than grow without bound
		}
	}
	f.seen[key] = rememberedReview{id: id, expires: expires}
}

// tokenExpiry reads the exp claim of a JWT without verifying it: the API
// server has just verified the token, and the claim only shortens how long
// its review is remembered. It falls back to maxFallbackAge.
func tokenExpiry(token string, now time.Time) time.Time {
	limit := now.Add(maxFallbackAge)
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return limit
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return limit
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == 0 {
		return limit
	}
	if exp := time.Unix(claims.Exp, 0); exp.Before(limit) {
		return exp
	}
	return limit
}
