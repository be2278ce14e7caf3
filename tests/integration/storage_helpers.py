"""Helpers for the block storage maintenance, crash and full-disk tests: a private data directory
with its own daemon, the amid maintenance commands, EBS direct uploads, chunk files on disk, and a
minimal NBD client that reads block by block, so a test sees exactly which reads fail (an error
reply) and that no read ever returns wrong bytes.
"""
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from conftest import AMID, Creds, Daemon, run_amid

BLOCK = 512 * 1024
REGION = 'us-east-1'


def sha(b):
    return base64.b64encode(hashlib.sha256(b).digest()).decode()


def linear(blocks):
    """EBS LINEAR aggregation over {index: data}, in index order."""
    h = hashlib.sha256()
    for i in sorted(blocks):
        h.update(hashlib.sha256(blocks[i]).digest())
    return base64.b64encode(h.digest()).decode()


# What qemu-io/qemu-img and nbdcopy say when the daemon refuses a volume's export because the
# previous client still holds its single writer slot: the daemon releases it only once that
# connection's closing flush is done, so a client that follows at once may be refused.
REFUSED = (b'Denied by server for option 7', b'server policy prevents NBD_OPT_GO')


def run(*args, check=True, timeout=120, **kw):
    """Runs a program; retries (for up to 5 s) when the daemon refused a volume still held by
    the client before."""
    deadline = time.time() + 5
    while True:
        p = subprocess.run(list(args), capture_output=True, timeout=timeout, **kw)
        if p.returncode == 0 or not any(r in p.stderr for r in REFUSED) or \
                time.time() > deadline:
            break
        time.sleep(0.02)
    if check and p.returncode != 0:
        raise AssertionError('%s failed (%d): %s' % (' '.join(map(str, args)), p.returncode,
                                                     p.stderr.decode(errors='replace')))
    return p


def amid_json(*args, check=True, ok_codes=(0,)):
    """Runs an amid maintenance command with --format json; returns (exit code, document)."""
    p = subprocess.run([AMID, *args, '--format', 'json'], capture_output=True, text=True,
                       timeout=300)
    if check and p.returncode not in ok_codes:
        raise AssertionError('amid %s exited %d: %s %s' % (' '.join(args), p.returncode,
                                                           p.stdout, p.stderr))
    assert 'AddressSanitizer' not in p.stderr and 'runtime error' not in p.stderr, p.stderr
    return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None)


def chunk_hex(data):
    """The id of an unencrypted, non-zero block: the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


class Store:
    """A data directory: its own `amid init`, daemon and account."""

    def __init__(self, tmp, start=True):
        self.tmp = tmp
        self.datadir = os.path.join(tmp, 'data')
        p = run_amid('init', '--data', self.datadir, '--format', 'json')
        self.creds = Creds(json.loads(p.stdout))
        self.daemon = Daemon(self.datadir)
        self.ec2 = self.ebs = None
        if start:
            self.start()

    def start(self):
        self.daemon.start()
        self.ec2 = self.daemon.client('ec2', self.creds)
        self.ebs = self.daemon.client('ebs', self.creds)
        return self

    def stop(self, sig=signal.SIGTERM):
        return self.daemon.stop(sig)

    @property
    def region_dir(self):
        return os.path.join(self.datadir, 'regions', REGION)

    @property
    def socket(self):
        return os.path.join(self.datadir, 'run', 'nbd.sock')

    def uri(self, name):
        return 'nbd+unix:///%s?socket=%s' % (name, self.socket)

    def amid(self, *args, ok_codes=(0,)):
        return amid_json(*args, '--data', self.datadir, ok_codes=ok_codes)

    def verify(self, read_data=False, ok_codes=(0, 1)):
        args = ['verify'] + (['--read-data'] if read_data else [])
        rc, doc = self.amid(*args, ok_codes=ok_codes)
        return rc, doc

    def assert_clean(self, read_data=True, warnings_ok=False):
        rc, doc = self.verify(read_data)
        assert rc == 0 and doc['Ok'] and doc['Errors'] == 0, doc
        if not warnings_ok:
            assert doc['Warnings'] == 0, doc
        return doc

    def gc(self, *args):
        return self.amid('gc', *args)[1]

    def du(self, *args):
        return self.amid('du', *args)[1]

    # ---- chunks on disk ----

    def chunk_path(self, hexid):
        return os.path.join(self.region_dir, 'chunks', hexid[:2], hexid)

    def chunk_files(self):
        out = {}
        root = os.path.join(self.region_dir, 'chunks')
        for d, _, files in os.walk(root):
            for f in files:
                if len(f) == 64:
                    out[f] = os.path.getsize(os.path.join(d, f))
        return out

    def chunk_bytes(self):
        return sum(self.chunk_files().values())

    # ---- volumes and snapshots ----

    def volume(self, size=1):
        return self.ec2.create_volume(AvailabilityZone=REGION + 'a', Size=size)['VolumeId']

    def write(self, vid, data, offset=0):
        """Writes `data` at `offset` and flushes (qemu-io); durable when it returns."""
        path = os.path.join(self.tmp, 'w-%d.raw' % os.getpid())
        with open(path, 'wb') as f:
            f.write(data)
        try:
            if offset == 0:
                run('nbdcopy', '--flush', path, self.uri(vid))
            else:
                run('qemu-io', '-f', 'raw', '-c',
                    'write -s %s %d %d' % (path, offset, len(data)), '-c', 'flush',
                    self.uri(vid))
        finally:
            os.unlink(path)

    def snapshot(self, vid, timeout=120):
        sid = self.ec2.create_snapshot(VolumeId=vid)['SnapshotId']
        return self.wait_snapshot(sid, timeout)['SnapshotId']

    def wait_snapshot(self, sid, timeout=120, want='completed'):
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.ec2.describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]
            if s['State'] != 'pending':
                if want:
                    assert s['State'] == want, s
                return s
            time.sleep(0.05)
        raise AssertionError('snapshot %s still pending' % sid)

    def upload(self, blocks, size_gib=1, complete=True):
        """An EBS direct upload of {index: data}; returns the snapshot id."""
        sid = self.ebs.start_snapshot(VolumeSize=size_gib, Timeout=60)['SnapshotId']
        for i, d in sorted(blocks.items()):
            self.ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=d,
                                        DataLength=len(d), Checksum=sha(d),
                                        ChecksumAlgorithm='SHA256')
        if complete:
            r = self.ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(blocks),
                                           Checksum=linear(blocks), ChecksumAlgorithm='SHA256',
                                           ChecksumAggregationMethod='LINEAR')
            assert r['Status'] == 'completed', r
        return sid

    def read(self, name, length, offset=0):
        """Reads `length` bytes of an export; raises NbdError on an error reply."""
        deadline = time.time() + 5
        while True:
            try:
                c = NbdClient(self.socket, name)
                break
            except NbdRefused:
                if time.time() > deadline:
                    raise
                time.sleep(0.02)
        with c:
            return c.read(offset, length)


def make_store(prefix='amid-st-', start=True):
    tmp = tempfile.mkdtemp(prefix=prefix)
    return Store(tmp, start=start)


def remove_store(st):
    if st.daemon.proc:
        st.stop()
    shutil.rmtree(st.tmp, ignore_errors=True)


# ---- a minimal NBD client (fixed newstyle, NBD_OPT_GO, simple replies) ----

class NbdError(Exception):
    def __init__(self, errno_, offset):
        super().__init__('NBD error %d at offset %d' % (errno_, offset))
        self.errno = errno_


class NbdRefused(NbdError):
    """The server refused the export (NBD_OPT_GO answered with an error)."""


class NbdClient:
    OPTS_MAGIC = 0x49484156454F5054
    REPLY_MAGIC = 0x3e889045565a9
    REQ_MAGIC = 0x25609513
    SIMPLE_MAGIC = 0x67446698

    def __init__(self, sock_path, name, timeout=60):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(sock_path)
        self.handle = 1
        magic, opts, flags = struct.unpack('>8sQH', self._recv(18))
        assert magic == b'NBDMAGIC' and opts == self.OPTS_MAGIC, (magic, opts)
        self.s.sendall(struct.pack('>I', 3))  # FIXED_NEWSTYLE | NO_ZEROES
        n = name.encode()
        data = struct.pack('>I', len(n)) + n + struct.pack('>H', 0)
        self.s.sendall(struct.pack('>QII', self.OPTS_MAGIC, 7, len(data)) + data)  # NBD_OPT_GO
        self.size = None
        while True:
            magic, opt, rtype, ln = struct.unpack('>QIII', self._recv(20))
            assert magic == self.REPLY_MAGIC
            payload = self._recv(ln)
            if rtype == 1:  # ACK
                break
            if rtype & 0x80000000:
                self.s.close()
                raise NbdRefused(rtype, -1)
            if rtype == 3 and ln >= 12 and struct.unpack('>H', payload[:2])[0] == 0:
                self.size = struct.unpack('>Q', payload[2:10])[0]

    def _recv(self, n):
        buf = bytearray()
        while len(buf) < n:
            b = self.s.recv(n - len(buf))
            if not b:
                raise ConnectionError('NBD server closed the connection')
            buf += b
        return bytes(buf)

    def read(self, offset, length):
        out = bytearray()
        while length > 0:
            n = min(length, 4 << 20)
            h = self.handle
            self.handle += 1
            self.s.sendall(struct.pack('>IHHQQI', self.REQ_MAGIC, 0, 0, h, offset, n))
            magic, err, rh = struct.unpack('>IIQ', self._recv(16))
            assert magic == self.SIMPLE_MAGIC and rh == h, (magic, rh, h)
            if err:
                raise NbdError(err, offset)
            out += self._recv(n)
            offset += n
            length -= n
        return bytes(out)

    def close(self):
        try:
            self.s.sendall(struct.pack('>IHHQQI', self.REQ_MAGIC, 0, 2, 0, 0, 0))  # DISC
        except OSError:
            pass
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
