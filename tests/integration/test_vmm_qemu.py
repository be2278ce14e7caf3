"""src/vmm against real QEMU (TCG): the catalogue disk booted from NBD, controlled, hot-plugged,
re-found after a "daemon restart", its NBD server killed and restarted under it.

Driven through tests/unit/vmm_tool.c (built next to AMID_BIN, else in build/): every tool
invocation but `start` is a new process that finds the QEMU with vmm_attach(), so each one is
itself a small daemon restart.  The NBD server is the repo's own (tests/unit/nbd_testserver,
amid's nbd module serving a file as export "mem").

The tests of the first guest share it and run in file order (boot, console, hot-plug, NBD
reconnect, daemon restart, reset, pause, power-down); the others start their own QEMU.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guest_helpers import (  # noqa: E402
    IMDS_FAKE,
    FakeImds,
    GuestError,
    Qmp,
    build_catalog_disk,
    ensure_qemu,
    make_blank_disk,
    sparse_copy,
)

ROOT = Path(__file__).resolve().parents[2]
IID = "i-0a1b2c3d4e5f6a001"
BOOT_TIMEOUT = 90  # seconds from start to "AMID-BOOT: ready" (TCG, maybe under ASan load)
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _build_dir() -> Path:
    cands = []
    if os.environ.get("AMID_BIN"):
        cands.append(Path(os.environ["AMID_BIN"]).resolve().parent)
    cands += [ROOT / "build", ROOT / "build-asan"]
    for d in cands:
        if (d / "src/vmm/vmm_tool").is_file() and (d / "src/nbd/nbd_testserver").is_file():
            return d
    pytest.fail("vmm_tool / nbd_testserver not built (ninja -C build)")


BUILD = _build_dir()
TOOL = str(BUILD / "src/vmm/vmm_tool")
NBD_SERVER = str(BUILD / "src/nbd/nbd_testserver")


def tool(*args, check=True, timeout=120) -> subprocess.CompletedProcess:
    p = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"vmm_tool {' '.join(map(str, args))} -> {p.returncode}: "
                             f"{p.stderr}")
    return p


def state(rd, iid=IID) -> str:
    return tool("state", rd, iid).stdout.split()[0]


class NbdServer:
    """nbd_testserver serving `path` as export "mem" on `sock`."""

    def __init__(self, sock: Path, path: Path):
        self.sock, self.path, self.proc = sock, path, None

    def start(self):
        self.proc = subprocess.Popen([NBD_SERVER, "--socket", str(self.sock), "--file",
                                      str(self.path)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", self.proc.stderr.read()
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None


def console(rd) -> str:
    p = Path(rd) / "console.log"
    return p.read_bytes().decode("utf-8", "replace").replace("\r", "") if p.exists() else ""


def wait_console(rd, pattern, timeout, since=0):
    """Waits for a regex in console.log after character offset `since`."""
    rx = re.compile(pattern, re.MULTILINE)
    end = time.monotonic() + timeout
    while True:
        text = console(rd)
        m = rx.search(text, since)
        if m:
            return m
        if time.monotonic() > end:
            raise GuestError(f"timeout {timeout}s waiting for /{pattern}/; console tail:\n"
                             + text[-3000:] + "\nqemu.log:\n" + qemu_log(rd))
        time.sleep(0.1)


def qemu_log(rd) -> str:
    p = Path(rd) / "qemu.log"
    return p.read_text(errors="replace") if p.exists() else ""


class GuestShell:
    """The guest's root shell on the serial console: lines typed into console.in
    (vmm_console_write, through `vmm_tool send`), output read back from console.log."""

    def __init__(self, rd):
        self.rd = rd
        self.n = 0

    def mark(self) -> int:
        return len(console(self.rd))

    def text(self, since: int = 0) -> str:
        return console(self.rd)[since:]

    def send(self, line: str):
        tool("send", self.rd, line)

    def wait_for(self, pattern: str, since: int, timeout: float):
        return wait_console(self.rd, pattern, timeout, since)

    def run(self, cmd: str, timeout: float = 60) -> str:
        """Runs cmd; returns the console text from the command to its end marker.  The marker
        is computed by the shell, so the echo of the typed line does not match it."""
        self.n += 1
        start = self.mark()
        self.send(f"{cmd}; echo VMMT-$((7000+{self.n}))")
        self.wait_for(rf"^VMMT-{7000 + self.n}$", start, timeout)
        return self.text(start)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and \
        Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def kill_qemu(rd):
    """Teardown: SIGKILL the QEMU this test started in rd, if any (found by its lock)."""
    p = tool("kill", rd, IID, "9", check=False)
    if p.returncode not in (0, errno.ESRCH):
        pidfile = Path(rd) / "qemu.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass


@pytest.fixture(scope="module")
def work():
    ensure_qemu()
    d = Path(tempfile.mkdtemp(prefix="vmm-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def catalog_disk():
    return build_catalog_disk()


class Guest:
    pass


@pytest.fixture(scope="module")
def guest(work, catalog_disk):
    """The first guest: started by a stand-in "daemon" (a process group that runs vmm_tool
    start and then sleeps), root disk over NBD, fake IMDS whose script path needs quoting."""
    g = Guest()
    g.rd = work / "i1"
    g.rd.mkdir()
    g.root = sparse_copy(catalog_disk, work / "root.raw")
    g.nbd = NbdServer(work / "nbd.sock", g.root).start()
    imds = FakeImds(work / "imds", IID)
    weird = work / "it's a dir, really"
    weird.mkdir()
    script = weird / "imds fake $x.py"
    shutil.copy(IMDS_FAKE, script)
    g.daemon = subprocess.Popen(
        ["/bin/sh", "-c", '"$@" || exit $?; exec sleep 3600', "sh",
         TOOL, "start", "--id", IID, "--run-dir", str(g.rd),
         "--accel", "tcg", "--vcpus", "2", "--mem", "256",
         "--disk", f"name=root,socket={g.nbd.sock},export=mem,serial=vol0a1b2c3d4e5f6a001",
         "--imds-arg", PYTHON, "--imds-arg", str(script), "--imds-arg", str(imds.config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = g.daemon.stdout.readline()
    if not line.startswith("pid "):
        g.daemon.wait(10)
        pytest.fail(f"vmm_tool start failed: {g.daemon.stderr.read()}")
    g.pid = int(line.split()[1])
    g.started = time.monotonic()
    g.imds = imds
    yield g
    kill_qemu(g.rd)
    if g.daemon.poll() is None:
        os.killpg(g.daemon.pid, signal.SIGKILL)
    g.daemon.wait(10)
    g.nbd.kill()


# ------------------------------------------------------------------------------ probe --

def test_probe_falls_back_to_tcg_within_its_limit():
    t = time.monotonic()
    out = tool("probe", "--timeout", "3000").stdout
    took = time.monotonic() - t
    accel = out.split()[0]
    assert took < 3.0 + 2.5, out
    if os.environ.get("AMID_KVM_WORKS") == "1":
        assert accel == "kvm", out
    else:
        # /dev/kvm exists on the build machines, but KVM guests do not run there
        assert accel == "tcg", out
        assert "tcg: " in out


# ---------------------------------------------------------------------- the first guest --

def test_boot_detached_with_imds_and_console(guest):
    m = wait_console(guest.rd, r"^AMID-BOOT: ready$", BOOT_TIMEOUT)
    boot = time.monotonic() - guest.started
    print(f"boot to ready: {boot:.1f} s")
    text = console(guest.rd)
    # the IMDS command ran through guestfwd with a path full of quotes, spaces and a comma
    assert "AMID-BOOT: imds v2" in text, text
    assert f"AMID-INSTANCE-ID: {IID}" in text
    assert any(r["path"] == "/latest/meta-data/instance-id" for r in guest.imds.requests())
    assert "AMID-BOOT: disks vda\n" in text
    assert state(guest.rd) == "running"
    # QEMU is nobody's child here and lives in a session of its own
    stat = Path(f"/proc/{guest.pid}/stat").read_text().rsplit(")", 1)[1].split()
    ppid, sid = int(stat[1]), int(stat[4])
    assert ppid != os.getpid() and ppid != guest.daemon.pid
    # (QEMU's session leader, its own first fork, has exited: in some PID namespaces such a
    # session reads as 0; test_daemon_restart_keeps_guest_and_disks checks the behaviour)
    assert sid != guest.daemon.pid and (sid == 0 or sid != os.getsid(0))
    assert tool("attach", guest.rd, IID).stdout.split() == ["pid", str(guest.pid)]
    cmdline = Path(f"/proc/{guest.pid}/cmdline").read_bytes().split(b"\0")
    assert f"guest={IID},debug-threads=on".encode() in cmdline
    # console: from the start vs. latest, with caps (once the guest is quiet: the shell's
    # banner follows "ready")
    log = guest.rd / "console.log"
    size = -1
    while size != log.stat().st_size:
        size = log.stat().st_size
        time.sleep(1)
    raw = log.read_bytes()
    first = subprocess.run([TOOL, "console", guest.rd, "--max", "100"], capture_output=True)
    assert first.stdout == raw[:100]
    last = subprocess.run([TOOL, "console", guest.rd, "--latest", "--max", "100"],
                          capture_output=True)
    assert last.stdout == raw[-100:]
    full = subprocess.run([TOOL, "console", guest.rd], capture_output=True).stdout
    assert full == raw[:65536] and b"AMID-BOOT: ready" in full
    assert m.start() > 0
    assert guest.daemon.poll() is None  # the stand-in daemon still runs (until the restart)


def test_console_trim_while_qemu_appends(guest):
    with GuestShell(guest.rd) as sh:
        sh.run("dd if=/dev/zero bs=1024 count=300 2>/dev/null | tr '\\0' x; echo", timeout=60)
        size = (guest.rd / "console.log").stat().st_size
        assert size > 300 * 1024
        cut = int(tool("trim", guest.rd, 8192, 8192).stdout)
        assert cut > 250 * 1024
        # the file shrank in place (QEMU may have appended a prompt meanwhile)
        assert (guest.rd / "console.log").stat().st_size < size - cut + 1024
        sh.run("echo AFTER-TRIM-$((5*5))")
    latest = tool("console", guest.rd, "--latest", "--max", "4096").stdout
    assert "AFTER-TRIM-25" in latest
    head = tool("console", guest.rd, "--max", "8192").stdout
    assert "SYSLINUX" in head or "AMID-BOOT: start" in head


def test_hotplug_disk_seen_by_guest_and_unplugged(guest, work):
    blank = make_blank_disk(work / "data1.raw", 64 << 20)
    nbd2 = NbdServer(work / "nbd2.sock", blank).start()
    try:
        tool("attach-disk", guest.rd, IID,
             f"name=data1,socket={nbd2.sock},export=mem,serial=vol0d1")
        assert tool("attach-disk", guest.rd, IID,
                    f"name=data1,socket={nbd2.sock},export=mem",
                    check=False).returncode == errno.EEXIST
        disks = tool("disks", guest.rd, IID).stdout.split("\n")
        assert "root rw ok" in disks and "data1 rw ok" in disks
        q = Qmp(guest.rd / "qmp.sock")
        try:
            devs = [d.get("qdev_id") for b in q.command("query-pci") for d in b["devices"]]
        finally:
            q.close()
        assert "data1" in devs
        with GuestShell(guest.rd) as sh:
            deadline = time.monotonic() + 60
            while "vdb" not in sh.run("ls /sys/block"):
                assert time.monotonic() < deadline, "hot-plugged disk never showed up"
                time.sleep(0.5)
            assert "vol0d1" in sh.run("cat /sys/block/vdb/serial; echo")
            sh.run("echo HOTPLUG-OK-$((40+2)) | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync "
                   "2>/dev/null")
            assert blank.read_bytes()[:14] == b"HOTPLUG-OK-42\n"
            t = time.monotonic()
            tool("detach-disk", guest.rd, IID, "data1", 20000)
            print(f"unplug took {time.monotonic() - t:.2f} s")
            assert tool("disks", guest.rd, IID).stdout.split("\n")[:1] == ["root rw ok"]
            assert "vdb" not in sh.run("ls /sys/block")
        # detaching what is not there is fine
        tool("detach-disk", guest.rd, IID, "data1", 1000)
    finally:
        nbd2.kill(signal.SIGTERM)


def test_nbd_server_restart_under_running_guest(guest):
    """The NBD server dies with a write in flight and comes back: the guest's write and later
    reads complete, the VM never leaves "running"."""
    with GuestShell(guest.rd) as sh:
        sh.run("sync")
        guest.nbd.kill()  # SIGKILL: amid crashing
        since = sh.mark()
        sh.send("echo written-while-server-down > /data/nbd-gap.txt; sync; "
                "echo SYNCED-$((2+3))")
        time.sleep(4)
        assert "SYNCED-5" not in sh.text(since), "sync returned while the NBD server was down"
        assert state(guest.rd) == "running"  # stalled, not failed: within reconnect-delay
        t = time.monotonic()
        guest.nbd.start()
        sh.wait_for(r"^SYNCED-5$", since, 60)
        print(f"I/O resumed {time.monotonic() - t:.1f} s after the server came back")
        out = sh.run("echo 3 > /proc/sys/vm/drop_caches; cat /data/nbd-gap.txt")
        assert "written-while-server-down" in out
        # a read of fresh blocks (the boot partition, never mounted) gives the server's bytes
        out = sh.run("dd if=/dev/vda bs=1M count=8 skip=8 2>/dev/null | md5sum")
        with open(guest.root, "rb") as fh:
            fh.seek(8 << 20)
            want = hashlib.md5(fh.read(8 << 20)).hexdigest()
        assert want in out, out
    assert state(guest.rd) == "running"


def test_nbd_server_away_too_long_pauses_then_cont(guest, work):
    """Past a disk's reconnect delay the VM pauses (io-error) instead of failing the guest's
    I/O; once the server is back, cont retries the requests and the guest never saw an
    error."""
    blank = make_blank_disk(work / "data2.raw", 16 << 20)
    nbd3 = NbdServer(work / "nbd3.sock", blank).start()
    try:
        tool("attach-disk", guest.rd, IID,
             f"name=data2,socket={nbd3.sock},export=mem,reconnect=2")
        with GuestShell(guest.rd) as sh:
            deadline = time.monotonic() + 60
            while "vdb" not in sh.run("ls /sys/block"):
                assert time.monotonic() < deadline, "hot-plugged disk never showed up"
                time.sleep(0.5)
            nbd3.kill()
            since = sh.mark()
            sh.send("echo PAUSED-WRITE | dd of=/dev/vdb bs=512 count=1 conv=sync,fsync "
                        "2>/dev/null; echo DD-RC-$?-$((6*7))")
            deadline = time.monotonic() + 30
            while state(guest.rd) != "io-error":
                assert time.monotonic() < deadline, "VM did not pause on the I/O error"
                time.sleep(0.3)
            disks = tool("disks", guest.rd, IID).stdout
            assert "data2 rw failed" in disks, disks
            nbd3.start()
            t = time.monotonic()
            # cont until the NBD client has reconnected (its retries back off up to seconds)
            while state(guest.rd) != "running" or "DD-RC-" not in sh.text(since):
                assert time.monotonic() - t < 60, "guest I/O did not resume"
                if state(guest.rd) == "io-error":
                    tool("cont", guest.rd, IID)
                time.sleep(1)
            print(f"resumed {time.monotonic() - t:.1f} s after the server came back")
            sh.wait_for(r"^DD-RC-0-42$", since, 30)  # the guest saw success
            assert blank.read_bytes()[:13] == b"PAUSED-WRITE\n"
            tool("detach-disk", guest.rd, IID, "data2", 20000)
    finally:
        nbd3.kill(signal.SIGTERM)


def test_daemon_restart_keeps_guest_and_disks(guest):
    """The "daemon" that started QEMU dies (SIGKILL to its whole process group) together with
    its NBD server; a new one finds the QEMU by its run directory and controls it."""
    assert guest.daemon.poll() is None
    os.killpg(guest.daemon.pid, signal.SIGKILL)
    guest.daemon.wait(10)
    guest.nbd.kill()
    time.sleep(1)
    assert pid_alive(guest.pid)
    guest.nbd.start()
    # a fresh process, no handle: attach by run directory and instance id
    assert tool("attach", guest.rd, IID).stdout.split() == ["pid", str(guest.pid)]
    p = tool("attach", guest.rd, "i-0000000000000000f", check=False)
    assert p.returncode == errno.ESTALE, p.stderr
    assert state(guest.rd) == "running"
    name = json.loads(tool("qmp", guest.rd, IID, "query-name").stdout)
    assert name == {"name": IID}
    with GuestShell(guest.rd) as sh:
        out = sh.run("echo after-restart > /data/restart.txt; sync; "
                     "echo 3 > /proc/sys/vm/drop_caches; cat /data/restart.txt", timeout=60)
        assert "after-restart" in out


def test_reset_reboots(guest):
    since = len(console(guest.rd))
    tool("reset", guest.rd, IID)
    try:
        wait_console(guest.rd, r"^AMID-BOOT: start$", 60, since)
    except GuestError as ex:
        raise GuestError(f"{ex}\nstate: {tool('state', guest.rd, IID, check=False).stdout}"
                         f"\nqemu.log: {qemu_log(guest.rd)}") from None
    wait_console(guest.rd, r"^AMID-BOOT: ready$", BOOT_TIMEOUT, since)
    # the same QEMU, data written before the reset still there
    assert tool("attach", guest.rd, IID).stdout.split() == ["pid", str(guest.pid)]
    with GuestShell(guest.rd) as sh:
        assert "after-restart" in sh.run("cat /data/restart.txt")


def test_pause_and_cont(guest):
    tool("pause", guest.rd, IID)
    assert state(guest.rd) == "paused"
    tool("cont", guest.rd, IID)
    assert state(guest.rd) == "running"


def test_powerdown_leaves_shutdown_state_then_quit(guest):
    since = len(console(guest.rd))
    tool("powerdown", guest.rd, IID)
    wait_console(guest.rd, r"^AMID-BOOT: poweroff$", 60, since)
    deadline = time.monotonic() + 40
    while state(guest.rd) != "shutdown":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert pid_alive(guest.pid)  # -no-shutdown: QEMU waits for the supervisor
    tool("quit", guest.rd, IID, 10000)
    assert not pid_alive(guest.pid)
    p = tool("attach", guest.rd, IID, check=False)
    assert p.returncode == errno.ESRCH, p.stderr
    # GetConsoleOutput of a stopped instance still works
    assert "AMID-BOOT: poweroff" in tool("console", guest.rd, "--latest").stdout


# ---------------------------------------------------------------------- other QEMUs --

def test_kill_start_errors_and_busy_run_dir(work, catalog_disk):
    rd = work / "i2"
    rd.mkdir()
    root = sparse_copy(catalog_disk, work / "root2.raw")
    nbd = NbdServer(work / "nbd-i2.sock", root).start()
    disk = f"name=root,socket={nbd.sock},export=mem"
    try:
        # an NBD server that is not there: QEMU's own reason, quickly
        t = time.monotonic()
        p = tool("start", "--id", IID, "--run-dir", rd, "--no-net",
                 "--disk", f"name=root,socket={work}/missing.sock,export=mem", check=False)
        assert p.returncode == errno.EIO, p.stderr
        assert "Failed to connect" in p.stderr and "missing.sock" in p.stderr, p.stderr
        assert time.monotonic() - t < 10
        p = tool("start", "--id", IID, "--run-dir", rd, "--no-net", "--disk",
                 f"name=root,socket={nbd.sock},export=no-such-export", check=False)
        assert p.returncode == errno.EIO, p.stderr
        # a good start; a second one in the same run directory is refused
        pid = int(tool("start", "--id", IID, "--run-dir", rd, "--no-net", "--disk", disk)
                  .stdout.split()[1])
        p = tool("start", "--id", IID, "--run-dir", rd, "--no-net", "--disk", disk,
                 check=False)
        assert p.returncode == errno.EBUSY, p.stderr
        assert state(rd) == "running"
        # killed, not shut down: gone, and attach says so
        tool("kill", rd, IID, "9")
        # (attach itself may already find it gone)
        assert tool("wait-gone", rd, IID, 5000, check=False).returncode in (0, errno.ESRCH)
        assert not pid_alive(pid)
        assert tool("attach", rd, IID, check=False).returncode == errno.ESRCH
        # the run directory can be reused; the previous console is kept aside
        tool("start", "--id", IID, "--run-dir", rd, "--no-net", "--disk", disk)
        assert (rd / "console.log.0").exists()
        tool("quit", rd, IID, 10000)
    finally:
        kill_qemu(rd)
        nbd.kill(signal.SIGTERM)


def test_console_size_cap_is_a_hard_backstop(work, catalog_disk):
    """With nobody trimming, console.log stops at console_max while the guest goes on; a trim
    makes room and logging resumes."""
    rd = work / "i4"
    rd.mkdir()
    root = sparse_copy(catalog_disk, work / "root4.raw")
    nbd = NbdServer(work / "nbd-i4.sock", root).start()
    cap = 1 << 20
    log = rd / "console.log"
    try:
        tool("start", "--id", IID, "--run-dir", rd, "--no-net", "--console-max", cap,
             "--disk", f"name=root,socket={nbd.sock},export=mem")
        wait_console(rd, r"^AMID-BOOT: ready$", BOOT_TIMEOUT)
        sh = GuestShell(rd)
        sh.send("dd if=/dev/zero bs=1024 count=1400 2>/dev/null | tr '\\0' y; echo")
        deadline = time.monotonic() + 120
        while log.stat().st_size < cap:
            assert time.monotonic() < deadline, "console never reached its cap"
            time.sleep(0.2)
        time.sleep(1)
        assert log.stat().st_size == cap
        assert state(rd) == "running"
        assert int(tool("trim", rd, 65536, 65536).stdout) > cap // 2
        assert "ALIVE-42" in sh.run("echo ALIVE-$((6*7))", timeout=120)
        assert log.stat().st_size < cap
        tool("quit", rd, IID, 10000)
    finally:
        kill_qemu(rd)
        nbd.kill(signal.SIGTERM)


def test_uefi_boot_mode(work, catalog_disk):
    if not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").exists():
        pytest.skip("OVMF not installed")
    rd = work / "i3"
    rd.mkdir()
    root = sparse_copy(catalog_disk, work / "root3.raw")
    nbd = NbdServer(work / "nbd-i3.sock", root).start()
    try:
        tool("start", "--id", IID, "--run-dir", rd, "--uefi", "--no-net",
             "--disk", f"name=root,socket={nbd.sock},export=mem")
        assert (rd / "efivars.fd").stat().st_size > 0
        # OVMF runs and looks for something to boot (the catalogue disk is BIOS-only)
        wait_console(rd, r"BdsDxe|UEFI|EFI", 60)
        assert state(rd) == "running"
    finally:
        kill_qemu(rd)
        nbd.kill(signal.SIGTERM)
