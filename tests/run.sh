#!/bin/sh
# Runs every test: the C unit tests (ASan+UBSan build) and the integration tests (pytest against
# the real daemon, ASan build), then prints one summary line: "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
ASAN=${ASAN:-build-asan}
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

unit_log=$(mktemp)
meson test -C "$ASAN" --print-errorlogs --num-processes 2 2>&1 | tee "$unit_log" |
    grep -E '^ *[0-9]+/[0-9]+ |FAIL|ERROR' || true
u_ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$unit_log" | tail -n1)
u_fail=$(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' "$unit_log" | tail -n1)
u_timeout=$(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' "$unit_log" | tail -n1)
u_ok=${u_ok:-0}
u_fail=$(( ${u_fail:-0} + ${u_timeout:-0} ))
if ! grep -q '^Ok:' "$unit_log"; then
    echo "unit tests did not run" >&2
    u_fail=$((u_fail + 1))
fi
rm -f "$unit_log"

py_log=$(mktemp)
AMID_BIN="$PWD/$ASAN/amid" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration \
    "$@" 2>&1 | tee "$py_log"
p_pass=$(tail -n 5 "$py_log" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' | tail -n1)
p_fail=$(tail -n 5 "$py_log" | grep -oE '[0-9]+ (failed|errors?)' | awk '{s += $1} END {print s + 0}')
if ! tail -n 5 "$py_log" | grep -qE '[0-9]+ (passed|failed)'; then
    p_fail=$(( ${p_fail:-0} + 1 ))
fi
rm -f "$py_log"
pass=$(( u_ok + ${p_pass:-0} ))
fail=$(( u_fail + ${p_fail:-0} ))
echo "unit: $u_ok passed, $u_fail failed; integration: ${p_pass:-0} passed, ${p_fail:-0} failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
