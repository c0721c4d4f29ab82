#!/usr/bin/env bash
# Regenerates the envd Connect RPC code in services/envd/gen from proto/.
# Needs the dev extras: pip install -e '.[dev]'
set -euo pipefail
cd "$(dirname "$0")/.."
out=services/envd/gen
rm -rf "$out/process" "$out/filesystem"
mkdir -p "$out"
python -m grpc_tools.protoc -Iproto \
  --plugin=protoc-gen-py="$(command -v protoc-gen-py)" \
  --plugin=protoc-gen-connectrpc="$(command -v protoc-gen-connectrpc)" \
  --py_out="$out" --connectrpc_out="$out" \
  process/process.proto filesystem/filesystem.proto
for pkg in process filesystem; do touch "$out/$pkg/__init__.py"; done
