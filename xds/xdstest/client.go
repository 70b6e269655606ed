// Package xdstest is an ADS client that behaves like Envoy, for tests, the
// e2e suite and the scale benchmark. It subscribes to clusters and
// listeners, then to the endpoints, route configurations and secrets they
// reference; validates every resource it receives; ACKs what it accepts
// and NACKs what it does not (or what a test tells it to reject). It speaks
// state-of-the-world or delta ADS, built only from go-control-plane's types.
package xdstest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Type URLs in the order Envoy subscribes to them.
var (
	CDS = resourcev3.ClusterType
	EDS = resourcev3.EndpointType
	LDS = resourcev3.ListenerType
	RDS = resourcev3.RouteType
	SDS = resourcev3.SecretType
)

// wildcardTypes are subscribed to without names; the others by name.
var wildcardTypes = map[string]bool{CDS: true, LDS: true}

// Options configure a Client.
type Options struct {
	// NodeID is sent in the first request (Istio form:
	// sidecar~IP~pod.ns~ns.svc.cluster.local).
	NodeID string
	// Metadata is the node metadata, e.g. {"GENERATOR": "grpc"}.
	Metadata map[string]string
	// Token is sent as "authorization: Bearer <token>" when not empty.
	Token string
	// Delta selects delta ADS instead of state of the world.
	Delta bool
	// Reject is consulted for every response that passed validation:
	// returning an error NACKs the response with that message. The map
	// is what the client would hold for the type after accepting it.
	Reject func(typeURL, version string, resources map[string]proto.Message) error
	// SecretsOnly subscribes to nothing but the secrets "default" and
	// "ROOTCA", as meshctl agent's own stream does for a proxyless
	// workload.
	SecretsOnly bool
	// ResumeFrom starts the client with what another client holds, as
	// Envoy does when it reconnects (to the same meshd, or to a restarted
	// one): its first request of each type carries the version it has
	// (SOTW version_info) or the versions of its resources (delta
	// initial_resource_versions).
	ResumeFrom *Client
}

// Client is one simulated proxy. Its methods are safe for concurrent use.
type Client struct {
	opts Options

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	types   map[string]*typeData
	bytes   int64
	err     error
	done    chan struct{}
	node    *corev3.Node
}

type typeData struct {
	version   string // last accepted (SOTW version_info; delta system version)
	nonce     string // last response nonce
	resources map[string]proto.Message
	versions  map[string]string // delta: accepted resource versions by name
	wanted    map[string]bool   // names subscribed to (nil for wildcard)
	requested bool
	responses int
	acks      int
	nacks     int
	nackedMsg string
}

// Start opens an ADS stream on conn and runs it until ctx ends or the
// server ends the stream (see Err and Done).
func Start(ctx context.Context, conn grpc.ClientConnInterface, opts Options) *Client {
	c := &Client{
		opts:    opts,
		changed: make(chan struct{}),
		types:   map[string]*typeData{},
		done:    make(chan struct{}),
	}
	for _, t := range []string{CDS, EDS, LDS, RDS, SDS} {
		c.types[t] = &typeData{resources: map[string]proto.Message{}, versions: map[string]string{}}
	}
	if from := opts.ResumeFrom; from != nil {
		from.mu.Lock()
		for t, td := range from.types {
			c.types[t] = &typeData{
				version:   td.version,
				resources: maps.Clone(td.resources),
				versions:  maps.Clone(td.versions),
				wanted:    maps.Clone(td.wanted),
			}
		}
		from.mu.Unlock()
	}
	if opts.SecretsOnly {
		c.types[SDS].wanted = map[string]bool{"default": true, "ROOTCA": true}
	}
	md := map[string]any{}
	for k, v := range opts.Metadata {
		md[k] = v
	}
	meta, _ := structpb.NewStruct(md)
	c.node = &corev3.Node{Id: opts.NodeID, Cluster: "minimesh-test", Metadata: meta}
	if opts.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+opts.Token)
	}
	go func() {
		defer close(c.done)
		var err error
		if opts.Delta {
			err = c.runDelta(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn))
		} else {
			err = c.runSotw(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn))
		}
		c.mu.Lock()
		c.err = err
		c.notifyLocked()
		c.mu.Unlock()
	}()
	return c
}

// Done is closed when the stream has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the stream ended, or nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Version is the last accepted version of a type.
func (c *Client) Version(typeURL string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.types[typeURL].version
}

// Resources returns the accepted resources of a type by name.
func (c *Client) Resources(typeURL string) map[string]proto.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.types[typeURL].resources)
}

// Acks counts the responses of a type the client accepted.
func (c *Client) Acks(typeURL string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.types[typeURL].acks
}

// Responses counts the responses received for a type (accepted or not).
func (c *Client) Responses(typeURL string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.types[typeURL].responses
}

// Nacks counts the responses of a type the client rejected.
func (c *Client) Nacks(typeURL string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.types[typeURL].nacks
}

// BytesReceived is the total size of the resources received.
func (c *Client) BytesReceived() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Complete reports what is still missing for a usable configuration: at
// least one response for clusters and listeners, and every endpoint
// assignment, route configuration and secret they reference. nil means the
// client holds a closed, consistent set, as Envoy needs before it serves.
func (c *Client) Complete() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var missing []string
	for _, t := range c.initialTypes() {
		if !wildcardTypes[t] {
			continue
		}
		if c.types[t].version == "" {
			missing = append(missing, fmt.Sprintf("no %s accepted yet", short(t)))
		}
	}
	for _, t := range []string{EDS, RDS, SDS} {
		td := c.types[t]
		for _, name := range slices.Sorted(maps.Keys(td.wanted)) {
			if _, ok := td.resources[name]; !ok {
				missing = append(missing, fmt.Sprintf("%s %q", short(t), name))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("incomplete configuration: missing %v", missing)
	}
	return nil
}

// WaitFor blocks until cond holds, the stream ends, or ctx ends. cond may
// call the client's methods.
func (c *Client) WaitFor(ctx context.Context, cond func() bool) error {
	for {
		c.mu.Lock()
		ch := c.changed
		err := c.err
		c.mu.Unlock()
		if cond() {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream ended: %w", err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the proxy's configuration: %w", ctx.Err())
		}
	}
}

func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func short(typeURL string) string {
	switch typeURL {
	case CDS:
		return "cds"
	case EDS:
		return "eds"
	case LDS:
		return "lds"
	case RDS:
		return "rds"
	case SDS:
		return "sds"
	}
	return typeURL
}

// initialTypes are the types the client subscribes to first: clusters and
// listeners, or only secrets (Options.SecretsOnly). When resuming it also
// re-subscribes at once to the names it already holds, as Envoy does.
func (c *Client) initialTypes() []string {
	if c.opts.SecretsOnly {
		return []string{SDS}
	}
	if c.opts.ResumeFrom != nil {
		return []string{CDS, LDS, EDS, RDS, SDS}
	}
	return []string{CDS, LDS}
}

// decode unpacks and validates a SOTW response's resources.
func decode(anys []*anypb.Any) (map[string]proto.Message, int64, error) {
	out := make(map[string]proto.Message, len(anys))
	var size int64
	for _, a := range anys {
		size += int64(len(a.GetValue()))
		m, err := decodeOne(a)
		if err != nil {
			return nil, size, err
		}
		name := resourceName(m)
		if _, dup := out[name]; dup {
			return nil, size, fmt.Errorf("resource %q appears twice", name)
		}
		out[name] = m
	}
	return out, size, nil
}

// decodeOne unpacks one resource and validates it, as Envoy does before
// applying anything.
func decodeOne(a *anypb.Any) (proto.Message, error) {
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", a.GetTypeUrl(), err)
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return nil, fmt.Errorf("resource %q is invalid: %w", resourceName(m), err)
		}
	}
	return m, nil
}

func resourceName(m proto.Message) string {
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	if n, ok := m.(interface{ GetClusterName() string }); ok {
		return n.GetClusterName()
	}
	return ""
}

// references computes the names a cluster or listener set makes Envoy
// subscribe to.
func references(typeURL string, res map[string]proto.Message) (eds, rds, sds map[string]bool) {
	eds, rds, sds = map[string]bool{}, map[string]bool{}, map[string]bool{}
	addSDS := func(ts *corev3.TransportSocket) {
		if ts == nil || ts.GetTypedConfig() == nil {
			return
		}
		var common *tlsv3.CommonTlsContext
		up, down := &tlsv3.UpstreamTlsContext{}, &tlsv3.DownstreamTlsContext{}
		switch {
		case ts.GetTypedConfig().MessageIs(up):
			if ts.GetTypedConfig().UnmarshalTo(up) == nil {
				common = up.GetCommonTlsContext()
			}
		case ts.GetTypedConfig().MessageIs(down):
			if ts.GetTypedConfig().UnmarshalTo(down) == nil {
				common = down.GetCommonTlsContext()
			}
		}
		for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
			sds[s.GetName()] = true
		}
		if s := common.GetValidationContextSdsSecretConfig(); s != nil {
			sds[s.GetName()] = true
		}
		if s := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); s != nil {
			sds[s.GetName()] = true
		}
	}
	for _, m := range res {
		switch r := m.(type) {
		case *clusterv3.Cluster:
			if r.GetType() == clusterv3.Cluster_EDS {
				name := r.GetEdsClusterConfig().GetServiceName()
				if name == "" {
					name = r.GetName()
				}
				eds[name] = true
			}
			addSDS(r.GetTransportSocket())
			for _, m := range r.GetTransportSocketMatches() {
				addSDS(m.GetTransportSocket())
			}
		case *listenerv3.Listener:
			addHCM := func(a *anypb.Any) {
				hcm := &hcmv3.HttpConnectionManager{}
				if a == nil || !a.MessageIs(hcm) || a.UnmarshalTo(hcm) != nil {
					return
				}
				if rdsCfg := hcm.GetRds(); rdsCfg != nil {
					rds[rdsCfg.GetRouteConfigName()] = true
				}
			}
			addHCM(r.GetApiListener().GetApiListener())
			chains := slices.Clone(r.GetFilterChains())
			if r.GetDefaultFilterChain() != nil {
				chains = append(chains, r.GetDefaultFilterChain())
			}
			for _, fc := range chains {
				addSDS(fc.GetTransportSocket())
				for _, f := range fc.GetFilters() {
					addHCM(f.GetTypedConfig())
				}
			}
		}
	}
	return eds, rds, sds
}

// nackCode is what Envoy puts in error_detail.code.
const nackCode = int32(codes.InvalidArgument)

// accept applies the test's Reject hook to a decoded response (merged into
// the current state for delta); an error is the reason to NACK. It runs
// without the lock, so the hook may call the client's methods.
func (c *Client) accept(typeURL, version string, next map[string]proto.Message) error {
	if c.opts.Reject != nil {
		if err := c.opts.Reject(typeURL, version, next); err != nil {
			return err
		}
	}
	return nil
}

// applyLocked stores accepted resources and recomputes the names the
// client wants of the referenced types. It returns the types whose
// subscription changed.
func (c *Client) applyLocked(typeURL, version string, res map[string]proto.Message) []string {
	td := c.types[typeURL]
	td.version = version
	td.resources = res
	td.acks++
	if typeURL != CDS && typeURL != LDS {
		return nil
	}
	// Names wanted are the union of what clusters and listeners reference.
	ce, _, cs := references(CDS, c.types[CDS].resources)
	_, lr, ls := references(LDS, c.types[LDS].resources)
	maps.Copy(cs, ls)
	var changed []string
	for t, want := range map[string]map[string]bool{EDS: ce, RDS: lr, SDS: cs} {
		if !maps.Equal(c.types[t].wanted, want) || !c.types[t].requested && len(want) > 0 {
			c.types[t].wanted = want
			changed = append(changed, t)
		}
	}
	slices.Sort(changed)
	return changed
}

var errStreamEnded = errors.New("the server closed the stream")

func nackStatus(err error) *status.Status {
	return &status.Status{Code: nackCode, Message: err.Error()}
}
