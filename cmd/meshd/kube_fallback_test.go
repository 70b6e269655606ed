package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/auth/tokenreview"
)

// scriptedReviewer answers each Authenticate with the next scripted result.
type scriptedReviewer struct {
	results []error // nil: accept as shop/product
	calls   int
}

func (s *scriptedReviewer) Authenticate(context.Context, string) (auth.Identity, error) {
	err := s.results[s.calls]
	s.calls++
	if err != nil {
		return auth.Identity{}, err
	}
	return auth.Identity{Namespace: "shop", ServiceAccount: "product"}, nil
}

func jwtWithExp(exp time.Time) string {
	payload := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"exp":%d}`, exp.Unix()))
	return "e30." + payload + ".sig"
}

func TestReviewFallback(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	// What tokenreview returns when the API server cannot be reached.
	down := fmt.Errorf("%w: cannot review the token with the Kubernetes API server: connection refused", auth.ErrUnavailable)
	refused := tokenreview.ErrInvalidToken
	tests := []struct {
		name  string
		token string
		// steps: what the API server does at each call, and how much
		// time has passed since the start.
		steps   []error
		advance []time.Duration
		wantOK  []bool
	}{
		{
			name: "accepted before, API server down: the earlier review stands", token: jwtWithExp(now.Add(time.Hour)),
			steps: []error{nil, down}, advance: []time.Duration{0, time.Minute}, wantOK: []bool{true, true},
		},
		{
			name: "never reviewed, API server down: refused", token: jwtWithExp(now.Add(time.Hour)),
			steps: []error{down}, advance: []time.Duration{0}, wantOK: []bool{false},
		},
		{
			name: "API server up and refusing: its answer wins over the earlier review", token: jwtWithExp(now.Add(time.Hour)),
			steps: []error{nil, refused, down}, advance: []time.Duration{0, time.Second, 2 * time.Second}, wantOK: []bool{true, false, false},
		},
		{
			name: "the token expired during the outage: refused", token: jwtWithExp(now.Add(10 * time.Minute)),
			steps: []error{nil, down, down}, advance: []time.Duration{0, 9 * time.Minute, 11 * time.Minute}, wantOK: []bool{true, true, false},
		},
		{
			name: "not a JWT: remembered for at most an hour", token: "opaque",
			steps: []error{nil, down, down}, advance: []time.Duration{0, 59 * time.Minute, 61 * time.Minute}, wantOK: []bool{true, true, false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newReviewFallback(&scriptedReviewer{results: tt.steps}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			for i := range tt.steps {
				f.now = func() time.Time { return now.Add(tt.advance[i]) }
				id, err := f.Authenticate(context.Background(), tt.token)
				if ok := err == nil; ok != tt.wantOK[i] {
					t.Fatalf("call %d: err = %v, want ok=%v", i, err, tt.wantOK[i])
				}
				if err == nil && id.String() != "shop/product" {
					t.Errorf("call %d: identity %s, want shop/product", i, id)
				}
				if err != nil && tt.steps[i] == nil {
					t.Errorf("call %d: the API server accepted but the fallback refused: %v", i, err)
				}
			}
		})
	}
}
