//go:build !race

package xds

// raceDetector: see race_test.go.
const raceDetector = false
