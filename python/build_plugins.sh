#!/usr/bin/env bash
# Builds the in-tree pruner plugins (release) and copies them into hyperprune/plugins/, so
# that the wheel `pip install ./python` builds ships them. Run it before `pip install ./python`
# or `maturin build`; it reuses the workspace's target folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$root"
# The default members: the `hyperprune` command and every in-tree plugin.
cargo build --release -q
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
mkdir -p "$here/hyperprune/plugins"
rm -f "$here/hyperprune/plugins/"libhyperprune_plugin_*.so
cp "$target"/release/libhyperprune_plugin_*.so "$here/hyperprune/plugins/"
ls "$here/hyperprune/plugins"
