package kubernetes_test

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/minimesh/minimesh/discovery/model"
	"github.com/minimesh/minimesh/e2e/kubeenv"
)

// cutProxy forwards TCP connections to a backend until it is cut: then it
// closes every connection and refuses new ones, as a network partition
// between meshd and its API server would, while the API server itself
// keeps running and taking changes from others.
type cutProxy struct {
	t       *testing.T
	addr    string
	backend string

	mu    sync.Mutex
	lis   net.Listener
	conns map[net.Conn]bool
}

func newCutProxy(t *testing.T, backend string) *cutProxy {
	p := &cutProxy{t: t, backend: backend, conns: map[net.Conn]bool{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = lis.Addr().String()
	p.serve(lis)
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) serve(lis net.Listener) {
	p.mu.Lock()
	p.lis = lis
	p.mu.Unlock()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", p.backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.lis != lis { // cut meanwhile
				p.mu.Unlock()
				c.Close()
				b.Close()
				return
			}
			p.conns[c], p.conns[b] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(b, c); b.Close() }()
			go func() { _, _ = io.Copy(c, b); c.Close() }()
		}
	}()
}

// cut closes the listener and every connection.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis != nil {
		p.lis.Close()
		p.lis = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// restore listens again on the same address.
func (p *cutProxy) restore() {
	var lis net.Listener
	var err error
	for range 50 { // the port may linger for a moment
		if lis, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("listening on %s again: %v", p.addr, err)
	}
	p.serve(lis)
}

// TestChangesDuringAnOutageArrive: while the source cannot reach the API
// server, others keep changing the cluster; nothing is published meanwhile
// (proxies keep what they have), and once it reaches the API server again
// every change made in between arrives, with nothing lost.
func TestChangesDuringAnOutageArrive(t *testing.T) {
	env := kubeenv.Start(t)
	ctx := ctxT(t)
	applyCRDs(t, env)
	admin := env.Client()
	service(t, admin, "default", "stable")
	service(t, admin, "default", "gone")

	cfg := env.RESTConfig()
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, u.Host)
	u.Host = proxy.addr
	cfg.Host = u.String() // same certificate: it names 127.0.0.1, not a port
	pub := startSource(t, cfg, nil)
	pub.waitSnapshot(t, "default/stable and default/gone", func(s *model.Snapshot) bool {
		return s.Service("default", "stable") != nil && s.Service("default", "gone") != nil
	})

	proxy.cut()
	// Changes the source cannot see yet: a new service, a deleted one
	// and a policy.
	service(t, admin, "default", "during")
	if err := admin.CoreV1().Services("default").Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	applyPolicy(t, env, "AuthorizationPolicy", "during", `{"action": "DENY", "rules": [{}]}`)
	pub.expectQuiet(t, 3*time.Second, "the source cannot reach the API server")

	proxy.restore()
	s := pub.waitSnapshot(t, "the changes made during the outage", func(s *model.Snapshot) bool {
		return s.Service("default", "during") != nil && s.Service("default", "gone") == nil && len(s.Policies.AuthorizationPolicies) == 1
	})
	if s.Service("default", "stable") == nil {
		t.Error("the snapshot after the outage lost default/stable")
	}
	for i, s := range pub.all() {
		if s.Service("default", "stable") == nil {
			t.Errorf("snapshot %d lost default/stable", i)
		}
	}
}
