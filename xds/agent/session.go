package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Backoff between attempts to reach meshd.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
	// stableAfter: a session that lasted this long resets the backoff.
	stableAfter = 10 * time.Second
)

// downstream is the workload's ADS stream to the agent. Its handler waits on
// done: the session that owns the stream is the only one to send on it and
// finishes it exactly once, so nothing is sent after the handler returns.
type downstream struct {
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	done   chan error // buffered, 1
}

func (d *downstream) finish(err error) {
	if d != nil {
		d.done <- err
	}
}

// proxyService is the agent's local ADS endpoint for the workload.
type proxyService struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	a *Agent
}

func (p *proxyService) StreamAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	d := &downstream{stream: stream, done: make(chan error, 1)}
	select {
	case p.a.attach <- d:
	case <-stream.Context().Done():
		return status.FromContextError(stream.Context().Err()).Err()
	case <-p.a.closed:
		return status.Error(codes.Unavailable, "the minimesh agent is stopping")
	}
	return <-d.done
}

// loop keeps an upstream session to meshd open until ctx ends.
func (a *Agent) loop(ctx context.Context) {
	var (
		pending *downstream
		backoff = backoffMin
		prev    *secretSet
	)
	for ctx.Err() == nil {
		start := time.Now()
		next, got, err := a.session(ctx, pending, &prev)
		pending = next
		if err == nil || ctx.Err() != nil {
			backoff = backoffMin
			continue
		}
		if got || time.Since(start) > stableAfter {
			backoff = backoffMin
		}
		a.log.Warn("lost the connection to meshd; the workload keeps its certificate files and last configuration, retrying",
			"meshd", a.opts.XDSAddress, "retry_in", backoff.Round(time.Millisecond), "error", err)
		wait := time.NewTimer(backoff + rand.N(backoff/4+1))
	waiting:
		for {
			select {
			case <-ctx.Done():
				wait.Stop()
				break waiting
			case <-wait.C:
				break waiting
			case d := <-a.attach:
				// The workload reconnected while meshd is away: hold its
				// stream until the next attempt, replacing an older one.
				if pending != nil {
					pending.finish(status.Error(codes.Unavailable, "replaced by a newer stream from the workload"))
				}
				pending = d
			}
		}
		backoff = min(backoff*2, backoffMax)
	}
	pending.finish(status.Error(codes.Unavailable, "the minimesh agent is stopping"))
}

// errDownstreamGone ends a session when the workload closes its stream.
var errDownstreamGone = errors.New("the workload closed its xDS stream")

// session runs one upstream ADS stream, carrying the agent's SDS requests
// and, if down is set, the workload's requests. It returns the downstream
// that replaced down (if one attached), whether any response arrived, and
// why the upstream stream ended (nil when it ended for a downstream
// change). down is always finished before session returns.
func (a *Agent) session(ctx context.Context, down *downstream, prev **secretSet) (next *downstream, got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	finishDown := func(err error) {
		down.finish(err)
		down = nil
	}
	defer func() {
		if down != nil {
			finishDown(status.Error(codes.Unavailable, "the minimesh agent lost its connection to meshd"))
		}
	}()

	if a.opts.TokenFile != "" {
		tok, err := os.ReadFile(a.opts.TokenFile)
		if err != nil {
			return nil, false, fmt.Errorf("reading the token file: %w", err)
		}
		t := strings.TrimSpace(string(tok))
		if t == "" {
			return nil, false, fmt.Errorf("the token file %s is empty", a.opts.TokenFile)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+t)
	}
	up, err := a.ads.StreamAggregatedResources(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("opening an ADS stream to meshd: %w", err)
	}
	sdsNames := []string{SecretDefault, SecretRootCA}
	if err := up.Send(&discoveryv3.DiscoveryRequest{
		Node:          a.node,
		TypeUrl:       resourcev3.SecretType,
		ResourceNames: sdsNames,
	}); err != nil {
		return nil, false, fmt.Errorf("requesting secrets from meshd: %w", upstreamErr(up, err))
	}

	errc := make(chan error, 2)
	fromUp := make(chan *discoveryv3.DiscoveryResponse)
	go func() {
		for {
			resp, err := up.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case fromUp <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	var fromDown chan *discoveryv3.DiscoveryRequest
	if down != nil {
		fromDown = make(chan *discoveryv3.DiscoveryRequest)
		go func(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) {
			for {
				req, err := s.Recv()
				if err != nil {
					errc <- errDownstreamGone
					return
				}
				select {
				case fromDown <- req:
				case <-ctx.Done():
					return
				}
			}
		}(down.stream)
		a.log.Debug("workload connected to the agent's xDS endpoint")
	}

	// sendErr prefers the stream's status, which the receiver reports, to
	// the bare io.EOF a failed Send returns.
	sendErr := func(what string, err error) error {
		select {
		case rerr := <-errc:
			if !errors.Is(rerr, errDownstreamGone) {
				err = rerr
			}
		case <-time.After(time.Second):
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	acceptedSDS := ""
	for {
		select {
		case <-ctx.Done():
			finishDown(status.Error(codes.Unavailable, "the minimesh agent is stopping"))
			return nil, got, nil
		case d := <-a.attach:
			finishDown(status.Error(codes.Unavailable, "replaced by a newer stream from the workload"))
			return d, got, nil
		case err := <-errc:
			if errors.Is(err, errDownstreamGone) {
				finishDown(nil)
				return nil, got, nil
			}
			return nil, got, err
		case req := <-fromDown:
			if req.GetTypeUrl() == resourcev3.SecretType {
				// Secrets reach the workload as files only.
				a.log.Warn("ignoring an SDS request from the workload; its certificates come from the agent's files", "names", req.GetResourceNames())
				continue
			}
			// The workload speaks as this agent's node, whatever its
			// bootstrap says: meshd authorises the stream by this node.
			req.Node = a.node
			if err := up.Send(req); err != nil {
				return nil, got, sendErr("forwarding the workload's request to meshd", err)
			}
		case resp := <-fromUp:
			got = true
			if resp.GetTypeUrl() != resourcev3.SecretType {
				if down == nil {
					continue // a workload that left; its successor re-requests
				}
				if err := down.stream.Send(resp); err != nil {
					finishDown(nil)
					return nil, got, nil
				}
				continue
			}
			ack := &discoveryv3.DiscoveryRequest{
				TypeUrl:       resourcev3.SecretType,
				ResourceNames: sdsNames,
				ResponseNonce: resp.GetNonce(),
				VersionInfo:   resp.GetVersionInfo(),
			}
			if err := a.handleSecrets(resp, prev); err != nil {
				a.log.Error("rejecting certificates from meshd; keeping the files already written", "version", resp.GetVersionInfo(), "error", err)
				ack.VersionInfo = acceptedSDS
				ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			} else {
				acceptedSDS = resp.GetVersionInfo()
			}
			if err := up.Send(ack); err != nil {
				return nil, got, sendErr("acknowledging secrets", err)
			}
		}
	}
}

// upstreamErr turns io.EOF from a Send before the receiver started into
// the stream's real status.
func upstreamErr(up discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, err error) error {
	if _, rerr := up.Recv(); rerr != nil {
		return rerr
	}
	return err
}

// handleSecrets validates an SDS response and writes the files.
func (a *Agent) handleSecrets(resp *discoveryv3.DiscoveryResponse, prev **secretSet) error {
	s, err := parseSecrets(resp, *prev)
	if err != nil {
		return err
	}
	if s == nil {
		return nil
	}
	if *prev != nil && (*prev).cert.Serial == s.cert.Serial && string((*prev).root) == string(s.root) {
		*prev = s
		return nil // same certificate; nothing to rewrite
	}
	if err := s.write(a.opts.CertDir); err != nil {
		return fmt.Errorf("writing the certificate files: %w", err)
	}
	*prev = s
	c := s.cert
	a.setCertificate(&c)
	a.log.Info("wrote workload certificate", "spiffe_id", c.SPIFFEID, "serial", c.Serial, "not_after", c.NotAfter, "dir", a.opts.CertDir)
	return nil
}
