#!/bin/sh
# `make run`: initialise ./data on first use, print credentials to paste, serve in the foreground.
set -eu
cd "$(dirname "$0")/.."
AMID=./build/amid
DATA=${AMID_DATA:-./data}
LISTEN=${AMID_LISTEN:-127.0.0.1:8773}
if [ ! -f "$DATA/amid.db" ]; then
    creds=$($AMID init --data "$DATA" --listen "$LISTEN")
else
    # The first secret was shown once, at init; issue a fresh key for the first account
    # (replacing the one an earlier `make run` issued) so there is always something to paste.
    account=$($AMID account list --data "$DATA" | grep 'AMID_ACCOUNT_SYSTEM=false' | head -n1 |
        sed 's/.*AMID_ACCOUNT_ID=\([0-9]*\).*/\1/')
    creds=$($AMID key create "$account" --label make-run --replace --data "$DATA" 2>/dev/null)
fi
creds=$(echo "$creds" | sed "s#AWS_ENDPOINT_URL=[^ ]*#AWS_ENDPOINT_URL=http://$LISTEN#")
# The system catalogue: a small bootable image, public, owned by the alias "amid" (once).
$AMID catalog import --data "$DATA" >/dev/null
echo
echo "Paste this into your shell, then use the AWS CLI or SDKs as usual:"
echo
echo "    $creds"
echo
echo "(AWS CLI 2.9 and boto3 1.26, Debian 12's, predate AWS_ENDPOINT_URL: pass --endpoint-url http://$LISTEN)"
echo "A bootable image to start with:  aws ec2 describe-images --owners amid"
echo
exec $AMID serve --data "$DATA" --listen "$LISTEN"
