package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/minimesh/minimesh/xds"
)

const proxyConfigUsage = `Usage: meshctl proxy-config listeners|clusters|routes|endpoints|secrets POD[.NAMESPACE] [flags]

Shows what meshd serves one proxy, read from meshd's debug API
(/debug/config_dump, Envoy's admin ConfigDump format), like
'istioctl proxy-config'. The proxy is found by pod and namespace among the
proxies connected to meshd (namespace "default" unless given).

Tables:
  listeners  NAME ADDRESS PORT MATCH DESTINATION, one row per filter chain.
             MATCH is the chain's filter_chain_match ("dst port 8080; tls",
             "raw_buffer", "ALL"); DESTINATION is the route configuration,
             inline route or cluster, with "(mTLS)" when the chain
             terminates TLS and requires a client certificate. Proxyless
             gRPC clients have API listeners (no address; MATCH "API
             listener"), their servers "grpc/server?..." listeners.
  clusters   SERVICE FQDN, PORT, DIRECTION, TYPE, TLS MODE, NAME. TLS MODE is
             read from the cluster's transport socket: ISTIO_MUTUAL (mesh
             certificate via SDS), "auto" (mTLS to endpoints labelled
             tlsMode=istio, plaintext to the others), SIMPLE, MUTUAL or
             DISABLE.
  routes     NAME VHOST DOMAINS MATCH CLUSTER, one row per route.
  endpoints  ENDPOINT STATUS TLS MODE CLUSTER. STATUS is the health status
             meshd sends (meshd sends only ready endpoints; Envoy treats
             UNKNOWN as HEALTHY, so it is shown as HEALTHY).
  secrets    NAME TYPE STATUS SPIFFE ID SERIAL NOT AFTER. Key material is
             never shown: meshd redacts private keys, and meshctl redacts
             any that reach it anyway.

-o json|yaml prints the selected resources themselves (as Envoy's admin
prints them). Translation warnings and NACKs for the proxy are printed on
stderr.

Flags:
`

// proxyConfigOptions are the filters and settings of one invocation.
type proxyConfigOptions struct {
	port      uint
	fqdn      string
	address   string
	name      string
	direction string
	output    string
	debug     debugFlags
	namespace string
}

var proxyConfigKinds = []string{"listeners", "clusters", "routes", "endpoints", "secrets"}

// kindAliases accept istioctl's spellings too (singular, short).
var kindAliases = map[string]string{
	"listener": "listeners", "listeners": "listeners", "l": "listeners",
	"cluster": "clusters", "clusters": "clusters", "c": "clusters",
	"route": "routes", "routes": "routes", "r": "routes",
	"endpoint": "endpoints", "endpoints": "endpoints", "ep": "endpoints", "e": "endpoints",
	"secret": "secrets", "secrets": "secrets", "s": "secrets",
}

func runProxyConfig(args []string, stdout, stderr io.Writer) int {
	var o proxyConfigOptions
	fs := flag.NewFlagSet(programName+" proxy-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.UintVar(&o.port, "port", 0, "only listeners, clusters or endpoints with this port")
	fs.StringVar(&o.fqdn, "fqdn", "", "only clusters, endpoints or routes of this service (full FQDN, or a prefix ending at a dot: \"stock\", \"stock.default\")")
	fs.StringVar(&o.address, "address", "", "only listeners or endpoints with this IP address")
	fs.StringVar(&o.name, "name", "", "only the resource with this name (listener, cluster, route configuration, cluster of endpoints, secret)")
	fs.StringVar(&o.direction, "direction", "", "only clusters of this direction: inbound or outbound")
	fs.StringVar(&o.output, "o", formatTable, "output format: table, json or yaml")
	fs.StringVar(&o.namespace, "namespace", "", "namespace of the pod (default: the part after the last dot of the pod argument, else \"default\")")
	o.debug.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), proxyConfigUsage)
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK
		}
		return exitUsage
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "%s proxy-config: %s\n", programName, fmt.Sprintf(format, a...))
		return code
	}
	if len(pos) != 2 {
		return fail(exitUsage, "want a resource kind (%s) and a pod, got %d argument(s); see --help", strings.Join(proxyConfigKinds, ", "), len(pos))
	}
	kind, ok := kindAliases[pos[0]]
	if !ok {
		return fail(exitUsage, "%q is not one of %s", pos[0], strings.Join(proxyConfigKinds, ", "))
	}
	if err := checkFormat(o.output, formatTable, formatJSON, formatYAML); err != nil {
		return fail(exitUsage, "%v", err)
	}
	if o.direction != "" && o.direction != "inbound" && o.direction != "outbound" {
		return fail(exitUsage, "--direction %q is not inbound or outbound", o.direction)
	}
	if o.port > 65535 {
		return fail(exitUsage, "--port %d is not a port number (1-65535)", o.port)
	}
	client, err := o.debug.client()
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	pod, ns := splitPodArg(pos[1], o.namespace)

	ctx, cancel := context.WithTimeout(context.Background(), debugTimeout)
	defer cancel()
	st, err := client.syncz(ctx)
	if err != nil {
		return fail(exitFailed, "%v", err)
	}
	proxy, err := findProxy(st, pod, ns)
	if err != nil {
		return fail(exitFailed, "%v", err)
	}
	dump, err := client.configDump(ctx, proxy.NodeID)
	if err != nil {
		return fail(exitFailed, "%v", err)
	}
	printProxyNotes(stderr, st, proxy)

	msgs, tbl := selectResources(kind, dump, o)
	if o.output == formatTable {
		err = tbl.write(stdout)
	} else {
		err = writeProtos(stdout, o.output, msgs)
	}
	if err != nil {
		return fail(exitFailed, "%v", err)
	}
	return exitOK
}

// printProxyNotes tells the user what the config dump alone does not:
// the proxy is still waiting for its pod, meshd could not publish its
// latest translation, translation had to deviate from a policy, or the
// proxy rejected what it was sent.
func printProxyNotes(w io.Writer, st xds.SyncStatus, p xds.ProxyStatus) {
	name := proxyName(p)
	if p.Refused != "" {
		fmt.Fprintf(w, "warning: meshd refused proxy %s: %s\n", name, p.Refused)
	}
	if p.Waiting {
		fmt.Fprintf(w, "note: proxy %s is waiting (%s), so it has no configuration\n", name, waitReason(p))
	}
	if g, ok := groupOf(st, p); ok {
		if g.Error != "" {
			fmt.Fprintf(w, "warning: meshd could not publish the latest configuration for %s (%s): %s; the last good configuration is shown\n", name, g.ErrorKind, g.Error)
		}
		for _, prob := range g.Problems {
			sev := prob.Severity
			prob.Severity = "" // Error() would prefix warnings itself
			fmt.Fprintf(w, "translation %s: %s\n", sev, prob.Error())
		}
	}
	for _, typ := range []string{"cds", "lds", "eds", "rds", "sds"} {
		ts, ok := p.Types[typ]
		if ok && ts.State == xds.StateNacked {
			fmt.Fprintf(w, "warning: proxy %s rejected (NACKed) %s version %s: %s\n", name, strings.ToUpper(typ), ts.Nacked, ts.NackError)
		}
	}
	if p.Certificate != nil && p.Certificate.Error != "" {
		fmt.Fprintf(w, "warning: no workload certificate for %s: %s\n", name, p.Certificate.Error)
	}
	for _, h := range st.Held {
		fmt.Fprintf(w, "note: %s %s: the version at %s is refused (%s); meshd serves %s in its place\n",
			h.Kind, strings.TrimPrefix(h.Namespace+"/"+h.Name, "/"), h.Refused, h.Reason, h.Serving)
	}
}

// dumpParts unpacks the sections of a config dump.
type dumpParts struct {
	listeners []*listenerv3.Listener
	clusters  []*clusterv3.Cluster
	routes    []*routev3.RouteConfiguration
	endpoints []*endpointv3.ClusterLoadAssignment
	secrets   []secretEntry
}

type secretEntry struct {
	secret *tlsv3.Secret
	status adminv3.ClientResourceStatus
}

func unpack[T proto.Message](a *anypb.Any, into *[]T) {
	if a == nil {
		return
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return
	}
	if t, ok := m.(T); ok {
		*into = append(*into, t)
	}
}

func splitDump(dump *adminv3.ConfigDump) dumpParts {
	var d dumpParts
	for _, a := range dump.GetConfigs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue // configDump already decoded it once; cannot happen
		}
		switch c := m.(type) {
		case *adminv3.ListenersConfigDump:
			for _, l := range c.GetStaticListeners() {
				unpack(l.GetListener(), &d.listeners)
			}
			for _, l := range c.GetDynamicListeners() {
				unpack(l.GetActiveState().GetListener(), &d.listeners)
			}
		case *adminv3.ClustersConfigDump:
			for _, cl := range c.GetStaticClusters() {
				unpack(cl.GetCluster(), &d.clusters)
			}
			for _, cl := range c.GetDynamicActiveClusters() {
				unpack(cl.GetCluster(), &d.clusters)
			}
		case *adminv3.RoutesConfigDump:
			for _, r := range c.GetStaticRouteConfigs() {
				unpack(r.GetRouteConfig(), &d.routes)
			}
			for _, r := range c.GetDynamicRouteConfigs() {
				unpack(r.GetRouteConfig(), &d.routes)
			}
		case *adminv3.EndpointsConfigDump:
			for _, e := range c.GetStaticEndpointConfigs() {
				unpack(e.GetEndpointConfig(), &d.endpoints)
			}
			for _, e := range c.GetDynamicEndpointConfigs() {
				unpack(e.GetEndpointConfig(), &d.endpoints)
			}
		case *adminv3.SecretsConfigDump:
			for _, s := range c.GetDynamicActiveSecrets() {
				var one []*tlsv3.Secret
				unpack(s.GetSecret(), &one)
				for _, sec := range one {
					if sec.GetName() == "" {
						sec.Name = s.GetName()
					}
					d.secrets = append(d.secrets, secretEntry{secret: sec, status: s.GetClientStatus()})
				}
			}
		}
	}
	return d
}

// selectResources filters the dump for one kind and builds both views.
func selectResources(kind string, dump *adminv3.ConfigDump, o proxyConfigOptions) ([]proto.Message, *table) {
	d := splitDump(dump)
	var msgs []proto.Message
	switch kind {
	case "listeners":
		t := &table{header: []string{"NAME", "ADDRESS", "PORT", "MATCH", "DESTINATION"}}
		for _, l := range d.listeners {
			addr, port := listenerAddress(l)
			if o.port != 0 && port != strconv.Itoa(int(o.port)) || o.address != "" && addr != o.address || o.name != "" && l.GetName() != o.name {
				continue
			}
			msgs = append(msgs, l)
			for _, r := range listenerRows(l) {
				t.add(l.GetName(), addr, port, r[0], r[1])
			}
		}
		return msgs, t
	case "clusters":
		t := &table{header: []string{"SERVICE FQDN", "PORT", "DIRECTION", "TYPE", "TLS MODE", "NAME"}}
		for _, c := range d.clusters {
			cn := parseClusterName(c.GetName())
			if o.port != 0 && cn.port != strconv.Itoa(int(o.port)) || !fqdnMatches(cn.fqdn, o.fqdn) ||
				o.direction != "" && cn.direction != o.direction || o.name != "" && c.GetName() != o.name {
				continue
			}
			msgs = append(msgs, c)
			t.add(cn.fqdn, cn.port, cn.direction, clusterType(c), clusterTLSMode(c), c.GetName())
		}
		return msgs, t
	case "routes":
		t := &table{header: []string{"NAME", "VHOST", "DOMAINS", "MATCH", "CLUSTER"}}
		for _, rc := range d.routes {
			if o.name != "" && rc.GetName() != o.name {
				continue
			}
			var vhosts []*routev3.VirtualHost
			for _, vh := range rc.GetVirtualHosts() {
				if o.fqdn == "" || slices.ContainsFunc(vh.GetDomains(), func(dom string) bool { return fqdnMatches(dom, o.fqdn) }) {
					vhosts = append(vhosts, vh)
				}
			}
			if len(vhosts) == 0 {
				continue
			}
			if o.fqdn != "" {
				// Show only what matched, in JSON too.
				rc = proto.Clone(rc).(*routev3.RouteConfiguration)
				rc.VirtualHosts = vhosts
			}
			msgs = append(msgs, rc)
			for _, vh := range vhosts {
				for _, r := range vh.GetRoutes() {
					t.add(rc.GetName(), vh.GetName(), summarise(vh.GetDomains(), 1), routeMatch(r.GetMatch()), routeTarget(r))
				}
				if len(vh.GetRoutes()) == 0 {
					t.add(rc.GetName(), vh.GetName(), summarise(vh.GetDomains(), 1), "", "no routes")
				}
			}
		}
		return msgs, t
	case "endpoints":
		t := &table{header: []string{"ENDPOINT", "STATUS", "TLS MODE", "CLUSTER"}}
		for _, cla := range d.endpoints {
			if !fqdnMatches(parseClusterName(cla.GetClusterName()).fqdn, o.fqdn) || o.name != "" && cla.GetClusterName() != o.name {
				continue
			}
			var kept []*endpointv3.LocalityLbEndpoints
			for _, loc := range cla.GetEndpoints() {
				var lbs []*endpointv3.LbEndpoint
				for _, lb := range loc.GetLbEndpoints() {
					sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
					if o.port != 0 && sa.GetPortValue() != uint32(o.port) || o.address != "" && sa.GetAddress() != o.address {
						continue
					}
					lbs = append(lbs, lb)
					t.add(endpointAddress(lb.GetEndpoint().GetAddress()), endpointStatus(lb.GetHealthStatus()), endpointTLSMode(lb), cla.GetClusterName())
				}
				if len(lbs) > 0 {
					l := proto.Clone(loc).(*endpointv3.LocalityLbEndpoints)
					l.LbEndpoints = lbs
					kept = append(kept, l)
				}
			}
			if len(kept) == 0 && (o.port != 0 || o.address != "") {
				continue
			}
			cla = proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
			cla.Endpoints = kept
			msgs = append(msgs, cla)
		}
		return msgs, t
	case "secrets":
		t := &table{header: []string{"NAME", "TYPE", "STATUS", "SPIFFE ID", "SERIAL", "NOT AFTER"}}
		for _, e := range d.secrets {
			if o.name != "" && e.secret.GetName() != o.name {
				continue
			}
			sec := redactSecret(e.secret)
			msgs = append(msgs, sec)
			typ, spiffe, serial, notAfter := describeSecret(sec)
			t.add(sec.GetName(), typ, e.status.String(), spiffe, serial, notAfter)
		}
		return msgs, t
	}
	return nil, &table{}
}

// fqdnMatches accepts the full name or a prefix that ends at a dot, so
// "stock" and "stock.default" both find stock.default.svc.cluster.local.
func fqdnMatches(fqdn, want string) bool {
	if want == "" {
		return true
	}
	return fqdn == want || strings.HasPrefix(fqdn, want+".")
}

// listenerAddress returns the listener's address and port; an API
// listener has no socket, and its port is the one in its name (host:port).
func listenerAddress(l *listenerv3.Listener) (addr, port string) {
	if sa := l.GetAddress().GetSocketAddress(); sa != nil {
		return sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)
	}
	if p := l.GetAddress().GetPipe(); p != nil {
		return "unix:" + p.GetPath(), ""
	}
	if l.GetApiListener() != nil {
		if i := strings.LastIndexByte(l.GetName(), ':'); i >= 0 {
			if _, err := strconv.ParseUint(l.GetName()[i+1:], 10, 16); err == nil {
				return "", l.GetName()[i+1:]
			}
		}
	}
	return "", ""
}

// listenerRows returns MATCH and DESTINATION for each filter chain.
func listenerRows(l *listenerv3.Listener) [][2]string {
	if api := l.GetApiListener().GetApiListener(); api != nil {
		return [][2]string{{"API listener (gRPC client)", filterDestination(api)}}
	}
	var rows [][2]string
	for _, fc := range l.GetFilterChains() {
		rows = append(rows, [2]string{chainMatch(fc.GetFilterChainMatch()), chainDestination(fc)})
	}
	if fc := l.GetDefaultFilterChain(); fc != nil {
		rows = append(rows, [2]string{"default (no other chain matched)", chainDestination(fc)})
	}
	if len(rows) == 0 {
		rows = append(rows, [2]string{"", "no filter chains"})
	}
	return rows
}

func chainMatch(m *listenerv3.FilterChainMatch) string {
	var parts []string
	if p := m.GetDestinationPort(); p != nil {
		parts = append(parts, "dst port "+strconv.FormatUint(uint64(p.GetValue()), 10))
	}
	if r := cidrs(m.GetPrefixRanges()); r != "" {
		parts = append(parts, "dst addr "+r)
	}
	if r := cidrs(m.GetSourcePrefixRanges()); r != "" {
		parts = append(parts, "src addr "+r)
	}
	switch m.GetSourceType() {
	case listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK:
		parts = append(parts, "src local")
	case listenerv3.FilterChainMatch_EXTERNAL:
		parts = append(parts, "src external")
	}
	if len(m.GetSourcePorts()) > 0 {
		ports := make([]string, len(m.GetSourcePorts()))
		for i, p := range m.GetSourcePorts() {
			ports[i] = strconv.FormatUint(uint64(p), 10)
		}
		parts = append(parts, "src port "+summarise(ports, 3))
	}
	if len(m.GetServerNames()) > 0 {
		parts = append(parts, "SNI "+summarise(m.GetServerNames(), 2))
	}
	if tp := m.GetTransportProtocol(); tp != "" {
		parts = append(parts, tp)
	}
	if len(m.GetApplicationProtocols()) > 0 {
		parts = append(parts, "ALPN "+strings.Join(m.GetApplicationProtocols(), ","))
	}
	if len(parts) == 0 {
		return "ALL"
	}
	return strings.Join(parts, "; ")
}

func cidrs(ranges []*corev3.CidrRange) string {
	out := make([]string, len(ranges))
	for i, r := range ranges {
		out[i] = r.GetAddressPrefix() + "/" + strconv.FormatUint(uint64(r.GetPrefixLen().GetValue()), 10)
	}
	return summarise(out, 2)
}

// summarise keeps a cell short: the first n items and a count of the rest.
func summarise(items []string, n int) string {
	if len(items) <= n+1 {
		return strings.Join(items, ",")
	}
	return strings.Join(items[:n], ",") + fmt.Sprintf(" +%d more", len(items)-n)
}

// chainDestination names where a chain sends traffic, and whether it
// terminates TLS.
func chainDestination(fc *listenerv3.FilterChain) string {
	dest := ""
	for _, f := range fc.GetFilters() {
		if d := filterDestination(f.GetTypedConfig()); d != "" {
			dest = d
		}
	}
	if dest == "" {
		names := make([]string, len(fc.GetFilters()))
		for i, f := range fc.GetFilters() {
			names[i] = f.GetName()
		}
		dest = strings.Join(names, ",")
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		down := &tlsv3.DownstreamTlsContext{}
		if ts.GetTypedConfig().MessageIs(down) && ts.GetTypedConfig().UnmarshalTo(down) == nil {
			if down.GetRequireClientCertificate().GetValue() {
				dest += " (mTLS)"
			} else {
				dest += " (TLS)"
			}
		}
	}
	return dest
}

// filterDestination describes the terminal network filters meshd uses;
// other filters (RBAC, ...) return "".
func filterDestination(a *anypb.Any) string {
	if a == nil {
		return ""
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return ""
	}
	switch f := m.(type) {
	case *hcmv3.HttpConnectionManager:
		switch {
		case f.GetRds() != nil:
			return "Route: " + f.GetRds().GetRouteConfigName()
		case f.GetRouteConfig() != nil:
			return inlineRoute(f.GetRouteConfig())
		case f.GetScopedRoutes() != nil:
			return "Scoped Routes: " + f.GetScopedRoutes().GetName()
		}
		return "HTTP"
	case *tcpproxyv3.TcpProxy:
		if c := f.GetCluster(); c != "" {
			return "Cluster: " + c
		}
		var parts []string
		for _, wc := range f.GetWeightedClusters().GetClusters() {
			parts = append(parts, fmt.Sprintf("%s %d", wc.GetName(), wc.GetWeight()))
		}
		return "Clusters: " + strings.Join(parts, ", ")
	}
	return ""
}

func inlineRoute(rc *routev3.RouteConfiguration) string {
	var routes []*routev3.Route
	for _, vh := range rc.GetVirtualHosts() {
		routes = append(routes, vh.GetRoutes()...)
	}
	if len(routes) == 1 {
		return "Inline Route: " + routeMatch(routes[0].GetMatch()) + " -> " + routeTarget(routes[0])
	}
	return fmt.Sprintf("Inline Route: %s (%d routes)", rc.GetName(), len(routes))
}

// routeMatch renders a match the way istioctl does: "/*" for prefix "/".
func routeMatch(m *routev3.RouteMatch) string {
	var s string
	switch {
	case m.GetPrefix() != "":
		s = m.GetPrefix() + "*"
	case m.GetPath() != "":
		s = m.GetPath()
	case m.GetSafeRegex() != nil:
		s = "regex " + m.GetSafeRegex().GetRegex()
	case m.GetPathSeparatedPrefix() != "":
		s = m.GetPathSeparatedPrefix() + "/*"
	case m.GetConnectMatcher() != nil:
		s = "CONNECT"
	default:
		s = "*"
	}
	for _, h := range m.GetHeaders() {
		s += " [" + h.GetName() + "]"
	}
	return s
}

func routeTarget(r *routev3.Route) string {
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		ra := a.Route
		switch {
		case ra.GetCluster() != "":
			return ra.GetCluster()
		case ra.GetWeightedClusters() != nil:
			var parts []string
			for _, wc := range ra.GetWeightedClusters().GetClusters() {
				parts = append(parts, fmt.Sprintf("%s %d", wc.GetName(), wc.GetWeight().GetValue()))
			}
			return strings.Join(parts, ", ")
		case ra.GetClusterHeader() != "":
			return "cluster from header " + ra.GetClusterHeader()
		}
		return "route"
	case *routev3.Route_Redirect:
		return "redirect"
	case *routev3.Route_DirectResponse:
		return "direct response " + strconv.FormatUint(uint64(a.DirectResponse.GetStatus()), 10)
	case *routev3.Route_NonForwardingAction:
		// A proxyless gRPC server's route: the application handles it.
		return "this gRPC server"
	}
	return ""
}

// clusterName is a cluster name taken apart by Istio's naming rule:
// direction|port|subset|fqdn.
type clusterName struct {
	direction, port, subset, fqdn string
}

func parseClusterName(name string) clusterName {
	parts := strings.Split(name, "|")
	if len(parts) == 4 && (parts[0] == "inbound" || parts[0] == "outbound") {
		return clusterName{direction: parts[0], port: parts[1], subset: parts[2], fqdn: parts[3]}
	}
	// PassthroughCluster, InboundPassthroughCluster, BlackHoleCluster.
	return clusterName{fqdn: name}
}

func clusterType(c *clusterv3.Cluster) string {
	if ct := c.GetClusterType(); ct != nil {
		return ct.GetName()
	}
	return c.GetType().String()
}

// clusterTLSMode infers the DestinationRule TLS mode a cluster implements
// from its transport socket(s).
func clusterTLSMode(c *clusterv3.Cluster) string {
	if len(c.GetTransportSocketMatches()) > 0 {
		// Auto-mTLS: a TLS socket for endpoints labelled tlsMode=istio
		// and a fallback for the rest.
		var modes []string
		for _, m := range c.GetTransportSocketMatches() {
			modes = append(modes, upstreamTLSMode(m.GetTransportSocket()))
		}
		if slices.Contains(modes, "ISTIO_MUTUAL") && slices.Contains(modes, "DISABLE") {
			return "auto (mTLS to in-mesh endpoints)"
		}
		return strings.Join(slices.Compact(modes), "/")
	}
	return upstreamTLSMode(c.GetTransportSocket())
}

func upstreamTLSMode(ts *corev3.TransportSocket) string {
	up := &tlsv3.UpstreamTlsContext{}
	if ts == nil || !ts.GetTypedConfig().MessageIs(up) || ts.GetTypedConfig().UnmarshalTo(up) != nil {
		return "DISABLE"
	}
	common := up.GetCommonTlsContext()
	switch {
	case slices.ContainsFunc(common.GetTlsCertificateSdsSecretConfigs(), func(s *tlsv3.SdsSecretConfig) bool { return s.GetName() == "default" }),
		common.GetTlsCertificateProviderInstance().GetInstanceName() == "default":
		// The mesh's own workload certificate: what ISTIO_MUTUAL sends
		// (through SDS for Envoy, a certificate provider for gRPC).
		return "ISTIO_MUTUAL"
	case len(common.GetTlsCertificates()) > 0 || len(common.GetTlsCertificateSdsSecretConfigs()) > 0 ||
		common.GetTlsCertificateProviderInstance() != nil:
		return "MUTUAL"
	}
	return "SIMPLE"
}

func endpointAddress(a *corev3.Address) string {
	if sa := a.GetSocketAddress(); sa != nil {
		host := sa.GetAddress()
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return host + ":" + strconv.FormatUint(uint64(sa.GetPortValue()), 10)
	}
	if p := a.GetPipe(); p != nil {
		return "unix:" + p.GetPath()
	}
	return ""
}

func endpointStatus(h corev3.HealthStatus) string {
	if h == corev3.HealthStatus_UNKNOWN {
		return corev3.HealthStatus_HEALTHY.String()
	}
	return h.String()
}

// endpointTLSMode is the tlsMode label auto-mTLS matches on.
func endpointTLSMode(lb *endpointv3.LbEndpoint) string {
	md := lb.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"]
	return md.GetFields()["tlsMode"].GetStringValue()
}

// redactSecret returns a copy of a secret that cannot carry key material
// whatever meshd sent: private keys, session ticket keys and generic
// secrets are replaced. meshd already redacts; this is the second lock.
func redactSecret(s *tlsv3.Secret) *tlsv3.Secret {
	const redacted = "[redacted]"
	c := proto.Clone(s).(*tlsv3.Secret)
	hide := func(ds *corev3.DataSource) *corev3.DataSource {
		if ds == nil {
			return nil
		}
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: redacted}}
	}
	if tc := c.GetTlsCertificate(); tc != nil {
		tc.PrivateKey = hide(tc.GetPrivateKey())
		tc.Password = hide(tc.GetPassword())
		tc.PrivateKeyProvider = nil
	}
	if stk := c.GetSessionTicketKeys(); stk != nil {
		for i, k := range stk.GetKeys() {
			stk.Keys[i] = hide(k)
		}
	}
	if g := c.GetGenericSecret(); g != nil {
		g.Secret = hide(g.GetSecret())
		for k, v := range g.GetSecrets() {
			g.Secrets[k] = hide(v)
		}
	}
	return c
}

// describeSecret reads the type, SPIFFE ID, serial and expiry of the
// first certificate of a secret (the leaf of a chain, the root of a trust
// bundle).
func describeSecret(s *tlsv3.Secret) (typ, spiffe, serial, notAfter string) {
	var pemData []byte
	switch {
	case s.GetTlsCertificate() != nil:
		typ = "Cert Chain"
		pemData = dataBytes(s.GetTlsCertificate().GetCertificateChain())
	case s.GetValidationContext() != nil:
		typ = "CA"
		pemData = dataBytes(s.GetValidationContext().GetTrustedCa())
	case s.GetSessionTicketKeys() != nil:
		return "Session Ticket Keys", "", "", ""
	case s.GetGenericSecret() != nil:
		return "Generic", "", "", ""
	default:
		return "unknown", "", "", ""
	}
	var certs int
	var first *x509.Certificate
	for rest := pemData; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		certs++
		if first == nil {
			first, _ = x509.ParseCertificate(block.Bytes)
		}
	}
	if first == nil {
		return typ, "", "", ""
	}
	if typ == "CA" && certs > 1 {
		typ = fmt.Sprintf("CA (%d roots)", certs)
	}
	for _, u := range first.URIs {
		if u.Scheme == "spiffe" {
			spiffe = u.String()
			break
		}
	}
	return typ, spiffe, first.SerialNumber.Text(16), first.NotAfter.UTC().Format(time.RFC3339)
}

// dataBytes reads an inline data source; meshctl never reads files named
// in a config dump (they are on the proxy's machine, not this one).
func dataBytes(ds *corev3.DataSource) []byte {
	switch {
	case ds.GetInlineBytes() != nil:
		return ds.GetInlineBytes()
	case ds.GetInlineString() != "":
		return []byte(ds.GetInlineString())
	}
	return nil
}
