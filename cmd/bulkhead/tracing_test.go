package main

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// `bulkhead serve` with BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT exports each
// request's spans over OTLP/HTTP, in the trace of the caller's
// traceparent (the batcher's delay shortened by the standard
// OTEL_BSP_SCHEDULE_DELAY).
func TestServeExportsTraces(t *testing.T) {
	storetest.Admin(t) // migrated, or skip/fail loudly
	var mu sync.Mutex
	spans := map[string]string{} // name → trace id
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					spans[sp.Name] = hex.EncodeToString(sp.TraceId)
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()

	_, key := cliTenant(t, "traces")
	listen := freeAddr(t)
	startGateway(t, map[string]string{
		"BULKHEAD_LISTEN":                      listen,
		"BULKHEAD_ADMIN_LISTEN":                freeAddr(t),
		"BULKHEAD_DATABASE_URL":                storetest.AppDSN(),
		"BULKHEAD_ADMIN_DATABASE_URL":          storetest.OwnerDSN(),
		"BULKHEAD_REDIS_URL":                   "",
		"BULKHEAD_UPSTREAM_URL":                mockUpstream(t, mock.Options{}),
		"BULKHEAD_SPOOL_DIR":                   t.TempDir(),
		"BULKHEAD_LOG_LEVEL":                   "warn",
		"BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL,
		"OTEL_BSP_SCHEDULE_DELAY":              "50",
	})
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("POST", "http://"+listen+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the trace matters
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the request got %d", resp.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got, n := spans["POST /v1/chat/completions"], len(spans)
		mu.Unlock()
		if got == traceID && n >= 5 { // server, auth, admission, admission.tokens, the attempt
			return
		}
		if time.Now().After(deadline) {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("collector got %v", spans)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
