#!/usr/bin/env bash
# Installs the real Python clients the propagation tests call our services with (the OpenTelemetry
# SDK and sentry-sdk, pinned) into a venv in the user's cache folder, once. Prints its python.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
PINS="opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 sentry-sdk==2.75.0"
dir="$TOOLS/pyclients-$(echo "$PINS" | md5sum | cut -c1-8)"
if [[ ! -x "$dir/bin/python" || ! -f "$dir/.installed" ]]; then
  log "installing Python clients ($PINS) into $dir"
  rm -rf "$dir.partial"
  python3 -m venv "$dir.partial" >&2
  "$dir.partial/bin/pip" install -q $PINS >&2
  rm -rf "$dir"; mv "$dir.partial" "$dir"
  # venv scripts hard-code their path; python itself is found through the moved symlink.
  touch "$dir/.installed"
fi
echo "$dir/bin/python"
