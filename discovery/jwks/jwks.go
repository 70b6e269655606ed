// Package jwks fetches the key sets named by RequestAuthentication jwksUri
// values and attaches them to model snapshots, so sidecars get the keys
// inlined and need no egress. It sits between a discovery source and the
// xDS server because fetching is I/O, which translation must never do:
// translation only reads Snapshot.JWKS.
package jwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/minimesh/minimesh/discovery"
	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/policy"
)

// Options configure the resolver. Zero values take the defaults.
type Options struct {
	Client   *http.Client  // default: http.Client with Timeout
	Refresh  time.Duration // default 20m, Istio's default refresh
	Timeout  time.Duration // default 5s
	MaxBytes int64         // default 1 MiB
	Log      *slog.Logger
}

// Wrap returns a source that publishes src's snapshots with the key sets of
// every referenced jwksUri attached. A snapshot is published at once with
// the keys already known (a URI not fetched yet is absent, and translation
// then rejects its tokens: fail closed), and again when a fetch or a
// refresh changes the keys. A failed fetch keeps the last good keys and adds
// a warning to the snapshot. The inner snapshots are never modified.
func Wrap(src discovery.Source, opts Options) discovery.Source {
	if opts.Refresh <= 0 {
		opts.Refresh = 20 * time.Minute
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 20
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Timeout}
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	return &resolver{src: src, opts: opts, keys: map[string]string{}, errs: map[string]error{}}
}

type resolver struct {
	src  discovery.Source
	opts Options

	// emitMu orders emits: a copy is published before the next is made,
	// so a fetch's copy of an older snapshot cannot be published after
	// the source's newer one.
	emitMu  sync.Mutex
	mu      sync.Mutex
	last    *model.Snapshot
	keys    map[string]string // uri → last good key set
	errs    map[string]error  // uri → current failure
	publish func(*model.Snapshot)
	kick    chan struct{}
}

func (r *resolver) Run(ctx context.Context, publish func(*model.Snapshot)) error {
	r.publish = publish
	r.kick = make(chan struct{}, 1)
	done := make(chan struct{})
	defer close(done)
	go r.fetchLoop(ctx, done)
	return r.src.Run(ctx, func(s *model.Snapshot) {
		r.mu.Lock()
		r.last = s
		r.mu.Unlock()
		r.emit(s.ObservedAt)
		select {
		case r.kick <- struct{}{}:
		default:
		}
	})
}

// uris lists the jwksUri values of s with the objects that name them.
func uris(s *model.Snapshot) map[string][]policy.Problem {
	out := map[string][]policy.Problem{}
	for _, ra := range s.Policies.RequestAuthentications {
		for i, rule := range ra.Spec.JWTRules {
			if rule.JWKSURI == "" || rule.JWKS != "" {
				continue
			}
			out[rule.JWKSURI] = append(out[rule.JWKSURI], policy.Problem{
				Severity: policy.SeverityWarning, Kind: policy.KindRequestAuthentication,
				Namespace: ra.Namespace, Name: ra.Name, Location: ra.Origin,
				Field: fmt.Sprintf("spec.jwtRules[%d].jwksUri", i),
			})
		}
	}
	return out
}

// emit publishes a copy of the last snapshot with the known keys, as a
// change observed at observed: the source's change, or a new key set.
func (r *resolver) emit(observed time.Time) {
	r.emitMu.Lock()
	defer r.emitMu.Unlock()
	r.mu.Lock()
	s := r.last
	if s == nil {
		r.mu.Unlock()
		return
	}
	cp := *s
	cp.ObservedAt = observed
	cp.JWKS = map[string]string{}
	cp.Problems = append([]model.Problem(nil), s.Problems...)
	for uri, refs := range uris(s) {
		if k, ok := r.keys[uri]; ok {
			cp.JWKS[uri] = k
		}
		if err := r.errs[uri]; err != nil {
			for _, p := range refs {
				p.Message = fmt.Sprintf("fetching the key set from %s failed: %v; %s", uri, err, keptOrRejected(r.keys[uri] != ""))
				cp.Problems = append(cp.Problems, p)
			}
		}
	}
	r.mu.Unlock()
	r.publish(&cp)
}

func keptOrRejected(kept bool) string {
	if kept {
		return "the last keys fetched stay in use"
	}
	return "tokens from this issuer are rejected until a fetch succeeds"
}

// fetchLoop fetches new URIs when kicked and every URI each Refresh.
func (r *resolver) fetchLoop(ctx context.Context, done <-chan struct{}) {
	tick := time.NewTicker(r.opts.Refresh)
	defer tick.Stop()
	for {
		refreshAll := false
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-r.kick:
		case <-tick.C:
			refreshAll = true
		}
		r.mu.Lock()
		var todo []string
		wanted := map[string]bool{}
		if r.last != nil {
			for uri := range uris(r.last) {
				wanted[uri] = true
				if _, ok := r.keys[uri]; refreshAll || !ok {
					todo = append(todo, uri)
				}
			}
		}
		// Forget URIs nothing references any more.
		maps.DeleteFunc(r.keys, func(u string, _ string) bool { return !wanted[u] })
		maps.DeleteFunc(r.errs, func(u string, _ error) bool { return !wanted[u] })
		r.mu.Unlock()

		changed := false
		for _, uri := range todo {
			keys, err := r.fetch(ctx, uri)
			r.mu.Lock()
			if err != nil {
				if r.errs[uri] == nil {
					r.opts.Log.Warn("cannot fetch a JWKS", "uri", uri, "error", err)
				}
				changed = changed || r.errs[uri] == nil
				r.errs[uri] = err
			} else {
				changed = changed || r.keys[uri] != keys || r.errs[uri] != nil
				r.keys[uri] = keys
				delete(r.errs, uri)
			}
			r.mu.Unlock()
		}
		if changed {
			r.emit(time.Now())
		}
	}
}

func (r *resolver) fetch(ctx context.Context, uri string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return "", err
	}
	resp, err := r.opts.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.opts.MaxBytes+1))
	if err != nil {
		return "", err
	}
	if int64(len(body)) > r.opts.MaxBytes {
		return "", fmt.Errorf("the key set is larger than %d bytes", r.opts.MaxBytes)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return "", fmt.Errorf("the key set is not JSON: %w", err)
	}
	if len(set.Keys) == 0 {
		return "", errors.New(`the key set has no "keys"`)
	}
	return string(body), nil
}
