package file

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/minimesh/minimesh/discovery/convert"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// convertOptions are the file source's rules where it differs from a
// cluster (see convert.Options): hand-written pods without a status are
// ready, and with no EndpointSlice controller running over a directory,
// endpoints of a service without slices are derived from its selector.
var convertOptions = convert.Options{ReadyWithoutConditions: true, DeriveFromSelectors: true}

// deriveEndpoints computes the endpoints of every service port with
// convert.Endpoints, which states the rules, and warns about what in the
// files is most likely a typo: slices whose service is not defined, and
// targetRefs to pods that are not defined.
func deriveEndpoints(services []*corev1.Service, pods []*corev1.Pod, sl []endpointSlice) ([]model.ServiceEndpoints, []model.Problem) {
	raw := make([]*discoveryv1.EndpointSlice, len(sl))
	for i, s := range sl {
		raw[i] = s.slice
	}
	out := convert.Endpoints(services, pods, raw, convertOptions)

	defined := map[[2]string]bool{}
	for _, svc := range services {
		defined[[2]string{svc.Namespace, svc.Name}] = true
	}
	index := convert.NewPodIndex(pods)
	var unused, dangling []model.Problem
	for _, s := range sl {
		name, _ := convert.SliceService(s.slice)
		if !defined[[2]string{s.slice.Namespace, name}] {
			unused = append(unused, sliceProblem(s, "metadata.labels",
				fmt.Sprintf("names service %q, which is not defined in namespace %s; the slice is unused", name, s.slice.Namespace)))
		}
		for i := range s.slice.Endpoints {
			e := &s.slice.Endpoints[i]
			if r := e.TargetRef; r != nil && r.Kind == "Pod" && convert.TargetPod(s.slice, e, index) == nil {
				dangling = append(dangling, sliceProblem(s, fmt.Sprintf("endpoints[%d].targetRef.name", i),
					fmt.Sprintf("pod %q is not defined; the endpoint is treated as outside the mesh", r.Name)))
			}
		}
	}
	return out, append(unused, dangling...)
}

func sliceProblem(s endpointSlice, field, msg string) model.Problem {
	return model.Problem{
		Severity: policy.SeverityWarning, Kind: "EndpointSlice", Namespace: s.slice.Namespace, Name: s.slice.Name,
		Location: policy.Location{File: s.doc.file, Line: s.doc.ix.line(field)},
		Field:    field, Message: msg,
	}
}
