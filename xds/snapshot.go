package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/go-multierror"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/minimesh/minimesh/translate"
)

// Short type names, as Istio and meshctl print them.
const (
	typeLDS = "lds"
	typeRDS = "rds"
	typeCDS = "cds"
	typeEDS = "eds"
	typeSDS = "sds"
)

// shortTypes maps xDS type URLs to their short names.
var shortTypes = map[string]string{
	resourcev3.ListenerType: typeLDS,
	resourcev3.RouteType:    typeRDS,
	resourcev3.ClusterType:  typeCDS,
	resourcev3.EndpointType: typeEDS,
	resourcev3.SecretType:   typeSDS,
}

// shortType returns the short name of a type URL, or the URL itself for
// types minimesh does not serve (so they still show up, unambiguously).
func shortType(typeURL string) string {
	if s, ok := shortTypes[typeURL]; ok {
		return s
	}
	return typeURL
}

// typeURLOf returns the type URL of a short type name, or "" for a name
// minimesh does not serve.
func typeURLOf(short string) string {
	for url, s := range shortTypes {
		if s == short {
			return url
		}
	}
	return ""
}

// configTypes are the types of a group snapshot, in the order Envoy wants
// them. Endpoints are served by the endpoint cache, shared by every group
// of a flavour, and secrets by a per-proxy snapshot of their own.
var configTypes = []string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType}

// versionedSnapshot builds a cache snapshot whose per-type version is a hash
// of that type's resources. Equal content therefore always has an equal
// version: a push that leaves a type's resources as they were leaves its
// version too, and go-control-plane then answers no watch of it. The per-resource
// versions that delta xDS compares are computed here too, with
// go-control-plane's own HashResource over the same deterministic bytes it
// sends, so the snapshot is never mutated after it is shared between
// proxies (go-control-plane would otherwise build that map lazily, under
// whichever cache lock happens to ask first).
//
// check, when not nil, sees every resource with its encoding and returns
// the resource and version to store: an error rejects it, and a different
// but equal resource replaces it (see resourceTable).
//
// recall, when not nil, may answer for a resource object check has seen
// before, with its shared copy and version, so that it is not encoded
// again.
func versionedSnapshot(byType map[string][]types.Resource, check func(typeURL string, r types.Resource, encoded []byte) (types.Resource, string, error),
	recall func(types.Resource) (types.Resource, string, bool)) (*cachev3.Snapshot, error) {
	var invalid *multierror.Error
	snap := &cachev3.Snapshot{VersionMap: make(map[string]map[string]string, len(byType))}
	for typeURL, resources := range byType {
		idx := cachev3.GetResponseType(typeURL)
		if idx == types.UnknownType {
			return nil, fmt.Errorf("resource type %q is not an xDS type minimesh serves", typeURL)
		}
		items := make(map[string]types.ResourceWithTTL, len(resources))
		versions := make(map[string]string, len(resources))
		names := make([]string, 0, len(resources))
		for _, r := range resources {
			name := cachev3.GetResourceName(r)
			if _, dup := items[name]; dup {
				return nil, fmt.Errorf("%s resource %q is defined twice; names must be unique", shortType(typeURL), name)
			}
			if recall != nil {
				if shared, version, ok := recall(r); ok {
					items[name] = types.ResourceWithTTL{Resource: shared}
					versions[name] = version
					names = append(names, name)
					continue
				}
			}
			b, err := cachev3.MarshalResource(r)
			if err != nil {
				return nil, fmt.Errorf("marshalling %s resource %q: %w", shortType(typeURL), name, err)
			}
			version := ""
			if check != nil {
				r, version, err = check(typeURL, r, b)
				if err != nil {
					invalid = multierror.Append(invalid, err)
				}
			}
			if version == "" {
				version = cachev3.HashResource(b)
			}
			items[name] = types.ResourceWithTTL{Resource: r}
			versions[name] = version
			names = append(names, name)
		}
		snap.Resources[idx] = cachev3.Resources{Version: typeVersion(names, versions), Items: items}
		snap.VersionMap[typeURL] = versions
	}
	if err := invalid.ErrorOrNil(); err != nil {
		return nil, err
	}
	return snap, nil
}

// typeVersion is the version of one type's resources: a hash of their
// names and per-resource versions, in name order (names is sorted here).
func typeVersion(names []string, versions map[string]string) string {
	slices.Sort(names)
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(versions[n]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func groupResources(r *translate.Resources) map[string][]types.Resource {
	out := make(map[string][]types.Resource, len(configTypes))
	for _, t := range configTypes {
		out[t] = []types.Resource{}
	}
	for _, l := range r.Listeners {
		out[resourcev3.ListenerType] = append(out[resourcev3.ListenerType], l)
	}
	for _, rc := range r.Routes {
		out[resourcev3.RouteType] = append(out[resourcev3.RouteType], rc)
	}
	for _, c := range r.Clusters {
		out[resourcev3.ClusterType] = append(out[resourcev3.ClusterType], c)
	}
	return out
}

// Kinds of configuration errors, the label of the config_errors metric.
const (
	errInvalid      = "invalid_resource"
	errInconsistent = "inconsistent"
	errCertificate  = "certificate"
)

// configError is why a group's new resources were not published.
type configError struct {
	kind string
	err  error
}

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// groupSnapshot is the gate every group snapshot passes before it is
// published: the generated ValidateAll on every resource (including the
// typed configs packed inside it, see translate.Resources.Validate), then
// consistency. A failure is a *configError saying which kind.
func groupSnapshot(r *translate.Resources, table *resourceTable) (*cachev3.Snapshot, error) {
	return groupSnapshotUsing(r, table, nil)
}

// groupSnapshotUsing is groupSnapshot that also appends, to used when it is
// not nil, the table digest of every listener, route configuration and
// cluster, so that a push reusing them can keep their table entries (see
// resourceTable.keep).
func groupSnapshotUsing(r *translate.Resources, table *resourceTable, used *[]digest) (*cachev3.Snapshot, error) {
	check := table.check
	var recall func(types.Resource) (types.Resource, string, bool)
	if used != nil && table != nil {
		check = func(typeURL string, res types.Resource, encoded []byte) (types.Resource, string, error) {
			d := sha256.Sum256(encoded)
			*used = append(*used, d)
			return table.checkDigest(typeURL, res, encoded, d)
		}
		recall = func(res types.Resource) (types.Resource, string, bool) {
			e, ok := table.recall(res)
			if !ok {
				return nil, "", false
			}
			*used = append(*used, e.digest)
			return e.res, e.version, true
		}
	}
	snap, err := versionedSnapshot(groupResources(r), check, recall)
	if err != nil {
		return nil, &configError{kind: errInvalid, err: err}
	}
	if err := consistent(r); err != nil {
		return nil, &configError{kind: errInconsistent, err: err}
	}
	return snap, nil
}

// resourceTable holds every distinct resource content currently published,
// by the SHA-256 of its encoding. Most resources are the same in every
// group (every sidecar gets the same outbound clusters and endpoints), so
//
//   - deep validation, which costs more than translation, runs once per
//     distinct content instead of once per group,
//   - every group's snapshot points at one shared copy, so memory grows
//     with distinct content rather than with groups × services, and
//   - that copy is kept pre-encoded (encodedResource), so sending it to a
//     proxy costs a copy of its bytes, not an encoding.
//
// Only valid resources are stored: a resource that failed is checked, and
// reported, again every time. Entries not used by the latest full push are
// dropped after it (sweep), so the table never outgrows what is served.
// Shared resources are never modified: translation builds fresh ones and
// nothing after it writes to them.
type resourceTable struct {
	mu      sync.Mutex
	gen     uint64
	entries map[digest]*tableEntry
	// objects maps translated resource objects already checked in the
	// current build to their entries: translation shares a namespace's
	// outbound resources between its groups (translate.Batch), and each
	// is then encoded and hashed once, not once per group. Cleared after
	// each build (forgetObjects), so it never keeps a translation alive.
	objects map[types.Resource]*tableEntry
	// byShell finds the entry of a shared copy (tableEntry.res), for
	// publish to share its publishedItem too.
	byShell map[types.Resource]*tableEntry
}

// digest is the SHA-256 of a resource's encoding, the table's key.
type digest = [sha256.Size]byte

type tableEntry struct {
	res     types.Resource
	version string // cachev3.HashResource of its encoding, shared too
	gen     uint64 // last push generation that used it
	digest  digest
	// item is the form publish gives the resource, made once and shared
	// by every group snapshot holding it (see itemFor).
	item *publishedItem
}

func newResourceTable() *resourceTable {
	return &resourceTable{entries: map[digest]*tableEntry{}, objects: map[types.Resource]*tableEntry{}, byShell: map[types.Resource]*tableEntry{}}
}

// recall returns the entry of a resource object checked in this build.
func (t *resourceTable) recall(r types.Resource) (*tableEntry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.objects[r]
	if ok {
		e.gen = t.gen
	}
	return e, ok
}

// forgetObjects ends a build: the objects it translated may be dropped.
func (t *resourceTable) forgetObjects() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.objects)
}

// check validates r unless equal content is known valid, and returns the
// shared copy and its version. With a nil table it only validates.
func (t *resourceTable) check(typeURL string, r types.Resource, encoded []byte) (types.Resource, string, error) {
	if t == nil {
		return r, "", validateOne(typeURL, r)
	}
	return t.checkDigest(typeURL, r, encoded, sha256.Sum256(encoded))
}

// checkDigest is check for a caller that has the digest of encoded already.
func (t *resourceTable) checkDigest(typeURL string, r types.Resource, encoded []byte, d digest) (types.Resource, string, error) {
	t.mu.Lock()
	if e, ok := t.entries[d]; ok {
		e.gen = t.gen
		t.objects[r] = e
		t.mu.Unlock()
		return e.res, e.version, nil
	}
	t.mu.Unlock()
	if err := validateOne(typeURL, r); err != nil {
		return r, "", err
	}
	shell := encodedResource(r, encoded)
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[d]
	if !ok { // not added by another group meanwhile
		e = &tableEntry{res: shell, version: cachev3.HashResource(encoded), digest: d}
		t.entries[d] = e
		t.byShell[shell] = e
	}
	e.gen = t.gen
	t.objects[r] = e
	return e.res, e.version, nil
}

// encodedResource returns an empty message of r's type that carries r's
// encoding as its unknown fields. Protobuf writes unknown fields back
// verbatim, so marshalling it yields exactly the bytes r encodes to, for
// the cost of a copy.
//
// This is what makes serving many proxies cheap: go-control-plane marshals
// every resource of every response anew for each stream (the profile of
// 1,000 services to 1,000 proxies spent two thirds of its CPU there), and
// every group snapshot shares these entries, so the deep encoding happens
// once per distinct resource per push instead of once per proxy. Anything
// that needs the fields back decodes the bytes (the config dump does, by
// packing the message into an Any); snapshots never hold anything else.
func encodedResource(r types.Resource, encoded []byte) types.Resource {
	shell := r.ProtoReflect().New()
	shell.SetUnknown(protoreflect.RawFields(encoded))
	return shell.Interface()
}

// itemFor returns the published form of a shared copy of this table, made
// by mk on first use, or nil when res is not one. A thousand outbound
// clusters held by fifty group snapshots are then a thousand Anys, not
// fifty thousand. With a nil table it returns nil.
func (t *resourceTable) itemFor(res types.Resource, mk func() *publishedItem) *publishedItem {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byShell[res]
	if !ok {
		return nil
	}
	if e.item == nil {
		e.item = mk() // nil again if it cannot; the caller then makes its own
	}
	return e.item
}

// keep marks entries as used by the current push without checking them
// again: a group that keeps its listeners, routes and clusters on an
// endpoint-only change still uses their entries, and a later translation
// of an equal resource should find them rather than validate it anew.
func (t *resourceTable) keep(used []digest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range used {
		if e, ok := t.entries[d]; ok {
			e.gen = t.gen
		}
	}
}

// nextGeneration starts a full push.
func (t *resourceTable) nextGeneration() {
	t.mu.Lock()
	t.gen++
	t.mu.Unlock()
}

// sweep drops what the full push that just ended did not use. Snapshots
// still holding a dropped resource keep it alive; they are replaced.
func (t *resourceTable) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for d, e := range t.entries {
		if e.gen != t.gen {
			delete(t.entries, d)
			delete(t.byShell, e.res)
		}
	}
}

// validateOne validates a single resource with translate's own deep
// validation, so both layers agree on what valid means.
func validateOne(typeURL string, r types.Resource) error {
	var one translate.Resources
	switch m := r.(type) {
	case *listenerv3.Listener:
		one.Listeners = append(one.Listeners, m)
	case *routev3.RouteConfiguration:
		one.Routes = append(one.Routes, m)
	case *clusterv3.Cluster:
		one.Clusters = append(one.Clusters, m)
	case *endpointv3.ClusterLoadAssignment:
		one.Endpoints = append(one.Endpoints, m)
	default:
		if vr, ok := r.(interface{ ValidateAll() error }); ok {
			if err := vr.ValidateAll(); err != nil {
				return fmt.Errorf("%s resource %q is invalid: %w", shortType(typeURL), cachev3.GetResourceName(r), err)
			}
		}
		return nil
	}
	return one.Validate()
}

// consistent checks that the resources form a closed set, as Envoy needs
// them to: every route configuration an HTTP connection manager names over
// RDS exists, every cluster a route or TCP proxy targets exists, and every
// EDS cluster has a load assignment. Envoy would otherwise wait forever for
// the missing resource (warming) or reject traffic to it.
//
// go-control-plane's Snapshot.Consistent is not used because it reports a
// false mismatch for the API listeners of proxyless gRPC clients, whose RDS
// names it does not see; this check follows references itself.
func consistent(r *translate.Resources) error {
	var result *multierror.Error
	routes := make(map[string]bool, len(r.Routes))
	for _, rc := range r.Routes {
		routes[rc.GetName()] = true
	}
	clusters := make(map[string]*clusterv3.Cluster, len(r.Clusters))
	for _, c := range r.Clusters {
		clusters[c.GetName()] = c
	}
	assignments := make(map[string]bool, len(r.Endpoints))
	for _, e := range r.Endpoints {
		assignments[e.GetClusterName()] = true
	}
	needCluster := func(where, name string) {
		if name != "" && clusters[name] == nil {
			result = multierror.Append(result, fmt.Errorf("%s refers to cluster %q, which does not exist", where, name))
		}
	}
	checkRouteConfig := func(where string, rc *routev3.RouteConfiguration) {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				action := rt.GetRoute()
				if action == nil {
					continue
				}
				at := fmt.Sprintf("%s virtual host %q", where, vh.GetName())
				needCluster(at, action.GetCluster())
				for _, wc := range action.GetWeightedClusters().GetClusters() {
					needCluster(at, wc.GetName())
				}
			}
		}
	}
	checkHCM := func(where string, hcm *hcmv3.HttpConnectionManager) {
		if rds := hcm.GetRds(); rds != nil {
			if !routes[rds.GetRouteConfigName()] {
				result = multierror.Append(result, fmt.Errorf("%s refers to route configuration %q, which does not exist", where, rds.GetRouteConfigName()))
			}
		}
		if rc := hcm.GetRouteConfig(); rc != nil {
			checkRouteConfig(where+" inline route configuration", rc)
		}
	}
	checkFilters := func(where string, filters []*listenerv3.Filter) {
		for _, f := range filters {
			tc := f.GetTypedConfig()
			if tc == nil {
				continue
			}
			switch {
			case tc.MessageIs((*hcmv3.HttpConnectionManager)(nil)):
				hcm := &hcmv3.HttpConnectionManager{}
				if err := tc.UnmarshalTo(hcm); err != nil {
					result = multierror.Append(result, fmt.Errorf("%s: HTTP connection manager does not decode: %w", where, err))
					continue
				}
				checkHCM(where, hcm)
			case tc.MessageIs((*tcpproxyv3.TcpProxy)(nil)):
				tp := &tcpproxyv3.TcpProxy{}
				if err := tc.UnmarshalTo(tp); err != nil {
					result = multierror.Append(result, fmt.Errorf("%s: TCP proxy does not decode: %w", where, err))
					continue
				}
				needCluster(where+" TCP proxy", tp.GetCluster())
				for _, wc := range tp.GetWeightedClusters().GetClusters() {
					needCluster(where+" TCP proxy", wc.GetName())
				}
			}
		}
	}
	for _, l := range r.Listeners {
		where := fmt.Sprintf("listener %q", l.GetName())
		if api := l.GetApiListener().GetApiListener(); api != nil {
			hcm := &hcmv3.HttpConnectionManager{}
			if err := api.UnmarshalTo(hcm); err != nil {
				result = multierror.Append(result, fmt.Errorf("%s: API listener is not an HTTP connection manager: %w", where, err))
			} else {
				checkHCM(where, hcm)
			}
		}
		chains := slices.Clone(l.GetFilterChains())
		if dc := l.GetDefaultFilterChain(); dc != nil {
			chains = append(chains, dc)
		}
		for _, fc := range chains {
			at := where
			if fc.GetName() != "" {
				at = fmt.Sprintf("%s filter chain %q", where, fc.GetName())
			}
			checkFilters(at, fc.GetFilters())
		}
	}
	for _, rc := range r.Routes {
		checkRouteConfig(fmt.Sprintf("route configuration %q", rc.GetName()), rc)
	}
	for _, c := range r.Clusters {
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		if !assignments[name] {
			result = multierror.Append(result, fmt.Errorf("EDS cluster %q has no cluster load assignment %q", c.GetName(), name))
		}
	}
	return result.ErrorOrNil()
}

// secretResources builds a proxy's SDS resources: its own certificate and
// key as "default", the trust bundle as "ROOTCA". These are the names
// translation references, and Istio's.
func secretResources(chainPEM, keyPEM, rootPEM []byte) map[string][]types.Resource {
	return map[string][]types.Resource{resourcev3.SecretType: {
		&tlsv3.Secret{
			Name: SecretDefault,
			Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inlineBytes(chainPEM),
				PrivateKey:       inlineBytes(keyPEM),
			}},
		},
		&tlsv3.Secret{
			Name: SecretRootCA,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inlineBytes(rootPEM),
			}},
		},
	}}
}

// Secret names served over SDS.
const (
	SecretDefault = "default"
	SecretRootCA  = "ROOTCA"
)

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
