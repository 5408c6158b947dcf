package lb

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// This file holds the HTTP/1.1 message framing of the proxy path: parsing
// request and response heads in place (the parsed fields are slices of the
// connection's read buffer, so parsing allocates nothing), deciding how a
// body is delimited (RFC 9112 section 6), and copying bodies.

// Errors of the framing layer. A request that fails with one of them gets a
// 4xx or 5xx answer and its connection is closed.
var (
	// ErrMalformed is wrapped by errors about a request or response that
	// does not follow HTTP/1.1 syntax.
	ErrMalformed = errors.New("lb: malformed HTTP message")
	// ErrHeadTooLarge is returned when a request or response head does not
	// fit in the connection's buffer.
	ErrHeadTooLarge = errors.New("lb: message head too large")
	// ErrUnsupported is wrapped by errors about messages the proxy does not
	// forward (an unknown transfer coding, an unknown expectation).
	ErrUnsupported = errors.New("lb: unsupported HTTP feature")
)

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// header is one field line of a parsed head.
type header struct {
	name, value []byte
	drop        bool // hop-by-hop or replaced by the proxy: not forwarded
}

// bodyKind says how a message body is delimited.
type bodyKind uint8

const (
	bodyNone    bodyKind = iota // no body
	bodyLength                  // Content-Length bytes
	bodyChunked                 // chunked transfer coding
	bodyClose                   // until the connection closes (responses only)
)

// head is a parsed request or response head. Its byte slices point into the
// reader's buffer and are valid until the head is discarded from it.
type head struct {
	// request line
	method, target []byte
	// status line
	status int
	reason []byte

	minor   int // HTTP/1.minor
	headers []header
	size    int // bytes of the head including the final CRLF CRLF

	body          bodyKind
	contentLength int64 // for bodyLength
	closeConn     bool  // the sender will close, or asks to close, after this message
	keepAlive     bool  // "Connection: keep-alive" was sent (meaningful for HTTP/1.0)
	hasConnTokens bool  // Connection lists other header names to drop

	// request fields
	host           []byte
	hostCount      int
	expectContinue bool
	idempotencyKey bool
	requestID      []byte
	xff            int // count of X-Forwarded-For lines
	forwarded      int // count of Forwarded lines
	xfProto        []byte
	cookie         int // count of Cookie lines
}

func (h *head) reset() {
	hs := h.headers[:0]
	*h = head{headers: hs, contentLength: -1}
}

// readHead reads a head terminated by CRLF CRLF from br without consuming
// it and returns it as a slice of br's buffer. The caller discards h.size
// bytes once the head is no longer needed.
func readHead(br *bufio.Reader) ([]byte, error) {
	n, from := 1, 0
	for {
		if _, err := br.Peek(n); err != nil {
			switch {
			case errors.Is(err, bufio.ErrBufferFull):
				return nil, ErrHeadTooLarge
			case errors.Is(err, io.EOF) && br.Buffered() > 0:
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf[from:], crlfcrlf); i >= 0 {
			return buf[:from+i+4], nil
		}
		from = max(0, len(buf)-3)
		n = len(buf) + 1
		if n > br.Size() {
			return nil, ErrHeadTooLarge
		}
	}
}

var (
	crlf     = []byte("\r\n")
	crlfcrlf = []byte("\r\n\r\n")
)

// parseRequest parses a request head (which ends with CRLF CRLF).
func parseRequest(buf []byte, h *head) error {
	h.reset()
	h.size = len(buf)
	i := bytes.Index(buf, crlf)
	line := buf[:i]
	rest := buf[i+2:]
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return malformed("request line")
	}
	h.method = line[:sp1]
	for _, c := range h.method {
		if !isTchar(c) {
			return malformed("method")
		}
	}
	line = line[sp1+1:]
	sp2 := bytes.IndexByte(line, ' ')
	if sp2 <= 0 {
		return malformed("request target")
	}
	h.target = line[:sp2]
	for _, c := range h.target {
		if c <= ' ' || c == 0x7f {
			return malformed("request target")
		}
	}
	minor, ok := parseVersion(line[sp2+1:])
	if !ok {
		return malformed("HTTP version")
	}
	h.minor = minor
	if err := parseFields(rest, h, true); err != nil {
		return err
	}
	if h.minor >= 1 && h.hostCount == 0 {
		return malformed("missing Host")
	}
	if h.hostCount > 1 {
		return malformed("several Host fields")
	}
	if h.minor == 0 && !h.keepAlive {
		h.closeConn = true
	}
	if h.body == bodyNone && h.contentLength > 0 {
		h.body = bodyLength
	}
	return nil
}

// parseResponse parses a response head. reqMethod is the method of the
// request it answers, which decides whether it has a body.
func parseResponse(buf []byte, h *head, head bool) error {
	h.reset()
	h.size = len(buf)
	i := bytes.Index(buf, crlf)
	line := buf[:i]
	rest := buf[i+2:]
	if len(line) < 12 || line[8] != ' ' {
		return malformed("status line")
	}
	minor, ok := parseVersion(line[:8])
	if !ok {
		return malformed("HTTP version")
	}
	h.minor = minor
	s := line[9:12]
	if s[0] < '1' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9' {
		return malformed("status code")
	}
	h.status = int(s[0]-'0')*100 + int(s[1]-'0')*10 + int(s[2]-'0')
	if len(line) > 12 {
		if line[12] != ' ' {
			return malformed("status line")
		}
		h.reason = line[13:]
	}
	for _, c := range h.reason {
		if c < ' ' && c != '\t' || c == 0x7f {
			return malformed("reason phrase")
		}
	}
	if err := parseFields(rest, h, false); err != nil {
		return err
	}
	if h.minor == 0 && !h.keepAlive {
		h.closeConn = true
	}
	switch {
	case head || h.status < 200 || h.status == 204 || h.status == 304:
		h.body = bodyNone
	case h.body == bodyChunked:
	case h.contentLength >= 0:
		h.body = bodyLength
		if h.contentLength == 0 {
			h.body = bodyNone
		}
	default:
		h.body = bodyClose
		h.closeConn = true
	}
	return nil
}

func parseVersion(v []byte) (minor int, ok bool) {
	if len(v) != 8 || string(v[:7]) != "HTTP/1." || v[7] < '0' || v[7] > '9' {
		return 0, false
	}
	return int(v[7] - '0'), true
}

// parseFields parses the field lines of a head after its first line.
func parseFields(rest []byte, h *head, request bool) error {
	teSeen := false
	for {
		i := bytes.Index(rest, crlf)
		if i < 0 {
			return malformed("field line")
		}
		if i == 0 {
			break
		}
		line := rest[:i]
		rest = rest[i+2:]
		if line[0] == ' ' || line[0] == '\t' {
			return malformed("obsolete line folding")
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			return malformed("field line without name")
		}
		name := line[:c]
		for _, b := range name {
			if !isTchar(b) {
				return malformed("field name")
			}
		}
		value := trimOWS(line[c+1:])
		for _, b := range value {
			if b < ' ' && b != '\t' || b == 0x7f {
				return malformed("control byte in field value")
			}
		}
		hd := header{name: name, value: value}
		switch {
		case equalFold(name, "Content-Length"):
			hd.drop = true
			n, ok := parseContentLength(value)
			if !ok || h.contentLength >= 0 && h.contentLength != n {
				return malformed("Content-Length")
			}
			h.contentLength = n
		case equalFold(name, "Transfer-Encoding"):
			hd.drop = true
			if teSeen || !equalFold(value, "chunked") {
				return fmt.Errorf("%w: transfer coding %q", ErrUnsupported, value)
			}
			teSeen = true
			h.body = bodyChunked
		case equalFold(name, "Connection"):
			hd.drop = true
			for tok := range tokens(value) {
				switch {
				case equalFold(tok, "close"):
					h.closeConn = true
				case equalFold(tok, "keep-alive"):
					h.keepAlive = true
				default:
					h.hasConnTokens = true
				}
			}
		case equalFold(name, "Keep-Alive"), equalFold(name, "Proxy-Connection"),
			equalFold(name, "TE"), equalFold(name, "Trailer"), equalFold(name, "Upgrade"),
			equalFold(name, "Proxy-Authenticate"), equalFold(name, "Proxy-Authorization"):
			hd.drop = true
		case !request:
		case equalFold(name, "Host"):
			h.host = value
			h.hostCount++
		case equalFold(name, "Expect"):
			hd.drop = true
			if !equalFold(value, "100-continue") {
				return fmt.Errorf("%w: expectation %q", ErrUnsupported, value)
			}
			h.expectContinue = true
		case equalFold(name, "X-Forwarded-For"):
			hd.drop = true // rewritten with the peer appended
			h.xff++
		case equalFold(name, "Forwarded"):
			hd.drop = true // rewritten with the peer appended
			h.forwarded++
		case equalFold(name, "X-Forwarded-Proto"):
			hd.drop = true
			h.xfProto = value
		case equalFold(name, "X-Request-Id"):
			hd.drop = true
			h.requestID = value
		case equalFold(name, "Idempotency-Key"):
			h.idempotencyKey = len(value) > 0
		case equalFold(name, "Cookie"):
			h.cookie++
		}
		h.headers = append(h.headers, hd)
	}
	if teSeen && h.contentLength >= 0 {
		// Both framings: a classic request smuggling vector. Refuse.
		return malformed("both Transfer-Encoding and Content-Length")
	}
	if h.hasConnTokens {
		for i := range h.headers {
			hd := &h.headers[i]
			if hd.drop {
				continue
			}
			for j := range h.headers {
				if equalFold(h.headers[j].name, "Connection") && listHas(h.headers[j].value, hd.name) {
					hd.drop = true
					break
				}
			}
		}
	}
	return nil
}

// parseContentLength parses a Content-Length value: digits, or a list of
// identical values as some senders write ("5, 5").
func parseContentLength(v []byte) (int64, bool) {
	var first int64 = -1
	for tok := range tokens(v) {
		if len(tok) == 0 || len(tok) > 18 {
			return 0, false
		}
		var n int64
		for _, c := range tok {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int64(c-'0')
		}
		if first >= 0 && n != first {
			return 0, false
		}
		first = n
	}
	return first, first >= 0
}

// tokens yields the comma-separated elements of a list value, trimmed.
func tokens(v []byte) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(v) > 0 {
			i := bytes.IndexByte(v, ',')
			var tok []byte
			if i < 0 {
				tok, v = v, nil
			} else {
				tok, v = v[:i], v[i+1:]
			}
			if tok = trimOWS(tok); len(tok) > 0 && !yield(tok) {
				return
			}
		}
	}
}

func listHas(list, name []byte) bool {
	for tok := range tokens(list) {
		if bytes.EqualFold(tok, name) {
			return true
		}
	}
	return false
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// has reports whether h has a header field named name (ASCII, any case).
func (h *head) has(name string) bool {
	for i := range h.headers {
		if equalFold(h.headers[i].name, name) {
			return true
		}
	}
	return false
}

// equalFold reports whether b equals the ASCII string s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c == d {
			continue
		}
		if c|0x20 != d|0x20 || c|0x20 < 'a' || c|0x20 > 'z' {
			return false
		}
	}
	return true
}

func isTchar(c byte) bool { return tchar[c] }

var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-32] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// copyN copies exactly n bytes from br to w.
func copyN(w io.Writer, br *bufio.Reader, n int64) error {
	for n > 0 {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		k := min(int64(br.Buffered()), n)
		b, _ := br.Peek(int(k))
		if _, err := w.Write(b); err != nil {
			return &writeError{err}
		}
		br.Discard(int(k))
		n -= k
	}
	return nil
}

// copyUntilEOF copies everything br yields until the end of the stream.
func copyUntilEOF(w io.Writer, br *bufio.Reader) error {
	for {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
		b, _ := br.Peek(br.Buffered())
		if _, err := w.Write(b); err != nil {
			return &writeError{err}
		}
		br.Discard(len(b))
	}
}

// writeError marks a failure to write to the destination of a copy, as
// opposed to a failure to read its source.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// maxChunkLine bounds a chunk-size line with its extensions.
const maxChunkLine = 4096

// copyChunked decodes a chunked body from br. With rechunk, it writes it to
// w in chunked form again (without extensions and trailers); otherwise it
// writes the decoded bytes. Trailer fields are read and dropped.
func copyChunked(w *bufio.Writer, br *bufio.Reader, rechunk bool) error {
	var scratch [20]byte
	for {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		line = trimOWS(line)
		if len(line) == 0 || len(line) > 15 {
			return malformed("chunk size")
		}
		var n int64
		for _, c := range line {
			var d byte
			switch {
			case '0' <= c && c <= '9':
				d = c - '0'
			case 'a' <= c && c <= 'f':
				d = c - 'a' + 10
			case 'A' <= c && c <= 'F':
				d = c - 'A' + 10
			default:
				return malformed("chunk size")
			}
			n = n<<4 | int64(d)
		}
		if n == 0 {
			// Trailer section, then the final CRLF.
			for {
				t, err := readLine(br)
				if err != nil {
					return err
				}
				if len(t) == 0 {
					break
				}
			}
			if rechunk {
				if _, err := w.WriteString("0\r\n\r\n"); err != nil {
					return &writeError{err}
				}
			}
			return nil
		}
		if rechunk {
			b := appendHex(scratch[:0], uint64(n))
			b = append(b, '\r', '\n')
			if _, err := w.Write(b); err != nil {
				return &writeError{err}
			}
		}
		if err := copyN(w, br, n); err != nil {
			return err
		}
		end, err := readLine(br)
		if err != nil {
			return err
		}
		if len(end) != 0 {
			return malformed("chunk data longer than its size")
		}
		if rechunk {
			if _, err := w.Write(crlf); err != nil {
				return &writeError{err}
			}
		}
	}
}

// readLine reads one CRLF-terminated line and returns it without the CRLF.
// The slice is valid until the next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	n := 1
	for {
		if _, err := br.Peek(n); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				err = malformed("line too long")
			}
			return nil, err
		}
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, crlf); i >= 0 {
			line := buf[:i]
			br.Discard(i + 2)
			return line, nil
		}
		n = len(buf) + 1
		if n > maxChunkLine || n > br.Size() {
			return nil, malformed("line too long")
		}
	}
}

func appendHex(b []byte, n uint64) []byte {
	const digits = "0123456789abcdef"
	if n == 0 {
		return append(b, '0')
	}
	var tmp [16]byte
	i := len(tmp)
	for n > 0 {
		i--
		tmp[i] = digits[n&15]
		n >>= 4
	}
	return append(b, tmp[i:]...)
}

func appendInt(b []byte, n int64) []byte {
	if n == 0 {
		return append(b, '0')
	}
	var tmp [20]byte
	i := len(tmp)
	for n > 0 {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, tmp[i:]...)
}
