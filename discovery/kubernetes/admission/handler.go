package admission

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
)

// maxReviewBytes bounds a request body. The API server accepts objects of
// up to 3 MiB, and an UPDATE's review carries the old and the new version.
const maxReviewBytes = 8 << 20

// reviewAPIVersion is the only AdmissionReview version served; the
// manifest asks for it (admissionReviewVersions: [v1]).
var reviewAPIVersion = admissionv1.SchemeGroupVersion.String()

// Handler serves admission.k8s.io/v1 AdmissionReview requests: it answers
// each with Review's decision and logs every refusal.
type Handler struct {
	log *slog.Logger
}

// NewHandler returns a Handler that logs to log (slog.Default() when nil).
func NewHandler(log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{log: log}
}

// ServeHTTP implements http.Handler. A request that is not a POST of a
// JSON AdmissionReview v1 gets an HTTP error saying what was expected; the
// API server then applies the webhook's failurePolicy.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "the admission webhook takes POST requests of an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		http.Error(w, fmt.Sprintf("Content-Type %q is not accepted; send application/json", r.Header.Get("Content-Type")),
			http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("the AdmissionReview is larger than %d bytes", maxReviewBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "the body is not an AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	if review.APIVersion != reviewAPIVersion || review.Kind != "AdmissionReview" || review.Request == nil {
		http.Error(w, fmt.Sprintf("expected an AdmissionReview of apiVersion %s with a request, got apiVersion %q kind %q",
			reviewAPIVersion, review.APIVersion, review.Kind), http.StatusBadRequest)
		return
	}

	req := review.Request
	resp := Review(req)
	h.logDecision(req, resp)
	out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	if err != nil {
		// Every field is a plain string, number or list: cannot happen.
		http.Error(w, "encoding the response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

func (h *Handler) logDecision(req *admissionv1.AdmissionRequest, resp *admissionv1.AdmissionResponse) {
	attrs := []any{"operation", req.Operation, "kind", req.Kind.Kind, "namespace", req.Namespace, "name", req.Name,
		"user", req.UserInfo.Username, "dryRun", req.DryRun != nil && *req.DryRun}
	if !resp.Allowed {
		h.log.Info("policy refused at admission", append(attrs, "reason", resp.Result.Message)...)
		return
	}
	if len(resp.Warnings) > 0 {
		h.log.Info("policy admitted with warnings", append(attrs, "warnings", resp.Warnings)...)
		return
	}
	h.log.Debug("policy admitted", attrs...)
}
