package lb

import "github.com/strata-project/strata/retry"

func retryBudget() retry.BudgetConfig { return retry.BudgetConfig{Ratio: 1, MinPerSecond: 1000} }
