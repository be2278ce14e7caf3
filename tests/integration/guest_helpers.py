"""Helpers for integration tests that boot real QEMU guests (TCG only).

Self-contained (standard library only, no pytest fixtures), so any test can
import it:

    from guest_helpers import (build_catalog_disk, sparse_copy, FakeImds,
                               QemuGuest)

    disk = sparse_copy(build_catalog_disk(), tmp_path / "root.raw")
    imds = FakeImds(tmp_path / "imds", "i-0abc", user_data="#!/bin/sh\\necho hi\\n")
    with QemuGuest(disk, tmp_path / "vm", imds=imds) as vm:
        vm.console.wait_for(r"^AMID-BOOT: ready", timeout=60)
        vm.qmp("system_powerdown")
        assert vm.wait_exit(15) == 0

Markers printed by the catalogue disk are documented in
catalog/build-disk.sh (header) and catalog/README.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CATALOG_DIR = REPO_ROOT / "catalog"
CATALOG_OUT = CATALOG_DIR / "out"
CATALOG_DISK_NAME = "amid-busybox-x86_64.raw"
IMDS_FAKE = CATALOG_DIR / "imds_fake.py"
IMDS_ADDR = "169.254.169.254"
QEMU = "qemu-system-x86_64"


class GuestError(AssertionError):
    pass


# ------------------------------------------------------------------ setup --

def ensure_qemu() -> str:
    """Path of qemu-system-x86_64; apt-get installs it (as root) if missing."""
    path = shutil.which(QEMU)
    if path:
        return path
    if os.geteuid() != 0:
        raise GuestError(f"{QEMU} missing (apt-get install qemu-system-x86)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "qemu-system-x86"], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                            "qemu-system-x86"], env=env, capture_output=True, text=True)
    path = shutil.which(QEMU)
    if not path:
        raise GuestError(f"could not install qemu-system-x86: {r.stderr[-2000:]}")
    return path


def build_catalog_disk(outdir: Path | str = CATALOG_OUT, timeout: float = 900,
                       force: bool = False) -> Path:
    """Runs catalog/build-disk.sh (a no-op when up to date); returns the disk."""
    outdir = Path(outdir)
    cmd = ["bash", str(CATALOG_DIR / "build-disk.sh")]
    if force:
        cmd.append("--force")
    cmd.append(str(outdir))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise GuestError(f"build-disk.sh failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    disk = outdir / CATALOG_DISK_NAME
    if not disk.is_file():
        raise GuestError(f"build-disk.sh did not write {disk}")
    return disk


def sparse_copy(src: Path | str, dst: Path | str) -> Path:
    """Copies a (sparse) disk image keeping holes; never boot the build output."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


def make_blank_disk(path: Path | str, size: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


# --------------------------------------------------------------- fake IMDS --

class FakeImds:
    """Config for catalog/imds_fake.py, served through QEMU's guestfwd.

    QEMU spawns the script for every guest connection to 169.254.169.254:80;
    each request is appended to `log` as a JSON line (see requests()).
    """

    def __init__(self, workdir: Path | str, instance_id: str,
                 user_data: str | bytes | None = None, imdsv2: str = "optional",
                 meta_data: dict | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if "," in str(self.workdir.resolve()) or "," in str(IMDS_FAKE):
            raise GuestError("paths used in -netdev guestfwd must not contain commas")
        self.instance_id = instance_id
        self.log = self.workdir / "requests.jsonl"
        self.log.touch()
        config = {"instance_id": instance_id, "imdsv2": imdsv2,
                  "meta_data": meta_data or {}, "log": str(self.log)}
        if user_data is not None:
            ud = self.workdir / "user-data"
            ud.write_bytes(user_data.encode() if isinstance(user_data, str) else user_data)
            config["user_data_file"] = str(ud)
        self.config = self.workdir / "imds.json"
        self.config.write_text(json.dumps(config, indent=1))

    def command(self) -> str:
        py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        return f"{py} {IMDS_FAKE} {self.config}"

    def guestfwd(self) -> str:
        return f"guestfwd=tcp:{IMDS_ADDR}:80-cmd:{self.command()}"

    def requests(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            line = line.strip()
            if line:
                out.append(json.loads(line))
        return out


# ---------------------------------------------------------- serial console --

class SerialConsole:
    """Collects a guest's serial output (a pipe) in a background thread."""

    def __init__(self, stream, stdin=None, logfile: Path | None = None):
        self._stream = stream
        self._stdin = stdin
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._log = open(logfile, "wb") if logfile else None
        self._pos = 0  # wait_for() searches from here on (see mark())
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        while True:
            try:
                chunk = os.read(self._stream.fileno(), 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    break
                self._buf += chunk
                if self._log:
                    self._log.write(chunk)
                    self._log.flush()
                self._cond.notify_all()
        if self._log:
            self._log.close()

    @property
    def text(self) -> str:
        with self._cond:
            return self._buf.decode("utf-8", "replace").replace("\r", "")

    def lines(self) -> list[str]:
        return self.text.splitlines()

    def mark(self) -> None:
        """Later wait_for() calls only look at output after this point."""
        with self._cond:
            self._pos = len(self._buf)

    def wait_for(self, pattern: str, timeout: float = 60.0, since_mark: bool = True):
        """Waits for a regex (re.MULTILINE; '^' = start of a console line).

        Returns the match; raises GuestError with the console tail on timeout
        or when the guest's output ends first.
        """
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                start = self._pos if since_mark else 0
                text = self._buf[start:].decode("utf-8", "replace").replace("\r", "")
                m = rx.search(text)
                if m:
                    return m
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "console closed" if self._eof else f"timeout {timeout}s"
                    raise GuestError(f"{why} waiting for /{pattern}/; console tail:\n"
                                     + text[-4000:])
                self._cond.wait(min(left, 0.5))

    def send(self, data: str) -> None:
        if self._stdin is None:
            raise GuestError("console has no input")
        self._stdin.write(data.encode())
        self._stdin.flush()


# -------------------------------------------------------------------- QMP --

class Qmp:
    def __init__(self, path: Path, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"QMP socket {path} did not come up")
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self._rd = self.sock.makefile("rb")
        self._read()  # greeting
        self.command("qmp_capabilities")

    def _read(self) -> dict:
        line = self._rd.readline()
        if not line:
            raise GuestError("QMP connection closed")
        return json.loads(line)

    def command(self, name: str, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise GuestError(f"QMP {name}: {r['error']}")
            # asynchronous events are skipped

    def close(self):
        try:
            self._rd.close()
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------- QEMU --

class QemuGuest:
    """One TCG QEMU guest booting `disk` (virtio), serial console on a pipe.

    network: "user" (QEMU user-mode net on 169.254.0.0/16; with `imds` the
    fake IMDS is reachable at 169.254.169.254), "restricted" (same but
    restrict=on: no way out, no IMDS) or None (no NIC at all).
    """

    def __init__(self, disk: Path | str, workdir: Path | str, imds: FakeImds | None = None,
                 extra_disks: list | tuple = (), network: str | None = "user",
                 memory_mb: int = 256, extra_args: list | tuple = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.qmp_path = self.workdir / "qmp.sock"
        if self.qmp_path.exists():
            self.qmp_path.unlink()
        self.console_log = self.workdir / "console.log"
        args = [ensure_qemu(), "-accel", "tcg", "-m", str(memory_mb),
                "-display", "none", "-vga", "none", "-nodefaults", "-no-reboot",
                "-serial", "stdio", "-monitor", "none",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-drive", f"file={disk},format=raw,if=virtio"]
        for d in extra_disks:
            args += ["-drive", f"file={d},format=raw,if=virtio"]
        if network is not None:
            netdev = "user,id=n0,net=169.254.0.0/16"
            if network == "restricted":
                netdev += ",restrict=on"
            if imds is not None:
                netdev += "," + imds.guestfwd()
            args += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile="]
        args += list(extra_args)
        self.args = args
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.workdir / "qemu.stderr", "wb"),
                                     cwd=self.workdir)
        self.console = SerialConsole(self.proc.stdout, self.proc.stdin, self.console_log)
        self._qmp: Qmp | None = None

    def qmp(self, name: str, **args):
        if self._qmp is None:
            self._qmp = Qmp(self.qmp_path)
        return self._qmp.command(name, **args)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise GuestError(f"QEMU still running after {timeout}s; console tail:\n"
                             + self.console.text[-3000:])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self):
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
