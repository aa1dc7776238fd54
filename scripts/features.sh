#!/usr/bin/env bash
# Prints the facade crate's features, one per line, from its Cargo.toml (no extra tools needed).
set -euo pipefail
cd "$(dirname "$0")/.."
awk '/^\[features\]/{f=1;next} /^\[/{f=0} f && /^[a-z][a-z0-9_-]* *=/{print $1}' crates/integra-observe/Cargo.toml | grep -v '^default$'
