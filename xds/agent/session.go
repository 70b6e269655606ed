package agent

import (
	"context"
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
)

// Backoff between attempts to reach meshd.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
	// stableAfter: a session that lasted this long resets the backoff.
	stableAfter = 10 * time.Second
)

// certLoop keeps the certificate session to meshd open until ctx ends.
// Workload streams come and go on their own upstream streams and never
// restart it, so meshd sees one steady SDS subscriber per node.
func (a *Agent) certLoop(ctx context.Context) {
	var (
		backoff = backoffMin
		prev    *secretSet
	)
	for ctx.Err() == nil {
		start := time.Now()
		got, err := a.certSession(ctx, &prev)
		if ctx.Err() != nil {
			return
		}
		if got || time.Since(start) > stableAfter {
			backoff = backoffMin
		}
		a.log.Warn("lost the connection to meshd; the workload keeps its certificate files and last configuration, retrying",
			"meshd", a.opts.XDSAddress, "retry_in", backoff.Round(time.Millisecond), "error", err)
		wait := time.NewTimer(backoff + rand.N(backoff/4+1))
		select {
		case <-ctx.Done():
			wait.Stop()
			return
		case <-wait.C:
		}
		backoff = min(backoff*2, backoffMax)
	}
}

// withToken returns ctx carrying the bearer token for meshd, read from the
// token file now: projected tokens rotate, so every new stream reads it.
func (a *Agent) withToken(ctx context.Context) (context.Context, error) {
	if a.opts.TokenFile == "" {
		return ctx, nil
	}
	tok, err := os.ReadFile(a.opts.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading the token file: %w", err)
	}
	t := strings.TrimSpace(string(tok))
	if t == "" {
		return nil, fmt.Errorf("the token file %s is empty", a.opts.TokenFile)
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+t), nil
}

// certSession runs one upstream ADS stream that asks only for the
// workload's secrets, writes them to files and ACKs them. It returns
// whether any response arrived and why the stream ended; it runs until the
// stream fails or ctx ends.
func (a *Agent) certSession(ctx context.Context, prev **secretSet) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctx, err = a.withToken(ctx)
	if err != nil {
		return false, err
	}
	up, err := a.ads.StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("opening an ADS stream to meshd: %w", err)
	}
	sdsNames := []string{SecretDefault, SecretRootCA}
	if err := up.Send(&discoveryv3.DiscoveryRequest{
		Node:          a.node,
		TypeUrl:       resourcev3.SecretType,
		ResourceNames: sdsNames,
	}); err != nil {
		return false, fmt.Errorf("requesting secrets from meshd: %w", upstreamErr(up))
	}
	acceptedSDS := ""
	for {
		resp, err := up.Recv()
		if err != nil {
			return got, fmt.Errorf("receiving secrets from meshd: %w", err)
		}
		got = true
		if resp.GetTypeUrl() != resourcev3.SecretType {
			// This stream subscribes to nothing else; a response of
			// another type needs no ACK here.
			a.log.Debug("ignoring a response of a type the certificate session did not ask for", "type", resp.GetTypeUrl())
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
			return got, fmt.Errorf("acknowledging secrets: %w", upstreamErr(up))
		}
	}
}

// upstreamErr returns the real status of a stream whose Send failed: Send
// only reports io.EOF, Recv reports why. Only for a stream whose responses
// nobody else is receiving.
func upstreamErr(up discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient) error {
	for {
		if _, rerr := up.Recv(); rerr != nil {
			return rerr
		}
	}
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
