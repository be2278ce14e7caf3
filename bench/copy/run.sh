#!/bin/sh
# bench/copy: CopyImage across regions against `cp` of the same stored bytes between the two
# store directories, and an incremental copy (v2 after v1) against the first.  See run.py.
# Usage: bench/copy/run.sh [REPS] (SIZE_GIB=2 by default)
set -eu
cd "$(dirname "$0")/../.."
make build >/dev/null
exec /usr/bin/python3 bench/copy/run.py "$@"
