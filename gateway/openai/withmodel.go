package openai

import (
	"encoding/json"
	"errors"
)

// WithModel returns body with its top-level "model" member set to model:
// the value replaced where the member is present, the member inserted first
// where it is absent; every other byte as sent. Azure's deployment paths
// name the model in the URL, and their SDKs may send another name, or none,
// in the body: the gateway routes, limits and records by the deployment's
// model, so the body it parses and forwards must say the same.
//
// A body that is not a JSON object, or repeats "model", is returned as is
// with a *RequestError; the rest of it is not validated (ParseRequest does
// that on the result). It allocates the copy. It is safe for concurrent use.
func WithModel(body []byte, model string) ([]byte, error) {
	open := skipWS(body, 0)
	if open == len(body) || body[open] != '{' {
		return body, errNotObject
	}
	quoted, err := json.Marshal(model)
	if err != nil {
		return body, err
	}
	var (
		m  field
		at int
	)
	it := newObjIter(body, open, 1)
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		if string(it.name(k)) != "model" {
			continue
		}
		if m.seen {
			return body, &RequestError{Param: "model", Msg: "'model' is given more than once"}
		}
		m.seen, m.val, at = true, v, it.valAt
	}
	if it.err != nil {
		if errors.Is(it.err, errTooDeep) {
			return body, errDeep
		}
		return body, errNotJSON
	}
	if !m.seen {
		return insertMember(body, open, `"model":`+string(quoted)), nil
	}
	return splice(body, at, at+len(m.val), string(quoted)), nil
}
