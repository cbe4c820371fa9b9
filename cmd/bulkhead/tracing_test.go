package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// collector is an OTLP/HTTP traces receiver in the test: it keeps every
// span it is sent, with its resource's service name, and the raw bodies.
type collector struct {
	mu      sync.Mutex
	spans   []*tracepb.Span
	service []string
	raw     []byte
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw = append(c.raw, body...)
	for _, rs := range req.GetResourceSpans() {
		var service string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, s)
				c.service = append(c.service, service)
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(nil) //nolint:errcheck // an empty ExportTraceServiceResponse
}

// bulkhead serve with BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT exports each
// request's spans over OTLP/HTTP: the server span continues the caller's
// trace and carries the GenAI attributes, and nothing exported carries the
// key or the prompt.
func TestServeExportsTraces(t *testing.T) {
	storetest.Admin(t) // migrated, or skip/fail loudly
	col := &collector{}
	recv := httptest.NewServer(col)
	t.Cleanup(recv.Close)
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
		"BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT": recv.URL,
		"OTEL_BSP_SCHEDULE_DELAY":              "50", // ms: export at once
	})
	const prompt = "a prompt that must not be exported"
	req, _ := http.NewRequest("POST", "http://"+listen+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`+prompt+`"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the status matters
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}

	var server *tracepb.Span
	var service string
	for deadline := time.Now().Add(10 * time.Second); server == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		col.mu.Lock()
		for i, s := range col.spans {
			if s.GetName() == "POST /v1/chat/completions" {
				server, service = s, col.service[i]
			}
		}
		col.mu.Unlock()
	}
	if server == nil {
		t.Fatal("no server span reached the collector")
	}
	if got := string(hexID(server.GetTraceId())); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("trace id %s, want the caller's", got)
	}
	if service != "bulkhead" {
		t.Errorf("service.name = %q", service)
	}
	a := map[string]string{}
	for _, kv := range server.GetAttributes() {
		a[kv.GetKey()] = kv.GetValue().String()
	}
	for _, k := range []string{"gen_ai.request.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "http.response.status_code"} {
		if a[k] == "" {
			t.Errorf("server span lacks %s: %v", k, a)
		}
	}
	col.mu.Lock()
	raw := string(col.raw)
	col.mu.Unlock()
	for _, secret := range []string{key, prompt, strings.Split(key, "_")[2]} {
		if strings.Contains(raw, secret) {
			t.Errorf("the export carries %q", secret)
		}
	}
}

func hexID(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return out
}
