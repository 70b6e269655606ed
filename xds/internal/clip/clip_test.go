package clip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	long := strings.Repeat("a", Max+1)
	// "é" is two bytes; placed so that Max falls inside it.
	split := strings.Repeat("a", Max-1) + "é" + "tail"
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"type.googleapis.com/envoy.config.cluster.v3.Cluster", "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
		{strings.Repeat("a", Max), strings.Repeat("a", Max)},
		{long, strings.Repeat("a", Max) + "…"},
		{split, strings.Repeat("a", Max-1) + "…"},
	} {
		got := String(tc.in)
		if got != tc.want {
			t.Errorf("String(%d bytes) = %q, want %q", len(tc.in), got, tc.want)
		}
		if utf8.ValidString(tc.in) && !utf8.ValidString(got) {
			t.Errorf("String(%q) = %q is not valid UTF-8", tc.in, got)
		}
	}
}

func TestTo(t *testing.T) {
	if got := To("abcdef", 3); got != "abc…" {
		t.Errorf("To(abcdef, 3) = %q, want %q", got, "abc…")
	}
	if got := To("abc", 3); got != "abc" {
		t.Errorf("To(abc, 3) = %q, want it unchanged", got)
	}
}
