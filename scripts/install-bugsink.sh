#!/usr/bin/env bash
# Installs Bugsink (a Sentry-compatible error tracker, used as the real test server for the Sentry
# transport) once into a venv under the user's cache folder, then reuses it. Prints the venv path.
# Atomic: the venv is built in "$dir.partial" and renamed only once pip succeeded; a marker file
# records the completed install so a half-built venv is never trusted.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BUGSINK_VERSION=2.6.2
dir="$TOOLS/bugsink-$BUGSINK_VERSION"
marker="$dir/.installed"
if [[ ! -f "$marker" ]]; then
  log "installing bugsink $BUGSINK_VERSION into $dir (one-off, ~1 min)"
  rm -rf "$dir.partial"
  python3 -m venv "$dir.partial"
  "$dir.partial/bin/pip" install --quiet --disable-pip-version-check "bugsink==$BUGSINK_VERSION" >&2
  rm -rf "$dir"; mv "$dir.partial" "$dir"
  # A venv is not relocatable: its console scripts' shebangs name the .partial path. Fix them up.
  grep -rlI --null -- "$dir.partial" "$dir/bin" | xargs -0 -r sed -i "s#$dir.partial#$dir#g"
  touch "$marker"
fi
echo "$dir"
