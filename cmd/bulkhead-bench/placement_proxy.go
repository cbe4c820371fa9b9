package main

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/store"
)

// placementProxy is placement's proxy phase: the real gateway (a fresh
// `bulkhead serve` of bin, request log on, the configuration's database
// targets) under closed-loop load spread over one API key per tenant,
// against the floor forwarder measured in the same round, in -proxy-rounds
// pairs that alternate which goes first (the machine drifts between
// phases); the best of each, as bulkhead-bench run reports them.
type placementProxy struct {
	cfg      config.Config
	cfgPath  string
	bin      string
	rig      *floorRig
	duration time.Duration
	rounds   int
	conns    int
	zipf     float64 // 0: round-robin over the tenants' keys
}

// proxyResult is one round's proxy figures: the best floor and gateway
// phases (p50/p99 and RSS of the best gateway phase) and each pair's
// ratio.
type proxyResult struct {
	floorRPS, rps float64
	p50, p99      time.Duration
	rss           float64 // the gateway's RSS at the end, MiB
	errs          string  // of every gateway phase
	pairs         []float64
}

func (p proxyResult) ratio() float64 {
	if p.floorRPS == 0 {
		return 0
	}
	return p.rps / p.floorRPS
}

// measure gives each of orgs a key (limits checked, never biting, as
// bulkhead-bench run's), then measures the floor and the gateway with
// the load spread over the keys, in pairs. The keys go with their
// organizations.
func (pp *placementProxy) measure(ctx context.Context, a *store.Admin, orgs []uuid.UUID) (proxyResult, error) {
	var r proxyResult
	keys := make([]string, 0, len(orgs))
	for _, org := range orgs {
		key, err := apikey.Generate(org)
		if err != nil {
			return r, err
		}
		if _, err := a.CreateKey(ctx, store.NewKey{OrgID: org, Hash: apikey.Hash([]byte(key)), DisplayPrefix: apikey.Display(key),
			Name: "bench-placement", RateLimitPerMinute: 100_000_000}); err != nil {
			return r, err
		}
		keys = append(keys, key)
	}
	var phaseErrs []string
	for round := range pp.rounds {
		tr := func(url string) vegeta.Targeter { return roundRobinTargeter(url, keys) }
		if pp.zipf > 1 && len(keys) > 1 {
			tr = func(url string) vegeta.Targeter { return zipfTargeter(url, keys, pp.zipf, uint64(round+1)) }
		}
		var floorRPS float64
		var g keysResult
		for k := range 2 {
			if (round+k)%2 == 0 { // even rounds start with the floor
				floorRPS = attack(pp.rig.url, headers(""), vegeta.Rate{Freq: 0}, pp.duration, pp.conns).Throughput
				continue
			}
			// The gateway reads the same configuration (its database
			// targets); the environment, BULKHEAD_* and the targets'
			// DSNs, is inherited.
			var err error
			g, err = keysPhase(ctx, pp.cfg, pp.bin, pp.rig.mock.addr, true, []string{"BULKHEAD_CONFIG=" + pp.cfgPath}, tr, "", pp.duration, pp.conns, false)
			if err != nil {
				return r, err
			}
		}
		r.pairs = append(r.pairs, g.m.Throughput/floorRPS)
		phaseErrs = append(phaseErrs, errs(g.m))
		r.floorRPS = max(r.floorRPS, floorRPS)
		if g.m.Throughput > r.rps {
			r.rps, r.p50, r.p99, r.rss = g.m.Throughput, g.m.Latencies.P50, g.m.Latencies.P99, g.rss
		}
	}
	r.errs = strings.Join(phaseErrs, ", ")
	return r, nil
}

// roundRobinTargeter sends the requests with keys in turn: every tenant
// equally, the most tenants interleaved in the request log's batches.
func roundRobinTargeter(url string, keys []string) vegeta.Targeter {
	var next atomic.Uint64
	return func(t *vegeta.Target) error {
		k := keys[(next.Add(1)-1)%uint64(len(keys))]
		*t = vegeta.Target{Method: "POST", URL: url, Body: []byte(chatBody), Header: headers(k)}
		return nil
	}
}
