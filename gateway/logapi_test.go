package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// seedPrompts writes n rows for org through the owner, inside org's context,
// one second apart, alternating models m1 and m2, with ids that carry their
// created_at as the gateway's do.
func seedPrompts(t *testing.T, org, key uuid.UUID, n int) {
	t.Helper()
	seedPromptsWith(t, org, key, n, "m", 10, 5)
}

// seedPromptsWith is seedPrompts with models model+"1" and model+"2", and
// the given token counts on every row.
func seedPromptsWith(t *testing.T, org, key uuid.UUID, n int, model string, promptTokens, completionTokens int) {
	t.Helper()
	owner := storetest.OwnerPool(t)
	err := pgx.BeginFunc(context.Background(), owner, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `SELECT set_config('app.current_tenant_id', $1, true)`, org.String()); err != nil {
			return err
		}
		_, err := tx.Exec(context.Background(), `INSERT INTO prompts (organization_id, id, request_id, api_key_id, model, prompt_text, response,
			prompt_tokens, completion_tokens, usage_tokens, usage_source, status, created_at)
			SELECT $1, prompts_row_id(t, gen_random_uuid()), 'seed-' || $4::text || g, $2, $4::text || (g % 2 + 1), 'prompt ' || g, 'answer ' || g,
			       $5::int, $6::int, $5::int + $6::int, 'upstream', 200, t
			FROM generate_series(1, $3::int) g, LATERAL (SELECT now() - make_interval(secs => g) AS t) c`,
			org, key, n, model, promptTokens, completionTokens)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

type promptPage struct {
	Data       []store.Prompt `json:"data"`
	HasMore    bool           `json:"has_more"`
	NextCursor *string        `json:"next_cursor"`
}

func TestReadAPI(t *testing.T) {
	h := newHarness(t, nil)
	orgA, keyA, kA := h.tenant(1000)
	orgB, keyB, kB := h.tenant(1000)
	seedPrompts(t, orgA, kA.ID, 5)
	seedPrompts(t, orgB, kB.ID, 3)

	get := func(key, path string, headers ...string) reply {
		return h.do("GET", path, "", append(bearer(key), headers...)...)
	}
	page := func(r reply) promptPage {
		t.Helper()
		var p promptPage
		if r.status != 200 || json.Unmarshal(r.body, &p) != nil {
			t.Fatalf("%d %s", r.status, r.body)
		}
		return p
	}

	// Pagination walks A's rows newest first, each once.
	var all []store.Prompt
	cursor := ""
	for i := 0; i < 10; i++ {
		p := page(get(keyA, "/api/v1/prompts?limit=2"+cursor))
		all = append(all, p.Data...)
		if !p.HasMore {
			break
		}
		cursor = "&cursor=" + *p.NextCursor
	}
	if len(all) != 5 {
		t.Fatalf("paged %d rows, want 5", len(all))
	}
	seen := map[uuid.UUID]bool{}
	for i, p := range all {
		if seen[p.ID] || (i > 0 && p.CreatedAt.After(all[i-1].CreatedAt)) || p.APIKeyID == nil || *p.APIKeyID != kA.ID {
			t.Errorf("row %d: %+v (repeated, out of order or not A's)", i, p)
		}
		seen[p.ID] = true
	}
	if p := page(get(keyA, "/api/v1/prompts?model=m1")); len(p.Data) != 2 {
		t.Errorf("model filter: %d rows, want 2", len(p.Data))
	}

	// B can reach none of A's rows, by any parameter.
	for _, path := range []string{
		"/api/v1/prompts", "/api/v1/prompts?org=" + orgA.String(), "/api/v1/prompts?organization_id=" + orgA.String(),
		"/api/v1/prompts?model=m1'%20OR%201=1--", "/api/v1/prompts?limit=100",
	} {
		p := page(get(keyB, path, "X-Tenant-Id", orgA.String(), "X-Organization-Id", orgA.String()))
		for _, row := range p.Data {
			if *row.APIKeyID != kB.ID {
				t.Errorf("%s as B returned A's row %s", path, row.ID)
			}
		}
	}
	mine := get(keyA, "/api/v1/prompts/"+all[0].ID.String())
	if mine.status != 200 || !strings.Contains(string(mine.body), all[0].ID.String()) {
		t.Errorf("A reads its own row: %d %s", mine.status, mine.body)
	}
	theirs := get(keyB, "/api/v1/prompts/"+all[0].ID.String())
	missing := get(keyB, "/api/v1/prompts/"+uuid.NewString())
	strip := func(r reply) string {
		_, _, _, id := openAIError(t, r.body)
		return fmt.Sprint(r.status, strings.ReplaceAll(string(r.body), id, ""))
	}
	if theirs.status != 404 || strip(theirs) != strip(missing) {
		t.Errorf("B reading A's row: %s; a missing row: %s", strip(theirs), strip(missing))
	}

	// Bad parameters name themselves.
	for param, path := range map[string]string{
		"limit":    "/api/v1/prompts?limit=0",
		"since":    "/api/v1/prompts?since=yesterday",
		"cursor":   "/api/v1/prompts?cursor=garbage",
		"group_by": "/api/v1/usage?group_by=organization_id;DROP%20TABLE%20prompts",
		"until":    "/api/v1/usage?until=soon",
	} {
		r := get(keyA, path)
		var e struct{ Error struct{ Param *string } }
		json.Unmarshal(r.body, &e) //nolint:errcheck // checked below
		if r.status != 400 || e.Error.Param == nil || *e.Error.Param != param {
			t.Errorf("%s: %d %s, want 400 naming %s", path, r.status, r.body, param)
		}
	}
	if r := get(keyA, "/api/v1/prompts?limit=1000"); r.status != 400 {
		t.Errorf("limit above the cap: %d", r.status)
	}

	// Usage by model: A's five rows, 15 tokens each.
	r := get(keyA, "/api/v1/usage?group_by=model&since="+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
	var u struct{ Data []store.UsageRow }
	if r.status != 200 || json.Unmarshal(r.body, &u) != nil {
		t.Fatalf("usage: %d %s", r.status, r.body)
	}
	var req, tok int64
	for _, g := range u.Data {
		req += g.Requests
		tok += g.TotalTokens
	}
	if len(u.Data) != 2 || req != 5 || tok != 75 {
		t.Errorf("usage %+v, want 2 models, 5 requests, 75 tokens", u.Data)
	}
	if r := h.do("GET", "/api/v1/prompts", ""); r.status != 401 {
		t.Errorf("no key: %d", r.status)
	}
}

// tenantParams and tenantHeaders are every way a request could try to
// name a tenant besides its credential.
var (
	tenantParams  = []string{"organization_id", "org", "org_id", "organization", "tenant", "tenant_id", "team_id"}
	tenantHeaders = []string{"X-Tenant-Id", "X-Organization-Id", "X-Org-Id", "OpenAI-Organization", "Organization", "X-Bulkhead-Organization"}
)

// B's key against every read endpoint (list, get by id, usage by every
// group_by), with every tenant-looking parameter and header naming A, all
// at once and each alone: every answer is exactly B's (its rows, its
// totals) and carries nothing of A's. A has rows, and its own key sees
// them through the same endpoints, so the check cannot pass on emptiness.
func TestReadAPICrossTenantMatrix(t *testing.T) {
	h := newHarness(t, nil)
	orgA, keyA, kA := h.tenant(100000)
	orgB, keyB, kB := h.tenant(100000)
	seedPromptsWith(t, orgA, kA.ID, 5, "a-model-", 10, 5)
	seedPromptsWith(t, orgB, kB.ID, 3, "b-model-", 7, 4)
	ctx := context.Background()
	ids := func(org uuid.UUID) []uuid.UUID {
		rows, _ := storetest.OwnerPool(t).Query(ctx, `SELECT id FROM prompts WHERE organization_id = $1 ORDER BY created_at DESC, id DESC`, org)
		out, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	idsA, idsB := ids(orgA), ids(orgB)
	if len(idsA) != 5 || len(idsB) != 3 {
		t.Fatalf("seeded %d rows for A and %d for B, want 5 and 3", len(idsA), len(idsB))
	}
	// Anything of A's that could show in an answer to B.
	traces := map[string]string{"A's organization": orgA.String(), "A's key id": kA.ID.String(), "A's models": "a-model-", "A's request ids": "seed-a-model-"}
	for i, id := range idsA {
		traces[fmt.Sprintf("A's row %d", i)] = id.String()
	}

	type variant struct {
		name    string
		query   string   // appended to the path's query
		headers []string // name, value, ...
	}
	all := variant{name: "every tenant input"}
	variants := []variant{{name: "no tenant input"}}
	for _, p := range tenantParams {
		all.query += "&" + p + "=" + orgA.String()
		variants = append(variants, variant{name: "query " + p, query: "&" + p + "=" + orgA.String()})
	}
	for _, hd := range tenantHeaders {
		all.headers = append(all.headers, hd, orgA.String())
		variants = append(variants, variant{name: "header " + hd, headers: []string{hd, orgA.String()}})
	}
	variants = append(variants, all)

	type usage struct {
		Object  string           `json:"object"`
		GroupBy string           `json:"group_by"`
		Data    []store.UsageRow `json:"data"`
	}
	getAs := func(key, path string, v variant) reply {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		if v.query != "" {
			path += sep + v.query[1:]
		}
		return h.do("GET", path, "", append(bearer(key), v.headers...)...)
	}
	decode := func(r reply, what string, into any) bool {
		t.Helper()
		if r.status != 200 {
			t.Errorf("%s: %d %s", what, r.status, r.body)
			return false
		}
		if err := json.Unmarshal(r.body, into); err != nil {
			t.Errorf("%s: %v in %s", what, err, r.body)
			return false
		}
		return true
	}
	strip := func(r reply) string {
		_, _, _, id := openAIError(t, r.body)
		return fmt.Sprint(r.status, " ", strings.ReplaceAll(string(r.body), id, ""))
	}
	sumUsage := func(u usage) (req, prompt, completion, total int64) {
		for _, g := range u.Data {
			req, prompt, completion, total = req+g.Requests, prompt+g.PromptTokens, completion+g.CompletionTokens, total+g.TotalTokens
		}
		return
	}
	groups := func(u usage) map[string]int64 {
		m := map[string]int64{}
		for _, g := range u.Data {
			m[g.Group] += g.Requests
		}
		return m
	}

	// A's own key sees A's rows through the same endpoints: the matrix
	// below is not checking emptiness.
	var pageA promptPage
	if decode(h.do("GET", "/api/v1/prompts?limit=100", "", bearer(keyA)...), "A lists", &pageA) && len(pageA.Data) != 5 {
		t.Fatalf("A lists %d rows, want its 5", len(pageA.Data))
	}
	if r := h.do("GET", "/api/v1/prompts/"+idsA[0].String(), "", bearer(keyA)...); r.status != 200 {
		t.Fatalf("A reads its own row: %d %s", r.status, r.body)
	}
	var uA usage
	if decode(h.do("GET", "/api/v1/usage?group_by=model", "", bearer(keyA)...), "A's usage", &uA) {
		if req, p, c, tot := sumUsage(uA); req != 5 || p != 50 || c != 25 || tot != 75 {
			t.Fatalf("A's usage: %d requests, %d+%d=%d tokens; want 5, 50+25=75", req, p, c, tot)
		}
	}

	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			var answers []reply

			// List: exactly B's three rows, newest first.
			r := getAs(keyB, "/api/v1/prompts?limit=100", v)
			answers = append(answers, r)
			var page promptPage
			if decode(r, "list", &page) {
				var got []uuid.UUID
				for _, p := range page.Data {
					got = append(got, p.ID)
					if p.APIKeyID == nil || *p.APIKeyID != kB.ID || !strings.HasPrefix(p.Model, "b-model-") {
						t.Errorf("list: row %s is not B's: key %v, model %s", p.ID, p.APIKeyID, p.Model)
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(idsB) || page.HasMore {
					t.Errorf("list: rows %v (has_more %v), want B's %v", got, page.HasMore, idsB)
				}
			}

			// Get by id: B's own row; A's row exactly like a missing one.
			r = getAs(keyB, "/api/v1/prompts/"+idsB[0].String(), v)
			answers = append(answers, r)
			var one store.Prompt
			if decode(r, "get B's row", &one) && (one.ID != idsB[0] || one.APIKeyID == nil || *one.APIKeyID != kB.ID) {
				t.Errorf("get B's row: %+v", one)
			}
			for _, id := range idsA[:2] {
				theirs := getAs(keyB, "/api/v1/prompts/"+id.String(), v)
				missing := getAs(keyB, "/api/v1/prompts/"+uuid.NewString(), v)
				answers = append(answers, theirs)
				if theirs.status != 404 || strip(theirs) != strip(missing) {
					t.Errorf("get A's row %s: %s; a missing row: %s", id, strip(theirs), strip(missing))
				}
			}

			// Usage, by every grouping (and the default): B's totals.
			for _, g := range []string{"", "day", "model", "key"} {
				path := "/api/v1/usage"
				if g != "" {
					path += "?group_by=" + g
				}
				r := getAs(keyB, path, v)
				answers = append(answers, r)
				var u usage
				if !decode(r, "usage "+g, &u) {
					continue
				}
				if req, p, c, tot := sumUsage(u); req != 3 || p != 21 || c != 12 || tot != 33 {
					t.Errorf("usage by %q: %d requests, %d+%d=%d tokens; want B's 3, 21+12=33", g, req, p, c, tot)
				}
				switch g {
				case "model":
					if got := groups(u); len(got) != 2 || got["b-model-1"] != 1 || got["b-model-2"] != 2 {
						t.Errorf("usage by model: %v, want b-model-1: 1, b-model-2: 2", got)
					}
				case "key":
					if got := groups(u); len(got) != 1 || got[kB.ID.String()] != 3 {
						t.Errorf("usage by key: %v, want %s: 3", got, kB.ID)
					}
				}
			}

			for _, r := range answers {
				for what, s := range traces {
					if strings.Contains(string(r.body), s) {
						t.Errorf("an answer to B contains %s: %s", what, r.body)
					}
				}
			}
		})
	}
}
