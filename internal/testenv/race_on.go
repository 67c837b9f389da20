//go:build race

package testenv

// raceEnabled builds the sidecar with the race detector when the tests run
// with it, so the end-to-end tests look for races in the real server too.
const raceEnabled = true
