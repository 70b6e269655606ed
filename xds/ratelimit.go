package xds

import (
	"sync"
	"time"
)

// maxLimitedIdentities bounds how many identities identityLimiter tracks
// at once. A bucket that has refilled is forgotten, so only identities
// that asked within the last burst/rate seconds count.
const maxLimitedIdentities = 10_000

// identityLimiter is a token bucket per identity: each holds up to burst
// tokens, refills at rate a second, and a call takes one. Memory is
// bounded: full buckets are dropped when the table is full, and while it
// is still full an identity without a bucket is refused, so a flood of
// new identities (possible only with authentication off) cannot grow it.
type identityLimiter struct {
	rate  float64
	burst float64

	mu      sync.Mutex
	buckets map[string]*tokenBucket
}

type tokenBucket struct {
	tokens float64
	at     time.Time
}

func newIdentityLimiter(rate float64, burst int) *identityLimiter {
	return &identityLimiter{rate: rate, burst: float64(burst), buckets: map[string]*tokenBucket{}}
}

// allow takes a token from id's bucket at now, and reports whether there
// was one.
func (l *identityLimiter) allow(id string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[id]
	if b == nil {
		if len(l.buckets) >= maxLimitedIdentities {
			l.dropFull(now)
			if len(l.buckets) >= maxLimitedIdentities {
				return false
			}
		}
		b = &tokenBucket{tokens: l.burst, at: now}
		l.buckets[id] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *identityLimiter) refill(b *tokenBucket, now time.Time) {
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.at = now
	}
}

// dropFull forgets every bucket that has refilled: a new one would be the
// same.
func (l *identityLimiter) dropFull(now time.Time) {
	for id, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, id)
		}
	}
}
