package gateway

import (
	"strconv"
	"strings"
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

// A key's token budget sets each request's estimate aside at admission
// and settles it with the actual usage when the answer finishes, streams
// included.
func TestTokenLimit(t *testing.T) {
	h := newHarness(t, nil)
	org, _, _ := h.tenant(1000)
	key, _ := h.keyWithTPM(org, 1000, 220)
	// Each request reserves 72 tokens (9 for the prompt, max_tokens 63);
	// the mock answers with 69 (6 prompt, 63 completion). Three answers
	// spend 207: the 4th request's 72 no longer fit.
	statuses := []int{}
	for i := range 6 {
		body := chatBody63
		if i%2 == 1 {
			body = `{"model":"gpt-4o-mini","stream":true,"max_tokens":63,"messages":[{"role":"user","content":"Say hi"}]}`
		}
		r := h.do("POST", "/v1/chat/completions", body, bearer(key)...)
		statuses = append(statuses, r.status)
		if r.status == 429 {
			left, _ := strconv.Atoi(r.headers["x-ratelimit-remaining-tokens"])
			if _, typ, _, _ := openAIError(t, r.body); typ != "tokens" || left >= 72 || r.headers["retry-after"] == "" {
				t.Errorf("token 429: %s %v", r.body, r.headers)
			}
		} else if r.headers["x-ratelimit-limit-tokens"] != "220" {
			t.Errorf("no token headers: %v", r.headers)
		}
		// No wait: a stream is recorded, and its tokens settled, before
		// its terminal event reaches the caller.
	}
	if got := fmtStatuses(statuses); got != "200 200 200 429 429 429" {
		t.Errorf("statuses %s, want three answers then 429s", got)
	}
}

// chatBody63 is chatBody with max_tokens 63, what the mock generates: it
// reserves 72 tokens and uses 69.
const chatBody63 = `{"model":"gpt-4o-mini","max_tokens":63,"messages":[{"role":"user","content":"Say hi"}]}`

// THREATS 45 for tokens: concurrent requests through two instances cannot
// together take more than the key's tokens per minute, since each sets its
// estimate aside before it is forwarded (tokens charged only after the
// answer let all 20 through, 4.7 times the budget).
func TestTokenReservationBoundsConcurrentBurst(t *testing.T) {
	one, two := newHarness(t, nil), newHarness(t, nil)
	org, _, _ := one.tenant(1000)
	key, _ := one.keyWithTPM(org, 1000, 300)
	var mu sync.Mutex
	counts := map[int]int{}
	used := 0
	var wg sync.WaitGroup
	for i := range 20 {
		h := one
		if i%2 == 1 {
			h = two
		}
		wg.Go(func() {
			// All 20 are in flight at once: none has been charged yet.
			r := h.do("POST", "/v1/chat/completions", chatBody63, append(bearer(key), "X-Stainless-Mock-Latency", "300ms")...)
			mu.Lock()
			defer mu.Unlock()
			counts[r.status]++
			switch r.status {
			case 200:
				used += 69
			case 429:
				if msg, typ, code, _ := openAIError(t, r.body); typ != "tokens" || code != "rate_limit_exceeded" || !strings.Contains(msg, "requested 72") {
					t.Errorf("429: %s", r.body)
				}
			}
		})
	}
	wg.Wait()
	// 300 tokens hold 4 reservations of 72; the budget refills 5 tokens a
	// second, far too slowly for a fifth within the burst.
	if counts[200] != 4 || counts[429] != 16 {
		t.Errorf("statuses %v, want 4×200 and 16×429", counts)
	}
	if used > 300 {
		t.Errorf("admitted requests used %d tokens of a 300-token budget", used)
	}
}

// A request whose estimate exceeds the whole budget can never run: 429
// "tokens" saying so, without a Retry-After that would invite a retry.
func TestTokenReservationTooLarge(t *testing.T) {
	h := newHarness(t, nil)
	org, _, _ := h.tenant(1000)
	key, _ := h.keyWithTPM(org, 1000, 300)
	body := `{"model":"gpt-4o-mini","max_tokens":1000,"messages":[{"role":"user","content":"Say hi"}]}`
	r := h.do("POST", "/v1/chat/completions", body, bearer(key)...)
	msg, typ, code, _ := openAIError(t, r.body)
	if r.status != 429 || typ != "tokens" || code != "rate_limit_exceeded" || !strings.Contains(msg, "too large") ||
		!strings.Contains(msg, "limit 300, requested 1009") || r.headers["retry-after"] != "" {
		t.Fatalf("%d %s %v, want a 429 saying the request is too large", r.status, r.body, r.headers)
	}
	// Without max_tokens the estimate takes the configured default (256):
	// 265 fits.
	if r := h.do("POST", "/v1/chat/completions", chatBody, bearer(key)...); r.status != 200 {
		t.Fatalf("without max_tokens: %d %s", r.status, r.body)
	}
}

// Reservations are settled when the answer ends: a request that reserved
// 509 and used 69 gives 440 back, and failed upstream calls give back
// everything.
func TestTokenReservationSettles(t *testing.T) {
	// The failures must reach the upstream each time, not the open
	// circuit they would cause (attempts_test.go tests that).
	h := newHarness(t, func(c *config.Config) { c.UpstreamBreakerFailures = 0 })
	org, _, _ := h.tenant(1000)
	key, _ := h.keyWithTPM(org, 1000, 1000)
	big := `{"model":"gpt-4o-mini","max_tokens":500,"messages":[{"role":"user","content":"Say hi"}]}`
	// Upstream failures: each reserves 509, uses nothing, gives it back; a
	// leak would refuse the second.
	for i := range 4 {
		if r := h.do("POST", "/v1/chat/completions", big, append(bearer(key), "X-Stainless-Mock-Status", "500")...); r.status != 502 {
			t.Fatalf("failed request %d: %d %s, want 502", i, r.status, r.body)
		}
	}
	if r := h.do("POST", "/v1/chat/completions", big, bearer(key)...); r.status != 200 {
		t.Fatalf("after failures: %d %s", r.status, r.body)
	}
	// 69 used; the next request's 72 leave 859, plus what refilled (1000
	// a minute) since.
	began := time.Now()
	r := h.do("POST", "/v1/chat/completions", chatBody63, bearer(key)...)
	left, _ := strconv.Atoi(r.headers["x-ratelimit-remaining-tokens"])
	refill := int(time.Since(began).Seconds()*1000/60) + 1
	if r.status != 200 || left < 1000-69-72 || left > 1000-69-72+refill {
		t.Errorf("%d, remaining tokens %d, want %d (+%d refilled)", r.status, left, 1000-69-72, refill)
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
