#!/usr/bin/env bash
# Recommend under load with ghz, through server reflection (no proto files needed).
#   loadtest/ghz_recommend.sh [TARGET] [TOTAL] [CONNECTIONS] [CONCURRENCY] [USERS]
# Install ghz once with: go install github.com/bojand/ghz/cmd/ghz@v0.120.0 (or let loadtest.ghz_bench install it
# into ~/.cache/aisle/ghz/, which this script also looks in).
# Users are drawn at random from u1 .. uUSERS, the ids of a generated shop. With AISLE_TOKEN set (a server with
# auth on), every call sends it: AISLE_TOKEN=$(python -m clients token --scope recommendations:read) loadtest/...
set -euo pipefail
target=${1:-127.0.0.1:50051}
total=${2:-20000}
connections=${3:-2}
concurrency=${4:-8}
users=${5:-100000}
ghz_bin=${GHZ:-$(command -v ghz || { test -x ~/.cache/aisle/ghz/ghz && echo ~/.cache/aisle/ghz/ghz; } || echo "$(go env GOPATH)/bin/ghz")}
auth=()
if [[ -n "${AISLE_TOKEN:-}" ]]; then auth=(--metadata "{\"authorization\": \"Bearer $AISLE_TOKEN\"}"); fi
exec "$ghz_bin" --insecure "${auth[@]}" \
  --call aisle.v1.RecommendationService.Recommend \
  --data "{\"user_id\": \"u{{randomInt 1 $((users + 1))}}\", \"k\": 10, \"explain\": true}" \
  --total "$total" --connections "$connections" --concurrency "$concurrency" \
  --skipFirst 500 \
  "$target"
