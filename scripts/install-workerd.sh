#!/usr/bin/env bash
# Installs Cloudflare's Worker runtime workerd (npm `workerd`) and esbuild (which strips the
# TypeScript of tests/cloudflare/worker.ts) once under the user's cache folder, then reuses them.
#   scripts/install-workerd.sh             # prints the workerd binary's path
#   scripts/install-workerd.sh --esbuild   # prints the esbuild binary's path
# Versions are pinned by scripts/workerd/package.json and its package-lock.json (`npm ci`).
# Atomic and idempotent like install-spotlight.sh: built in "$dir.partial", renamed when npm
# succeeded, a marker records a completed install, a lock serialises concurrent first runs. The dir
# name carries a hash of the lockfile, so editing the pins installs afresh. Needs node >= 18 and npm.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WORKERD_VERSION=1.20261117.1
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/workerd" && pwd)"
command -v node >/dev/null && command -v npm >/dev/null || {
  log "workerd's npm package needs node and npm on PATH (Debian: apt-get install -y nodejs npm)"; exit 1; }
lockhash=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-12)
dir="$TOOLS/workerd-$WORKERD_VERSION-$lockhash"
marker="$dir/.installed"
if [[ ! -f "$marker" ]]; then
  exec 9>"$dir.lock"
  flock 9
  if [[ ! -f "$marker" ]]; then
    log "installing workerd $WORKERD_VERSION and esbuild into $dir (one-off, ~30 s)"
    rm -rf "$dir.partial" && mkdir -p "$dir.partial"
    cp "$src/package.json" "$src/package-lock.json" "$dir.partial/"
    # --ignore-scripts: the platform binaries come as optional dependencies; the packages'
    # postinstall scripts only re-check them (run below instead).
    ( cd "$dir.partial" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error ) >&2
    for bin in node_modules/@cloudflare/workerd-linux-64/bin/workerd node_modules/@esbuild/linux-x64/bin/esbuild; do
      [[ -x "$dir.partial/$bin" ]] || { log "npm ci finished but $bin is missing (only linux x64 is set up)"; exit 1; }
    done
    "$dir.partial/node_modules/@cloudflare/workerd-linux-64/bin/workerd" --version >&2
    rm -rf "$dir"; mv "$dir.partial" "$dir"
    touch "$marker"
  fi
fi
if [[ "${1:-}" == "--esbuild" ]]; then
  echo "$dir/node_modules/@esbuild/linux-x64/bin/esbuild"
else
  echo "$dir/node_modules/@cloudflare/workerd-linux-64/bin/workerd"
fi
