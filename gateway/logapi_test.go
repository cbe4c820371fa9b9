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
	owner := storetest.OwnerPool(t)
	err := pgx.BeginFunc(context.Background(), owner, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `SELECT set_config('app.current_tenant_id', $1, true)`, org.String()); err != nil {
			return err
		}
		_, err := tx.Exec(context.Background(), `INSERT INTO prompts (organization_id, id, request_id, api_key_id, model, prompt_text, response,
			prompt_tokens, completion_tokens, usage_tokens, usage_source, status, created_at)
			SELECT $1, prompts_row_id(t, gen_random_uuid()), 'seed-' || g, $2, 'm' || (g % 2 + 1), 'prompt ' || g, 'answer ' || g,
			       10, 5, 15, 'upstream', 200, t
			FROM generate_series(1, $3::int) g, LATERAL (SELECT now() - make_interval(secs => g) AS t) c`, org, key, n)
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
