// Package translate turns one model snapshot into the xDS resources a proxy
// group receives. It is a pure function of its inputs: no I/O, no clock, no
// environment, no globals. The same input always yields byte-identical output.
//
// Proxies are translated per group: every replica of a workload that would
// receive the same configuration shares one Proxy value (see Proxy.Key), so
// the caller translates once per group, not once per proxy.
package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

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
