#!/bin/sh
# bench/api: signed EC2 DescribeRegions requests per second from parallel keep-alive clients (wrk
# replaying one SigV4-signed request), amid against moto_server in the same run, with the ratio.
# Usage: bench/api/run.sh [SECONDS] [CONNECTIONS]
set -eu
cd "$(dirname "$0")/../.."
DUR=${1:-10}
CONNS=${2:-32}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
make build >/dev/null
tmp=$(mktemp -d)
trap 'kill $apid $mpid 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
apid=""
mpid=""
creds=$(./build/amid init --data "$tmp/data" --format json 2>/dev/null)
key=$(echo "$creds" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKeyId"])')
secret=$(echo "$creds" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["SecretAccessKey"])')
aport=18873
mport=18874
./build/amid serve --data "$tmp/data" --listen 127.0.0.1:$aport 2>"$tmp/amid.log" &
apid=$!
sleep 0.5

run() { # name port
    /usr/bin/python3 bench/api/sign.py "127.0.0.1:$2" "$key" "$secret" > "$tmp/$1.lua"
    wrk -t2 -c"$CONNS" -d"${DUR}s" -s "$tmp/$1.lua" "http://127.0.0.1:$2/" 2>&1 |
        sed -n 's/^RESULT //p'
}

echo "amid: DescribeRegions, ${CONNS} connections, ${DUR}s"
a=$(run amid $aport)
echo "  amid  $a"
if command -v moto_server >/dev/null 2>&1; then
    moto_server -p $mport >"$tmp/moto.log" 2>&1 &
    mpid=$!
    for i in $(seq 50); do
        curl -s -o /dev/null "http://127.0.0.1:$mport/" 2>/dev/null && break
        sleep 0.2
    done
    m=$(run moto $mport)
    echo "  moto  $m"
    ar=$(echo "$a" | sed 's/.*rps=\([0-9.]*\).*/\1/')
    mr=$(echo "$m" | sed 's/.*rps=\([0-9.]*\).*/\1/')
    awk -v a="$ar" -v m="$mr" 'BEGIN { printf "ratio amid/moto: %.1fx (target >= 50x)\n", a / m }'
else
    echo "moto_server not found (it lives in the machine's default python3): no ratio"
fi
