"""Copies between regions: CopyImage and CopySnapshot from us-east-1 to us-west-2 through boto3 and
the AWS CLI, on a private data directory so that the destination store and the daemon's log can
be inspected: copies are bit-exact, move only the chunks the destination lacks (measured in chunk
files and in the daemon's `event=snapshot-copied` lines), resume after `kill -9`, stop when the
pending image is deregistered, and follow EC2's rules for shared images, names, tokens and tags.
"""
import os
import re
import signal
import time

import botocore.exceptions
import pytest

from storage_helpers import BLOCK, make_store, remove_store, run

SRC, DST = 'us-east-1', 'us-west-2'


def code_of(e):
    return e.value.response['Error']['Code']


def blocks_of(seed, n):
    """n distinct 512 KiB blocks of pseudo-random bytes."""
    return {i: os.urandom(BLOCK) if seed is None else
            (bytes([seed, i % 256]) * (BLOCK // 2)) for i in range(n)}


class Regions:
    def __init__(self, st):
        self.st = st
        self.src = st.ec2
        self.dst = st.daemon.client('ec2', st.creds, DST)

    def dst_dir(self):
        return os.path.join(self.st.datadir, 'regions', DST, 'chunks')

    def dst_chunks(self):
        out = {}
        for d, _, files in os.walk(self.dst_dir()):
            for f in files:
                if len(f) == 64:
                    out[f] = os.path.getsize(os.path.join(d, f))
        return out

    def copied_events(self, snap_id=None):
        out = []
        for line in self.st.daemon.read_log().splitlines():
            if 'event=snapshot-copied' not in line:
                continue
            kv = dict(re.findall(r'(\w+)=(\S+)', line))
            if snap_id is None or kv.get('snapshot') == snap_id:
                out.append(kv)
        return out

    def image(self, blocks, name, size_gib=1):
        sid = self.st.upload(blocks, size_gib=size_gib)
        iid = self.src.register_image(
            Name=name, RootDeviceName='/dev/xvda', Architecture='x86_64',
            BlockDeviceMappings=[{'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': sid}}])[
                'ImageId']
        return iid, sid

    def wait_image(self, client, iid, state='available', timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            im = client.describe_images(ImageIds=[iid])['Images'][0]
            if im['State'] != 'pending':
                assert im['State'] == state, im
                return im
            time.sleep(0.05)
        raise AssertionError('image %s still pending' % iid)


@pytest.fixture(scope='module')
def rg():
    st = make_store('amid-copy-')
    try:
        yield Regions(st)
    finally:
        remove_store(st)


def read_snapshot(st, sid, nblocks):
    return st.read(sid, nblocks * BLOCK)


def test_copy_image_across_regions_is_exact_and_moves_only_missing_chunks(rg):
    blocks = blocks_of(None, 6)
    blocks[7] = blocks[2]  # a repeated block: one chunk
    src_id, src_snap = rg.image(blocks, 'copy-exact')
    before = rg.dst_chunks()
    new = rg.dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='copy-exact-west',
                            Description='west copy')['ImageId']
    im = rg.wait_image(rg.dst, new)
    assert im['SourceImageId'] == src_id and im['SourceImageRegion'] == SRC
    assert im['Name'] == 'copy-exact-west' and im['Description'] == 'west copy'
    assert im['OwnerId'] == rg.st.creds.account_id
    snap = im['BlockDeviceMappings'][0]['Ebs']['SnapshotId']
    assert snap != src_snap
    s = rg.dst.describe_snapshots(SnapshotIds=[snap])['Snapshots'][0]
    assert s['State'] == 'completed' and s['Progress'] == '100%'
    assert src_id in s['Description'] and src_snap in s['Description'] and new in s['Description']
    # The copy lives in the destination region only.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.src.describe_images(ImageIds=[new])
    assert code_of(e) == 'InvalidAMIID.NotFound'
    # Bit-exact: the copied snapshot reads back as the source's blocks.
    data = read_snapshot(rg.st, snap, 8)
    for i in range(8):
        want = blocks.get(i, bytes(BLOCK))
        assert data[i * BLOCK:(i + 1) * BLOCK] == want, 'block %d differs' % i
    # Only the 6 distinct chunks arrived, each once.
    after = rg.dst_chunks()
    added = {k: v for k, v in after.items() if k not in before}
    assert len(added) == 6
    ev = rg.copied_events(snap)
    assert len(ev) == 1 and ev[0]['rc'] == '0'
    assert int(ev[0]['chunks_moved']) == 6 and int(ev[0]['bytes_moved']) == sum(added.values())


def test_copying_v2_after_v1_moves_only_the_changed_chunks(rg):
    v1 = blocks_of(None, 20)
    v1_id, v1_snap = rg.image(v1, 'copy-v1')
    c1 = rg.dst.copy_image(SourceRegion=SRC, SourceImageId=v1_id, Name='copy-v1-west')['ImageId']
    rg.wait_image(rg.dst, c1)
    # v2: one block changed (an incremental EBS direct upload on top of v1).
    changed = os.urandom(BLOCK)
    sid = rg.st.ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=v1_snap, Timeout=60)['SnapshotId']
    from storage_helpers import linear, sha
    rg.st.ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=5, BlockData=changed,
                                 DataLength=BLOCK, Checksum=sha(changed),
                                 ChecksumAlgorithm='SHA256')
    v2 = dict(v1)
    v2[5] = changed
    rg.st.ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1,
                                Checksum=linear({5: changed}), ChecksumAlgorithm='SHA256',
                                ChecksumAggregationMethod='LINEAR')
    rg.st.wait_snapshot(sid)
    v2_id = rg.src.register_image(
        Name='copy-v2', RootDeviceName='/dev/xvda',
        BlockDeviceMappings=[{'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': sid}}])['ImageId']
    before = rg.dst_chunks()
    c2 = rg.dst.copy_image(SourceRegion=SRC, SourceImageId=v2_id, Name='copy-v2-west')['ImageId']
    im = rg.wait_image(rg.dst, c2)
    snap = im['BlockDeviceMappings'][0]['Ebs']['SnapshotId']
    ev = rg.copied_events(snap)[0]
    assert int(ev['chunks_moved']) == 1 and int(ev['chunks_present']) == 19
    added = set(rg.dst_chunks()) - set(before)
    assert len(added) == 1 and int(ev['bytes_moved']) == rg.dst_chunks()[added.pop()]
    data = read_snapshot(rg.st, snap, 20)
    assert all(data[i * BLOCK:(i + 1) * BLOCK] == v2[i] for i in range(20))


def test_copy_snapshot_across_regions_with_waiter_and_cli(rg):
    blocks = blocks_of(7, 4)
    sid = rg.st.upload(blocks)
    r = rg.dst.copy_snapshot(SourceRegion=SRC, SourceSnapshotId=sid, Description='dr copy',
                             TagSpecifications=[{'ResourceType': 'snapshot',
                                                 'Tags': [{'Key': 'k', 'Value': 'v'}]}])
    new = r['SnapshotId']
    rg.dst.get_waiter('snapshot_completed').wait(SnapshotIds=[new],
                                                 WaiterConfig={'Delay': 1, 'MaxAttempts': 60})
    s = rg.dst.describe_snapshots(SnapshotIds=[new])['Snapshots'][0]
    assert s['Description'] == 'dr copy' and s['Tags'] == [{'Key': 'k', 'Value': 'v'}]
    assert s['VolumeSize'] == 1
    assert read_snapshot(rg.st, new, 4) == b''.join(blocks[i] for i in range(4))
    # The AWS CLI, as a user scripts it.
    rc, out, err = rg.st.daemon.aws(rg.st.creds, 'ec2', 'copy-snapshot', '--source-region', SRC,
                                    '--source-snapshot-id', sid, region=DST)
    assert rc == 0, err
    rg.dst.get_waiter('snapshot_completed').wait(SnapshotIds=[out['SnapshotId']],
                                                 WaiterConfig={'Delay': 1, 'MaxAttempts': 60})
    # Same chunks already there: nothing moved the second time.
    ev = rg.copied_events(out['SnapshotId'])[0]
    assert ev['chunks_moved'] == '0' and ev['chunks_present'] == '4'


def test_copy_image_rules(rg):
    blocks = blocks_of(9, 2)
    src_id, src_snap = rg.image(blocks, 'copy-rules')
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.copy_image(SourceRegion=SRC, SourceImageId='ami-0123456789abcdef0', Name='x-rules')
    assert code_of(e) == 'InvalidAMIID.NotFound'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.copy_image(SourceRegion=SRC, SourceImageId='ami-zz', Name='x-rules')
    assert code_of(e) == 'InvalidAMIID.Malformed'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.copy_image(SourceRegion='eu-north-9', SourceImageId=src_id, Name='x-rules')
    assert code_of(e) == 'InvalidParameterValue'
    # An image of the destination region is not found in the source region.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.copy_image(SourceRegion=DST, SourceImageId=src_id, Name='x-rules')
    assert code_of(e) == 'InvalidAMIID.NotFound'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='bad*name!')
    assert code_of(e) == 'InvalidAMIName.Malformed'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='x-rules',
                          KmsKeyId='alias/aws/ebs')
    assert code_of(e) == 'InvalidParameterDependency'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='x-rules', DryRun=True)
    assert code_of(e) == 'DryRunOperation'
    # ClientToken: the same request answers the same image; other parameters are a mismatch.
    a = rg.dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='tok-rules',
                          ClientToken='tok-1')['ImageId']
    b = rg.dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='tok-rules',
                          ClientToken='tok-1')['ImageId']
    assert a == b
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='tok-other',
                          ClientToken='tok-1')
    assert code_of(e) == 'IdempotentParameterMismatch'
    rg.wait_image(rg.dst, a)
    # Names are unique per account and region.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='tok-rules')
    assert code_of(e) == 'InvalidAMIName.Duplicate'
    # Within the region too (the same name may exist in another region).
    same = rg.src.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='tok-rules')['ImageId']
    rg.wait_image(rg.src, same)


def test_copy_image_tags(rg):
    src_id, _ = rg.image(blocks_of(11, 1), 'copy-tags')
    rg.src.create_tags(Resources=[src_id], Tags=[{'Key': 'team', 'Value': 'a'},
                                                 {'Key': 'ver', 'Value': '1'}])
    new = rg.dst.copy_image(
        SourceRegion=SRC, SourceImageId=src_id, Name='copy-tags-west', CopyImageTags=True,
        TagSpecifications=[{'ResourceType': 'image', 'Tags': [{'Key': 'ver', 'Value': '2'}]},
                           {'ResourceType': 'snapshot', 'Tags': [{'Key': 's', 'Value': 'x'}]}])[
                               'ImageId']
    im = rg.wait_image(rg.dst, new)
    assert sorted((t['Key'], t['Value']) for t in im['Tags']) == [('team', 'a'), ('ver', '2')]
    snap = im['BlockDeviceMappings'][0]['Ebs']['SnapshotId']
    s = rg.dst.describe_snapshots(SnapshotIds=[snap])['Snapshots'][0]
    assert s['Tags'] == [{'Key': 's', 'Value': 'x'}]
    plain = rg.dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='copy-notags')[
        'ImageId']
    assert 'Tags' not in rg.wait_image(rg.dst, plain) or \
        rg.wait_image(rg.dst, plain)['Tags'] == []


def test_copying_a_shared_image_needs_its_storage(rg):
    from conftest import Creds, run_amid
    import json
    p = run_amid('account', 'create', 'copier', '--data', rg.st.datadir, '--format', 'json')
    other = Creds(json.loads(p.stdout))
    o_dst = rg.st.daemon.client('ec2', other, DST)
    src_id, src_snap = rg.image(blocks_of(13, 2), 'copy-shared')
    # Private: not found, as if it did not exist.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        o_dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='theirs')
    assert code_of(e) == 'InvalidAMIID.NotFound'
    rg.src.modify_image_attribute(ImageId=src_id,
                                  LaunchPermission={'Add': [{'UserId': other.account_id}]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        o_dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='theirs')
    assert code_of(e) == 'InvalidRequest'
    rg.src.modify_snapshot_attribute(SnapshotId=src_snap, Attribute='createVolumePermission',
                                     OperationType='add', UserIds=[other.account_id])
    new = o_dst.copy_image(SourceRegion=SRC, SourceImageId=src_id, Name='theirs')['ImageId']
    im = rg.wait_image(o_dst, new)
    assert im['OwnerId'] == other.account_id
    snap = im['BlockDeviceMappings'][0]['Ebs']['SnapshotId']
    s = o_dst.describe_snapshots(SnapshotIds=[snap])['Snapshots'][0]
    assert s['OwnerId'] == other.account_id
    # The owner of the source does not see the copy.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.describe_images(ImageIds=[new])
    assert code_of(e) == 'InvalidAMIID.NotFound'


@pytest.fixture(scope='module')
def big(rg):
    """A 1 GiB image whose 512 MiB of random data take a noticeable time to copy."""
    vid = rg.st.volume(1)
    rg.st.write(vid, os.urandom(512 * 1024 * 1024))
    sid = rg.st.snapshot(vid, timeout=300)
    iid = rg.src.register_image(
        Name='copy-big', RootDeviceName='/dev/xvda',
        BlockDeviceMappings=[{'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': sid}}])['ImageId']
    return iid, sid


def test_deregistering_a_pending_copy_cancels_it(rg, big):
    new = rg.dst.copy_image(SourceRegion=SRC, SourceImageId=big[0], Name='copy-cancel')['ImageId']
    im = rg.dst.describe_images(ImageIds=[new])['Images'][0]
    snap = im['BlockDeviceMappings'][0]['Ebs']['SnapshotId']
    assert im['State'] == 'pending'
    rg.dst.deregister_image(ImageId=new)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rg.dst.describe_snapshots(SnapshotIds=[snap])
    assert code_of(e) == 'InvalidSnapshot.NotFound'
    deadline = time.time() + 60
    while not rg.copied_events(snap) and time.time() < deadline:
        time.sleep(0.1)
    ev = rg.copied_events(snap)
    assert ev and ev[0]['rc'] != '0' and int(ev[0]['chunks_moved']) < 1024, ev
    assert rg.dst.describe_images(ImageIds=[new])['Images'][0]['State'] == 'deregistered'


def test_copy_resumes_after_kill_9(rg, big):
    st = rg.st
    new = rg.dst.copy_image(SourceRegion=SRC, SourceImageId=big[0], Name='copy-crash')['ImageId']
    snap = rg.dst.describe_images(ImageIds=[new])['Images'][0]['BlockDeviceMappings'][0][
        'Ebs']['SnapshotId']
    # Kill the daemon while chunks are arriving.
    base = len(rg.dst_chunks())
    deadline = time.time() + 60
    while len(rg.dst_chunks()) < base + 64 and time.time() < deadline:
        time.sleep(0.005)
    st.stop(signal.SIGKILL)
    present = len(rg.dst_chunks())
    st.start()
    rg.dst = st.daemon.client('ec2', st.creds, DST)
    rg.src = st.ec2
    im = rg.wait_image(rg.dst, new, timeout=300)
    ev = rg.copied_events(snap)
    done = [e for e in ev if e['rc'] == '0']
    assert len(done) == 1, ev
    # Nothing committed before the crash was moved again.
    assert int(done[0]['chunks_present']) >= present - base
    assert int(done[0]['chunks_moved']) + int(done[0]['chunks_present']) == 1024
    data = st.read(im['BlockDeviceMappings'][0]['Ebs']['SnapshotId'], 8 * BLOCK, 100 * BLOCK)
    src = st.read(big[1], 8 * BLOCK, 100 * BLOCK)
    assert data == src
    st.assert_clean(read_data=False, warnings_ok=True)


def test_copied_catalogue_image_launches_in_the_destination_region(rg):
    """The system image, copied to us-west-2, boots there and runs its user data."""
    import json
    from conftest import run_amid
    out = json.loads(run_amid('catalog', 'import', '--data', rg.st.datadir,
                              '--format', 'json').stdout)
    src = [i for i in out['Images'] if i['Region'] == SRC][0]['ImageId']
    new = rg.dst.copy_image(SourceRegion=SRC, SourceImageId=src, Name='catalogue-west')['ImageId']
    rg.dst.get_waiter('image_available').wait(ImageIds=[new],
                                              WaiterConfig={'Delay': 1, 'MaxAttempts': 120})
    ud = '#!/bin/sh\necho "copied image runs in %s"\n' % DST
    iid = rg.dst.run_instances(ImageId=new, MinCount=1, MaxCount=1, UserData=ud)[
        'Instances'][0]['InstanceId']
    try:
        inst = rg.dst.describe_instances(InstanceIds=[iid])['Reservations'][0]['Instances'][0]
        assert inst['ImageId'] == new and inst['Placement']['AvailabilityZone'].startswith(DST)
        deadline = time.time() + 240
        text = ''
        while time.time() < deadline:
            text = rg.dst.get_console_output(InstanceId=iid).get('Output', '')
            if 'copied image runs in %s' % DST in text:
                break
            time.sleep(1)
        assert 'copied image runs in %s' % DST in text, text[-2000:]
    finally:
        rg.dst.terminate_instances(InstanceIds=[iid], Force=True)
        rg.dst.get_waiter('instance_terminated').wait(
            InstanceIds=[iid], WaiterConfig={'Delay': 1, 'MaxAttempts': 120})


def test_a_region_store_on_another_directory(tmpdir_amid):
    """`amid init --regions us-east-1,us-west-2=/other/disk`: the region's chunks live there."""
    import json
    import shutil
    from conftest import Creds, Daemon, run_amid
    from storage_helpers import linear, sha
    data = os.path.join(tmpdir_amid, 'data')
    west_store = os.path.join(tmpdir_amid, 'disk2', 'west')
    p = run_amid('init', '--data', data, '--regions', 'us-east-1,us-west-2=' + west_store,
                 '--format', 'json')
    creds = Creds(json.loads(p.stdout))
    # A relative store path, or one that holds files already, is refused.
    bad = run_amid('init', '--data', os.path.join(tmpdir_amid, 'd2'), '--regions',
                   'us-east-1,us-west-2=relative/dir', check=False)
    assert bad.returncode != 0 and 'absolute' in bad.stderr
    used = os.path.join(tmpdir_amid, 'used')
    os.makedirs(used)
    open(os.path.join(used, 'something'), 'w').close()
    bad = run_amid('init', '--data', os.path.join(tmpdir_amid, 'd3'), '--regions',
                   'us-east-1=' + used, check=False)
    assert bad.returncode != 0 and 'not empty' in bad.stderr
    d = Daemon(data).start()
    try:
        east, west = d.client('ec2', creds), d.client('ec2', creds, 'us-west-2')
        ebs = d.client('ebs', creds)
        blocks = blocks_of(21, 3)
        sid = ebs.start_snapshot(VolumeSize=1, Timeout=60)['SnapshotId']
        for i, blk in blocks.items():
            ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=blk, DataLength=BLOCK,
                                   Checksum=sha(blk), ChecksumAlgorithm='SHA256')
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3, Checksum=linear(blocks),
                              ChecksumAlgorithm='SHA256', ChecksumAggregationMethod='LINEAR')
        new = west.copy_snapshot(SourceRegion=SRC, SourceSnapshotId=sid)['SnapshotId']
        west.get_waiter('snapshot_completed').wait(SnapshotIds=[new],
                                                   WaiterConfig={'Delay': 1, 'MaxAttempts': 60})
        chunks = [f for _, _, fs in os.walk(os.path.join(west_store, 'chunks')) for f in fs
                  if len(f) == 64]
        assert len(chunks) == 3
        assert not os.path.exists(os.path.join(data, 'regions', 'us-west-2'))
        assert len(east.describe_snapshots(OwnerIds=['self'])['Snapshots']) == 1
    finally:
        d.stop()
        shutil.rmtree(os.path.join(tmpdir_amid, 'disk2'), ignore_errors=True)
