// Package httplimit is HTTP middleware that applies a ratelimit.Limiter to
// each request.
//
// A request's key comes from a KeyFunc: the client address (ByClientIP,
// which reads X-Forwarded-For or Forwarded only behind trusted proxies),
// an API key header (ByHeader), the route (ByRoute), any function, or
// combinations (FirstOf, Join). Its cost is 1 unless Config.Cost says
// otherwise.
//
// Every response carries the fields of the IETF draft
// draft-ietf-httpapi-ratelimit-headers, for example
//
//	RateLimit-Policy: "default";q=100;w=60
//	RateLimit: "default";r=50;t=30
//
// and a denied request gets 429 Too Many Requests with Retry-After (whole
// seconds, rounded up) and an RFC 9457 application/problem+json body. When
// the limiter also has a Release(key, n) method (ratelimit.Concurrency,
// redislimit.Concurrency), the units are given back when the handler
// returns.
//
// # Compared with the usual approach
//
// Common Go middleware keys by r.RemoteAddr or trusts the leftmost
// X-Forwarded-For entry, which any client can set, and answers 429 with a
// plain-text body and ad hoc X-RateLimit-* headers. Here the forwarding
// header is believed only as far as trusted proxies wrote it (walking from
// the right), IPv6 clients are keyed by their /64 by default, and the
// responses follow RFC 9457 and the IETF RateLimit fields.
package httplimit
