"""`amid verify`, `amid gc` and `amid du` on data directories of their own (each test makes one,
with its own daemon): verify is clean on a healthy directory and finds every damaged chunk and
dangling reference; damaged data is never served (NBD reads fail, GetSnapshotBlock answers 5xx);
gc frees exactly what nothing refers to, honours its grace period and --dry-run, keeps pending
uploads' blocks, chunks a new put deduplicated against and volumes' base maps, and is safe while
the daemon works; du's numbers match the chunk files."""
import os
import subprocess
import threading
import time

import botocore.exceptions
import pytest

from conftest import AMID
from storage_helpers import BLOCK, NbdError, chunk_hex, linear, make_store, remove_store, run, sha


@pytest.fixture
def st():
    s = make_store('amid-maint-')
    yield s
    remove_store(s)


def problems(doc, kind=None):
    return [p for p in doc['Problems'] if kind is None or p['Kind'] == kind]


def test_verify_clean_on_healthy_directory(st):
    # A volume with two snapshots, a volume made from one, an EBS upload completed and another
    # pending, an image.
    vid = st.volume()
    data = os.urandom(12 * BLOCK)
    st.write(vid, data)
    s1 = st.snapshot(vid)
    st.write(vid, b'\x11' * 8192, offset=3 * BLOCK)
    s2 = st.snapshot(vid)
    v2 = st.ec2.create_volume(AvailabilityZone='us-east-1a', Size=2, SnapshotId=s1)['VolumeId']
    st.write(v2, os.urandom(BLOCK), offset=20 * BLOCK)
    blocks = {0: os.urandom(BLOCK), 9: b'E' * BLOCK, 2047: os.urandom(BLOCK)}
    up = st.upload(blocks)
    pending = st.upload({4: os.urandom(BLOCK), 5: data[:BLOCK]}, complete=False)
    st.ec2.register_image(Name='maint-healthy', RootDeviceName='/dev/xvda',
                          BlockDeviceMappings=[{'DeviceName': '/dev/xvda',
                                                'Ebs': {'SnapshotId': s2}},
                                               {'DeviceName': '/dev/xvdb',
                                                'Ebs': {'SnapshotId': up}}])
    doc = st.assert_clean(read_data=False)
    c = doc['Checked']
    assert c['Snapshots'] == 3 and c['Volumes'] == 2 and c['Uploads'] == 1 and c['Images'] == 1
    assert c['ChunksRead'] == 0 and c['Chunks'] >= 12 + 1 + 3
    assert not c['VolumesOpened']  # a daemon serves: volumes are only read, not opened
    doc = st.assert_clean(read_data=True)
    assert doc['Checked']['ChunksRead'] == doc['Checked']['Chunks']
    assert doc['Checked']['BytesRead'] >= 14 * BLOCK
    # The env format: a summary line scripts can eval.
    p = run(AMID, 'verify', '--data', st.datadir, '--read-data')
    line = p.stdout.decode().strip().splitlines()[-1]
    assert line.startswith('AMID_VERIFY_OK=true AMID_VERIFY_ERRORS=0'), line
    # With the daemon stopped, volumes are also opened with vol_open.
    st.stop()
    doc = st.assert_clean(read_data=True)
    assert doc['Checked']['VolumesOpened']
    st.start()
    assert st.ec2.describe_snapshots(SnapshotIds=[pending])['Snapshots'][0]['State'] == 'pending'


def test_verify_finds_damaged_chunks(st):
    blocks = {i: os.urandom(BLOCK) for i in (0, 1, 2, 3, 5)}
    sid = st.upload(blocks)
    ids = {i: chunk_hex(d) for i, d in blocks.items()}
    # Corrupt block 0's chunk (a byte of its payload), delete block 1's, truncate block 2's.
    with open(st.chunk_path(ids[0]), 'r+b') as f:
        f.seek(32 + 1000)
        b = f.read(1)
        f.seek(32 + 1000)
        f.write(bytes([b[0] ^ 0x40]))
    os.unlink(st.chunk_path(ids[1]))
    size = os.path.getsize(st.chunk_path(ids[2]))
    os.truncate(st.chunk_path(ids[2]), size // 2)

    # Without reading data, only the missing chunk shows.
    rc, doc = st.verify()
    assert rc == 1 and not doc['Ok'] and doc['Errors'] == 1, doc
    (p,) = problems(doc)
    assert p['Kind'] == 'chunk-missing' and p['Chunk'] == ids[1] and p['Id'] == sid, p
    assert 'block 1 of %s' % sid in p['Detail'], p
    # Reading every chunk finds all three, each once.
    rc, doc = st.verify(read_data=True)
    assert rc == 1 and doc['Errors'] == 3, doc
    found = {p['Chunk']: p['Kind'] for p in problems(doc)}
    assert found == {ids[0]: 'chunk-corrupt', ids[1]: 'chunk-missing',
                     ids[2]: 'chunk-truncated'}, doc
    assert all(p['Id'] == sid and p['Severity'] == 'error' for p in problems(doc))
    # The env format names them too, and exits 1.
    p = run(AMID, 'verify', '--data', st.datadir, '--read-data', check=False)
    assert p.returncode == 1
    out = p.stdout.decode()
    for i in (0, 1, 2):
        assert 'AMID_VERIFY_CHUNK=%s' % ids[i] in out, out
    assert out.strip().splitlines()[-1].startswith('AMID_VERIFY_OK=false AMID_VERIFY_ERRORS=3')

    # Over NBD the damaged blocks fail with an error; nothing wrong is ever returned.
    for i in range(7):
        if i in (0, 1, 2):
            with pytest.raises(NbdError):
                st.read(sid, BLOCK, i * BLOCK)
        else:
            assert st.read(sid, BLOCK, i * BLOCK) == blocks.get(i, bytes(BLOCK)), i
    out = os.path.join(st.tmp, 'out.raw')
    p = run('nbdcopy', st.uri(sid), out, check=False)
    assert p.returncode != 0
    p = run('qemu-img', 'convert', '-f', 'raw', '-O', 'raw', st.uri(sid), out, check=False)
    assert p.returncode != 0
    # amid export (direct, with or without --verify) fails too, and leaves no file.
    exported = os.path.join(st.tmp, 'exported.raw')
    for extra in ([], ['--verify']):
        p = run(AMID, 'export', sid, exported, '--data', st.datadir, '--no-progress', *extra,
                check=False)
        assert p.returncode == 1 and b'block ' in p.stderr, p.stderr
        assert not os.path.exists(exported)
        assert not [n for n in os.listdir(st.tmp) if '.amid-' in n]  # no temporary left
    # GetSnapshotBlock answers 5xx for them, the data for the others.
    tokens = {b['BlockIndex']: b['BlockToken']
              for b in st.ebs.list_snapshot_blocks(SnapshotId=sid)['Blocks']}
    for i in blocks:
        if i in (0, 1, 2):
            with pytest.raises(botocore.exceptions.ClientError) as e:
                st.ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockToken=tokens[i])
            assert e.value.response['ResponseMetadata']['HTTPStatusCode'] >= 500, e.value.response
        else:
            r = st.ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockToken=tokens[i])
            assert r['BlockData'].read() == blocks[i]
    # du counts the missing chunk.
    (d,) = [s for s in st.du()['Snapshots'] if s['SnapshotId'] == sid]
    assert d['MissingChunks'] == 1 and d['Blocks'] == 5


def test_export_verify_finds_a_swapped_chunk(st):
    """A chunk file replaced by another valid chunk (its own checksums intact) holds other bytes
    than its name says: a plain direct export trusts the store's checks, as NBD reads do;
    `amid export --verify` re-hashes every block and refuses; verify --read-data reports it."""
    blocks = {0: os.urandom(BLOCK), 1: os.urandom(BLOCK)}
    sid = st.upload(blocks)
    a, b = st.chunk_path(chunk_hex(blocks[0])), st.chunk_path(chunk_hex(blocks[1]))
    with open(b, 'rb') as f:
        other = f.read()
    with open(a, 'wb') as f:
        f.write(other)
    out = os.path.join(st.tmp, 'swapped.raw')
    p = run(AMID, 'export', sid, out, '--data', st.datadir, '--no-progress', '--verify',
            check=False)
    assert p.returncode == 1 and b'does not match its SHA-256' in p.stderr, p.stderr
    assert not os.path.exists(out)
    run(AMID, 'export', sid, out, '--data', st.datadir, '--no-progress')
    with open(out, 'rb') as f:
        assert f.read(BLOCK) == blocks[1]  # what the swapped file holds
    os.unlink(out)
    rc, doc = st.verify(read_data=True)
    assert rc == 1 and [p['Chunk'] for p in problems(doc)] == [chunk_hex(blocks[0])], doc
    # --verify is direct mode's (the API path checks x-amz-Checksum always).
    assert run(AMID, 'export', sid, out, '--verify', check=False).returncode == 2


def test_verify_finds_dangling_references(st):
    vid = st.volume()
    st.write(vid, os.urandom(2 * BLOCK))
    s1 = st.snapshot(vid)
    vol2 = st.volume()
    st.write(vol2, os.urandom(BLOCK))
    s2 = st.upload({0: os.urandom(BLOCK)})
    # A map file of a snapshot that never existed: a warning, not an error.
    maps = os.path.join(st.region_dir, 'maps')
    with open(os.path.join(maps, s2 + '.map'), 'rb') as f:
        m = f.read()
    with open(os.path.join(maps, 'snap-0123456789abcdef0.map'), 'wb') as f:
        f.write(m)
    os.makedirs(os.path.join(st.region_dir, 'volumes', 'vol-0123456789abcdef0'))
    rc, doc = st.verify()
    assert rc == 0 and doc['Ok'] and doc['Warnings'] == 2, doc
    assert {p['Kind'] for p in problems(doc)} == {'orphan-map', 'orphan-volume-dir'}
    # A completed snapshot's map gone; a volume's layer gone (its writes would be lost).
    os.unlink(os.path.join(maps, s2 + '.map'))
    vdir = os.path.join(st.region_dir, 'volumes', vol2)
    layer = sorted(f for f in os.listdir(vdir) if f.endswith('.data'))[-1]
    os.unlink(os.path.join(vdir, layer))
    rc, doc = st.verify()
    assert rc == 1 and doc['Errors'] == 2, doc
    kinds = {(p['Kind'], p['Id']) for p in problems(doc) if p['Severity'] == 'error'}
    assert kinds == {('snapshot-map-missing', s2), ('volume-layer-missing', vol2)}, doc
    # A volume's base map gone (the volume's data with it).
    os.unlink(os.path.join(maps, s1 + '.map'))
    rc, doc = st.verify()
    kinds = {(p['Kind'], p['Id']) for p in problems(doc) if p['Severity'] == 'error'}
    assert ('volume-base-missing', vid) in kinds and ('snapshot-map-missing', s1) in kinds, doc
    # gc refuses to work on a directory whose volumes' bases it cannot read.
    p = run(AMID, 'gc', '--data', st.datadir, '--grace', '0', check=False)
    assert p.returncode == 1 and b'nothing was deleted' in p.stderr, p.stderr


def test_gc_frees_what_deleted_snapshots_held(st):
    vid = st.volume()
    src = bytearray(os.urandom(64 * BLOCK))
    st.write(vid, bytes(src))
    s1 = st.snapshot(vid)
    v1 = bytes(src)
    src[10 * BLOCK:20 * BLOCK] = os.urandom(10 * BLOCK)
    st.write(vid, bytes(src[10 * BLOCK:20 * BLOCK]), offset=10 * BLOCK)
    s2 = st.snapshot(vid)
    src[10 * BLOCK:20 * BLOCK] = os.urandom(10 * BLOCK)
    st.write(vid, bytes(src[10 * BLOCK:20 * BLOCK]), offset=10 * BLOCK)
    s3 = st.snapshot(vid)
    v3 = bytes(src)
    files = st.chunk_files()
    assert len(files) == 84
    st.ec2.delete_snapshot(SnapshotId=s2)
    before = st.chunk_bytes()

    # The default grace period spares everything this recent.
    g = st.gc()
    assert g['FreedChunks'] == 0 and g['RecentChunks'] == 10 and g['ReferencedChunks'] == 74, g
    # A dry run counts without deleting.
    g = st.gc('--grace', '0', '--dry-run')
    assert g['DryRun'] and g['FreedChunks'] == 10, g
    assert st.chunk_files() == files
    # Now for real: the ten chunks only s2 held go; the store shrinks by their size.
    g = st.gc('--grace', '0')
    assert g['FreedChunks'] == 10 and g['ReferencedChunks'] == 74, g
    after = st.chunk_files()
    assert len(after) == 74 and set(after) < set(files)
    assert before - st.chunk_bytes() == g['FreedBytes'] >= 10 * BLOCK
    # Nothing left to free; everything remaining reads back bit-exact; verify is clean.
    assert st.gc('--grace', '0')['FreedChunks'] == 0
    assert st.read(s1, 64 * BLOCK) == v1
    assert st.read(s3, 64 * BLOCK) == v3
    assert st.read(vid, 64 * BLOCK) == v3
    st.assert_clean()


def test_gc_keeps_pending_upload_blocks(st):
    blocks = {i: os.urandom(BLOCK) for i in range(6)}
    sid = st.upload({i: blocks[i] for i in range(3)}, complete=False)
    g = st.gc('--grace', '0')
    assert g['FreedChunks'] == 0 and g['ReferencedChunks'] == 3, g
    for i in range(3):
        assert os.path.exists(st.chunk_path(chunk_hex(blocks[i])))
    for i in range(3, 6):
        st.ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=blocks[i],
                                  DataLength=BLOCK, Checksum=sha(blocks[i]),
                                  ChecksumAlgorithm='SHA256')
    assert st.gc('--grace', '0')['FreedChunks'] == 0
    r = st.ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=6, Checksum=linear(blocks),
                                 ChecksumAlgorithm='SHA256', ChecksumAggregationMethod='LINEAR')
    assert r['Status'] == 'completed'
    assert st.read(sid, 6 * BLOCK) == b''.join(blocks[i] for i in range(6))
    st.assert_clean()


def test_gc_spares_chunk_a_new_put_reuses(st):
    """A put that deduplicates against an old, unreferenced chunk refreshes its mtime, so the
    grace period covers the new reference (the race between gc and a dedup)."""
    x = os.urandom(BLOCK)
    s1 = st.upload({0: x})
    st.ec2.delete_snapshot(SnapshotId=s1)
    path = st.chunk_path(chunk_hex(x))
    old = time.time() - 7200
    os.utime(path, (old, old))
    g = st.gc('--dry-run')
    assert g['FreedChunks'] == 1, g  # older than the grace period and unreferenced
    # A new upload puts the same block: nothing is written, but the chunk is young again.
    s2 = st.upload({7: x}, complete=False)
    assert os.stat(path).st_mtime > time.time() - 60
    g = st.gc()
    assert g['FreedChunks'] == 0, g
    st.ebs.complete_snapshot(SnapshotId=s2, ChangedBlocksCount=1, Checksum=linear({7: x}),
                             ChecksumAlgorithm='SHA256', ChecksumAggregationMethod='LINEAR')
    assert st.read(s2, BLOCK, 7 * BLOCK) == x
    st.assert_clean()


def test_volume_base_survives_snapshot_delete_and_gc(st):
    """Deleting the snapshot a volume is based on keeps its map until the volume moves on; gc
    then removes the map and the chunks only it held."""
    vid = st.volume()
    data = bytearray(os.urandom(8 * BLOCK))
    st.write(vid, bytes(data))
    s1 = st.snapshot(vid)
    st.ec2.delete_snapshot(SnapshotId=s1)
    assert os.path.exists(os.path.join(st.region_dir, 'maps', s1 + '.map'))
    g = st.gc('--grace', '0')
    assert g['FreedChunks'] == 0 and g['MapsFreed'] == 0, g
    st.assert_clean()
    st.stop()
    st.start()
    assert st.read(vid, 8 * BLOCK) == bytes(data)
    # The volume moves on to a new snapshot: s1's map is needed no more.
    data[BLOCK:2 * BLOCK] = os.urandom(BLOCK)
    st.write(vid, bytes(data[BLOCK:2 * BLOCK]), offset=BLOCK)
    s2 = st.snapshot(vid)
    rc, doc = st.verify()
    assert rc == 0 and [p['Kind'] for p in problems(doc)] == ['orphan-map'], doc
    g = st.gc('--grace', '0')
    assert g['MapsFreed'] == 1 and g['FreedChunks'] == 1, g
    assert not os.path.exists(os.path.join(st.region_dir, 'maps', s1 + '.map'))
    assert st.read(vid, 8 * BLOCK) == bytes(data) == st.read(s2, 8 * BLOCK)
    st.assert_clean()


def test_du_numbers(st):
    vid = st.volume()
    src = os.urandom(100 * BLOCK)
    st.write(vid, src)
    s1 = st.snapshot(vid)
    st.write(vid, b'\x5a' * 4096, offset=37 * BLOCK + 8192)
    s2 = st.snapshot(vid)
    new37 = bytearray(src[37 * BLOCK:38 * BLOCK])
    new37[8192:8192 + 4096] = b'\x5a' * 4096
    ami = st.ec2.register_image(Name='du-image', RootDeviceName='/dev/xvda',
                                BlockDeviceMappings=[{'DeviceName': '/dev/xvda',
                                                      'Ebs': {'SnapshotId': s2}}])['ImageId']
    files = st.chunk_files()
    blocks1 = [chunk_hex(src[i * BLOCK:(i + 1) * BLOCK]) for i in range(100)]
    old37, n37 = blocks1[37], chunk_hex(bytes(new37))
    stored1 = sum(files[h] for h in blocks1)
    doc = st.du()
    snaps = {s['SnapshotId']: s for s in doc['Snapshots']}
    a, b = snaps[s1], snaps[s2]
    assert a['Blocks'] == b['Blocks'] == 100 and a['FullBytes'] == 100 * BLOCK
    assert a['StoredBytes'] == stored1 and a['Chunks'] == 100
    # 1% changed: the second snapshot's unique bytes are one block's chunk, the rest shared.
    assert a['UniqueBytes'] == files[old37] and b['UniqueBytes'] == files[n37], (a, b, files)
    assert BLOCK * 0.9 < b['UniqueBytes'] < BLOCK * 1.1
    assert b['SharedBytes'] == stored1 - files[old37] == a['SharedBytes']
    assert b['StoredBytes'] == b['UniqueBytes'] + b['SharedBytes']
    assert a['FreedIfDeletedBytes'] == a['UniqueBytes']
    assert b['FreedIfDeletedBytes'] == 0  # the volume is based on s2: its map stays
    (im,) = doc['Images']
    assert im['ImageId'] == ami and im['SnapshotIds'] == [s2]
    assert im['FullBytes'] == 100 * BLOCK and im['StoredBytes'] == b['StoredBytes']
    assert im['UniqueBytes'] == b['UniqueBytes']
    t = doc['Totals']
    assert t['Snapshots'] == 2 and t['Images'] == 1 and t['FullBytes'] == 200 * BLOCK
    assert t['StoreBytes'] == sum(files.values()) == t['ReferencedBytes']
    assert t['UnreferencedBytes'] == 0 and t['StoreChunks'] == 101
    # Deleting s1 frees what du said it would.
    st.ec2.delete_snapshot(SnapshotId=s1)
    assert st.du()['Totals']['UnreferencedBytes'] == a['FreedIfDeletedBytes']
    g = st.gc('--grace', '0')
    assert g['FreedBytes'] == a['FreedIfDeletedBytes']
    # One region, env format.
    p = run(AMID, 'du', '--data', st.datadir, '--region', 'us-east-1')
    lines = p.stdout.decode().strip().splitlines()
    assert lines[0].startswith('AMID_DU_SNAPSHOT=%s ' % s2) and 'AMID_DU_UNIQUE=' in lines[0]
    assert lines[-1].startswith('AMID_DU_TOTAL_SNAPSHOTS=1 ')
    assert run(AMID, 'du', '--data', st.datadir, '--region', 'nowhere-1', check=False) \
        .returncode == 1


def test_gc_while_daemon_works(st):
    """gc in a loop (short grace period) while volumes are written and snapshotted, snapshots
    deleted and blocks uploaded: nothing anyone still refers to is ever freed."""
    stop = threading.Event()
    runs = []

    def gc_loop():
        while not stop.is_set():
            p = subprocess.run([AMID, 'gc', '--data', st.datadir, '--grace', '2', '--format',
                                'json'], capture_output=True, text=True, timeout=120)
            runs.append((p.returncode, p.stderr))
            time.sleep(0.05)

    t = threading.Thread(target=gc_loop)
    t.start()
    try:
        vid = st.volume()
        model = bytearray(os.urandom(16 * BLOCK))
        st.write(vid, bytes(model))
        snaps, uploads = {}, []
        deadline = time.time() + 12
        i = 0
        shared = os.urandom(BLOCK)
        while time.time() < deadline or i < 4:
            i += 1
            k = (i * 5) % 16
            model[k * BLOCK:(k + 1) * BLOCK] = os.urandom(BLOCK)
            st.write(vid, bytes(model[k * BLOCK:(k + 1) * BLOCK]), offset=k * BLOCK)
            snaps[st.snapshot(vid)] = bytes(model)
            if len(snaps) > 3:
                old = next(iter(snaps))
                st.ec2.delete_snapshot(SnapshotId=old)
                del snaps[old]
            blocks = {0: shared, 1 + i % 7: os.urandom(BLOCK)}
            u = st.upload(blocks)
            if i % 2:
                st.ec2.delete_snapshot(SnapshotId=u)
            else:
                uploads.append((u, blocks))
    finally:
        stop.set()
        t.join()
    assert runs and all(rc == 0 for rc, _ in runs), runs
    time.sleep(2.1)
    st.gc('--grace', '0')
    for sid, content in snaps.items():
        assert st.read(sid, 16 * BLOCK) == content, sid
    for sid, blocks in uploads:
        for k, d in blocks.items():
            assert st.read(sid, BLOCK, k * BLOCK) == d, (sid, k)
    assert st.read(vid, 16 * BLOCK) == bytes(model)
    st.assert_clean(warnings_ok=False)


def test_usage(st):
    for args in (['verify'], ['gc', '--data', st.datadir, '--grace', '-1'],
                 ['gc', '--data', st.datadir, 'extra'], ['du', '--data', st.datadir, '--format',
                                                         'xml'],
                 ['verify', '--data', st.datadir, '--threads', '0']):
        assert run(AMID, *args, check=False).returncode == 2, args
    assert run(AMID, 'verify', '--data', os.path.join(st.tmp, 'none'), check=False) \
        .returncode == 1
    assert run(AMID, 'gc', '--help').stdout.startswith(b'usage: amid gc')
