package openai

import (
	"errors"
	"testing"
)

func TestWithModel(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"model":"x","messages":[]}`, `{"model":"gpt-4o","messages":[]}`},
		{`{"messages":[], "model" : "x" }`, `{"messages":[], "model" : "gpt-4o" }`},
		{`{"messages":[]}`, `{"model":"gpt-4o","messages":[]}`},
		{` { } `, ` {"model":"gpt-4o" } `},
		{`{"model":null}`, `{"model":"gpt-4o"}`},
		{`{"nested":{"model":"y"}}`, `{"model":"gpt-4o","nested":{"model":"y"}}`},
	} {
		got, err := WithModel([]byte(tc.in), "gpt-4o")
		if err != nil || string(got) != tc.want {
			t.Errorf("WithModel(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{``, `[]`, `{"model":"a","model":"b"}`, `{"model":`} {
		var re *RequestError
		if _, err := WithModel([]byte(in), "m"); !errors.As(err, &re) {
			t.Errorf("WithModel(%s): err = %v, want a RequestError", in, err)
		}
	}
	// A name needing escapes is written as JSON.
	if got, _ := WithModel([]byte(`{}`), `a"b`); string(got) != `{"model":"a\"b"}` {
		t.Errorf("escaped: %s", got)
	}
}
