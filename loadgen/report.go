package loadgen

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteText writes the report as a human-readable table: the settings, one row per phase
// and a total row, then the latency percentiles of each phase.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	mode := fmt.Sprintf("closed loop, %d workers", r.Concurrency)
	if r.Mode == "open" {
		mode = fmt.Sprintf("open loop at %g req/s, at most %d in flight", r.Rate, r.Concurrency)
	}
	fmt.Fprintf(&b, "strata bench %s/v1/%s: %s; %d keys, zipf s=%g, %g%% writes of %d B; %gs",
		r.URL, r.Collection, mode, r.Keys, r.ZipfS, r.Writes*100, r.DocSize, r.Duration)
	if r.Interrupted {
		b.WriteString(" (interrupted)")
	}
	b.WriteString("\n")
	if p := r.Prepopulate; p != nil {
		fmt.Fprintf(&b, "prepopulated: %d writes, %d ok, %d errors, %d rate-limited, p99 %s\n",
			p.Requests, p.OK, p.Errors, p.RateLimited, ms(p.Latency.P99))
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tfrom\tto\trequests\trps\tok\t404\t429\terrors\ttimeouts\tdropped\thit%\tp50\tp90\tp99\tp99.9\tmax\t")
	row := func(name string, from, to float64, s Stats) {
		fmt.Fprintf(tw, "%s\t%.1fs\t%.1fs\t%d\t%.0f\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			name, from, to, s.Requests, s.RPS, s.OK, s.NotFound, s.RateLimited, s.Errors, s.Timeouts,
			s.Dropped, hitPercent(s), ms(s.Latency.P50), ms(s.Latency.P90), ms(s.Latency.P99),
			ms(s.Latency.P999), ms(s.Latency.Max))
	}
	for _, p := range r.Phases {
		row(p.Name, p.Start, p.End, p.Stats)
	}
	if len(r.Phases) > 1 {
		row("total", 0, r.Total.Seconds, r.Total)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range r.Phases {
		if p.ChaosError != "" {
			fmt.Fprintf(&b, "chaos %s failed: %s\n", p.Name, p.ChaosError)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// FormatProgress formats a progress line: elapsed time, phase, requests per second,
// p50/p99, errors, 429s and cache hit ratio of the interval.
func FormatProgress(p Progress) string {
	s := p.Stats
	return fmt.Sprintf("%6.1fs %-14s %8.0f req/s  p50 %8s  p99 %8s  err %d  429 %d  hit %s  total %d",
		p.Elapsed.Seconds(), p.Phase, s.RPS, ms(s.Latency.P50), ms(s.Latency.P99), s.Errors,
		s.RateLimited, hitPercent(s), p.Total)
}

func hitPercent(s Stats) string {
	if s.Cache.Hit+s.Cache.Miss+s.Cache.Bypass+s.Cache.Stale == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", s.HitRatio*100)
}

// ms formats milliseconds with three significant digits.
func ms(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 1:
		return fmt.Sprintf("%.0fµs", v*1000)
	case v < 10:
		return fmt.Sprintf("%.2fms", v)
	case v < 100:
		return fmt.Sprintf("%.1fms", v)
	case v < 10000:
		return fmt.Sprintf("%.0fms", v)
	default:
		return fmt.Sprintf("%.1fs", v/1000)
	}
}
