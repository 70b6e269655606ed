package ca

import (
	"fmt"
	"strings"
)

// DefaultTrustDomain is Istio's default trust domain, so principals such as
// "cluster.local/ns/default/sa/bookinfo-productpage" in policies copied from
// Istio match minimesh's certificates unchanged.
const DefaultTrustDomain = "cluster.local"

// SPIFFEID is the workload identity Istio puts in the URI SAN:
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>. It does not
// validate its inputs; Issue and SignCSR do before signing.
func SPIFFEID(trustDomain, ns, sa string) string {
	return "spiffe://" + trustDomain + "/ns/" + ns + "/sa/" + sa
}

// ValidateIdentity reports whether ns and sa can be put into a SPIFFE ID
// without changing its meaning: a namespace is a DNS label and a service
// account a DNS subdomain, as Kubernetes requires, so neither can contain
// "/" and smuggle in extra path segments.
func ValidateIdentity(ns, sa string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	return ValidateServiceAccount(sa)
}

// ValidateNamespace checks that ns is a Kubernetes namespace name (a DNS
// label); the error names the value and the rule.
func ValidateNamespace(ns string) error {
	if err := validateDNSLabel(ns); err != nil {
		return fmt.Errorf("namespace %q %w", ns, err)
	}
	return nil
}

// ValidateServiceAccount checks that sa is a Kubernetes service account
// name (a DNS subdomain); the error names the value and the rule.
func ValidateServiceAccount(sa string) error {
	if err := validateDNSSubdomain(sa); err != nil {
		return fmt.Errorf("service account %q %w", sa, err)
	}
	return nil
}

// validateTrustDomain follows the SPIFFE ID spec: lowercase letters, digits,
// '.', '-' and '_' only (no port, no user info, no uppercase).
func validateTrustDomain(td string) error {
	if td == "" {
		return fmt.Errorf("trust domain is empty; use %q unless your mesh federates with another", DefaultTrustDomain)
	}
	if len(td) > 255 {
		return fmt.Errorf("trust domain %q is longer than 255 characters", td)
	}
	for _, r := range td {
		if !isLowerAlnum(r) && r != '.' && r != '-' && r != '_' {
			return fmt.Errorf("trust domain %q contains %q; only lowercase letters, digits, '.', '-' and '_' are allowed", td, r)
		}
	}
	return nil
}

// validateDNSLabel checks an RFC 1123 label, the form of a Kubernetes
// namespace name. The error completes a sentence that starts with the value.
func validateDNSLabel(s string) error {
	const rule = "must be a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
	if s == "" {
		return fmt.Errorf("is empty; it %s", rule)
	}
	if len(s) > 63 {
		return fmt.Errorf("is %d characters long; it %s", len(s), rule)
	}
	for i, r := range s {
		ok := isLowerAlnum(r) || (r == '-' && i != 0 && i != len(s)-1)
		if !ok {
			return fmt.Errorf("has %q at position %d; it %s", r, i+1, rule)
		}
	}
	return nil
}

// validateDNSSubdomain checks an RFC 1123 subdomain (dot-separated labels,
// at most 253 characters), the form of a Kubernetes service account name.
func validateDNSSubdomain(s string) error {
	const rule = "must be a DNS subdomain: at most 253 lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit"
	if s == "" {
		return fmt.Errorf("is empty; it %s", rule)
	}
	if len(s) > 253 {
		return fmt.Errorf("is %d characters long; it %s", len(s), rule)
	}
	pos := 1
	for part := range strings.SplitSeq(s, ".") {
		if part == "" {
			return fmt.Errorf("has an empty part at position %d; it %s", pos, rule)
		}
		for i, r := range part {
			ok := isLowerAlnum(r) || (r == '-' && i != 0 && i != len(part)-1)
			if !ok {
				return fmt.Errorf("has %q at position %d; it %s", r, pos+i, rule)
			}
		}
		pos += len(part) + 1
	}
	return nil
}

func isLowerAlnum(r rune) bool {
	return ('a' <= r && r <= 'z') || ('0' <= r && r <= '9')
}
