#!/usr/bin/env bash
# `make run`: migrate, make a demo key, start the mock upstream (unless
# BULKHEAD_UPSTREAM_URL points elsewhere) and serve in the foreground.
# Ctrl-C stops the gateway and the mock together.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin/bulkhead migrate
mock_pid=
if [ -z "${BULKHEAD_UPSTREAM_URL:-}" ]; then
	mkdir -p .run
	bin/mockllm -listen 127.0.0.1:8081 -chunk-delay 20ms >.run/mockllm.log 2>&1 &
	mock_pid=$!
	trap 'kill "$mock_pid" 2>/dev/null || true' EXIT
	for _ in $(seq 1 50); do grep -q listening .run/mockllm.log 2>/dev/null && break; sleep 0.1; done
	grep -q listening .run/mockllm.log || { cat .run/mockllm.log >&2; echo "run: mockllm did not start (is 127.0.0.1:8081 taken?)" >&2; exit 1; }
	echo "run: mock upstream on 127.0.0.1:8081 (set BULKHEAD_UPSTREAM_URL and BULKHEAD_UPSTREAM_API_KEY for a real provider)"
	# The mock speaks Anthropic's Messages API too: claude-* models route
	# to it as an Anthropic upstream, so /v1/messages and chat completions
	# translated to Anthropic work out of the box (unless a config is set).
	if [ -z "${BULKHEAD_CONFIG:-}" ]; then
		cat >.run/bulkhead.yaml <<-YAML
		upstreams:
		  - name: anthropic-mock
		    kind: anthropic
		    url: http://127.0.0.1:8081
		    api_key_env: BULKHEAD_DEMO_ANTHROPIC_KEY
		    models: ["claude-*"]
		YAML
		export BULKHEAD_CONFIG=.run/bulkhead.yaml BULKHEAD_DEMO_ANTHROPIC_KEY=mock-anthropic-key
	fi
fi
bin/bulkhead demo
if [ "${BULKHEAD_CONFIG:-}" = .run/bulkhead.yaml ]; then
	echo "  Anthropic (mock)    claude-* models: POST /v1/messages (Anthropic SDKs: base URL http://localhost:8080, the demo key as API key),"
	echo "                      or the OpenAI SDK with model claude-3-5-haiku (translated to Anthropic and back)"
	echo
fi
# The control plane (admin API and console) on BULKHEAD_CONTROL_LISTEN,
# with an operator token of its own for each run (shown once, like the key).
control=${BULKHEAD_CONTROL_LISTEN-127.0.0.1:9091}
if [ -n "$control" ]; then
	token=$(bin/bulkhead admin-token create --name "make run $(date -u +%FT%TZ)" --scope write 2>/dev/null)
	cat <<EOF

  console             http://$control/   (log in with the operator token below)
  operator token      $token   (write scope; shown once)
  admin API           curl -s http://$control/admin/v1/organizations -H "Authorization: Bearer $token"
  OpenAPI             http://$control/openapi.json

EOF
fi
export BULKHEAD_LOG_FORMAT=${BULKHEAD_LOG_FORMAT:-console}
bin/bulkhead serve &
serve_pid=$!
trap 'kill -TERM "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true' INT TERM EXIT
wait "$serve_pid"
