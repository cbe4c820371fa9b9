package gateway

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// doRepeated sends a chat request whose headers may repeat a name (the
// harness's do sets each name once). headers alternate name and value.
func (h *harness) doRepeated(headers ...string) reply {
	h.t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(h.url + "/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetBodyString(chatBody)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	if err := h.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		h.t.Fatal(err)
	}
	return reply{status: resp.StatusCode(), body: append([]byte(nil), resp.Body()...)}
}

// One credential header sent twice with two different valid keys (of two
// tenants) is refused, whichever comes first, as two different credentials
// in two header names are; the same key twice is one credential.
func TestRepeatedCredentialHeader(t *testing.T) {
	h := newFakeHarness(t, nil, nil)
	_, keyA, _ := h.tenant(1000)
	_, keyB, _ := h.tenant(1000)
	for _, hdr := range []string{"Authorization", "Api-Key", "X-Api-Key"} {
		val := func(k string) string {
			if hdr == "Authorization" {
				return "Bearer " + k
			}
			return k
		}
		t.Run(hdr, func(t *testing.T) {
			for _, order := range [][2]string{{keyA, keyB}, {keyB, keyA}} {
				r := h.doRepeated(hdr, val(order[0]), hdr, val(order[1]))
				if _, _, code, _ := openAIError(t, r.body); r.status != 401 || code != "invalid_api_key" {
					t.Errorf("two different keys in %s: %d %s", hdr, r.status, r.body)
				}
			}
			if r := h.doRepeated(hdr, val(keyA), hdr, val(keyA)); r.status != 200 {
				t.Errorf("the same key twice in %s: %d %s", hdr, r.status, r.body)
			}
		})
	}
	// A second Authorization that is not a bearer credential spoils the first.
	if r := h.doRepeated("Authorization", "Bearer "+keyA, "Authorization", "Basic dXNlcjpwYXNz"); r.status != 401 {
		t.Errorf("bearer then basic: %d %s", r.status, r.body)
	}
}

// BenchmarkCredential: extracting the credential from an SDK-like header
// block, on every request's path.
func BenchmarkCredential(b *testing.B) {
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer sk_3f8a1c2e-0b4d-4e7a-9c1f-2d3e4f5a6b7c_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	for _, h := range []string{"X-Stainless-Lang", "X-Stainless-Os", "X-Stainless-Arch", "X-Stainless-Runtime", "X-Stainless-Retry-Count", "User-Agent", "Accept"} {
		req.Header.Set(h, "value")
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := credential(&req.Header); err != nil {
			b.Fatal(err)
		}
	}
}
