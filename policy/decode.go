package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// API groups and the versions minimesh accepts, exactly those Istio serves.
const (
	GroupSecurity   = "security.istio.io"
	GroupNetworking = "networking.istio.io"
)

// acceptedVersions maps each kind to the apiVersions Decode accepts for it.
var acceptedVersions = map[string][]string{
	KindPeerAuthentication:    {GroupSecurity + "/v1", GroupSecurity + "/v1beta1"},
	KindAuthorizationPolicy:   {GroupSecurity + "/v1", GroupSecurity + "/v1beta1"},
	KindRequestAuthentication: {GroupSecurity + "/v1", GroupSecurity + "/v1beta1"},
	KindDestinationRule:       {GroupNetworking + "/v1", GroupNetworking + "/v1beta1", GroupNetworking + "/v1alpha3"},
}

// IsPolicyKind reports whether apiVersion/kind belongs to this package: the
// group is security.istio.io or networking.istio.io and the kind is one of
// the four policy kinds. The version is not checked here, so a source routes
// a document with a wrong version to Decode, which then explains which
// versions are accepted instead of the document being dropped as unknown.
func IsPolicyKind(apiVersion, kind string) bool {
	if _, ok := acceptedVersions[kind]; !ok {
		return false
	}
	group, _, _ := strings.Cut(apiVersion, "/")
	return group == GroupSecurity || group == GroupNetworking
}

// Decode parses the spec (JSON; callers convert YAML) of one policy object
// of the given apiVersion/kind, strictly, and validates it. meta carries
// kind, namespace, name, creationTimestamp and origin (file:line) filled by
// the caller; its Kind is set from kind. It returns the object (nil if any
// error) and every problem found (errors and warnings), all at once.
//
// Strict means: an unknown field is an error naming its full path and the
// fields allowed there, and a value of the wrong JSON type is an error
// naming its path. Such values are dropped before validation, so one
// mistake is reported once rather than again as a missing field. An empty
// or null spec is an empty object (for an AuthorizationPolicy that is
// "deny all" for the selected workloads).
func Decode(apiVersion, kind string, meta Meta, spec []byte) (Object, Problems) {
	meta.Kind = kind
	versions, ok := acceptedVersions[kind]
	if !ok {
		return nil, Problems{errorf(&meta, "kind", "%q is not a policy kind minimesh reads; use one of %s",
			kind, strings.Join(policyKinds(), ", "))}
	}
	if !slices.Contains(versions, apiVersion) {
		return nil, Problems{errorf(&meta, "apiVersion", "%q is not accepted for %s; use %s",
			apiVersion, kind, orList(versions))}
	}

	var obj Object
	var target any
	switch kind {
	case KindPeerAuthentication:
		o := &PeerAuthentication{Meta: meta}
		obj, target = o, &o.Spec
	case KindDestinationRule:
		o := &DestinationRule{Meta: meta}
		obj, target = o, &o.Spec
	case KindAuthorizationPolicy:
		o := &AuthorizationPolicy{Meta: meta}
		obj, target = o, &o.Spec
	case KindRequestAuthentication:
		o := &RequestAuthentication{Meta: meta}
		obj, target = o, &o.Spec
	}

	problems, bad := decodeStrict(&meta, spec, target)
	if bad.contains("spec") {
		// The spec itself is unusable; nothing more to say about it.
		return nil, problems
	}
	for _, p := range Validate(obj) {
		if !bad.covers(p.Field) {
			problems = append(problems, p)
		}
	}
	problems = append(problems, decodeAnnotations(obj)...)
	if problems.HasErrors() {
		return nil, problems
	}
	normalize(obj)
	return obj, problems
}

// AnnotationDryRun is Istio's annotation that puts an AuthorizationPolicy
// in dry-run mode: evaluated and recorded, never enforced.
const AnnotationDryRun = "istio.io/dry-run"

// decodeAnnotations turns the annotations minimesh acts on into typed
// fields. Istio reads istio.io/dry-run with strconv.ParseBool and enforces
// the policy when the value does not parse; minimesh refuses such a value
// instead, since a policy meant as a trial that starts denying traffic is
// the one mistake a dry run exists to prevent.
func decodeAnnotations(obj Object) Problems {
	m := obj.GetMeta()
	v, ok := m.Annotations[AnnotationDryRun]
	if !ok {
		return nil
	}
	field := "metadata.annotations." + AnnotationDryRun
	ap, isAuthz := obj.(*AuthorizationPolicy)
	if !isAuthz {
		return Problems{warnf(m, field, "is read only on an AuthorizationPolicy (as in Istio); this %s is enforced", m.Kind)}
	}
	switch v {
	case "true":
		ap.DryRun = true
	case "false":
	default:
		return Problems{errorf(m, field, "%q is not one of \"true\", \"false\"", v)}
	}
	return nil
}

// Validate checks one decoded object against every field rule minimesh
// enforces and returns all problems found. It does not stop at the first.
func Validate(obj Object) Problems {
	c := &checker{m: obj.GetMeta()}
	c.meta()
	switch o := obj.(type) {
	case *PeerAuthentication:
		c.peerAuthentication(&o.Spec)
	case *DestinationRule:
		c.destinationRule(&o.Spec)
	case *AuthorizationPolicy:
		c.authorizationPolicy(&o.Spec)
	case *RequestAuthentication:
		c.requestAuthentication(&o.Spec)
	default:
		c.errf("kind", "%T is not a policy type", obj)
	}
	return c.ps
}

// Add appends obj to the slice for its kind. The caller sorts the Set when
// it has added everything (see Sort).
func (s *Set) Add(obj Object) {
	switch o := obj.(type) {
	case *PeerAuthentication:
		s.PeerAuthentications = append(s.PeerAuthentications, o)
	case *DestinationRule:
		s.DestinationRules = append(s.DestinationRules, o)
	case *AuthorizationPolicy:
		s.AuthorizationPolicies = append(s.AuthorizationPolicies, o)
	case *RequestAuthentication:
		s.RequestAuthentications = append(s.RequestAuthentications, o)
	}
}

// normalize fills Istio's defaults that the YAML may leave out, so callers
// never see an empty enum.
func normalize(obj Object) {
	switch o := obj.(type) {
	case *PeerAuthentication:
		if o.Spec.MTLS != nil && o.Spec.MTLS.Mode == "" {
			o.Spec.MTLS.Mode = ModeUnset
		}
		for port, m := range o.Spec.PortLevelMTLS {
			if m.Mode == "" {
				o.Spec.PortLevelMTLS[port] = MutualTLS{Mode: ModeUnset}
			}
		}
	case *DestinationRule:
		if tp := o.Spec.TrafficPolicy; tp != nil {
			if tp.TLS != nil && tp.TLS.Mode == "" {
				tp.TLS.Mode = TLSDisable
			}
			for i := range tp.PortLevelSettings {
				if t := tp.PortLevelSettings[i].TLS; t != nil && t.Mode == "" {
					t.Mode = TLSDisable
				}
			}
		}
	}
}

func policyKinds() []string {
	kinds := make([]string, 0, len(acceptedVersions))
	for k := range acceptedVersions {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	return kinds
}

// orList renders "a", "a or b", "a, b or c".
func orList(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	default:
		return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
	}
}

// ---------------------------------------------------------------------------
// Strict decoding

// badPaths are field paths whose value was dropped because it had the wrong
// type. Validation problems at or below them are suppressed.
type badPaths []string

func (b badPaths) contains(path string) bool { return slices.Contains(b, path) }

// covers reports whether field is one of the bad paths or lies below one.
func (b badPaths) covers(field string) bool {
	for _, p := range b {
		if field == p || strings.HasPrefix(field, p+".") || strings.HasPrefix(field, p+"[") {
			return true
		}
	}
	return false
}

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// decodeStrict decodes spec into target (a pointer to a spec struct),
// reporting unknown fields and type mismatches with their paths. Bad values
// are removed from the input first, so the rest still decodes and can be
// validated.
func decodeStrict(m *Meta, spec []byte, target any) (Problems, badPaths) {
	w := &walker{m: m}
	if len(bytes.TrimSpace(spec)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		w.bad("spec", "is not valid JSON: %v", err)
		return w.ps, w.badPaths
	}
	if dec.More() {
		w.bad("spec", "is not valid JSON: unexpected data after the object")
		return w.ps, w.badPaths
	}
	if raw == nil {
		return nil, nil
	}
	cleaned, ok := w.clean("spec", reflect.TypeOf(target).Elem(), raw)
	if !ok {
		return w.ps, w.badPaths
	}
	buf, err := json.Marshal(cleaned)
	if err == nil {
		err = json.Unmarshal(buf, target)
	}
	if err != nil {
		// clean only keeps values of the right type, so this is a bug in
		// minimesh rather than in the user's input.
		w.bad("spec", "could not be decoded after checking (please report this as a minimesh bug): %v", err)
	}
	return w.ps, w.badPaths
}

type walker struct {
	m        *Meta
	ps       Problems
	badPaths badPaths
}

func (w *walker) bad(path, format string, args ...any) {
	w.ps = append(w.ps, errorf(w.m, path, format, args...))
	w.badPaths = append(w.badPaths, path)
}

// clean returns v with unknown fields and mistyped values removed, and
// false when v itself cannot be used as a t. JSON null means "not set" and
// is dropped silently.
func (w *walker) clean(path string, t reflect.Type, v any) (any, bool) {
	if v == nil {
		return nil, false
	}
	if t == rawMessageType {
		return v, true
	}
	switch t.Kind() {
	case reflect.Pointer:
		return w.clean(path, t.Elem(), v)
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			w.bad(path, "must be an object, not %s", jsonTypeName(v))
			return nil, false
		}
		fields, names := structFields(t)
		out := make(map[string]any, len(obj))
		for _, k := range sortedKeys(obj) {
			child := path + "." + k
			f, known := fields[k]
			if !known {
				msg := "unknown field; allowed: " + strings.Join(names, ", ")
				if i := slices.IndexFunc(names, func(n string) bool { return strings.EqualFold(n, k) }); i >= 0 {
					msg += fmt.Sprintf(" (names are case-sensitive: did you mean %q?)", names[i])
				}
				w.ps = append(w.ps, errorf(w.m, child, "%s", msg))
				continue
			}
			if cv, ok := w.clean(child, f.Type, obj[k]); ok {
				out[k] = cv
			}
		}
		return out, true
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			w.bad(path, "must be a list, not %s", jsonTypeName(v))
			return nil, false
		}
		out := make([]any, len(arr))
		for i, e := range arr {
			child := fmt.Sprintf("%s[%d]", path, i)
			if e == nil {
				w.bad(child, "is empty (null); remove the empty list item or fill it in")
			}
			cv, ok := w.clean(child, t.Elem(), e)
			if !ok {
				// Keep the index so later elements keep their paths; the
				// zero value's own problems are suppressed via badPaths.
				cv = zeroJSON(t.Elem())
			}
			out[i] = cv
		}
		return out, true
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			w.bad(path, "must be an object, not %s", jsonTypeName(v))
			return nil, false
		}
		out := make(map[string]any, len(obj))
		for _, k := range sortedKeys(obj) {
			child := path + "[" + k + "]"
			if isUnsigned(t.Key().Kind()) {
				if _, err := strconv.ParseUint(k, 10, t.Key().Bits()); err != nil {
					w.bad(child, "key %q is not a port number", k)
					continue
				}
			}
			if cv, ok := w.clean(child, t.Elem(), obj[k]); ok {
				out[k] = cv
			}
		}
		return out, true
	case reflect.String:
		if _, ok := v.(string); !ok {
			w.bad(path, "must be a string, not %s (quote it)", jsonTypeName(v))
			return nil, false
		}
		return v, true
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			w.bad(path, "must be true or false, not %s", jsonTypeName(v))
			return nil, false
		}
		return v, true
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			w.bad(path, "must be a number, not %s", jsonTypeName(v))
			return nil, false
		}
		if _, err := strconv.ParseUint(n.String(), 10, t.Bits()); err != nil {
			w.bad(path, "%s is not a whole number from 0 to %d", n, uint64(math.MaxUint64)>>(64-t.Bits()))
			return nil, false
		}
		return v, true
	default:
		// Every spec type is built from the kinds above; reaching here is a
		// minimesh bug, reported rather than panicking.
		w.bad(path, "has a type minimesh cannot decode (%s); please report this as a minimesh bug", t)
		return nil, false
	}
}

func isUnsigned(k reflect.Kind) bool {
	return k == reflect.Uint8 || k == reflect.Uint16 || k == reflect.Uint32 || k == reflect.Uint64
}

// zeroJSON is the JSON value that decodes to t's zero value.
func zeroJSON(t reflect.Type) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == rawMessageType {
			return nil
		}
		return map[string]any{}
	case reflect.String:
		return ""
	case reflect.Bool:
		return false
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return json.Number("0")
	default:
		return nil
	}
}

// structFields maps each JSON field name of t to its struct field, and
// lists the names in declaration order for "allowed:" messages.
func structFields(t reflect.Type) (map[string]reflect.StructField, []string) {
	fields := make(map[string]reflect.StructField, t.NumField())
	var names []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f
		names = append(names, name)
	}
	return fields, names
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func jsonTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "true/false"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}
