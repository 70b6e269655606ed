package main

import (
	"context"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// sdsCommon is a TLS context that takes its certificate and trust bundle
// from the ADS-served secrets, as minimesh's translation does.
func sdsCommon() *tlsv3.CommonTlsContext {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	return &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default", SdsConfig: ads}},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: ads},
		},
	}
}

func tlsSocket(t *testing.T, m proto.Message) *corev3.TransportSocket {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
}

// testSnapshot is a small but complete sidecar configuration: two EDS
// clusters with mTLS, a listener whose HTTP connection manager uses RDS,
// its route configuration, endpoints and secrets. Each type has its own
// version, as meshd's snapshots do, so changing endpoints changes only EDS.
func testSnapshot(t *testing.T, edsVersion string, c2IPs ...string) *cachev3.Snapshot {
	t.Helper()
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	cluster := func(name string) types.Resource {
		return &clusterv3.Cluster{
			Name:                 name,
			ConnectTimeout:       durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
			TransportSocket:      tlsSocket(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: sdsCommon()}),
		}
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix:     "in",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "r1", ConfigSource: ads}},
	})
	if err != nil {
		t.Fatal(err)
	}
	listener := &listenerv3.Listener{
		Name: "l1",
		FilterChains: []*listenerv3.FilterChain{{
			Filters:         []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}},
			TransportSocket: tlsSocket(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: sdsCommon()}),
		}},
	}
	c2 := cla("c2", c2IPs[0])
	for _, ip := range c2IPs[1:] {
		c2.Endpoints = append(c2.Endpoints, cla("c2", ip).Endpoints...)
	}
	snap := &cachev3.Snapshot{}
	snap.Resources[types.Cluster] = cachev3.NewResources("c-1", []types.Resource{cluster("c1"), cluster("c2")})
	snap.Resources[types.Listener] = cachev3.NewResources("l-1", []types.Resource{listener})
	snap.Resources[types.Route] = cachev3.NewResources("r-1", []types.Resource{&routev3.RouteConfiguration{Name: "r1"}})
	snap.Resources[types.Endpoint] = cachev3.NewResources(edsVersion, []types.Resource{cla("c1", "10.0.0.1"), c2})
	snap.Resources[types.Secret] = cachev3.NewResources("s-1", []types.Resource{
		&tlsv3.Secret{Name: "default"}, &tlsv3.Secret{Name: "ROOTCA"},
	})
	return snap
}

// TestFleetAgainstGoControlPlane runs the simulated proxies against
// go-control-plane's own ADS server: they must reach a full configuration
// (which needs every EDS, RDS and SDS name the clusters and listeners
// reference), then see an endpoint change arrive as EDS only.
func TestFleetAgainstGoControlPlane(t *testing.T) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
			srv := grpc.NewServer()
			discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(ctx, cache, nil))
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = srv.Serve(lis) }()
			defer srv.Stop()

			pods := []pod{
				{Namespace: "ns-0", Name: "client-00-0000", IP: "10.1.0.1"},
				{Namespace: "ns-0", Name: "client-00-0001", IP: "10.1.0.2"},
				{Namespace: "ns-1", Name: "client-01-0000", IP: "10.1.0.3"},
			}
			for _, p := range pods {
				if err := cache.SetSnapshot(ctx, p.nodeID(), testSnapshot(t, "e-1", "10.0.0.2")); err != nil {
					t.Fatal(err)
				}
			}
			f := newFleet(pods, delta)
			pctx, stop := context.WithCancel(ctx)
			defer stop()
			if err := f.run(pctx, func() (*grpc.ClientConn, error) {
				return grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-f.allComplete:
			case err := <-f.errs:
				t.Fatal(err)
			case <-ctx.Done():
				t.Fatalf("only %d of %d proxies reached a full configuration", f.completed.Load(), len(pods))
			}
			for _, p := range f.proxies {
				if p.completeAt.Load() == 0 {
					t.Errorf("proxy %s has no completion time", p.pod.Name)
				}
				if got := p.want(tEDS).names; len(got) != 2 {
					t.Errorf("proxy %s wants EDS %v, want c1 and c2", p.pod.Name, got)
				}
			}
			b, r := f.counters()
			for typ := range numTypes {
				if b[typ] == 0 || r[typ] < int64(len(pods)) {
					t.Errorf("%s: %d bytes in %d responses; every proxy should have received it", typeNames[typ], b[typ], r[typ])
				}
			}

			// The endpoint change: c2 gains 10.0.0.20 (10.0.0.2 is a
			// prefix of it, and must not count as the change).
			settle(ctx, f, 100*time.Millisecond, 5*time.Second)
			mk := newMarker(1, "c2", "10.0.0.20", len(pods))
			f.marker.Store(mk)
			before, _ := f.counters()
			for _, p := range pods {
				if err := cache.SetSnapshot(ctx, p.nodeID(), testSnapshot(t, "e-2", "10.0.0.2", "10.0.0.20")); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-mk.done:
			case err := <-f.errs:
				t.Fatal(err)
			case <-ctx.Done():
				t.Fatalf("only %d of %d proxies ACKed the endpoint change", mk.count.Load(), len(pods))
			}
			settle(ctx, f, 100*time.Millisecond, 5*time.Second)
			after, _ := f.counters()
			for typ := range numTypes {
				grew := after[typ] > before[typ]
				if grew != (typ == tEDS) {
					t.Errorf("%s bytes went from %d to %d during an endpoint change; only EDS should move", typeNames[typ], before[typ], after[typ])
				}
			}
			for i := range pods {
				if mk.acked[i].Load() == 0 {
					t.Errorf("proxy %d has no ACK time for the change", i)
				}
			}
		})
	}
}
