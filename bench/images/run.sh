#!/bin/sh
# bench/images: DescribeImages (Owners=self, MaxResults=100, a name filter) with 10,000 images
# across 10 accounts, from parallel keep-alive clients (wrk), amid against moto_server holding
# the same images, in one run: requests/s, p99 latency, daemon memory, and the ratios.
# Usage: bench/images/run.sh [IMAGES_PER_ACCOUNT] [SECONDS] [CONNECTIONS]
set -eu
cd "$(dirname "$0")/../.."
PER=${1:-1000}
DUR=${2:-10}
CONNS=${3:-16}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
make build >/dev/null
tmp=$(mktemp -d)
apid=""
mpid=""
trap 'kill $apid $mpid 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
./build/amid init --data "$tmp/data" --format json > "$tmp/a0.json" 2>/dev/null
for i in 1 2 3 4 5 6 7 8 9; do
    ./build/amid account create "bench$i" --data "$tmp/data" --format json >"$tmp/a$i.json" 2>/dev/null
done
/usr/bin/python3 - "$tmp" > "$tmp/creds.json" <<'PY'
import json, sys
print(json.dumps([[json.load(open('%s/a%d.json' % (sys.argv[1], i)))[k]
                   for k in ('AccessKeyId', 'SecretAccessKey')] for i in range(10)]))
PY
key=$(/usr/bin/python3 -c "import json;print(json.load(open('$tmp/creds.json'))[0][0])")
secret=$(/usr/bin/python3 -c "import json;print(json.load(open('$tmp/creds.json'))[0][1])")
aport=18973
mport=18974
./build/amid serve --data "$tmp/data" --listen 127.0.0.1:$aport --quiet 2>"$tmp/amid.log" &
apid=$!
sleep 0.5
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
t0=$(date +%s)
/usr/bin/python3 bench/images/seed.py "http://127.0.0.1:$aport" "$tmp/creds.json" "$PER"
echo "amid: seeded $((PER * 10)) images in $(( $(date +%s) - t0 )) s"
/usr/bin/python3 bench/images/sign.py "127.0.0.1:$aport" "$key" "$secret" >"$tmp/amid.lua"
a=$(wrk -t2 -c"$CONNS" -d"${DUR}s" -s "$tmp/amid.lua" "http://127.0.0.1:$aport/" | sed -n 's/^RESULT //p')
amem=$(rss $apid)
echo "amid  $a rss_kb=$amem"
if ! command -v moto_server >/dev/null 2>&1; then
    echo "moto_server not found (it lives in the machine's default python3): no ratios"
    exit 0
fi
moto_server -p $mport >"$tmp/moto.log" 2>&1 &
mpid=$!
for i in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$mport/" 2>/dev/null && break
    sleep 0.2
done
t0=$(date +%s)
/usr/bin/python3 bench/images/seed.py "http://127.0.0.1:$mport" "$tmp/creds.json" "$PER"
echo "moto: seeded $((PER * 10)) images in $(( $(date +%s) - t0 )) s"
/usr/bin/python3 bench/images/sign.py "127.0.0.1:$mport" "$key" "$secret" >"$tmp/moto.lua"
m=$(wrk -t2 -c"$CONNS" -d"${DUR}s" --timeout 30s -s "$tmp/moto.lua" "http://127.0.0.1:$mport/" | sed -n 's/^RESULT //p')
mmem=$(rss $mpid)
echo "moto  $m rss_kb=$mmem"
ar=$(echo "$a" | sed 's/.*rps=\([0-9.]*\).*/\1/')
mr=$(echo "$m" | sed 's/.*rps=\([0-9.]*\).*/\1/')
awk -v a="$ar" -v m="$mr" -v am="$amem" -v mm="$mmem" 'BEGIN {
    printf "ratio throughput amid/moto: %.0fx (target >= 1000x)\n", (m > 0 ? a / m : 0);
    printf "ratio memory amid/moto: %.2f (target <= 0.20)\n", am / mm }'
