# Aisle: the two commands are `make demo` and `make test`; everything else is a step they use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PROTOS := $(wildcard protos/aisle/v1/*.proto)
STUBS := protos/aisle/v1/.generated

.PHONY: install protos demo test services services-down serve serve-kafka worker sink lake-optimize bench-kafka keys certs front clean master-key

install: $(STAMP) $(STUBS)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,train]'
	rm -f $(VENV)/.installed-*
	touch $@

# Python stubs are generated from protos/ (never committed): import them as protos.aisle.v1.*_pb2.
protos: $(STUBS)
$(STUBS): $(PROTOS) $(STAMP)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	touch $@

# A development master key for encryption at rest (AISLE_MASTER_KEY_FILE); never overwritten.
MASTER_KEY := .keys/master.key
master-key: install
	$(PY) -m feature_worker.privacy.master_key $(MASTER_KEY)
WITH_KEY := AISLE_MASTER_KEY_FILE=$${AISLE_MASTER_KEY_FILE:-$(MASTER_KEY)}

# The whole loop in one process: generate a shop, serve it, replay its events, show a user's
# recommendations change, then keep serving on localhost:50051.
demo: install master-key
	$(PY) -m clients.demo --data-dir .demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q

# Development services (Kafka in KRaft mode, Redis; CLUSTER=1: a Redis Cluster of three); addresses go to .services.env.
services: install
	$(PY) -m tests.services up $(if $(CLUSTER),--cluster)

services-down:
	$(PY) -m tests.services down

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
	rm -rf $(VENV) .demo .data .lake .bench .pytest_cache .hypothesis  # .keys is kept: data sealed with it
	find protos -name '*_pb2*.py*' -delete; rm -f $(STUBS)
