package engines

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// RedisError is an error reply from a Redis server.
type RedisError string

func (e RedisError) Error() string { return "engines: redis: " + string(e) }

// RedisDo sends one command to the Redis server at addr on a new connection and returns the
// reply: string for simple and bulk strings, int64 for integers, []any for arrays, nil for a
// null reply, and a RedisError for an error reply. It is meant for administration (readiness,
// cluster setup, fault injection), not for the data path, where rueidis is used.
func RedisDo(ctx context.Context, addr string, args ...string) (any, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("engines: redis %s: %w", addr, err)
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	_ = conn.SetDeadline(deadline)
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, fmt.Errorf("engines: redis %s: %w", addr, err)
	}
	v, err := readRESP(bufio.NewReader(conn), 0)
	if err != nil {
		return nil, fmt.Errorf("engines: redis %s: %s: %w", addr, args[0], err)
	}
	if re, ok := v.(RedisError); ok {
		return nil, re
	}
	return v, nil
}

// redisString runs a command whose reply is a string.
func redisString(ctx context.Context, addr string, args ...string) (string, error) {
	v, err := RedisDo(ctx, addr, args...)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("engines: redis %s: %s: unexpected reply %T", addr, args[0], v)
	}
	return s, nil
}

const maxRESPDepth = 8

func readRESP(r *bufio.Reader, depth int) (any, error) {
	if depth > maxRESPDepth {
		return nil, errors.New("reply nested too deeply")
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return RedisError(body), nil
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		if n > 64<<20 {
			return nil, errors.New("bulk reply too large")
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		if n > 1<<20 {
			return nil, errors.New("array reply too large")
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readRESP(r, depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unknown reply type %q", line[0])
	}
}

// infoField returns the value of field in the text of an INFO or CLUSTER INFO reply.
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && k == field {
			return v
		}
	}
	return ""
}
