package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
)

// withRoute adds an upstream "side" (the mock again) serving the exactly
// named model "routed-1".
func withRoute(cfg *config.Config) {
	cfg.Upstreams = []config.Upstream{{Name: "side", Kind: "openai", URL: cfg.UpstreamURL, Models: []string{"routed-1"}}}
}

// checkModel asserts OpenAI's model object: id, object, created, owned_by.
func checkModel(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	created, ok := m["created"].(float64)
	if id, _ := m["id"].(string); id == "" || m["object"] != "model" || !ok || created <= 0 || created != float64(int64(created)) || m["owned_by"] == "" || len(m) != 4 {
		t.Errorf("not an OpenAI model object: %s", raw)
	}
	return m
}

func TestModelsEndpoints(t *testing.T) {
	h := newFakeHarness(t, nil, withRoute)
	_, key, _ := h.tenant(1000)

	r := h.do("GET", "/v1/models", "", bearer(key)...)
	var list struct {
		Object string
		Data   []json.RawMessage
	}
	if r.status != 200 || json.Unmarshal(r.body, &list) != nil || list.Object != "list" {
		t.Fatalf("/v1/models: %d %s", r.status, r.body)
	}
	ids := map[string]bool{}
	for _, raw := range list.Data {
		ids[checkModel(t, raw)["id"].(string)] = true
	}
	if !ids["routed-1"] || !ids["gpt-4o"] {
		t.Errorf("listed %v, want routed-1 and the mock's gpt-4o", ids)
	}

	for id, owner := range map[string]string{"gpt-4o": "mockllm", "routed-1": "side"} {
		r := h.do("GET", "/v1/models/"+id, "", bearer(key)...)
		if r.status != 200 {
			t.Errorf("/v1/models/%s: %d %s", id, r.status, r.body)
			continue
		}
		if m := checkModel(t, r.body); m["id"] != id || m["owned_by"] != owner {
			t.Errorf("/v1/models/%s: %s", id, r.body)
		}
	}
	for path, echo := range map[string]string{
		"/v1/models/no-such-model": "'no-such-model'",
		"/v1/models/a%ffb":         "",
		"/v1/models/a%00b":         "",
		"/v1/models/a%0Ab":         "",
		"/v1/models/":              "",
		"/v1/models/" + strings.Repeat("m", maxModelID+1): "",
	} {
		r := h.do("GET", path, "", bearer(key)...)
		msg, _, code, _ := openAIError(t, r.body)
		if r.status != 404 || code != "model_not_found" || (echo != "" && !strings.Contains(msg, echo)) {
			t.Errorf("%s: %d %s", path, r.status, r.body)
		}
		if echo == "" && strings.Contains(msg, "'") {
			t.Errorf("%s: an invalid id is quoted back: %s", path, msg)
		}
	}
	if r := h.do("GET", "/v1/models/gpt-4o", ""); r.status != 401 {
		t.Errorf("/v1/models/{id} without a key: %d", r.status)
	}
	if r := h.do("POST", "/v1/models/gpt-4o", "{}", bearer(key)...); r.status != 405 {
		t.Errorf("POST /v1/models/{id}: %d", r.status)
	}

	// The SDK's models.retrieve, as an application calls it.
	client := oai.NewClient(option.WithBaseURL(h.url+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0), option.WithHTTPClient(h.httpClient()))
	m, err := client.Models.Get(context.Background(), "gpt-4o")
	if err != nil || m.ID != "gpt-4o" || m.Created != 1704067200 || m.OwnedBy != "mockllm" {
		t.Errorf("Models.Get: %+v, %v", m, err)
	}
	_, err = client.Models.Get(context.Background(), "no-such-model")
	var apiErr *oai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Errorf("Models.Get of an unknown model: %v", err)
	}
}

// Model names a caller invents share the label "other": a hundred of them
// leave the configured route's model and the upstream's listed model with
// their own series.
func TestModelLabelsIgnoreInventedNames(t *testing.T) {
	h := newFakeHarness(t, nil, withRoute)
	_, key, _ := h.tenant(100000)
	reg := prometheus.NewRegistry()
	srv, err := New(h.cfg, zap.NewNop(), h.deps(Deps{Recorder: newMemRecorder(), Metrics: reg}))
	if err != nil {
		t.Fatal(err)
	}
	h2 := h.serve(srv)
	chat := func(model string) {
		t.Helper()
		if r := h2.do("POST", "/v1/chat/completions", `{"model":"`+model+`","messages":[{"role":"user","content":"x"}]}`, bearer(key)...); r.status != 200 {
			t.Fatalf("%s: %d %s", model, r.status, r.body)
		}
	}
	for i := range 100 {
		chat(fmt.Sprintf("junk-%03d", i))
	}
	if r := h2.do("GET", "/v1/models", "", bearer(key)...); r.status != 200 { // the default upstream's list is known
		t.Fatalf("/v1/models: %d", r.status)
	}
	chat("routed-1")
	chat("gpt-4o")

	counts := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "bulkhead_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" {
					counts[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	if counts["routed-1"] != 1 || counts["gpt-4o"] != 1 || counts["other"] != 100 || len(counts) != 3 {
		t.Errorf("requests by model label: %v; want routed-1 and gpt-4o 1 each, other 100, nothing else", counts)
	}
}
