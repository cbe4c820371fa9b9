package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"
)

const apiPrefix = "/admin/v1/"

// route is one operation of the admin API. The table of them is the one
// source of the dispatch, the access check, the body decoding and the
// OpenAPI document, so the document cannot drift from the handlers.
type route struct {
	method  string
	pattern string // path segments; "{name}" matches one segment
	summary string
	access  access
	status  int     // of success: 200 or 201
	body    any     // zero value of the request body's type; nil: no body
	resp    any     // zero value of the response's type
	query   []param // query parameters (documentation; the handler validates)
	idem    bool    // honours Idempotency-Key
	handle  func(c *call) (any, error)
}

// param is a documented query parameter.
type param struct {
	name, typ, desc string
}

// call is one request to a route, as its handler sees it.
type call struct {
	ctx     context.Context
	rc      *fasthttp.RequestCtx
	p       principal
	vars    map[string]string
	body    any // a pointer to the decoded body, of route.body's type
	status  int
	replay  bool // answered from an Idempotency-Key's first result
	actions keyActions
}

// id parses path variable name as a UUID; a malformed one is notFound, as
// missing as any other.
func (c *call) id(name string, notFound error) (uuid.UUID, error) {
	id, err := uuid.Parse(c.vars[name])
	if err != nil || len(c.vars[name]) != 36 {
		return uuid.Nil, notFound
	}
	return id, nil
}

// match reports whether path matches pattern, and its variables.
func match(pattern, path string) (map[string]string, bool) {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return nil, false
	}
	var vars map[string]string
	for i, p := range ps {
		if strings.HasPrefix(p, "{") {
			if xs[i] == "" {
				return nil, false
			}
			if vars == nil {
				vars = map[string]string{}
			}
			vars[p[1:len(p)-1]] = xs[i]
		} else if p != xs[i] {
			return nil, false
		}
	}
	return vars, true
}

// api dispatches a request under /admin/v1/.
func (s *Server) api(rc *fasthttp.RequestCtx, reqID, path string) error {
	var r *route
	var vars map[string]string
	pathKnown := false
	for i := range s.routes {
		v, ok := match(s.routes[i].pattern, path)
		if !ok {
			continue
		}
		pathKnown = true
		if string(rc.Method()) == s.routes[i].method {
			r, vars = &s.routes[i], v
			break
		}
	}
	if r == nil {
		if pathKnown {
			return errMethodNotAllowed
		}
		return errNotFound
	}
	ctx, cancel := context.WithTimeout(s.base, requestTimeout)
	defer cancel()
	c := &call{ctx: ctx, rc: rc, vars: vars, status: r.status}
	if r.access != public {
		p, err := s.authenticate(ctx, rc)
		if err != nil {
			return err
		}
		if err := r.access.allows(p); err != nil {
			return err
		}
		c.p, c.actions = p, s.actions(p)
	}
	if r.body != nil {
		c.body = reflect.New(reflect.TypeOf(r.body)).Interface()
		if err := decodeBody(rc, c.body); err != nil {
			return err
		}
	}
	out, err := r.handle(c)
	if err != nil {
		return err
	}
	if c.replay {
		rc.Response.Header.Set("Idempotent-Replayed", "true")
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	rc.SetContentType("application/json")
	rc.SetStatusCode(c.status)
	rc.SetBody(b)
	return nil
}

// decodeBody reads the request's JSON object into dst (a pointer to a
// struct): one object, no unknown fields, nothing after it. Every problem
// is a 400 that names it.
func decodeBody(rc *fasthttp.RequestCtx, dst any) error {
	body := rc.PostBody()
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}") // every field optional or checked by the handler
	}
	if ct := string(rc.Request.Header.ContentType()); len(rc.PostBody()) > 0 && !isJSON(ct) {
		return errUnsupportedMedia
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badBody("", "Malformed JSON: something follows the object.")
	}
	return nil
}

func isJSON(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// bodyError names what is wrong with a body encoding/json refused.
func bodyError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return badBody("", fmt.Sprintf("Malformed JSON at byte %d: %s.", syn.Offset, syn.Error()))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badBody("", "The body must be a JSON object.")
		}
		return badBody(typ.Field, fmt.Sprintf("Field '%s' must be %s, not %s.", typ.Field, jsonKind(typ.Type), typ.Value))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badBody("", "Malformed JSON: the body ends inside the object.")
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		f = strings.Trim(f, `"`)
		return badBody(f, fmt.Sprintf("Unknown field '%s'.", f))
	}
	return badBody("", "Malformed JSON body.")
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Bool:
		return "a boolean"
	}
	return "a " + t.Kind().String()
}
