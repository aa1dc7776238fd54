# Starts the real test servers on loopback for the integration tests. SOURCE it, never run it:
#
#   source scripts/start-servers.sh      # installs what is missing, starts, exports INTEGRA_TEST_*
#   trap stop_servers EXIT
#   cargo test ...
#
# Servers:
#   * Bugsink (Sentry-compatible error tracker; SQLite; ingests synchronously) via gunicorn.
#   * otelite (OTLP receiver, gRPC + HTTP, with a REST query API; SQLite).
#   * Spotlight (Sentry's dev sidecar; a Sentry envelope receiver that keeps transactions, which
#     Bugsink drops and rate-limits), run by scripts/spotlight/server.mjs, which appends every payload
#     it receives as one JSON line to a file before answering the POST.
# Each gets fresh storage in one temp dir (mktemp -d), removed by stop_servers.
#
# Exported (the contract the Rust tests read; see docs/test-servers-notes.md):
#   INTEGRA_TEST_BUGSINK_URL        http://127.0.0.1:PORT (no trailing slash)
#   INTEGRA_TEST_BUGSINK_TOKEN      full-access API token: "Authorization: Bearer $TOKEN"
#   INTEGRA_TEST_BUGSINK_PROJECT    numeric id of the default project
#   INTEGRA_TEST_BUGSINK_TEAM       team uuid (for creating more projects)
#   INTEGRA_TEST_BUGSINK_USER / INTEGRA_TEST_BUGSINK_PASSWORD   superuser (web login)
#   INTEGRA_TEST_BUGSINK_DB         path of Bugsink's SQLite db (raw stored envelopes: table ingest_envelope)
#   INTEGRA_TEST_SENTRY_DSN         DSN of the default project
#   INTEGRA_TEST_OTELITE_URL        http://127.0.0.1:PORT (REST API under /api/...)
#   INTEGRA_TEST_OTLP_GRPC_ENDPOINT http://127.0.0.1:PORT
#   INTEGRA_TEST_OTLP_HTTP_ENDPOINT http://127.0.0.1:PORT (POST /v1/traces, /v1/logs, /v1/metrics)
#   INTEGRA_TEST_OTELITE_DB        path of otelite's SQLite db
#   INTEGRA_TEST_OTELITE_BIN_PATH   the otelite binary, for tests that run (and kill) an otelite of their own
#   INTEGRA_TEST_SPOTLIGHT_URL      http://127.0.0.1:PORT (envelopes: POST /api/<id>/envelope/)
#   INTEGRA_TEST_SPOTLIGHT_DSN      http://<32-hex key>@127.0.0.1:PORT/1 (no path prefix: Spotlight has none)
#   INTEGRA_TEST_SPOTLIGHT_EVENTS   JSONL file: one line per payload Spotlight received, in arrival order
#   INTEGRA_TEST_LOG_DIR            bugsink.log, otelite.log, spotlight.log (print_server_logs prints their tails)
# Functions: stop_servers, print_server_logs, bugsink_new_project NAME (echoes "ID DSN").
#
# Safe under `set -euo pipefail` in the sourcing shell; does not change its shell options. On a
# failed start it prints the logs, stops whatever it started and returns non-zero.
# Knobs: INTEGRA_TEST_SERVERS="bugsink otelite spotlight" (default; name a subset to start fewer),
# INTEGRA_TEST_KEEP_TMP=1 keeps the temp dir (databases, logs) after stop_servers,
# INTEGRA_TEST_OTELITE_LOG sets otelite's RUST_LOG (default info), INTEGRA_TEST_OTELITE_BIN runs that
# otelite binary instead of installing the pinned one.

if ! (return 0 2>/dev/null); then
  echo "start-servers.sh must be sourced: source scripts/start-servers.sh" >&2
  exit 2
fi

_ITEST_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$_ITEST_SCRIPTS/lib.sh"

# Bump when the cached template database's recipe below changes.
_ITEST_BUGSINK_TEMPLATE_REV=1
_ITEST_PGIDS=""
_ITEST_TMP=""

# _itest_ports N: N distinct free loopback ports, space separated.
_itest_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
PY
}

# _itest_spawn NAME CMD...: start CMD in its own session/process group, output to $INTEGRA_TEST_LOG_DIR/NAME.log.
# The process group id is recorded for stop_servers.
_itest_spawn() {
  local name=$1; shift
  local pidfile="$_ITEST_TMP/$name.pid" i=0
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" \
    >"$INTEGRA_TEST_LOG_DIR/$name.log" 2>&1 </dev/null &
  disown $! 2>/dev/null || true
  while [[ ! -s "$pidfile" ]]; do
    (( i < 100 )) || { log "$name did not start"; return 1; }
    sleep 0.05; i=$((i + 1))
  done
  _ITEST_PGIDS="$_ITEST_PGIDS $(cat "$pidfile")"
}

# _itest_alive NAME: is NAME's process still running?
_itest_alive() {
  local pid
  pid=$(cat "$_ITEST_TMP/$1.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

# _itest_wait_http NAME URL SECS: like wait_http, but gives up at once if NAME's process died.
_itest_wait_http() {
  local name=$1 url=$2 secs=$3 i=0
  while (( i < secs * 5 )); do
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
    _itest_alive "$name" || { log "$name exited during startup"; return 1; }
    sleep 0.2; i=$((i + 1))
  done
  log "timed out after ${secs}s waiting for $url"; return 1
}

# _itest_wait_tcp NAME PORT SECS
_itest_wait_tcp() {
  local name=$1 port=$2 secs=$3 i=0
  while (( i < secs * 5 )); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    _itest_alive "$name" || { log "$name exited during startup"; return 1; }
    sleep 0.2; i=$((i + 1))
  done
  log "timed out after ${secs}s waiting for 127.0.0.1:$port"; return 1
}

# _itest_json_get FIELD: read JSON on stdin, print top-level FIELD.
_itest_json_get() {
  python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# _itest_bugsink_api METHOD PATH [JSON]: call Bugsink's canonical API, print the body; fails on non-2xx.
_itest_bugsink_api() {
  local method=$1 path=$2 body=${3:-}
  local args=(-fsS --max-time 30 -X "$method" -H "Authorization: Bearer $INTEGRA_TEST_BUGSINK_TOKEN")
  [[ -z "$body" ]] || args+=(-H 'Content-Type: application/json' --data "$body")
  curl "${args[@]}" "$INTEGRA_TEST_BUGSINK_URL/api/canonical/0/$path"
}

# bugsink_new_project NAME: create a project in the test team; echoes "ID DSN". Names are unique per
# team (a repeated name fails).
bugsink_new_project() {
  local name=$1 created id dsn
  created=$(_itest_bugsink_api POST projects/ "$(python3 -c 'import json, sys
print(json.dumps({"name": sys.argv[1], "team": sys.argv[2]}))' "$name" "$INTEGRA_TEST_BUGSINK_TEAM")") || return 1
  id=$(_itest_json_get id <<<"$created") || return 1
  dsn=$(_itest_bugsink_api GET "projects/$id/" | _itest_json_get dsn) || return 1
  echo "$id $dsn"
}

# _itest_bugsink_conf DIR PORT: write DIR/bugsink_conf.py for a server at 127.0.0.1:PORT storing in DIR.
_itest_bugsink_conf() {
  local dir=$1 port=$2
  "$_ITEST_BUGSINK_VENV/bin/bugsink-create-conf" --template=local --host=127.0.0.1 --port="$port" \
    -o "$dir/bugsink_conf.py" >/dev/null || return 1
  cat >>"$dir/bugsink_conf.py" <<EOF

# --- integra-observe test server ---
DATABASES["default"]["NAME"] = "$dir/db.sqlite3"
DATABASES["snappea"]["NAME"] = "$dir/snappea.sqlite3"
BUGSINK["INGEST_STORE_BASE_DIR"] = "$dir/ingestion"
BUGSINK["PHONEHOME"] = False
BUGSINK["KEEP_ENVELOPES"] = 1000
for _k in ("MAX_EVENTS_PER_PROJECT_PER_5_MINUTES", "MAX_EVENTS_PER_PROJECT_PER_HOUR",
           "MAX_EVENTS_PER_5_MINUTES", "MAX_EVENTS_PER_HOUR"):
    BUGSINK[_k] = 1_000_000
EOF
}

# _itest_bugsink_template: a migrated database with a superuser (admin/admin) and one API token,
# built once per Bugsink version into the cache (migrating takes ~15 s; copying it takes nothing).
# Prints its dir.
_itest_bugsink_template() {
  local tdir="$CACHE_ROOT/$(basename "$_ITEST_BUGSINK_VENV")-db-r$_ITEST_BUGSINK_TEMPLATE_REV"
  if [[ ! -f "$tdir/.complete" ]]; then
    # In a subshell holding a lock, so that concurrent first runs build it once.
    (
      exec 9>"$tdir.lock" && flock 9 || exit 1
      [[ ! -f "$tdir/.complete" ]] || exit 0
      log "building the Bugsink template database in $tdir (one-off, ~15 s)"
      rm -rf "$tdir.partial" && mkdir -p "$tdir.partial" || exit 1
      _itest_bugsink_conf "$tdir.partial" 8000 || exit 1
      ( cd "$tdir.partial" \
        && export DJANGO_SETTINGS_MODULE=bugsink_conf PYTHONPATH="$tdir.partial" \
        && "$_ITEST_BUGSINK_VENV/bin/bugsink-manage" migrate -v0 \
        && "$_ITEST_BUGSINK_VENV/bin/bugsink-manage" migrate snappea --database=snappea -v0 \
        && DJANGO_SUPERUSER_USERNAME=admin DJANGO_SUPERUSER_PASSWORD=admin \
           "$_ITEST_BUGSINK_VENV/bin/bugsink-manage" createsuperuser --noinput --email admin@example.com \
        && "$_ITEST_BUGSINK_VENV/bin/bugsink-manage" create_auth_token
      ) >"$INTEGRA_TEST_LOG_DIR/bugsink-template.log" 2>&1 || { log "building the template failed"; exit 1; }
      rm -rf "$tdir.partial/bugsink_conf.py" "$tdir.partial/ingestion" "$tdir.partial/__pycache__"
      touch "$tdir.partial/.complete"
      rm -rf "$tdir" && mv "$tdir.partial" "$tdir"
    ) || return 1
  fi
  echo "$tdir"
}

_itest_start_bugsink() {
  local template dir="$_ITEST_TMP/bugsink" port=$_ITEST_PORT_BUGSINK token team created
  template=$(_itest_bugsink_template) || return 1
  mkdir -p "$dir" && cp "$template/db.sqlite3" "$template/snappea.sqlite3" "$dir/" || return 1
  _itest_bugsink_conf "$dir" "$port" || return 1
  # A fresh token per run: rewrite the template's single token row.
  token=$(python3 - "$dir/db.sqlite3" <<'PY'
import secrets, sqlite3, sys
token = secrets.token_hex(20)
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE bsmain_authtoken SET token = ?", (token,))
db.commit()
print(token)
PY
  ) || return 1

  _itest_spawn bugsink env DJANGO_SETTINGS_MODULE=bugsink_conf PYTHONPATH="$dir" \
    "$_ITEST_BUGSINK_VENV/bin/gunicorn" --chdir "$dir" --bind "127.0.0.1:$port" --workers 2 \
    --timeout 60 --no-control-socket --access-logfile - bugsink.wsgi || return 1

  export INTEGRA_TEST_BUGSINK_URL="http://127.0.0.1:$port"
  export INTEGRA_TEST_BUGSINK_TOKEN="$token"
  export INTEGRA_TEST_BUGSINK_USER=admin INTEGRA_TEST_BUGSINK_PASSWORD=admin
  export INTEGRA_TEST_BUGSINK_DB="$dir/db.sqlite3"
  _itest_wait_http bugsink "$INTEGRA_TEST_BUGSINK_URL/health/ready" 60 || return 1

  team=$(_itest_bugsink_api POST teams/ '{"name": "integra"}' | _itest_json_get id) || return 1
  export INTEGRA_TEST_BUGSINK_TEAM="$team"
  created=$(bugsink_new_project integra-tests) || return 1
  export INTEGRA_TEST_BUGSINK_PROJECT="${created%% *}"
  export INTEGRA_TEST_SENTRY_DSN="${created#* }"
}

_itest_spawn_otelite() {
  local dir="$_ITEST_TMP/otelite" api=$_ITEST_PORT_OTELITE grpc=$_ITEST_PORT_GRPC http=$_ITEST_PORT_HTTP
  mkdir -p "$dir/data" "$dir/config" || return 1
  # XDG_CONFIG_HOME: otelite writes a config.toml on its first run; keep that out of the user's home.
  _itest_spawn otelite env XDG_CONFIG_HOME="$dir/config" NO_COLOR=1 RUST_LOG="${INTEGRA_TEST_OTELITE_LOG:-info}" \
    OTELITE_OTLP_GRPC_PORT="$grpc" OTELITE_OTLP_HTTP_PORT="$http" \
    "$_ITEST_OTELITE_BIN" serve --addr "127.0.0.1:$api" --storage-path "$dir/data" || return 1
  export INTEGRA_TEST_OTELITE_URL="http://127.0.0.1:$api"
  export INTEGRA_TEST_OTLP_GRPC_ENDPOINT="http://127.0.0.1:$grpc"
  export INTEGRA_TEST_OTLP_HTTP_ENDPOINT="http://127.0.0.1:$http"
  export INTEGRA_TEST_OTELITE_DB="$dir/data/otelite.db"
  export INTEGRA_TEST_OTELITE_BIN_PATH="$_ITEST_OTELITE_BIN"
}

_itest_spawn_spotlight() {
  local dir="$_ITEST_TMP/spotlight" port=$_ITEST_PORT_SPOTLIGHT key
  mkdir -p "$dir" && : >"$dir/events.jsonl" || return 1
  key=$(python3 -c 'import secrets; print(secrets.token_hex(16))') || return 1
  _itest_spawn spotlight env -u SPOTLIGHT_CAPTURE NO_COLOR=1 \
    node "$_ITEST_SCRIPTS/spotlight/server.mjs" "$_ITEST_SPOTLIGHT_DIR" "$port" "$dir/events.jsonl" || return 1
  export INTEGRA_TEST_SPOTLIGHT_URL="http://127.0.0.1:$port"
  export INTEGRA_TEST_SPOTLIGHT_DSN="http://$key@127.0.0.1:$port/1"
  export INTEGRA_TEST_SPOTLIGHT_EVENTS="$dir/events.jsonl"
}

_itest_wait_otelite() {
  _itest_wait_http otelite "$INTEGRA_TEST_OTELITE_URL/api/health" 60 || return 1
  _itest_wait_http otelite "$INTEGRA_TEST_OTLP_HTTP_ENDPOINT/health" 30 || return 1
  _itest_wait_tcp otelite "${INTEGRA_TEST_OTLP_GRPC_ENDPOINT##*:}" 30 || return 1
}

# print_server_logs [LINES]: the last LINES (default 60) of every server log, to stderr.
print_server_logs() {
  local f n=${1:-60}
  [[ -n "${INTEGRA_TEST_LOG_DIR:-}" && -d "$INTEGRA_TEST_LOG_DIR" ]] || return 0
  for f in "$INTEGRA_TEST_LOG_DIR"/*.log; do
    [[ -e "$f" ]] || continue
    printf '===== %s (last %s lines) =====\n' "$f" "$n" >&2
    tail -n "$n" "$f" >&2 || true
  done
}

# stop_servers: stop every server started here (whole process groups), remove the temp dir.
# Idempotent; always returns 0.
stop_servers() {
  local pg i
  for pg in $_ITEST_PGIDS; do kill -TERM -- "-$pg" 2>/dev/null || true; done
  for pg in $_ITEST_PGIDS; do
    i=0
    while kill -0 -- "-$pg" 2>/dev/null && (( i < 50 )); do sleep 0.1; i=$((i + 1)); done
    kill -KILL -- "-$pg" 2>/dev/null || true
  done
  _ITEST_PGIDS=""
  if [[ -n "$_ITEST_TMP" && "${INTEGRA_TEST_KEEP_TMP:-0}" != 1 ]]; then rm -rf "$_ITEST_TMP"; fi
  _ITEST_TMP=""
  return 0
}

_itest_start_servers() {
  local t0=$SECONDS want=" ${INTEGRA_TEST_SERVERS:-bugsink otelite spotlight} "
  _ITEST_TMP=$(mktemp -d -t integra-test-servers.XXXXXX) || return 1
  export INTEGRA_TEST_LOG_DIR="$_ITEST_TMP/logs"
  mkdir -p "$INTEGRA_TEST_LOG_DIR" || return 1
  # All ports in one go, so that no two of them can coincide.
  read -r _ITEST_PORT_BUGSINK _ITEST_PORT_OTELITE _ITEST_PORT_GRPC _ITEST_PORT_HTTP _ITEST_PORT_SPOTLIGHT \
    < <(_itest_ports 5) && [[ -n "$_ITEST_PORT_SPOTLIGHT" ]] || { log "could not pick free ports"; return 1; }
  # Installs first (a cold otelite build takes ~12 min), then spawn otelite and Spotlight so that they
  # boot while Bugsink is being set up.
  if [[ "$want" == *" otelite "* ]]; then
    _ITEST_OTELITE_BIN=${INTEGRA_TEST_OTELITE_BIN:-}
    if [[ -z "$_ITEST_OTELITE_BIN" ]]; then
      _ITEST_OTELITE_BIN=$(bash "$_ITEST_SCRIPTS/install-otelite.sh") || { log "installing otelite failed"; return 1; }
    fi
  fi
  if [[ "$want" == *" bugsink "* ]]; then
    _ITEST_BUGSINK_VENV=$(bash "$_ITEST_SCRIPTS/install-bugsink.sh") || { log "installing Bugsink failed"; return 1; }
  fi
  if [[ "$want" == *" spotlight "* ]]; then
    _ITEST_SPOTLIGHT_DIR=$(bash "$_ITEST_SCRIPTS/install-spotlight.sh") || { log "installing Spotlight failed"; return 1; }
  fi
  if [[ "$want" == *" otelite "* ]]; then
    _itest_spawn_otelite || { log "otelite failed to start"; return 1; }
  fi
  if [[ "$want" == *" spotlight "* ]]; then
    _itest_spawn_spotlight || { log "Spotlight failed to start"; return 1; }
  fi
  if [[ "$want" == *" bugsink "* ]]; then
    _itest_start_bugsink || { log "Bugsink failed to start"; return 1; }
    log "bugsink up at $INTEGRA_TEST_BUGSINK_URL (project $INTEGRA_TEST_BUGSINK_PROJECT) after $((SECONDS - t0))s"
  fi
  if [[ "$want" == *" otelite "* ]]; then
    _itest_wait_otelite || { log "otelite failed to start"; return 1; }
    log "otelite up at $INTEGRA_TEST_OTELITE_URL (OTLP gRPC $INTEGRA_TEST_OTLP_GRPC_ENDPOINT," \
      "HTTP $INTEGRA_TEST_OTLP_HTTP_ENDPOINT) after $((SECONDS - t0))s"
  fi
  if [[ "$want" == *" spotlight "* ]]; then
    # /health answers only once the recorder is subscribed (it subscribes before the port opens).
    _itest_wait_http spotlight "$INTEGRA_TEST_SPOTLIGHT_URL/health" 60 || { log "Spotlight failed to start"; return 1; }
    log "spotlight up at $INTEGRA_TEST_SPOTLIGHT_URL (recording to $INTEGRA_TEST_SPOTLIGHT_EVENTS) after $((SECONDS - t0))s"
  fi
}

if ! _itest_start_servers; then
  print_server_logs
  stop_servers
  return 1
fi
