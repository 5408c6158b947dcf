package lb

import (
	"fmt"
	"time"

	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/internal/clientip"
	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/retry"
)

// FromConfig turns the lb: section of a configuration file into a Config and
// the admin keys. The file's zero values become the defaults documented on
// Config.
func FromConfig(c *config.LB) (Config, []AdminKey, error) {
	cfg := Config{
		Policy: Policy(c.Policy),
		Hash:   HashConfig{Source: HashSource(c.Hash.Source), Name: c.Hash.Name, LoadFactor: c.Hash.LoadFactor},
		Health: HealthConfig{
			Disabled: c.Health.Disabled, Path: c.Health.Path,
			Interval: c.Health.Interval.D(), Timeout: c.Health.Timeout.D(),
			Rise: c.Health.Rise, Fall: c.Health.Fall,
		},
		Outlier: OutlierConfig{
			ConsecutiveFailures: c.Outlier.ConsecutiveFailures,
			BaseEjection:        c.Outlier.BaseEjection.D(),
			MaxEjection:         c.Outlier.MaxEjection.D(),
			MaxEjectedPercent:   c.Outlier.MaxEjectedPercent,
		},
		Retry: RetryConfig{
			Attempts:      c.Retry.Attempts,
			PerTryTimeout: c.Retry.PerTryTimeout.D(),
			Budget:        retry.BudgetConfig{Ratio: c.Retry.BudgetRatio, MinPerSecond: c.Retry.BudgetMinPerSecond},
			MaxBodyBytes:  c.Retry.MaxBodyBytes,
			OnStatus:      c.Retry.OnStatus,
		},
		Hedge: HedgeConfig{
			Delay: c.Hedge.Delay.D(), Percentile: c.Hedge.Percentile,
			MinDelay: c.Hedge.MinDelay.D(), MaxDelay: c.Hedge.MaxDelay.D(),
			Budget: retry.BudgetConfig{Ratio: c.Hedge.BudgetRatio, MinPerSecond: c.Hedge.BudgetMinPerSecond},
		},
		MaxConnsPerBackend:   c.Limits.MaxConnsPerBackend,
		MaxPendingPerBackend: c.Limits.MaxPendingPerBackend,
		MaxIdlePerBackend:    c.Limits.MaxIdlePerBackend,
		IdleTimeout:          c.Limits.IdleTimeout.D(),
		ConnectTimeout:       c.Limits.ConnectTimeout.D(),
		ClientIdleTimeout:    c.Limits.ClientIdleTimeout.D(),
		ClientWriteTimeout:   c.Limits.ClientWriteTimeout.D(),
		MaxHeaderBytes:       c.Limits.MaxHeaderBytes,
	}
	for _, b := range c.Backends {
		cfg.Backends = append(cfg.Backends, BackendConfig{Addr: b.Address, Weight: b.Weight})
	}
	if c.RateLimit.Rate > 0 {
		period := c.RateLimit.Period.D()
		if period == 0 {
			period = time.Second
		}
		cfg.RateLimit = RateLimitConfig{
			Rate:   ratelimit.Rate{Limit: c.RateLimit.Rate, Period: period},
			Burst:  c.RateLimit.Burst,
			Header: c.RateLimit.Header,
		}
	}
	for _, p := range c.TrustedProxies {
		pre, err := config.ParsePrefix(p)
		if err != nil {
			return Config{}, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, pre)
	}
	if c.ForwardedHeader == "forwarded" {
		cfg.ForwardedHeader = clientip.Forwarded
	}
	var keys []AdminKey
	for _, k := range c.Admin.Keys {
		ak, err := ParseAdminKey(k.Name, k.SHA256, k.Role)
		if err != nil {
			return Config{}, nil, err
		}
		keys = append(keys, ak)
	}
	if _, err := cfg.options(); err != nil {
		return Config{}, nil, err
	}
	return cfg, keys, nil
}
