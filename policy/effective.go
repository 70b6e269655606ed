package policy

// This file is the contract between policy/ and its callers (translate/,
// xds/, meshctl). The functions here are pure; each states its precedence
// rules in its doc comment and has a table test in effective_test.go.

// Workload is what the effective-policy functions need to know about a
// workload: its namespace and labels.
type Workload struct {
	Namespace string
	Labels    map[string]string
}

// EffectivePeerAuthentication is the composed PeerAuthentication for one
// workload. Modes are never UNSET.
type EffectivePeerAuthentication struct {
	// Mode applies to every port without a port-level override.
	Mode MTLSMode
	// PortModes holds port-level overrides, keyed by the workload's target port.
	PortModes map[uint32]MTLSMode
	// Applied lists the policies that contributed ("ns/name"), widest scope first.
	Applied []string
	// Problems holds warnings found while composing (for example ties).
	Problems Problems
}

// ForPort returns the mode for one target port.
func (e EffectivePeerAuthentication) ForPort(port uint32) MTLSMode {
	if m, ok := e.PortModes[port]; ok {
		return m
	}
	return e.Mode
}

// ClientTLSQuery asks which TLS a client in ClientNamespace uses toward one
// port of one service.
type ClientTLSQuery struct {
	RootNamespace    string
	ClientNamespace  string
	ServiceNamespace string
	// ServiceHost is the service's FQDN, e.g. product.default.svc.cluster.local.
	ServiceHost string
	// Port is the service port (not the target port).
	Port uint32
	// ClusterDomain resolves short DestinationRule hosts ("product" in
	// namespace default means product.default.svc.<ClusterDomain>).
	ClusterDomain string
}

// EffectiveClientTLS is the client TLS decision for one service port.
type EffectiveClientTLS struct {
	// Auto is true when no DestinationRule sets TLS for this port: the client
	// uses ISTIO_MUTUAL toward endpoints in the mesh and plaintext otherwise.
	Auto bool
	// Settings is the DestinationRule's TLS block when Auto is false.
	Settings *ClientTLSSettings
	// Rule is the deciding DestinationRule ("ns/name"), empty when none applies.
	Rule string
}
