package jwks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// oneShot publishes one snapshot and waits for ctx.
type oneShot struct{ snap *model.Snapshot }

func (o oneShot) Run(ctx context.Context, publish func(*model.Snapshot)) error {
	publish(o.snap)
	<-ctx.Done()
	return nil
}

func snapshotFor(uri string) *model.Snapshot {
	ra := &policy.RequestAuthentication{Meta: policy.Meta{Kind: policy.KindRequestAuthentication, Namespace: "default", Name: "jwt"}}
	ra.Spec.JWTRules = []policy.JWTRule{{Issuer: "https://issuer.example", JWKSURI: uri}}
	return &model.Snapshot{Policies: policy.Set{RequestAuthentications: []*policy.RequestAuthentication{ra}}}
}

func TestKeysAttachedRefreshedAndKeptOnFailure(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	var body atomic.Value
	body.Store(`{"keys":[{"kid":"one"}]}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(status.Load()))
		_, _ = w.Write([]byte(body.Load().(string)))
	}))
	defer srv.Close()

	inner := snapshotFor(srv.URL)
	var mu sync.Mutex
	var got []*model.Snapshot
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := Wrap(oneShot{inner}, Options{Refresh: 50 * time.Millisecond})
	go func() {
		_ = src.Run(ctx, func(s *model.Snapshot) { mu.Lock(); got = append(got, s); mu.Unlock() })
	}()
	waitFor := func(what string, ok func(*model.Snapshot) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			var last *model.Snapshot
			if len(got) > 0 {
				last = got[len(got)-1]
			}
			mu.Unlock()
			if last != nil && ok(last) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s", what)
	}
	waitFor("the first keys", func(s *model.Snapshot) bool { return strings.Contains(s.JWKS[srv.URL], `"one"`) })

	body.Store(`{"keys":[{"kid":"two"}]}`)
	waitFor("rotated keys", func(s *model.Snapshot) bool { return strings.Contains(s.JWKS[srv.URL], `"two"`) })

	status.Store(http.StatusInternalServerError)
	waitFor("a warning that keeps the last keys", func(s *model.Snapshot) bool {
		for _, p := range s.Problems {
			if p.Field == "spec.jwtRules[0].jwksUri" && strings.Contains(p.Message, "last keys fetched stay in use") {
				return strings.Contains(s.JWKS[srv.URL], `"two"`)
			}
		}
		return false
	})
	if inner.JWKS != nil || len(inner.Problems) != 0 {
		t.Errorf("the inner snapshot was modified: %+v", inner)
	}
}

func TestFetchRefusesBadBodies(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"not JSON", "<html>", "not JSON"},
		{"no keys", `{"keys":[]}`, `no "keys"`},
		{"too large", `{"keys":[{"k":"` + strings.Repeat("x", 200) + `"}]}`, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(tt.body)) }))
			defer srv.Close()
			r := Wrap(nil, Options{MaxBytes: 100}).(*resolver)
			_, err := r.fetch(context.Background(), srv.URL)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// A fetch that publishes its copy of an older snapshot must not do so
// after the source published a newer one: the newer would be lost until
// the next change.
func TestEmitsAreOrdered(t *testing.T) {
	r := Wrap(nil, Options{}).(*resolver)
	older, newer := snapshotFor("https://a.example/keys"), snapshotFor("https://b.example/keys")
	var mu sync.Mutex
	var published []*model.Snapshot
	entered, release, second := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	r.publish = func(s *model.Snapshot) {
		first := calls.Add(1) == 1
		if first {
			close(entered) // the fetch's emit, slow to hand its copy over
			<-release
		}
		mu.Lock()
		published = append(published, s)
		mu.Unlock()
		if !first {
			close(second)
		}
	}
	r.last = older
	fetchDone := make(chan struct{})
	go func() { defer close(fetchDone); r.emit(time.Now()) }()
	<-entered
	r.mu.Lock()
	r.last = newer
	r.mu.Unlock()
	sourceDone := make(chan struct{})
	go func() { defer close(sourceDone); r.emit(time.Now()) }()
	select {
	case <-second: // published while the older copy is on its way: the bug
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	<-fetchDone
	<-sourceDone
	mu.Lock()
	defer mu.Unlock()
	// The copies were handed over in the order they were made.
	if len(published) != 2 || published[0].Policies.RequestAuthentications[0] != older.Policies.RequestAuthentications[0] ||
		published[1].Policies.RequestAuthentications[0] != newer.Policies.RequestAuthentications[0] {
		t.Errorf("the snapshots were not published oldest first, newest last (%d published)", len(published))
	}
}
