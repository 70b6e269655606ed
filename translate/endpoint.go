package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/minimesh/minimesh/discovery/model"
)

// usableEndpoints picks the endpoints that receive traffic: ready ones
// (EndpointSlice "ready" already implies serving and not terminating); when
// there are none, serving endpoints that are
// terminating, so that a rollout where every old pod is draining still
// serves (the fallback kube-proxy and Envoy Gateway apply). Endpoints that
// are neither are never sent.
func usableEndpoints(eps []model.Endpoint) []model.Endpoint {
	var ready, draining []model.Endpoint
	for _, e := range eps {
		switch {
		case e.Ready && !e.Terminating:
			ready = append(ready, e)
		case e.Serving && e.Terminating:
			draining = append(draining, e)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return draining
}

// ClusterLoadAssignment lists the endpoints of one outbound cluster in a
// single locality with equal weights. In-mesh endpoints carry the metadata
// the cluster's transport_socket_matches select mTLS with. targetPort is
// used for endpoints whose port is unknown (0).
func ClusterLoadAssignment(cluster string, eps []model.Endpoint, targetPort uint32) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	usable := usableEndpoints(eps)
	if len(usable) == 0 {
		return cla
	}
	lbs := make([]*endpointv3.LbEndpoint, 0, len(usable))
	for _, e := range usable {
		port := uint32(e.Port)
		if e.Port <= 0 {
			port = targetPort
		}
		lb := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(e.IP, port),
			}},
			LoadBalancingWeight: wrapperspb.UInt32(1),
		}
		if e.InMesh {
			lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				transportSocketMatchFilter: {Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModeIstio)}},
			}}
		}
		lbs = append(lbs, lb)
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{
		Locality:            &corev3.Locality{},
		LbEndpoints:         lbs,
		LoadBalancingWeight: wrapperspb.UInt32(uint32(len(lbs))),
	}}
	return cla
}
