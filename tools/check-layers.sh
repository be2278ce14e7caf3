#!/bin/sh
# Enforces DESIGN.md's dependency direction: a module includes only its own headers and those of
# the modules below it.
set -eu
cd "$(dirname "$0")/.."
allowed() {
    case "$1" in
    util) echo "util" ;;
    crypto) echo "util crypto" ;;
    db) echo "util db" ;;
    nbd) echo "util nbd" ;;
    vmm) echo "util vmm" ;;
    store) echo "util crypto store" ;;
    vol) echo "util crypto store vol" ;;
    core) echo "util crypto db store vol vmm core" ;;
    api) echo "util crypto core api" ;;
    sched) echo "util crypto core sched" ;;
    daemon) echo "util crypto core api sched nbd vmm daemon" ;;
    cli) echo "util crypto core api daemon nbd cli" ;;
    *) echo "" ;;
    esac
}
fail=0
for dir in src/*/; do
    mod=$(basename "$dir")
    ok=$(allowed "$mod")
    for f in "$dir"*.c "$dir"*.h; do
        [ -f "$f" ] || continue
        for inc in $(sed -n 's/^#include "\([a-z]*\)\/.*/\1/p' "$f" | sort -u); do
            case " $ok " in
            *" $inc "*) ;;
            *)
                echo "layering: $f includes $inc/ (allowed for $mod: $ok)" >&2
                fail=1
                ;;
            esac
        done
    done
done
[ "$fail" -eq 0 ] && echo "layers: clean"
exit "$fail"
