package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkheadhq/bulkhead/gateway/openai"
	"github.com/bulkheadhq/bulkhead/store"
)

// priceOf is the price snapshot of x: the catalog model's prices as the
// request resolved them (s.resolve, when it was made), which the row
// keeps; false for a model the catalog does not name, which has no cost.
func priceOf(x *exchange) (store.Prices, bool) {
	if x.catalog == nil {
		return store.Prices{}, false
	}
	m := x.catalog
	return store.Prices{Input: m.InputPrice, CachedInput: m.CachedInputPrice, Output: m.OutputPrice}, true
}

// costOf is what usage cost at p (store.Prices.Cost): prompt tokens read
// from a provider's prompt cache at the cached-input price, the rest of
// the prompt (cache writes included) at the input price, completion at
// the output price.
func costOf(p store.Prices, u openai.Usage) store.MicroUSD {
	return p.Cost(u.PromptTokens, u.CacheReadTokens, u.CompletionTokens)
}

// costMetrics counts dollars by model. Shared catalog models have their
// own label (the operator names them, up to maxCostModelLabels; beyond:
// "other"); an organization's private models are counted as "private",
// so that no tenant's model name becomes a series.
type costMetrics struct {
	usd    *prometheus.CounterVec
	models boundedLabels
}

const maxCostModelLabels = 256

func newCostMetrics(reg prometheus.Registerer) *costMetrics {
	c := &costMetrics{
		usd: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulkhead_cost_usd_total",
			Help: "US dollars requests cost at the catalog's prices, by catalog model (private: an organization's own); models outside the catalog have no cost.",
		}, []string{"model"}),
		models: boundedLabels{max: maxCostModelLabels, seen: map[string]struct{}{}},
	}
	reg.MustRegister(c.usd)
	return c
}

func (c *costMetrics) add(x *exchange, cost store.MicroUSD) {
	if c == nil || cost <= 0 {
		return
	}
	label := "private"
	if !x.catalog.Own {
		label = c.models.label(x.catalog.Name)
	}
	c.usd.WithLabelValues(label).Add(float64(cost) / 1e6)
}
