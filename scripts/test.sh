#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs the whole suite.
# System packages (redis-server, memcached, chromium, prometheus) come from the system package manager;
# Python packages go into .venv; the built-in models are exported once into .dlproxy-home.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v memcached >/dev/null || need+=(memcached)
command -v chromium >/dev/null || need+=(chromium)
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned to the exact CPU build: a looser pin pulls gigabytes of CUDA packages.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"

export DLPROXY_HOME="$PWD/.dlproxy-home"
.venv/bin/dlproxy models --export minilm:fp32 minilm:int8
.venv/bin/ruff check src tests
.venv/bin/mypy  # --strict on src/ (pyproject.toml [tool.mypy])
.venv/bin/lint-imports  # the import layers (pyproject.toml [tool.importlinter])
exec .venv/bin/python -m pytest "$@"
