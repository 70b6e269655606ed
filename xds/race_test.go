//go:build race

package xds

// raceDetector is set when the tests run under the race detector, which
// makes each memory access several times slower: tests that move a lot of
// data scale it down there (the full size runs in the ordinary test run).
const raceDetector = true
