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

// sendErr turns the io.EOF of a Send on a stream the server has ended into
// the status the server ended it with, which only Recv reports.
func sendErr(err error, recv func() error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		if rerr := recv(); rerr != nil {
			return rerr
		}
	}
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
		return sendErr(st.Send(req), func() error { _, err := st.Recv(); return err })
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
	var initial []*discoveryv3.DiscoveryRequest
	for _, t := range c.initialTypes() {
		if wildcardTypes[t] || len(c.types[t].wanted) > 0 {
			initial = append(initial, request(t))
		}
	}
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
		c.mu.Lock()
		td, ok := c.types[t]
		if ok && derr == nil && !wildcardTypes[t] {
			// Only listeners and clusters are complete in every
			// response. For the other types a response carries what
			// changed; the client keeps the rest of what it
			// subscribes to, as Envoy and gRPC do.
			merged := maps.Clone(td.resources)
			if merged == nil {
				merged = map[string]proto.Message{}
			}
			maps.Copy(merged, res)
			maps.DeleteFunc(merged, func(name string, _ proto.Message) bool { return !td.wanted[name] })
			res = merged
		}
		c.mu.Unlock()
		if !ok {
			continue // a type we never asked for
		}
		if derr == nil {
			derr = c.accept(t, resp.GetVersionInfo(), res)
		}
		c.mu.Lock()
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
		return sendErr(st.Send(req), func() error { _, err := st.Recv(); return err })
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
				delete(td.versions, n)
			}
		}
		slices.Sort(req.ResourceNamesSubscribe)
		slices.Sort(req.ResourceNamesUnsubscribe)
		subscribed[typeURL] = maps.Clone(td.wanted)
		return req
	}
	c.mu.Lock()
	var initial []*discoveryv3.DeltaDiscoveryRequest
	for _, t := range c.initialTypes() {
		td := c.types[t]
		var req *discoveryv3.DeltaDiscoveryRequest
		switch {
		case wildcardTypes[t]:
			td.requested = true
			req = &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t}
		case len(td.wanted) > 0:
			req = resubscribe(t)
		default:
			continue
		}
		if len(td.versions) > 0 {
			req.InitialResourceVersions = maps.Clone(td.versions)
		}
		initial = append(initial, req)
	}
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
		c.mu.Lock()
		td, ok := c.types[t]
		var next map[string]proto.Message
		var nextVersions map[string]string
		if ok {
			next = maps.Clone(td.resources)
			nextVersions = maps.Clone(td.versions)
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
			nextVersions[r.GetName()] = r.GetVersion()
		}
		for _, n := range resp.GetRemovedResources() {
			delete(next, n)
			delete(nextVersions, n)
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
			td.versions = nextVersions
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
