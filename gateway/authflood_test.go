package gateway

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway/apikey"
)

// THREATS 25 and 59: 2,000 unique well-formed keys for a real organization
// from one address, over 4 connections, each with a forged
// X-Forwarded-For. With the default budgets at most about a minute's worth
// (60) reach PostgreSQL; the rest get an OpenAI-shaped 429 with
// Retry-After and no look-up. The tenant's own cached key keeps getting
// 200 from the same address during the flood; another address keeps its
// own budget; and a valid key that no cache knows, sent from the flooding
// address, waits like the guesses (the documented price).
func TestAuthFailureFloodIsThrottled(t *testing.T) {
	h := newHarness(t, nil)
	org, valid, _ := h.tenant(1_000_000)
	if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(valid)...); r.status != 200 {
		t.Fatalf("valid key: %d %s", r.status, r.body)
	}
	keys := make([]string, 2000)
	for i := range keys {
		keys[i], _ = apikey.Generate(org)
	}
	before, start := h.auth.Stats(), time.Now()

	const conns = 4
	attacker := h.from("127.0.0.1")
	attacker.MaxConns = conns
	var mu sync.Mutex
	statuses := map[int]int{}
	var bad429 atomic.Int64
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(keys); i += conns {
				r := h.doVia(attacker, "POST", "/v1/chat/completions", chatBody,
					"Authorization", "Bearer "+keys[i], "X-Forwarded-For", "10.9."+strconv.Itoa(i/250)+"."+strconv.Itoa(i%250))
				mu.Lock()
				statuses[r.status]++
				mu.Unlock()
				if r.status == 429 {
					_, typ, code, reqID := openAIError(t, r.body)
					secs, err := strconv.Atoi(r.headers["retry-after"])
					if code != "auth_rate_limited" || typ == "" || reqID != r.headers["x-request-id"] || err != nil || secs < 1 {
						bad429.Add(1)
					}
				}
			}
		}()
	}
	// The tenant's traffic, from the same address, during the flood.
	legit := h.from("127.0.0.1")
	var legitOK, legitBad atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			if r := h.doVia(legit, "POST", "/v1/chat/completions", chatBody, bearer(valid)...); r.status == 200 {
				legitOK.Add(1)
			} else {
				legitBad.Add(1)
			}
		}
	}()
	wg.Wait()
	<-done

	lookups := h.auth.Stats().L3Lookups - before.L3Lookups
	// The default budget (60), the look-ups in flight when it ran out, and
	// its refill (one a second) while the flood lasted.
	bound := uint64(60 + conns + 1 + int(time.Since(start)/time.Second))
	t.Logf("statuses %v, %d look-ups reached PostgreSQL (bound %d)", statuses, lookups, bound)
	if lookups > bound {
		t.Errorf("%d of 2000 guessed keys reached PostgreSQL, want at most %d", lookups, bound)
	}
	if statuses[401] != int(lookups) || statuses[401]+statuses[429] != 2000 {
		t.Errorf("statuses %v for %d look-ups: want a 401 per look-up and 429 for the rest", statuses, lookups)
	}
	if bad429.Load() > 0 {
		t.Errorf("%d answers of 429 without the auth_rate_limited OpenAI error, request id or Retry-After", bad429.Load())
	}
	if legitOK.Load() != 50 {
		t.Errorf("the tenant's cached key got %d answers of 200 and %d others during the flood, want 50 of 200", legitOK.Load(), legitBad.Load())
	}

	// The flooding address is throttled even for a valid key no cache knows.
	cold, _ := h.key(org, 1000)
	if r := h.doVia(attacker, "POST", "/v1/chat/completions", chatBody, bearer(cold)...); r.status != 429 {
		t.Errorf("cold valid key from the flooding address: %d, want 429", r.status)
	}
	// Another address has its own budget: its unknown key is looked up
	// (401) and its valid key works.
	other := h.from("127.0.0.2")
	unknown, _ := apikey.Generate(uuid.New())
	if r := h.doVia(other, "POST", "/v1/chat/completions", chatBody, bearer(unknown)...); r.status != 401 {
		t.Errorf("unknown key from another address: %d, want 401", r.status)
	}
	if r := h.doVia(other, "POST", "/v1/chat/completions", chatBody, bearer(cold)...); r.status != 200 {
		t.Errorf("cold valid key from another address: %d %s, want 200", r.status, r.body)
	}
}
