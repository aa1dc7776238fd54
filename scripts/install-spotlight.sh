#!/usr/bin/env bash
# Installs Spotlight (@spotlightjs/spotlight, Sentry's dev sidecar: a Sentry envelope receiver that,
# unlike Bugsink, keeps transactions) once under the user's cache folder, then reuses it. Prints the
# install dir (its node_modules/ holds the packages; scripts/spotlight/server.mjs runs it).
# Versions are pinned by scripts/spotlight/package.json and its package-lock.json (`npm ci`), with
# hono pinned to 4.12.25 beside Spotlight: Spotlight's dist bundles files of hono 4.12.25 that import
# the top-level hono package, so the two must be the same release. Needs node >= 20 and npm.
# Atomic and idempotent like install-bugsink.sh: built in "$dir.partial", renamed when npm succeeded,
# a marker records a completed install, a lock serialises concurrent first runs. The dir name
# carries a hash of the lockfile, so editing the pins installs afresh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SPOTLIGHT_VERSION=4.11.8
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/spotlight" && pwd)"
command -v node >/dev/null && command -v npm >/dev/null || {
  log "Spotlight needs node (>= 20) and npm on PATH (Debian: apt-get install -y nodejs npm)"; exit 1; }
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || {
  log "Spotlight $SPOTLIGHT_VERSION needs node >= 20, found $(node --version)"; exit 1; }
lockhash=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-12)
dir="$TOOLS/spotlight-$SPOTLIGHT_VERSION-$lockhash"
marker="$dir/.installed"
if [[ ! -f "$marker" ]]; then
  exec 9>"$dir.lock"
  flock 9
  if [[ ! -f "$marker" ]]; then
    log "installing spotlight $SPOTLIGHT_VERSION into $dir (one-off, ~10 s)"
    rm -rf "$dir.partial" && mkdir -p "$dir.partial"
    cp "$src/package.json" "$src/package-lock.json" "$dir.partial/"
    # --ignore-scripts: no package of this tree needs an install script.
    ( cd "$dir.partial" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error ) >&2
    [[ -f "$dir.partial/node_modules/@spotlightjs/spotlight/dist/server/main.js" ]] || {
      log "npm ci finished but Spotlight's dist/server/main.js is missing"; exit 1; }
    rm -rf "$dir"; mv "$dir.partial" "$dir"
    touch "$marker"
  fi
fi
echo "$dir"
