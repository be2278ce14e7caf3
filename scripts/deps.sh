#!/bin/sh
# Installs the Debian packages amid needs to build, run and test, when any is missing.
# Idempotent and silent when everything is present.  Usage: scripts/deps.sh [build|run|all]
#   build  what compiles amid
#   run    and what the daemon runs: QEMU for instances (OVMF for BootMode uefi), qemu-img for
#          imports of qcow2, vmdk, vhdx and vpc images
#   all    and what the tests use
set -eu
build="meson ninja-build pkg-config gcc libc6-dev libmicrohttpd-dev libsqlite3-dev libssl-dev
libjansson-dev libzstd-dev libcurl4-openssl-dev"
run="qemu-system-x86 qemu-utils ovmf"
test="libcmocka-dev python3-pytest python3-boto3 awscli clang-format libnbd-bin nbdkit
openssh-client openssl mtools syslinux syslinux-common fdisk e2fsprogs cpio busybox-static"
case "${1:-all}" in
build) want="$build" ;;
run) want="$build $run" ;;
*) want="$build $run $test" ;;
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
