package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/seal"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// The read API over sealed tenants: each reads its own text; ciphertexts
// swapped between A's and B's rows give those rows an error object
// (200, the OpenAI-shaped error inside the row, null text), never the
// other tenant's text, and never fail the page; B's key reaches nothing of
// A's by list or id.
func TestReadAPISealed(t *testing.T) {
	kek, err := seal.NewLocalKEK()
	if err != nil {
		t.Fatal(err)
	}
	js, err := kek.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *config.Config) { c.SealKeyset = config.Secret(js) })
	h.admin.UseKEK(kek)
	ctx := context.Background()
	var orgs [2]uuid.UUID
	var keys [2]string
	for i := range orgs {
		o, err := h.admin.CreateOrgSealed(ctx, "gw sealed", store.CaptureFull, true)
		if err != nil {
			t.Fatal(err)
		}
		orgs[i] = o.ID
		keys[i], _ = h.key(o.ID, 1000)
	}
	w, err := store.NewWriter(h.st, store.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.Run(wctx) //nolint:errcheck // Close reports
	ids := map[uuid.UUID][]uuid.UUID{}
	for i := range 6 {
		org := orgs[i%2]
		now := time.Now()
		r := store.LogRecord{ID: store.NewRowID(now), CreatedAt: now, OrgID: org, RequestID: "sealed-" + org.String(), Endpoint: "/v1/chat/completions",
			Model: "m", Prompt: "prompt of " + org.String(), Response: "answer of " + org.String(), Status: 200}
		ids[org] = append(ids[org], r.ID)
		w.Record(r)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	owner := storetest.OwnerPool(t)
	swap := `UPDATE prompts p SET prompt_sealed = q.prompt_sealed, response_sealed = q.response_sealed
		FROM prompts q WHERE p.organization_id = $1 AND p.id = $2 AND q.organization_id = $3 AND q.id = $4`
	a0, b0 := ids[orgs[0]][0], ids[orgs[1]][0]
	var saved []byte
	if err := owner.QueryRow(ctx, `SELECT prompt_sealed FROM prompts WHERE organization_id = $1 AND id = $2`, orgs[0], a0).Scan(&saved); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, swap, orgs[0], a0, orgs[1], b0); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, `UPDATE prompts SET prompt_sealed = $3 WHERE organization_id = $1 AND id = $2`, orgs[1], b0, saved); err != nil {
		t.Fatal(err)
	}

	for i, org := range orgs {
		other := orgs[1-i].String()
		r := h.do("GET", "/api/v1/prompts?limit=100", "", bearer(keys[i])...)
		if r.status != 200 {
			t.Fatalf("list: %d %s", r.status, r.body)
		}
		if strings.Contains(string(r.body), other) {
			t.Errorf("tenant %d's list shows the other tenant's text: %s", i, r.body)
		}
		var page promptPage
		if err := json.Unmarshal(r.body, &page); err != nil || len(page.Data) != 3 {
			t.Fatalf("list: %v, %s", err, r.body)
		}
		for _, p := range page.Data {
			broken := p.ID == a0 || p.ID == b0
			if broken != (p.Error != nil) || (p.Error != nil && (p.Error.Code != "sealed_text_unreadable" || p.Prompt != nil || p.Response != nil)) {
				t.Errorf("row %s (tampered %v): error %+v, prompt %v", p.ID, broken, p.Error, p.Prompt)
			}
			if !broken && (p.Prompt == nil || *p.Prompt != "prompt of "+org.String()) {
				t.Errorf("row %s: prompt %v", p.ID, p.Prompt)
			}
		}
		mine := ids[org][0]
		g := h.do("GET", "/api/v1/prompts/"+mine.String(), "", bearer(keys[i])...)
		if g.status != 200 || !strings.Contains(string(g.body), `"sealed_text_unreadable"`) || strings.Contains(string(g.body), other) {
			t.Errorf("get of tampered row: %d %s", g.status, g.body)
		}
		// The other's rows by id: exactly a missing id.
		for _, id := range ids[orgs[1-i]] {
			if g := h.do("GET", "/api/v1/prompts/"+id.String(), "", bearer(keys[i])...); g.status != 404 || strings.Contains(string(g.body), other) {
				t.Errorf("tenant %d reading the other's row: %d %s", i, g.status, g.body)
			}
		}
	}
}
