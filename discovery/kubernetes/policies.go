package kubernetes

import (
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// Event reasons recorded on policy objects.
const (
	// ReasonInvalidPolicy: the object was rejected and is not in force.
	ReasonInvalidPolicy = "InvalidPolicy"
	// ReasonPolicyWarning: the object is in force, but part of it is
	// ignored or questionable.
	ReasonPolicyWarning = "PolicyWarning"
)

// maxEventMessage keeps event messages under the API server's limit (1 KiB
// for core/v1 Events' note) with room to spare.
const maxEventMessage = 1000

// policyKind is one Istio custom resource kind minimesh watches.
type policyKind struct {
	kind string
	gvr  schema.GroupVersionResource
}

// policyKinds are read at their storage version, v1; the API server
// converts objects written as v1beta1 or v1alpha3.
var policyKinds = []policyKind{
	{policy.KindPeerAuthentication, schema.GroupVersionResource{Group: policy.GroupSecurity, Version: "v1", Resource: "peerauthentications"}},
	{policy.KindAuthorizationPolicy, schema.GroupVersionResource{Group: policy.GroupSecurity, Version: "v1", Resource: "authorizationpolicies"}},
	{policy.KindRequestAuthentication, schema.GroupVersionResource{Group: policy.GroupSecurity, Version: "v1", Resource: "requestauthentications"}},
	{policy.KindDestinationRule, schema.GroupVersionResource{Group: policy.GroupNetworking, Version: "v1", Resource: "destinationrules"}},
}

// decodeCache remembers the decoded form of each policy object by UID and
// resourceVersion. Only the snapshot loop uses it, so it needs no lock. It
// makes decoding (and the Event, log line and metric for a bad object)
// happen once per version of an object, not once per snapshot.
//
// It also keeps each object's last valid version: when an edit makes an
// object invalid, that version stays in force (a typo never removes a
// STRICT policy or a DENY rule); only deleting the object removes it. The
// history lives as long as the object's UID, so a deleted and re-created
// object starts afresh, and a restarted meshd knows only what the API
// server holds (the validating webhook keeps invalid versions out of it).
type decodeCache struct {
	entries map[types.UID]cacheEntry
	// onDecoded is called for each newly decoded version, with the
	// version held in its place when it is invalid.
	onDecoded func(u *unstructured.Unstructured, d decoded)
}

type cacheEntry struct {
	resourceVersion string
	d               decoded
	// good is the last valid version, goodVersion its resourceVersion,
	// admitted when the object was first valid.
	good        policy.Object
	goodVersion string
	admitted    time.Time
	seen        bool // during the current sweep
}

func newDecodeCache(onDecoded func(*unstructured.Unstructured, decoded)) *decodeCache {
	return &decodeCache{entries: map[types.UID]cacheEntry{}, onDecoded: onDecoded}
}

// decodeAll decodes every object, reusing earlier results for unchanged
// versions, serving the last valid version of objects whose newest version
// is invalid, and forgetting objects that are gone. now is when objects
// seen valid for the first time are admitted (policy.Meta.Admitted).
func (c *decodeCache) decodeAll(objs []*unstructured.Unstructured, now time.Time) []decoded {
	out := make([]decoded, 0, len(objs))
	for _, u := range objs {
		e, ok := c.entries[u.GetUID()]
		if !ok || e.resourceVersion != u.GetResourceVersion() {
			e.resourceVersion = u.GetResourceVersion()
			e.d = decodeObject(u)
			if e.d.obj != nil {
				if e.admitted.IsZero() {
					e.admitted = now
				}
				e.d.obj.GetMeta().Admitted = e.admitted
				e.good, e.goodVersion = e.d.obj, e.resourceVersion
			} else if e.good != nil {
				e.d.held = &model.Held{
					Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName(),
					Refused: "resourceVersion " + e.resourceVersion,
					Serving: "resourceVersion " + e.goodVersion,
					Reason:  "this version is invalid: " + firstError(e.d.problems),
				}
				e.d.obj = e.good
				e.d.problems = append(e.d.problems, policy.Problem{
					Severity: policy.SeverityWarning, Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName(),
					Message: "resourceVersion " + e.resourceVersion + " is refused; the last valid version, resourceVersion " +
						e.goodVersion + ", stays in force until the object is fixed or deleted",
				})
			}
			if c.onDecoded != nil {
				c.onDecoded(u, e.d)
			}
		}
		e.seen = true
		c.entries[u.GetUID()] = e
		out = append(out, e.d)
	}
	for uid, e := range c.entries {
		if !e.seen {
			delete(c.entries, uid)
			continue
		}
		e.seen = false
		c.entries[uid] = e
	}
	return out
}

// firstError is the first error of ps, as "field: message".
func firstError(ps policy.Problems) string {
	for _, p := range ps {
		if p.Severity == policy.SeverityError {
			if p.Field != "" {
				return p.Field + ": " + p.Message
			}
			return p.Message
		}
	}
	return "see the object's problems"
}

// DecodePolicy decodes one policy custom resource exactly as the source
// does, so that the admission webhook admits precisely what the source
// accepts: the object (nil when any problem is an error) and every
// problem. u must be one of the four policy kinds (see
// policy.IsPolicyKind); any other kind is reported as not a policy kind.
func DecodePolicy(u *unstructured.Unstructured) (policy.Object, policy.Problems) {
	d := decodeObject(u)
	return d.obj, d.problems
}

// decodeObject turns one custom resource into a policy object. Everything
// but the spec comes from the object's metadata; Kubernetes objects have no
// file location.
func decodeObject(u *unstructured.Unstructured) decoded {
	meta := policy.Meta{
		Namespace:         u.GetNamespace(),
		Name:              u.GetName(),
		CreationTimestamp: u.GetCreationTimestamp().UTC(),
		Annotations:       u.GetAnnotations(),
	}
	var spec []byte
	if raw, ok := u.Object["spec"]; ok && raw != nil {
		b, err := json.Marshal(raw)
		if err != nil {
			// Unstructured content came from JSON, so this cannot happen;
			// report it as a problem all the same rather than panic.
			meta.Kind = u.GetKind()
			return decoded{problems: policy.Problems{{
				Severity: policy.SeverityError, Kind: u.GetKind(), Namespace: meta.Namespace, Name: meta.Name,
				Field: "spec", Message: "cannot be encoded as JSON: " + err.Error(),
			}}}
		}
		spec = b
	}
	obj, problems := policy.Decode(u.GetAPIVersion(), u.GetKind(), meta, spec)
	return decoded{obj: obj, problems: problems}
}

// reporter tells a user about a policy object's problems where a
// Kubernetes user looks: an Event on the object (`kubectl describe`), a log
// line, and a metric.
type reporter struct {
	log      *slog.Logger
	recorder record.EventRecorder
	count    func(kind string)
	// conflicts are the conflict problems reported so far, so that each
	// is reported once while it lasts, not once per snapshot.
	conflicts map[policy.Problem]bool
}

// ReasonPolicyConflict: the object competes with an older policy at the
// same scope and is not (or not wholly) in force.
const ReasonPolicyConflict = "PolicyConflict"

// reportConflicts records an Event and a log line for each conflict not
// reported before, and forgets conflicts that ended.
func (r *reporter) reportConflicts(ps policy.Problems) {
	now := map[policy.Problem]bool{}
	for _, p := range ps {
		now[p] = true
		if r.conflicts[p] {
			continue
		}
		r.log.Warn("conflicting policies", "kind", p.Kind, "namespace", p.Namespace, "name", p.Name, "problem", p.Message)
		if r.recorder != nil {
			ref := &corev1.ObjectReference{APIVersion: policy.GroupSecurity + "/v1", Kind: p.Kind, Namespace: p.Namespace, Name: p.Name}
			r.recorder.Event(ref, corev1.EventTypeWarning, ReasonPolicyConflict, eventMessage("", policy.Problems{p}, p.Severity))
		}
	}
	r.conflicts = now
}

func (r *reporter) report(u *unstructured.Unstructured, d decoded) {
	if len(d.problems) == 0 {
		return
	}
	ref := &corev1.ObjectReference{
		APIVersion: u.GetAPIVersion(), Kind: u.GetKind(),
		Namespace: u.GetNamespace(), Name: u.GetName(),
		UID: u.GetUID(), ResourceVersion: u.GetResourceVersion(),
	}
	attrs := []any{"kind", u.GetKind(), "namespace", u.GetNamespace(), "name", u.GetName(),
		"resourceVersion", u.GetResourceVersion()}
	if d.held != nil {
		msg := eventMessage("this version is refused and "+d.held.Serving+", the last valid one, stays in force: ",
			d.problems, policy.SeverityError)
		r.log.Warn("refusing an invalid version of a policy; its last valid version stays in force",
			append(attrs, "serving", d.held.Serving, "problems", problemStrings(d.problems))...)
		if r.recorder != nil {
			r.recorder.Event(ref, corev1.EventTypeWarning, ReasonInvalidPolicy, msg)
		}
		if r.count != nil {
			r.count(u.GetKind())
		}
		return
	}
	if d.obj == nil {
		msg := eventMessage("policy is not applied: ", d.problems, policy.SeverityError)
		r.log.Warn("skipping invalid policy", append(attrs, "problems", problemStrings(d.problems))...)
		if r.recorder != nil {
			r.recorder.Event(ref, corev1.EventTypeWarning, ReasonInvalidPolicy, msg)
		}
		if r.count != nil {
			r.count(u.GetKind())
		}
		return
	}
	msg := eventMessage("policy is applied with warnings: ", d.problems, policy.SeverityWarning)
	r.log.Info("policy accepted with warnings", append(attrs, "problems", problemStrings(d.problems))...)
	if r.recorder != nil {
		r.recorder.Event(ref, corev1.EventTypeWarning, ReasonPolicyWarning, msg)
	}
}

// eventMessage lists the problems of one severity as "field: reason"
// (the object is the event's subject, so kind and name are left out),
// truncated to what an Event can hold.
func eventMessage(prefix string, ps policy.Problems, sev policy.Severity) string {
	var parts []string
	for _, p := range ps {
		if p.Severity != sev {
			continue
		}
		if p.Field != "" {
			parts = append(parts, p.Field+": "+p.Message)
		} else {
			parts = append(parts, p.Message)
		}
	}
	msg := prefix + strings.Join(parts, "; ")
	if len(msg) > maxEventMessage {
		// Cut on a rune boundary so the message stays valid UTF-8.
		msg = strings.ToValidUTF8(msg[:maxEventMessage-len("…")], "") + "…"
	}
	return msg
}

func problemStrings(ps policy.Problems) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Error()
	}
	return out
}
