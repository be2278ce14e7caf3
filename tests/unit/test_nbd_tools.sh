#!/bin/bash
# test_nbd_tools.sh — interop of amid's NBD server with the tools users run against it:
# qemu-img and qemu-io (qemu-utils), nbdinfo and nbdcopy (libnbd-bin).
#
#   test_nbd_tools.sh PATH/TO/nbd_testserver
#
# Starts nbd_testserver (exports "mem", read-write, and "ro", the same bytes read-only, on one
# Unix socket) and checks sizes and flags, bit-exact copies in and out, holes after trim and
# zeroing, refused writes on the read-only export, and the same on a file-backed device.  Each
# server must exit 0 on SIGTERM, which also means every export it opened was released once.
# Exits 77 (skipped) when a tool is missing: apt-get install -y qemu-utils libnbd-bin.
set -u

server=${1:?usage: test_nbd_tools.sh PATH/TO/nbd_testserver}
for tool in qemu-img qemu-io nbdinfo nbdcopy python3 cmp; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool not installed (apt-get install -y qemu-utils libnbd-bin)"
        exit 77
    fi
done

tmp=$(mktemp -d /tmp/test_nbd_tools.XXXXXX)
sock=$tmp/nbd.sock
pid=
passed=0
failed=0

cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

check() {
    local what=$1
    shift
    if "$@" >"$tmp/check.out" 2>&1; then
        passed=$((passed + 1))
        echo "ok - $what"
    else
        failed=$((failed + 1))
        echo "not ok - $what"
        sed 's/^/    /' "$tmp/check.out" | tail -20
    fi
}

# Inverts a command's status: the check passes when the command fails.
fails() {
    ! "$@"
}

start_server() {
    rm -f "$sock"
    "$server" --socket "$sock" "$@" >"$tmp/server.out" 2>"$tmp/server.err" &
    pid=$!
    for _ in $(seq 100); do
        grep -q ready "$tmp/server.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nbd_testserver did not start:"
    cat "$tmp/server.err"
    exit 1
}

stop_server() {
    kill -TERM "$pid"
    wait "$pid"
    local rc=$?
    pid=
    cat "$tmp/server.err"
    return $rc
}

# json_field URI FIELD: prints one field of nbdinfo --json for the URI's export.
json_field() {
    nbdinfo --json "$1" | python3 -c 'import json, sys
print(json.dumps(json.load(sys.stdin)["exports"][0][sys.argv[1]]))' "$2"
}

expect_field() {
    local got
    got=$(json_field "$1" "$2") || return 1
    [ "$got" = "$3" ] || { echo "$2: got $got, want $3"; return 1; }
}

# expect_map URI START LENGTH TYPE: nbdinfo --map has an extent [START, START+LENGTH) of TYPE
# (0 data, 3 hole+zero), possibly merged with neighbours of the same type.
expect_map() {
    nbdinfo --map "$1" | tee "$tmp/map" | awk -v s="$2" -v l="$3" -v t="$4" '
        $1 <= s && $1 + $2 >= s + l && $3 == t { found = 1 }
        END { exit !found }' || { cat "$tmp/map"; return 1; }
}

# qemu_map_hole URI START LENGTH: qemu-img map reports [START, +LENGTH) as zero and not data.
qemu_map_hole() {
    qemu-img map --output=json -f raw "$1" | python3 -c 'import json, sys
s, l = int(sys.argv[1]), int(sys.argv[2])
ok = any(e["start"] <= s and e["start"] + e["length"] >= s + l and e["zero"] and not e["data"]
         for e in json.load(sys.stdin))
sys.exit(0 if ok else 1)' "$2" "$3"
}

size=$((64 << 20))
mem="nbd+unix:///mem?socket=$sock"
ro="nbd+unix:///ro?socket=$sock"
head -c $size /dev/urandom >"$tmp/in.raw"

echo "# in-memory device"
start_server --size $size
check "nbdinfo: size" expect_field "$mem" export-size $size
check "nbdinfo: writable" expect_field "$mem" is_read_only false
check "nbdinfo: can flush" expect_field "$mem" can_flush true
check "nbdinfo: can fua" expect_field "$mem" can_fua true
check "nbdinfo: can trim" expect_field "$mem" can_trim true
check "nbdinfo: can zero" expect_field "$mem" can_zero true
check "nbdinfo: structured replies and base:allocation" \
    bash -c "nbdinfo '$mem' | grep -q 'using structured' && nbdinfo '$mem' | grep -q base:allocation"
check "nbdinfo: read-only export flagged" expect_field "$ro" is_read_only true
check "nbdinfo: read-only export cannot trim" expect_field "$ro" can_trim false
check "nbdinfo --list: both exports on one socket" \
    bash -c "nbdinfo --list 'nbd+unix://?socket=$sock' | grep -q 'export=\"mem\"' &&
             nbdinfo --list 'nbd+unix://?socket=$sock' | grep -q 'export=\"ro\"'"
check "nbdinfo: unknown export refused" fails nbdinfo "nbd+unix:///nope?socket=$sock"
check "qemu-img info: virtual size" \
    bash -c "qemu-img info -f raw '$mem' | grep -q '($size bytes)'"
check "nbdcopy in" nbdcopy "$tmp/in.raw" "$mem"
check "nbdcopy out is bit-exact" \
    bash -c "nbdcopy '$mem' '$tmp/out.raw' && cmp '$tmp/in.raw' '$tmp/out.raw'"
check "qemu-img convert -O raw is bit-exact" \
    bash -c "qemu-img convert -f raw -O raw '$mem' '$tmp/conv.raw' && cmp '$tmp/in.raw' '$tmp/conv.raw'"
check "read-only export reads the same bytes" \
    bash -c "nbdcopy '$ro' '$tmp/ro.raw' && cmp '$tmp/in.raw' '$tmp/ro.raw'"
check "qemu-img compare" qemu-img compare -f raw -F raw "$tmp/in.raw" "$mem"

# Trim 8 MiB at 16 MiB and zero 4 MiB at 40 MiB allowing unmap (-u): both become holes.
check "qemu-io discard and write -z -u" \
    qemu-io -f raw -c "discard 16M 8M" -c "write -z -u 40M 4M" "$mem"
check "nbdinfo --map: trimmed range is a hole" expect_map "$mem" $((16 << 20)) $((8 << 20)) 3
check "nbdinfo --map: zeroed range is a hole" expect_map "$mem" $((40 << 20)) $((4 << 20)) 3
check "nbdinfo --map: data stays data" expect_map "$mem" 0 $((16 << 20)) 0
check "qemu-img map: trimmed range is a hole" qemu_map_hole "$mem" $((16 << 20)) $((8 << 20))
check "qemu-img map: zeroed range is a hole" qemu_map_hole "$mem" $((40 << 20)) $((4 << 20))
check "trimmed and zeroed ranges read as zeroes" bash -c "
    cp '$tmp/in.raw' '$tmp/expect.raw' &&
    dd if=/dev/zero of='$tmp/expect.raw' bs=1M seek=16 count=8 conv=notrunc status=none &&
    dd if=/dev/zero of='$tmp/expect.raw' bs=1M seek=40 count=4 conv=notrunc status=none &&
    nbdcopy '$mem' '$tmp/out2.raw' && cmp '$tmp/expect.raw' '$tmp/out2.raw' &&
    qemu-img convert -f raw -O raw '$mem' '$tmp/conv2.raw' && cmp '$tmp/expect.raw' '$tmp/conv2.raw'"
check "write -z without -u (NO_HOLE) allocates a trimmed range" \
    bash -c "qemu-io -f raw -c 'discard 4M 1M' -c 'write -z 4M 1M' '$mem' && nbdinfo --map '$mem' | awk '\$1 <= 4194304 && \$1 + \$2 >= 5242880 && \$3 == 0 { f = 1 } END { exit !f }'"

# A sparse source copied in leaves holes behind.
check "nbdcopy of a sparse file leaves holes" bash -c "
    truncate -s $size '$tmp/sparse.raw' &&
    dd if='$tmp/in.raw' of='$tmp/sparse.raw' bs=1M count=2 conv=notrunc status=none &&
    dd if='$tmp/in.raw' of='$tmp/sparse.raw' bs=1M skip=60 seek=60 count=2 conv=notrunc status=none &&
    nbdcopy '$tmp/sparse.raw' '$mem' && nbdcopy '$mem' '$tmp/sparse.out' &&
    cmp '$tmp/sparse.raw' '$tmp/sparse.out'"
check "nbdinfo --map: holes of the sparse copy" expect_map "$mem" $((2 << 20)) $((58 << 20)) 3

# The read-only export refuses every write, and the bytes stay as they were.
nbdcopy "$mem" "$tmp/before.raw"
check "nbdcopy into read-only export fails" fails nbdcopy "$tmp/in.raw" "$ro"
check "qemu-io write to read-only export fails" \
    fails qemu-io -f raw -c "write -P 0x55 0 64k" "$ro"
check "qemu-io discard on read-only export fails" \
    fails qemu-io -f raw -c "discard 0 1M" "$ro"
check "read-only export left unchanged" \
    bash -c "nbdcopy '$mem' '$tmp/after.raw' && cmp '$tmp/before.raw' '$tmp/after.raw'"
check "server stops cleanly, every export released" stop_server

echo "# file-backed device"
truncate -s $size "$tmp/disk.img"
start_server --file "$tmp/disk.img"
check "nbdcopy in (file)" nbdcopy "$tmp/in.raw" "$mem"
check "flushed bytes are in the file" bash -c "sync && cmp '$tmp/in.raw' '$tmp/disk.img'"
check "qemu-img convert out (file) is bit-exact" \
    bash -c "qemu-img convert -f raw -O raw '$mem' '$tmp/conv3.raw' && cmp '$tmp/in.raw' '$tmp/conv3.raw'"
check "qemu-io discard (file)" qemu-io -f raw -c "discard 8M 8M" "$mem"
check "nbdinfo --map: punched hole (file)" expect_map "$mem" $((8 << 20)) $((8 << 20)) 3
check "server stops cleanly (file)" stop_server

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
