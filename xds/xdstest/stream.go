package xdstest

import (
	"context"
	"errors"
	"io"
	"maps"
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

func streamErr(err error) error {
	if errors.Is(err, io.EOF) {
		return errStreamEnded
	}
	return err
}

// runSotw speaks state-of-the-world ADS the way Envoy does.
func (c *Client) runSotw(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) error {
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	first := true
	send := func(req *discoveryv3.DiscoveryRequest) error {
		if first {
			req.Node = c.node
			first = false
		}
		return st.Send(req)
	}
	// request asks for the current names of a type, naming the last
	// response so the server can tell an ACK or a new subscription.
	request := func(typeURL string) *discoveryv3.DiscoveryRequest {
		td := c.types[typeURL]
		td.requested = true
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: td.version, ResponseNonce: td.nonce}
		if !wildcardTypes[typeURL] {
			req.ResourceNames = slices.Sorted(maps.Keys(td.wanted))
		}
		return req
	}
	c.mu.Lock()
	initial := []*discoveryv3.DiscoveryRequest{request(CDS), request(LDS)}
	c.mu.Unlock()
	for _, req := range initial {
		if err := send(req); err != nil {
			return streamErr(err)
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return streamErr(err)
		}
		t := resp.GetTypeUrl()
		res, size, derr := decode(resp.GetResources())
		if derr == nil {
			derr = c.accept(t, resp.GetVersionInfo(), res)
		}
		c.mu.Lock()
		td, ok := c.types[t]
		if !ok {
			c.mu.Unlock()
			continue // a type we never asked for
		}
		td.responses++
		c.bytes += size
		td.nonce = resp.GetNonce()
		var out []*discoveryv3.DiscoveryRequest
		if derr != nil {
			td.nacks++
			td.nackedMsg = derr.Error()
			req := request(t)
			req.ErrorDetail = nackStatus(derr)
			out = append(out, req)
		} else {
			// Envoy asks for newly referenced resources before it ACKs
			// the response that references them.
			for _, changed := range c.applyLocked(t, resp.GetVersionInfo(), res) {
				out = append(out, request(changed))
			}
			out = append(out, request(t))
		}
		c.notifyLocked()
		c.mu.Unlock()
		for _, req := range out {
			if err := send(req); err != nil {
				return streamErr(err)
			}
		}
	}
}

// runDelta speaks incremental ADS the way Envoy does.
func (c *Client) runDelta(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) error {
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	first := true
	send := func(req *discoveryv3.DeltaDiscoveryRequest) error {
		if first {
			req.Node = c.node
			first = false
		}
		return st.Send(req)
	}
	subscribed := map[string]map[string]bool{}
	// resubscribe turns a change of wanted names into subscribe and
	// unsubscribe lists, and forgets resources no longer wanted.
	resubscribe := func(typeURL string) *discoveryv3.DeltaDiscoveryRequest {
		td := c.types[typeURL]
		td.requested = true
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL}
		old := subscribed[typeURL]
		for n := range td.wanted {
			if !old[n] {
				req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, n)
			}
		}
		for n := range old {
			if !td.wanted[n] {
				req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, n)
				delete(td.resources, n)
			}
		}
		slices.Sort(req.ResourceNamesSubscribe)
		slices.Sort(req.ResourceNamesUnsubscribe)
		subscribed[typeURL] = maps.Clone(td.wanted)
		return req
	}
	c.mu.Lock()
	c.types[CDS].requested, c.types[LDS].requested = true, true
	c.mu.Unlock()
	for _, t := range []string{CDS, LDS} {
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t}); err != nil {
			return streamErr(err)
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return streamErr(err)
		}
		t := resp.GetTypeUrl()
		c.mu.Lock()
		td, ok := c.types[t]
		var next map[string]proto.Message
		if ok {
			next = maps.Clone(td.resources)
		}
		c.mu.Unlock()
		if !ok {
			continue
		}
		var size int64
		var derr error
		for _, r := range resp.GetResources() {
			if r.GetResource() == nil {
				continue
			}
			size += int64(len(r.GetResource().GetValue()))
			got, err := decodeOne(r.GetResource())
			if err != nil {
				derr = err
				break
			}
			next[r.GetName()] = got
		}
		for _, n := range resp.GetRemovedResources() {
			delete(next, n)
		}
		if derr == nil {
			derr = c.accept(t, resp.GetSystemVersionInfo(), next)
		}
		c.mu.Lock()
		td.responses++
		c.bytes += size
		td.nonce = resp.GetNonce()
		var out []*discoveryv3.DeltaDiscoveryRequest
		if derr != nil {
			td.nacks++
			td.nackedMsg = derr.Error()
			out = append(out, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce(), ErrorDetail: nackStatus(derr)})
		} else {
			for _, changed := range c.applyLocked(t, resp.GetSystemVersionInfo(), next) {
				out = append(out, resubscribe(changed))
			}
			out = append(out, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce()})
		}
		c.notifyLocked()
		c.mu.Unlock()
		for _, req := range out {
			if err := send(req); err != nil {
				return streamErr(err)
			}
		}
	}
}
