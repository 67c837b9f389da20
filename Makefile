# AI Firewall. `make help` lists the targets.
GO      ?= go
SHELL   := /bin/bash
# A recipe that pipes (soak) fails when its test fails, not only its filter.
.SHELLFLAGS := -o pipefail -c
PKGS    := ./...

.PHONY: help build run demo test test-deploy tools lint bench loadtest loadtest-streams soak envoy prices proto fuzz clean image

BUF := github.com/bufbuild/buf/cmd/buf@v1.75.0

help:
	@echo "build  compile bin/aifirewall and bin/fakellm"
	@echo "image  the container image as an OCI archive, bin/aifirewall-image.tar, without Docker (IMAGE=name:tag)"
	@echo "demo   fake upstream + sidecar + Envoy on :8000, no API key needed"
	@echo "run    sidecar + Envoy on :8000 against the upstream in .env"
	@echo "test   every test (real Redis and Envoy; CI=true fails instead of skipping)"
	@echo "test-deploy  the chart and manifests against real helm, kube-apiserver and Envoy, and installed in a live single-node cluster (root; builds tools once)"
	@echo "tools  build the pinned deployment tools into .tools/bin (first time ~15 min)"
	@echo "lint   gofmt and go vet"
	@echo "bench  benchmarks (prompt counting, processor phases)"
	@echo "loadtest  the same load against the upstream, Envoy alone and Envoy + firewall, one table (a few minutes)"
	@echo "loadtest-streams  STREAMS_STEPS concurrent slow streams through one Envoy and sidecar: errors, billing, memory and files per stream"
	@echo "soak   SOAK_CLIENTS streaming clients for SOAK_DURATION through Envoy (default 32, 2m)"
	@echo "fuzz   run every fuzz target for FUZZTIME each (default 20s)"
	@echo "prices regenerate billing/prices.json from ../shared/data/model_prices.json"
	@echo "proto  regenerate proto-gen/ (buf, protoc-gen-go, protoc-gen-go-grpc via go run)"

build:
	$(GO) build -o bin/aifirewall ./cmd/aifirewall
	$(GO) build -o bin/fakellm ./cmd/fakellm

# The chart's appVersion is the image's default tag.
VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' deploy/helm/aifirewall/Chart.yaml)
IMAGE   ?= aifirewall:$(VERSION)
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o bin/aifirewall-static ./cmd/aifirewall
	$(GO) run ./cmd/ociimage -binary bin/aifirewall-static -tag $(IMAGE) -o bin/aifirewall-image.tar

demo: build
	scripts/run-local.sh demo

run: build
	scripts/run-local.sh run

envoy:
	@scripts/envoy-path.sh

test:
	ENVOY_BIN="$$(scripts/envoy-path.sh)" $(GO) test -race -count=1 -timeout 30m $(PKGS)

tools:
	scripts/build-tools.sh

test-deploy: tools
	# Istio's own config generator, in the module that pins Istio (-trimpath: the
	# packages istioctl was built with are reused); it writes the sidecar
	# configuration the deploy tests then run in Envoy.
	cd deploy/tools/istioctl && AIFIREWALL_ISTIO_RENDER=$(CURDIR)/.tmp/istio-render $(GO) test -trimpath -count=1 -timeout 30m ./...
	ENVOY_BIN="$$(scripts/envoy-path.sh)" $(GO) test -tags deploy -count=1 -timeout 30m ./deploy/...

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags deploy ./deploy/...

bench:
	ENVOY_BIN="$$(scripts/envoy-path.sh)" $(GO) test -run '^$$' -bench . -benchmem $(PKGS)

LOADTEST_DURATION ?= 5s
loadtest:
	@mkdir -p .tmp
	ENVOY_BIN="$$(scripts/envoy-path.sh)" LOADTEST=1 LOADTEST_DURATION=$(LOADTEST_DURATION) LOADTEST_OUT=$(CURDIR)/.tmp/loadtest.txt \
	  $(GO) test -count=1 -run '^$$' -bench '^BenchmarkLoadTest$$' -benchtime 1x -timeout 30m ./envoy/ | grep -E '^(ok|FAIL|--- FAIL|panic)'
	@cat .tmp/loadtest.txt

# Steps of concurrent slow streams through one Envoy and one sidecar (each
# process may open 20,000 files here: with HTTP/1.1 to the provider an
# Envoy holds two per stream).
STREAMS_STEPS ?= 1000,2500,5000,9000
STREAMS_HOLD ?= 45s
# STREAMS_PROVIDER=h2: the provider over TLS with HTTP/2 (one file per stream in Envoy).
STREAMS_PROVIDER ?= h1
loadtest-streams:
	@mkdir -p .tmp
	ENVOY_BIN="$$(scripts/envoy-path.sh)" STREAMS_STEPS=$(STREAMS_STEPS) STREAMS_HOLD=$(STREAMS_HOLD) STREAMS_PROVIDER=$(STREAMS_PROVIDER) STREAMS_OUT=$(CURDIR)/.tmp/loadtest-streams.txt \
	  $(GO) test -count=1 -run '^$$' -bench '^BenchmarkOpenStreams$$' -benchtime 1x -timeout 60m ./envoy/ | grep -E '^(ok|FAIL|--- FAIL|panic)'
	@cat .tmp/loadtest-streams.txt

SOAK_CLIENTS ?= 32
SOAK_DURATION ?= 2m
soak:
	ENVOY_BIN="$$(scripts/envoy-path.sh)" SOAK_CLIENTS=$(SOAK_CLIENTS) SOAK_DURATION=$(SOAK_DURATION) \
	  $(GO) test -count=1 -run '^TestSoak$$' -v -timeout 60m ./envoy/ | grep -E 'soak|requests|errors|billed|goroutines|PASS|FAIL|ok'

FUZZTIME ?= 20s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParser$$' -fuzztime $(FUZZTIME) ./processor/sse/
	$(GO) test -run '^$$' -fuzz '^FuzzCountEqualsTiktoken$$' -fuzztime $(FUZZTIME) ./billing/
	for f in FuzzChatMeter FuzzResponsesMeter FuzzMessagesMeter FuzzEmbeddingsMeter FuzzParseRequest \
	  FuzzParseRequestDifferential FuzzHostileUsage; do \
	  $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) ./processor/provider/ || exit 1; done

prices:
	$(GO) run ./cmd/genprices -in ../shared/data/model_prices.json -out billing/prices.json

proto:
	cd proto-gen && $(GO) run $(BUF) generate

clean:
	rm -rf bin .tmp
