# The two commands: `make run` and `make test`. Both start (and, on Debian,
# install) the local PostgreSQL and Redis first; see deploy/dev/services.sh.
SHELL := /bin/bash
GO    ?= go
# The Go that builds, tests and runs Bulkhead. go1.26.8's standard library
# has vulnerabilities the gateway reaches (net/http, crypto/tls,
# crypto/x509: govulncheck in make lint), fixed in go1.26.9 and later;
# this build environment serves go1.27.3, which the go command fetches
# through the module proxy the first time (about 76 MB). go.mod still
# says go 1.26.8, so a newer 1.26 builds it too.
export GOTOOLCHAIN := go1.27.3
# -race doubles test time but catches what a multi-tenant gateway cannot afford.
TESTFLAGS ?= -race -count=1

.PHONY: run test services build vet lint bench clean docs mutants

services:
	@bash deploy/dev/services.sh

build:
	$(GO) build -o bin/bulkhead ./cmd/bulkhead
	$(GO) build -o bin/mockllm ./cmd/mockllm
	$(GO) build -o bin/bulkhead-bench ./cmd/bulkhead-bench

run: services build
	@bash deploy/dev/run.sh

vet:
	$(GO) vet ./...

# lint: the other gates of make test: formatting, a tidy module, staticcheck,
# and govulncheck, which fails when the code calls a known-vulnerable function
# of a dependency or of the Go standard library (the Go that runs it: check
# `go version`). Each tool is pinned and fetched through the Go module proxy,
# and so is govulncheck's database: deploy/dev/vulndb.sh builds it once per
# machine from the pinned golang.org/x/vulndb snapshot (bump VULNDB for newer
# advisories) because govulncheck's default, the online database, is out of reach.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK ?= golang.org/x/vuln/cmd/govulncheck@v1.9.0
VULNDB      ?= golang.org/x/vulndb@v0.0.0-20261105234957-e22db6528018
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) run $(STATICCHECK) ./...
	db=$$(GO=$(GO) VULNDB=$(VULNDB) bash deploy/dev/vulndb.sh) && $(GO) run $(GOVULNCHECK) -db "file://$$db" ./...

test: services vet lint
	$(GO) test $(TESTFLAGS) ./...

# mutants breaks each tenancy guarantee on purpose (deploy/dev/mutants) and
# fails if a test does not notice; scratch databases only. MUTANTS=REGEX
# picks mutations by file name.
mutants: services
	@bash deploy/dev/mutants.sh

# docs rewrites the README's configuration table from the code.
docs: build
	@awk -v table="$$(bin/bulkhead config --markdown)" \
		'/<!-- config:begin/ {print; print table; skip=1; next} /<!-- config:end/ {skip=0} !skip' README.md > README.md.new
	@mv README.md.new README.md

# bench: the whole picture (PERFORMANCE.md) on loopback, the gateway's
# memory before, during and for 2.5 minutes after a burst, then the Go
# microbenchmarks of the hot pieces. The memory phase adds about three
# minutes.
bench: services build
	bin/bulkhead-bench run
	bin/bulkhead-bench memory
	$(GO) test -run '^$$' -bench . -benchmem ./gateway/... ./ratelimit/... ./store/...

clean:
	rm -rf bin
