package mock

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/valyala/fasthttp"
)

// echoHeaders serves GET and POST /v1/_echo/headers, for tests of a proxy
// in front of mockllm. It answers a JSON object mapping each received
// request header, name lower-cased, to its value, with repeated headers
// joined by ", " in arrival order. Headers are read from the raw request as
// received, so hop-by-hop headers such as Connection and Transfer-Encoding
// appear too. The object also holds "_method", "_path" and "_query" (the raw
// query string without "?"); these keys win over any header of that name.
func (s *Server) echoHeaders(rc *fasthttp.RequestCtx, _ knobs) error {
	h := &rc.Request.Header
	all := h.AllInOrder()
	if len(h.RawHeaders()) == 0 { // not parsed from the wire
		all = h.All()
	}
	out := make(map[string]string)
	for k, v := range all {
		name := strings.ToLower(string(k))
		if prev, ok := out[name]; ok {
			out[name] = prev + ", " + string(v)
			continue
		}
		out[name] = string(v)
	}
	out["_method"] = string(rc.Method())
	out["_path"] = string(rc.Path())
	out["_query"] = string(rc.QueryArgs().QueryString())
	b, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encoding echoed headers: %w", err)
	}
	rc.SetContentType("application/json")
	rc.SetBody(b)
	return nil
}
