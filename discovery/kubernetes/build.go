package kubernetes

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/minimesh/minimesh/discovery/convert"
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
	// rootNamespace holds mesh-wide policy (policy.DefaultRootNamespace
	// when empty); it also decides which workloads a policy's selector may
	// select, for the warnings about policy selectors (convert.Warnings).
	rootNamespace string
}

// decoded is one policy custom resource after policy.Decode: obj is nil
// when the resource has errors (problems say which), unless an earlier
// valid version is held in its place (held says which).
type decoded struct {
	obj      policy.Object
	problems policy.Problems
	held     *model.Held
}

// convertOptions are the cluster's rules where they differ from the file
// source (see convert.Options): a pod without conditions has not started
// and is not ready, and endpoints come only from EndpointSlices, never from
// matching pods against selectors, because the EndpointSlice controller
// already did that (and knows about readiness gates).
var convertOptions = convert.Options{}

// build converts the cluster's objects into a model snapshot. The
// conversion rules live in discovery/convert, shared with the file source,
// so one mesh described either way gives the same snapshot, with the same
// warnings about objects that clash (convert.Warnings). This source only
// adds its own reporting: ExternalName services are skipped with a
// warning, as the file source refuses them.
func build(in inputs) *model.Snapshot {
	s, _ := buildReportingConflicts(in)
	return s
}

// buildReportingConflicts is build that also returns the problems of
// conflicting policies, which the source reports as Events too.
func buildReportingConflicts(in inputs) (*model.Snapshot, policy.Problems) {
	s := &model.Snapshot{
		Namespaces: []model.Namespace{},
		Services:   []model.Service{},
		Workloads:  []model.Workload{},
		Endpoints:  []model.ServiceEndpoints{},
	}
	for _, ns := range in.namespaces {
		s.Namespaces = append(s.Namespaces, convert.Namespace(ns))
	}
	for _, p := range in.pods {
		s.Workloads = append(s.Workloads, convert.Workload(p, convertOptions))
	}

	services := make([]*corev1.Service, 0, len(in.services))
	for _, svc := range in.services {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			s.Problems = append(s.Problems, model.Problem{
				Severity: policy.SeverityWarning, Kind: "Service", Namespace: svc.Namespace, Name: svc.Name,
				Field: "spec.type", Message: "type ExternalName is not supported; the service is not part of the mesh",
			})
			continue
		}
		services = append(services, svc)
		s.Services = append(s.Services, convert.Service(svc))
	}
	s.Endpoints = convert.Endpoints(services, in.pods, in.slices, convertOptions)

	for _, d := range in.policies {
		s.Problems = append(s.Problems, d.problems...)
		if d.obj != nil {
			s.Policies.Add(d.obj)
		}
		if d.held != nil {
			s.Held = append(s.Held, *d.held)
		}
	}
	workloads := make([]policy.NamedWorkload, 0, len(in.pods))
	for _, p := range in.pods {
		workloads = append(workloads, policy.NamedWorkload{Name: p.Name, Workload: policy.Workload{Namespace: p.Namespace, Labels: p.Labels}})
	}
	var conflicts policy.Problems
	s.Policies.PeerAuthentications, conflicts = policy.ResolvePeerAuthenticationConflicts(
		cmp.Or(in.rootNamespace, policy.DefaultRootNamespace), s.Policies.PeerAuthentications, workloads)
	s.Problems = append(s.Problems, conflicts...)
	s.Problems = append(s.Problems, convert.Warnings(s.Namespaces, services, in.pods, in.slices, &s.Policies, in.rootNamespace, convertOptions)...)
	slices.SortFunc(s.Problems, func(a, b model.Problem) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name), cmp.Compare(a.Field, b.Field), cmp.Compare(a.Message, b.Message))
	})
	s.Sort()
	return s, conflicts
}
