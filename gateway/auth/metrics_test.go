package auth_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
)

// unknownKeys is a key store that knows no key, or fails with err.
type unknownKeys struct{ err error }

func (u unknownKeys) LookupKeys(context.Context, []store.KeyRef) (map[store.KeyRef]store.Key, error) {
	return nil, u.err
}

func (unknownKeys) OrgExists(context.Context, uuid.UUID) (bool, error) { return true, nil }

// Each look-up outcome moves its own bulkhead_auth_* series, without
// PostgreSQL or Redis: a malformed credential, unknown keys charged to
// an address's failure budget of one a minute and then throttled, a
// repeated unknown key answered by the negative cache, and a failing
// database.
func TestAuthenticatorCollector(t *testing.T) {
	ctx := context.Background()
	failures := ratelimit.New(nil, ratelimit.Options{Prefix: "authfail", FailMode: ratelimit.FailLocal})
	a, err := auth.New(auth.Options{Store: unknownKeys{}, Failures: failures, FailuresPerMinutePerAddress: 1})
	if err != nil {
		t.Fatal(err)
	}
	broken, err := auth.New(auth.Options{Store: unknownKeys{err: errors.New("connection refused")}})
	if err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddr("192.0.2.7")
	org := uuid.New()
	first, _ := apikey.Generate(org)
	second, _ := apikey.Generate(org)
	for _, c := range []struct {
		a    *auth.Authenticator
		cred string
		want error
	}{
		{a, "sk_not-a-key", auth.ErrUnauthenticated},
		{a, first, auth.ErrUnauthenticated}, // refused by PostgreSQL: the address's one failure
		{a, first, auth.ErrUnauthenticated}, // the negative cache
		{a, second, auth.ErrThrottled},      // the budget is spent
		{broken, first, auth.ErrUnavailable},
	} {
		if _, err := c.a.Authenticate(ctx, []byte(c.cred), client); !errors.Is(err, c.want) {
			t.Fatalf("%.20s: err = %v, want %v", c.cred, err, c.want)
		}
	}

	got := collect(t, a)
	for name, want := range map[string]float64{
		"bulkhead_auth_malformed_total":                     1,
		"bulkhead_auth_l3_lookups_total":                    1,
		"bulkhead_auth_l3_queries_total":                    1,
		"bulkhead_auth_failures_total":                      1,
		"bulkhead_auth_l1_negative_hits_total":              1,
		"bulkhead_auth_throttled_total{scope=address}":      1,
		"bulkhead_auth_throttled_total{scope=organization}": 0,
		"bulkhead_auth_l1_hits_total":                       0,
		"bulkhead_auth_l2_hits_total":                       0,
		"bulkhead_auth_l2_errors_total":                     0,
		"bulkhead_auth_l3_errors_total":                     0,
		"bulkhead_auth_invalidations_total":                 0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (exported: %t), want %v", name, v, ok, want)
		}
	}
	if len(got) != 12 {
		t.Errorf("%d series, want 12: %v", len(got), got)
	}
	if v := collect(t, broken)["bulkhead_auth_l3_errors_total"]; v != 1 {
		t.Errorf("failing database: l3_errors = %v, want 1", v)
	}
}

// collect gathers c from a pedantic registry of its own, by series.
func collect(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = m.GetCounter().GetValue()
		}
	}
	return got
}
