package gateway

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/budget"
	"github.com/bulkheadhq/bulkhead/gateway/catalog"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// budgetRedisDB is this package's own Redis database for budget tests,
// which flush it: never database 0, which other tests and agents share.
const budgetRedisDB = 14

func budgetRedis(t *testing.T) *redis.Client {
	t.Helper()
	storetest.Redis(t) // skips (or fails under CI) without Redis
	opts, err := redis.ParseURL(storetest.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	opts.DB = budgetRedisDB
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// budgetReplica serves another gateway of h (a replica: h's store and
// Redis) with the catalog, a request-log writer into PostgreSQL and a
// budget enforcer on rdb under prefix.
func budgetReplica(t *testing.T, h *harness, rdb redis.UniversalClient, prefix string, n *budget.Notifier) *harness {
	t.Helper()
	return budgetReplicaWith(t, h, budget.Options{Redis: rdb, Prefix: prefix, Notifier: n})
}

// budgetReplicaWith is budgetReplica with the enforcer's options (Source
// is h's store).
func budgetReplicaWith(t *testing.T, h *harness, o budget.Options) *harness {
	t.Helper()
	cat, err := catalog.New(catalog.Options{Source: h.st, Redis: h.rdb, DefaultAllow: true, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if o.Source == nil {
		o.Source = h.st
	}
	enf, err := budget.New(o)
	if err != nil {
		t.Fatal(err)
	}
	writer, err := store.NewWriter(h.st, store.WriterOptions{FlushInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { cat.Run(ctx) })            //nolint:errcheck // nil on cancel
	wg.Go(func() { writer.Run(ctx) })         //nolint:errcheck // flushes on cancel
	t.Cleanup(func() { cancel(); wg.Wait() }) // after the gateway's shutdown (cleanups run last first)
	srv, err := New(h.cfg, zap.NewNop(), h.deps(Deps{Recorder: writer, Prompts: h.st, Limiter: h.limiter, Catalog: cat, Budgets: enf}))
	if err != nil {
		t.Fatal(err)
	}
	return h.serve(srv)
}

// pricedModel adds a shared catalog model at $1000 per million tokens
// in and out (a tenth of a cent a token).
func pricedModel(t *testing.T, h *harness) string {
	t.Helper()
	name := "shared-" + uuid.NewString()[:8]
	if _, err := h.admin.AddModel(context.Background(), store.Model{Name: name, Upstream: "mock",
		InputPrice: 1_000_000_000, CachedInputPrice: 1_000_000_000, OutputPrice: 1_000_000_000, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	return name
}

func budgetChat(model, user string) string {
	return `{"model":"` + model + `","user":"` + user + `","max_tokens":100,"messages":[{"role":"user","content":"hello there"}]}`
}

// spentInLog waits until org has rows rows in the request log and
// returns the sum of their costs.
func spentInLog(t *testing.T, org uuid.UUID, rows int) store.MicroUSD {
	t.Helper()
	owner := storetest.OwnerPool(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		var sum store.MicroUSD
		if err := owner.QueryRow(context.Background(), `SELECT count(*), coalesce(sum(cost_micros), 0) FROM prompts WHERE organization_id = $1`, org).Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		if n == rows {
			return sum
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows in the log, want %d", n, rows)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two replicas sharing Redis and PostgreSQL, many concurrent requests, a
// $1 budget (a request may cost $0.104: each goes to Redis) and a $6 one
// (most are decided from a replica's lease): together they spend at most
// the budget (each request reserves its maximum cost first), and close to
// it. Refusals are OpenAI's insufficient_quota 429 with the remaining
// budget in a header. Each soft threshold reaches the webhook exactly
// once, signed, even though its first delivery fails. Tenant B is not
// affected: without a budget it has no budget header; with one of its
// own, its header shows its own.
//
// Without Redis ("postgres"), the same through PostgreSQL's counters.
func TestBudgetTwoReplicas(t *testing.T) {
	for _, counters := range []string{"redis", "postgres"} {
		for _, usd := range []store.MicroUSD{1_000_000, 6_000_000} {
			t.Run(counters+"/"+usd.String(), func(t *testing.T) { budgetTwoReplicas(t, usd, counters == "postgres") })
		}
	}
}

func budgetTwoReplicas(t *testing.T, limit store.MicroUSD, noRedis bool) {
	h := newHarness(t, catalogConfig(config.ModelAccessAll))
	org, key, _ := h.tenant(1_000_000)
	_, keyB, _ := h.tenant(1_000_000)
	orgC, keyC, _ := h.tenant(1_000_000)
	model := pricedModel(t, h)
	if _, err := h.admin.SetBudget(context.Background(), store.Budget{OrgID: org, Limit: limit,
		Window: store.BudgetWindow{Kind: "day"}, AlertAt: []int{250, 500}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.SetBudget(context.Background(), store.Budget{OrgID: orgC, Limit: 500_000,
		Window: store.BudgetWindow{Kind: "day"}}); err != nil {
		t.Fatal(err)
	}

	secret := []byte("webhook-secret-0123456789abcdef")
	var mu sync.Mutex
	got := map[string]int{}
	var posts atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get(budget.SignatureHeader)
		ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
		sec, _ := strconv.ParseInt(ts, 10, 64)
		if !hmac.Equal([]byte(sig), []byte(budget.Sign(secret, time.Unix(sec, 0), body))) {
			t.Errorf("bad signature %q", sig)
		}
		if posts.Add(1) == 1 {
			w.WriteHeader(500) // the first delivery fails: it is retried
			return
		}
		var a budget.Alert
		if err := json.Unmarshal(body, &a); err != nil || a.OrgID != org {
			t.Errorf("alert %s: %v", body, err)
		}
		mu.Lock()
		got[a.Threshold]++
		mu.Unlock()
	}))
	t.Cleanup(recv.Close)

	o := budget.Options{Prefix: "bulkhead:budget:test:" + uuid.NewString()}
	if noRedis {
		o.Counters = h.st
	} else {
		o.Redis = budgetRedis(t)
	}
	var replicas []*harness
	for range 2 {
		n := budget.NewNotifier(budget.NotifierOptions{URL: recv.URL, Secret: secret, Backoff: 20 * time.Millisecond})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { n.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		o.Notifier = n
		replicas = append(replicas, budgetReplicaWith(t, h, o))
	}

	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		gw := replicas[i%2]
		wg.Go(func() {
			for range 60 {
				r := gw.do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+key)
				if r.headers[strings.ToLower(HeaderBudgetRemaining)] == "" {
					t.Errorf("answer %d without the remaining budget header", r.status)
				}
				switch r.status {
				case 200:
					ok.Add(1)
				case 429:
					refused.Add(1)
					if !strings.Contains(string(r.body), `"type":"insufficient_quota"`) || !strings.Contains(string(r.body), `"code":"insufficient_quota"`) {
						t.Errorf("refusal body %s", r.body)
					}
					return
				default:
					t.Errorf("%d %s", r.status, r.body)
					return
				}
			}
		})
	}
	wg.Wait()
	if refused.Load() == 0 {
		t.Fatalf("nothing refused after %d requests", ok.Load())
	}
	spent := spentInLog(t, org, int(ok.Load()))
	// One request's most: ~4 prompt tokens estimated + 100 max_tokens at
	// $0.001 a token; what it actually cost is below that.
	oneRequest := store.MicroUSD(110_000)
	if spent > limit || spent < limit-2*oneRequest {
		t.Errorf("%d requests spent $%s of a $%s budget; want at most the budget and close to it", ok.Load(), spent, limit)
	}
	t.Logf("%d answered, %d refused, spent $%s", ok.Load(), refused.Load(), spent)

	if r := replicas[0].do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+keyB); r.status != 200 ||
		r.headers[strings.ToLower(HeaderBudgetRemaining)] != "" {
		t.Errorf("tenant B without a budget: %d %v", r.status, r.headers)
	}
	// Tenant C's $0.5 is whole: its first request's header says what is
	// left after its own reservation (11 prompt tokens estimated and 100
	// max_tokens at $0.001).
	if r := replicas[1].do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+keyC); r.status != 200 ||
		r.headers[strings.ToLower(HeaderBudgetRemaining)] != "0.389" {
		t.Errorf("tenant C with a budget of its own: %d %v %s", r.status, r.headers, r.body)
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for a duplicate to show
	mu.Lock()
	defer mu.Unlock()
	if got["0.25"] != 1 || got["0.5"] != 1 || len(got) != 2 {
		t.Errorf("webhook alerts %v, want 0.25 and 0.5 once each", got)
	}
}

// Redis flushed mid-window: the next request rebuilds the counter from
// the request log, so the spend is what it was (the remaining budget
// continues where it stood) and the budget still refuses at its limit.
func TestBudgetRebuiltAfterFlush(t *testing.T) {
	h := newHarness(t, catalogConfig(config.ModelAccessAll))
	org, key, _ := h.tenant(1_000_000)
	model := pricedModel(t, h)
	bud, err := h.admin.SetBudget(context.Background(), store.Budget{OrgID: org, Limit: 1_000_000, Window: store.BudgetWindow{Kind: "month"}})
	if err != nil {
		t.Fatal(err)
	}
	rdb := budgetRedis(t)
	prefix := "bulkhead:budget:test:" + uuid.NewString()
	gw := budgetReplica(t, h, rdb, prefix, nil)
	remaining := func(r reply) store.MicroUSD {
		t.Helper()
		v, err := store.ParseUSD(r.headers[strings.ToLower(HeaderBudgetRemaining)])
		if r.status != 200 || err != nil {
			t.Fatalf("%d %s (%v)", r.status, r.body, err)
		}
		return v
	}
	for range 4 {
		remaining(gw.do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+key))
	}
	before := remaining(gw.do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+key))
	spent := spentInLog(t, org, 5) // every request written (and settled: on the replica's lease, before its row)
	// The counter holds the spend and the replica's lease on top.
	counter := prefix + ":{" + org.String() + "}:" + bud.ID.String()
	fields, err := rdb.HGetAll(context.Background(), counter).Result()
	if err != nil {
		t.Fatal(err)
	}
	var sum store.MicroUSD
	for f, v := range fields {
		if f != "r" {
			n, _ := strconv.ParseInt(v, 10, 64)
			sum += store.MicroUSD(n)
		}
	}
	if sum < spent || sum > 1_000_000 {
		t.Fatalf("the counter holds %d, the log %d (limit 1000000)", sum, spent)
	}
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	after := remaining(gw.do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+key))
	// Same request, same reservation: what is left after it moved by what
	// the previous request actually cost, as if nothing was flushed.
	var lastCost store.MicroUSD
	if err := storetest.OwnerPool(t).QueryRow(context.Background(), `SELECT cost_micros FROM prompts WHERE organization_id = $1
		ORDER BY created_at DESC LIMIT 1`, org).Scan(&lastCost); err != nil {
		t.Fatal(err)
	}
	if after != before-lastCost {
		t.Errorf("after the flush $%s remain, want $%s (before $%s, minus the last request's $%s; $%s spent)", after, before-lastCost, before, lastCost, spent)
	}
	// The rebuilt counter still stops the tenant at the limit.
	for i := 0; ; i++ {
		r := gw.do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+key)
		if r.status == 429 {
			break
		}
		if r.status != 200 || i > 100 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
}

// Key and end-user budgets apply to their key and end user alone; the
// header names the tightest level.
func TestBudgetLevels(t *testing.T) {
	h := newHarness(t, catalogConfig(config.ModelAccessAll))
	org, key, k := h.tenant(1_000_000)
	model := pricedModel(t, h)
	ctx := context.Background()
	bob := "bob"
	day := store.BudgetWindow{Kind: "day"}
	for _, b := range []store.Budget{
		{OrgID: org, Limit: 50_000_000, Window: day},
		{OrgID: org, KeyID: &k.ID, Limit: 20_000_000, Window: day},
		{OrgID: org, EndUser: &bob, Limit: 1000, Window: store.BudgetWindow{Kind: "rolling", Rolling: time.Hour}},
	} {
		if _, err := h.admin.SetBudget(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	gw := budgetReplica(t, h, budgetRedis(t), "bulkhead:budget:test:"+uuid.NewString(), nil)
	r := gw.do("POST", "/v1/chat/completions", budgetChat(model, "bob"), "Authorization", "Bearer "+key)
	if r.status != 429 || r.headers[strings.ToLower(HeaderBudgetLevel)] != "user" || !strings.Contains(string(r.body), "user budget") ||
		r.headers["retry-after"] == "" || r.headers["retry-after"] == "0" {
		t.Errorf("bob over his budget: %d %v %s", r.status, r.headers, r.body)
	}
	r = gw.do("POST", "/v1/chat/completions", budgetChat(model, "alice"), "Authorization", "Bearer "+key)
	if r.status != 200 || r.headers[strings.ToLower(HeaderBudgetLevel)] != "key" {
		t.Errorf("alice: %d %v %s", r.status, r.headers, r.body)
	}
}

// Redis goes away and PostgreSQL's counters cannot be reached either: a
// replica keeps admitting from the dollars it leased (Redis counted them),
// then budgets fail closed with an OpenAI-shaped 503 budget_unavailable
// (never a 500, never unenforced). A tenant without a budget is not
// affected. (With PostgreSQL up, requests go on: TestBudgetRedisFallback.)
func TestBudgetRedisDown(t *testing.T) {
	h := newHarness(t, catalogConfig(config.ModelAccessAll))
	org, key, _ := h.tenant(1_000_000)
	_, keyB, _ := h.tenant(1_000_000)
	model := pricedModel(t, h)
	if _, err := h.admin.SetBudget(context.Background(), store.Budget{OrgID: org, Limit: 100_000_000,
		Window: store.BudgetWindow{Kind: "day"}}); err != nil {
		t.Fatal(err)
	}
	srv := storetest.StartRedisServer(t)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	gw := budgetReplicaWith(t, h, budget.Options{Redis: rdb, Prefix: "bulkhead:budget:test", Counters: unreachableCounters{}})
	if r := gw.do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+key); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	srv.Kill()
	leased := 0
	for ; ; leased++ {
		r := gw.do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+key)
		if r.status == 200 && leased < 1000 {
			continue
		}
		if r.status != 503 || !strings.Contains(string(r.body), `"code":"budget_unavailable"`) || !strings.Contains(string(r.body), r.headers["x-request-id"]) {
			t.Fatalf("after %d answers from the lease: %d %s", leased, r.status, r.body)
		}
		break
	}
	// The lease was min(256 requests, ($100 - $0.111) / 16): $6.243062,
	// 56 requests of $0.111 (11 prompt tokens estimated, 100 max_tokens),
	// plus what the answered ones reserved beyond their cost.
	if leased < 56 {
		t.Errorf("%d requests answered from the lease after Redis went away, want at least 56", leased)
	}
	if r := gw.do("POST", "/v1/chat/completions", budgetChat(model, "u"), "Authorization", "Bearer "+keyB); r.status != 200 {
		t.Errorf("tenant B without a budget: %d %s", r.status, r.body)
	}
}
