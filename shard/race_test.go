//go:build race

package shard_test

// raceEnabled is true when the tests run under the race detector, which
// makes the million-key measurements too slow to run in full.
const raceEnabled = true
