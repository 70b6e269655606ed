package xds

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// Sync states of one type for one proxy, as meshctl proxy-status prints them.
const (
	StateSynced  = "SYNCED"   // the proxy ACKed the version meshd wants it to have
	StateStale   = "STALE"    // sent or about to be sent, not ACKed yet
	StateNacked  = "NACKED"   // the proxy rejected the version meshd wants it to have
	StateNotSent = "NOT SENT" // meshd has nothing for it yet (pod unknown, no CA, bad first config)
)

// SyncStatus is the body of /debug/syncz.
type SyncStatus struct {
	// Ready is true once the first model snapshot has been published.
	Ready   bool          `json:"ready"`
	Proxies []ProxyStatus `json:"proxies"`
	Groups  []GroupStatus `json:"groups"`
	// Held lists objects whose newest version was refused while their
	// last valid version is served in its place (model.Snapshot.Held).
	Held []model.Held `json:"held,omitempty"`
}

// ProxyStatus is one connected proxy: one node ID, with all its streams.
// A proxyless workload under meshctl agent has several (the agent's SDS
// stream and one per gRPC xDS client); Types merges them so that a row
// shows the worst state of each type, and Streams lists them one by one.
type ProxyStatus struct {
	NodeID string `json:"nodeID"`
	// Workload is namespace/name of the pod, empty while Waiting.
	Workload string `json:"workload,omitempty"`
	Flavor   string `json:"flavor"`
	Group    string `json:"group,omitempty"`
	// Waiting is true while discovery does not know the node's pod: the
	// stream stays open and configuration follows as soon as it does.
	// WaitReason says why, e.g. "pod default/foo not found in the mesh".
	Waiting    bool   `json:"waiting"`
	WaitReason string `json:"waitReason,omitempty"`
	// Delta, Peer, Identity and ConnectedAt are those of the node's
	// longest-open stream.
	Delta       bool      `json:"delta"`
	Peer        string    `json:"peer,omitempty"`
	Identity    string    `json:"identity"`
	ConnectedAt time.Time `json:"connectedAt"`
	// Refused is why meshd stopped serving the node, when it refused every
	// one of its streams; a single refused stream shows in Streams.
	Refused     string             `json:"refused,omitempty"`
	Certificate *CertificateStatus `json:"certificate,omitempty"`
	// Types is keyed by lds, rds, cds, eds, sds: the types any stream asked
	// for, each from the stream least in sync (NACKED, then STALE).
	Types map[string]TypeStatus `json:"types"`
	// Streams are the node's open streams, oldest first.
	Streams []StreamStatus `json:"streams,omitempty"`
}

// StreamStatus is one ADS stream of a proxy.
type StreamStatus struct {
	// ID is go-control-plane's stream number (SOTW and delta count apart).
	ID          int64     `json:"id"`
	Delta       bool      `json:"delta"`
	Peer        string    `json:"peer,omitempty"`
	Identity    string    `json:"identity"`
	ConnectedAt time.Time `json:"connectedAt"`
	Refused     string    `json:"refused,omitempty"`
	// Types is keyed by lds, rds, cds, eds, sds: the types this stream
	// asked for.
	Types map[string]TypeStatus `json:"types"`
}

// CertificateStatus describes the workload certificate served to a proxy;
// it never includes the key.
type CertificateStatus struct {
	SPIFFEID string    `json:"spiffeID,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	NotAfter time.Time `json:"notAfter,omitzero"`
	RenewAt  time.Time `json:"renewAt,omitzero"`
	Error    string    `json:"error,omitempty"`
}

// TypeStatus is one type's exchange with one proxy.
type TypeStatus struct {
	State string `json:"state"`
	// Current is the version meshd wants the proxy to have.
	Current   string    `json:"current,omitempty"`
	Sent      string    `json:"sent,omitempty"`
	Acked     string    `json:"acked,omitempty"`
	Nacked    string    `json:"nacked,omitempty"`
	NackError string    `json:"nackError,omitempty"`
	SentAt    time.Time `json:"sentAt,omitzero"`
	AckedAt   time.Time `json:"ackedAt,omitzero"`
	NackedAt  time.Time `json:"nackedAt,omitzero"`
}

// GroupStatus is one proxy group: the proxies that share a translation.
type GroupStatus struct {
	Key       string `json:"key"`
	Namespace string `json:"namespace"`
	Flavor    string `json:"flavor"`
	Proxies   int    `json:"proxies"`
	// Versions are the published versions by type.
	Versions map[string]string `json:"versions,omitempty"`
	BuiltAt  time.Time         `json:"builtAt,omitzero"`
	// Error is why the latest translation was not published; the group
	// keeps serving Versions.
	Error     string          `json:"error,omitempty"`
	ErrorKind string          `json:"errorKind,omitempty"`
	ErrorAt   time.Time       `json:"errorAt,omitzero"`
	Problems  policy.Problems `json:"problems,omitempty"`
}

func (s *Server) debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready: the first model snapshot has not been published yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /debug/syncz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, s.SyncStatus())
	})
	mux.HandleFunc("GET /debug/model", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		m := s.model
		s.mu.Unlock()
		if m == nil {
			http.Error(w, "no model yet: discovery has not delivered a snapshot", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, m)
	})
	mux.HandleFunc("GET /debug/config_dump", func(w http.ResponseWriter, r *http.Request) {
		node := r.URL.Query().Get("proxy")
		if node == "" {
			http.Error(w, "missing ?proxy=<node ID>; /debug/syncz lists the connected proxies", http.StatusBadRequest)
			return
		}
		dump, err := s.ConfigDump(node)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(dump)
		if err != nil {
			http.Error(w, fmt.Sprintf("rendering the config dump: %v", err), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	mux.HandleFunc("GET /debug/{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "minimesh debug API\n\n"+
			"/debug/syncz                      every proxy: versions sent, ACKed, NACKed\n"+
			"/debug/config_dump?proxy=NODE_ID  what a proxy is served, as Envoy's /config_dump\n"+
			"/debug/model                      the current model snapshot\n"+
			"/metrics /healthz /readyz\n")
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// SyncStatus reports every proxy and group, sorted by node ID and key.
func (s *Server) SyncStatus() SyncStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := SyncStatus{Ready: s.Ready(), Proxies: []ProxyStatus{}, Groups: []GroupStatus{}}
	if s.model != nil {
		out.Held = s.model.Held
	}
	members := map[string]int{}
	for _, n := range s.nodes {
		if !n.live() {
			continue
		}
		members[n.group]++
		out.Proxies = append(out.Proxies, s.proxyStatus(n))
	}
	for _, g := range s.groups {
		gs := GroupStatus{
			Key: g.key, Namespace: g.proxy.Namespace, Flavor: string(g.proxy.Flavor), Proxies: members[g.key],
			BuiltAt: g.builtAt, Problems: g.problems,
		}
		if g.snap != nil {
			gs.Versions = map[string]string{}
			for _, t := range configTypes {
				gs.Versions[shortType(t)] = g.snap.GetVersion(t)
			}
			if v, ok := s.eds.flavor(g.proxy.Flavor).required(g.edsNames); ok {
				gs.Versions[typeEDS] = v
			}
		}
		if g.err != nil {
			gs.Error, gs.ErrorKind, gs.ErrorAt = g.err.Error(), g.err.kind, g.errAt
		} else if err := s.eds.flavor(g.proxy.Flavor).invalidAmong(g.edsNames); err != nil {
			gs.Error, gs.ErrorKind = "endpoints not published, the proxies keep the last valid ones: "+err.Error(), errInvalid
		}
		out.Groups = append(out.Groups, gs)
	}
	slices.SortFunc(out.Proxies, func(a, b ProxyStatus) int {
		return strings.Compare(a.NodeID, b.NodeID)
	})
	slices.SortFunc(out.Groups, func(a, b GroupStatus) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// proxyStatus describes one live node. Called with mu held.
func (s *Server) proxyStatus(n *nodeState) ProxyStatus {
	ps := ProxyStatus{
		NodeID:     n.id,
		Workload:   n.workload,
		Flavor:     string(n.flavor),
		Group:      n.group,
		Waiting:    n.waiting,
		WaitReason: n.waitReason,
		Types:      map[string]TypeStatus{},
	}
	if n.cert != nil || n.certErr != nil {
		cs := &CertificateStatus{RenewAt: n.renewAt}
		if n.cert != nil {
			cs.SPIFFEID, cs.Serial, cs.NotAfter = n.cert.SPIFFEID, n.cert.Serial, n.cert.NotAfter
		}
		if n.certErr != nil {
			cs.Error = n.certErr.Error()
		}
		ps.Certificate = cs
	}
	streams := sortedStreams(n)
	allRefused := true
	for _, st := range streams {
		allRefused = allRefused && st.refused != nil
	}
	for i, st := range streams {
		ss := StreamStatus{
			ID: st.key.id, Delta: st.key.delta, Peer: st.peer, Identity: st.identity.String(),
			ConnectedAt: st.shownAt, Types: map[string]TypeStatus{},
		}
		if st.refused != nil {
			ss.Refused = st.refused.Error()
		}
		if i == 0 {
			ps.Delta, ps.Peer, ps.Identity, ps.ConnectedAt = ss.Delta, ss.Peer, ss.Identity, ss.ConnectedAt
			if allRefused {
				ps.Refused = ss.Refused
			}
		}
		for typ, ts := range st.types {
			ts := s.typeStatus(n, typ, ts)
			ss.Types[typ] = ts
			// A refused stream gets nothing more; it says nothing about
			// the node unless it is all the node has.
			if st.refused != nil && !allRefused {
				continue
			}
			if cur, ok := ps.Types[typ]; !ok || stateRank[ts.State] > stateRank[cur.State] {
				ps.Types[typ] = ts
			}
		}
		ps.Streams = append(ps.Streams, ss)
	}
	return ps
}

// stateRank orders states from most to least in sync, to merge streams.
var stateRank = map[string]int{StateSynced: 0, StateNotSent: 1, StateStale: 2, StateNacked: 3}

// sortedStreams returns a node's streams, oldest first.
func sortedStreams(n *nodeState) []*stream {
	out := make([]*stream, 0, len(n.streams))
	for _, st := range n.streams {
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b *stream) int {
		if c := a.openedAt.Compare(b.openedAt); c != 0 {
			return c
		}
		if a.key.delta != b.key.delta {
			if a.key.delta {
				return 1
			}
			return -1
		}
		return int(a.key.id - b.key.id)
	})
	return out
}

// typeStatus rates one stream's exchange of one type. Called with mu held.
func (s *Server) typeStatus(n *nodeState, typ string, ts *typeState) TypeStatus {
	current, _ := s.servedVersions(n, typ)
	st := TypeStatus{
		Current: current, Sent: ts.Sent, Acked: ts.Acked, Nacked: ts.Nacked, NackError: ts.NackError,
		SentAt: ts.SentAt, AckedAt: ts.AckedAt, NackedAt: ts.NackedAt,
	}
	// Endpoint versions count up across the flavour: a proxy is in sync
	// once it ACKed the newest change among its assignments, or later.
	reached := func(v string) bool { return v == st.Current }
	if typ == typeEDS {
		reached = func(v string) bool { return s.eds.holds(v, st.Current) }
	}
	switch {
	case st.Current == "":
		st.State = StateNotSent
	case reached(st.Acked):
		st.State = StateSynced
	case reached(st.Nacked):
		st.State = StateNacked
	default:
		st.State = StateStale
	}
	return st
}

// redacted replaces private keys in the config dump, as Envoy's admin does.
const redacted = "[redacted]"

// ConfigDump renders what the proxy with this node ID is served, in Envoy's
// admin ConfigDump format: listeners, clusters, routes, endpoints and
// secrets, private keys redacted. Each resource's client_status says
// whether the proxy ACKed or NACKed the version shown.
func (s *Server) ConfigDump(nodeID string) (*adminv3.ConfigDump, error) {
	s.mu.Lock()
	n := s.nodes[nodeID]
	if n == nil || !n.live() {
		s.mu.Unlock()
		return nil, fmt.Errorf("no proxy with node ID %q is connected; /debug/syncz lists the connected proxies", nodeID)
	}
	cfg, cfgPub, sec := n.configSnap, n.configPub, n.secretSnap
	if !n.secretsSet {
		sec = nil
	}
	ev, _ := s.servedVersions(n, typeEDS)
	var assignments map[string]types.ResourceWithTTL
	if g := s.groups[n.group]; g != nil && ev != "" {
		assignments = s.eds.flavor(n.flavor).resources(g.edsNames)
	}
	// Per type, the state of the stream least in sync, as syncz shows.
	states := s.proxyStatus(n).Types
	s.mu.Unlock()

	// Every resource shown is the current version of its type, so its
	// status is the type's state.
	status := func(typ string) (adminv3.ClientResourceStatus, *timestamppb.Timestamp) {
		ts, ok := states[typ]
		if !ok {
			return adminv3.ClientResourceStatus_UNKNOWN, nil
		}
		var at *timestamppb.Timestamp
		if !ts.SentAt.IsZero() {
			at = timestamppb.New(ts.SentAt)
		}
		switch ts.State {
		case StateSynced:
			return adminv3.ClientResourceStatus_ACKED, at
		case StateNacked:
			return adminv3.ClientResourceStatus_NACKED, at
		default:
			return adminv3.ClientResourceStatus_REQUESTED, at
		}
	}
	each := func(snap *cachev3.Snapshot, typeURL string, f func(name string, a *anypb.Any) error) error {
		if pt := cfgPub.typeOf(typeURL); snap == cfg && pt != nil {
			// Listeners, routes and clusters: their shared encoded form.
			for _, it := range pt.sorted {
				if err := f(it.name, it.any); err != nil {
					return err
				}
			}
			return nil
		}
		var items map[string]types.ResourceWithTTL
		switch {
		case typeURL == resourcev3.EndpointType:
			items = assignments
		case snap != nil:
			items = snap.GetResourcesAndTTL(typeURL)
		}
		for _, name := range sortedNames(items) {
			msg := items[name].Resource
			if typeURL == resourcev3.SecretType {
				msg = redactSecret(msg)
			}
			a, err := anypb.New(msg)
			if err != nil {
				return fmt.Errorf("encoding %s %q: %w", shortType(typeURL), name, err)
			}
			if err := f(name, a); err != nil {
				return err
			}
		}
		return nil
	}
	version := func(snap *cachev3.Snapshot, typeURL string) string {
		if snap == nil {
			return ""
		}
		return snap.GetVersion(typeURL)
	}

	lv := version(cfg, resourcev3.ListenerType)
	listeners := &adminv3.ListenersConfigDump{VersionInfo: lv}
	cv := version(cfg, resourcev3.ClusterType)
	clusters := &adminv3.ClustersConfigDump{VersionInfo: cv}
	rv := version(cfg, resourcev3.RouteType)
	routes := &adminv3.RoutesConfigDump{}
	endpoints := &adminv3.EndpointsConfigDump{}
	sv := version(sec, resourcev3.SecretType)
	secrets := &adminv3.SecretsConfigDump{}
	err := firstErr(
		each(cfg, resourcev3.ListenerType, func(name string, a *anypb.Any) error {
			st, at := status(typeLDS)
			listeners.DynamicListeners = append(listeners.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
				Name:         name,
				ActiveState:  &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: lv, Listener: a, LastUpdated: at},
				ClientStatus: st,
			})
			return nil
		}),
		each(cfg, resourcev3.ClusterType, func(_ string, a *anypb.Any) error {
			st, at := status(typeCDS)
			clusters.DynamicActiveClusters = append(clusters.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
				VersionInfo: cv, Cluster: a, LastUpdated: at, ClientStatus: st,
			})
			return nil
		}),
		each(cfg, resourcev3.RouteType, func(_ string, a *anypb.Any) error {
			st, at := status(typeRDS)
			routes.DynamicRouteConfigs = append(routes.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
				VersionInfo: rv, RouteConfig: a, LastUpdated: at, ClientStatus: st,
			})
			return nil
		}),
		each(cfg, resourcev3.EndpointType, func(_ string, a *anypb.Any) error {
			st, at := status(typeEDS)
			endpoints.DynamicEndpointConfigs = append(endpoints.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
				VersionInfo: ev, EndpointConfig: a, LastUpdated: at, ClientStatus: st,
			})
			return nil
		}),
		each(sec, resourcev3.SecretType, func(name string, a *anypb.Any) error {
			st, at := status(typeSDS)
			secrets.DynamicActiveSecrets = append(secrets.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
				Name: name, VersionInfo: sv, Secret: a, LastUpdated: at, ClientStatus: st,
			})
			return nil
		}),
	)
	if err != nil {
		return nil, err
	}
	dump := &adminv3.ConfigDump{}
	// Envoy's order: bootstrap, clusters, (ecds), listeners, routes,
	// secrets; endpoints only with include_eds. meshd always includes
	// them: the proxy's endpoints are the usual question.
	for _, m := range []proto.Message{clusters, listeners, routes, secrets, endpoints} {
		a, err := anypb.New(m)
		if err != nil {
			return nil, fmt.Errorf("encoding the config dump: %w", err)
		}
		dump.Configs = append(dump.Configs, a)
	}
	return dump, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func sortedNames(items map[string]types.ResourceWithTTL) []string {
	names := make([]string, 0, len(items))
	for n := range items {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// redactSecret returns a copy of a secret without its private key.
func redactSecret(m types.Resource) types.Resource {
	sec, ok := m.(*tlsv3.Secret)
	if !ok || sec.GetTlsCertificate() == nil {
		return m
	}
	c := proto.Clone(sec).(*tlsv3.Secret)
	tc := c.GetTlsCertificate()
	if tc.GetPrivateKey() != nil {
		tc.PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: redacted}}
	}
	return c
}
