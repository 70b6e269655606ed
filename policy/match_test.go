package policy

import (
	"slices"
	"testing"
)

func TestParseMatch(t *testing.T) {
	tests := []struct {
		in   string
		kind MatchKind
		lit  string
	}{
		{"*", MatchAny, ""},
		{"/api/*", MatchPrefix, "/api/"},
		{"*.example.com", MatchSuffix, ".example.com"},
		{"GET", MatchExact, "GET"},
		{"", MatchExact, ""},
		// A leading "*" is checked first, as in Istio.
		{"*mid*", MatchSuffix, "mid*"},
	}
	for _, tt := range tests {
		kind, lit := ParseMatch(tt.in)
		if kind != tt.kind || lit != tt.lit {
			t.Errorf("ParseMatch(%q) = %v, %q; want %v, %q", tt.in, kind, lit, tt.kind, tt.lit)
		}
	}
}

func TestMatches(t *testing.T) {
	tests := []struct {
		pattern, value string
		want           bool
	}{
		{"*", "anything", true},
		{"*", "", false},
		{"cluster.local/ns/default/*", "cluster.local/ns/default/sa/gw", true},
		{"cluster.local/ns/default/*", "cluster.local/ns/test/sa/gw", false},
		{"*/sa/gw", "cluster.local/ns/default/sa/gw", true},
		{"*/sa/gw", "cluster.local/ns/default/sa/gw2", false},
		{"/products/1", "/products/1", true},
		{"/products/1", "/products/10", false},
	}
	for _, tt := range tests {
		if got := Matches(tt.pattern, tt.value); got != tt.want {
			t.Errorf("Matches(%q, %q) = %v, want %v", tt.pattern, tt.value, got, tt.want)
		}
	}
}

func TestValidateMatch(t *testing.T) {
	tests := []struct {
		in    string
		valid bool
	}{
		{"*", true},
		{"exact", true},
		{"prefix*", true},
		{"*suffix", true},
		{"", false},
		{"a*b", false},
		{"*a*", false},
		{"a**", false},
		{"**", false},
		{"/api/{*}", false},
	}
	for _, tt := range tests {
		if err := ValidateMatch(tt.in); (err == nil) != tt.valid {
			t.Errorf("ValidateMatch(%q) = %v, want valid=%v", tt.in, err, tt.valid)
		}
	}
}

func TestParseConditionKey(t *testing.T) {
	tests := []struct {
		key   string
		base  string
		names []string
	}{
		{"source.ip", "source.ip", nil},
		{"request.headers[x-user]", "request.headers", []string{"x-user"}},
		{"request.auth.claims[a][b]", "request.auth.claims", []string{"a", "b"}},
		{"request.headers[", "request.headers[", nil},
	}
	for _, tt := range tests {
		base, names := ParseConditionKey(tt.key)
		if base != tt.base || !slices.Equal(names, tt.names) {
			t.Errorf("ParseConditionKey(%q) = %q, %q; want %q, %q", tt.key, base, names, tt.base, tt.names)
		}
	}
}
