package file

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	yaml "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsjson "sigs.k8s.io/json"

	"github.com/minimesh/minimesh/discovery"
	"github.com/minimesh/minimesh/discovery/convert"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// Options tune how manifests are read.
type Options struct {
	// DefaultNamespace is the namespace of namespaced objects whose
	// metadata names none, as `kubectl apply -n` would. Empty means "default".
	DefaultNamespace string
	// RootNamespace holds mesh-wide policy; empty means
	// policy.DefaultRootNamespace. Conflicts between mesh-wide policies
	// are decided when the snapshot is built, and it decides which
	// workloads a policy's selector may select, for the warning about a
	// selector that selects none.
	RootNamespace string
	// Observe is told of every change a Source sees in its directory,
	// when it sees it (see discovery.Observer). Build does not use it.
	Observe discovery.Observer
}

func (o Options) rootNamespace() string {
	if o.RootNamespace == "" {
		return policy.DefaultRootNamespace
	}
	return o.RootNamespace
}

func (o Options) defaultNamespace() string {
	if o.DefaultNamespace == "" {
		return "default"
	}
	return o.DefaultNamespace
}

// supportedKinds is the list shown when a document has a kind minimesh
// does not read.
const supportedKinds = "v1 Namespace, v1 Service, v1 Pod, discovery.k8s.io/v1 EndpointSlice, " +
	"security.istio.io/v1 (or v1beta1) PeerAuthentication, AuthorizationPolicy and RequestAuthentication, " +
	"networking.istio.io/v1 (or v1beta1, v1alpha3) DestinationRule"

// implicitNamespaces exist in every Kubernetes cluster, so objects in them
// need no Namespace document.
var implicitNamespaces = []string{"default", "kube-node-lease", "kube-public", "kube-system"}

// Build turns manifest files into one snapshot. It does no I/O and never
// fails: every problem (bad YAML, unknown kinds or fields, invalid values,
// duplicates) is recorded in Snapshot.Problems with its file and line, the
// offending object (or, for bad YAML, file) is skipped, and everything else
// loads. Files are read in path order, which decides which of two
// duplicates is kept.
func Build(files []File, opts Options) *model.Snapshot {
	files = slices.Clone(files)
	slices.SortStableFunc(files, func(a, b File) int { return cmp.Compare(a.Path, b.Path) })
	var docs []document
	var problems []model.Problem
	for _, f := range files {
		d, p := parseFile(f)
		if p != nil {
			if f.dir {
				p.Message += noManifestLoaded
			} else {
				p.Message += "; no object in this file was loaded"
			}
			problems = append(problems, *p)
			continue
		}
		docs = append(docs, d...)
	}
	return assemble(docs, problems, opts, nil)
}

// assemble builds a snapshot from parsed documents (in file order) plus
// problems already found about whole files. hist, when not nil, is what
// earlier builds served (see history); it is updated.
func assemble(docs []document, problems []model.Problem, opts Options, hist *history) *model.Snapshot {
	b := &builder{opts: opts, docs: docs, seen: map[string]policy.Location{}, problems: problems, hist: hist}
	for i := range docs {
		b.add(&docs[i])
	}
	b.restoreHeld()
	s := b.snapshot()
	if hist != nil {
		hist.commit()
	}
	return s
}

// builder collects objects of every kind before endpoints are derived,
// because a Service, its Pods and its EndpointSlices may come in any order.
type builder struct {
	opts       Options
	docs       []document                 // every document, in file order, for locate
	seen       map[string]policy.Location // "Kind/ns/name" -> where it was first defined
	namespaces []model.Namespace
	services   []*corev1.Service
	pods       []*corev1.Pod
	slices     []endpointSlice
	policies   policy.Set
	problems   []model.Problem
	// nsUses remembers objects that live in a namespace, to warn when the
	// namespace is declared nowhere (usually a typo).
	nsUses []nsUse

	// hist, when set, keeps the last valid version of refused objects in
	// force (see history); refused and unnamedDocs say what was refused,
	// held what was kept in its place.
	hist        *history
	refused     []obj
	unnamedDocs map[string]int // file -> line of its first document that cannot be named
	held        []model.Held
}

type nsUse struct {
	ns string
	o  obj
}

// endpointSlice remembers the document a slice came from, for warnings
// about it.
type endpointSlice struct {
	slice *discoveryv1.EndpointSlice
	doc   *document
}

// obj is the identity of the document being added, for problems.
type obj struct {
	d              *document
	kind, ns, name string
}

func (b *builder) report(o obj, sev policy.Severity, field string, line int, format string, args ...any) {
	if line == 0 {
		line = o.d.line
	}
	b.problems = append(b.problems, model.Problem{
		Severity: sev, Kind: o.kind, Namespace: o.ns, Name: o.name,
		Location: policy.Location{File: o.d.file, Line: line},
		Field:    field, Message: fmt.Sprintf(format, args...),
	})
}

func (b *builder) errorf(o obj, field string, format string, args ...any) {
	b.report(o, policy.SeverityError, field, o.d.ix.line(field), format, args...)
}

func (b *builder) warnf(o obj, field string, format string, args ...any) {
	b.report(o, policy.SeverityWarning, field, o.d.ix.line(field), format, args...)
}

// header is what every object has, read loosely so that a broken document
// can still be named in its problems.
type header struct {
	APIVersion any `json:"apiVersion"`
	Kind       any `json:"kind"`
	Metadata   any `json:"metadata"`
}

func (b *builder) add(d *document) {
	o := obj{d: d}
	if d.root != yaml.MappingNode {
		b.errorf(o, "", "a document must be a mapping with apiVersion, kind, metadata and spec, not a list or a single value")
		b.unnamed(o)
		return
	}
	if d.memo.hdr == nil {
		var h header
		_ = json.Unmarshal(d.memo.json, &h) // cannot fail on a JSON object; fields are checked below
		d.memo.hdr = h.identity()
	}
	id := *d.memo.hdr
	apiVersion, kind := id.apiVersion, id.kind
	o.kind, o.name, o.ns = kind, id.name, id.namespace
	clusterScoped := apiVersion == "v1" && kind == "Namespace"
	if o.ns == "" && !clusterScoped {
		o.ns = b.opts.defaultNamespace()
	}
	if clusterScoped {
		o.ns = ""
	}

	// Problems found while converting YAML (repeated keys, aliases that
	// loop, numbers JSON cannot hold) make the object ambiguous: skip it.
	if len(d.issues) > 0 {
		for _, is := range d.issues {
			b.report(o, policy.SeverityError, is.path, is.line, "%s", is.msg)
		}
		if id.missing || !supportedKind(apiVersion, kind) || !validIdentity(o, clusterScoped) {
			b.unnamed(o)
		} else {
			b.refuse(o)
		}
		return
	}
	switch {
	case id.missing:
		b.errorf(o, "", "every document needs apiVersion and kind (for example apiVersion: v1, kind: Service)")
		b.unnamed(o)
		return
	case apiVersion == "" || kind == "":
		b.errorf(o, "kind", "apiVersion and kind must be non-empty strings")
		b.unnamed(o)
		return
	}
	if !b.checkIdentity(o, clusterScoped) {
		b.unnamed(o)
		return
	}

	var restore func(*builder)
	switch {
	case apiVersion == "v1" && kind == "Namespace":
		restore = b.addNamespace(o)
	case apiVersion == "v1" && kind == "Service":
		restore = b.addService(o)
	case apiVersion == "v1" && kind == "Pod":
		restore = b.addPod(o)
	case apiVersion == "discovery.k8s.io/v1" && kind == "EndpointSlice":
		restore = b.addEndpointSlice(o)
	case policy.IsPolicyKind(apiVersion, kind):
		restore = b.addPolicy(o, apiVersion, kind)
	default:
		b.errorf(o, "kind", "%s %s is not supported; minimesh reads %s", apiVersion, kind, supportedKinds)
		b.unnamed(o)
		return
	}
	if restore == nil {
		b.refuse(o)
		return
	}
	b.served(o, restore)
}

// supportedKind reports whether minimesh reads apiVersion/kind.
func supportedKind(apiVersion, kind string) bool {
	switch {
	case apiVersion == "v1" && (kind == "Namespace" || kind == "Service" || kind == "Pod"),
		apiVersion == "discovery.k8s.io/v1" && kind == "EndpointSlice":
		return true
	}
	return policy.IsPolicyKind(apiVersion, kind)
}

// identity is what a document's header says of it, kept for every reload
// (the decoded header holds all of its metadata).
type identity struct {
	apiVersion, kind, name, namespace string // "" when absent or not a string
	missing                           bool   // no apiVersion or no kind
}

func (h header) identity() *identity {
	id := &identity{missing: h.APIVersion == nil || h.Kind == nil}
	id.apiVersion, _ = h.APIVersion.(string)
	id.kind, _ = h.Kind.(string)
	if md, ok := h.Metadata.(map[string]any); ok {
		id.name, _ = md["name"].(string)
		id.namespace, _ = md["namespace"].(string)
	}
	return id
}

// validIdentity is checkIdentity without reports.
func validIdentity(o obj, clusterScoped bool) bool {
	quiet := &builder{}
	return quiet.checkIdentity(o, clusterScoped)
}

// checkIdentity validates metadata.name and metadata.namespace, which every
// kind needs to be addressable, by the rules the API server applies (see
// nameRuleFor).
func (b *builder) checkIdentity(o obj, clusterScoped bool) bool {
	ok := true
	if o.name == "" {
		b.errorf(o, "metadata.name", "every object needs a name")
		ok = false
	} else if msg := nameRuleFor(o.d.memo.hdr.apiVersion, o.kind).check(o.kind+" name", o.name); msg != "" {
		b.errorf(o, "metadata.name", "%s", msg)
		ok = false
	}
	if !clusterScoped {
		if msg := dns1123Label.check("namespace name", o.ns); msg != "" {
			b.errorf(o, "metadata.namespace", "%s", msg)
			ok = false
		}
	}
	return ok
}

// claim records an accepted object and reports a duplicate. The first
// definition (in path order) wins, so a copy of a file never changes which
// version is in force.
func (b *builder) claim(o obj) bool {
	key := o.kind + "/" + o.ns + "/" + o.name
	here := policy.Location{File: o.d.file, Line: o.d.line}
	if first, dup := b.seen[key]; dup {
		b.report(o, policy.SeverityError, "", o.d.ix.line("metadata.name"),
			"already defined at %s; this copy is skipped (the first in path order wins)", first)
		return false
	}
	b.seen[key] = here
	return true
}

// maxTypeErrors bounds how many wrongly typed values of one object are
// reported; each costs a decode.
const maxTypeErrors = 10

// decodeStrict decodes a Kubernetes object as the API server would with
// fieldValidation=Strict: an unknown or repeated field is an error naming
// its path, a value of the wrong type is an error at its line. Every such
// problem in the object is reported, not only the first. It returns false
// when the object must be skipped.
func (b *builder) decodeStrict(o obj, into any, typeName string) bool {
	// A clean decode of this document is reused: a shallow copy, which
	// callers may change at the top level (they set the defaulted
	// namespace) but never deeper.
	if d := o.d.memo.decoded; d != nil {
		if reflect.TypeOf(d) != reflect.TypeOf(into) {
			// Its JSON is gone (see below); a document has one kind,
			// so this is a bug, reported rather than misreported.
			b.report(o, policy.SeverityError, "", o.d.line, "minimesh bug: the document was decoded as %T and is now wanted as %T; please report it", d, into)
			return false
		}
		reflect.ValueOf(into).Elem().Set(reflect.ValueOf(d).Elem())
		return true
	}
	if b.decodeStrictOnce(o, into, typeName) {
		copied := reflect.New(reflect.TypeOf(into).Elem())
		copied.Elem().Set(reflect.ValueOf(into).Elem())
		o.d.memo.decoded = copied.Interface()
		o.d.memo.node, o.d.memo.json = nil, nil
		o.d.ix.spans = nil
		return true
	}
	return false
}

func (b *builder) decodeStrictOnce(o obj, into any, typeName string) bool {
	data, ix := o.d.memo.json, o.d.ix
	var omit map[string]bool
	bad := false
	for range maxTypeErrors {
		strictErrs, err := sigsjson.UnmarshalStrict(data, into)
		if err == nil {
			for _, se := range strictErrs {
				path := ""
				var fe sigsjson.FieldError
				if errors.As(se, &fe) {
					path = fe.FieldPath()
				}
				msg := "unknown field (not part of " + typeName + "); check the spelling and indentation"
				if strings.HasPrefix(se.Error(), "duplicate field") {
					msg = "appears twice; remove one"
				}
				b.report(o, policy.SeverityError, path, ix.line(path), "%s", msg)
			}
			return !bad && len(strictErrs) == 0
		}
		bad = true
		// sigs.k8s.io/json does not export its type errors; encoding/json
		// gives the same verdict with the field and a byte offset.
		var te *json.UnmarshalTypeError
		if !errors.As(json.Unmarshal(data, freshOf(into)), &te) {
			b.report(o, policy.SeverityError, "", o.d.line, "%s", strings.TrimPrefix(err.Error(), "json: "))
			return false
		}
		sp, found := ix.find(te.Field, te.Offset, omit)
		if !found {
			b.report(o, policy.SeverityError, te.Field, o.d.line, "must be %s, not %s", describeType(te), describeValue(te.Value))
			return false
		}
		b.report(o, policy.SeverityError, sp.path, sp.line, "must be %s, not %s", describeType(te), describeValue(te.Value))
		// Write the bad value as null and decode again, to find the
		// problems after it too. Overwriting it in place with null and
		// spaces keeps every offset valid; a value too short for that
		// needs the JSON written anew.
		if omit == nil {
			omit = map[string]bool{}
		}
		omit[sp.path] = true
		if sp.end-sp.offset >= len("null") {
			data = slices.Clone(data)
			copy(data[sp.offset:sp.end], "null"+strings.Repeat(" ", sp.end-sp.offset-len("null")))
		} else {
			data, ix, _ = toJSON(o.d.memo.node, omit)
		}
		into = freshOf(into)
	}
	return false
}

// accept admits a namespaced object that passed validation (valid): it
// claims the object's name and notes its namespace. It returns false when
// the object must be skipped.
func (b *builder) accept(o obj, valid bool) bool {
	if !valid || !b.claim(o) {
		return false
	}
	b.useNamespace(o)
	return true
}

func (b *builder) useNamespace(o obj) {
	b.nsUses = append(b.nsUses, nsUse{ns: o.ns, o: o})
}

// problem is the warning for a use of a namespace declared nowhere.
func (u nsUse) problem() model.Problem {
	o := u.o
	return model.Problem{
		Severity: policy.SeverityWarning, Kind: o.kind, Namespace: o.ns, Name: o.name,
		Location: policy.Location{File: o.d.file, Line: o.d.ix.line("metadata.namespace")},
		Field:    "metadata.namespace",
		Message:  fmt.Sprintf("namespace %q is not declared by any Namespace document; check the spelling or add one", o.ns),
	}
}

// The add functions below admit one object of their kind, or report why
// not. They return how to add the admitted object to a builder (called
// once now, and again by a later build while a newer version of the
// object is refused), or nil when the object is refused.

func (b *builder) addNamespace(o obj) func(*builder) {
	var ns corev1.Namespace
	if !b.decodeStrict(o, &ns, "a v1 Namespace") || !b.checkLabels(o, ns.Labels) || !b.claim(o) {
		return nil
	}
	m := convert.Namespace(&ns)
	return func(b *builder) { b.namespaces = append(b.namespaces, m) }
}

func (b *builder) checkLabels(o obj, labels map[string]string) bool {
	ok := true
	for _, k := range sortedKeys(labels) {
		field := "metadata.labels." + k
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			b.errorf(o, field, "%q is not a valid label key: %s", k, strings.Join(errs, "; "))
			ok = false
		}
		if errs := validation.IsValidLabelValue(labels[k]); len(errs) > 0 {
			b.errorf(o, field, "%q is not a valid label value: %s", labels[k], strings.Join(errs, "; "))
			ok = false
		}
	}
	return ok
}

// admitChecked decodes o into v and admits it if check, which looks at
// what the document alone decides, finds nothing wrong. A document that
// passed is not checked again when its file is reloaded unchanged, so a
// check may report errors only: a warning from a check that passed would
// be shown on the first load and never again.
func admitChecked[T any](b *builder, o obj, v *T, typeName string, check func(obj, *T) bool) bool {
	if !b.decodeStrict(o, v, typeName) {
		return false
	}
	ok := o.d.memo.checked || check(o, v)
	o.d.memo.checked = ok
	return b.accept(o, ok)
}

func (b *builder) addService(o obj) func(*builder) {
	var s corev1.Service
	if !admitChecked(b, o, &s, "a v1 Service", b.checkService) {
		return nil
	}
	s.Namespace, s.Name = o.ns, o.name // the namespace is defaulted when the manifest names none
	return func(b *builder) { b.services = append(b.services, &s) }
}

// checkService reports every problem of one Service that its document
// alone decides, and whether there was none.
func (b *builder) checkService(o obj, s *corev1.Service) bool {
	ok := b.checkLabels(o, s.Labels)
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		b.errorf(o, "spec.type", "type ExternalName is not supported; use ClusterIP (the default), NodePort or LoadBalancer")
		ok = false
	}
	if ip := s.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		if _, err := netip.ParseAddr(ip); err != nil {
			b.errorf(o, "spec.clusterIP", "%q is not an IP address (or \"None\" for a headless service)", ip)
			ok = false
		}
	}
	if len(s.Spec.Ports) == 0 {
		b.errorf(o, "spec.ports", "a service needs at least one port")
		ok = false
	}
	type portKey struct {
		port  int32
		proto string
	}
	ports, names := map[portKey]bool{}, map[string]bool{}
	for i, p := range s.Spec.Ports {
		field := fmt.Sprintf("spec.ports[%d]", i)
		proto := cmp.Or(string(p.Protocol), string(corev1.ProtocolTCP))
		if !validPort(p.Port) {
			b.errorf(o, field+".port", "%d is not a port number from 1 to 65535", p.Port)
			ok = false
		}
		switch proto {
		case "TCP", "UDP", "SCTP":
		default:
			b.errorf(o, field+".protocol", "%q is not one of TCP, UDP, SCTP", p.Protocol)
			ok = false
		}
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			b.errorf(o, field+".name", "a service with more than one port must name each port")
			ok = false
		}
		if p.Name != "" {
			if errs := validation.IsDNS1123Label(p.Name); len(errs) > 0 {
				b.errorf(o, field+".name", "%q is not a valid port name: %s", p.Name, strings.Join(errs, "; "))
				ok = false
			}
			if names[p.Name] {
				b.errorf(o, field+".name", "port name %q is used twice", p.Name)
				ok = false
			}
			names[p.Name] = true
		}
		k := portKey{p.Port, proto}
		if ports[k] {
			b.errorf(o, field+".port", "port %d/%s is listed twice", p.Port, proto)
			ok = false
		}
		ports[k] = true
		// An unset targetPort (0 and "") is fine: convert.Service defaults it to the port.
		switch {
		case p.TargetPort.StrVal != "":
			if errs := validation.IsValidPortName(p.TargetPort.StrVal); len(errs) > 0 {
				b.errorf(o, field+".targetPort", "%q is neither a port number nor a valid container port name: %s",
					p.TargetPort.StrVal, strings.Join(errs, "; "))
				ok = false
			}
		case p.TargetPort.IntVal != 0:
			if !validPort(p.TargetPort.IntVal) {
				b.errorf(o, field+".targetPort", "%d is not a port number from 1 to 65535", p.TargetPort.IntVal)
				ok = false
			}
		}
	}
	return ok
}

func (b *builder) addPod(o obj) func(*builder) {
	var p corev1.Pod
	if !admitChecked(b, o, &p, "a v1 Pod", b.checkPod) {
		return nil
	}
	p.Namespace, p.Name = o.ns, o.name // the namespace is defaulted when the manifest names none
	return func(b *builder) { b.pods = append(b.pods, &p) }
}

// checkPod reports every problem of one Pod that its document alone
// decides, and whether there was none.
func (b *builder) checkPod(o obj, p *corev1.Pod) bool {
	ok := b.checkLabels(o, p.Labels)
	sa := convert.ServiceAccount(p)
	if errs := validation.IsDNS1123Subdomain(sa); len(errs) > 0 {
		b.errorf(o, "spec.serviceAccountName", "%q is not a valid service account name: %s", sa, strings.Join(errs, "; "))
		ok = false
	}
	if ip := p.Status.PodIP; ip != "" {
		if _, err := netip.ParseAddr(ip); err != nil {
			b.errorf(o, "status.podIP", "%q is not an IP address", ip)
			ok = false
		}
	}
	if len(p.Spec.Containers) == 0 {
		b.errorf(o, "spec.containers", "a pod needs at least one container")
		ok = false
	}
	for i, c := range p.Spec.Containers {
		for j, cp := range c.Ports {
			field := fmt.Sprintf("spec.containers[%d].ports[%d]", i, j)
			if !validPort(cp.ContainerPort) {
				b.errorf(o, field+".containerPort", "%d is not a port number from 1 to 65535", cp.ContainerPort)
				ok = false
			}
			if cp.Name != "" {
				if errs := validation.IsValidPortName(cp.Name); len(errs) > 0 {
					b.errorf(o, field+".name", "%q is not a valid port name: %s", cp.Name, strings.Join(errs, "; "))
					ok = false
				}
			}
		}
	}
	return ok
}

func (b *builder) addEndpointSlice(o obj) func(*builder) {
	var s discoveryv1.EndpointSlice
	if !b.decodeStrict(o, &s, "a discovery.k8s.io/v1 EndpointSlice") {
		return nil
	}
	ok := b.checkLabels(o, s.Labels)
	if s.Labels[discoveryv1.LabelServiceName] == "" {
		b.errorf(o, "metadata.labels", "an EndpointSlice needs the label %s naming its service", discoveryv1.LabelServiceName)
		ok = false
	}
	switch s.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
	case discoveryv1.AddressTypeFQDN:
		b.errorf(o, "addressType", "addressType FQDN is not supported; use IPv4 or IPv6")
		ok = false
	default:
		b.errorf(o, "addressType", "%q is not one of IPv4, IPv6", s.AddressType)
		ok = false
	}
	for i, e := range s.Endpoints {
		if len(e.Addresses) == 0 {
			b.errorf(o, fmt.Sprintf("endpoints[%d].addresses", i), "an endpoint needs at least one address")
			ok = false
		}
		for j, a := range e.Addresses {
			ip, err := netip.ParseAddr(a)
			if err == nil && (ip.Is4() != (s.AddressType == discoveryv1.AddressTypeIPv4)) {
				err = fmt.Errorf("wrong family")
			}
			if err != nil {
				b.errorf(o, fmt.Sprintf("endpoints[%d].addresses[%d]", i, j), "%q is not an %s address", a, s.AddressType)
				ok = false
			}
		}
		if r := e.TargetRef; r != nil && r.Kind != "" && r.Kind != "Pod" {
			b.warnf(o, fmt.Sprintf("endpoints[%d].targetRef.kind", i),
				"only Pod targets carry identity; this endpoint is treated as outside the mesh")
		}
	}
	for i, p := range s.Ports {
		if p.Port != nil && !validPort(*p.Port) {
			b.errorf(o, fmt.Sprintf("ports[%d].port", i), "%d is not a port number from 1 to 65535", *p.Port)
			ok = false
		}
	}
	if !b.accept(o, ok) {
		return nil
	}
	s.Namespace = o.ns // defaulted when the manifest names none
	es := endpointSlice{slice: &s, doc: o.d}
	return func(b *builder) { b.slices = append(b.slices, es) }
}

// policyObject is the envelope of an Istio custom resource. Its spec is
// decoded by the policy package.
type policyObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       json.RawMessage   `json:"spec"`
	Status     json.RawMessage   `json:"status"`
}

func (b *builder) addPolicy(o obj, apiVersion, kind string) func(*builder) {
	var env policyObject
	if !b.decodeStrict(o, &env, "an Istio "+kind) || !b.checkLabels(o, env.Metadata.Labels) {
		return nil
	}
	if len(env.Status) > 0 {
		b.warnf(o, "status", "status is written by a control plane, not read from manifests; it is ignored")
	}
	meta := policy.Meta{
		Kind: kind, Namespace: o.ns, Name: o.name,
		CreationTimestamp: env.Metadata.CreationTimestamp.Time,
		Origin:            policy.Location{File: o.d.file, Line: o.d.line},
		Annotations:       env.Metadata.Annotations,
	}
	spec := []byte(env.Spec)
	if len(spec) == 0 {
		spec = []byte("{}") // a missing spec is an empty one, as in Kubernetes
	}
	p, problems := policy.Decode(apiVersion, kind, meta, spec)
	for _, pr := range problems {
		if pr.Location.File == "" {
			pr.Location.File = o.d.file
		}
		if pr.Field != "" {
			pr.Location.Line = o.d.ix.lineUnder("spec.", pr.Field)
		} else if pr.Location.Line == 0 {
			pr.Location.Line = o.d.line
		}
		b.problems = append(b.problems, pr)
	}
	if p == nil || problems.HasErrors() || !b.claim(o) {
		return nil
	}
	p.GetMeta().Admitted = b.firstServed(o)
	return func(b *builder) { b.policies.Add(p) }
}

func (b *builder) snapshot() *model.Snapshot {
	// Empty lists are empty, not absent, exactly as the Kubernetes source
	// emits them, so one mesh gives deeply equal snapshots from either.
	s := &model.Snapshot{
		Namespaces: append([]model.Namespace{}, b.namespaces...),
		Services:   make([]model.Service, 0, len(b.services)),
		Workloads:  make([]model.Workload, 0, len(b.pods)),
		Policies:   b.policies,
	}
	declared := map[string]bool{}
	for _, ns := range b.namespaces {
		declared[ns.Name] = true
	}
	for _, u := range b.nsUses {
		if !declared[u.ns] && !slices.Contains(implicitNamespaces, u.ns) {
			b.problems = append(b.problems, u.problem())
		}
	}
	s.Held = b.held
	workloads := make([]policy.NamedWorkload, 0, len(b.pods))
	for _, p := range b.pods {
		workloads = append(workloads, policy.NamedWorkload{Name: p.Name, Workload: policy.Workload{Namespace: p.Namespace, Labels: p.Labels}})
	}
	var conflicts policy.Problems
	s.Policies.PeerAuthentications, conflicts = policy.ResolvePeerAuthenticationConflicts(
		b.opts.rootNamespace(), s.Policies.PeerAuthentications, workloads)
	b.problems = append(b.problems, conflicts...)
	for _, svc := range b.services {
		s.Services = append(s.Services, convert.Service(svc))
	}
	for _, p := range b.pods {
		s.Workloads = append(s.Workloads, convert.Workload(p, convertOptions))
	}
	var warnings []model.Problem
	s.Endpoints, warnings = deriveEndpoints(b.services, b.pods, b.slices)
	b.problems = append(b.problems, warnings...)
	raw := make([]*discoveryv1.EndpointSlice, len(b.slices))
	for i, sl := range b.slices {
		raw[i] = sl.slice
	}
	b.problems = append(b.problems, b.locate(convert.Warnings(b.namespaces, b.services, b.pods, raw, &b.policies, b.opts.rootNamespace(), convertOptions))...)
	s.Sort()
	// Problems read best in file order; within a line, keep the order in
	// which they were found (the order of the fields).
	slices.SortStableFunc(b.problems, func(x, y model.Problem) int {
		return cmp.Or(cmp.Compare(x.Location.File, y.Location.File), cmp.Compare(x.Location.Line, y.Location.Line))
	})
	s.Problems = b.problems
	return s
}

// freshOf returns a new zero value of the type into points to.
func freshOf(into any) any { return reflect.New(reflect.TypeOf(into).Elem()).Interface() }

// describeType names the Go type a JSON value should have had in words a
// manifest author knows.
func describeType(te *json.UnmarshalTypeError) string {
	switch te.Type.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	default:
		return te.Type.String()
	}
}

// describeValue turns encoding/json's name for a value ("string",
// "number -5", "array") into words.
func describeValue(v string) string {
	switch v {
	case "array":
		return "a list"
	case "object":
		return "a mapping"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	}
	return v
}

func validPort(p int32) bool { return p >= 1 && p <= 65535 }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
