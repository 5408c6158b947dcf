package loadgen

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseChaos(t *testing.T) {
	got, err := ParseChaos(" 20s:stop-cache , 10s:kill-app:2,10s:pause-app:app-3.x_y")
	if err != nil {
		t.Fatal(err)
	}
	want := []ChaosEvent{
		{10 * time.Second, "kill-app", "2"},
		{10 * time.Second, "pause-app", "app-3.x_y"},
		{20 * time.Second, "stop-cache", ""},
	}
	if !slices.Equal(got, want) {
		t.Errorf("ParseChaos = %v, want %v", got, want)
	}
	if ev, err := ParseChaos(""); ev != nil || err != nil {
		t.Errorf("empty schedule: %v, %v", ev, err)
	}
	for _, tc := range []struct{ spec, want string }{
		{"10s", "want AT:ACTION"},
		{"10s:a:b:c", "want AT:ACTION"},
		{"ten:kill-app", "time"},
		{"-1s:kill-app", "negative"},
		{"1s:Kill", "action"},
		{"1s:", "action"},
		{"1s:kill:a/b", "target"},
		{"1s:kill:a?b", "target"},
		{"1s:" + strings.Repeat("a", 65), "64"},
		{strings.Repeat("1s:a,", MaxChaosEvents) + "1s:a", "at most"},
	} {
		if _, err := ParseChaos(tc.spec); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseChaos(%.40q) = %v, want ErrInvalidConfig with %q", tc.spec, err, tc.want)
		}
	}
}

// FuzzParseChaos: whatever the input, ParseChaos returns sorted, valid events that format
// back into a schedule parsing to the same events, or an ErrInvalidConfig.
func FuzzParseChaos(f *testing.F) {
	for _, s := range []string{"", "10s:kill-app:2,20s:stop-cache", "1m30s:x", "1s:a:b:c", ":", ",", "1h:promote-replica:shard-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		ev, err := ParseChaos(spec)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v is not ErrInvalidConfig", err)
			}
			return
		}
		parts := make([]string, len(ev))
		for i, e := range ev {
			if e.validate() != nil || (i > 0 && e.At < ev[i-1].At) {
				t.Fatalf("invalid or unsorted event %v in %v", e, ev)
			}
			parts[i] = e.String()
		}
		again, err := ParseChaos(strings.Join(parts, ","))
		if err != nil || !slices.Equal(again, ev) {
			t.Fatalf("round trip of %v: %v, %v", ev, again, err)
		}
	})
}
