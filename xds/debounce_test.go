package xds

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/minimesh/minimesh/discovery/model"
)

// fakeClock is a clock that moves only when the test says so. Every After
// call is announced on registered, so a test knows when the debouncer has
// armed a timer without sleeping.
type fakeClock struct {
	mu         sync.Mutex
	now        time.Time
	timers     []fakeTimer
	registered chan time.Time // deadline of each new timer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(start time.Time) *fakeClock {
	return &fakeClock{now: start, registered: make(chan time.Time, 16)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	at := c.now.Add(d)
	c.timers = append(c.timers, fakeTimer{at: at, ch: ch})
	c.mu.Unlock()
	c.registered <- at
	return ch
}

// next returns the earliest pending deadline.
func (c *fakeClock) next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var best time.Time
	for i, t := range c.timers {
		if i == 0 || t.at.Before(best) {
			best = t.at
		}
	}
	return best, len(c.timers) > 0
}

// advanceTo moves the clock and fires due timers; it reports how many fired.
func (c *fakeClock) advanceTo(t time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
	fired := 0
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if !tm.at.After(c.now) {
			tm.ch <- c.now
			fired++
			continue
		}
		kept = append(kept, tm)
	}
	c.timers = kept
	return fired
}

type pushAt struct {
	At    time.Duration // since the start of the test
	Count int
	First time.Duration // trigger time of the burst's first event
}

// runDebounce feeds events at the given offsets (ms) through debounce and
// returns the pushes it made, all on a fake clock. lateMS delays the
// delivery of the events it names (by index) past their trigger time, as a
// source that takes a while to build its snapshot does; deliveries must
// stay in order.
func runDebounce(t *testing.T, offsetsMS []int, lateMS map[int]int, after, max time.Duration) []pushAt {
	t.Helper()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := newFakeClock(start)
	ch := make(chan event) // unbuffered: a send returns once debounce has the event
	stop := make(chan struct{})
	pushed := make(chan event, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		debounce(ch, stop, after, max, clk, func(e event) { pushed <- e })
	}()
	defer func() {
		close(stop)
		<-done
	}()

	const bound = 5 * time.Second // only reached if debounce is broken
	waitRegistered := func() {
		t.Helper()
		select {
		case <-clk.registered:
		case <-time.After(bound):
			t.Fatal("debounce did not arm a timer")
		}
	}

	var got []pushAt
	i := 0
	for {
		nextEvent, trigger, haveEvent := time.Time{}, time.Time{}, i < len(offsetsMS)
		if haveEvent {
			trigger = start.Add(time.Duration(offsetsMS[i]) * time.Millisecond)
			nextEvent = trigger.Add(time.Duration(lateMS[i]) * time.Millisecond)
		}
		deadline, haveTimer := clk.next()
		switch {
		case haveTimer && (!haveEvent || !nextEvent.Before(deadline)):
			// A timer is due first (or at the same time as the event).
			if clk.advanceTo(deadline) != 1 {
				t.Fatalf("expected exactly one timer at %v", deadline.Sub(start))
			}
			// debounce reacts to a fired timer by pushing or re-arming.
			select {
			case e := <-pushed:
				got = append(got, pushAt{At: deadline.Sub(start), Count: e.count, First: e.first.Sub(start)})
			case <-clk.registered:
			case <-time.After(bound):
				t.Fatal("debounce neither pushed nor re-armed after its timer fired")
			}
		case haveEvent:
			clk.advanceTo(nextEvent)
			_, armed := clk.next()
			ch <- event{first: trigger, last: trigger, count: 1}
			if !armed {
				waitRegistered() // the first event of a burst arms the timer
			}
			i++
		default:
			return got
		}
	}
}

func TestDebounce(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name       string
		events     []int       // ms
		late       map[int]int // event index → ms it arrives after its trigger time
		after, max time.Duration
		want       []pushAt
	}{
		{
			name:   "single event pushes after the quiet period",
			events: []int{0},
			after:  100 * ms, max: time.Second,
			want: []pushAt{{At: 100 * ms, Count: 1}},
		},
		{
			name:   "events within the quiet period merge into one push",
			events: []int{0, 60, 120},
			after:  100 * ms, max: time.Second,
			want: []pushAt{{At: 220 * ms, Count: 3}},
		},
		{
			name:   "separate bursts push separately",
			events: []int{0, 300},
			after:  100 * ms, max: time.Second,
			want: []pushAt{{At: 100 * ms, Count: 1}, {At: 400 * ms, Count: 1, First: 300 * ms}},
		},
		{
			name:   "a steady trickle is pushed at the maximum delay",
			events: []int{0, 50, 100, 150, 200, 250, 300, 350, 400},
			after:  100 * ms, max: 300 * ms,
			want: []pushAt{{At: 300 * ms, Count: 6}, {At: 500 * ms, Count: 3, First: 300 * ms}},
		},
		{
			name:   "max is honoured exactly even when it is not a multiple of the quiet period",
			events: []int{0, 70, 140, 210},
			after:  100 * ms, max: 250 * ms,
			want: []pushAt{{At: 250 * ms, Count: 4}},
		},
		{
			name:   "the quiet period counts from when a late event happened",
			events: []int{0}, late: map[int]int{0: 60},
			after: 100 * ms, max: time.Second,
			want: []pushAt{{At: 100 * ms, Count: 1}},
		},
		{
			name:   "an event older than the quiet period pushes as soon as it arrives",
			events: []int{0}, late: map[int]int{0: 150},
			after: 100 * ms, max: time.Second,
			want: []pushAt{{At: 150 * ms, Count: 1}},
		},
		{
			name:   "a late second event extends the window from when it happened",
			events: []int{0, 50}, late: map[int]int{1: 40},
			after: 100 * ms, max: time.Second,
			want: []pushAt{{At: 150 * ms, Count: 2}},
		},
		{
			// A source 75 ms behind a change every 85 ms: the changes,
			// reported as they are seen (Server.Observe), keep the
			// window open, so the late snapshots merge into one push.
			name:   "changes observed as they happen hold a trickle of late snapshots together",
			events: []int{0, 0, 85, 85, 170, 170, 255, 255}, late: map[int]int{1: 75, 3: 75, 5: 75, 7: 75},
			after: 100 * ms, max: time.Second,
			want: []pushAt{{At: 355 * ms, Count: 8}},
		},
		{
			// The same snapshots from a source that does not report
			// changes as it sees them: each arrives after the quiet
			// period of its change and is pushed on its own.
			name:   "late snapshots alone are pushed one by one",
			events: []int{0, 85, 170}, late: map[int]int{0: 75, 1: 75, 2: 75},
			after: 100 * ms, max: time.Second,
			want: []pushAt{{At: 100 * ms, Count: 1}, {At: 185 * ms, Count: 1, First: 85 * ms}, {At: 270 * ms, Count: 1, First: 170 * ms}},
		},
		{
			name:   "zero quiet period pushes every event",
			events: []int{0, 10},
			after:  0, max: 0,
			want: []pushAt{{At: 0, Count: 1}, {At: 10 * ms, Count: 1, First: 10 * ms}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runDebounce(t, tt.events, tt.late, tt.after, tt.max)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("pushes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDebounceFlushesPendingBurstWhenInputCloses(t *testing.T) {
	clk := newFakeClock(time.Unix(0, 0))
	ch := make(chan event, 2)
	at := clk.Now()
	ch <- event{first: at, last: at, count: 1}
	ch <- event{first: at, last: at, count: 1}
	close(ch)
	var got []event
	debounce(ch, nil, time.Hour, time.Hour, clk, func(e event) { got = append(got, e) })
	if len(got) != 1 || got[0].count != 2 {
		t.Fatalf("pushes = %+v, want one push of 2 merged events", got)
	}
}

func TestDebounceStops(t *testing.T) {
	stop := make(chan struct{})
	close(stop)
	pushed := false
	// With stop closed and nothing pending, debounce must return at once.
	debounce(make(chan event), stop, time.Hour, time.Hour, newFakeClock(time.Unix(0, 0)), func(event) { pushed = true })
	if pushed {
		t.Fatal("debounce pushed without any event")
	}
}

// Update counts a change from when its source observed it, unless the
// source could not say or its clock is ahead.
func TestUpdateCountsFromWhenTheChangeWasObserved(t *testing.T) {
	s, err := New(Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-80 * time.Millisecond)
	for _, tt := range []struct {
		name     string
		observed time.Time
		want     func(before, after time.Time, got time.Time) bool
	}{
		{"observed earlier", past, func(_, _, got time.Time) bool { return got.Equal(past) }},
		{"not known", time.Time{}, func(before, after, got time.Time) bool { return !got.Before(before) && !got.After(after) }},
		{"in the future", time.Now().Add(time.Hour), func(before, after, got time.Time) bool { return !got.Before(before) && !got.After(after) }},
	} {
		snap := &model.Snapshot{ObservedAt: tt.observed}
		before := time.Now()
		s.Update(snap)
		after := time.Now()
		e := <-s.events
		if !tt.want(before, after, e.first) || !e.last.Equal(e.first) || e.count != 1 {
			t.Errorf("%s: Update of a snapshot observed at %v queued %+v (Update ran from %v to %v)", tt.name, tt.observed, e, before, after)
		}
		if !e.published.Equal(e.first) {
			t.Errorf("%s: Update queued %+v; a published change counts for convergence", tt.name, e)
		}
		before = time.Now()
		s.Observe(tt.observed)
		after = time.Now()
		e = <-s.events
		if !tt.want(before, after, e.first) || !e.last.Equal(e.first) || e.count != 1 || !e.published.IsZero() {
			t.Errorf("%s: Observe(%v) queued %+v (Observe ran from %v to %v)", tt.name, tt.observed, e, before, after)
		}
	}
}

// Changes observed before the source's first snapshot (a Kubernetes
// source's initial list) push nothing and do not make the server ready.
func TestObserveBeforeTheFirstSnapshot(t *testing.T) {
	s, err := New(Options{Log: slog.New(slog.DiscardHandler), DebounceAfter: time.Millisecond, DebounceMax: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		debounce(s.events, stop, s.opts.DebounceAfter, s.opts.DebounceMax, realClock{}, s.push)
	}()
	s.Observe(time.Now())
	s.Observe(time.Now())
	close(s.events) // debounce pushes what is pending and returns
	<-done
	close(stop)
	if s.Ready() || s.pushesDone.Load() != 0 {
		t.Errorf("observations alone: ready %v, %d pushes; want not ready, none", s.Ready(), s.pushesDone.Load())
	}
}

// A burst of observed changes that published no new snapshot pushes
// nothing; convergence counts from the earliest published change of a
// burst, not from a change observed before it that altered nothing.
func TestPushesOnlyNewSnapshots(t *testing.T) {
	s, err := New(Options{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Second)
	published := t0.Add(500 * time.Millisecond)
	burst := event{first: t0, last: t0, count: 1}.merge(event{first: published, last: published, published: published, count: 1})
	if !burst.first.Equal(t0) || !burst.published.Equal(published) {
		t.Fatalf("merged burst %+v: want first %v, published %v", burst, t0, published)
	}
	s.Update(&model.Snapshot{})
	<-s.events
	s.push(burst)
	if n := histogramCount(s.m.pushBuild); n != 1 || s.pushesDone.Load() != 1 || !s.Ready() {
		t.Fatalf("a new snapshot: %d builds, %d pushes, ready %v; want one push", n, s.pushesDone.Load(), s.Ready())
	}
	s.push(event{first: time.Now(), last: time.Now(), count: 1})
	if n := histogramCount(s.m.pushBuild); n != 1 || s.pushesDone.Load() != 2 {
		t.Errorf("observed changes, same snapshot: %d builds, %d pushes; want nothing built, the push counted", n, s.pushesDone.Load())
	}
}
