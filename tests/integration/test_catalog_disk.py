"""Builds amid's system catalogue disk and boots it in QEMU (TCG).

Boot 1: fake IMDS (IMDSv2) whose user data writes /data/marker-test and
        echoes a line -> user data runs (rc=0), QMP system_powerdown powers
        the guest off cleanly within seconds.
Boot 2: same disk, a new instance id and an extra blank disk -> the marker
        written by boot 1 is printed (data partition persisted), the new
        instance's user data runs and can write to /dev/vdb.
Boot 3: same instance id as boot 2 -> user data is not run again.
Boot 4: network with no IMDS at all (restrict=on) -> boot does not hang.

The disk is built into catalog/out/ (reused when up to date) and copied
sparsely to tmp_path before booting, so the build output stays pristine.
"""

import hashlib
import json
import os
import re
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guest_helpers import (  # noqa: E402
    FakeImds,
    QemuGuest,
    build_catalog_disk,
    ensure_qemu,
    make_blank_disk,
    sparse_copy,
)

GiB = 1024 ** 3
BOOT_TIMEOUT = 60          # seconds from QEMU start to "AMID-BOOT: ready"
POWEROFF_TIMEOUT = 10      # seconds from system_powerdown to QEMU exit

IID1 = "i-0a1b2c3d4e5f60001"
IID2 = "i-0a1b2c3d4e5f60002"
MARKER = f"written-by-{IID1}-boot1"

USER_DATA_1 = f"""#!/bin/sh
echo "{MARKER}" > /data/marker-test
sync
echo "USERDATA-ECHO: hello from user data on $(hostname)"
exit 0
"""

USER_DATA_2 = """#!/bin/sh
echo "USERDATA-ECHO: second instance sees $(cat /data/marker-test)"
echo amid-extra-disk-ok | dd of=/dev/vdb conv=fsync 2>/dev/null
exit 3
"""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(8 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def _wait_in_order(vm, patterns, timeout):
    """Waits for each regex in turn (each must come after the previous)."""
    deadline = time.monotonic() + timeout
    for pat in patterns:
        vm.console.wait_for(pat, timeout=max(0.1, deadline - time.monotonic()))
    text = vm.console.text
    pos = 0
    for pat in patterns:
        m = re.compile(pat, re.MULTILINE).search(text, pos)
        assert m, f"/{pat}/ out of order in console:\n{text[-3000:]}"
        pos = m.end()
    return text


def _power_off(vm):
    t = time.monotonic()
    vm.console.mark()
    vm.qmp("system_powerdown")
    vm.console.wait_for(r"^AMID-BOOT: poweroff$", timeout=POWEROFF_TIMEOUT)
    rc = vm.wait_exit(POWEROFF_TIMEOUT)
    took = time.monotonic() - t
    assert rc == 0, f"QEMU exit code {rc}"
    assert took < POWEROFF_TIMEOUT
    assert "AMID-BOOT: data unmounted" in vm.console.text
    return took


def _check_layout(disk: Path, manifest: dict):
    st = os.stat(disk)
    assert st.st_size == GiB == manifest["size_bytes"]
    assert st.st_blocks * 512 < 256 * 1024 * 1024, "disk should be sparse"
    with open(disk, "rb") as fh:
        mbr = fh.read(512)
    assert mbr[510:512] == b"\x55\xaa"
    mbr_bin = Path("/usr/lib/syslinux/mbr/mbr.bin")
    if mbr_bin.exists():
        code = mbr_bin.read_bytes()[:440]
        assert mbr[:len(code)] == code, "syslinux mbr.bin not in the first 440 bytes"
    parts = []
    for i in range(4):
        e = mbr[446 + 16 * i: 446 + 16 * (i + 1)]
        boot, ptype = e[0], e[4]
        start, count = struct.unpack("<II", e[8:16])
        parts.append((boot, ptype, start * 512, count * 512))
    (b1, t1, s1, n1), (b2, t2, s2, n2) = parts[0], parts[1]
    assert b1 == 0x80 and t1 in (0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E)
    assert 48 * 2**20 <= n1 <= 64 * 2**20
    assert b2 == 0 and t2 == 0x83 and s2 >= s1 + n1 and s2 + n2 == GiB
    assert parts[2][3] == 0 and parts[3][3] == 0
    with open(disk, "rb") as fh:
        fh.seek(s1)
        vbr = fh.read(512)
        fh.seek(s2 + 1024 + 0x38)
        ext_magic = fh.read(2)
    assert vbr[510:512] == b"\x55\xaa" and b"FAT" in vbr[0x36:0x3E]
    assert ext_magic == b"\x53\xef", "no ext4 superblock on partition 2"
    mp = manifest["partitions"]
    assert (mp[0]["start_bytes"], mp[0]["size_bytes"]) == (s1, n1)
    assert (mp[1]["start_bytes"], mp[1]["size_bytes"]) == (s2, n2)


def test_catalog_disk_boot_userdata_poweroff_persistence(tmp_path):
    t_start = time.monotonic()
    ensure_qemu()
    src = build_catalog_disk()
    manifest = json.loads((src.parent / "manifest.json").read_text())
    for key in ("kernel_package", "kernel_package_version", "busybox_version",
                "build_date", "sha256"):
        assert manifest.get(key), f"manifest lacks {key}"
    assert manifest["kernel_package"].startswith("linux-image-")
    assert manifest["kernel_package"].endswith("-cloud-amd64")
    assert manifest["sha256"] == _sha256(src)
    _check_layout(src, manifest)

    disk = sparse_copy(src, tmp_path / "root.raw")
    extra = make_blank_disk(tmp_path / "extra.raw", 16 * 2**20)
    timings = {}

    # ---- boot 1: fresh instance, IMDSv2 user data writes the marker ----
    imds1 = FakeImds(tmp_path / "imds1", IID1, user_data=USER_DATA_1, imdsv2="required")
    with QemuGuest(disk, tmp_path / "vm1", imds=imds1) as vm:
        text = _wait_in_order(vm, [
            r"^AMID-BOOT: start$",
            r"^AMID-BOOT: data mounted /dev/vda2$",
            r"^AMID-BOOT: network eth0 169\.254\.\d+\.\d+/16$",
            r"^AMID-BOOT: imds v2$",
            rf"^AMID-INSTANCE-ID: {IID1}$",
            r"^AMID-USERDATA: begin$",
            r"^USERDATA-ECHO: hello from user data on amid$",
            r"^AMID-USERDATA: end rc=0$",
            r"^AMID-BOOT: ready$",
        ], BOOT_TIMEOUT)
        timings["boot1_ready"] = vm.elapsed()
        assert "AMID-MARKER:" not in text
        assert "AMID-BOOT: power button /dev/input/event" in text
        reqs = imds1.requests()
        assert reqs[0]["method"] == "PUT" and reqs[0]["path"] == "/latest/api/token"
        assert reqs[0]["ttl"] == "21600" and reqs[0]["status"] == 200
        gets = [r for r in reqs if r["method"] == "GET"]
        assert {r["path"] for r in gets} >= {"/latest/meta-data/instance-id",
                                               "/latest/user-data"}
        assert all(r["token"] and r["status"] == 200 for r in gets), reqs
        timings["boot1_poweroff"] = _power_off(vm)

    # ---- boot 2: new instance id; the marker persisted; extra disk ----
    imds2 = FakeImds(tmp_path / "imds2", IID2, user_data=USER_DATA_2)
    with QemuGuest(disk, tmp_path / "vm2", imds=imds2, extra_disks=[extra]) as vm:
        _wait_in_order(vm, [
            r"^AMID-BOOT: start$",
            r"^AMID-BOOT: data mounted /dev/vda2$",
            r"^AMID-BOOT: disks vda vdb$",
            rf"^AMID-MARKER: {MARKER}$",
            rf"^AMID-INSTANCE-ID: {IID2}$",
            r"^AMID-USERDATA: begin$",
            rf"^USERDATA-ECHO: second instance sees {MARKER}$",
            r"^AMID-USERDATA: end rc=3$",
            r"^AMID-BOOT: ready$",
        ], BOOT_TIMEOUT)
        timings["boot2_ready"] = vm.elapsed()
        timings["boot2_poweroff"] = _power_off(vm)
    assert extra.read_bytes()[:19] == b"amid-extra-disk-ok\n"

    # ---- boot 3: same instance id again -> user data not re-run ----
    imds3 = FakeImds(tmp_path / "imds3", IID2, user_data=USER_DATA_2)
    with QemuGuest(disk, tmp_path / "vm3", imds=imds3) as vm:
        text = _wait_in_order(vm, [
            rf"^AMID-MARKER: {MARKER}$",
            rf"^AMID-INSTANCE-ID: {IID2}$",
            rf"^AMID-USERDATA: skipped \(already ran for {IID2}\)$",
            r"^AMID-BOOT: ready$",
        ], BOOT_TIMEOUT)
        assert "USERDATA-ECHO" not in text
        timings["boot3_ready"] = vm.elapsed()
        _power_off(vm)

    # ---- boot 4: network but no IMDS -> no hang ----
    with QemuGuest(disk, tmp_path / "vm4", network="restricted") as vm:
        text = _wait_in_order(vm, [
            rf"^AMID-MARKER: {MARKER}$",
            r"^AMID-BOOT: network eth0 ",
            r"^AMID-BOOT: imds none$",
            r"^AMID-BOOT: ready$",
        ], BOOT_TIMEOUT)
        assert "AMID-INSTANCE-ID" not in text and "AMID-USERDATA" not in text
        timings["boot4_ready"] = vm.elapsed()
        _power_off(vm)

    total = time.monotonic() - t_start
    print("timings:", {k: round(v, 2) for k, v in timings.items()}, "total", round(total, 1))
    assert timings["boot4_ready"] < 30, timings
