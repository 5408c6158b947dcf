//go:build race

package ratelimit_test

// manyKeys is the number of keys of TestManyKeysBoundedMemory under the race
// detector: ten million take close to three minutes there, so the race run
// cycles one million (still five times the live set) and the plain
// `go test` run cycles the full ten million.
const manyKeys = 1_000_000
