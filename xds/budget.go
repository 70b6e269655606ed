package xds

import (
	"context"
	"strconv"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/sync/semaphore"
	"google.golang.org/protobuf/proto"
)

// sendBudget bounds the bytes of responses that are on their way to
// proxies: handed to gRPC, not yet answered. gRPC's Send returns as soon as
// a message is queued, and when a thousand proxies connect at once every
// stream queues its clusters and endpoints (a megabyte or more each) long
// before the proxies have read them; meshd's memory would then grow with
// the size of the whole fleet's configuration. A response holds its share
// of the budget until the proxy answers it (ACK or NACK, or a later
// request of the type) or its stream ends; a stream that would exceed the
// budget waits, which costs no throughput (loopback or LAN carries far
// more than the budget per round trip) and keeps memory flat.
//
// A proxy that never answers must not stall the others: a send waits at
// most maxWait, then goes ahead without holding any budget.
type sendBudget struct {
	sem     *semaphore.Weighted
	size    int64
	maxWait time.Duration
}

// DefaultSendBudget is the default bound on response bytes in flight.
const DefaultSendBudget = 16 << 20

func newSendBudget(size int64, maxWait time.Duration) *sendBudget {
	return &sendBudget{sem: semaphore.NewWeighted(size), size: size, maxWait: maxWait}
}

// streamBudget is one stream's share: the responses it holds budget for,
// in the order they were sent.
type streamBudget struct {
	b       *sendBudget
	mu      sync.Mutex
	pending []pendingSend
	closed  bool
}

type pendingSend struct {
	typeURL string
	nonce   uint64
	bytes   int64
}

func (b *sendBudget) stream() *streamBudget { return &streamBudget{b: b} }

// acquire takes budget for a response of typeURL with this nonce before it
// is sent. It returns an error only when ctx ends.
func (sb *streamBudget) acquire(ctx context.Context, typeURL, nonce string, msg proto.Message) error {
	n, err := strconv.ParseUint(nonce, 10, 64)
	if err != nil {
		return nil // not one of go-control-plane's nonces: not budgeted
	}
	size := min(approxSize(msg), sb.b.size)
	wctx, cancel := context.WithTimeout(ctx, sb.b.maxWait)
	err = sb.b.sem.Acquire(wctx, size)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return nil // waited long enough: send unbudgeted
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.closed {
		sb.b.sem.Release(size)
		return nil
	}
	sb.pending = append(sb.pending, pendingSend{typeURL: typeURL, nonce: n, bytes: size})
	return nil
}

// answered releases the budget of every response of typeURL up to and
// including nonce: a request names the latest response the proxy has
// seen of its type, so earlier ones have arrived too.
func (sb *streamBudget) answered(typeURL, nonce string) {
	n, err := strconv.ParseUint(nonce, 10, 64)
	if err != nil {
		return
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	kept := sb.pending[:0]
	for _, p := range sb.pending {
		if p.typeURL == typeURL && p.nonce <= n {
			sb.b.sem.Release(p.bytes)
			continue
		}
		kept = append(kept, p)
	}
	clear(sb.pending[len(kept):])
	sb.pending = kept
}

// unsent releases the budget of a response whose send failed.
func (sb *streamBudget) unsent(nonce string) {
	n, err := strconv.ParseUint(nonce, 10, 64)
	if err != nil {
		return
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	for i, p := range sb.pending {
		if p.nonce == n {
			sb.b.sem.Release(p.bytes)
			sb.pending = append(sb.pending[:i], sb.pending[i+1:]...)
			return
		}
	}
}

// close releases everything the stream holds; it sends nothing more.
func (sb *streamBudget) close() {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	sb.closed = true
	for _, p := range sb.pending {
		sb.b.sem.Release(p.bytes)
	}
	sb.pending = nil
}

// approxSize is about the encoded size of a response: the resources'
// encodings, which are all but a few bytes of it. proto.Size would walk
// every resource of the message a second time, for gRPC walks it again.
func approxSize(msg proto.Message) int64 {
	var n int64
	switch r := msg.(type) {
	case *discoveryv3.DiscoveryResponse:
		for _, a := range r.GetResources() {
			n += int64(len(a.GetValue())) + 64
		}
	case *discoveryv3.DeltaDiscoveryResponse:
		for _, res := range r.GetResources() {
			n += int64(len(res.GetResource().GetValue()) + len(res.GetName()) + len(res.GetVersion()) + 64)
		}
	default:
		n = int64(proto.Size(msg))
	}
	return n
}
