#!/bin/sh
# Installs the Debian packages amid needs to build, run and test, when any is missing.
# Idempotent and silent when everything is present.  Usage: scripts/deps.sh [build|test|all]
set -eu
build="meson ninja-build pkg-config gcc libc6-dev libmicrohttpd-dev libsqlite3-dev libssl-dev
libjansson-dev libzstd-dev libcurl4-openssl-dev"
test="libcmocka-dev python3-pytest python3-boto3 awscli clang-format qemu-utils libnbd-bin
nbdkit qemu-system-x86 openssh-client openssl mtools syslinux syslinux-common fdisk e2fsprogs cpio busybox-static"
case "${1:-all}" in
build) want="$build" ;;
*) want="$build $test" ;;
esac
missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
echo "amid: installing Debian packages:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
