#!/bin/sh
# Fails when a C file is not formatted as .clang-format says (generated model tables excepted).
set -eu
cd "$(dirname "$0")/.."
files=$(find src tests/unit tests/fuzz bench -name '*.[ch]' 2>/dev/null | grep -v '/model_' | sort)
bad=""
for f in $files; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
        bad="$bad $f"
    fi
done
if [ -n "$bad" ]; then
    echo "not clang-formatted (run: make format):$bad" >&2
    exit 1
fi
echo "format: $(echo "$files" | wc -w) files clean"
