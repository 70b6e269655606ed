package xds

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	securityv1alpha1 "istio.io/api/security/v1alpha1"

	"github.com/minimesh/minimesh/xds/auth"
	"github.com/minimesh/minimesh/xds/ca"
	"github.com/minimesh/minimesh/xds/internal/clip"
)

// Defaults for Options.CSRRate and CSRBurst: a deployment of a hundred
// replicas of one service account gets its certificates within seconds of
// starting, while one stolen token cannot keep the CA signing flat out.
const (
	DefaultCSRRate  = 10.0
	DefaultCSRBurst = 100
)

// certService is Istio's IstioCertificateService on meshd's xDS port:
// a workload (meshctl agent, or Istio's own agent) sends a certificate
// request for a key it made and keeps, with the same bearer token as on
// its xDS streams, and gets back a certificate chain.
//
// The identity in the certificate is the one the token proves, never what
// the request asks for: the request's subject and SANs are ignored (as
// istiod ignores them), so a token for A with a request for B gets a
// certificate for A. Only with authentication off (auth.None), when meshd
// hands any identity to anyone who asks over xDS anyway, does it decide as
// it does for an xDS stream: the node ID in the request's metadata
// (auth.MetadataNodeID) names a pod, and the pod's namespace and service
// account are the identity.
//
// The response chain is Istio's: the workload certificate, any
// intermediates, and last the trust bundle (which may hold more than one
// root), which Istio's agent reads as the root certificate.
type certService struct {
	securityv1alpha1.UnimplementedIstioCertificateServiceServer
	s       *Server
	limiter *identityLimiter
}

// CreateCertificate implements securityv1alpha1.IstioCertificateServiceServer.
func (c *certService) CreateCertificate(ctx context.Context, req *securityv1alpha1.IstioCertificateRequest) (*securityv1alpha1.IstioCertificateResponse, error) {
	s := c.s
	log := s.log.With("peer", peerAddr(ctx))
	id, err := s.caller(ctx)
	if err != nil {
		if errors.Is(err, auth.ErrUnavailable) {
			s.m.csrs.WithLabelValues("auth_unavailable").Inc()
			log.Warn("could not check the credentials of a certificate request", "error", err)
			// As for streams: err says how meshd reaches its
			// authenticator, which only meshd's log needs.
			return nil, status.Error(codes.Unavailable, "minimesh cannot check the certificate request's credentials right now; retry")
		}
		s.m.csrs.WithLabelValues("unauthenticated").Inc()
		log.Warn("refused a certificate request", "error", err)
		return nil, status.Errorf(codes.Unauthenticated, "minimesh refused the certificate request: %v", err)
	}
	csrPEM := []byte(req.GetCsr())
	if len(csrPEM) > ca.MaxCSRSize {
		s.m.csrs.WithLabelValues("invalid").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "the certificate request is %d bytes, more than the %d meshd accepts", len(csrPEM), ca.MaxCSRSize)
	}
	if id.Anonymous {
		if id, err = s.anonymousIdentity(req); err != nil {
			code := codes.InvalidArgument
			if errors.Is(err, auth.ErrPodUnknown) {
				code = codes.Unavailable
			}
			s.m.csrs.WithLabelValues("invalid").Inc()
			return nil, status.Errorf(code, "minimesh cannot sign the certificate request: %v", err)
		}
	} else if id.Namespace == "" || id.ServiceAccount == "" {
		// A broken authenticator must not open every door.
		s.m.csrs.WithLabelValues("error").Inc()
		log.Error("the authenticator returned an incomplete identity", "identity", id.String())
		return nil, status.Error(codes.PermissionDenied, "minimesh refused the certificate request: the token proves no complete identity")
	}
	if !c.limiter.allow(id.String(), time.Now()) {
		s.m.csrs.WithLabelValues("rate_limited").Inc()
		log.Warn("refused a certificate request over the rate limit", "identity", id.String())
		return nil, status.Errorf(codes.ResourceExhausted, "%s asks for certificates faster than the %g a second meshd signs for one identity; retry with backoff", id, c.limiter.rate)
	}
	cert, err := s.opts.CA.SignCSR(csrPEM, id.Namespace, id.ServiceAccount, requestedTTL(req.GetValidityDuration(), s.opts.CA.WorkloadTTL()))
	switch {
	case errors.Is(err, ca.ErrBadCSR):
		s.m.csrs.WithLabelValues("invalid").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "minimesh cannot sign the request: %v", err)
	case err != nil:
		s.m.csrs.WithLabelValues("error").Inc()
		log.Error("signing a certificate request failed", "identity", id.String(), "error", err)
		return nil, status.Errorf(codes.Internal, "minimesh could not sign the certificate for %s; its log says why", id)
	}
	chain, err := splitPEM(cert.ChainPEM)
	if err != nil {
		s.m.csrs.WithLabelValues("error").Inc()
		log.Error("the CA returned a chain meshd cannot split", "error", err)
		return nil, status.Error(codes.Internal, "minimesh could not encode the certificate chain; its log says why")
	}
	s.m.csrs.WithLabelValues("signed").Inc()
	s.m.certsIssued.Inc()
	log.Info("signed a workload certificate request", "spiffe_id", cert.SPIFFEID, "serial", cert.Serial, "not_after", cert.NotAfter)
	return &securityv1alpha1.IstioCertificateResponse{CertChain: append(chain, string(s.opts.CA.RootPEM()))}, nil
}

// requestedTTL turns IstioCertificateRequest.validity_duration (seconds)
// into a lifetime for ca.SignCSR, which clamps it; a value that would
// overflow a Duration asks for the longest lifetime there is.
func requestedTTL(seconds int64, longest time.Duration) time.Duration {
	if seconds <= 0 || seconds > int64(longest/time.Second) {
		return 0
	}
	return time.Duration(seconds) * time.Second
}

// splitPEM returns each PEM block of data as a string of its own, the form
// of IstioCertificateResponse.cert_chain.
func splitPEM(data []byte) ([]string, error) {
	var out []string
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		out = append(out, string(pem.EncodeToMemory(b)))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no PEM block in %d bytes", len(data))
	}
	return out, nil
}

// anonymousIdentity is the identity of a request with authentication off:
// that of the pod its node ID names, as auth.Authorize gives an anonymous
// xDS stream. Errors wrap auth.ErrBadNodeID or auth.ErrPodUnknown.
func (s *Server) anonymousIdentity(req *securityv1alpha1.IstioCertificateRequest) (auth.Identity, error) {
	raw := req.GetMetadata().GetFields()[auth.MetadataNodeID].GetStringValue()
	if raw == "" {
		return auth.Identity{}, fmt.Errorf("%w: without authentication meshd needs the node ID in the request's metadata %q", auth.ErrBadNodeID, auth.MetadataNodeID)
	}
	node, err := auth.ParseNodeID(raw)
	if err != nil {
		return auth.Identity{}, err
	}
	if cd := s.opts.Translate.ClusterDomain; node.ClusterDomain() != cd {
		return auth.Identity{}, fmt.Errorf("%w %q: its cluster domain is not this mesh's, %q", auth.ErrBadNodeID, clip.String(raw), cd)
	}
	var podSA string
	s.mu.Lock()
	if s.model != nil {
		if w := s.model.Workload(node.Namespace, node.Pod); w != nil {
			podSA = w.ServiceAccount
		}
	}
	s.mu.Unlock()
	return auth.Authorize(auth.Identity{Anonymous: true}, node, podSA)
}
