package xds

import (
	"errors"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/minimesh/minimesh/translate"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func edsCluster(name, serviceName string) *clusterv3.Cluster {
	c := &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{
		EdsConfig:   &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		ServiceName: serviceName,
	}
	return c
}

func cla(name string, ips ...string) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, ip := range ips {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
			}}},
		}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

func routeTo(name string, clusters ...string) *routev3.RouteConfiguration {
	var routes []*routev3.Route
	for _, c := range clusters {
		routes = append(routes, &routev3.Route{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c}}},
		})
	}
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: routes}}}
}

func rdsHCM(route string) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{StatPrefix: "http", RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
		RouteConfigName: route,
		ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
	}}}
}

func listenerWith(t *testing.T, name string, filters ...proto.Message) *listenerv3.Listener {
	var fs []*listenerv3.Filter
	for _, f := range filters {
		fs = append(fs, &listenerv3.Filter{Name: "f", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, f)}})
	}
	return &listenerv3.Listener{Name: name, FilterChains: []*listenerv3.FilterChain{{Filters: fs}}}
}

func TestConsistent(t *testing.T) {
	tests := []struct {
		name    string
		res     func(t *testing.T) *translate.Resources
		wantErr string // empty: consistent
	}{
		{
			name: "closed set",
			res: func(t *testing.T) *translate.Resources {
				return &translate.Resources{
					Listeners: []*listenerv3.Listener{listenerWith(t, "0.0.0.0_80", rdsHCM("80"))},
					Routes:    []*routev3.RouteConfiguration{routeTo("80", "a")},
					Clusters:  []*clusterv3.Cluster{edsCluster("a", "")},
					Endpoints: []*endpointv3.ClusterLoadAssignment{cla("a", "10.0.0.1")},
				}
			},
		},
		{
			name: "RDS name without route configuration",
			res: func(t *testing.T) *translate.Resources {
				return &translate.Resources{Listeners: []*listenerv3.Listener{listenerWith(t, "l", rdsHCM("80"))}}
			},
			wantErr: `refers to route configuration "80", which does not exist`,
		},
		{
			name: "route to a missing cluster",
			res: func(*testing.T) *translate.Resources {
				return &translate.Resources{Routes: []*routev3.RouteConfiguration{routeTo("80", "gone")}}
			},
			wantErr: `route configuration "80" virtual host "vh" refers to cluster "gone"`,
		},
		{
			name: "weighted route to a missing cluster",
			res: func(*testing.T) *translate.Resources {
				rc := routeTo("80")
				rc.VirtualHosts[0].Routes = []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
						WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "w"}}},
					}}},
				}}
				return &translate.Resources{Routes: []*routev3.RouteConfiguration{rc}}
			},
			wantErr: `cluster "w"`,
		},
		{
			name: "TCP proxy to a missing cluster",
			res: func(t *testing.T) *translate.Resources {
				tp := &tcpproxyv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "gone"}}
				return &translate.Resources{Listeners: []*listenerv3.Listener{listenerWith(t, "10.0.0.1_5432", tp)}}
			},
			wantErr: `listener "10.0.0.1_5432" TCP proxy refers to cluster "gone"`,
		},
		{
			name: "inline route configuration to a missing cluster",
			res: func(t *testing.T) *translate.Resources {
				hcm := &hcmv3.HttpConnectionManager{StatPrefix: "in", RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: routeTo("inline", "gone")}}
				return &translate.Resources{Listeners: []*listenerv3.Listener{listenerWith(t, "virtualInbound", hcm)}}
			},
			wantErr: `inline route configuration virtual host "vh" refers to cluster "gone"`,
		},
		{
			name: "EDS cluster without load assignment",
			res: func(*testing.T) *translate.Resources {
				return &translate.Resources{Clusters: []*clusterv3.Cluster{edsCluster("a", "")}}
			},
			wantErr: `EDS cluster "a" has no cluster load assignment "a"`,
		},
		{
			name: "EDS service name is the assignment's name",
			res: func(*testing.T) *translate.Resources {
				return &translate.Resources{
					Clusters:  []*clusterv3.Cluster{edsCluster("a", "svc-a")},
					Endpoints: []*endpointv3.ClusterLoadAssignment{cla("svc-a")},
				}
			},
		},
		{
			// go-control-plane's Consistent() reports this as a mismatch.
			name: "proxyless client API listener with its route configuration",
			res: func(t *testing.T) *translate.Resources {
				l := &listenerv3.Listener{Name: "greeter.default.svc.cluster.local:8080", ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(t, rdsHCM("greeter"))}}
				return &translate.Resources{
					Listeners: []*listenerv3.Listener{l},
					Routes:    []*routev3.RouteConfiguration{routeTo("greeter", "outbound|8080||greeter.default.svc.cluster.local")},
					Clusters:  []*clusterv3.Cluster{edsCluster("outbound|8080||greeter.default.svc.cluster.local", "")},
					Endpoints: []*endpointv3.ClusterLoadAssignment{cla("outbound|8080||greeter.default.svc.cluster.local", "10.0.0.2")},
				}
			},
		},
		{
			name: "proxyless client API listener without its route configuration",
			res: func(t *testing.T) *translate.Resources {
				l := &listenerv3.Listener{Name: "greeter:8080", ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(t, rdsHCM("greeter"))}}
				return &translate.Resources{Listeners: []*listenerv3.Listener{l}}
			},
			wantErr: `listener "greeter:8080" refers to route configuration "greeter"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := consistent(tt.res(t))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("no error, want one containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestGroupSnapshotClassifiesErrors(t *testing.T) {
	v := newResourceTable()
	invalid := &translate.Resources{Clusters: []*clusterv3.Cluster{{Name: ""}}}
	var ce *configError
	for range 2 { // failures are never cached: the second try fails too
		if _, err := groupSnapshot(invalid, v); !errors.As(err, &ce) || ce.kind != errInvalid {
			t.Errorf("invalid cluster: got %v, want an %s error", err, errInvalid)
		}
	}
	// An invalid typed config packed inside a listener is found too.
	badHCM := listenerWith(t, "l", &hcmv3.HttpConnectionManager{}) // no stat_prefix, no route specifier
	if _, err := groupSnapshot(&translate.Resources{Listeners: []*listenerv3.Listener{badHCM}}, v); !errors.As(err, &ce) || ce.kind != errInvalid {
		t.Errorf("invalid packed HTTP connection manager: got %v, want an %s error", err, errInvalid)
	}
	inconsistent := &translate.Resources{Clusters: []*clusterv3.Cluster{edsCluster("a", "")}}
	if _, err := groupSnapshot(inconsistent, v); !errors.As(err, &ce) || ce.kind != errInconsistent {
		t.Errorf("EDS cluster without assignment: got %v, want an %s error", err, errInconsistent)
	}
	good := &translate.Resources{Clusters: []*clusterv3.Cluster{edsCluster("a", "")}, Endpoints: []*endpointv3.ClusterLoadAssignment{cla("a", "10.0.0.1")}}
	s1, err := groupSnapshot(good, v)
	if err != nil {
		t.Fatalf("valid resources: %v", err)
	}
	// The cluster; assignments are not part of a group's snapshot (the
	// endpoint cache serves them).
	if len(v.entries) != 1 {
		t.Errorf("table holds %d resources, want the 1 valid cluster", len(v.entries))
	}
	// Another group with equal content shares the same objects.
	again := &translate.Resources{Clusters: []*clusterv3.Cluster{edsCluster("a", "")}, Endpoints: []*endpointv3.ClusterLoadAssignment{cla("a", "10.0.0.1")}}
	s2, err := groupSnapshot(again, v)
	if err != nil {
		t.Fatal(err)
	}
	if s1.GetResources(resourcev3.ClusterType)["a"] != s2.GetResources(resourcev3.ClusterType)["a"] {
		t.Error("equal clusters of two groups are not shared")
	}
	// A full push that no longer uses them drops them.
	v.nextGeneration()
	v.sweep()
	if len(v.entries) != 0 {
		t.Errorf("after a push that used nothing, the table holds %d resources", len(v.entries))
	}
}

func TestVersionsAreContentHashesPerType(t *testing.T) {
	build := func(serviceName string) *translate.Resources {
		return &translate.Resources{
			Clusters:  []*clusterv3.Cluster{edsCluster("a", serviceName), edsCluster("b", "")},
			Endpoints: []*endpointv3.ClusterLoadAssignment{cla(orDefault(serviceName, "a"), "10.0.0.1"), cla("b", "10.0.1.1")},
		}
	}
	versions := func(r *translate.Resources) (map[string]string, map[string]map[string]string) {
		t.Helper()
		s, err := versionedSnapshot(groupResources(r), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		v := map[string]string{}
		for _, typ := range configTypes {
			v[shortType(typ)] = s.GetVersion(typ)
			if v[shortType(typ)] == "" {
				t.Errorf("%s has no version; an empty type must still have one", shortType(typ))
			}
		}
		if n := len(s.GetResources(resourcev3.EndpointType)); n != 0 {
			t.Errorf("the snapshot holds %d assignments; the endpoint cache serves them", n)
		}
		return v, s.VersionMap
	}
	v1, m1 := versions(build(""))
	v1again, _ := versions(build(""))
	if diff := cmp.Diff(v1, v1again); diff != "" {
		t.Errorf("equal content, different versions (-first +second):\n%s", diff)
	}
	v2, m2 := versions(build("svc-a"))
	for typ := range v1 {
		changed := v1[typ] != v2[typ]
		if want := typ == typeCDS; changed != want {
			t.Errorf("%s version changed = %v on a cluster change, want %v", typ, changed, want)
		}
	}
	// Delta compares per-resource versions: only the changed cluster
	// differs.
	if m1[resourcev3.ClusterType]["a"] == m2[resourcev3.ClusterType]["a"] {
		t.Error("the changed cluster kept its resource version")
	}
	if m1[resourcev3.ClusterType]["b"] != m2[resourcev3.ClusterType]["b"] {
		t.Error("an unchanged cluster got a new resource version")
	}

	dup := &translate.Resources{Clusters: []*clusterv3.Cluster{edsCluster("a", ""), edsCluster("a", "")}}
	if _, err := versionedSnapshot(groupResources(dup), nil, nil); err == nil || !strings.Contains(err.Error(), `"a" is defined twice`) {
		t.Errorf("duplicate names: got %v, want an error naming the duplicate", err)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
