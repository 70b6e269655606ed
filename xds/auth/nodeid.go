package auth

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/minimesh/minimesh/xds/ca"
	"github.com/minimesh/minimesh/xds/internal/clip"
)

// NodeTypeSidecar is the only node type minimesh serves. Proxyless gRPC
// workloads use it too, as in Istio.
const NodeTypeSidecar = "sidecar"

// MetadataNodeID is the key of a certificate request's metadata
// (IstioCertificateRequest.metadata) that carries the caller's node ID.
// meshd reads it only with authentication off, to find the pod whose
// identity to issue, as it does for an xDS stream.
const MetadataNodeID = "minimesh.io/node-id"

// nodeIDForm is quoted in every parse error so a user sees what to send.
const nodeIDForm = "sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.cluster.local"

// maxNodeIDLen bounds what is parsed (errors quote it clipped); real node
// IDs are well under it.
const maxNodeIDLen = 1024

// NodeID is an Istio proxy node ID:
// sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.cluster.local.
// It is comparable and can be used as a map key.
type NodeID struct {
	Type      string
	IP        string // canonical form (netip)
	Pod       string
	Namespace string
	DNSDomain string // "<namespace>.svc.<cluster domain>"
}

// SidecarNodeID builds the node ID of a sidecar, as meshctl bootstrap
// writes it. clusterDomain is usually "cluster.local".
func SidecarNodeID(ip, pod, namespace, clusterDomain string) NodeID {
	return NodeID{
		Type:      NodeTypeSidecar,
		IP:        ip,
		Pod:       pod,
		Namespace: namespace,
		DNSDomain: namespace + ".svc." + clusterDomain,
	}
}

// String renders the node ID in Istio's form.
func (n NodeID) String() string {
	return n.Type + "~" + n.IP + "~" + n.Pod + "." + n.Namespace + "~" + n.DNSDomain
}

// ParseNodeID parses an Istio node ID. Errors wrap ErrBadNodeID and say
// which part is wrong and what form is expected.
func ParseNodeID(id string) (NodeID, error) {
	fail := func(format string, args ...any) (NodeID, error) {
		return NodeID{}, fmt.Errorf("%w %q: %s; expected %s", ErrBadNodeID, clip.String(id), fmt.Sprintf(format, args...), nodeIDForm)
	}
	if len(id) > maxNodeIDLen {
		return NodeID{}, fmt.Errorf("%w: it is %d bytes long, more than %d; expected %s", ErrBadNodeID, len(id), maxNodeIDLen, nodeIDForm)
	}
	if id == "" {
		return fail("it is empty")
	}
	parts := strings.Split(id, "~")
	if len(parts) != 4 {
		return fail("it has %d '~'-separated parts instead of 4", len(parts))
	}
	typ, ipText, podNS, domain := parts[0], parts[1], parts[2], parts[3]
	if typ != NodeTypeSidecar {
		return fail("node type %q is not supported; minimesh serves sidecars and proxyless gRPC, both of type %q", clip.String(typ), NodeTypeSidecar)
	}
	ip, err := netip.ParseAddr(ipText)
	if err != nil {
		return fail("%q is not an IP address", clip.String(ipText))
	}
	if ip.Zone() != "" {
		return fail("IP address %q has a zone, which a pod IP never has", clip.String(ipText))
	}
	// Pod names may contain dots, namespaces may not: the namespace is
	// whatever follows the last dot.
	dot := strings.LastIndexByte(podNS, '.')
	if dot < 0 {
		return fail("%q is not <pod>.<namespace>", clip.String(podNS))
	}
	pod, ns := podNS[:dot], podNS[dot+1:]
	if pod == "" {
		return fail("the pod name before %q is empty", clip.String("."+ns))
	}
	if err := checkName(pod); err != nil {
		return fail("pod name %q %s", clip.String(pod), err)
	}
	if len(ns) > clip.Max {
		return fail("namespace %q is longer than a namespace can be (63 characters)", clip.String(ns))
	}
	if err := ca.ValidateNamespace(ns); err != nil {
		return fail("%s", err)
	}
	if domain == "" {
		return fail("the DNS domain after the last '~' is empty")
	}
	if err := checkName(domain); err != nil {
		return fail("DNS domain %q %s", clip.String(domain), err)
	}
	// Istio's proxies put their pod's namespace in the domain too: one
	// that names another namespace is not a proxy of this pod.
	cluster, ok := strings.CutPrefix(domain, ns+".svc.")
	if !ok || cluster == "" || strings.HasPrefix(cluster, ".") || strings.HasSuffix(cluster, ".") {
		return fail("DNS domain %q is not %s.svc.<cluster domain>, the namespace's", clip.String(domain), ns)
	}
	return NodeID{Type: typ, IP: ip.String(), Pod: pod, Namespace: ns, DNSDomain: domain}, nil
}

// ClusterDomain is the cluster's DNS suffix, the part of the DNS domain
// after "<namespace>.svc.".
func (n NodeID) ClusterDomain() string {
	return strings.TrimPrefix(n.DNSDomain, n.Namespace+".svc.")
}

// checkName accepts the characters of a DNS subdomain. It is deliberately
// lenient on structure: the pod is looked up in discovery anyway, and a
// name that does not exist there simply waits.
func checkName(s string) error {
	for _, r := range s {
		if ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') || r == '-' || r == '.' {
			continue
		}
		return fmt.Errorf("contains %q; only lowercase letters, digits, '-' and '.' are allowed", r)
	}
	return nil
}
