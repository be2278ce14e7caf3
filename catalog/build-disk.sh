#!/bin/bash
# catalog/build-disk.sh -- build amid's system catalogue disk.
#
# Usage:  catalog/build-disk.sh [--force] OUTDIR
#
# Writes OUTDIR/amid-busybox-x86_64.raw (a sparse, exactly 1 GiB, bootable
# x86_64 BIOS disk) and OUTDIR/manifest.json.  Downloaded .debs are kept in
# OUTDIR/cache and reused; when the inputs (this script, catalog/init, the
# package versions) are unchanged and the disk exists, nothing is rebuilt
# ("up to date"), unless --force is given.  Runs as root or not; nothing is
# mounted, no loop devices are used, the host's installed packages are not
# touched (except that missing host tools are apt-get installed when root).
#
# Host tools (Debian packages): mtools syslinux syslinux-common fdisk
# e2fsprogs cpio (plus apt, dpkg, gzip, coreutils).  The guest's busybox and
# kernel come from `apt-get download busybox-static linux-image-*-cloud-amd64`
# unpacked with `dpkg-deb -x`.
#
# Disk layout (MBR, syslinux mbr.bin in the first 440 bytes):
#   p1  1 MiB .. 64 MiB   FAT16 "AMIDBOOT", bootable: syslinux, vmlinuz,
#                         initrd.img (busybox + virtio/acpi modules + /init)
#   p2  64 MiB .. 1 GiB   ext4 "amid-data", mounted at /data read-write
#
# Guest behaviour (catalog/init): loads modules, mounts /data, DHCP on eth0,
# asks the EC2 instance metadata service at 169.254.169.254 (IMDSv2 token via
# PUT, IMDSv1 fallback; every network step time-limited) for the instance id
# and user data, runs user data starting with "#!" once per instance id
# (state in /data/.amid/instances/<id>/), then idles with a shell on ttyS0.
# The ACPI power button (QMP system_powerdown) powers it off cleanly.
#
# Serial console markers (ttyS0, one per line, at the start of the line;
# a stable interface -- do not rename):
#   AMID-BOOT: start                     /init began
#   AMID-BOOT: kernel <release>
#   AMID-BOOT: modules loaded <n>        (AMID-BOOT: module failed <path>)
#   AMID-BOOT: power button <dev>...     (or: power button missing)
#   AMID-BOOT: data mounted <dev>        data partition mounted at /data
#   AMID-BOOT: data unavailable <dev>    (state then kept in /run/amid only)
#   AMID-BOOT: disks vda vdb ...         virtio disks visible as /dev/vdX
#   AMID-MARKER: <line>                  each line of each /data/marker* file
#                                        present at boot (first 4 KiB)
#   AMID-BOOT: network eth0 <ip/len>     (or: network eth0 no-dhcp | network none)
#   AMID-BOOT: imds v2|v1                metadata service answered
#   AMID-BOOT: imds none|skipped         no metadata service / no network
#   AMID-INSTANCE-ID: <id>
#   AMID-USERDATA: begin                 user data script starts; its output
#                                        follows on the console
#   AMID-USERDATA: end rc=<n>
#   AMID-USERDATA: skipped (already ran for <id>)
#   AMID-USERDATA: none | not a script
#   AMID-BOOT: ready                     boot done; shell on the console
#   AMID-BOOT: data unmounted            (or: data remounted read-only / data busy)
#   AMID-BOOT: poweroff                  power button: about to power off
#   AMID-BOOT: shutdown                  poweroff/reboot typed in the guest
#
# Boot by hand:
#   cp --sparse=always OUTDIR/amid-busybox-x86_64.raw /tmp/d.raw
#   qemu-system-x86_64 -accel tcg -m 256 -nographic \
#     -drive file=/tmp/d.raw,format=raw,if=virtio
#
# Environment: SOURCE_DATE_EPOCH (default: the kernel image's mtime) fixes
# timestamps inside the disk; the same inputs give the same sha256.
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export LC_ALL=C TZ=UTC
umask 022

NAME=amid-busybox-x86_64
DISK_SIZE=$((1024 * 1024 * 1024))
SECTOR=512
P1_START=2048                          # 1 MiB
P1_SECTORS=$((63 * 2048))              # 63 MiB  -> ends at 64 MiB
P2_START=$((P1_START + P1_SECTORS))    # 64 MiB
P2_SECTORS=$((DISK_SIZE / SECTOR - P2_START))
KERNEL_META=linux-image-cloud-amd64
WANT_MODULES="virtio_pci virtio_blk virtio_net ext4 button evdev"

FORCE=0
if [ "${1:-}" = "--force" ]; then FORCE=1; shift; fi
if [ $# -ne 1 ] || [ "${1:0:1}" = "-" ]; then
	echo "usage: $0 [--force] OUTDIR" >&2
	exit 2
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CACHE=$OUT/cache
WORK=$OUT/work
DISK=$OUT/$NAME.raw
MANIFEST=$OUT/manifest.json
mkdir -p "$CACHE"

log() { echo "build-disk: $*" >&2; }
die() { echo "build-disk: error: $*" >&2; exit 1; }

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# One build per OUTDIR at a time (tests may run concurrently).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$OUT/.lock"
	flock 9
fi

# ------------------------------------------------------------ host tools --
APT_UPDATED=0
apt_update_once() {
	[ "$APT_UPDATED" -eq 1 ] && return 0
	APT_UPDATED=1
	[ "$IS_ROOT" -eq 1 ] || return 1
	apt-get update -qq >/dev/null 2>&1 || true
}

ensure_tools() {
	local missing=() pair
	for pair in mformat:mtools mcopy:mtools syslinux:syslinux \
		/usr/lib/syslinux/mbr/mbr.bin:syslinux-common sfdisk:fdisk \
		mke2fs:e2fsprogs debugfs:e2fsprogs cpio:cpio dpkg-deb:dpkg apt-get:apt gzip:gzip; do
		local what=${pair%%:*} pkg=${pair#*:}
		if [ "${what:0:1}" = / ]; then
			[ -e "$what" ] && continue
		else
			command -v "$what" >/dev/null 2>&1 && continue
		fi
		case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$IS_ROOT" -eq 1 ] || die "missing host packages (install as root): ${missing[*]}"
	log "installing host packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -qq "${missing[@]}" >/dev/null; then
		apt_update_once
		apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
	fi
}
ensure_tools

# --------------------------------------------------------------- packages --
APT_DL_OPTS=()
[ "$IS_ROOT" -eq 1 ] && APT_DL_OPTS=(-o APT::Sandbox::User=root)

candidate() { # candidate PKG -> version apt would download ('' if unknown)
	apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2; exit }'
}

# fetch_deb PKG [stale-ok] -> prints the path of OUTDIR/cache/PKG_*.deb at
# apt's candidate version, downloading it if needed (older cached versions
# are dropped).  With stale-ok, a cached .deb is used when apt cannot help.
fetch_deb() {
	local pkg=$1 stale=${2:-} ver f got=""
	ver=$(candidate "$pkg")
	for f in "$CACHE/${pkg}"_*.deb; do
		[ -f "$f" ] || continue
		if [ -n "$ver" ] && [ "$(dpkg-deb -f "$f" Version)" = "$ver" ]; then
			echo "$f"
			return 0
		fi
	done
	if [ -n "$ver" ]; then
		log "downloading $pkg $ver"
		if (cd "$CACHE" && apt-get download -q=2 "${APT_DL_OPTS[@]}" "$pkg=$ver" \
			>/dev/null 2>>"$CACHE/apt-download.log"); then
			for f in "$CACHE/${pkg}"_*.deb; do
				[ -f "$f" ] || continue
				if [ "$(dpkg-deb -f "$f" Version)" = "$ver" ]; then got=$f; else rm -f "$f"; fi
			done
			[ -n "$got" ] && { echo "$got"; return 0; }
		fi
	fi
	[ -n "$stale" ] || return 1
	got=$(ls -1 "$CACHE/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
	[ -n "$got" ] || return 1
	log "warning: using cached $(basename "$got") (apt cannot provide $pkg${ver:+ $ver})"
	echo "$got"
}

# The meta package linux-image-cloud-amd64 depends on the concrete
# linux-image-<abi>-cloud-amd64 package: resolve it, then fetch both .debs.
resolve_packages() { # resolve_packages [stale-ok]
	local f
	KPKG=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }' || true)
	if [ -z "$KPKG" ] && [ -n "${1:-}" ]; then
		f=$(ls -1 "$CACHE"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
		[ -n "$f" ] && KPKG=$(dpkg-deb -f "$f" Package)
	fi
	[ -n "$KPKG" ] || return 1
	KDEB=$(fetch_deb "$KPKG" "${1:-}") || return 1
	BBDEB=$(fetch_deb busybox-static "${1:-}") || return 1
}
if ! resolve_packages; then
	if [ "$IS_ROOT" -eq 1 ]; then
		log "refreshing apt package lists"
		apt_update_once || true
	fi
	resolve_packages stale-ok ||
		die "cannot get $KERNEL_META and busybox-static .debs (run apt-get update?); see $CACHE/apt-download.log"
fi
KVERSION=$(dpkg-deb -f "$KDEB" Version)
BBVERSION=$(dpkg-deb -f "$BBDEB" Version)

# ------------------------------------------------------- up-to-date check --
INPUTS_SHA=$( {
	sha256sum "$HERE/build-disk.sh" "$HERE/init" | awk '{print $1}'
	echo "$KPKG $KVERSION busybox-static $BBVERSION ${SOURCE_DATE_EPOCH:-}"
} | sha256sum | awk '{print $1}')

if [ "$FORCE" -eq 0 ] && [ -f "$DISK" ] && [ -f "$MANIFEST" ] &&
	grep -q "\"inputs_sha256\": \"$INPUTS_SHA\"" "$MANIFEST" &&
	[ "$(stat -c %s "$DISK")" -eq "$DISK_SIZE" ]; then
	log "up to date: $DISK"
	exit 0
fi

# ----------------------------------------------------------------- unpack --
rm -rf "$WORK"
mkdir -p "$WORK/kpkg" "$WORK/bbpkg" "$WORK/initrd" "$WORK/boot" "$WORK/data"
dpkg-deb -x "$KDEB" "$WORK/kpkg"
dpkg-deb -x "$BBDEB" "$WORK/bbpkg"

VMLINUZ=$(ls -1 "$WORK"/kpkg/boot/vmlinuz-* | head -n 1)
[ -f "$VMLINUZ" ] || die "no vmlinuz in $KDEB"
KREL=${VMLINUZ##*/vmlinuz-}
if [ -d "$WORK/kpkg/lib/modules/$KREL" ]; then
	KBASE=$WORK/kpkg
elif [ -d "$WORK/kpkg/usr/lib/modules/$KREL" ]; then
	KBASE=$WORK/kpkg/usr
else
	die "no modules for $KREL in $KDEB"
fi
KMOD=$KBASE/lib/modules/$KREL
BB=$WORK/bbpkg/bin/busybox
[ -x "$BB" ] || die "no busybox in $BBDEB"

SDE=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$VMLINUZ")}
export SOURCE_DATE_EPOCH=$SDE
log "kernel $KPKG $KVERSION ($KREL), busybox $BBVERSION"

# The package ships no modules.dep (depmod runs in its postinst): generate it
# in the unpacked tree with the downloaded busybox's depmod.
if [ ! -s "$KMOD/modules.dep" ]; then
	"$BB" depmod -b "$KBASE" "$KREL" || die "depmod failed"
fi

# Module closure in load order (dependencies first); built-ins are skipped.
declare -A MOD_PATH=() MOD_DEPS=() MOD_SEEN=()
while IFS=: read -r path deps; do
	m=${path##*/}
	m=${m%%.ko*}
	m=${m//-/_}
	MOD_PATH[$m]=$path
	MOD_DEPS[$m]=$deps
done <"$KMOD/modules.dep"
is_builtin() {
	grep -Eq "/$1\.ko$|/${1//_/-}\.ko$" "$KMOD/modules.builtin" 2>/dev/null
}
LOAD_ORDER=()
add_module() { # add_module NAME
	local m=${1//-/_} d dn
	[ -n "${MOD_SEEN[$m]:-}" ] && return 0
	MOD_SEEN[$m]=1
	if [ -z "${MOD_PATH[$m]:-}" ]; then
		is_builtin "$m" && return 0
		die "kernel module $m neither built in nor in modules.dep"
	fi
	for d in ${MOD_DEPS[$m]}; do
		dn=${d##*/}
		add_module "${dn%%.ko*}"
	done
	LOAD_ORDER+=("${MOD_PATH[$m]}")
}
for m in $WANT_MODULES; do add_module "$m"; done

# ------------------------------------------------------------- initramfs --
R=$WORK/initrd
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc/amid,proc,sys,dev,run,tmp,data,root,usr/share/udhcpc}
chmod 1777 "$R/tmp"
chmod 0700 "$R/root"
install -m 0755 "$BB" "$R/bin/busybox"
# Applet links, from the busybox we ship (it is a static x86_64 binary).
while read -r applet; do
	[ -n "$applet" ] || continue
	[ -e "$R/$applet" ] || [ -L "$R/$applet" ] && continue
	mkdir -p "$R/$(dirname "$applet")"
	ln -s /bin/busybox "$R/$applet"
done < <("$BB" --list-full)
[ -L "$R/bin/sh" ] || die "busybox has no sh applet"
install -m 0755 "$HERE/init" "$R/init"

: >"$R/etc/amid/modules"
for p in "${LOAD_ORDER[@]}"; do
	mkdir -p "$R/lib/modules/$KREL/$(dirname "$p")"
	cp "$KMOD/$p" "$R/lib/modules/$KREL/$p"
	echo "$p" >>"$R/etc/amid/modules"
done
cp "$KMOD/modules.dep" "$KMOD/modules.builtin" "$R/lib/modules/$KREL/" 2>/dev/null || true

cat >"$R/etc/amid/build" <<EOF
name=$NAME
kernel_package=$KPKG
kernel_version=$KVERSION
kernel_release=$KREL
busybox_version=$BBVERSION
source_date_epoch=$SDE
EOF
cat >"$R/etc/inittab" <<'EOF'
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/reboot
::shutdown:/init shutdown
EOF
cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
tty:x:5:
EOF
echo "root::0:0:99999:7:::" >"$R/etc/shadow"
chmod 0600 "$R/etc/shadow"
echo amid >"$R/etc/hostname"
cat >"$R/etc/profile" <<'EOF'
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export PS1='amid:\w# '
EOF
cat >"$R/etc/amid/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc event script: configure the interface, default route, resolv.conf.
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound|renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
	for r in $router; do
		ip route replace default via "$r" dev "$interface"
		break
	done
	: >/etc/resolv.conf
	[ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
	for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
	;;
esac
exit 0
EOF
chmod 0755 "$R/etc/amid/udhcpc.script"
ln -s /etc/amid/udhcpc.script "$R/usr/share/udhcpc/default.script"
: >"$R/etc/resolv.conf"

# newc cpio entry for /dev/console (a char device: no mknod, so no root).
cpio_dev_console() {
	local name="dev/console" namesize=12 hdr pad
	hdr=$(printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
		1 $((0x2180)) 0 0 1 "$SDE" 0 0 0 5 1 "$namesize" 0)
	printf '%s%s\0' "$hdr" "$name"
	pad=$(((4 - (110 + namesize) % 4) % 4))
	head -c "$pad" /dev/zero
	hdr=$(printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
		0 0 0 0 1 0 0 0 0 0 0 11 0)
	printf '%s%s\0' "$hdr" "TRAILER!!!"
	head -c $(((4 - (110 + 11) % 4) % 4)) /dev/zero
	# pad the archive to a 512-byte multiple like cpio does
	local total=$((110 + namesize + pad + 110 + 11 + (4 - (110 + 11) % 4) % 4))
	head -c $(((512 - total % 512) % 512)) /dev/zero
}

find "$R" -exec touch -h -d "@$SDE" {} +
INITRD=$WORK/boot/initrd.img
{
	cpio_dev_console
	(cd "$R" && find . -mindepth 1 | sort |
		cpio -o -H newc -R 0:0 --reproducible --quiet)
} | gzip -n -9 >"$INITRD"

# ------------------------------------------------------------- boot files --
cp "$VMLINUZ" "$WORK/boot/vmlinuz"
cat >"$WORK/boot/syslinux.cfg" <<'EOF'
SERIAL 0 115200
DEFAULT amid
PROMPT 0
TIMEOUT 0
LABEL amid
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=tty0 console=ttyS0,115200n8 quiet panic=10
EOF
cp "$R/etc/amid/build" "$WORK/boot/amid-build.txt"
touch -d "@$SDE" "$WORK"/boot/*

# ------------------------------------------------------------------- disk --
TMP=$DISK.tmp
rm -f "$TMP"
truncate -s "$DISK_SIZE" "$TMP"
sfdisk --no-reread --no-tell-kernel -q "$TMP" >/dev/null <<EOF
label: dos
label-id: 0x414d4944
start=$P1_START, size=$P1_SECTORS, type=6, bootable
start=$P2_START, size=$P2_SECTORS, type=83
EOF
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$TMP" bs=440 count=1 conv=notrunc status=none

# FAT boot partition via mtools at its byte offset; syslinux on the file.
export MTOOLS_SKIP_CHECK=1 MTOOLSRC=/dev/null
P1_OFF=$((P1_START * SECTOR))
mformat -i "$TMP@@$P1_OFF" -T "$P1_SECTORS" -h 64 -s 32 -H "$P1_START" \
	-N 414d4944 -v AMIDBOOT ::
syslinux --install --offset "$P1_OFF" "$TMP"
mcopy -m -i "$TMP@@$P1_OFF" "$WORK/boot/vmlinuz" "$WORK/boot/initrd.img" \
	"$WORK/boot/syslinux.cfg" "$WORK/boot/amid-build.txt" ::/

# ext4 data partition in its own file, then copied (sparsely) into place.
mkdir -p "$WORK/data/.amid"
cat >"$WORK/data/README" <<'EOF'
amid system catalogue disk: data partition (mounted at /data).
/data/.amid/           boot state (instance ids whose user data ran)
/data/marker*          printed as "AMID-MARKER: <line>" on every boot
EOF
find "$WORK/data" -exec touch -h -d "@$SDE" {} +
UUID=$(echo "$INPUTS_SHA" | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
DATAIMG=$WORK/data.ext4
rm -f "$DATAIMG"
truncate -s $((P2_SECTORS * SECTOR)) "$DATAIMG"
E2FSPROGS_FAKE_TIME=$SDE mke2fs -q -F -t ext4 -L amid-data -U "$UUID" -m 0 \
	-E "root_owner=0:0,hash_seed=$UUID,nodiscard" -d "$WORK/data" "$DATAIMG"
# mke2fs -d copies the source files' ctime (always "now") and owner (the
# builder's): pin both, so root and non-root builds give the same bytes.
(cd "$WORK/data" && find . -mindepth 1 | sort | sed 's|^\.||' |
	while read -r p; do printf 'sif %s ctime @%s\nsif %s uid 0\nsif %s gid 0\n' "$p" "$SDE" "$p" "$p"; done) >"$WORK/debugfs.cmds"
debugfs -w -f "$WORK/debugfs.cmds" "$DATAIMG" >/dev/null 2>&1 || die "debugfs failed"
dd if="$DATAIMG" of="$TMP" bs=1M seek=$((P2_START * SECTOR / 1048576)) \
	conv=notrunc,sparse status=none
rm -f "$DATAIMG"

[ "$(stat -c %s "$TMP")" -eq "$DISK_SIZE" ] || die "disk is not exactly $DISK_SIZE bytes"
SHA=$(sha256sum "$TMP" | awk '{print $1}')
mv -f "$TMP" "$DISK"

BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat >"$MANIFEST.tmp" <<EOF
{
  "name": "$NAME",
  "description": "amid system catalogue disk: Debian cloud kernel + busybox, serial console, IMDS user data",
  "architecture": "x86_64",
  "disk": "$NAME.raw",
  "format": "raw",
  "size_bytes": $DISK_SIZE,
  "sha256": "$SHA",
  "boot_mode": "legacy-bios",
  "partition_table": "mbr",
  "partitions": [
    {"number": 1, "start_bytes": $P1_OFF, "size_bytes": $((P1_SECTORS * SECTOR)), "filesystem": "vfat", "label": "AMIDBOOT"},
    {"number": 2, "start_bytes": $((P2_START * SECTOR)), "size_bytes": $((P2_SECTORS * SECTOR)), "filesystem": "ext4", "label": "amid-data", "uuid": "$UUID"}
  ],
  "console": "ttyS0",
  "kernel_package": "$KPKG",
  "kernel_package_version": "$KVERSION",
  "kernel_release": "$KREL",
  "busybox_package": "busybox-static",
  "busybox_version": "$BBVERSION",
  "kernel_modules": [$(printf '"%s",' "${LOAD_ORDER[@]##*/}" | sed 's/,$//')],
  "build_date": "$BUILD_DATE",
  "source_date_epoch": $SDE,
  "inputs_sha256": "$INPUTS_SHA"
}
EOF
mv -f "$MANIFEST.tmp" "$MANIFEST"
rm -rf "$WORK"
log "wrote $DISK ($SHA)"
log "wrote $MANIFEST"
