package xds

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/ca"
	"github.com/minimesh/minimesh/xds/xdstest"
)

// startClient starts a client on its own context, so a test can end its
// stream alone (a reconnect) while the harness keeps serving.
func (h *harness) startClient(opts xdstest.Options) (*xdstest.Client, context.CancelFunc) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(h.ctx)
	h.t.Cleanup(cancel)
	return xdstest.Start(ctx, h.conn, opts), cancel
}

// serialOf is the serial number of the leaf certificate a client holds, ""
// when it holds none.
func serialOf(c *xdstest.Client) string {
	def, _ := c.Resources(xdstest.SDS)[SecretDefault].(*tlsv3.Secret)
	block, _ := pem.Decode(def.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	if block == nil {
		return ""
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return ""
	}
	return cert.SerialNumber.Text(16)
}

// waitStreams waits until syncz lists a node with n streams.
func (h *harness) waitStreams(node string, n int) ProxyStatus {
	h.t.Helper()
	var ps ProxyStatus
	h.eventually(fmt.Sprintf("%d streams of %s in syncz", n, node), func() bool {
		var ok bool
		ps, ok = h.proxyStatus(node)
		return ok && len(ps.Streams) == n
	})
	return ps
}

// TestSeveralStreamsPerNode is a proxyless workload under meshctl agent:
// the agent's SDS-only stream and a gRPC client's stream share one node
// ID. They share one certificate and one syncz row; closing one leaves the
// other served; only the last close forgets the node.
func TestSeveralStreamsPerNode(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		h.update(mesh(t, shop...))
		node := nodeID("product-0", "default", "127.0.0.2")
		agent, closeAgent := h.startClient(xdstest.Options{NodeID: node, Delta: delta, SecretsOnly: true})
		workload, closeWorkload := h.startClient(xdstest.Options{NodeID: node, Delta: delta})
		h.waitComplete(workload)
		h.waitFor(agent, "the agent's secrets", func() bool { return agent.Complete() == nil })

		if a, w := serialOf(agent), serialOf(workload); a == "" || a != w {
			t.Errorf("certificate serials: agent %q, workload %q; want one certificate for the node", a, w)
		}
		if got := value(h.srv.m.certsIssued); got != 1 {
			t.Errorf("certificates issued = %v, want 1 for one node", got)
		}
		if n := agent.Responses(xdstest.CDS) + agent.Responses(xdstest.LDS); n != 0 {
			t.Errorf("the SDS-only stream received %d configuration responses", n)
		}
		ps := h.waitStreams(node, 2)
		if got := len(h.srv.SyncStatus().Proxies); got != 1 {
			t.Errorf("syncz lists %d proxies, want 1 row for the node", got)
		}
		h.eventually("every type SYNCED on the node's row", func() bool {
			ps, _ = h.proxyStatus(node)
			if len(ps.Types) != 5 {
				return false
			}
			for _, ts := range ps.Types {
				if ts.State != StateSynced {
					return false
				}
			}
			return true
		})
		if got := len(ps.Streams[0].Types) + len(ps.Streams[1].Types); got != 6 {
			t.Errorf("per-stream types = %+v and %+v, want sds on one and all five on the other", ps.Streams[0].Types, ps.Streams[1].Types)
		}
		if got := value(h.srv.m.connected); got != 1 {
			t.Errorf("connected proxies = %v, want 1", got)
		}
		if got := value(h.srv.m.streams); got != 2 {
			t.Errorf("open streams = %v, want 2", got)
		}

		// The agent's stream ends: the workload's stays fully served.
		closeAgent()
		h.waitStreams(node, 1)
		if _, err := h.srv.secrets.GetSnapshot(node); err != nil {
			t.Fatalf("the node's secrets were dropped while a stream remains: %v", err)
		}
		eds := workload.Version(xdstest.EDS)
		h.update(mesh(t, shopWith(pod("stock-1", "stock", "stock", "127.0.0.7"))...))
		h.waitFor(workload, "the endpoint change on the remaining stream", func() bool { return workload.Version(xdstest.EDS) != eds })
		if got := value(h.srv.m.connected); got != 1 {
			t.Errorf("connected proxies with one stream left = %v, want 1", got)
		}

		// The last stream ends: the node is forgotten.
		closeWorkload()
		h.eventually("the node to be forgotten", func() bool {
			errCfg := h.srv.config.served(node) == nil
			_, errSec := h.srv.secrets.GetSnapshot(node)
			return len(h.srv.SyncStatus().Proxies) == 0 && errCfg && errSec != nil
		})
		if got := value(h.srv.m.connected); got != 0 {
			t.Errorf("connected proxies = %v, want 0", got)
		}
		h.eventually("no stream counted", func() bool { return value(h.srv.m.streams) == 0 })
	})
}

// TestCertificateReusedPerNode: two streams and a reconnect get the same
// certificate; at RenewAt the node gets exactly one new one, on every
// stream.
func TestCertificateReusedPerNode(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		h.update(mesh(t, shop...))
		node := nodeID("product-gateway-0", "default", "127.0.0.4")
		first, closeFirst := h.startClient(xdstest.Options{NodeID: node, Delta: delta})
		second, _ := h.startClient(xdstest.Options{NodeID: node, Delta: delta})
		h.waitComplete(first)
		h.waitComplete(second)
		serial := serialOf(first)
		if got := serialOf(second); got != serial {
			t.Fatalf("second stream serial %q, first %q; want the same", got, serial)
		}

		// A reconnect, while another stream is open and while none is.
		closeFirst()
		third, closeThird := h.startClient(xdstest.Options{NodeID: node, Delta: delta, ResumeFrom: first})
		h.waitComplete(third)
		if got := serialOf(third); got != serial {
			t.Errorf("reconnected stream serial %q, want %q", got, serial)
		}
		h.waitStreams(node, 2)
		closeThird()
		h.waitStreams(node, 1)
		if got := value(h.srv.m.certsIssued); got != 1 {
			t.Errorf("certificates issued after two streams and a reconnect = %v, want 1", got)
		}

		// Renewal: one new certificate for the node, on both streams.
		fourth, _ := h.startClient(xdstest.Options{NodeID: node, Delta: delta})
		h.waitComplete(fourth)
		h.clock.Advance(h.srv.opts.CA.WorkloadTTL()/2 + time.Second)
		h.srv.renewDue()
		h.srv.renewDue()
		for _, c := range []*xdstest.Client{second, fourth} {
			h.waitFor(c, "the renewed certificate", func() bool { s := serialOf(c); return s != "" && s != serial })
		}
		if a, b := serialOf(second), serialOf(fourth); a != b {
			t.Errorf("after renewal the streams hold serials %q and %q; want one certificate", a, b)
		}
		if got := value(h.srv.m.certsIssued); got != 2 {
			t.Errorf("certificates issued after one renewal = %v, want 2", got)
		}
	})
}

// TestCertificateGracePeriod: the certificate outlives the node's last
// stream by a grace period, then is dropped.
func TestCertificateGracePeriod(t *testing.T) {
	h := newHarness(t, nil)
	h.update(mesh(t, shop...))
	node := nodeID("stock-0", "default", "127.0.0.3")
	c, closeC := h.startClient(xdstest.Options{NodeID: node})
	h.waitComplete(c)
	serial := serialOf(c)
	closeC()
	h.eventually("the node's caches to be cleared", func() bool {
		_, err := h.srv.secrets.GetSnapshot(node)
		return err != nil
	})

	// Within the grace period: the same certificate.
	h.clock.Advance(certGrace / 2)
	h.srv.renewDue()
	again, closeAgain := h.startClient(xdstest.Options{NodeID: node})
	h.waitComplete(again)
	h.waitFor(again, "a certificate", func() bool { return serialOf(again) != "" })
	if got := serialOf(again); got != serial {
		t.Errorf("serial after a reconnect within the grace period = %q, want %q", got, serial)
	}
	closeAgain()
	h.eventually("the node's caches to be cleared", func() bool {
		_, err := h.srv.secrets.GetSnapshot(node)
		return err != nil
	})

	// After it: a new one.
	h.clock.Advance(certGrace + time.Second)
	h.srv.renewDue()
	h.srv.mu.Lock()
	_, kept := h.srv.nodes[node]
	h.srv.mu.Unlock()
	if kept {
		t.Error("the node's certificate is still kept after the grace period")
	}
	late, _ := h.startClient(xdstest.Options{NodeID: node})
	h.waitComplete(late)
	// A complete configuration need not hold the secret yet: it is issued
	// when the node comes back.
	h.waitFor(late, "a certificate", func() bool { return serialOf(late) != "" })
	if got := serialOf(late); got == serial {
		t.Error("a proxy back after the grace period got the old certificate")
	}
	if got := value(h.srv.m.certsIssued); got != 2 {
		t.Errorf("certificates issued = %v, want 2", got)
	}
}

// TestShortLivedCertificateRenewsAtHalfLife: with a 30s lifetime the node
// gets a new certificate every 15s of (fake) time, once each.
func TestShortLivedCertificateRenewsAtHalfLife(t *testing.T) {
	h := newHarness(t, func(o *Options) {
		authority, err := ca.New(ca.Options{Dir: t.TempDir(), Now: o.Now, WorkloadTTL: 30 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		o.CA = authority
	})
	h.ca = h.srv.opts.CA
	h.update(mesh(t, shop...))
	c := h.client("product-0", "default", "127.0.0.2", false, nil)
	h.waitComplete(c)
	issued := func() float64 { return value(h.srv.m.certsIssued) }
	h.eventually("the first certificate to be counted", func() bool { return issued() == 1 })
	start := h.clock.Now()
	h.clock.Advance(14 * time.Second)
	next := h.srv.renewDue()
	if got := issued(); got != 1 {
		t.Errorf("renewed at 14s of 30s (%v issued)", got)
	}
	// Half of 30s after issue; certificate times have whole seconds.
	if d := next.Sub(start); d <= 14*time.Second || d > 15*time.Second {
		t.Errorf("next renewal %v after issue, want half of 30s", d)
	}
	// One second steps over a minute: renewals at 15, 30, 45 and 60s.
	for range 46 {
		h.clock.Advance(time.Second)
		if next := h.srv.renewDue(); !next.After(h.clock.Now()) {
			t.Fatalf("renewDue asks to run again at %v, not after now (%v): a renewal loop", next, h.clock.Now())
		}
	}
	if got := issued(); got != 5 {
		t.Errorf("certificates issued over 60s with a 30s lifetime = %v, want 5 (one first, four renewals)", got)
	}
	h.waitFor(c, "the latest certificate", func() bool {
		ps, _ := h.proxyStatus(nodeID("product-0", "default", "127.0.0.2"))
		return ps.Certificate != nil && serialOf(c) == ps.Certificate.Serial
	})
	leafSPIFFE(t, c, h)
}

// unavailableAuth is an authenticator whose backend is down.
type unavailableAuth struct{}

func (unavailableAuth) Authenticate(context.Context, string) (auth.Identity, error) {
	return auth.Identity{}, fmt.Errorf("%w: cannot review the token: connection refused", auth.ErrUnavailable)
}

func TestAuthenticatorUnavailableAnswersUnavailable(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, func(o *Options) { o.Authenticator = unavailableAuth{} })
		h.update(mesh(t, shop...))
		c := h.client("product-0", "default", "127.0.0.2", delta, func(o *xdstest.Options) { o.Token = "some-token" })
		h.waitFor(c, "the stream to end", func() bool { return c.Err() != nil })
		if got := status.Code(c.Err()); got != codes.Unavailable {
			t.Errorf("stream ended with %v, want Unavailable so that the client retries", c.Err())
		}
		if got := value(h.srv.m.rejected.WithLabelValues("auth_unavailable")); got != 1 {
			t.Errorf("rejected_streams_total{reason=auth_unavailable} = %v, want 1", got)
		}
	})
}

func TestGRPCCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("%w: down", auth.ErrUnavailable), codes.Unavailable},
		{fmt.Errorf("%w: bad token", auth.ErrUnauthenticated), codes.Unauthenticated},
		{fmt.Errorf("%w: other namespace", auth.ErrPermissionDenied), codes.PermissionDenied},
		{fmt.Errorf("%w: no tildes", auth.ErrBadNodeID), codes.InvalidArgument},
		{errors.New("anything else"), codes.Unauthenticated},
	}
	for _, tt := range tests {
		if got := grpcCode(tt.err); got != tt.want {
			t.Errorf("grpcCode(%v) = %v, want %v", tt.err, got, tt.want)
		}
		if got := status.Code(refusal(tt.err)); got != tt.want {
			t.Errorf("refusal(%v) has code %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestResyncAfterRestart: a proxy that reconnects to a restarted meshd
// with the versions it already holds is sent nothing new, and syncz shows
// it SYNCED, not STALE.
func TestResyncAfterRestart(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		node := nodeID("product-gateway-0", "default", "127.0.0.4")
		before := newHarness(t, nil)
		before.update(mesh(t, shop...))
		c := before.client("product-gateway-0", "default", "127.0.0.4", delta, nil)
		before.waitComplete(c)

		// The restarted meshd has no model yet when the proxy is back,
		// as after a real restart: every watch opens before a snapshot.
		after := newHarness(t, nil)
		resumed, _ := after.startClient(xdstest.Options{NodeID: node, Delta: delta, ResumeFrom: c})
		after.waitStreams(node, 1)
		after.eventually("the resumed stream to subscribe to every type", func() bool {
			ps, _ := after.proxyStatus(node)
			return len(ps.Types) == 5
		})
		after.update(mesh(t, shop...))
		after.waitComplete(resumed)
		after.eventually("every type SYNCED", func() bool {
			ps, _ := after.proxyStatus(node)
			for _, ts := range ps.Types {
				if ts.State != StateSynced {
					return false
				}
			}
			return len(ps.Types) == 5
		})
		// Listeners, routes and clusters are content-hashed, so the new
		// meshd's versions are the old ones: they need no response at
		// all (SOTW sends none; delta answers only wildcard
		// subscriptions, empty). Delta proxies name the versions of
		// their assignments, so those need none either; a SOTW
		// version_info cannot say which assignments the proxy holds, so
		// the new meshd sends them once. Nothing is ever withdrawn.
		if got := resumed.Responses(xdstest.RDS); got != 0 {
			t.Errorf("RDS responses to a proxy already holding the current version = %d, want 0", got)
		}
		wantEDS := 0
		if !delta {
			wantEDS = 1
			for _, typ := range []string{xdstest.CDS, xdstest.LDS} {
				if got := resumed.Responses(typ); got != 0 {
					t.Errorf("%s responses to a proxy already holding the current version = %d, want 0", typ, got)
				}
			}
		}
		if got := resumed.Responses(xdstest.EDS); got != wantEDS {
			t.Errorf("EDS responses to a proxy already holding the current assignments = %d, want %d", got, wantEDS)
		}
		if got, want := len(resumed.Resources(xdstest.EDS)), len(c.Resources(xdstest.EDS)); got != want {
			t.Errorf("the resumed proxy holds %d assignments, want the %d it had", got, want)
		}
		// Its certificate is new (a new CA here); that one was sent.
		if got := resumed.Acks(xdstest.SDS); got != 1 {
			t.Errorf("SDS responses accepted = %d, want 1 (the new meshd's certificate)", got)
		}
	})
}

// TestResyncAfterReconnect: within the grace period a reconnecting proxy
// holds the current secrets too, and all of it shows SYNCED.
func TestResyncAfterReconnect(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, nil)
		h.update(mesh(t, shop...))
		node := nodeID("stock-0", "default", "127.0.0.3")
		c, closeC := h.startClient(xdstest.Options{NodeID: node, Delta: delta})
		h.waitComplete(c)
		closeC()
		h.eventually("the node's caches to be cleared", func() bool {
			_, err := h.srv.secrets.GetSnapshot(node)
			return err != nil
		})
		resumed, _ := h.startClient(xdstest.Options{NodeID: node, Delta: delta, ResumeFrom: c})
		h.eventually("every type SYNCED", func() bool {
			ps, _ := h.proxyStatus(node)
			for _, ts := range ps.Types {
				if ts.State != StateSynced {
					return false
				}
			}
			return len(ps.Types) == 5
		})
		if got := serialOf(resumed); got != serialOf(c) {
			t.Errorf("serial after reconnect = %q, want %q", got, serialOf(c))
		}
		if got := value(h.srv.m.certsIssued); got != 1 {
			t.Errorf("certificates issued = %v, want 1", got)
		}
	})
}

// TestImpostorStreamGetsNoSecrets: a stream with another service
// account's token claims a node whose pod is not known yet, next to the
// real proxy. When the pod appears it is refused, and at no point does it
// receive the node's secrets, although both share the node's cache entry.
func TestImpostorStreamGetsNoSecrets(t *testing.T) {
	tokens, err := auth.ParseStaticTokens(strings.NewReader("gw-token,default,product-gateway\nstock-token,default,stock\n"), "tokens")
	if err != nil {
		t.Fatal(err)
	}
	modes(t, func(t *testing.T, delta bool) {
		h := newHarness(t, func(o *Options) { o.Authenticator = tokens })
		h.update(mesh(t, shop...))
		node := nodeID("product-gateway-1", "default", "127.0.0.8")
		impostor, _ := h.startClient(xdstest.Options{NodeID: node, Delta: delta, Token: "stock-token", SecretsOnly: true})
		real, _ := h.startClient(xdstest.Options{NodeID: node, Delta: delta, Token: "gw-token"})
		h.waitStreams(node, 2)
		h.eventually("both streams to ask for secrets", func() bool {
			ps, _ := h.proxyStatus(node)
			return len(ps.Types) == 3 // cds, lds, sds
		})

		h.update(mesh(t, shopWith(pod("product-gateway-1", "product-gateway", "product-gateway", "127.0.0.8"))...))
		h.waitComplete(real)
		if got, want := leafSPIFFE(t, real, h), "spiffe://cluster.local/ns/default/sa/product-gateway"; got != want {
			t.Errorf("SPIFFE ID = %q, want %q", got, want)
		}
		h.waitFor(impostor, "the impostor's stream to end", func() bool { return impostor.Err() != nil })
		if got := status.Code(impostor.Err()); got != codes.PermissionDenied {
			t.Errorf("impostor's stream ended with %v, want PermissionDenied", impostor.Err())
		}
		if n := impostor.Responses(xdstest.SDS); n != 0 {
			t.Errorf("the impostor's stream received %d SDS responses", n)
		}
	})
}
