// Package clientip finds the address of the client that sent an HTTP
// request, trusting the X-Forwarded-For or Forwarded (RFC 7239) header only
// as far as it was written by proxies the operator trusts.
//
// A client can put anything in these headers, so a header is read only
// when the direct peer (the socket address) is in a configured list of
// trusted proxy prefixes, and then from the right: each trusted proxy
// appends the address it received the request from, so the hops are walked
// leftwards while they are trusted, and the first untrusted one is the
// client. An unparseable hop ends the walk at the proxy that wrote it.
//
// Only one header is read, the one the trusted proxies write. Reading the
// other as well would let a client forge it: a proxy that appends to
// X-Forwarded-For passes a client's Forwarded header through untouched.
package clientip
