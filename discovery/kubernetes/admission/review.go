package admission

import (
	"net/http"
	"reflect"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/minimesh/minimesh/discovery/kubernetes"
	"github.com/minimesh/minimesh/policy"
)

// Review decides one admission request and returns the response for it
// (UID set). The rules:
//
//   - Only CREATE and UPDATE of a policy kind are judged; everything else
//     (DELETE, CONNECT, kinds minimesh does not read) is allowed, because
//     nothing but a policy's content can weaken the mesh.
//   - A policy is decoded exactly as the Kubernetes source decodes it. Any
//     error refuses the request; the status message holds the errors, one
//     per line, as `meshctl validate` prints them. Warnings are returned as
//     admission warnings, which kubectl prints after "Warning: ".
//   - An UPDATE that leaves the spec as it was is allowed even when the
//     spec is invalid (its problems come back as warnings): refusing it
//     would protect nothing, since the stored spec stays the same, and it
//     would make an object that was stored before the webhook existed
//     impossible to relabel, or to delete once it carries a finalizer.
//     For the same reason an object that is being deleted may be updated.
//
// Dry-run requests are decided the same way; deciding has no side effects.
func Review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return resp
	}
	u, err := object(req.Object.Raw)
	if err != nil {
		return deny(resp, "the object in the admission request cannot be read: "+err.Error())
	}
	if !policy.IsPolicyKind(u.GetAPIVersion(), u.GetKind()) {
		return resp
	}
	// The API server fills both before admission; the request says them
	// too, so a decoded object never lacks them.
	if u.GetNamespace() == "" {
		u.SetNamespace(req.Namespace)
	}
	if u.GetName() == "" {
		u.SetName(req.Name)
	}

	_, problems := kubernetes.DecodePolicy(u)
	if problems.HasErrors() && req.Operation == admissionv1.Update && mayKeep(u, req.OldObject.Raw) {
		for _, p := range problems {
			resp.Warnings = append(resp.Warnings, warning(p))
		}
		return resp
	}
	var errs []string
	for _, p := range problems {
		if p.Severity == policy.SeverityError {
			errs = append(errs, p.Line())
		} else {
			resp.Warnings = append(resp.Warnings, warning(p))
		}
	}
	if len(errs) > 0 {
		return deny(resp, strings.Join(errs, "\n"))
	}
	return resp
}

// mayKeep reports whether an invalid new version may be stored anyway: its
// spec equals the old version's, or the object is being deleted.
func mayKeep(u *unstructured.Unstructured, oldRaw []byte) bool {
	if u.GetDeletionTimestamp() != nil {
		return true
	}
	old, err := object(oldRaw)
	if err != nil {
		return false
	}
	return reflect.DeepEqual(u.Object["spec"], old.Object["spec"])
}

// object decodes a request's object with the decoder client-go's dynamic
// informers use, so numbers (int64, not float64) and everything else reach
// DecodePolicy exactly as they reach it in the source.
func object(raw []byte) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	return u, nil
}

// warning is how a problem reads after kubectl's own "Warning: ": the
// `meshctl validate` line without a repeated "warning: ".
func warning(p policy.Problem) string {
	return strings.TrimPrefix(p.Line(), string(policy.SeverityWarning)+": ")
}

// deny refuses the request as invalid (HTTP 422, like a schema error), so
// clients see the same kind of error as for a CRD schema violation.
func deny(resp *admissionv1.AdmissionResponse, msg string) *admissionv1.AdmissionResponse {
	resp.Allowed = false
	resp.Result = &metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusUnprocessableEntity,
		Reason:  metav1.StatusReasonInvalid,
		Message: msg,
	}
	return resp
}
