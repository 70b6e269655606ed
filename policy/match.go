package policy

import (
	"fmt"
	"strings"
)

// MatchKind is how an Istio string pattern (principals, namespaces, hosts,
// paths, methods, ...) compares against a value.
type MatchKind int

// Match kinds, as Istio's authorization policy defines them.
const (
	// MatchExact matches the value exactly.
	MatchExact MatchKind = iota
	// MatchPrefix matches values that start with the pattern ("foo*").
	MatchPrefix
	// MatchSuffix matches values that end with the pattern ("*foo").
	MatchSuffix
	// MatchAny matches every non-empty value ("*").
	MatchAny
)

func (k MatchKind) String() string {
	switch k {
	case MatchExact:
		return "exact"
	case MatchPrefix:
		return "prefix"
	case MatchSuffix:
		return "suffix"
	case MatchAny:
		return "any"
	default:
		return fmt.Sprintf("MatchKind(%d)", int(k))
	}
}

// ParseMatch splits an Istio pattern into its kind and the literal part:
// "*" is MatchAny, "foo*" is MatchPrefix "foo", "*foo" is MatchSuffix "foo",
// anything else is MatchExact. Like Istio, a leading "*" is checked first,
// so "*foo*" parses as suffix "foo*"; validation refuses such patterns (see
// ValidateMatch), so translation never sees them.
func ParseMatch(s string) (MatchKind, string) {
	switch {
	case s == "*":
		return MatchAny, ""
	case strings.HasPrefix(s, "*"):
		return MatchSuffix, s[1:]
	case strings.HasSuffix(s, "*"):
		return MatchPrefix, s[:len(s)-1]
	default:
		return MatchExact, s
	}
}

// Matches reports whether value satisfies the Istio pattern. MatchAny
// requires a non-empty value, as Envoy's "present" matcher does.
func Matches(pattern, value string) bool {
	kind, lit := ParseMatch(pattern)
	switch kind {
	case MatchAny:
		return value != ""
	case MatchPrefix:
		return strings.HasPrefix(value, lit)
	case MatchSuffix:
		return strings.HasSuffix(value, lit)
	default:
		return value == lit
	}
}

// ValidateMatch checks that s is a pattern Istio accepts: non-empty, and a
// "*" only as the whole pattern, the first character or the last one.
func ValidateMatch(s string) error {
	if s == "" {
		return fmt.Errorf("must not be empty; use exact text, \"prefix*\", \"*suffix\" or \"*\"")
	}
	if s == "*" {
		return nil
	}
	inner := s
	switch {
	case strings.HasPrefix(inner, "*"):
		inner = inner[1:]
	case strings.HasSuffix(inner, "*"):
		inner = inner[:len(inner)-1]
	}
	if strings.Contains(inner, "*") {
		return fmt.Errorf("%q has a \"*\" that is not at the start or the end; "+
			"use exact text, \"prefix*\", \"*suffix\" or \"*\" (path templates such as {*} are not supported)", s)
	}
	return nil
}

// ParseConditionKey splits an AuthorizationPolicy when key into its base and
// bracketed names: "request.headers[x-user]" is ("request.headers",
// ["x-user"]), "request.auth.claims[a][b]" is ("request.auth.claims",
// ["a", "b"]) and "source.ip" is ("source.ip", nil). It does not check that
// the key is supported; validation has done that for decoded policies.
func ParseConditionKey(key string) (base string, names []string) {
	i := strings.IndexByte(key, '[')
	if i < 0 {
		return key, nil
	}
	names, err := bracketNames(key[i:])
	if err != nil {
		return key, nil
	}
	return key[:i], names
}
