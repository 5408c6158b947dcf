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
// bounds the throughput of batched decisions. Numbers passed to redis.call
// are formatted by the script (string.format('%d')): a Lua number argument
// is converted by Redis with a %.17g format, which costs more (about 5% of
// a batch's time for the expiry argument alone, measured on Redis 7.0).
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
      redis.call('SET', KEYS[i], string.format('%d', (now + nd) % M), 'PX', string.format('%d', math.ceil(nd / 1e6)))
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
  redis.call('SET', KEYS[1], string.format('%d', (now + nd) % M), 'PX', string.format('%d', math.ceil(nd / 1e6)))
end
return {m, nd}`

// The window and concurrency scripts keep instants in microseconds since
// the Unix epoch on the server's clock, the resolution of TIME: about 2^51
// today, exact in a double for centuries, so they need no modulo. Numbers
// that may be large are written with string.format('%d'), because Lua's own
// conversion of a number to a string keeps 14 digits only. Window lengths
// are passed in microseconds, rounded up, so a window is never shorter
// than configured; expiries (PEXPIRE) are in milliseconds, rounded up, so a
// key never disappears before its state is that of a key never seen.
const usPrelude = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local win = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local out = {}
`

// fixedSource is the fixed window of ratelimit.FixedWindow: a window opens
// at a key's first event and lasts win; the count starts again at zero
// after it. The state is a hash {s: opening instant, c: count}, expiring
// when the window ends. KEYS[i]: the key of request i. ARGV[1]: win (µs).
// ARGV[2]: limit. ARGV[i+2]: the cost n of request i. Reply, three integers
// per request: allowed (1 or 0), the count after the decision, the time
// left in the window (µs).
const fixedSource = usPrelude + `
for i = 1, #KEYS do
  local k = KEYS[i]
  local n = tonumber(ARGV[i + 2])
  local v = redis.call('HMGET', k, 's', 'c')
  local s, c = tonumber(v[1]), tonumber(v[2])
  if not s or not c or now - s >= win then
    s, c = now, 0
  end
  local ok = 0
  if c + n <= limit then
    ok = 1
    if n > 0 and c == 0 then
      redis.call('HSET', k, 's', string.format('%d', s), 'c', n)
      redis.call('PEXPIRE', k, string.format('%d', math.ceil(win / 1000)))
    elseif n > 0 then
      redis.call('HINCRBY', k, 'c', n)
    end
    c = c + n
  end
  local o = 3 * i - 2
  out[o], out[o + 1], out[o + 2] = ok, c, s + win - now
end
return out`

// slidingSource is the sliding-window counter of ratelimit.SlidingWindow: a
// key's windows are anchored at its first event, and the events of the last
// win are estimated as p*(win-el)/win + c, p and c the counts of the
// previous and current window, el the time elapsed in the current one.
// After two idle windows the key starts afresh. The state is a hash {s:
// opening instant of the current window, p, c}, expiring when the estimate
// is back at zero (two windows after s). KEYS, ARGV as fixedSource. Reply,
// four integers per request: allowed (1 or 0), p, c before the decision, el
// (µs); the caller computes the rest as the in-memory limiter does.
const slidingSource = usPrelude + `
for i = 1, #KEYS do
  local k = KEYS[i]
  local n = tonumber(ARGV[i + 2])
  local v = redis.call('HMGET', k, 's', 'p', 'c')
  local s, p, c = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
  local el, moved = 0, false
  if not s or now - s >= 2 * win then
    s, p, c, moved = now, 0, 0, true
  else
    el = now - s
    if el >= win then
      s, p, c, el, moved = s + win, c, 0, el - win, true
    elseif el < 0 then
      el = 0
    end
  end
  local ok = 0
  if p * (win - el) / win + c + n <= limit then
    ok = 1
    if n > 0 then
      if moved then
        redis.call('HSET', k, 's', string.format('%d', s), 'p', p, 'c', n)
        redis.call('PEXPIRE', k, string.format('%d', math.ceil((s + 2 * win - now) / 1000)))
      else
        redis.call('HINCRBY', k, 'c', n)
      end
    end
  end
  local o = 4 * i - 3
  out[o], out[o + 1], out[o + 2], out[o + 3] = ok, p, c, el
end
return out`

// logSource is the sliding log of ratelimit.SlidingLog: a list of the
// instants of the events granted in the last win, oldest first, at most
// limit of them (n copies for a cost n), expiring win after the newest.
// Instants that left the window are popped first; an instant is never
// older than the newest already logged, so the list stays sorted when the
// server's clock steps back. KEYS, ARGV as fixedSource. Reply, four
// integers per request: allowed (1 or 0), the instants in the log after
// the decision, RetryAfter and ResetAfter (µs).
const logSource = usPrelude + `
for i = 1, #KEYS do
  local k = KEYS[i]
  local n = tonumber(ARGV[i + 2])
  local len = redis.call('LLEN', k)
  local last = 0
  if len > 0 then
    last = tonumber(redis.call('LINDEX', k, -1))
    if last <= now - win then
      redis.call('DEL', k)
      len = 0
    else
      while tonumber(redis.call('LINDEX', k, 0)) <= now - win do
        redis.call('LPOP', k)
        len = len - 1
      end
    end
  end
  local at = now
  if len > 0 and last > now then at = last end
  local o = 4 * i - 3
  if len + n > limit then
    local first = tonumber(redis.call('LINDEX', k, len + n - limit - 1))
    out[o], out[o + 1], out[o + 2], out[o + 3] = 0, len, first + win - at, last + win - at
  else
    local reset = 0
    if n > 0 then
      local a = string.format('%d', at)
      local vals = {}
      for j = 1, math.min(n, 256) do vals[j] = a end
      local left = n
      while left > 0 do
        local m = math.min(left, 256)
        redis.call('RPUSH', k, unpack(vals, 1, m))
        left = left - m
      end
      redis.call('PEXPIRE', k, string.format('%d', math.ceil((at + win - now) / 1000)))
      reset = win
    elseif len > 0 then
      reset = last + win - at
    end
    out[o], out[o + 1], out[o + 2], out[o + 3] = 1, len + n, 0, reset
  end
end
return out`

// concSource acquires units of ratelimit.Concurrency's kind: a key's units
// in flight are the members of a sorted set scored by the instant each is
// reclaimed (acquisition plus the hold timeout), at most limit of them. The
// set expires with its last member. KEYS[i]: the key of request i. ARGV[1]:
// the hold timeout (µs). ARGV[2]: limit. ARGV[2i+1]: the cost n of request
// i; ARGV[2i+2]: its acquisition id (members id:1 .. id:n). Reply, two
// integers per request: allowed (1 or 0), the units held before.
const concSource = usPrelude + `
for i = 1, #KEYS do
  local k = KEYS[i]
  local n = tonumber(ARGV[2 * i + 1])
  local id = ARGV[2 * i + 2]
  local nows = string.format('%d', now)
  local held = redis.call('ZCOUNT', k, '(' .. nows, '+inf')
  local o = 2 * i - 1
  if held + n > limit then
    out[o], out[o + 1] = 0, held
  else
    if n > 0 then
      redis.call('ZREMRANGEBYSCORE', k, '-inf', nows)
      local e = string.format('%d', now + win)
      local vals, m = {}, 0
      for j = 1, n do
        vals[m + 1], vals[m + 2], m = e, id .. ':' .. j, m + 2
        if m == 256 or j == n then
          redis.call('ZADD', k, unpack(vals, 1, m))
          m = 0
        end
      end
      local ms = math.ceil(win / 1000)
      if redis.call('PTTL', k) < ms then
        redis.call('PEXPIRE', k, string.format('%d', ms))
      end
    end
    out[o], out[o + 1] = 1, held
  end
end
return out`

var (
	fixedScript   = rueidis.NewLuaScript(fixedSource)
	fixedSHA      = sha1Hex(fixedSource)
	slidingScript = rueidis.NewLuaScript(slidingSource)
	slidingSHA    = sha1Hex(slidingSource)
	logScript     = rueidis.NewLuaScript(logSource)
	logSHA        = sha1Hex(logSource)
	concScript    = rueidis.NewLuaScript(concSource)
	concSHA       = sha1Hex(concSource)
)

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
