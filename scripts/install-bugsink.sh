#!/usr/bin/env bash
# Installs Bugsink (a Sentry-compatible error tracker, the real test server for the Sentry transport)
# once into a venv under the user's cache folder, then reuses it. Prints the venv path.
# Atomic and idempotent: the venv is built in "$dir.partial" and renamed only once pip succeeded, and
# a marker file records a completed install; a lock serialises concurrent first runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BUGSINK_VERSION=2.6.2
dir="$TOOLS/bugsink-$BUGSINK_VERSION"
marker="$dir/.installed"
if [[ ! -f "$marker" ]]; then
  exec 9>"$dir.lock"
  flock 9
  if [[ ! -f "$marker" ]]; then
    log "installing bugsink $BUGSINK_VERSION into $dir (one-off, ~30 s)"
    rm -rf "$dir.partial"
    python3 -m venv "$dir.partial" || {
      log "python3 -m venv failed (on Debian's own python3: apt-get install -y python3-venv)"; exit 1; }
    "$dir.partial/bin/pip" install --quiet --disable-pip-version-check "bugsink==$BUGSINK_VERSION" >&2
    rm -rf "$dir"; mv "$dir.partial" "$dir"
    # A venv is not relocatable: its console scripts' shebangs name the .partial path. Fix them up.
    grep -rlI --null -F -- "$dir.partial" "$dir/bin" | xargs -0 -r sed -i "s#$dir\.partial#$dir#g"
    touch "$marker"
  fi
fi
echo "$dir"
