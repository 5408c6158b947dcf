package benchmarks

import (
	"context"
	"testing"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/sony/gobreaker/v2"

	"github.com/strata-project/strata/breaker"
)

// breakerPeers returns one success-path call per implementation, each with its default
// settings.
func breakerPeers(b *testing.B) []struct {
	name string
	call func() error
} {
	ctx := context.Background()
	ours, err := breaker.New(breaker.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ok := func(context.Context) error { return nil }

	gb := gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{})
	gbFn := func() (struct{}, error) { return struct{}{}, nil }

	fs := failsafe.With[any](circuitbreaker.NewWithDefaults[any]())
	fsFn := func() error { return nil }

	return []struct {
		name string
		call func() error
	}{
		{"strata", func() error { return ours.Do(ctx, ok) }},
		{"gobreaker", func() error { _, err := gb.Execute(gbFn); return err }},
		{"failsafe-go", func() error { return fs.Run(fsFn) }},
	}
}

// BenchmarkBreakerSuccess measures one successful call through a closed breaker, one goroutine.
func BenchmarkBreakerSuccess(b *testing.B) {
	for _, p := range breakerPeers(b) {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := p.call(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBreakerSuccessParallel measures successful calls through one shared closed breaker
// from GOMAXPROCS goroutines.
func BenchmarkBreakerSuccessParallel(b *testing.B) {
	for _, p := range breakerPeers(b) {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := p.call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
