package ca

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestCertificateNeverShowsItsKey(t *testing.T) {
	now, _ := fakeClock(t0)
	c := newSelfSigned(t, t.TempDir(), now)
	cert, err := c.Issue("default", "web")
	if err != nil {
		t.Fatal(err)
	}
	// Without this the test would pass for a certificate with no key.
	if raw := []byte(cert.KeyPEM); !bytes.Contains(raw, []byte("PRIVATE KEY")) {
		t.Fatalf("issued certificate has no PEM key to hide")
	}

	type holder struct {
		Name string
		Cert *Certificate
		Val  Certificate
		Key  PrivateKeyPEM
	}
	h := holder{Name: "proxy", Cert: cert, Val: *cert, Key: cert.KeyPEM}

	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		outputs["fmt "+verb+" pointer"] = fmt.Sprintf(verb, cert)
		outputs["fmt "+verb+" value"] = fmt.Sprintf(verb, *cert)
		outputs["fmt "+verb+" key"] = fmt.Sprintf(verb, cert.KeyPEM)
		outputs["fmt "+verb+" holder"] = fmt.Sprintf(verb, h)
	}
	outputs["fmt Println"] = fmt.Sprintln(cert, *cert, cert.KeyPEM)
	outputs["error wrapping"] = fmt.Errorf("serving %v: %w", cert, fmt.Errorf("%v", cert.KeyPEM)).Error()

	for name, v := range map[string]any{"pointer": cert, "value": *cert, "holder": h, "key": cert.KeyPEM} {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json %s: %v", name, err)
		}
		outputs["json "+name] = string(data)
	}

	for name, handler := range map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		log := slog.New(handler(&buf))
		log.Info("issued", "cert", cert, "value", *cert, "key", cert.KeyPEM, "holder", h)
		log.Info("issued", slog.Any("cert", cert), slog.Any("key", cert.KeyPEM))
		outputs["slog "+name] = buf.String()
	}

	// The key's PEM header, and its first bytes in hex and base64 (what
	// fmt %x and encoding/json would print for a plain []byte).
	leaks := []string{
		"PRIVATE KEY",
		hex.EncodeToString(cert.KeyPEM)[:32],
		base64.StdEncoding.EncodeToString(cert.KeyPEM)[:32],
	}
	for name, out := range outputs {
		for _, leak := range leaks {
			if strings.Contains(out, leak) {
				t.Errorf("%s shows key material (%q): %s", name, leak, out)
			}
		}
	}

	// The redacted forms still say what the certificate is.
	if !strings.Contains(outputs["fmt %v pointer"], cert.SPIFFEID) || !strings.Contains(outputs["slog text"], cert.SPIFFEID) {
		t.Errorf("summary lacks the SPIFFE ID: %q / %q", outputs["fmt %v pointer"], outputs["slog text"])
	}
	var decoded map[string]any
	if err := json.Unmarshal([]byte(outputs["json pointer"]), &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded["keyPEM"] != redacted || !strings.Contains(fmt.Sprint(decoded["chainPEM"]), "BEGIN CERTIFICATE") || decoded["spiffeID"] != cert.SPIFFEID {
		t.Errorf("JSON form = %s, want the chain, the SPIFFE ID and a redacted key", outputs["json pointer"])
	}
}
