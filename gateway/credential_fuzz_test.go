package gateway

import (
	"bytes"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzCredential: whatever credential headers a request carries, one
// credential comes out only when every non-empty one names the same
// (Authorization as "Bearer X"), never one that was not sent, never with
// surrounding space; two different ones are refused, none is missing, a
// non-Bearer Authorization is invalid. Never a panic.
func FuzzCredential(f *testing.F) {
	const k = "sk_0b5f5e3c-1a2b-4c3d-8e9f-0123456789ab_secret"
	f.Add("Bearer "+k, "", "", "")
	f.Add("Bearer "+k, "bearer "+k, k, k)
	f.Add("Bearer "+k, "Bearer other", "", "")
	f.Add("", "", k, "other")
	f.Add("Basic dXNlcjpwdw==", "", "", "")
	f.Add("Bearer ", "", " ", "\t")
	f.Add("BEARER  "+k+" ", "", k, "")
	f.Fuzz(func(t *testing.T, auth1, auth2, apiKey, xAPIKey string) {
		var h fasthttp.RequestHeader
		for _, v := range []struct{ name, value string }{
			{"Authorization", auth1}, {"Authorization", auth2}, {"Api-Key", apiKey}, {"X-Api-Key", xAPIKey},
		} {
			if v.value != "" {
				h.Add(v.name, v.value)
			}
		}
		// The oracle, from what the header holds as fasthttp stored it.
		sent := map[string]bool{}
		invalid := false
		for _, a := range h.PeekAll("Authorization") {
			if len(a) == 0 {
				continue
			}
			if len(a) < 7 || !strings.EqualFold(string(a[:7]), "bearer ") {
				invalid = true
				continue
			}
			if v := bytes.TrimSpace(a[7:]); len(v) > 0 {
				sent[string(v)] = true
			}
		}
		for _, name := range []string{"Api-Key", "X-Api-Key"} {
			for _, a := range h.PeekAll(name) {
				if v := bytes.TrimSpace(a); len(v) > 0 {
					sent[string(v)] = true
				}
			}
		}
		cred, err := credential(&h)
		switch {
		case invalid:
			if err != errInvalidKey && err != errConflictingKeys {
				t.Fatalf("an Authorization without Bearer gave %q, %v", cred, err)
			}
		case len(sent) == 0:
			if err != errMissingKey {
				t.Fatalf("no credential sent, got %q, %v", cred, err)
			}
		case len(sent) > 1:
			if err != errConflictingKeys {
				t.Fatalf("%d different credentials sent, got %q, %v", len(sent), cred, err)
			}
		default:
			if err != nil || !sent[string(cred)] {
				t.Fatalf("one credential sent (%v), got %q, %v", sent, cred, err)
			}
		}
	})
}
