// Package clip shortens strings a client sent (type URLs, resource and
// node names, NACK messages) before meshd logs them or quotes them back,
// so that a client cannot make a log line or an error as long as its
// request.
package clip

import "unicode/utf8"

// Max is the most bytes of a client's string that String keeps.
const Max = 128

// String returns s if it is at most Max bytes long, and otherwise its
// first Max bytes (cut before a split UTF-8 sequence) followed by "…".
func String(s string) string { return To(s, Max) }

// To is String with a limit of its own, for texts that are useful longer
// (a proxy's NACK message).
func To(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
