# Aisle: the two commands are `make demo` and `make test`; everything else is a step they use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PROTOS := $(wildcard protos/aisle/v1/*.proto)
STUBS := protos/aisle/v1/.generated
# The contract's descriptors with their comments, for the HTTP gateway's OpenAPI document (never committed).
DESCRIPTORS := protos/aisle/v1/descriptors.binpb

.PHONY: install lint protos proto-check proto-release clients-go clients-node clients-java gateway openapi demo test services services-down serve serve-kafka worker sink lake-optimize bench-kafka keys certs front clean master-key

install: $(STAMP) $(STUBS)
	@# Compiles the serving path's numba kernels once (cached beside the sources, by their digest: server/kernel_cache.py)
	@# instead of in the first request.
	@$(PY) -c 'import server.recommender'

# PyPI's torch for Linux is the CUDA build: with its libraries the environment takes about 7 GB, and pip needs room
# for the wheels beside it. Say so before pip runs out of space halfway (a warning: pip has the last word).
MIN_FREE_GB := 10
$(STAMP): pyproject.toml
	@free=$$(df -P -BG . | awk 'NR == 2 { sub("G", "", $$4); print $$4 }'); \
	if [ "$${free:-0}" -lt $(MIN_FREE_GB) ]; then \
	  echo "make install: warning: $${free} GB free on this disk; the environment needs about $(MIN_FREE_GB) GB (torch's CUDA build and libraries: ~7 GB)" >&2; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,train]'
	rm -f $(VENV)/.installed-*
	touch $@

# Python stubs are generated from protos/aisle/v1 (never committed): import them as protos.aisle.v1.*_pb2; the
# googleapis files under protos/google are only compiled against (googleapis-common-protos has their stubs).
# grpc_tools writes the modules (*_pb2.py, *_pb2_grpc.py); mypy-protobuf's plugins write their typed stubs
# (*_pb2.pyi, *_pb2_grpc.pyi, for both sync and grpc.aio use), which `mypy --strict` reads (one generator per file).
# protos/ is the include root (the files import "aisle/v1/..."), so protoc writes `from aisle.v1 import ...`;
# sed points those imports at the package they live in, protos.aisle.v1.
protos: $(STUBS)
$(STUBS): $(PROTOS) $(STAMP)
	$(PY) -m grpc_tools.protoc -I protos --python_out=protos --grpc_python_out=protos \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=quiet:protos \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=quiet:protos \
	  --include_imports --include_source_info --descriptor_set_out=$(DESCRIPTORS) $(PROTOS:protos/%=%)
	sed -i -E 's/^from aisle\.v1 import /from protos.aisle.v1 import /' protos/aisle/v1/*_pb2*.py protos/aisle/v1/*_pb2*.pyi
	touch $@

# The contract's checks. buf comes from the Go module proxy, built into .tools/ (the module and build caches
# are Go's own, outside the clone, so a fresh clone rebuilds it in seconds); protos/releases/ holds an image of
# each released contract, and every change is checked against the newest (see the README, "The contract").
GO ?= go
BUF_VERSION := v1.75.0
BUF := .tools/buf-$(BUF_VERSION)/buf
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
CONTRACT_BASELINE = $(shell ls protos/releases/*.binpb | sort -V | tail -n 1)

$(BUF):
	GOBIN=$(abspath $(dir $(BUF))) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

proto-check: $(BUF)
	$(BUF) format --diff --exit-code
	$(BUF) lint
	$(BUF) breaking --against $(CONTRACT_BASELINE)

# Go stubs (protoc-gen-go, protoc-gen-go-grpc from the Go module proxy, via buf.gen.yaml) and the Go example.
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GO_PLUGINS := .tools/bin/.go-plugins-$(PROTOC_GEN_GO_VERSION)-$(PROTOC_GEN_GO_GRPC_VERSION)
GO_EXAMPLE := clients/go/bin/aisle-example
$(GO_PLUGINS):
	GOBIN=$(abspath .tools/bin) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(abspath .tools/bin) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	touch $@
clients-go: $(GO_EXAMPLE)
$(GO_EXAMPLE): $(PROTOS) buf.gen.yaml $(BUF) $(GO_PLUGINS) clients/go/go.mod clients/go/go.sum $(wildcard clients/go/cmd/*/*.go)
	PATH="$(abspath .tools/bin):$$PATH" $(BUF) generate --path protos/aisle
	cd clients/go && $(GO) build -o bin/aisle-example ./cmd/aisle-example

# The Node example: @grpc/grpc-js and @grpc/proto-loader (the stubs are built from protos/ at run time), from npm's
# cache (~/.npm) by the lock file.
NODE_EXAMPLE := clients/node/node_modules/.package-lock.json
clients-node: $(NODE_EXAMPLE)
$(NODE_EXAMPLE): clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --prefer-offline --no-audit --no-fund --loglevel=error

# The Java example: protoc and grpc-java's plugin (protobuf-maven-plugin) and the libraries, from Maven Central
# into ~/.m2; one runnable jar.
JAVA_EXAMPLE := clients/java/target/aisle-example.jar
clients-java: $(JAVA_EXAMPLE)
$(JAVA_EXAMPLE): $(PROTOS) clients/java/pom.xml $(shell find clients/java/src -name '*.java')
	cd clients/java && mvn -q -B -Dstyle.color=never package

# At a release: record the contract as released (never overwrites an existing image).
proto-release: $(BUF)
	test ! -e protos/releases/v$(VERSION).binpb
	$(BUF) build --exclude-source-info -o protos/releases/v$(VERSION).binpb

# A development master key for encryption at rest (AISLE_MASTER_KEY_FILE); never overwritten.
MASTER_KEY := .keys/master.key
master-key: install
	$(PY) -m feature_worker.privacy.master_key $(MASTER_KEY)
WITH_KEY := AISLE_MASTER_KEY_FILE=$${AISLE_MASTER_KEY_FILE:-$(MASTER_KEY)}

# The whole loop in one process: generate a shop, serve it, replay its events, show a user's
# recommendations change, then keep serving on localhost:50051.
demo: install master-key
	$(PY) -m clients.demo --data-dir .demo $(DEMO_ARGS)

test: install proto-check lint
	$(PY) -m pytest -q

# ruff's lint rules and its formatter over every hand-written Python file (generated stubs are excluded), and
# `mypy --strict` (pyproject.toml [tool.mypy]) over the hand-written packages; it reads the generated stubs' .pyi.
MYPY_PATHS := server feature_worker trainer clients loadtest tests
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy $(MYPY_PATHS)

# Development services (Kafka in KRaft mode, Redis; CLUSTER=1: a Redis Cluster of three); addresses go to .services.env.
services: install
	$(PY) -m loadtest.harness.services up $(if $(CLUSTER),--cluster)

services-down:
	$(PY) -m loadtest.harness.services down

serve: install master-key
	$(WITH_KEY) $(PY) -m server --host 127.0.0.1 --port 50051 --data-dir .data

# Kafka + Redis mode on the services of `make services`: a server, and (in another terminal) a worker.
serve-kafka: install master-key
	$(WITH_KEY) $(PY) -m server --env-file .services.env --host 127.0.0.1 --port 50051

worker: install master-key
	$(WITH_KEY) $(PY) -m feature_worker --env-file .services.env

# Development auth: a signing key and its JWKS under .keys/ (never committed); then serve with the AISLE_AUTH_*
# lines it prints and mint tokens with `python -m clients token --scope "..."`.
keys: install
	$(PY) -m clients keys --dir .keys

# Development certificates under .certs/ (never committed): a CA, a localhost server certificate, a client one.
certs: install
	$(PY) -m clients certs --dir .certs

# The TLS 1.3 front (Debian's nginx; server/nginx/aisle.conf.template) on FRONT_PORT, passing gRPC to the
# server on BACKEND. Certificate and key from AISLE_TLS_CERT_FILE / AISLE_TLS_KEY_FILE (default: those of
# `make certs`); AISLE_TLS_CLIENT_CA_FILE, when set, makes it require client certificates (mutual TLS).
FRONT_PORT ?= 8443
BACKEND ?= 127.0.0.1:50051
front: install
	$(PY) -m server.front --listen 0.0.0.0:$(FRONT_PORT) --backend $(BACKEND) --dir .front \
	  --cert $${AISLE_TLS_CERT_FILE:-.certs/server.pem} --key $${AISLE_TLS_KEY_FILE:-.certs/server.key} \
	  $${AISLE_TLS_CLIENT_CA_FILE:+--client-ca $$AISLE_TLS_CLIENT_CA_FILE}

# The HTTP/JSON gateway (server/gateway) on GATEWAY_PORT before the gRPC server on BACKEND; CORS origins from
# AISLE_GATEWAY_CORS_ORIGINS (a JSON list). `make openapi` writes the OpenAPI document generated from the contract.
GATEWAY_PORT ?= 8080
gateway: install
	$(PY) -m server.gateway --host 127.0.0.1 --port $(GATEWAY_PORT) --backend $(BACKEND)

openapi: install
	$(PY) -m server.gateway openapi --out openapi.json

# The batch sink: every event and catalog change into the Delta tables under AISLE_LAKE_DIR (default .lake).
LAKE_DIR ?= .lake
sink: install master-key
	$(WITH_KEY) AISLE_LAKE_DIR=$${AISLE_LAKE_DIR:-$(LAKE_DIR)} $(PY) -m feature_worker sink --env-file .services.env

lake-optimize: install
	AISLE_LAKE_DIR=$${AISLE_LAKE_DIR:-$(LAKE_DIR)} $(PY) -m feature_worker lake-optimize --env-file .services.env

# The three Kafka + Redis figures of BENCHMARKS.md, on a generated shop (100,000 users) and `make services`.
BENCH_SHOP := .bench/shop100k
$(BENCH_SHOP)/meta.json:
	$(PY) -m trainer generate --users 100000 --items 20000 --seed 1 --out $(BENCH_SHOP)

bench-kafka: install $(BENCH_SHOP)/meta.json
	set -a && . ./.services.env && set +a && \
	$(PY) -m loadtest.kafka_throughput --shop $(BENCH_SHOP) --events 1000000 --mode drain && \
	$(PY) -m loadtest.kafka_throughput --shop $(BENCH_SHOP) --events 1000000 --mode live && \
	$(PY) -m loadtest.freshness --shop $(BENCH_SHOP) --events 10000 --rate 100 && \
	$(PY) -m loadtest.redis_memory --shop $(BENCH_SHOP) --copies 10

clean:
	rm -rf $(VENV) .tools .demo .data .lake .bench .pytest_cache .mypy_cache .hypothesis  # .keys is kept: data sealed with it
	find protos -name '*_pb2*.py*' -delete; rm -f $(STUBS) $(DESCRIPTORS)
	rm -rf clients/go/aislev1 clients/go/bin clients/java/target clients/node/node_modules
