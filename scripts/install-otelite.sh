#!/usr/bin/env bash
# Installs the otelite OTLP receiver once into the user's cache folder (its build takes ~12 min on
# 2 cores), then reuses it. Prints the binary's path.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
OTELITE_VERSION=0.1.156
dir="$TOOLS/otelite-$OTELITE_VERSION"
if [[ ! -x "$dir/bin/otelite" ]]; then
  log "installing otelite $OTELITE_VERSION into $dir (one-off, ~12 min)"
  CARGO_TARGET_DIR="$CACHE_ROOT/otelite-build" cargo install --locked --debug --quiet \
    --root "$dir.partial" "otelite@$OTELITE_VERSION" >&2
  rm -rf "$dir"; mv "$dir.partial" "$dir"
  rm -rf "$CACHE_ROOT/otelite-build"
fi
echo "$dir/bin/otelite"
