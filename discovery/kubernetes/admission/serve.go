package admission

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Path is where the webhook answers; the ValidatingWebhookConfiguration's
// clientConfig names it.
const Path = "/validate"

// ServeOptions configure Serve.
type ServeOptions struct {
	// GetCertificate returns the serving certificate for each TLS
	// handshake (meshd passes ca.ServingCertificate.GetCertificate, which
	// renews it). Required.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Log receives the webhook's decisions and TLS errors; slog.Default()
	// when nil.
	Log *slog.Logger
}

// Serve serves the webhook at Path over TLS on lis until ctx ends, then
// shuts down (letting requests in flight finish for a few seconds) and
// returns nil. Any other path is 404.
func Serve(ctx context.Context, lis net.Listener, opts ServeOptions) error {
	if opts.GetCertificate == nil {
		return errors.New("admission webhook: no serving certificate")
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.Handle(Path, NewHandler(log))
	srv := &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			GetCertificate: opts.GetCertificate,
			MinVersion:     tls.VersionTLS12,
		},
		// The API server gives up after the webhook's timeoutSeconds
		// (at most 30); nothing legitimate takes longer.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// TLS handshake failures land here; a wrong caBundle shows up as
		// "bad certificate" from the API server.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = srv.Shutdown(shutdownCtx)
			cancel()
		case <-done:
		}
	}()
	err := srv.ServeTLS(lis, "", "")
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("admission webhook on %s: %w", lis.Addr(), err)
}
