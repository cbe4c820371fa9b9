package control

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/store"
)

// openAPIDocument generates the OpenAPI 3.1 document of routes: paths,
// parameters and the JSON Schemas of the bodies, derived by reflection
// from the very types the handlers decode and answer with.
func openAPIDocument(routes []route) ([]byte, error) {
	g := &schemaGen{defs: map[string]any{}}
	errSchema := g.schema(reflect.TypeOf(errorDoc{}))
	paths := map[string]map[string]any{}
	for _, r := range routes {
		op := map[string]any{
			"operationId": operationID(r),
			"summary":     r.summary,
			"responses": map[string]any{
				strconv.Itoa(r.status): map[string]any{"description": "success",
					"content": map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(r.resp))}}},
				"default": map[string]any{"description": "an OpenAI-shaped error with the request id",
					"content": map[string]any{"application/json": map[string]any{"schema": errSchema}}},
			},
		}
		if r.access == public {
			op["security"] = []any{}
		}
		op["x-access"] = accessNames[r.access]
		var params []any
		for _, seg := range strings.Split(r.pattern, "/") {
			if strings.HasPrefix(seg, "{") {
				params = append(params, map[string]any{"name": seg[1 : len(seg)-1], "in": "path", "required": true,
					"schema": map[string]any{"type": "string", "format": "uuid"}})
			}
		}
		for _, q := range r.query {
			params = append(params, map[string]any{"name": q.name, "in": "query", "description": q.desc,
				"schema": map[string]any{"type": q.typ}})
		}
		if r.idem {
			params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header",
				"description": "a retry with the same key and request returns the first answer (header Idempotent-Replayed: true)",
				"schema":      map[string]any{"type": "string", "minLength": 1, "maxLength": 255}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if r.body != nil {
			op["requestBody"] = map[string]any{"required": true,
				"content": map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(r.body))}}}
		}
		if paths[r.pattern] == nil {
			paths[r.pattern] = map[string]any{}
		}
		paths[r.pattern][strings.ToLower(r.method)] = op
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "Bulkhead control plane", "version": "v1",
			"description": "Operators (tokens from `bulkhead admin-token create`, scope read or write) and tenant administrators " +
				"(a JWT with organization_id and role admin, confined to their own organization by row-level security)."},
		"paths":    paths,
		"security": []any{map[string]any{"bearer": []any{}}},
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"schemas":         g.defs,
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

var accessNames = map[access]string{
	public: "public", anyone: "any credential", operatorRead: "operator", operatorWrite: "operator (write scope)",
	tenantRead: "operator or tenant administrator", tenantWrite: "operator (write scope) or tenant administrator",
}

// operationID names an operation after its method and path, e.g.
// post_organizations_id_keys.
func operationID(r route) string {
	p := strings.NewReplacer("/admin/v1/", "", "/", "_", "{", "", "}", "").Replace(r.pattern)
	return strings.ToLower(r.method) + "_" + p
}

// errorDoc is the shape of every error body (gateway.MarshalError).
type errorDoc struct {
	Error struct {
		Message   string  `json:"message"`
		Type      string  `json:"type"`
		Param     *string `json:"param"`
		Code      *string `json:"code"`
		RequestID string  `json:"request_id"`
	} `json:"error"`
}

// schemaGen turns Go types into JSON Schemas (2020-12, as OpenAPI 3.1
// has them), named structs into components.
type schemaGen struct{ defs map[string]any }

var (
	timeType = reflect.TypeOf(time.Time{})
	uuidType = reflect.TypeOf(uuid.UUID{})
	// Amounts of dollars marshal as exact decimal strings (MicroUSD.MarshalJSON).
	usdType = reflect.TypeOf(store.MicroUSD(0))
	// A budget's window marshals as its text: day, month or rolling:DURATION.
	windowType = reflect.TypeOf(store.BudgetWindow{})
)

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	switch t {
	case timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case uuidType:
		return map[string]any{"type": "string", "format": "uuid"}
	case usdType:
		return map[string]any{"type": "string", "pattern": `^[0-9]+(\.[0-9]{1,6})?$`}
	case windowType:
		return map[string]any{"type": "string", "pattern": `^(day|month|rolling:.+)$`}
	}
	switch t.Kind() {
	case reflect.Pointer:
		s := g.schema(t.Elem())
		if ref, ok := s["$ref"]; ok {
			return map[string]any{"oneOf": []any{map[string]any{"$ref": ref}, map[string]any{"type": "null"}}}
		}
		s["type"] = []any{s["type"], "null"}
		return s
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Struct:
		name := componentName(t)
		if name != "" {
			if _, ok := g.defs[name]; !ok {
				g.defs[name] = map[string]any{} // placeholder against recursion
				g.defs[name] = g.object(t)
			}
			return map[string]any{"$ref": "#/components/schemas/" + name}
		}
		return g.object(t)
	}
	return map[string]any{}
}

// object is a struct's schema: its JSON fields, the ones without omitempty
// required, no others allowed.
func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	required := []string{}
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.schema(f.Type)
		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	return map[string]any{"type": "object", "properties": props, "required": required, "additionalProperties": false}
}

// componentName names a named struct's component: its Go name, capitalized.
func componentName(t reflect.Type) string {
	n := t.Name()
	if n == "" {
		return ""
	}
	r := []rune(n)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}
