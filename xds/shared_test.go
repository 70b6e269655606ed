package xds

import (
	"fmt"
	"testing"

	"github.com/minimesh/minimesh/xds/xdstest"
)

// TestUnsubscribingProxiesShareNothingWritable: go-control-plane writes to a
// stream's returned map when its client drops names (state of the world:
// a request naming fewer; delta: an unsubscribe). Deleting services makes
// every proxy of a group drop the same names at once; if the caches handed
// the group one shared map, those writes would race (make race runs this
// under the race detector) and change what the other proxies are believed
// to hold. Afterwards every proxy must still get a new endpoint, and a
// re-created service's endpoints, which it dropped before.
func TestUnsubscribingProxiesShareNothingWritable(t *testing.T) {
	h := newHarness(t, nil)
	const replicas, extras = 24, 4
	ip := func(i int) string { return fmt.Sprintf("127.0.1.%d", i+1) }
	manifests := func(keep int, more ...string) []string {
		docs := shopWith(more...)
		for i := range replicas {
			docs = append(docs, pod(fmt.Sprintf("gw-%d", i), "product-gateway", "product-gateway", ip(i)))
		}
		for i := range keep {
			name := fmt.Sprintf("extra%d", i)
			docs = append(docs, service(name, 20+i), pod(name+"-0", name, "extra", fmt.Sprintf("127.0.2.%d", i+1)))
		}
		return docs
	}
	update := func(keep int, more ...string) { h.update(mesh(t, manifests(keep, more...)...)) }
	update(extras)
	var clients []*xdstest.Client
	for i := range replicas {
		clients = append(clients, h.client(fmt.Sprintf("gw-%d", i), "default", ip(i), i%2 == 1, nil))
	}
	for _, c := range clients {
		h.waitComplete(c)
	}
	for keep := extras - 1; keep >= 0; keep-- {
		update(keep)
		gone := fmt.Sprintf("outbound|8080||extra%d.default.svc.cluster.local", keep)
		for _, c := range clients {
			h.waitFor(c, gone+" to go", func() bool {
				_, ok := c.Resources(xdstest.CDS)[gone]
				return !ok && c.Complete() == nil
			})
		}
	}
	update(1, pod("stock-1", "stock", "stock", "127.0.0.31"))
	for _, c := range clients {
		h.waitFor(c, "the new stock endpoint and extra0's endpoints again", func() bool {
			return hasEndpoint(c, "127.0.0.31") && hasEndpoint(c, "127.0.2.1") && c.Complete() == nil
		})
	}
}
