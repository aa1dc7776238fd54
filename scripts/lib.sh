# Shared helpers for the test scripts: where the cache lives, how to wait for a port.
# Sourced, never run. Everything installed goes under the user's cache folder, never into the clone.
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/integra-observe"
TOOLS="$CACHE_ROOT/tools"
mkdir -p "$TOOLS"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# wait_http URL SECONDS: poll until URL answers 2xx, or fail.
wait_http() {
  local url=$1 secs=${2:-60} i=0
  while (( i < secs * 5 )); do
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
    sleep 0.2; i=$((i + 1))
  done
  log "timed out after ${secs}s waiting for $url"; return 1
}

# free_port: an unused TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
