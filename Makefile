# Aisle: the two commands are `make demo` and `make test`; everything else is a step they use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PROTOS := $(wildcard protos/aisle/v1/*.proto)
STUBS := protos/aisle/v1/.generated

.PHONY: install protos demo test services services-down serve worker bench clean

install: $(STAMP) $(STUBS)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# Python stubs are generated from protos/ (never committed): import them as protos.aisle.v1.*_pb2.
protos: $(STUBS)
$(STUBS): $(PROTOS) $(STAMP)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	touch $@

# The whole loop in one process: generate a shop, serve it, replay its events, show a user's
# recommendations change, then keep serving on localhost:50051.
demo: install
	$(PY) -m clients.demo --data-dir .demo

test: install
	$(PY) -m pytest -q

# Development services (Kafka in KRaft mode, Redis); addresses go to .services.env.
services: install
	$(PY) -m tests.services up

services-down:
	$(PY) -m tests.services down

serve: install
	$(PY) -m server --host 127.0.0.1 --port 50051 --data-dir .data

clean:
	rm -rf $(VENV) .demo .data .pytest_cache .hypothesis
	find protos -name '*_pb2*.py*' -delete; rm -f $(STUBS)
