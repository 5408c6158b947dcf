package redislimit

import (
	"crypto/sha1"
	"encoding/hex"

	"github.com/redis/rueidis"
)

// The GCRA state of a key is one number, its theoretical arrival time (TAT)
// on the Redis server's clock in nanoseconds, modulo M = 2^22 seconds (about
// 48.5 days). Lua numbers are doubles, exact only up to 2^53, and a TAT in
// nanoseconds since the epoch is about 2^61; modulo M it is below 2^52, and
// the scripts only ever compute with differences from the server's TIME
// (taken modulo M too), which are exact.
//
// Reading a TAT back is unambiguous because a stored TAT is never far from
// now: a key is written with PX set to the time its bucket is full again
// (ceil(TAT - now) in ms), so a key that still exists has TAT > now - 1ms,
// and TAT - now <= tau < 2^50ns (New enforces it), far below M/2. A
// difference above M/2 is therefore a TAT in the past: a full bucket. An
// expired key is also exactly a full bucket, so expiry never changes a
// decision.
//
// The per-key work is kept to two redis.calls and a few arithmetic
// operations: on a 2-core machine the server's Lua time per key is what
// bounds the throughput of batched decisions.
const prelude = `
local t = redis.call('TIME')
local M = 4194304e9
local now = (tonumber(t[1]) % 4194304) * 1e9 + tonumber(t[2]) * 1000
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
`

// gcraSource decides a batch of requests in order, each against its own key
// (a key may appear more than once). KEYS[i]: the key of request i.
// ARGV[1]: emission interval T (ns). ARGV[2]: tau = burst*T (ns).
// ARGV[i+2]: the cost n of request i. Reply: one integer per request, nd >= 0
// when granted (the key's TAT minus now after the decision, ns), or -(d+1)
// when denied (d: TAT minus now, ns, clamped at 0).
const gcraSource = prelude + `
local out = {}
for i = 1, #KEYS do
  local inc = T * ARGV[i + 2]
  local v = redis.call('GET', KEYS[i])
  local d = 0
  if v then
    d = (v - now) % M
    if d > M / 2 then d = 0 end
  end
  local nd = d + inc
  if nd > tau then
    out[i] = -d - 1
  else
    if inc > 0 then
      redis.call('SET', KEYS[i], string.format('%d', (now + nd) % M), 'PX', math.ceil(nd / 1e6))
    end
    out[i] = nd
  end
end
return out`

// leaseSource takes between n and k tokens at once from one key's bucket, as
// many as it holds up to k. KEYS[1]: the key. ARGV[1]: T (ns). ARGV[2]: tau
// (ns). ARGV[3]: n, the least the caller needs. ARGV[4]: k, the most it takes.
// Reply: {m, nd} with m >= n the tokens taken and nd the key's TAT minus now
// after the decision, or {-1, d} when fewer than n tokens are left.
const leaseSource = prelude + `
local n = tonumber(ARGV[3])
local k = tonumber(ARGV[4])
local v = redis.call('GET', KEYS[1])
local d = 0
if v then
  d = (v - now) % M
  if d > M / 2 then d = 0 end
end
local avail = math.floor((tau - d) / T)
if avail < n then return {-1, d} end
local m = math.min(k, avail)
local nd = d + m * T
if m > 0 then
  redis.call('SET', KEYS[1], string.format('%d', (now + nd) % M), 'PX', math.ceil(nd / 1e6))
end
return {m, nd}`

var (
	gcraScript  = rueidis.NewLuaScript(gcraSource)
	gcraSHA     = sha1Hex(gcraSource)
	leaseScript = rueidis.NewLuaScript(leaseSource)
)

func sha1Hex(s string) string {
	h := sha1.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// slot returns the Redis Cluster hash slot of key (CRC16/XMODEM of the key,
// or of its hash tag: the text between the first '{' and the next '}' when
// that is not empty).
func slot(key string) uint16 {
	if s := indexByte(key, '{'); s >= 0 {
		if e := indexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^key[i]]
	}
	return crc & 16383
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()
