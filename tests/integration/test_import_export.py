"""`amid import`, `amid export` and `amid nbd-uri`, driven as users drive them: disk images in
(raw read directly; qcow2 and vmdk through qemu-img into the CLI's NBD snapshot builder), through
the EBS direct API of the running daemon or straight into its data directory (--data), and
snapshots out to sparse raw files or qcow2 images, every round trip checked byte for byte."""
import errno
import json
import os
import pty
import re
import struct
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AMID = os.environ.get('AMID_BIN') or os.path.join(ROOT, 'build', 'amid')
BLOCK = 512 * 1024
GIB = 1 << 30


def amid_run(*args, env=None, expect=0, cwd=None):
    """Runs the amid command line; checks its exit code and that the sanitizers stayed quiet."""
    p = subprocess.run([AMID, *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=120, cwd=cwd)
    assert 'AddressSanitizer' not in p.stderr and 'runtime error' not in p.stderr, p.stderr
    if expect is not None:
        assert p.returncode == expect, 'amid %s exited %d: %s' % (
            ' '.join(map(str, args)), p.returncode, p.stderr)
    return p


def clean_env():
    env = dict(os.environ)
    for k in ('AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_EBS', 'AWS_ENDPOINT_URL_EC2', 'AWS_REGION',
              'AWS_DEFAULT_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY',
              'AWS_SESSION_TOKEN'):
        env.pop(k, None)
    return env


def api_env(amid, key=None, secret=None):
    env = clean_env()
    env.update(AWS_ENDPOINT_URL=amid.endpoint, AWS_ACCESS_KEY_ID=key or amid.admin.key,
               AWS_SECRET_ACCESS_KEY=secret or amid.admin.secret, AWS_DEFAULT_REGION='us-east-1')
    return env


def import_json(amid, path, *extra, direct=False):
    if direct:
        p = amid_run('import', path, '--format', 'json', '--data', amid.datadir, *extra,
                     env=clean_env())
    else:
        p = amid_run('import', path, '--format', 'json', *extra, env=api_env(amid))
    # Not a terminal: no progress bar, no escape sequences.
    assert '\r' not in p.stderr and '\033' not in p.stderr
    return json.loads(p.stdout)


def export(amid, sid, path, *extra, direct=False):
    if direct:
        return amid_run('export', sid, path, '--data', amid.datadir, *extra, env=clean_env())
    return amid_run('export', sid, path, *extra, env=api_env(amid))


def nonzero_blocks(data):
    padded = data + bytes(-len(data) % BLOCK)
    return sum(1 for i in range(0, len(padded), BLOCK) if padded[i:i + BLOCK].count(0) != BLOCK)


def assert_image(path, data, size=GIB):
    """`path` holds `data` then zeroes up to `size`, and is sparse."""
    st = os.stat(path)
    assert st.st_size == size
    with open(path, 'rb') as f:
        assert f.read(len(data)) == data
        fd = f.fileno()
        pos = len(data)
        while True:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                assert e.errno == errno.ENXIO
                break
            f.seek(pos)
            chunk = f.read(1 << 20)
            if not chunk:
                break
            assert chunk.count(0) == len(chunk), 'non-zero bytes at %d' % pos
            pos += len(chunk)
    assert st.st_blocks * 512 < 16 << 20, 'not sparse: %d blocks' % st.st_blocks


def chunk_bytes(amid):
    total = 0
    for root, _, files in os.walk(os.path.join(amid.datadir, 'regions', 'us-east-1', 'chunks')):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


@pytest.fixture(scope='module')
def src(tmp_path_factory):
    """About 4.5 MiB: random, repeated and zero regions, not a multiple of 512 KiB."""
    d = tmp_path_factory.mktemp('imp')
    data = (os.urandom(2 * BLOCK + 1000) + b'amid' * (3 * BLOCK // 4) + bytes(4 * BLOCK - 1000) +
            os.urandom(777))
    p = d / 'disk.raw'
    p.write_bytes(data)
    for fmt in ('qcow2', 'vmdk'):
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', fmt, str(p),
                        str(d / ('disk.' + fmt))], check=True, timeout=60)
    return d, data


@pytest.fixture(scope='module')
def raw_snap(amid, src):
    d, data = src
    return import_json(amid, d / 'disk.raw')['SnapshotId']


@pytest.fixture(scope='module')
def ebs(amid):
    return amid.client('ebs')


def test_raw_import_export_api(amid, ec2, src, raw_snap, tmp_path):
    d, data = src
    s = ec2.describe_snapshots(SnapshotIds=[raw_snap])['Snapshots'][0]
    assert s['State'] == 'completed' and s['VolumeSize'] == 1
    assert s['OwnerId'] == amid.admin.account_id
    assert s['Description'] == 'Imported by amid from disk.raw'
    # env output, as scripts eval it; a description and a larger size.
    p = amid_run('import', d / 'disk.raw', '--description', 'mine', '--size-gib', '2',
                 env=api_env(amid))
    m = re.fullmatch(r'AMID_SNAPSHOT_ID=(snap-[0-9a-f]{17}) AMID_VOLUME_SIZE=2\n', p.stdout)
    assert m, p.stdout
    s2 = ec2.describe_snapshots(SnapshotIds=[m.group(1)])['Snapshots'][0]
    assert s2['VolumeSize'] == 2 and s2['Description'] == 'mine' and s2['State'] == 'completed'
    out = tmp_path / 'out.raw'
    p = export(amid, raw_snap, out, '--format', 'json')
    r = json.loads(p.stdout)
    assert r['VolumeSize'] == 1 and r['Blocks'] == nonzero_blocks(data)
    assert_image(out, data)
    # A second export replaces the file; no temporary file is left next to it.
    export(amid, m.group(1), out)
    assert_image(out, data, 2 * GIB)
    assert os.listdir(tmp_path) == ['out.raw']


def test_raw_import_export_direct(amid, ec2, src, raw_snap, tmp_path):
    d, data = src
    r = import_json(amid, d / 'disk.raw', direct=True)
    sid = r['SnapshotId']
    assert r['VolumeSize'] == 1 and r['ChangedBlocksCount'] == nonzero_blocks(data)
    assert r['Status'] == 'completed'
    # Made as the data directory's first account: the API shows it to that account.
    s = ec2.describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]
    assert s['State'] == 'completed' and s['OwnerId'] == amid.admin.account_id
    export(amid, sid, tmp_path / 'a.raw', direct=True)
    assert_image(tmp_path / 'a.raw', data)
    export(amid, sid, tmp_path / 'b.raw')
    assert_image(tmp_path / 'b.raw', data)
    export(amid, raw_snap, tmp_path / 'c.raw', '--parallel', '3', direct=True)
    assert_image(tmp_path / 'c.raw', data)


def test_qcow2_and_vmdk_import_identically(amid, ebs, src, raw_snap):
    d, data = src
    got = [
        import_json(amid, d / 'disk.qcow2'),
        import_json(amid, d / 'disk.vmdk', '--image-format', 'vmdk', '--parallel', '2'),
        import_json(amid, d / 'disk.qcow2', '--image-format', 'qcow2', direct=True),
    ]
    assert [g['SourceFormat'] for g in got] == ['qcow2', 'vmdk', 'qcow2']
    for g in got:
        assert g['VolumeSize'] == 1 and g['ChangedBlocksCount'] == nonzero_blocks(data)
        ch = ebs.list_changed_blocks(FirstSnapshotId=raw_snap, SecondSnapshotId=g['SnapshotId'])
        assert ch['ChangedBlocks'] == []


def test_export_qcow2(amid, src, raw_snap, tmp_path):
    d, data = src
    for direct in (False, True):
        out = tmp_path / ('out-%d.qcow2' % direct)
        export(amid, raw_snap, out, '--image-format', 'qcow2', direct=direct)
        info = json.loads(subprocess.run(['qemu-img', 'info', '--output=json', str(out)],
                                         capture_output=True, check=True).stdout)
        assert info['format'] == 'qcow2' and info['virtual-size'] == GIB
        assert os.path.getsize(out) < 16 << 20  # zero blocks take no room
        p = subprocess.run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', str(out),
                            str(d / 'disk.raw')], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr


def test_second_import_stores_nothing_new(amid, src, raw_snap):
    d, data = src
    before = chunk_bytes(amid)
    assert before > 0
    r1 = import_json(amid, d / 'disk.raw')
    r2 = import_json(amid, d / 'disk.vmdk', direct=True)
    assert r1['ChangedBlocksCount'] == r2['ChangedBlocksCount'] == nonzero_blocks(data)
    assert chunk_bytes(amid) == before


def test_progress_bar_on_a_terminal(amid, src):
    d, data = src
    master, slave = pty.openpty()
    try:
        p = subprocess.run([AMID, 'import', str(d / 'disk.raw')], stdout=subprocess.PIPE,
                           stderr=slave, env=api_env(amid), timeout=120)
        os.close(slave)
        slave = None
        out = b''
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert p.returncode == 0
    text = out.decode(errors='replace')
    assert 'import' in text and '100%' in text and 'MiB/s' in text and '\r' in text
    assert p.stdout.startswith(b'AMID_SNAPSHOT_ID=snap-')


def test_bad_input(amid, tmp_path, raw_snap):
    env = api_env(amid)
    p = amid_run('import', tmp_path / 'missing.raw', env=env, expect=1)
    assert 'No such file or directory' in p.stderr and len(p.stderr.splitlines()) == 1
    garbage = tmp_path / 'garbage.qcow2'
    garbage.write_bytes(os.urandom(100000))
    p = amid_run('import', garbage, '--image-format', 'qcow2', env=env, expect=1)
    assert 'qcow2' in p.stderr and len(p.stderr.splitlines()) == 1
    # A qcow2 whose first L1 entry is damaged: qemu-img info accepts it, the conversion fails
    # after the snapshot was started, and the half-made snapshot is removed.
    good = tmp_path / 'good.raw'
    good.write_bytes(os.urandom(4 << 20))
    bad = tmp_path / 'bad-l1.qcow2'
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', str(good), str(bad)],
                   check=True)
    with open(bad, 'r+b') as f:
        l1 = struct.unpack('>Q', f.read(48)[40:48])[0]
        f.seek(l1)
        f.write(struct.pack('>Q', 0x8000000000000201))  # an unaligned L2 table offset
    ec2 = amid.client('ec2')
    count = len(ec2.describe_snapshots(OwnerIds=['self'])['Snapshots'])
    p = amid_run('import', bad, env=env, expect=1)
    assert 'qemu-img convert failed' in p.stderr and len(p.stderr.splitlines()) == 1
    p = amid_run('import', bad, '--data', amid.datadir, env=clean_env(), expect=1)
    assert 'qemu-img convert failed' in p.stderr
    assert len(ec2.describe_snapshots(OwnerIds=['self'])['Snapshots']) == count
    # Credentials: a wrong secret, an unknown key, none at all.
    src = tmp_path / 'small.raw'
    src.write_bytes(b'x' * 1000)
    p = amid_run('import', src, env=api_env(amid, secret='wrong' * 8), expect=1)
    assert 'InvalidSignatureException' in p.stderr and 'HTTP 403' in p.stderr
    p = amid_run('import', src, env=api_env(amid, key='AKIAAAAAAAAAAAAAAAAA'), expect=1)
    assert 'UnrecognizedClientException' in p.stderr
    p = amid_run('import', src, env=clean_env(), expect=1)
    assert 'AWS_ACCESS_KEY_ID' in p.stderr
    # Unknown snapshots, through the API and directly.
    p = amid_run('export', 'snap-0123456789abcdef0', tmp_path / 'x.raw', env=env, expect=1)
    assert 'ResourceNotFoundException' in p.stderr
    p = amid_run('export', 'snap-0123456789abcdef0', tmp_path / 'x.raw', '--data', amid.datadir,
                 env=clean_env(), expect=1)
    assert 'NotFound' in p.stderr
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.x.raw')]
    # Usage errors exit 2.
    amid_run('import', env=env, expect=2)
    amid_run('import', src, '--image-format', 'iso', env=env, expect=2)
    amid_run('import', src, '--parallel', '0', env=env, expect=2)
    amid_run('export', raw_snap, env=env, expect=2)
    amid_run('export', raw_snap, tmp_path / 'y', '--image-format', 'vmdk', env=env, expect=2)
    amid_run('nbd-uri', raw_snap, env=env, expect=2)


def test_nbd_uri(amid, ec2, src, raw_snap):
    d, data = src
    sock = os.path.join(os.path.realpath(amid.datadir), 'run', 'nbd.sock')
    p = amid_run('nbd-uri', raw_snap, '--data', amid.datadir)
    uri = p.stdout.strip()
    assert uri == 'nbd+unix:///%s?socket=%s' % (raw_snap, sock)
    size = subprocess.run(['nbdinfo', '--size', uri], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()
    assert size == str(GIB)
    info = json.loads(subprocess.run(['qemu-img', 'info', '--output=json', uri],
                                     capture_output=True, check=True, timeout=60).stdout)
    assert info['virtual-size'] == GIB
    c = subprocess.run(['qemu-img', 'compare', '-F', 'raw', uri, str(d / 'disk.raw')],
                       capture_output=True, text=True, timeout=60)
    assert c.returncode == 0, c.stdout + c.stderr
    vid = ec2.create_volume(AvailabilityZone='us-east-1a', Size=2)['VolumeId']
    p = amid_run('nbd-uri', vid, '--data', amid.datadir, '--format', 'env')
    assert p.stdout == 'AMID_NBD_URI=nbd+unix:///%s?socket=%s\n' % (vid, sock)
    p = amid_run('nbd-uri', vid, '--data', amid.datadir, '--format', 'json')
    assert json.loads(p.stdout)['Uri'] == 'nbd+unix:///%s?socket=%s' % (vid, sock)
    out = subprocess.run(['nbdinfo', '--size', 'nbd+unix:///%s?socket=%s' % (vid, sock)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == str(2 * GIB)
    ec2.delete_volume(VolumeId=vid)
    amid_run('nbd-uri', 'snap-0123456789abcdef0', '--data', amid.datadir, expect=1)
    amid_run('nbd-uri', vid, '--data', amid.datadir, expect=1)
    amid_run('nbd-uri', 'not-an-id', '--data', amid.datadir, expect=1)


def test_odd_file_names(amid, ebs, src, raw_snap, tmp_path):
    """Names qemu-img would take for a protocol or an option are still files."""
    d, data = src
    qcow2 = (d / 'disk.qcow2').read_bytes()
    for name in ('json:{"driver":"null-co"}.qcow2', '-f'):
        (tmp_path / name).write_bytes(qcow2)
        p = amid_run('import', '--format', 'json', '--', name, env=api_env(amid), cwd=tmp_path)
        r = json.loads(p.stdout)
        ch = ebs.list_changed_blocks(FirstSnapshotId=raw_snap, SecondSnapshotId=r['SnapshotId'])
        assert r['SourceFormat'] == 'qcow2' and ch['ChangedBlocks'] == []
    amid_run('export', raw_snap, 'a:b.qcow2', '--image-format', 'qcow2', env=api_env(amid),
             cwd=tmp_path)
    c = subprocess.run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', './a:b.qcow2',
                        str(d / 'disk.raw')], capture_output=True, text=True, cwd=tmp_path)
    assert c.returncode == 0, c.stdout + c.stderr
    # FILE is replaced by a rename: never a device node.
    p = amid_run('export', raw_snap, '/dev/null', env=api_env(amid), expect=1)
    assert 'not a regular file' in p.stderr
