#!/usr/bin/env bash
# Sourced by scripts/test and scripts/test-worker: installs the wasm tools once
# (scripts/install-worker-tools.sh: the wasm32 target, wasm-bindgen-cli, worker-build, wasm-opt,
# esbuild; cached under ~/.cache/integra-observe) and workerd, builds examples/rust-worker with
# worker-build into the cache, and exports INTEGRA_TEST_RUST_WORKER_DIR and INTEGRA_TEST_WORKERD.
_rw_tools="$(scripts/install-worker-tools.sh)" || return 1
while IFS='=' read -r _rw_key _rw_value; do
  [[ -n "$_rw_key" ]] && export "$_rw_key=$_rw_value"
done <<<"$_rw_tools"
INTEGRA_TEST_WORKERD="$(scripts/install-workerd.sh)" || return 1
export INTEGRA_TEST_WORKERD
INTEGRA_TEST_RUST_WORKER_DIR="$CACHE_ROOT/rust-worker-build"
export INTEGRA_TEST_RUST_WORKER_DIR
log "building examples/rust-worker for wasm32 with worker-build into $INTEGRA_TEST_RUST_WORKER_DIR"
( cd examples/rust-worker && "$WORKER_BUILD_BIN" --release --out-dir "$INTEGRA_TEST_RUST_WORKER_DIR" ) >&2 || return 1
unset _rw_tools _rw_key _rw_value
