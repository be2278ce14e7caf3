"""Volumes and snapshots over the daemon's NBD server, read and written with qemu-img, nbdcopy
and nbdinfo: bit-exact round trips, snapshots taken while a volume is written, incremental
snapshots storing only changed blocks, one writer at a time, read-only snapshots."""
import hashlib
import json
import os
import subprocess
import time

import pytest

BLOCK = 512 * 1024


def uri(amid, name):
    return 'nbd+unix:///%s?socket=%s/run/nbd.sock' % (name, amid.datadir)


def run(*args, check=True, **kw):
    p = subprocess.run(list(args), capture_output=True, timeout=120, **kw)
    if check and p.returncode != 0:
        raise AssertionError('%s failed: %s' % (args[0], p.stderr.decode(errors='replace')))
    return p


def wait_snapshot(ec2, sid, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = ec2.describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]
        if s['State'] != 'pending':
            assert s['State'] == 'completed', s
            return s
        time.sleep(0.1)
    raise AssertionError('snapshot %s still pending' % sid)


def chunk_bytes(amid):
    total = 0
    for root, _, files in os.walk(os.path.join(amid.datadir, 'regions', 'us-east-1', 'chunks')):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


@pytest.fixture
def data_file(tmp_path):
    """48 MiB: random, repeated and zero regions, not block aligned at the end."""
    p = tmp_path / 'disk.raw'
    with open(p, 'wb') as f:
        f.write(os.urandom(16 << 20))
        f.write(b'amid' * (4 << 20))
        f.write(bytes(8 << 20))
        f.write(os.urandom((8 << 20) - 4096))
    return p


def test_write_snapshot_restore_bit_exact(amid, ec2, data_file, tmp_path):
    vid = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    info = run('nbdinfo', '--json', uri(amid, vid)).stdout.decode()
    assert '"export-size": 1073741824' in info
    run('nbdcopy', str(data_file), uri(amid, vid))
    sid = ec2.create_snapshot(VolumeId=vid)['SnapshotId']
    snap = wait_snapshot(ec2, sid)
    assert snap['State'] == 'completed'
    # The snapshot reads back bit-exact, read-only.
    out = tmp_path / 'out.raw'
    run('qemu-img', 'convert', '-f', 'raw', '-O', 'raw', uri(amid, sid), str(out))
    assert os.path.getsize(out) == 1 << 30
    n = os.path.getsize(data_file)
    with open(out, 'rb') as a, open(data_file, 'rb') as b:
        assert hashlib.sha256(a.read(n)).digest() == hashlib.sha256(b.read()).digest()
        assert a.read() == bytes((1 << 30) - n)
    p = run('qemu-io', '-f', 'raw', '-c', 'write 0 4k', uri(amid, sid), check=False)
    assert p.returncode != 0 or b'error' in (p.stdout + p.stderr).lower()
    # A snapshot may be read over several connections at once (NBD_FLAG_CAN_MULTI_CONN: the
    # same immutable bytes on each); a volume, one writer at a time, does not say so.
    assert json.loads(run('nbdinfo', '--json', uri(amid, sid)).stdout)['exports'][0][
        'can_multi_conn'] is True
    assert json.loads(info)['exports'][0]['can_multi_conn'] is False
    out4 = tmp_path / 'out4.raw'
    run('nbdcopy', '--connections=4', uri(amid, sid), str(out4))
    with open(out4, 'rb') as a, open(data_file, 'rb') as b:
        assert a.read(n) == b.read()
    os.unlink(out4)
    # A volume made from the snapshot (bigger) has the same bytes.
    v2 = ec2.create_volume(AvailabilityZone='us-east-1a', Size=2, SnapshotId=sid)['VolumeId']
    out2 = tmp_path / 'out2.raw'
    run('nbdcopy', uri(amid, v2), str(out2))
    assert os.path.getsize(out2) == 2 << 30
    with open(out2, 'rb') as a, open(data_file, 'rb') as b:
        assert a.read(n) == b.read()
    for v in (vid, v2):
        ec2.delete_volume(VolumeId=v)
    ec2.delete_snapshot(SnapshotId=sid)


def test_incremental_snapshot_stores_only_changes(amid, ec2):
    vid = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    # 100 blocks of random data, then a snapshot.
    src = os.urandom(100 * BLOCK)
    run('nbdcopy', '-', uri(amid, vid), input=src)
    before = chunk_bytes(amid)
    s1 = wait_snapshot(ec2, ec2.create_snapshot(VolumeId=vid)['SnapshotId'])
    first = chunk_bytes(amid) - before
    assert first >= 100 * BLOCK * 0.99
    # Change one block (1%) with a 4 KiB write in its middle.
    run('qemu-io', '-f', 'raw', '-c', 'write -P 0x5a %d 4k' % (37 * BLOCK + 8192), uri(amid, vid))
    mid = chunk_bytes(amid)
    s2 = wait_snapshot(ec2, ec2.create_snapshot(VolumeId=vid)['SnapshotId'])
    second = chunk_bytes(amid) - mid
    assert second <= 1.1 * BLOCK, (first, second)
    assert (first + second) <= 1.02 * first
    # Both snapshots read back what they held.
    a = run('nbdcopy', uri(amid, s1['SnapshotId']), '-').stdout[:100 * BLOCK]
    b = run('nbdcopy', uri(amid, s2['SnapshotId']), '-').stdout[:100 * BLOCK]
    assert a == src
    off = 37 * BLOCK + 8192
    assert b[:off] == src[:off] and b[off:off + 4096] == b'\x5a' * 4096
    assert b[off + 4096:] == src[off + 4096:]
    ec2.delete_volume(VolumeId=vid)


def test_point_in_time_while_writing(amid, ec2):
    """A snapshot taken while a writer holds the volume has exactly what was flushed before."""
    vid = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    run('nbdcopy', '-', uri(amid, vid), input=b'\x01' * (8 * BLOCK))
    # A writer that keeps writing 0x02 blocks while the snapshot is taken.
    proc = subprocess.Popen(['qemu-io', '-f', 'raw', uri(amid, vid)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.stdin.write(b'write -P 0x02 0 512k\nflush\n')
    proc.stdin.flush()
    time.sleep(0.5)
    sid = ec2.create_snapshot(VolumeId=vid)['SnapshotId']
    proc.stdin.write(b'write -P 0x03 0 512k\nwrite -P 0x03 1m 512k\nflush\nquit\n')
    proc.stdin.close()
    proc.wait(timeout=60)
    wait_snapshot(ec2, sid)
    snap = run('nbdcopy', uri(amid, sid), '-').stdout
    vol = run('nbdcopy', uri(amid, vid), '-').stdout
    assert snap[:BLOCK] == b'\x02' * BLOCK and snap[2 * BLOCK:3 * BLOCK] == b'\x01' * BLOCK
    assert vol[:BLOCK] == b'\x03' * BLOCK and vol[2 * BLOCK:3 * BLOCK] == b'\x03' * BLOCK
    ec2.delete_volume(VolumeId=vid)


def test_one_writer_at_a_time(amid, ec2):
    vid = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    proc = subprocess.Popen(['qemu-io', '-f', 'raw', uri(amid, vid)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    p = run('qemu-io', '-f', 'raw', '-c', 'write 0 4k', uri(amid, vid), check=False)
    assert p.returncode != 0
    # The volume is in use: it cannot be deleted meanwhile.
    import botocore.exceptions
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_volume(VolumeId=vid)
    assert e.value.response['Error']['Code'] == 'VolumeInUse'
    proc.stdin.write(b'quit\n')
    proc.stdin.close()
    proc.wait(timeout=30)
    run('qemu-io', '-f', 'raw', '-c', 'write 0 4k', uri(amid, vid))
    p = run('nbdinfo', uri(amid, 'vol-0123456789abcdef0'), check=False)
    assert p.returncode != 0
    ec2.delete_volume(VolumeId=vid)
