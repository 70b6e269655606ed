package admission

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func reviewBody(t *testing.T, apiVersion string, req *admissionv1.AdmissionRequest) []byte {
	t.Helper()
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"},
		Request:  req,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandlerAnswersAReview(t *testing.T) {
	var logs bytes.Buffer
	h := NewHandler(slog.New(slog.NewTextHandler(&logs, nil)))
	dryRun := true
	body := reviewBody(t, "admission.k8s.io/v1", &admissionv1.AdmissionRequest{
		UID: "7f0c", Operation: admissionv1.Create, Namespace: "shop", Name: "strict",
		Kind:   metav1.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"},
		Object: raw(t, stricttPA), DryRun: &dryRun,
	})
	req := httptest.NewRequest(http.MethodPost, Path+"?timeout=10s", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	r := rec.Result()
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q; want 200 application/json", r.StatusCode, r.Header.Get("Content-Type"))
	}
	var got admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.APIVersion != "admission.k8s.io/v1" || got.Kind != "AdmissionReview" || got.Request != nil {
		t.Errorf("answered %s %s with request %v; want an admission.k8s.io/v1 AdmissionReview with only a response",
			got.APIVersion, got.Kind, got.Request)
	}
	if got.Response == nil || got.Response.UID != "7f0c" || got.Response.Allowed || got.Response.Result.Message != stricttMsg {
		t.Errorf("response %+v; want UID 7f0c refused with %q", got.Response, stricttMsg)
	}
	if !strings.Contains(logs.String(), "policy refused at admission") || !strings.Contains(logs.String(), "dryRun=true") {
		t.Errorf("refusal not logged with its dry-run flag; log:\n%s", logs.String())
	}
}

func TestHandlerRefusesWhatIsNotAReview(t *testing.T) {
	valid := reviewBody(t, "admission.k8s.io/v1", &admissionv1.AdmissionRequest{UID: "1", Operation: admissionv1.Delete})
	tests := []struct {
		name, method, contentType string
		body                      []byte
		wantCode                  int
		wantBody                  string
	}{
		{"GET", http.MethodGet, "", nil, http.StatusMethodNotAllowed, "takes POST requests"},
		{"YAML", http.MethodPost, "application/yaml", valid, http.StatusUnsupportedMediaType, `Content-Type "application/yaml" is not accepted`},
		{"not JSON", http.MethodPost, "application/json", []byte("{"), http.StatusBadRequest, "the body is not an AdmissionReview"},
		{"v1beta1", http.MethodPost, "application/json",
			reviewBody(t, "admission.k8s.io/v1beta1", &admissionv1.AdmissionRequest{UID: "1"}),
			http.StatusBadRequest, `expected an AdmissionReview of apiVersion admission.k8s.io/v1 with a request, got apiVersion "admission.k8s.io/v1beta1"`},
		{"no request", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`),
			http.StatusBadRequest, "with a request"},
		{"too large", http.MethodPost, "application/json", bytes.Repeat([]byte(" "), maxReviewBytes+1),
			http.StatusRequestEntityTooLarge, "larger than"},
		{"charset parameter", http.MethodPost, "application/json; charset=utf-8", valid, http.StatusOK, `"allowed":true`},
	}
	h := NewHandler(slog.New(slog.DiscardHandler))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, Path, bytes.NewReader(tt.body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
			}
		})
	}
}
