package kubernetes

import (
	"cmp"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// inputs is everything one snapshot is built from: the informers' caches at
// one moment plus the decoded policies. build is a pure function of it, so
// the conversion rules are tested without an API server.
type inputs struct {
	namespaces []*corev1.Namespace
	services   []*corev1.Service
	pods       []*corev1.Pod
	slices     []*discoveryv1.EndpointSlice
	policies   []decoded
}

// decoded is one policy custom resource after policy.Decode: obj is nil
// when the resource has errors (problems say which).
type decoded struct {
	obj      policy.Object
	problems policy.Problems
}

// build converts the cluster's objects into a model snapshot.
//
// The rules match discovery/file so that one mesh described either way gives
// the same snapshot, with one difference: endpoints come only from
// EndpointSlices, never from matching pods against selectors, because in a
// cluster the EndpointSlice controller already did that (and knows about
// readiness gates, publishNotReadyAddresses and terminating pods).
//
//   - A pod is in the mesh when it has label security.istio.io/tlsMode=istio;
//     its service account defaults to "default"; Ready mirrors its Ready
//     condition (a pod without one is not ready, as in Kubernetes).
//   - Slices belong to the service named by their kubernetes.io/service-name
//     label; a slice port matches a service port by name and protocol.
//     Unset ready and serving conditions mean true, unset terminating false,
//     as the EndpointSlice API documents. A targetRef to a Pod supplies the
//     workload, service account and mesh membership. FQDN slices are
//     ignored (they carry no address a proxy can use).
//   - Every port of a service that has slices or a selector has an entry,
//     possibly empty ("no healthy backend" is not "no backends managed").
//   - ExternalName services are skipped with a warning, as the file source
//     refuses them.
func build(in inputs) *model.Snapshot {
	s := &model.Snapshot{
		Namespaces: []model.Namespace{},
		Services:   []model.Service{},
		Workloads:  []model.Workload{},
		Endpoints:  []model.ServiceEndpoints{},
	}
	for _, ns := range in.namespaces {
		s.Namespaces = append(s.Namespaces, model.Namespace{Name: ns.Name, Labels: copyLabels(ns.Labels)})
	}

	pods := make(map[[2]string]*model.Workload, len(in.pods))
	for _, p := range in.pods {
		s.Workloads = append(s.Workloads, workload(p))
	}
	for i := range s.Workloads {
		w := &s.Workloads[i]
		pods[[2]string{w.Namespace, w.Name}] = w
	}

	slicesBySvc := map[[2]string][]*discoveryv1.EndpointSlice{}
	for _, sl := range in.slices {
		name := sl.Labels[discoveryv1.LabelServiceName]
		if name == "" || sl.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		k := [2]string{sl.Namespace, name}
		slicesBySvc[k] = append(slicesBySvc[k], sl)
	}
	// Several slices may list one address; which one wins must not depend
	// on the informer's map order.
	for _, sl := range slicesBySvc {
		slices.SortFunc(sl, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	}

	for _, svc := range in.services {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			s.Problems = append(s.Problems, model.Problem{
				Severity: policy.SeverityWarning, Kind: "Service", Namespace: svc.Namespace, Name: svc.Name,
				Field: "spec.type", Message: "type ExternalName is not supported; the service is not part of the mesh",
			})
			continue
		}
		ms := service(svc)
		s.Services = append(s.Services, ms)
		sl, hasSlices := slicesBySvc[[2]string{svc.Namespace, svc.Name}]
		if !hasSlices && len(svc.Spec.Selector) == 0 {
			continue
		}
		for _, sp := range ms.Ports {
			s.Endpoints = append(s.Endpoints, model.ServiceEndpoints{
				Namespace: svc.Namespace, Service: svc.Name, Port: sp.Port,
				Endpoints: endpoints(sl, sp, pods),
			})
		}
	}

	for _, d := range in.policies {
		s.Problems = append(s.Problems, d.problems...)
		if d.obj != nil {
			s.Policies.Add(d.obj)
		}
	}
	slices.SortFunc(s.Problems, func(a, b model.Problem) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name), cmp.Compare(a.Field, b.Field), cmp.Compare(a.Message, b.Message))
	})
	s.Sort()
	return s
}

func workload(p *corev1.Pod) model.Workload {
	w := model.Workload{
		Namespace:      p.Namespace,
		Name:           p.Name,
		IP:             p.Status.PodIP,
		ServiceAccount: cmp.Or(p.Spec.ServiceAccountName, p.Spec.DeprecatedServiceAccount, "default"),
		Labels:         copyLabels(p.Labels),
		InMesh:         p.Labels[model.LabelTLSMode] == model.TLSModeIstio,
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			w.Ready = c.Status == corev1.ConditionTrue
		}
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			w.Ports = append(w.Ports, model.ContainerPort{
				Name: cp.Name, Port: cp.ContainerPort, Protocol: cmp.Or(string(cp.Protocol), string(corev1.ProtocolTCP)),
			})
		}
	}
	return w
}

func service(svc *corev1.Service) model.Service {
	ms := model.Service{
		Namespace: svc.Namespace,
		Name:      svc.Name,
		ClusterIP: svc.Spec.ClusterIP,
		Selector:  copyLabels(svc.Spec.Selector),
		Ports:     []model.ServicePort{},
	}
	for _, p := range svc.Spec.Ports {
		mp := model.ServicePort{Name: p.Name, Port: p.Port, Protocol: cmp.Or(string(p.Protocol), string(corev1.ProtocolTCP))}
		if p.AppProtocol != nil {
			mp.AppProtocol = *p.AppProtocol
		}
		switch {
		case p.TargetPort.StrVal != "":
			mp.TargetPortName = p.TargetPort.StrVal
		case p.TargetPort.IntVal != 0:
			mp.TargetPort = p.TargetPort.IntVal
		default:
			mp.TargetPort = p.Port // the API server defaults it, but be safe
		}
		ms.Ports = append(ms.Ports, mp)
	}
	return ms
}

// endpoints collects the endpoints of one service port from its slices.
func endpoints(sl []*discoveryv1.EndpointSlice, sp model.ServicePort, pods map[[2]string]*model.Workload) []model.Endpoint {
	eps := []model.Endpoint{}
	seen := map[string]bool{}
	for _, s := range sl {
		port, ok := slicePort(s, sp)
		if !ok {
			continue
		}
		for _, e := range s.Endpoints {
			ep := model.Endpoint{
				Port:        port,
				Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
				Serving:     e.Conditions.Serving == nil || *e.Conditions.Serving,
				Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
			}
			if r := e.TargetRef; r != nil && r.Kind == "Pod" {
				if w := pods[[2]string{cmp.Or(r.Namespace, s.Namespace), r.Name}]; w != nil {
					ep.Workload, ep.ServiceAccount, ep.InMesh = w.Name, w.ServiceAccount, w.InMesh
				}
			}
			for _, a := range e.Addresses {
				// During a controller's update two slices may list one
				// address; the first (by slice name) wins.
				k := fmt.Sprintf("%s|%d", a, port)
				if seen[k] {
					continue
				}
				seen[k] = true
				ep.IP = a
				eps = append(eps, ep)
			}
		}
	}
	return eps
}

// slicePort finds the slice's port for a service port: same name (both
// empty for a single unnamed port) and protocol.
func slicePort(s *discoveryv1.EndpointSlice, sp model.ServicePort) (int32, bool) {
	for _, p := range s.Ports {
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		proto := string(corev1.ProtocolTCP)
		if p.Protocol != nil {
			proto = string(*p.Protocol)
		}
		if name == sp.Name && proto == sp.Protocol && p.Port != nil {
			return *p.Port, true
		}
	}
	return 0, false
}

// copyLabels returns a copy (nil for none), so a snapshot never shares a
// map with the informer cache, which client-go may replace at any time.
func copyLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
