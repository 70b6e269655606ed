package agent

import (
	"context"
	"errors"
	"fmt"
	"io"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxWorkloadStreams bounds the workload streams relayed at once. gRPC-Go
// opens one per dial target and one for its server, so a real workload
// needs a handful; one that reaches this is more likely leaking channels,
// and each stream costs meshd a subscriber.
const maxWorkloadStreams = 64

// proxyService is the agent's local ADS endpoint for the workload.
type proxyService struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	a *Agent
}

// StreamAggregatedResources relays one workload stream to meshd on an
// upstream stream of its own.
func (p *proxyService) StreamAggregatedResources(down discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	a := p.a
	n, err := a.acquireStream()
	if err != nil {
		return err
	}
	defer a.releaseStream()
	a.log.Debug("workload opened an xDS stream", "streams", n)
	return a.relay(down)
}

// acquireStream counts a new workload stream in, refusing it when the
// agent is stopping or already relays maxWorkloadStreams. It returns how
// many streams are relayed with this one.
func (a *Agent) acquireStream() (int, error) {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	if a.stopping || a.ctx.Err() != nil {
		return 0, status.Error(codes.Unavailable, "the minimesh agent is stopping")
	}
	if a.streams >= maxWorkloadStreams {
		a.log.Warn("refusing a workload xDS stream: too many open", "limit", maxWorkloadStreams)
		return 0, status.Errorf(codes.ResourceExhausted,
			"the minimesh agent already relays %d xDS streams for this workload, its limit; gRPC opens one per dial target "+
				"and one per xDS server, so the workload probably creates gRPC channels without closing them", maxWorkloadStreams)
	}
	a.streams++
	a.relays.Add(1)
	return a.streams, nil
}

func (a *Agent) releaseStream() {
	a.streamsMu.Lock()
	a.streams--
	a.streamsMu.Unlock()
	a.relays.Done()
}

// errDownstreamGone ends a relay when the workload closes its stream.
var errDownstreamGone = errors.New("the workload closed its xDS stream")

// upstreamError is why meshd's side of a relay ended.
type upstreamError struct{ err error }

func (e upstreamError) Error() string { return e.err.Error() }
func (e upstreamError) Unwrap() error { return e.err }

// relay copies requests from the workload to a new upstream stream, with
// the agent's node and token, and responses back, until either side ends.
// An upstream failure ends the workload stream with Unavailable, so that
// gRPC reconnects it and keeps its configuration meanwhile; other workload
// streams and the certificate are not touched.
//
// Only this goroutine sends on down, and it waits for nothing after
// returning, so nothing is sent on down once the handler is done.
func (a *Agent) relay(down discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	ctx, cancel := context.WithCancel(down.Context())
	defer cancel()
	stop := context.AfterFunc(a.ctx, cancel)
	defer stop()

	upCtx, err := a.withToken(ctx)
	if err != nil {
		a.log.Warn("cannot relay a workload xDS stream to meshd", "error", err)
		return status.Errorf(codes.Unavailable, "the minimesh agent cannot authenticate to meshd: %v", err)
	}
	up, err := a.ads.StreamAggregatedResources(upCtx)
	if err != nil {
		return a.relayEnded(down, fmt.Errorf("opening an ADS stream to meshd: %w", err))
	}

	errc := make(chan error, 2)
	fromUp := make(chan *discoveryv3.DiscoveryResponse)
	go func() {
		for {
			resp, err := up.Recv()
			if err != nil {
				errc <- upstreamError{err}
				return
			}
			select {
			case fromUp <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		warned := false
		for {
			req, err := down.Recv()
			if err != nil {
				errc <- errDownstreamGone
				return
			}
			if req.GetTypeUrl() == resourcev3.SecretType {
				// Secrets reach the workload as files only, from a key
				// the agent made; passing this on would have meshd
				// make a key and send it over the network.
				if !warned {
					a.log.Warn("ignoring an SDS request from the workload; its certificates come from the agent's files", "names", req.GetResourceNames())
					warned = true
				}
				continue
			}
			// The workload speaks as this agent's node, whatever its
			// bootstrap says: meshd authorises the stream by this node.
			req.Node = a.node
			if err := up.Send(req); err != nil {
				// Send only says io.EOF; the receiver above reports
				// the stream's status.
				return
			}
		}
	}()

	for {
		select {
		case resp := <-fromUp:
			if err := down.Send(resp); err != nil {
				return nil // the workload went away
			}
		case err := <-errc:
			if errors.Is(err, errDownstreamGone) {
				return nil
			}
			return a.relayEnded(down, err)
		case <-ctx.Done():
			return a.relayEnded(down, ctx.Err())
		}
	}
}

// relayEnded is the status a relay ends the workload's stream with when
// the workload did not end it itself.
func (a *Agent) relayEnded(down discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, err error) error {
	switch {
	case a.ctx.Err() != nil:
		return status.Error(codes.Unavailable, "the minimesh agent is stopping")
	case down.Context().Err() != nil:
		return status.FromContextError(down.Context().Err()).Err()
	}
	why := err.Error()
	var ue upstreamError
	if errors.Is(err, io.EOF) {
		why = "meshd closed the stream"
	} else if errors.As(err, &ue) {
		if st, ok := status.FromError(ue.err); ok {
			why = fmt.Sprintf("meshd ended the stream: %s: %s", st.Code(), st.Message())
		}
	}
	a.log.Info("ending a workload xDS stream because its stream to meshd ended; gRPC reconnects it and keeps its configuration meanwhile",
		"meshd", a.opts.XDSAddress, "error", why)
	return status.Errorf(codes.Unavailable, "the minimesh agent lost this xDS stream to meshd (%s); reconnect to resume", why)
}
