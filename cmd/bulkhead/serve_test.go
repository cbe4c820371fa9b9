package main

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// An operator sees failed look-ups and throttled ones on /metrics, as
// serve wires them (here in single-instance mode: no Redis).
func TestAuthFailureMetrics(t *testing.T) {
	ctx := context.Background()
	org, err := storetest.Admin(t).CreateOrg(ctx, "metrics")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.AuthFailuresPerMinutePerAddress = 1
	a, err := auth.New(auth.Options{Store: storetest.Open(t, store.Options{}), Failures: failureLimiter(cfg, nil, zap.NewNop()),
		FailuresPerMinutePerAddress: cfg.AuthFailuresPerMinutePerAddress, FailuresPerMinutePerOrg: cfg.AuthFailuresPerMinutePerOrg})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(a)

	client := netip.MustParseAddr("192.0.2.1")
	for i, want := range []error{auth.ErrUnauthenticated, auth.ErrThrottled, auth.ErrThrottled} {
		k, _ := apikey.Generate(org.ID)
		if _, err := a.Authenticate(ctx, []byte(k), client); !errors.Is(err, want) {
			t.Fatalf("key %d: err = %v, want %v", i, err, want)
		}
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = m.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"bulkhead_auth_failures_total":                      1,
		"bulkhead_auth_throttled_total{scope=address}":      2,
		"bulkhead_auth_throttled_total{scope=organization}": 0,
		"bulkhead_auth_l3_lookups_total":                    1,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (exported: %t), want %v", name, v, ok, want)
		}
	}
}
