package config

import (
	"strings"
	"testing"
)

// appDoc is an app section with one collection and the given cache section.
func appDoc(cacheSection, strategy, consistency string) string {
	return "app:\n  store: {kind: sqlite, path: d.db}\n" + cacheSection +
		"  collections:\n    docs: {strategy: " + strategy + ", consistency: " + consistency + "}\n"
}

func TestAppCacheSection(t *testing.T) {
	for _, tc := range []struct {
		name, cache, strategy, consistency string
		err                                string // "" when valid
	}{
		{"node", "  cache: {kind: node, addrs: [\"${STRATA_CACHE_ADDR}\"], token_env: STRATA_CACHE_TOKEN}\n", "cache-aside", "strong", ""},
		{"node needs a token", "  cache: {kind: node, addrs: [\"127.0.0.1:7000\"]}\n", "cache-aside", "strong", "token_env"},
		{"node has one address", "  cache: {kind: node, addrs: [\"a:1\", \"b:2\"], token_env: T}\n", "cache-aside", "strong", "exactly one"},
		{"token only for node", "  cache: {kind: redis, addrs: [\"a:1\"], token_env: T}\n", "cache-aside", "strong", "only a cache node"},
		{"redis cluster", "  cache: {kind: redis, addrs: [\"a:1\", \"b:2\"], timeout: 100ms}\n", "write-through", "strong", ""},
		{"memcached", "  cache: {kind: memcached, addrs: [\"a:1\"]}\n", "read-through", "eventual", ""},
		{"memory is per process", "  cache: {kind: memory}\n", "cache-aside", "strong", "per-process"},
		{"memory session", "  cache: {kind: memory}\n", "cache-aside", "session", "per-process"},
		{"memory eventual", "  cache: {kind: memory}\n", "cache-aside", "eventual", ""},
		{"write-behind strong", "  cache: {kind: memory, queue_dir: q}\n", "write-behind", "strong", "strong consistency cannot"},
		{"write-behind session", "  cache: {kind: redis, addrs: [\"a:1\"], instance: app1}\n", "write-behind", "session", "session consistency cannot"},
		{"write-behind log", "  cache: {kind: memory, queue_dir: q}\n", "write-behind", "eventual", ""},
		{"write-behind stream", "  cache: {kind: redis, addrs: [\"a:1\"], instance: app1}\n", "write-behind", "eventual", ""},
		{"write-behind no queue", "  cache: {kind: redis, addrs: [\"a:1\"]}\n", "write-behind", "eventual", "durable queue"},
		{"bad address", "  cache: {kind: redis, addrs: [\"nope\"]}\n", "cache-aside", "strong", "host:port"},
		{"negative timeout", "  cache: {kind: redis, addrs: [\"a:1\"], timeout: -1s}\n", "cache-aside", "strong", "duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(appDoc(tc.cache, tc.strategy, tc.consistency)))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.err)
			}
		})
	}
}
