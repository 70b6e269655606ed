// Package translate turns one model snapshot into the xDS resources a proxy
// group receives. It is a pure function of its inputs: no I/O, no clock, no
// environment, no globals. The same input always yields byte-identical output.
//
// Proxies are translated per group: every replica of a workload that would
// receive the same configuration shares one Proxy value (see Proxy.Key), so
// the caller translates once per group, not once per proxy.
package translate

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/hashicorp/go-multierror"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// Flavor is the kind of data plane a proxy is.
type Flavor string

// Flavors.
const (
	// FlavorEnvoy is an Envoy sidecar.
	FlavorEnvoy Flavor = "envoy"
	// FlavorProxyless is a proxyless gRPC workload (node metadata GENERATOR=grpc).
	FlavorProxyless Flavor = "grpc"
)

// Options are the mesh-wide settings translation needs. They are passed
// explicitly; translation reads nothing else.
type Options struct {
	// TrustDomain is the SPIFFE trust domain (default cluster.local).
	TrustDomain string
	// ClusterDomain is the DNS suffix of services (default cluster.local).
	ClusterDomain string
	// RootNamespace holds mesh-wide policy (default istio-system).
	RootNamespace string
	// JWKS maps a RequestAuthentication jwksUri to the key set meshd fetched
	// for it. Translation never fetches anything itself.
	JWKS map[string]string
	// AssignmentNamesOnly is for a caller that builds and serves the
	// ClusterLoadAssignments itself (meshd's endpoint cache, with
	// Assignment): Resources.Endpoints then holds one assignment per
	// cluster that only names it, which is all consistency checks need,
	// instead of a thousand assignments with their endpoints per group.
	AssignmentNamesOnly bool
	// AccessLog is the sidecars' access log (MeshConfig accessLogFile,
	// accessLogEncoding); off when its File is empty.
	AccessLog AccessLog
}

// Resources is everything one proxy group receives apart from its secrets.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Problems are policy parts that could not be expressed for this group
	// (for example an L7-only rule on a TCP port); each says what minimesh
	// did instead, which is never weaker than the policy asked for.
	Problems policy.Problems
}

// Proxy is exactly what translation reads about the proxy it translates
// for. Replicas that produce equal Proxy values share one translation, so the
// group key is derived from these fields and nothing else (see Key).
type Proxy struct {
	Flavor    Flavor
	Namespace string
	// Labels select services (inbound ports) and policies.
	Labels map[string]string
	// Ports are the workload's container ports, for named target ports.
	Ports []model.ContainerPort
	// IP is set only for proxyless workloads, whose server listener names
	// carry the listening address; Envoy groups leave it empty.
	IP string
}

// Defaults applied by Options.WithDefaults, the same as Istio's.
const (
	DefaultTrustDomain   = "cluster.local"
	DefaultClusterDomain = "cluster.local"
	DefaultRootNamespace = policy.DefaultRootNamespace
)

// WithDefaults returns o with every empty setting replaced by its default.
func (o Options) WithDefaults() Options {
	if o.TrustDomain == "" {
		o.TrustDomain = DefaultTrustDomain
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = DefaultClusterDomain
	}
	if o.RootNamespace == "" {
		o.RootNamespace = DefaultRootNamespace
	}
	return o
}

// Translate builds the resources for one proxy group. It never fails as a
// whole: what cannot be expressed is reported in Resources.Problems and
// replaced by something no weaker than what the policy asked for.
func Translate(snap *model.Snapshot, p Proxy, opts Options) *Resources {
	return NewBatch(snap, opts).Translate(p)
}

// Translate builds the resources for one proxy group of the batch's model,
// as the package-level Translate does.
func (b *Batch) Translate(p Proxy) *Resources {
	switch p.Flavor {
	case FlavorEnvoy:
		return translateEnvoy(b, p)
	case FlavorProxyless:
		return translateProxyless(b, p)
	default:
		return &Resources{Problems: policy.Problems{{
			Severity: policy.SeverityError,
			Message:  fmt.Sprintf("proxy flavour %q is not one of %q, %q; the workload receives no configuration", p.Flavor, FlavorEnvoy, FlavorProxyless),
		}}}
	}
}

// ProxyFor returns the Proxy of a workload for one flavour, with exactly the
// fields that flavour's translation reads, so that replicas compare equal.
func ProxyFor(f Flavor, w *model.Workload) Proxy {
	p := Proxy{Flavor: f}
	if w == nil {
		return p
	}
	p.Namespace = w.Namespace
	if len(w.Labels) > 0 {
		p.Labels = maps.Clone(w.Labels)
	}
	if len(w.Ports) > 0 {
		p.Ports = slices.Clone(w.Ports)
		slices.SortFunc(p.Ports, compareContainerPort)
	}
	if f == FlavorProxyless {
		p.IP = w.IP
	}
	return p
}

func compareContainerPort(a, b model.ContainerPort) int {
	return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Name, b.Name))
}

// Key is the proxy group key: a hash of a canonical encoding of every Proxy
// field (labels sorted by key, ports sorted), so two proxies share a
// translation exactly when translation would read the same input for both.
// Adding a field to Proxy means adding it here.
func (p Proxy) Key() string {
	h := sha256.New()
	field := func(s string) {
		// Length-prefixing makes the encoding unambiguous ("a"+"bc" ≠ "ab"+"c").
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(string(p.Flavor))
	field(p.Namespace)
	field(strconv.Itoa(len(p.Labels)))
	for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
		field(k)
		field(p.Labels[k])
	}
	ports := slices.Clone(p.Ports)
	slices.SortFunc(ports, compareContainerPort)
	field(strconv.Itoa(len(ports)))
	for _, cp := range ports {
		field(cp.Name)
		field(strconv.Itoa(int(cp.Port)))
		field(cp.Protocol)
	}
	field(p.IP)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Validate runs the generated ValidateAll on every resource, and on every
// typed config packed inside one (ValidateAll stops at google.protobuf.Any,
// and most of a listener lives in Anys), and returns all failures at once.
// The xDS layer calls it before publishing: a group whose resources fail
// keeps its last good snapshot.
func (r *Resources) Validate() error {
	var result *multierror.Error
	check := func(kind, name string, m proto.Message) {
		for _, err := range validateDeep(m) {
			result = multierror.Append(result, fmt.Errorf("generated %s %q is invalid: %w", kind, name, err))
		}
	}
	for _, l := range r.Listeners {
		check("listener", l.GetName(), l)
	}
	for _, rc := range r.Routes {
		check("route configuration", rc.GetName(), rc)
	}
	for _, c := range r.Clusters {
		check("cluster", c.GetName(), c)
	}
	for _, e := range r.Endpoints {
		check("cluster load assignment", e.GetClusterName(), e)
	}
	return result.ErrorOrNil()
}

// CheckReferences checks that the resources join up, for either flavour:
// every RDS name a listener uses has its route configuration, every cluster
// a route or TCP proxy names exists, every EDS cluster has its
// ClusterLoadAssignment, names are unique per type, and nothing is left
// over (a route configuration no listener uses, an assignment no cluster
// reads). The xDS layer calls it before publishing; go-control-plane's
// Snapshot.Consistent cannot be used for proxyless groups, because it
// reports client API listeners' route names as missing.
func (r *Resources) CheckReferences() error {
	var result *multierror.Error
	fail := func(format string, args ...any) {
		result = multierror.Append(result, fmt.Errorf(format, args...))
	}
	unique := func(kind string, names []string) map[string]bool {
		set := make(map[string]bool, len(names))
		for _, n := range names {
			if set[n] {
				fail("%s %q is generated twice", kind, n)
			}
			set[n] = true
		}
		return set
	}
	names := func(n int, name func(int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = name(i)
		}
		return out
	}
	unique("listener", names(len(r.Listeners), func(i int) string { return r.Listeners[i].GetName() }))
	routes := unique("route configuration", names(len(r.Routes), func(i int) string { return r.Routes[i].GetName() }))
	clusters := unique("cluster", names(len(r.Clusters), func(i int) string { return r.Clusters[i].GetName() }))
	assignments := unique("cluster load assignment", names(len(r.Endpoints), func(i int) string { return r.Endpoints[i].GetClusterName() }))

	usedRoutes := map[string]bool{}
	checkRouteConfig := func(where string, rc *routev3.RouteConfiguration) {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				var targets []string
				if c := rt.GetRoute().GetCluster(); c != "" {
					targets = append(targets, c)
				}
				for _, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
					targets = append(targets, wc.GetName())
				}
				for _, c := range targets {
					if !clusters[c] {
						fail("%s: route %q in virtual host %q sends to cluster %q, which is not generated", where, rt.GetName(), vh.GetName(), c)
					}
				}
			}
		}
	}
	checkFilters := func(listener string, filters []*listenerv3.Filter) {
		for _, f := range filters {
			tc := f.GetTypedConfig()
			switch {
			case tc.MessageIs(&hcmv3.HttpConnectionManager{}):
				m := &hcmv3.HttpConnectionManager{}
				if err := tc.UnmarshalTo(m); err != nil {
					fail("listener %q: cannot read its HTTP connection manager: %w", listener, err)
					continue
				}
				checkHCM(listener, m, routes, usedRoutes, fail, checkRouteConfig)
			case tc.MessageIs(&tcpproxyv3.TcpProxy{}):
				m := &tcpproxyv3.TcpProxy{}
				if err := tc.UnmarshalTo(m); err != nil {
					fail("listener %q: cannot read its TCP proxy: %w", listener, err)
					continue
				}
				if c := m.GetCluster(); c != "" && !clusters[c] {
					fail("listener %q: TCP proxy sends to cluster %q, which is not generated", listener, c)
				}
			}
		}
	}
	for _, l := range r.Listeners {
		if api := l.GetApiListener().GetApiListener(); api != nil {
			m := &hcmv3.HttpConnectionManager{}
			if err := api.UnmarshalTo(m); err != nil {
				fail("listener %q: its API listener is not an HTTP connection manager: %w", l.GetName(), err)
			} else {
				checkHCM(l.GetName(), m, routes, usedRoutes, fail, checkRouteConfig)
			}
		}
		for _, fc := range l.GetFilterChains() {
			checkFilters(l.GetName(), fc.GetFilters())
		}
		if dfc := l.GetDefaultFilterChain(); dfc != nil {
			checkFilters(l.GetName(), dfc.GetFilters())
		}
	}
	for _, rc := range r.Routes {
		if !usedRoutes[rc.GetName()] {
			fail("route configuration %q is not used by any listener", rc.GetName())
		}
		checkRouteConfig(fmt.Sprintf("route configuration %q", rc.GetName()), rc)
	}
	usedAssignments := map[string]bool{}
	for _, c := range r.Clusters {
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		name := cmp.Or(c.GetEdsClusterConfig().GetServiceName(), c.GetName())
		usedAssignments[name] = true
		if !assignments[name] {
			fail("EDS cluster %q has no cluster load assignment %q", c.GetName(), name)
		}
	}
	for _, e := range r.Endpoints {
		if !usedAssignments[e.GetClusterName()] {
			fail("cluster load assignment %q is not read by any EDS cluster", e.GetClusterName())
		}
	}
	return result.ErrorOrNil()
}

// checkHCM checks one connection manager's route: an RDS name must be
// generated, an inline route configuration must name generated clusters.
func checkHCM(listener string, m *hcmv3.HttpConnectionManager, routes, used map[string]bool,
	fail func(string, ...any), checkRouteConfig func(string, *routev3.RouteConfiguration)) {
	if rds := m.GetRds(); rds != nil {
		name := rds.GetRouteConfigName()
		used[name] = true
		if !routes[name] {
			fail("listener %q uses route configuration %q, which is not generated", listener, name)
		}
		return
	}
	if rc := m.GetRouteConfig(); rc != nil {
		checkRouteConfig(fmt.Sprintf("listener %q", listener), rc)
	}
}

type validator interface{ ValidateAll() error }

// validateDeep validates m and every message packed in an Any below it.
func validateDeep(m proto.Message) []error {
	var errs []error
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, err)
		}
	}
	err := protorange.Range(m.ProtoReflect(), func(vals protopath.Values) error {
		last := vals.Index(-1)
		if last.Step.Kind() != protopath.AnyExpandStep {
			return nil
		}
		if v, ok := last.Value.Message().Interface().(validator); ok {
			if err := v.ValidateAll(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", vals.Path[1:], err))
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("cannot inspect packed configuration: %w", err))
	}
	return errs
}
