//go:build !race

package ratelimit_test

// manyKeys is the number of keys of TestManyKeysBoundedMemory.
const manyKeys = 10_000_000
