#!/bin/sh
# bench/storage: amid's block storage against what a user would otherwise pick, in one run, on
# one 2 GiB ext4 image of real files: import vs restic backup and borg create, an incremental
# snapshot vs the full import, export vs restic restore, stored bytes vs restic's repository,
# NBD throughput and IOPS vs nbdkit file, CreateVolume latency from 1 and 16 GiB snapshots.
# Prints each figure, the peer's, the ratio and whether the target is met, then a table.
# Not part of `make test`; takes about ten minutes.
#
# Usage: bench/storage/run.sh
#   BENCH_ROUNDS=3          timed runs per import/export/NBD figure (medians are reported)
#   BENCH_ONLY=nbd          only the NBD figures (item 6), after one import of the image
#   BENCH_FIO_SECONDS=5     seconds per fio run
#   BENCH_CREATE_CALLS=40   CreateVolume calls per snapshot size
#   TMPDIR                  where the temporary directory goes (default /var/tmp: the disk)
set -eu
cd "$(dirname "$0")/../.."
need=""
command -v restic >/dev/null || need="$need restic"
command -v borg >/dev/null || need="$need borgbackup"
command -v nbdkit >/dev/null || need="$need nbdkit"
command -v nbdcopy >/dev/null || need="$need libnbd-bin"
command -v fio >/dev/null || need="$need fio"
command -v mke2fs >/dev/null || need="$need e2fsprogs"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need="$need python3-libnbd"
/usr/bin/python3 -c 'import boto3' 2>/dev/null || need="$need python3-boto3"
if [ -n "$need" ]; then
    echo "installing:$need"
    apt-get install -y -qq $need >/dev/null
fi
if ! fio --enghelp 2>/dev/null | grep -qw nbd; then
    echo "this fio has no nbd engine" >&2
    exit 1
fi
make build >/dev/null
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/amid-bench-storage.XXXXXX")
pid=""
cleanup() {
    # bench.py stops what it started; this only covers an interrupt.
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
/usr/bin/python3 bench/storage/bench.py "$tmp" &
pid=$!
wait "$pid"
rc=$?
pid=""
exit $rc
