package control

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
)

// The OpenAPI document against the handlers: every operation it lists is
// served (and nothing else under /admin/v1/), every success body the
// handlers send validates against its schema, and every request body
// schema is exactly what the decoder takes (each property accepted, any
// other refused).
func TestOpenAPIMatchesHandlers(t *testing.T) {
	h := newHarness(t)
	tok, _ := h.operator(store.ScopeWrite, nil)
	r := h.must(200, "GET", "/openapi.json", "", nil)
	var doc map[string]any
	r.json(t, &doc)
	if doc["openapi"] != "3.1.0" {
		t.Fatalf("openapi %v, want 3.1.0", doc["openapi"])
	}
	v := validator{doc: doc}
	paths := doc["paths"].(map[string]any)

	// Every operation is exercised below, in an order that makes it
	// succeed.
	org, _ := h.admin.CreateOrg(context.Background(), "openapi")
	ids := map[string]string{"org": org.ID.String()}
	model := "openapi-" + uuid.NewString()[:8] // shared models are the installation's
	var s struct{ Token string }
	steps := []struct {
		method, pattern, path string
		body                  any
		after                 func(body []byte)
	}{
		{"POST", "/admin/v1/session", "/admin/v1/session", map[string]any{"credential": tok}, func(b []byte) { json.Unmarshal(b, &s) }},
		{"GET", "/admin/v1/me", "/admin/v1/me", nil, nil},
		{"GET", "/admin/v1/organizations", "/admin/v1/organizations?limit=1", nil, nil},
		{"POST", "/admin/v1/organizations", "/admin/v1/organizations", map[string]any{"name": "doc", "capture_mode": "full"}, nil},
		{"GET", "/admin/v1/organizations/{id}", "/admin/v1/organizations/{org}", nil, nil},
		{"PATCH", "/admin/v1/organizations/{id}", "/admin/v1/organizations/{org}", map[string]any{"name": "doc2", "capture_mode": "full", "retention": "default"}, nil},
		{"POST", "/admin/v1/organizations/{id}/keys", "/admin/v1/organizations/{org}/keys",
			map[string]any{"name": "k", "rate_limit_per_minute": 1, "tokens_per_minute": 10, "expires_in_seconds": 3600},
			func(b []byte) { var k struct{ ID string }; json.Unmarshal(b, &k); ids["key"] = k.ID }},
		{"GET", "/admin/v1/organizations/{id}/keys", "/admin/v1/organizations/{org}/keys", nil, nil},
		{"PATCH", "/admin/v1/keys/{id}", "/admin/v1/keys/{key}", map[string]any{"rate_limit_per_minute": 2, "tokens_per_minute": 0}, nil},
		{"POST", "/admin/v1/keys/{id}/rotate", "/admin/v1/keys/{key}/rotate", map[string]any{"overlap_seconds": 5},
			func(b []byte) {
				var k struct{ ID string }
				json.Unmarshal(b, &k)
				ids["key"] = k.ID
				ids["prompt"] = seedPrompt(t, org.ID, uuid.MustParse(k.ID), "hello").String()
			}},
		{"POST", "/admin/v1/keys/{id}/revoke", "/admin/v1/keys/{key}/revoke", nil, nil},
		{"GET", "/admin/v1/usage", "/admin/v1/usage", nil, nil},
		{"GET", "/admin/v1/organizations/{id}/usage", "/admin/v1/organizations/{org}/usage?group_by=model", nil, nil},
		{"GET", "/admin/v1/organizations/{id}/usage/series", "/admin/v1/organizations/{org}/usage/series?by=key", nil, nil},
		{"GET", "/admin/v1/organizations/{id}/prompts", "/admin/v1/organizations/{org}/prompts?status=200", nil, nil},
		{"GET", "/admin/v1/organizations/{id}/prompts/{prompt}", "/admin/v1/organizations/{org}/prompts/{prompt}", nil, nil},
		{"POST", "/admin/v1/organizations/{id}/admin-keys", "/admin/v1/organizations/{org}/admin-keys", map[string]any{"name": "backend", "expires_in_seconds": 60},
			func(b []byte) { var k struct{ ID string }; json.Unmarshal(b, &k); ids["adminkey"] = k.ID }},
		{"GET", "/admin/v1/organizations/{id}/admin-keys", "/admin/v1/organizations/{org}/admin-keys", nil, nil},
		{"POST", "/admin/v1/admin-keys/{id}/revoke", "/admin/v1/admin-keys/{adminkey}/revoke", nil, nil},
		{"POST", "/admin/v1/models", "/admin/v1/models", map[string]any{"name": model, "upstream": "default", "organization_id": nil,
			"input_price_usd": "0.1", "cached_input_price_usd": "0.05", "output_price_usd": "0.2", "enabled": true},
			func(b []byte) { var m struct{ ID string }; json.Unmarshal(b, &m); ids["model"] = m.ID }},
		{"GET", "/admin/v1/models", "/admin/v1/models", nil, nil},
		{"PATCH", "/admin/v1/models/{id}", "/admin/v1/models/{model}", map[string]any{"upstream": "second", "input_price_usd": "0.2",
			"cached_input_price_usd": "0.1", "output_price_usd": "0.3", "enabled": false}, nil},
		{"GET", "/admin/v1/organizations/{id}/models", "/admin/v1/organizations/{org}/models", nil, nil},
		{"POST", "/admin/v1/organizations/{id}/models/grant", "/admin/v1/organizations/{org}/models/grant", map[string]any{"model": model}, nil},
		{"POST", "/admin/v1/organizations/{id}/models/revoke", "/admin/v1/organizations/{org}/models/revoke", map[string]any{"model": model}, nil},
		{"DELETE", "/admin/v1/models/{id}", "/admin/v1/models/{model}", nil, nil},
		{"PUT", "/admin/v1/organizations/{id}/budgets", "/admin/v1/organizations/{org}/budgets", map[string]any{"usd": "25", "window": "month",
			"alert_at_permille": []int{800, 1000}, "end_user": "alice"}, nil},
		{"GET", "/admin/v1/organizations/{id}/budgets", "/admin/v1/organizations/{org}/budgets", nil, nil},
		{"POST", "/admin/v1/organizations/{id}/budgets/remove", "/admin/v1/organizations/{org}/budgets/remove", map[string]any{"end_user": "alice"}, nil},
		{"DELETE", "/admin/v1/session", "/admin/v1/session", nil, nil},
		{"DELETE", "/admin/v1/organizations/{id}", "/admin/v1/organizations/{org}", nil, nil},
	}
	covered := map[string]bool{}
	for _, st := range steps {
		op, ok := paths[st.pattern].(map[string]any)[strings.ToLower(st.method)].(map[string]any)
		if !ok {
			t.Errorf("%s %s: not in the document", st.method, st.pattern)
			continue
		}
		covered[st.method+" "+st.pattern] = true
		path := st.path
		for k, id := range ids {
			path = strings.ReplaceAll(path, "{"+k+"}", id)
		}
		cred := tok
		if st.pattern == "/admin/v1/session" && st.method == "DELETE" {
			cred = s.Token
		}
		r := h.do(st.method, path, cred, st.body)
		responses := op["responses"].(map[string]any)
		resp, ok := responses[strconv.Itoa(r.status)].(map[string]any)
		if !ok || r.status >= 300 {
			t.Errorf("%s %s: %d %s, which the document does not list as success", st.method, path, r.status, r.body)
			continue
		}
		schema := resp["content"].(map[string]any)["application/json"].(map[string]any)["schema"]
		var body any
		r.json(t, &body)
		if err := v.check(schema, body, "$"); err != nil {
			t.Errorf("%s %s: the answer does not match the document: %v\n%s", st.method, path, err, r.body)
		}
		if st.after != nil {
			st.after(r.body)
		}
		// Request bodies: any property the schema does not list is
		// refused, naming it.
		if rb, ok := op["requestBody"].(map[string]any); ok {
			bs := v.resolve(rb["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any))
			if bs["additionalProperties"] != false {
				t.Errorf("%s %s: request schema allows other properties", st.method, st.pattern)
			}
			extra := h.do(st.method, path, tok, map[string]any{"not_in_the_schema": 1})
			if _, param, _ := extra.errorParts(t); extra.status != 400 || param != "not_in_the_schema" {
				t.Errorf("%s %s with an unknown property: %d %s", st.method, path, extra.status, extra.body)
			}
		}
	}
	var ops []string
	for p, methods := range paths {
		for m := range methods.(map[string]any) {
			if !covered[strings.ToUpper(m)+" "+p] {
				ops = append(ops, strings.ToUpper(m)+" "+p)
			}
		}
	}
	sort.Strings(ops)
	if len(ops) > 0 {
		t.Errorf("operations of the document this test does not exercise: %v", ops)
	}
	if len(paths) == 0 || len(covered) != len(h.routesOf(t)) {
		t.Errorf("document lists %d operations, the route table %d", len(covered), len(h.routesOf(t)))
	}

	// Paths the document does not list are unknown to the handlers.
	for _, p := range []string{"/admin/v1/organizations/" + uuid.NewString() + "/secrets", "/admin/v1/keys", "/admin/v1/keys/" + uuid.NewString(), "/admin/v2/organizations"} {
		r := h.do("GET", p, tok, nil)
		if r.status != 404 && r.status != 405 {
			t.Errorf("GET %s: %d, want 404 or 405", p, r.status)
		}
	}
}

// routesOf is the route table a fresh Server has.
func (h *harness) routesOf(t *testing.T) []route {
	srv, err := New(Options{Admin: h.admin, Store: h.st})
	if err != nil {
		t.Fatal(err)
	}
	return srv.routes
}

// validator checks a JSON value against the subset of JSON Schema 2020-12
// that openAPIDocument writes: $ref, type (one or a list), properties,
// required, additionalProperties false, items, oneOf, format date-time
// and uuid.
type validator struct{ doc map[string]any }

func (v validator) resolve(s map[string]any) map[string]any {
	if ref, ok := s["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/components/schemas/")
		return v.doc["components"].(map[string]any)["schemas"].(map[string]any)[name].(map[string]any)
	}
	return s
}

func (v validator) check(schema any, val any, at string) error {
	s := v.resolve(schema.(map[string]any))
	if one, ok := s["oneOf"].([]any); ok {
		var errs []string
		for _, o := range one {
			err := v.check(o, val, at)
			if err == nil {
				return nil
			}
			errs = append(errs, err.Error())
		}
		return fmt.Errorf("%s: matches none of oneOf: %s", at, strings.Join(errs, "; "))
	}
	var types []string
	switch ty := s["type"].(type) {
	case string:
		types = []string{ty}
	case []any:
		for _, x := range ty {
			types = append(types, x.(string))
		}
	}
	if len(types) == 0 {
		return nil
	}
	kind := jsonType(val)
	okType := false
	for _, ty := range types {
		if ty == kind || ty == "number" && kind == "integer" {
			okType = true
		}
	}
	if !okType {
		return fmt.Errorf("%s: %s, want %v", at, kind, types)
	}
	switch kind {
	case "string":
		switch s["format"] {
		case "date-time":
			if _, err := time.Parse(time.RFC3339Nano, val.(string)); err != nil {
				return fmt.Errorf("%s: %q is not a date-time", at, val)
			}
		case "uuid":
			if _, err := uuid.Parse(val.(string)); err != nil {
				return fmt.Errorf("%s: %q is not a uuid", at, val)
			}
		}
	case "array":
		for i, x := range val.([]any) {
			if err := v.check(s["items"], x, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case "object":
		obj := val.(map[string]any)
		props, _ := s["properties"].(map[string]any)
		for _, r := range s["required"].([]any) {
			if _, ok := obj[r.(string)]; !ok {
				return fmt.Errorf("%s: required %q missing", at, r)
			}
		}
		for k, x := range obj {
			p, ok := props[k]
			if !ok {
				if s["additionalProperties"] == false {
					return fmt.Errorf("%s: %q is not in the schema", at, k)
				}
				continue
			}
			if err := v.check(p, x, at+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		if x == float64(int64(x)) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}
