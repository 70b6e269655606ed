package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	mathrand "math/rand/v2"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	securityv1alpha1 "istio.io/api/security/v1alpha1"

	"github.com/minimesh/minimesh/xds/auth"
)

// Backoff between attempts to reach meshd.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
	// csrTimeout bounds one certificate request.
	csrTimeout = 10 * time.Second
)

// certLoop gets the workload's certificate by CSR until ctx ends: at
// once, then again at half the lifetime of each certificate it got. A
// request that fails leaves the files as they are, so the workload keeps
// serving with the certificate it has, and is retried with backoff.
func (a *Agent) certLoop(ctx context.Context) {
	backoff := backoffMin
	for ctx.Err() == nil {
		renewAt, err := a.renew(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := time.Until(renewAt)
		if err != nil {
			wait = backoff + mathrand.N(backoff/4+1)
			a.log.Warn("could not get a certificate from meshd; the workload keeps its certificate files, retrying",
				"meshd", a.opts.XDSAddress, "retry_in", wait.Round(time.Millisecond), "error", err)
			backoff = min(backoff*2, backoffMax)
		} else {
			backoff = backoffMin
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// renew makes a new key, has meshd sign a request for it and writes key,
// chain and bundle together. It returns when the certificate is due for
// renewal: half its remaining lifetime from now. Only the CSR leaves the
// agent; the key goes to disk and nowhere else.
func (a *Agent) renew(ctx context.Context) (time.Time, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return time.Time{}, fmt.Errorf("generating the workload key: %w", err)
	}
	// No subject or SANs: meshd takes the identity from the token (or,
	// without authentication, from the pod the node ID names).
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return time.Time{}, fmt.Errorf("creating the certificate request: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return time.Time{}, fmt.Errorf("encoding the workload key: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, csrTimeout)
	defer cancel()
	ctx, err = a.withToken(ctx)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := a.ca.CreateCertificate(ctx, &securityv1alpha1.IstioCertificateRequest{
		Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			auth.MetadataNodeID: structpb.NewStringValue(a.node.GetId()),
		}},
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("asking meshd to sign a certificate: %w", err)
	}
	received := time.Now()
	chain := resp.GetCertChain()
	if len(chain) < 2 {
		return time.Time{}, fmt.Errorf("meshd answered with %d certificates; want the workload certificate and, last, the trust bundle", len(chain))
	}
	s, err := newSecretSet([]byte(strings.Join(chain[:len(chain)-1], "")),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), []byte(chain[len(chain)-1]))
	if err != nil {
		return time.Time{}, fmt.Errorf("meshd's answer: %w", err)
	}
	if err := s.write(a.opts.CertDir); err != nil {
		return time.Time{}, fmt.Errorf("writing the certificate files: %w", err)
	}
	c := s.cert
	a.setCertificate(&c)
	a.log.Info("wrote workload certificate", "spiffe_id", c.SPIFFEID, "serial", c.Serial, "not_after", c.NotAfter, "dir", a.opts.CertDir)
	return received.Add(c.NotAfter.Sub(received) / 2), nil
}

// withToken returns ctx carrying the bearer token for meshd, read from the
// token file now: projected tokens rotate, so every new call reads it.
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
