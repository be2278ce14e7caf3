"""Crash and full-disk tests for block storage.

test_crash_kill9_recovery: a daemon is killed with SIGKILL at AMID_CRASH_KILLS (default 50)
random points while it takes EBS direct uploads (PutSnapshotBlock), NBD volume writes with flushes
and CreateSnapshot calls (its captures run in the background), and each time is restarted on the
same directory.  After every kill: `amid verify --read-data` is clean; every snapshot that was
completed reads back bit-exact (the test keeps each one's expected hash); every write whose flush
returned is on the volume (an unacknowledged one may be there, partly, or not at all); a snapshot
is never completed with content other than the volume's at the instant of the call (pending ones
end completed by recovery, or in error); acknowledged upload blocks survive (CompleteSnapshot
checks their count and LINEAR checksum).

test_full_disk: a region whose store sits on a 64 MiB tmpfs: a snapshot that does not fit ends in
state error with a message, writes past the space fail with I/O errors, and everything that was
completed before still reads back bit-exact; verify stays clean and the daemon keeps serving.
"""
import hashlib
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import botocore.exceptions
import pytest

from storage_helpers import BLOCK, linear, make_store, remove_store, run, sha

KILLS = int(os.environ.get('AMID_CRASH_KILLS', '50'))
SPAN = 16 * BLOCK  # the part of the 1 GiB volume the test writes (the rest stays zero)


def h(b):
    return hashlib.sha256(b).hexdigest()


class Died(Exception):
    """The daemon was killed under an operation."""


class CrashRig:
    def __init__(self, st, rnd):
        self.st = st
        self.rnd = rnd
        self.vid = None
        self.model = bytearray(SPAN)  # the volume as acknowledged writes left it
        self.uncertain = None  # (offset, data) of a write whose flush did not return
        self.snaps = {}  # snapshot id -> expected hash of its first SPAN bytes
        self.settled = set()  # snapshots seen completed or in error
        self.errored = set()
        self.create_hash = None  # a CreateSnapshot whose answer was lost: the expected hash
        self.upl = None  # the upload in progress: {'id', 'blocks', 'acked', 'n'}
        self.deleting = None
        self.kills = {}
        self.checked = 0
        self.timer = None

    # ---- the daemon's life ----

    def kill_later(self, delay):
        pid = self.st.daemon.proc.pid

        def kill():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.timer = threading.Timer(delay, kill)
        self.timer.start()

    def alive(self):
        return self.st.daemon.proc is not None and self.st.daemon.proc.poll() is None

    def reap(self):
        """The daemon must have died of our SIGKILL, not of its own accord."""
        d = self.st.daemon
        rc = d.proc.wait(timeout=30)
        d.proc = None
        d.log.close()
        log = d.read_log()
        assert rc == -signal.SIGKILL, 'the daemon exited %d by itself: %s' % (rc, log[-3000:])
        assert 'AddressSanitizer' not in log and 'runtime error' not in log, log[-4000:]

    def call(self, what, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                AssertionError, OSError, subprocess.SubprocessError) as e:
            time.sleep(0.05)
            if not self.alive():
                self.kills[what] = self.kills.get(what, 0) + 1
                raise Died() from e
            raise

    # ---- operations ----

    def op_write(self):
        n = self.rnd.choice([4096, 65536, BLOCK, 2 * BLOCK])
        off = self.rnd.randrange(0, (SPAN - n) // 4096 + 1) * 4096
        data = os.urandom(n)
        path = os.path.join(self.st.tmp, 'w.raw')
        with open(path, 'wb') as f:
            f.write(data)
        self.uncertain = (off, data)
        self.call('write+flush', run, 'qemu-io', '-f', 'raw', '-c',
                  'write -s %s %d %d' % (path, off, n), '-c', 'flush', self.st.uri(self.vid))
        self.model[off:off + n] = data
        self.uncertain = None

    def op_snapshot(self):
        if len(self.snaps) > 24:
            return self.op_delete()  # keeps verify --read-data quick
        self.create_hash = h(self.model)
        sid = self.call('create-snapshot', self.st.ec2.create_snapshot, VolumeId=self.vid)
        self.snaps[sid['SnapshotId']] = self.create_hash
        self.create_hash = None

    def op_upload(self):
        ebs = self.st.ebs
        if self.upl is None:
            sid = self.call('start-snapshot', ebs.start_snapshot, VolumeSize=1,
                            Timeout=600)['SnapshotId']
            self.upl = {'id': sid, 'blocks': {}, 'acked': set(), 'n': self.rnd.randint(2, 6)}
            return
        u = self.upl
        if len(u['acked']) < u['n']:
            idx = next((i for i in u['blocks'] if i not in u['acked']), None)
            if idx is None:
                idx = self.rnd.choice([i for i in range(16) if i not in u['blocks']])
                kind = self.rnd.random()
                if kind < 0.1:
                    u['blocks'][idx] = bytes(BLOCK)  # a zero block counts as written
                elif kind < 0.3 and any(self.model):
                    k = self.rnd.randrange(16)  # the same as a volume block: deduplicated
                    u['blocks'][idx] = bytes(self.model[k * BLOCK:(k + 1) * BLOCK])
                else:
                    u['blocks'][idx] = os.urandom(BLOCK)
            d = u['blocks'][idx]
            self.call('put-snapshot-block', ebs.put_snapshot_block, SnapshotId=u['id'],
                      BlockIndex=idx, BlockData=d, DataLength=BLOCK, Checksum=sha(d),
                      ChecksumAlgorithm='SHA256')
            u['acked'].add(idx)
            return
        self.complete_upload()

    def complete_upload(self):
        u = self.upl
        r = self.call('complete-snapshot', self.st.ebs.complete_snapshot, SnapshotId=u['id'],
                      ChangedBlocksCount=len(u['blocks']), Checksum=linear(u['blocks']),
                      ChecksumAlgorithm='SHA256', ChecksumAggregationMethod='LINEAR')
        assert r['Status'] == 'completed', r
        self.record_upload()

    def record_upload(self):
        u = self.upl
        content = bytearray(SPAN)
        for i, d in u['blocks'].items():
            content[i * BLOCK:(i + 1) * BLOCK] = d
        self.snaps[u['id']] = h(content)
        self.upl = None

    def op_delete(self):
        done = [s for s in self.settled if s in self.snaps and s not in self.errored]
        if len(done) < 4:
            return None
        sid = self.rnd.choice(sorted(done))
        self.deleting = sid
        self.call('delete-snapshot', self.st.ec2.delete_snapshot, SnapshotId=sid)
        del self.snaps[sid]
        self.settled.discard(sid)
        self.deleting = None

    def run_until_killed(self, delay):
        ops = [self.op_write] * 4 + [self.op_upload] * 4 + [self.op_snapshot] * 2 + \
            [self.op_delete]
        self.kill_later(delay)
        try:
            while True:
                self.rnd.choice(ops)()
        except Died:
            pass
        finally:
            self.timer.cancel()
        self.reap()

    # ---- checks after a restart ----

    def snapshot_states(self):
        """Every snapshot of the account, by id."""
        out = {}
        for page in self.st.ec2.get_paginator('describe_snapshots').paginate(OwnerIds=['self']):
            out.update({s['SnapshotId']: s for s in page['Snapshots']})
        return out

    def check_snapshot(self, sid):
        got = h(self.st.read(sid, SPAN))
        assert got == self.snaps[sid], 'snapshot %s completed with wrong content' % sid
        self.checked += 1

    def after_restart(self):
        ec2 = self.st.ec2
        # A CreateSnapshot whose answer was lost may have made a snapshot: the volume's content
        # at the call is what it must hold.
        if self.create_hash:
            r = ec2.describe_snapshots(Filters=[{'Name': 'volume-id', 'Values': [self.vid]}])
            for s in r['Snapshots']:
                if s['SnapshotId'] not in self.snaps and s['SnapshotId'] != self.deleting:
                    self.snaps[s['SnapshotId']] = self.create_hash
            self.create_hash = None
        if self.deleting:
            if self.deleting not in self.snapshot_states():
                self.snaps.pop(self.deleting, None)
                self.settled.discard(self.deleting)
            self.deleting = None
        # Captures interrupted by the kill are redone by recovery, or end in error.
        deadline = time.time() + 90
        while True:
            every = self.snapshot_states()
            for sid in self.snaps:
                assert sid in every, 'snapshot %s is gone' % sid
            states = {s: every[s] for s in self.snaps if s not in self.settled}
            pending = [s for s, v in states.items() if v['State'] == 'pending']
            for sid, v in states.items():
                if v['State'] == 'completed':
                    self.check_snapshot(sid)
                    self.settled.add(sid)
                elif v['State'] == 'error':
                    assert v.get('StateMessage'), v
                    self.settled.add(sid)
                    self.errored.add(sid)
            if not pending:
                break
            assert time.time() < deadline, 'snapshots still pending: %s' % pending
            time.sleep(0.1)
        # An upload: its acknowledged blocks must all be there (complete checks); a complete
        # whose answer was lost may have happened.
        if self.upl:
            s = self.snapshot_states().get(self.upl['id'])
            if s and s['State'] == 'completed':
                self.record_upload()
                self.check_snapshot(s['SnapshotId'])
                self.settled.add(s['SnapshotId'])
        # The volume: every flushed write; an unflushed one in full, in part or not at all.
        got = bytearray(self.st.read(self.vid, SPAN))
        if self.uncertain:
            off, data = self.uncertain
            for i in range(off, off + len(data)):
                assert got[i] in (self.model[i], data[i - off]), 'volume byte %d' % i
            self.model[off:off + len(data)] = got[off:off + len(data)]
            self.uncertain = None
        assert got == self.model, 'a flushed write is missing from the volume'
        # Older completed snapshots still read back.
        done = [s for s in self.settled if s in self.snaps and s not in self.errored]
        for sid in self.rnd.sample(done, min(3, len(done))):
            self.check_snapshot(sid)


def test_crash_kill9_recovery():
    st = make_store('amid-crash-')
    rnd = random.Random(int(os.environ.get('AMID_CRASH_SEED', str(time.time_ns()))))
    rig = CrashRig(st, rnd)
    t0 = time.time()
    try:
        rig.vid = st.volume()
        for i in range(KILLS):
            rig.run_until_killed(rnd.uniform(0.05, 1.5))
            # The daemon is down: verify opens the volumes too.
            rc, doc = st.verify(read_data=True)
            assert rc == 0 and doc['Errors'] == 0, (i, rig.kills, doc)
            st.start()
            rig.after_restart()
            if i % 10 == 9:
                st.gc('--grace', '0')
        # The end: every snapshot completed, the daemon stops cleanly, all is clean.
        for sid in [s for s in rig.settled if s in rig.snaps and s not in rig.errored]:
            rig.check_snapshot(sid)
        st.gc('--grace', '0')
        st.stop()
        doc = st.assert_clean(read_data=True, warnings_ok=True)
        print('crash test: %d kills in %.0fs %s; %d snapshots completed, %d in error, %d checks'
              % (KILLS, time.time() - t0, rig.kills, len(rig.settled) - len(rig.errored),
                 len(rig.errored), rig.checked), doc['Checked'])
        assert len(rig.settled) > len(rig.errored)
    finally:
        if rig.timer:
            rig.timer.cancel()
        if st.daemon.proc and st.daemon.proc.poll() is not None:
            st.daemon.proc = None
        remove_store(st)


# ---- a full disk ----

def test_full_disk():
    st = make_store('amid-full-', start=False)
    region = st.region_dir
    saved = os.path.join(st.tmp, 'region-saved')
    shutil.copytree(region, saved, symlinks=True)
    shutil.rmtree(region)
    os.makedirs(region, mode=0o700)
    p = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', region],
                       capture_output=True, text=True)
    if p.returncode != 0:
        shutil.rmtree(st.tmp, ignore_errors=True)
        pytest.skip('cannot mount a tmpfs (%s): the full-disk test needs root' % p.stderr.strip())
    try:
        run('cp', '-a', saved + '/.', region + '/')
        st.start()
        # A completed snapshot first.
        v1 = st.volume()
        d1 = os.urandom(16 * BLOCK)
        st.write(v1, d1)
        s1 = st.snapshot(v1)
        # 40 MiB more on another volume fits; its snapshot does not.
        v2 = st.volume()
        d2 = os.urandom(80 * BLOCK)
        st.write(v2, d2)
        sid = st.ec2.create_snapshot(VolumeId=v2)['SnapshotId']
        s = st.wait_snapshot(sid, want=None)
        assert s['State'] == 'error' and s.get('StateMessage'), s
        print('full disk: snapshot %s: %s' % (s['State'], s['StateMessage']))
        # Writes past the space fail with an I/O error; nothing that was there is harmed.
        p = run('qemu-io', '-f', 'raw', '-c', 'write -P 0x33 %d %d' % (80 * BLOCK, 64 << 20),
                '-c', 'flush', st.uri(v2), check=False)
        assert p.returncode != 0 or b'error' in (p.stdout + p.stderr).lower(), p
        print('full disk: write past the space: exit %d: %s' % (
            p.returncode, (p.stdout + p.stderr).decode(errors='replace').strip()[-200:]))
        r = None
        try:
            r = st.ec2.create_snapshot(VolumeId=v2)['SnapshotId']
        except botocore.exceptions.ClientError as e:
            print('full disk: CreateSnapshot: %s' % e)
            assert e.response['ResponseMetadata']['HTTPStatusCode'] >= 500 or \
                'Insufficient' in e.response['Error']['Code'], e.response
        if r:
            assert st.wait_snapshot(r, want=None)['State'] == 'error'
        assert st.read(s1, 16 * BLOCK) == d1
        assert st.read(v1, 16 * BLOCK) == d1
        assert st.read(v2, 80 * BLOCK) == d2
        assert st.ec2.describe_snapshots(SnapshotIds=[s1])['Snapshots'][0]['State'] == \
            'completed'
        st.assert_clean(warnings_ok=True)
        # Space freed (the volume, then what the failed captures left): snapshots work again.
        st.ec2.delete_volume(VolumeId=v2)
        deadline = time.time() + 30
        while os.path.exists(os.path.join(region, 'volumes', v2)):
            assert time.time() < deadline
            time.sleep(0.1)
        st.gc('--grace', '0')
        st.write(v1, b'\x44' * 4096, offset=3 * BLOCK)
        s3 = st.snapshot(v1)
        want = bytearray(d1)
        want[3 * BLOCK:3 * BLOCK + 4096] = b'\x44' * 4096
        assert st.read(s3, 16 * BLOCK) == bytes(want)
        assert st.read(s1, 16 * BLOCK) == d1
        st.stop()
        st.assert_clean()
    finally:
        if st.daemon.proc:
            st.daemon.proc.kill()
            st.daemon.proc.wait()
            st.daemon.proc = None
        subprocess.run(['umount', region], capture_output=True)
        if os.path.ismount(region):
            subprocess.run(['umount', '-l', region], capture_output=True)
        shutil.rmtree(st.tmp, ignore_errors=True)
