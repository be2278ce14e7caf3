#!/bin/sh
# bench/images: DescribeImages (Owners=self, MaxResults=100, a name filter) with 10,000 images
# across 10 accounts, from parallel keep-alive clients (wrk; every connection cycles through the
# 10 accounts' signed requests), amid against moto_server holding the same images under the same
# account ids, in one run: requests/s, p99 latency, server memory (RSS of the server's process
# tree after seeding and load), and the ratios against the issue's targets.  amid runs as
# configured by default (repeated questions answered from its response cache) and once more
# with --response-cache 0 (every request answered from the database), reported beside it.
# Usage: bench/images/run.sh [IMAGES_PER_ACCOUNT] [SECONDS] [CONNECTIONS]
set -eu
cd "$(dirname "$0")/../.."
PER=${1:-1000}
DUR=${2:-10}
CONNS=${3:-16}
# wrk's default 2 s timeout drops slow requests from the latency figures; give both sides the same
# generous one so p99 is honest.
TIMEOUT=30s
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
make build >/dev/null
tmp=$(mktemp -d)
apid=""
mpid=""
trap 'kill $apid $mpid 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
echo "load before: $(uptime)"
./build/amid init --data "$tmp/data" --format json > "$tmp/a0.json" 2>/dev/null
for i in 1 2 3 4 5 6 7 8 9; do
    ./build/amid account create "bench$i" --data "$tmp/data" --format json \
        >"$tmp/a$i.json" 2>/dev/null
done
/usr/bin/python3 - "$tmp" > "$tmp/creds.json" <<'PY'
import json, sys
print(json.dumps([[json.load(open('%s/a%d.json' % (sys.argv[1], i)))[k]
                   for k in ('AccessKeyId', 'SecretAccessKey', 'AccountId')] for i in range(10)]))
PY
aport=18973
mport=18974
./build/amid serve --data "$tmp/data" --listen 127.0.0.1:$aport --quiet 2>"$tmp/amid.log" &
apid=$!
sleep 0.5

# rss_kb PID: resident memory of PID and all its descendants, in KiB.
rss_kb() {
    ps -e -o pid=,ppid=,rss= | awk -v root="$1" '
        { ppid[$1] = $2; rss[$1] = $3 }
        END { for (p in rss) { q = p; while (q != "" && q != 0 && q != root) q = ppid[q]
                               if (q == root) s += rss[p] }
              print s + 0 }'
}
# hwm_kb PID: peak resident memory (VmHWM) of PID itself, in KiB.
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# cpu_ticks PID: user + system CPU time PID (all its threads) has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# load NAME PORT PID [--moto]: the wrk run; prints its RESULT line plus the server's CPU time per
# request (a figure the other load on a shared machine does not change much).
load() {
    name=$1 port=$2 pid=$3
    shift 3
    /usr/bin/python3 bench/images/sign.py "127.0.0.1:$port" "$tmp/creds.json" "$@" >"$tmp/$name.lua"
    c0=$(cpu_ticks $pid)
    r=$(wrk -t2 -c"$CONNS" -d"${DUR}s" --timeout $TIMEOUT -s "$tmp/$name.lua" \
        "http://127.0.0.1:$port/" | sed -n 's/^RESULT //p')
    c1=$(cpu_ticks $pid)
    echo "$r" | awk -v t=$((c1 - c0)) -v hz="$hz" '{ n = $0; sub(/.*requests=/, "", n); n += 0
        printf "%s server_cpu_ms_per_request=%.2f\n", $0, (n > 0 ? 1000 * t / hz / n : 0) }'
}

t0=$(date +%s)
/usr/bin/python3 bench/images/seed.py seed "http://127.0.0.1:$aport" "$tmp/creds.json" "$PER"
echo "amid: seeded $((PER * 10)) images in $(($(date +%s) - t0)) s"
/usr/bin/python3 bench/images/seed.py verify "http://127.0.0.1:$aport" "$tmp/creds.json" "$PER"
amem0=$(rss_kb $apid)
echo "amid: DescribeImages, $CONNS connections, ${DUR}s; load: $(uptime | sed 's/.*load/load/')"
a=$(load amid $aport $apid)
amem=$(rss_kb $apid)
echo "amid  $a rss_kb=$amem (after seeding, before load: $amem0; peak: $(hwm_kb $apid))"
# The same data served without the response cache: what every request costs when it has to be
# answered from the database (the first asking of each question, or after every write).
kill $apid
wait $apid 2>/dev/null || true
./build/amid serve --data "$tmp/data" --listen 127.0.0.1:$aport --quiet --response-cache 0 \
    2>>"$tmp/amid.log" &
apid=$!
for i in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$aport/" 2>/dev/null && break
    sleep 0.1
done
echo "amid without the response cache (--response-cache 0): DescribeImages, $CONNS connections, ${DUR}s"
n=$(load amid-nocache $aport $apid)
echo "amid-nocache  $n rss_kb=$(rss_kb $apid)"
if ! command -v moto_server >/dev/null 2>&1; then
    echo "moto_server not found (it lives in the machine's default python3): no ratios"
    echo "load after: $(uptime)"
    exit 0
fi
moto_server -p $mport >"$tmp/moto.log" 2>&1 &
mpid=$!
for i in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$mport/" 2>/dev/null && break
    sleep 0.2
done
t0=$(date +%s)
/usr/bin/python3 bench/images/seed.py seed "http://127.0.0.1:$mport" "$tmp/creds.json" "$PER" --moto
echo "moto: seeded $((PER * 10)) images in $(($(date +%s) - t0)) s"
/usr/bin/python3 bench/images/seed.py verify "http://127.0.0.1:$mport" "$tmp/creds.json" "$PER" \
    --moto
mmem0=$(rss_kb $mpid)
echo "moto: DescribeImages, $CONNS connections, ${DUR}s; load: $(uptime | sed 's/.*load/load/')"
m=$(load moto $mport $mpid --moto)
mmem=$(rss_kb $mpid)
echo "moto  $m rss_kb=$mmem (after seeding, before load: $mmem0; peak: $(hwm_kb $mpid))"
echo "load after: $(uptime)"
field() { echo "$1" | sed -n "s/.*$2=\([0-9.]*\).*/\1/p"; }
awk -v a="$(field "$a" rps)" -v m="$(field "$m" rps)" -v ap="$(field "$a" p99_ms)" \
    -v mp="$(field "$m" p99_ms)" -v ae="$(field "$a" errors)" -v me="$(field "$m" errors)" \
    -v ac="$(field "$a" server_cpu_ms_per_request)" \
    -v mc="$(field "$m" server_cpu_ms_per_request)" -v ncpu="$(nproc)" \
    -v am="$amem" -v mm="$mmem" -v n="$(field "$n" rps)" -v np="$(field "$n" p99_ms)" \
    -v nc="$(field "$n" server_cpu_ms_per_request)" 'BEGIN {
    ok = "met"; no = "NOT met"
    printf "amid: %.0f req/s (target >= 1000: %s), p99 %.2f ms (target <= 50: %s), %d errors\n",
        a, (a >= 1000 ? ok : no), ap, (ap <= 50 ? ok : no), ae
    printf "moto: %.1f req/s, p99 %.2f ms, %d errors\n", m, mp, me
    printf "amid without the response cache: %.0f req/s, p99 %.2f ms, server CPU %.2f ms/request: %.0fx moto\n",
        n, np, nc, (m > 0 ? n / m : 0)
    printf "server CPU per request: amid %.2f ms (<= %.0f req/s on %d idle CPUs), moto %.1f ms\n",
        ac, (ac > 0 ? ncpu * 1000 / ac : 0), ncpu, mc
    r = (m > 0 ? a / m : 0)
    printf "ratio throughput amid/moto: %.0fx (target >= 1000x: %s)\n", r, (r >= 1000 ? ok : no)
    printf "ratio p99 moto/amid: %.0fx\n", (ap > 0 ? mp / ap : 0)
    printf "ratio memory amid/moto: %.3f (%d / %d KiB; target <= 0.20: %s)\n", am / mm, am, mm,
        (am / mm <= 0.2 ? ok : no) }'
