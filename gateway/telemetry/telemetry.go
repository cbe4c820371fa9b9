// Package telemetry builds the OpenTelemetry tracer provider the gateway
// exports its traces through: OTLP over HTTP, batched, to
// BULKHEAD_OTEL_EXPORTER_OTLP_ENDPOINT or to what the standard
// OTEL_EXPORTER_OTLP_* variables name. The gateway's spans themselves are
// made in package gateway (tracing.go).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/bulkheadhq/bulkhead/config"
)

// ServiceName is the service.name of the gateway's spans unless
// OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES says otherwise.
const ServiceName = "bulkhead"

// New returns the tracer provider for cfg, or nil when cfg.Tracing() is
// false: the gateway then makes no span at all. Call the provider's
// Shutdown at exit to flush what is batched. The sampler is the SDK's
// (OTEL_TRACES_SAMPLER, default parent-based always-on).
func New(ctx context.Context, cfg config.Config, version string) (*sdktrace.TracerProvider, error) {
	if !cfg.Tracing() {
		return nil, nil
	}
	var opts []otlptracehttp.Option
	if e := cfg.OTelExporterOTLPEndpoint; e != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimRight(e, "/")+"/v1/traces"))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", ServiceName), attribute.String("service.version", version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("otel resource: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}
