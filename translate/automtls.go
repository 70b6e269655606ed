package translate

import (
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// acceptsMTLS decides, for auto-mTLS (no DestinationRule sets TLS), which
// endpoints a client sends Istio mTLS to. An endpoint qualifies when its
// workload has a proxy (model.Endpoint.InMesh) and that workload's
// effective PeerAuthentication mode for the endpoint's port is not
// DISABLE: a server that only accepts plaintext gets plaintext, as Istio's
// auto-mTLS intends. minimesh knows the workload and port behind every
// endpoint, so it follows mesh, namespace, workload and port-level modes
// alike (Istio follows only some of them; istio#32079).
type acceptsMTLS struct {
	snap *model.Snapshot
	root string
	// modes caches each workload's effective PeerAuthentication.
	modes map[[2]string]policy.EffectivePeerAuthentication
}

func newAcceptsMTLS(snap *model.Snapshot, rootNamespace string) *acceptsMTLS {
	return &acceptsMTLS{snap: snap, root: rootNamespace}
}

// endpoints returns eps with InMesh cleared on the endpoints that do not
// accept mTLS (see acceptsMTLS), the rest unchanged. namespace is the
// service's; targetPort is used for endpoints whose port is unknown. It
// returns eps itself when nothing changes.
func (a *acceptsMTLS) endpoints(namespace string, eps []model.Endpoint, targetPort uint32) []model.Endpoint {
	if a == nil || a.snap == nil || len(a.snap.Policies.PeerAuthentications) == 0 {
		return eps // with no PeerAuthentication every mode is PERMISSIVE
	}
	var out []model.Endpoint
	for i, e := range eps {
		if !e.InMesh || e.Workload == "" || a.accepts(namespace, e, targetPort) {
			continue
		}
		if out == nil {
			out = append([]model.Endpoint(nil), eps...)
		}
		out[i].InMesh = false
	}
	if out == nil {
		return eps
	}
	return out
}

func (a *acceptsMTLS) accepts(namespace string, e model.Endpoint, targetPort uint32) bool {
	w := a.snap.Workload(namespace, e.Workload)
	if w == nil {
		return true
	}
	key := [2]string{namespace, e.Workload}
	eff, ok := a.modes[key]
	if !ok {
		eff = a.snap.Policies.PeerAuthenticationFor(a.root, policy.Workload{Namespace: namespace, Labels: w.Labels})
		if a.modes == nil {
			a.modes = map[[2]string]policy.EffectivePeerAuthentication{}
		}
		a.modes[key] = eff
	}
	port := uint32(e.Port)
	if e.Port <= 0 {
		port = targetPort
	}
	return eff.ForPort(port) != policy.ModeDisable
}
