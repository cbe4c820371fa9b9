package gateway

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// Two gateway instances share one Redis: 200 concurrent requests on a key
// limited to 60 per minute admit exactly 60 (the documented burst is the
// whole minute's budget), plus one for each second the burst took (the
// budget refills at one a second; a loaded 2-core machine can take more
// than one), and the rest get an OpenAI-shaped 429.
func TestRequestLimitAcrossInstances(t *testing.T) {
	one, two := newHarness(t, nil), newHarness(t, nil)
	_, key, _ := one.tenant(60)
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := one
			if i%2 == 1 {
				h = two
			}
			r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...)
			mu.Lock()
			counts[r.status]++
			mu.Unlock()
			switch r.status {
			case 200:
				if r.headers["x-ratelimit-limit-requests"] != "60" || r.headers["x-ratelimit-remaining-requests"] == "" || r.headers["x-ratelimit-reset-requests"] == "" {
					t.Errorf("200 without rate-limit headers: %v", r.headers)
				}
			case 429:
				_, typ, code, _ := openAIError(t, r.body)
				if code != "rate_limit_exceeded" || typ != "requests" || r.headers["retry-after"] == "" || r.headers["x-ratelimit-remaining-requests"] != "0" {
					t.Errorf("429: %s %v", r.body, r.headers)
				}
			}
		}()
	}
	wg.Wait()
	refills := int(time.Since(start) / time.Second)
	if counts[200] < 60 || counts[200] > 60+refills || counts[200]+counts[429] != 200 {
		t.Errorf("statuses %v, want 60×200 (+%d refilled during the burst) and the rest 429", counts, refills)
	}
}

// A key's token budget admits while it has room and is charged with the
// actual usage when each answer finishes, streams included.
func TestTokenLimit(t *testing.T) {
	h := newHarness(t, nil)
	org, _, _ := h.tenant(1000)
	key, _ := h.keyWithTPM(org, 1000, 200)
	// The mock answers a chat with 63 completion tokens: 3 answers
	// exhaust 200 tokens, the 4th request is refused.
	statuses := []int{}
	for i := range 6 {
		body := chatBody
		if i%2 == 1 {
			body = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hi"}]}`
		}
		r := h.do("POST", "/v1/chat/completions", body, bearer(key)...)
		statuses = append(statuses, r.status)
		if r.status == 429 {
			if _, typ, _, _ := openAIError(t, r.body); typ != "tokens" || r.headers["x-ratelimit-remaining-tokens"] != "0" {
				t.Errorf("token 429: %s %v", r.body, r.headers)
			}
		} else if r.headers["x-ratelimit-limit-tokens"] != "200" {
			t.Errorf("no token headers: %v", r.headers)
		}
		time.Sleep(20 * time.Millisecond) // the charge follows the answer
	}
	if got := fmtStatuses(statuses); got != "200 200 200 429 429 429" {
		t.Errorf("statuses %s, want three answers then 429s", got)
	}
}

func fmtStatuses(s []int) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += strconv.Itoa(v)
	}
	return out
}

// With Redis unreachable, keys are verified through PostgreSQL and limits
// fall back to the local limiter: requests keep flowing, none gets a 500,
// none waits on Redis.
func TestRedisDownKeepsServing(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.RedisURL = deadRedis })
	_, key, _ := h.tenant(5)
	var statuses []int
	start := time.Now()
	for range 7 {
		statuses = append(statuses, h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...).status)
	}
	if got := fmtStatuses(statuses); got != "200 200 200 200 200 429 429" {
		t.Errorf("statuses %s, want 5 admitted by the local limiter, then 429", got)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("7 requests took %s with Redis down", took)
	}
}

// A key's new limit applies on every instance without a restart, through
// the key cache invalidation.
func TestLimitChangeAppliesWithoutRestart(t *testing.T) {
	h := newHarness(t, nil)
	_, key, k := h.tenant(2)
	for i, want := range []int{200, 200, 429} {
		if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...); r.status != want {
			t.Fatalf("request %d: %d, want %d", i, r.status, want)
		}
	}
	rpm := 100
	if _, err := h.admin.UpdateKeyLimits(t.Context(), k.ID, &rpm, nil); err != nil {
		t.Fatal(err)
	}
	if err := auth.Invalidate(t.Context(), storetest.Redis(t), k.Hash); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...)
		if r.status == 200 && r.headers["x-ratelimit-limit-requests"] == "100" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new limit not applied within a second: %d %v", r.status, r.headers)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Malformed requests count against the key's limit too, so a key cannot
// write log rows faster than its limit allows.
func TestMalformedRequestsAreLimited(t *testing.T) {
	h := newHarness(t, nil)
	_, key, _ := h.tenant(2)
	var got []int
	for range 3 {
		got = append(got, h.do("POST", "/v1/chat/completions", "{broken", bearer(key)...).status)
	}
	if fmtStatuses(got) != "400 400 429" {
		t.Errorf("statuses %v, want 400 400 429", got)
	}
}
