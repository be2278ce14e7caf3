#!/bin/sh
# bench/instances: launch time against image size and against QEMU on a qcow2 overlay by hand,
# CreateImage NoReboot against hashing and storing the changed bytes, guest disk throughput
# over amid's NBD against a raw file.  See run.py.  Usage: bench/instances/run.sh [REPS]
# (BENCH_ONLY=disk: only the guest disk throughput, REPS rounds)
set -eu
cd "$(dirname "$0")/../.."
make build >/dev/null
exec /usr/bin/python3 bench/instances/run.py "$@"
