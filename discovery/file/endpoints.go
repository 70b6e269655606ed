package file

import (
	"cmp"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// deriveEndpoints computes the endpoints of every service port.
//
// When any EndpointSlice names a service (label kubernetes.io/service-name),
// the slices are the whole truth for that service, as they are for kube-proxy:
// ports are matched by name and protocol, the ready/serving/terminating
// conditions are copied (unset ready and serving mean true, unset
// terminating false, as the API documents), and a targetRef to a Pod supplies
// the service account and mesh membership.
//
// Otherwise endpoints are derived the way the EndpointSlice controller
// would: pods in the service's namespace whose labels match its (non-empty)
// selector and that have an IP and are not finished; a named targetPort is
// looked up among the pod's container ports (a pod without that port is left
// out of that port only); serving is the pod's Ready condition, terminating
// is a set deletionTimestamp, and ready is serving and not terminating (or
// always, with publishNotReadyAddresses).
//
// A service with neither slices nor a selector has no entry. Otherwise every
// service port has one, possibly with no endpoints, so translation can tell
// "no healthy backend" from "not a service with backends".
func deriveEndpoints(services []service, pods []pod, slices_ []endpointSlice) ([]model.ServiceEndpoints, []model.Problem) {
	podsByNS := map[string][]*pod{}
	podByName := map[[2]string]*pod{}
	for i := range pods {
		p := &pods[i]
		podsByNS[p.Namespace] = append(podsByNS[p.Namespace], p)
		podByName[[2]string{p.Namespace, p.Name}] = p
	}
	slicesBySvc := map[[2]string][]endpointSlice{}
	for _, s := range slices_ {
		k := [2]string{s.slice.Namespace, s.slice.Labels[discoveryv1.LabelServiceName]}
		slicesBySvc[k] = append(slicesBySvc[k], s)
	}

	var out []model.ServiceEndpoints
	var problems []model.Problem
	for _, svc := range services {
		key := [2]string{svc.Namespace, svc.Name}
		sl, hasSlices := slicesBySvc[key]
		delete(slicesBySvc, key)
		if !hasSlices && len(svc.Selector) == 0 {
			continue
		}
		for _, sp := range svc.Ports {
			se := model.ServiceEndpoints{Namespace: svc.Namespace, Service: svc.Name, Port: sp.Port, Endpoints: []model.Endpoint{}}
			if hasSlices {
				se.Endpoints = fromSlices(sl, sp, podByName)
			} else {
				se.Endpoints = fromPods(svc, sp, podsByNS[svc.Namespace])
			}
			out = append(out, se)
		}
	}

	// Slices whose service is not defined, and targetRefs to pods that
	// are not defined, are most likely typos: say so.
	for _, sl := range sortedSliceGroups(slicesBySvc) {
		for _, s := range sl {
			problems = append(problems, sliceProblem(s, "metadata.labels",
				fmt.Sprintf("names service %q, which is not defined in namespace %s; the slice is unused",
					s.slice.Labels[discoveryv1.LabelServiceName], s.slice.Namespace)))
		}
	}
	for _, s := range slices_ {
		for i, e := range s.slice.Endpoints {
			r := e.TargetRef
			if r == nil || r.Kind != "Pod" {
				continue
			}
			if podByName[[2]string{cmp.Or(r.Namespace, s.slice.Namespace), r.Name}] == nil {
				problems = append(problems, sliceProblem(s, fmt.Sprintf("endpoints[%d].targetRef.name", i),
					fmt.Sprintf("pod %q is not defined; the endpoint is treated as outside the mesh", r.Name)))
			}
		}
	}
	return out, problems
}

func sliceProblem(s endpointSlice, field, msg string) model.Problem {
	return model.Problem{
		Severity: policy.SeverityWarning, Kind: "EndpointSlice", Namespace: s.slice.Namespace, Name: s.slice.Name,
		Location: policy.Location{File: s.doc.file, Line: s.doc.ix.line(field)},
		Field:    field, Message: msg,
	}
}

func sortedSliceGroups(m map[[2]string][]endpointSlice) [][]endpointSlice {
	keys := make([][2]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	out := make([][]endpointSlice, 0, len(keys))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

func fromSlices(sl []endpointSlice, sp model.ServicePort, podByName map[[2]string]*pod) []model.Endpoint {
	eps := []model.Endpoint{}
	seen := map[string]bool{}
	for _, s := range sl {
		var port int32
		found := false
		for _, p := range s.slice.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			proto := string(corev1.ProtocolTCP)
			if p.Protocol != nil {
				proto = string(*p.Protocol)
			}
			if name == sp.Name && proto == sp.Protocol && p.Port != nil {
				port, found = *p.Port, true
				break
			}
		}
		if !found {
			continue
		}
		for _, e := range s.slice.Endpoints {
			ep := model.Endpoint{
				Port:        port,
				Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
				Serving:     e.Conditions.Serving == nil || *e.Conditions.Serving,
				Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
			}
			if r := e.TargetRef; r != nil && r.Kind == "Pod" {
				if p := podByName[[2]string{cmp.Or(r.Namespace, s.slice.Namespace), r.Name}]; p != nil {
					ep.Workload, ep.ServiceAccount, ep.InMesh = p.Name, p.ServiceAccount, p.InMesh
				}
			}
			for _, a := range e.Addresses {
				// Several slices may list one address (during a
				// controller's update); the first wins.
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

func fromPods(svc service, sp model.ServicePort, pods []*pod) []model.Endpoint {
	eps := []model.Endpoint{}
	for _, p := range pods {
		if p.IP == "" || p.terminal || !selects(svc.Selector, p.Labels) {
			continue
		}
		port := sp.TargetPort
		if sp.TargetPortName != "" {
			port = 0
			for _, cp := range p.Ports {
				if cp.Name == sp.TargetPortName && cp.Protocol == sp.Protocol {
					port = cp.Port
					break
				}
			}
			if port == 0 {
				continue
			}
		}
		eps = append(eps, model.Endpoint{
			IP: p.IP, Port: port,
			Workload: p.Name, ServiceAccount: p.ServiceAccount, InMesh: p.InMesh,
			Ready:       svc.publishNotReady || (p.Ready && !p.terminating),
			Serving:     p.Ready,
			Terminating: p.terminating,
		})
	}
	return eps
}

// selects is a Service selector: every key must be present with its value.
// An empty selector selects nothing (Kubernetes then leaves endpoints to
// whoever manages them).
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
