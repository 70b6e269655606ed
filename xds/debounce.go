package xds

import "time"

// event is one reason to push: a new model snapshot. Events of one burst
// merge into one push.
type event struct {
	// first and last are the trigger times of the earliest and latest
	// change in the burst, observed or published.
	first, last time.Time
	// published is the trigger time of the earliest change in the
	// burst that a published snapshot reflects, zero when the burst
	// only observed changes: convergence is measured from it, so that
	// a change a source observed but found did not alter the mesh does
	// not count.
	published time.Time
	// count is how many changes were merged.
	count int
}

// merge folds b into a.
func (a event) merge(b event) event {
	if a.count == 0 {
		return b
	}
	if b.first.Before(a.first) {
		a.first = b.first
	}
	if b.last.After(a.last) {
		a.last = b.last
	}
	if !b.published.IsZero() && (a.published.IsZero() || b.published.Before(a.published)) {
		a.published = b.published
	}
	a.count += b.count
	return a
}

// clock is the part of time the debouncer uses, so tests can drive it.
type clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// debounce merges events from ch and calls push once a burst has settled:
// after `after` without a new event, or `max` after the burst's first event
// if changes keep coming, whichever is sooner. This is Istio's debounce: a
// rolling update of many pods becomes a handful of pushes instead of one per
// pod, yet a constant trickle of changes cannot postpone a push forever.
//
// Quiet time is measured from each event's own trigger time rather than from
// when debounce received it, so a slow receiver (or a source that took a
// while to build the snapshot) does not stretch the window.
// push runs on debounce's goroutine: events that arrive meanwhile wait in ch
// and form the next burst, so two pushes never overlap. debounce returns when
// stop is closed or ch is closed; a pending burst is pushed when ch closes.
func debounce(ch <-chan event, stop <-chan struct{}, after, max time.Duration, clk clock, push func(event)) {
	if max < after {
		max = after
	}
	var (
		pending event
		timer   <-chan time.Time // nil while no burst is pending
	)
	for {
		select {
		case <-stop:
			return
		case e, ok := <-ch:
			if !ok {
				if pending.count > 0 {
					push(pending)
				}
				return
			}
			pending = pending.merge(e)
			if timer == nil {
				// The quiet period began when the change happened,
				// which may be a while before it got here.
				wait := after - clk.Now().Sub(pending.last)
				if wait < 0 {
					wait = 0
				}
				timer = clk.After(wait)
			}
		case <-timer:
			now := clk.Now()
			quiet := now.Sub(pending.last)
			total := now.Sub(pending.first)
			if quiet >= after || total >= max {
				timer = nil
				burst := pending
				pending = event{}
				push(burst)
				continue
			}
			// Not settled yet: wait for the rest of the quiet period, but
			// never past the burst's deadline.
			wait := after - quiet
			if rest := max - total; rest < wait {
				wait = rest
			}
			timer = clk.After(wait)
		}
	}
}
