package telemetry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/bulkheadhq/bulkhead/config"
)

// receiver is an OTLP/HTTP trace receiver in the test: span names by
// service.name.
type receiver struct {
	mu    sync.Mutex
	spans map[string][]string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, kv := range rs.Resource.GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.Value.GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				rc.spans[service] = append(rc.spans[service], sp.Name)
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
}

// The standard variables alone turn export on: OTEL_EXPORTER_OTLP_ENDPOINT
// names the collector, OTEL_SERVICE_NAME the service.
func TestStandardEnv(t *testing.T) {
	rc := &receiver{spans: map[string][]string{}}
	collector := httptest.NewServer(rc)
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_SERVICE_NAME", "gw-east")
	cfg, err := config.Load("", os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := New(context.Background(), cfg, "test")
	if err != nil || tp == nil {
		t.Fatal(tp, err)
	}
	_, sp := tp.Tracer("test").Start(context.Background(), "hello")
	sp.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if got := rc.spans["gw-east"]; len(got) != 1 || got[0] != "hello" {
		t.Errorf("collector got %v", rc.spans)
	}
}

// Off: no provider, so no exporter and no goroutine.
func TestOff(t *testing.T) {
	cfg := config.Default()
	cfg.OTelDisabled = true
	cfg.OTelExporterOTLPEndpoint = "http://127.0.0.1:1"
	if tp, err := New(context.Background(), cfg, "test"); tp != nil || err != nil {
		t.Errorf("%v %v", tp, err)
	}
}
