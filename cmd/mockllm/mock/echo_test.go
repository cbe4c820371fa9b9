package mock

import "testing"

func TestEchoHeaders(t *testing.T) {
	ts := newTestServer(t, Options{})
	tests := []struct {
		name    string
		method  string
		path    string
		headers []string
		want    map[string]string
	}{
		{
			name:    "GET with query",
			method:  "GET",
			path:    "/v1/_echo/headers?a=1&b=two",
			headers: []string{"Authorization", "Bearer sk-test", "X-Custom", "Value With Spaces", "x-request-id", "rid"},
			want: map[string]string{
				"_method": "GET", "_path": "/v1/_echo/headers", "_query": "a=1&b=two",
				"authorization": "Bearer sk-test", "x-custom": "Value With Spaces", "x-request-id": "rid", "host": "mockllm",
			},
		},
		{
			name:    "POST with repeated and hop-by-hop headers",
			method:  "POST",
			path:    "/v1/_echo/headers",
			headers: []string{"X-Dup", "1", "X-Dup", "2", "Connection", "keep-alive, X-Hop", "Keep-Alive", "timeout=5"},
			want: map[string]string{
				"_method": "POST", "_path": "/v1/_echo/headers", "_query": "",
				"x-dup": "1, 2", "connection": "keep-alive, X-Hop", "keep-alive": "timeout=5", "content-type": "application/json",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			if tt.method == "POST" {
				body = `{}`
			}
			r := ts.do(tt.method, tt.path, body, tt.headers...)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			got := decode[map[string]string](t, r.body)
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if got["x-request-id"] != "" && r.header["x-mock-request-id"] != got["x-request-id"] {
				t.Errorf("x-mock-request-id %q, want %q", r.header["x-mock-request-id"], got["x-request-id"])
			}
		})
	}
}
