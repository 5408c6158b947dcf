package retry_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/strata-project/strata/retry"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2015, 10, 21, 7, 28, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"120", 2 * time.Minute, false},
		{" 0 ", 0, false},
		{"Wed, 21 Oct 2015 07:28:30 GMT", 30 * time.Second, false},
		{"Wednesday, 21-Oct-15 07:29:00 GMT", time.Minute, false},
		{"Wed Oct 21 07:28:05 2015", 5 * time.Second, false},
		{"Wed, 21 Oct 2015 07:00:00 GMT", 0, false}, // in the past
		{"99999999999999999999999", 24 * time.Hour, false},
		{"86401", 24 * time.Hour, false},
		{"", 0, true},
		{"-5", 0, true},
		{"1.5", 0, true},
		{"soon", 0, true},
	}
	for _, tt := range tests {
		got, err := retry.ParseRetryAfter(tt.in, now)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, retry.ErrInvalidRetryAfter) {
			t.Errorf("ParseRetryAfter(%q): error %v does not wrap ErrInvalidRetryAfter", tt.in, err)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "Wed, 21 Oct 2015 07:28:30 GMT", "Wednesday, 21-Oct-15 07:29:00 GMT",
		"Wed Oct 21 07:28:05 2015", "", "-1", "1e9", "18446744073709551616"} {
		f.Add(s)
	}
	now := time.Date(2015, 10, 21, 7, 28, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, err := retry.ParseRetryAfter(s, now)
		if err != nil {
			if d != 0 || !errors.Is(err, retry.ErrInvalidRetryAfter) {
				t.Fatalf("%q: %v, %v", s, d, err)
			}
			return
		}
		if d < 0 || d > 24*time.Hour {
			t.Fatalf("%q: wait %v out of [0, 24h]", s, d)
		}
	})
}

func TestRetryAfterFromWrappedError(t *testing.T) {
	err := fmt.Errorf("GET /orders: %w", &retry.RetryAfterError{Err: errBoom, After: 3 * time.Second})
	if d, ok := retry.RetryAfter(err); !ok || d != 3*time.Second {
		t.Fatalf("got %v, %v", d, ok)
	}
	if !errors.Is(err, errBoom) {
		t.Fatal("RetryAfterError hides its cause")
	}
	if _, ok := retry.RetryAfter(errBoom); ok {
		t.Fatal("plain error reported a Retry-After")
	}
}
