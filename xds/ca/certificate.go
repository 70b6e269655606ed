package ca

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"
)

// redacted replaces private key material wherever a value is printed,
// logged or marshalled.
const redacted = "[redacted]"

// PrivateKeyPEM is a PEM-encoded private key. It is a []byte that refuses to
// show itself: every fmt verb, slog and encoding/json print a placeholder, so
// a key that ends up in a log line, a debug dump or an error message by
// mistake does not leak. It is assignable to []byte wherever the key is
// really needed (an SDS secret).
type PrivateKeyPEM []byte

// Format implements fmt.Formatter for every verb, including %x and %#v.
func (PrivateKeyPEM) Format(f fmt.State, _ rune) { fmt.Fprint(f, redacted) }

// String implements fmt.Stringer.
func (PrivateKeyPEM) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (PrivateKeyPEM) GoString() string { return redacted }

// LogValue implements slog.LogValuer.
func (PrivateKeyPEM) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler.
func (PrivateKeyPEM) MarshalJSON() ([]byte, error) { return json.Marshal(redacted) }

// MarshalText implements encoding.TextMarshaler, for encoders that prefer it.
func (PrivateKeyPEM) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Certificate is a signed workload certificate. It is what SDS serves as the
// secret named "default".
type Certificate struct {
	// ChainPEM is the workload certificate followed by any intermediates up
	// to, but not including, the root: peers validate against the trust
	// bundle (ROOTCA), so sending the root would only cost bytes.
	ChainPEM []byte
	// KeyPEM is the PKCS #8 private key. It is empty for certificates signed
	// from a CSR, whose key never leaves the agent.
	KeyPEM PrivateKeyPEM
	// SPIFFEID is the URI SAN, spiffe://<trust-domain>/ns/<ns>/sa/<sa>.
	SPIFFEID string
	// Serial is the certificate's serial number in lowercase hex.
	Serial    string
	NotBefore time.Time
	NotAfter  time.Time
	// IssuedAt is when the CA signed it. NotBefore is backdated for clock
	// skew, so renewal is timed from IssuedAt instead: with a short lifetime
	// the backdating would otherwise make a fresh certificate due at once.
	IssuedAt time.Time
}

// RenewAt is when the certificate should be replaced: half way through its
// lifetime, which leaves the other half to retry if the CA or a proxy is
// briefly unavailable.
func (c Certificate) RenewAt() time.Time {
	start := c.IssuedAt
	if start.IsZero() || start.Before(c.NotBefore) {
		start = c.NotBefore
	}
	return start.Add(c.NotAfter.Sub(start) / 2)
}

// String summarises the certificate without its key.
func (c Certificate) String() string {
	return fmt.Sprintf("certificate %s serial %s valid %s to %s",
		c.SPIFFEID, c.Serial, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
}

// GoString keeps %#v from printing fields one by one.
func (c Certificate) GoString() string { return c.String() }

// Format implements fmt.Formatter so that every verb, including %+v and %x,
// prints the summary and never the fields.
func (c Certificate) Format(f fmt.State, _ rune) { fmt.Fprint(f, c.String()) }

// LogValue implements slog.LogValuer: the identity and validity, never the key.
func (c Certificate) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("spiffe_id", c.SPIFFEID),
		slog.String("serial", c.Serial),
		slog.Time("not_before", c.NotBefore),
		slog.Time("not_after", c.NotAfter),
	)
}

// certificateJSON is the JSON form: the chain as text and the key redacted,
// so the debug API can show a certificate as is.
type certificateJSON struct {
	SPIFFEID  string    `json:"spiffeID"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	ChainPEM  string    `json:"chainPEM"`
	KeyPEM    string    `json:"keyPEM,omitempty"`
}

// MarshalJSON implements json.Marshaler with the key redacted.
func (c Certificate) MarshalJSON() ([]byte, error) {
	out := certificateJSON{
		SPIFFEID:  c.SPIFFEID,
		Serial:    c.Serial,
		NotBefore: c.NotBefore,
		NotAfter:  c.NotAfter,
		ChainPEM:  string(c.ChainPEM),
	}
	if len(c.KeyPEM) > 0 {
		out.KeyPEM = redacted
	}
	return json.Marshal(out)
}
