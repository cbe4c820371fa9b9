package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
)

// newTracing builds the OpenTelemetry trace pipeline serve hands the
// gateway (gateway/tracing.go), or nil when tracing is not configured:
// neither BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT nor the standard
// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
// or OTEL_SDK_DISABLED=true, or OTEL_TRACES_EXPORTER=none. Spans leave in
// batches over OTLP/HTTP (protobuf); the SDK reads the rest of the
// standard variables itself (headers, timeout, sampler, batch sizes,
// service name and resource attributes). The caller shuts it down, which
// flushes what is queued.
//
// The SDK's own diagnostics are kept out of the process log but for
// export failures, which are logged without their text (it can carry the
// collector's answer).
func newTracing(ctx context.Context, cfg config.Config, lookup func(string) (string, bool), log *zap.Logger) (*sdktrace.TracerProvider, error) {
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") || get("OTEL_TRACES_EXPORTER") == "none" {
		return nil, nil
	}
	if cfg.OTelEndpoint == "" && get("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, nil
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := get(k); p != "" && p != "http/protobuf" {
			return nil, fmt.Errorf("%s: only http/protobuf is supported, got %q", k, p)
		}
	}
	if e := get("OTEL_TRACES_EXPORTER"); e != "" && e != "otlp" {
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER: only otlp (or none) is supported, got %q", e)
	}
	var opts []otlptracehttp.Option
	if cfg.OTelEndpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(tracesURL(cfg.OTelEndpoint)))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, errors.New("tracing: the OTLP exporter's settings are invalid")
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("bulkhead")), // OTEL_SERVICE_NAME overrides it
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil {
		log.Warn("tracing: part of the resource could not be detected", zap.String("error", err.Error()))
	}
	otel.SetLogger(logr.Discard())
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {
		log.Warn("tracing: exporting spans failed (check the collector at the OTLP endpoint)")
	}))
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// tracesURL is the OTLP/HTTP traces URL of a collector's base URL: its
// /v1/traces, as the OTEL_EXPORTER_OTLP_ENDPOINT convention has it, unless
// the URL names a path of its own.
func tracesURL(base string) string {
	u, err := url.Parse(base)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return base
	}
	u.Path = "/v1/traces"
	return u.String()
}
