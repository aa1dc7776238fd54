#!/usr/bin/env bash
# Installs the tools that build a Rust Worker (wasm32) with workers-rs' worker-build, once into the
# user's cache folder, then reuses them. Prints KEY=path lines for the caller to export:
#   WASM_BINDGEN_BIN  wasm-bindgen CLI at EXACTLY the wasm-bindgen version Cargo.lock resolves
#                     (worker-build refuses any other; cargo install without --locked, as upstream says)
#   WORKER_BUILD_BIN  worker-build, pinned to the release matching the `worker` crate we depend on
#   WASM_OPT_BIN      wasm-opt of npm binaryen (Debian's wasm-opt is too old for worker-build)
#   ESBUILD_BIN       npm esbuild (worker-build bundles its JS shim with it)
# The npm tools are pinned by scripts/worker-tools/package.json and its package-lock.json (`npm ci`).
# The cargo installs are debug builds (the tools only process one small module; a debug build
# compiles several times faster): about 6 min on 2 cores the first time (release builds take ~30).
# Each builds in its own target dir under the cache (never the shared CARGO_TARGET_DIR), into
# "$dir.partial", renamed when it succeeded, under a lock so that concurrent first runs wait. Also adds the wasm32-unknown-unknown
# target with rustup. Needs cargo, rustup, node (>= 20) and npm.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
WORKER_BUILD_VERSION=0.8.7

# The wasm-bindgen version of the workspace's lockfile: the CLI must be the very same release.
wasm_bindgen_version=$(awk '
  $0 == "name = \"wasm-bindgen\"" { want = 1; next }
  want && /^version = / { gsub(/version = |"/, ""); print; want = 0 }' "$here/../Cargo.lock" | sort -u)
if [[ -z "$wasm_bindgen_version" || "$wasm_bindgen_version" == *$'\n'* ]]; then
  log "expected exactly one wasm-bindgen version in Cargo.lock, found: '${wasm_bindgen_version//$'\n'/ }'"
  exit 1
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the rustup target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown >&2
fi

# cargo_tool NAME VERSION BINARY [cargo install flags...]: installs crate NAME@VERSION once.
cargo_tool() {
  local name=$1 version=$2 binary=$3; shift 3
  local dir="$TOOLS/$name-$version"
  if [[ ! -x "$dir/bin/$binary" ]]; then
    exec 8>"$dir.lock"
    flock 8
    if [[ ! -x "$dir/bin/$binary" ]]; then
      log "installing $name $version into $dir (one-off, a few minutes)"
      rm -rf "$dir.partial"
      CARGO_TARGET_DIR="$CACHE_ROOT/$name-build" cargo install --quiet --debug "$@" \
        --root "$dir.partial" "$name@$version" >&2
      rm -rf "$dir"; mv "$dir.partial" "$dir"
      rm -rf "$CACHE_ROOT/$name-build"
    fi
    exec 8>&-
  fi
  echo "$dir/bin/$binary"
}

wasm_bindgen=$(cargo_tool wasm-bindgen-cli "$wasm_bindgen_version" wasm-bindgen)
worker_build=$(cargo_tool worker-build "$WORKER_BUILD_VERSION" worker-build --locked)

# npm tools: binaryen (wasm-opt) and esbuild, from the committed lockfile.
command -v node >/dev/null && command -v npm >/dev/null || {
  log "the worker tools need node (>= 20) and npm on PATH (Debian: apt-get install -y nodejs npm)"; exit 1; }
src="$here/worker-tools"
lockhash=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-12)
dir="$TOOLS/worker-npm-tools-$lockhash"
if [[ ! -f "$dir/.installed" ]]; then
  exec 9>"$dir.lock"
  flock 9
  if [[ ! -f "$dir/.installed" ]]; then
    log "installing binaryen and esbuild into $dir (one-off, ~20 s)"
    rm -rf "$dir.partial" && mkdir -p "$dir.partial"
    cp "$src/package.json" "$src/package-lock.json" "$dir.partial/"
    # esbuild's install script only checks its platform package; the binary comes in that package.
    ( cd "$dir.partial" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error ) >&2
    rm -rf "$dir"; mv "$dir.partial" "$dir"
    touch "$dir/.installed"
  fi
  exec 9>&-
fi
wasm_opt="$dir/node_modules/binaryen/bin/wasm-opt"
esbuild="$dir/node_modules/@esbuild/linux-x64/bin/esbuild"
[[ -x "$esbuild" ]] || esbuild="$dir/node_modules/esbuild/bin/esbuild"
for bin in "$wasm_opt" "$esbuild"; do
  [[ -x "$bin" ]] || { log "npm ci finished but $bin is missing or not executable"; exit 1; }
done

echo "WASM_BINDGEN_BIN=$wasm_bindgen"
echo "WORKER_BUILD_BIN=$worker_build"
echo "WASM_OPT_BIN=$wasm_opt"
echo "ESBUILD_BIN=$esbuild"
