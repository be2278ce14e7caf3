"""Encrypted volumes, snapshots, copies and images with keys from amid's key service, through boto3
and the AWS CLI: data written to an encrypted volume never reaches a chunk file in clear, reads
back exactly (nor a volume's own copy-on-write files: AES-XTS), follows its key (the same KMS key shares the data key; another key, or clear
source data, is re-encoded), and obeys EC2's rules: no public encrypted snapshots or images, a
shared encrypted image launches or copies only for accounts that may use its key, and a disabled
key stops new volumes from its snapshots.
"""
import json
import os
import time

import botocore.exceptions
import pytest

from conftest import Creds, run_amid
from storage_helpers import BLOCK, make_store, remove_store

PATTERN = b'amid-plaintext-marker-0123456789'


def code_of(e):
    return e.value.response['Error']['Code']


def marked(n, tag):
    """n blocks that each repeat PATTERN with a per-block tag (distinct, compressible)."""
    out = {}
    for i in range(n):
        unit = PATTERN + (b'%s-%04d|' % (tag, i))
        out[i] = (unit * (BLOCK // len(unit) + 1))[:BLOCK]
    return out


class Env:
    def __init__(self, st):
        self.st = st
        self.ec2 = st.ec2
        self.kms = st.daemon.client('kms', st.creds)
        self.west = st.daemon.client('ec2', st.creds, 'us-west-2')
        self.kms_west = st.daemon.client('kms', st.creds, 'us-west-2')

    def account(self, name):
        p = run_amid('account', 'create', name, '--data', self.st.datadir, '--format', 'json')
        c = Creds(json.loads(p.stdout))
        return (self.st.daemon.client('ec2', c), self.st.daemon.client('kms', c), c)

    def chunk_files(self, region='us-east-1'):
        root = os.path.join(self.st.datadir, 'regions', region, 'chunks')
        for d, _, files in os.walk(root):
            for f in files:
                if len(f) == 64:
                    yield os.path.join(d, f)

    def plaintext_in_layers(self, vid, region='us-east-1'):
        """How many of volume vid's copy-on-write layer files hold PATTERN in clear."""
        d = os.path.join(self.st.datadir, 'regions', region, 'volumes', vid)
        hits = 0
        for f in os.listdir(d):
            if f.endswith('.data'):
                with open(os.path.join(d, f), 'rb') as fh:
                    hits += PATTERN in fh.read()
        return hits

    def plaintext_in_chunks(self, region='us-east-1'):
        hits = 0
        for p in self.chunk_files(region):
            with open(p, 'rb') as f:
                if PATTERN in f.read():
                    hits += 1
        return hits

    def wait_volume(self, client, vid, want='available', timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = client.describe_volumes(VolumeIds=[vid])['Volumes'][0]
            if v['State'] != 'creating':
                assert v['State'] == want, v
                return v
            time.sleep(0.05)
        raise AssertionError('volume %s still creating' % vid)

    def volume_with(self, blocks, **kw):
        vid = self.ec2.create_volume(AvailabilityZone='us-east-1a', Size=1, **kw)['VolumeId']
        self.wait_volume(self.ec2, vid)
        for i, d in sorted(blocks.items()):
            self.st.write(vid, d, offset=i * BLOCK) if i else self.st.write(vid, d)
        return vid


@pytest.fixture(scope='module')
def env():
    st = make_store('amid-enc-')
    try:
        yield Env(st)
    finally:
        remove_store(st)


def test_encrypted_volume_and_snapshot_hold_no_plaintext(env):
    key = env.kms.create_key(Description='volumes')['KeyMetadata']
    blocks = marked(4, b'a')
    vid = env.volume_with(blocks, Encrypted=True, KmsKeyId=key['KeyId'])
    v = env.ec2.describe_volumes(VolumeIds=[vid])['Volumes'][0]
    assert v['Encrypted'] is True and v['KmsKeyId'] == key['Arn']
    sid = env.st.snapshot(vid)
    s = env.ec2.describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]
    assert s['Encrypted'] is True and s['KmsKeyId'] == key['Arn']
    assert env.st.read(sid, 4 * BLOCK) == b''.join(blocks[i] for i in range(4))
    assert env.plaintext_in_chunks() == 0
    # Nor in the volume's own files: written after the snapshot, at an odd offset, read back.
    more = marked(1, b'b')[0]
    env.st.write(vid, more, offset=4 * BLOCK + 1000)
    assert env.st.read(vid, BLOCK, offset=4 * BLOCK + 1000) == more
    assert env.plaintext_in_layers(vid) == 0
    # A clear volume with the same data does leave the pattern in its layer and its chunks
    # (the checks work).
    clear = env.volume_with(marked(1, b'clear'))
    assert env.plaintext_in_layers(clear) >= 1
    env.st.snapshot(clear)
    assert env.plaintext_in_chunks() >= 1


def test_default_key_and_encryption_by_default(env):
    vid = env.ec2.create_volume(AvailabilityZone='us-east-1a', Size=1, Encrypted=True)['VolumeId']
    v = env.wait_volume(env.ec2, vid)
    alias = [a for a in env.kms.list_aliases()['Aliases'] if a['AliasName'] == 'alias/aws/ebs']
    assert alias and v['KmsKeyId'].endswith(alias[0]['TargetKeyId'])
    env.ec2.enable_ebs_encryption_by_default()
    try:
        v2 = env.ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)
        assert v2['Encrypted'] is True and v2['KmsKeyId'] == v['KmsKeyId']
    finally:
        env.ec2.disable_ebs_encryption_by_default()
    assert env.ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['Encrypted'] is False


def test_volume_from_snapshot_follows_its_key(env):
    k1 = env.kms.create_key()['KeyMetadata']
    k2 = env.kms.create_key()['KeyMetadata']
    blocks = marked(3, b'b')
    vid = env.volume_with(blocks, Encrypted=True, KmsKeyId=k1['Arn'])
    sid = env.st.snapshot(vid)
    data = b''.join(blocks[i] for i in range(3))
    # Same key: shares the snapshot's data; another key: re-encoded ("creating" until done).
    same = env.ec2.create_volume(AvailabilityZone='us-east-1a', SnapshotId=sid)['VolumeId']
    other = env.ec2.create_volume(AvailabilityZone='us-east-1a', SnapshotId=sid, Encrypted=True,
                                  KmsKeyId='alias/other-%d' % 0 if False else k2['KeyId'])[
                                      'VolumeId']
    for vol, key in ((same, k1), (other, k2)):
        v = env.wait_volume(env.ec2, vol)
        assert v['Encrypted'] is True and v['KmsKeyId'] == key['Arn']
        assert env.st.read(vol, 3 * BLOCK) == data
    # Clear snapshot into an encrypted volume.
    csid = env.st.upload(marked(2, b'c'))
    enc = env.ec2.create_volume(AvailabilityZone='us-east-1a', SnapshotId=csid, Encrypted=True,
                                KmsKeyId=k2['Arn'])['VolumeId']
    env.wait_volume(env.ec2, enc)
    assert env.st.read(enc, 2 * BLOCK) == b''.join(marked(2, b'c')[i] for i in range(2))
    # An encrypted snapshot cannot give a clear volume.
    v = env.ec2.create_volume(AvailabilityZone='us-east-1a', SnapshotId=sid)
    assert v['Encrypted'] is True
    assert env.plaintext_in_chunks() <= 3  # only the clear volumes' and upload's chunks


def test_disabled_key_stops_new_volumes(env):
    key = env.kms.create_key()['KeyMetadata']
    vid = env.volume_with(marked(1, b'd'), Encrypted=True, KmsKeyId=key['KeyId'])
    sid = env.st.snapshot(vid)
    env.kms.disable_key(KeyId=key['KeyId'])
    try:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            env.ec2.create_volume(AvailabilityZone='us-east-1a', SnapshotId=sid)
        assert code_of(e) == 'IncorrectState'
        assert 'InvalidKMSKey.InvalidState' in e.value.response['Error']['Message']
        with pytest.raises(botocore.exceptions.ClientError) as e:
            env.ec2.create_volume(AvailabilityZone='us-east-1a', Size=1, Encrypted=True,
                                  KmsKeyId=key['Arn'])
        assert code_of(e) == 'IncorrectState'
    finally:
        env.kms.enable_key(KeyId=key['KeyId'])
    v = env.ec2.create_volume(AvailabilityZone='us-east-1a', SnapshotId=sid)['VolumeId']
    env.wait_volume(env.ec2, v)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ec2.create_volume(AvailabilityZone='us-east-1a', Size=1, Encrypted=True,
                              KmsKeyId='alias/does-not-exist')
    assert code_of(e) == 'InvalidParameterValue'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ec2.create_volume(AvailabilityZone='us-east-1a', Size=1, KmsKeyId=key['Arn'])
    assert code_of(e) == 'InvalidParameterDependency'


def test_ebs_direct_encrypted_upload(env):
    from storage_helpers import linear, sha
    key = env.kms.create_key()['KeyMetadata']
    blocks = marked(3, b'e')
    r = env.st.ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key['Arn'], Timeout=60)
    assert r['KmsKeyArn'] == key['Arn'] and r['SseType'] == 'sse-kms'
    sid = r['SnapshotId']
    for i, d in blocks.items():
        env.st.ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=d, DataLength=BLOCK,
                                      Checksum=sha(d), ChecksumAlgorithm='SHA256')
    env.st.ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3, Checksum=linear(blocks),
                                 ChecksumAlgorithm='SHA256', ChecksumAggregationMethod='LINEAR')
    env.st.wait_snapshot(sid)
    s = env.ec2.describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]
    assert s['Encrypted'] is True and s['KmsKeyId'] == key['Arn']
    lst = env.st.ebs.list_snapshot_blocks(SnapshotId=sid)['Blocks']
    got = env.st.ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=1,
                                        BlockToken=lst[1]['BlockToken'])
    assert got['BlockData'].read() == blocks[1]
    # A child upload must stay in its parent's key.
    other = env.kms.create_key()['KeyMetadata']
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.st.ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=sid, Encrypted=True,
                                  KmsKeyArn=other['Arn'])
    assert code_of(e) == 'ValidationException'
    child = env.st.ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=sid, Encrypted=True)
    assert child['KmsKeyArn'] == key['Arn']
    assert env.plaintext_in_chunks() <= 3


def test_amid_import_encrypted(env):
    raw = os.path.join(env.st.tmp, 'enc-import.raw')
    blocks = marked(4, b'imp')
    with open(raw, 'wb') as f:
        for i in range(4):
            f.write(blocks[i])
    key = env.kms.create_key()['KeyMetadata']
    before = env.plaintext_in_chunks()
    for extra in (['--data', env.st.datadir], []):
        environ = dict(os.environ, AWS_ENDPOINT_URL=env.st.daemon.endpoint,
                       AWS_ACCESS_KEY_ID=env.st.creds.key,
                       AWS_SECRET_ACCESS_KEY=env.st.creds.secret, AWS_DEFAULT_REGION='us-east-1')
        p = run_amid('import', raw, '--encrypted', '--kms-key-id', key['Arn'], '--format', 'json',
                     '--no-progress', *extra, env=environ)
        sid = json.loads(p.stdout)['SnapshotId']
        s = env.ec2.describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]
        assert s['Encrypted'] is True and s['KmsKeyId'] == key['Arn']
        assert env.st.read(sid, 4 * BLOCK) == b''.join(blocks[i] for i in range(4))
    assert env.plaintext_in_chunks() == before


def test_copy_snapshot_encrypts_reencrypts_and_crosses_regions(env):
    k1 = env.kms.create_key()['KeyMetadata']
    k2 = env.kms.create_key()['KeyMetadata']
    west_key = env.kms_west.create_key()['KeyMetadata']
    blocks = marked(3, b'f')
    data = b''.join(blocks[i] for i in range(3))
    clear = env.st.upload(blocks)
    enc = env.ec2.copy_snapshot(SourceRegion='us-east-1', SourceSnapshotId=clear,
                                Encrypted=True, KmsKeyId=k1['Arn'])['SnapshotId']
    env.st.wait_snapshot(enc)
    re = env.ec2.copy_snapshot(SourceRegion='us-east-1', SourceSnapshotId=enc, Encrypted=True,
                               KmsKeyId=k2['KeyId'])['SnapshotId']
    env.st.wait_snapshot(re)
    same = env.ec2.copy_snapshot(SourceRegion='us-east-1', SourceSnapshotId=enc)['SnapshotId']
    for sid, key in ((enc, k1), (re, k2), (same, k1)):
        s = env.st.wait_snapshot(sid)
        assert s['Encrypted'] is True and s['KmsKeyId'] == key['Arn'], s
        assert env.st.read(sid, 3 * BLOCK) == data
    # To another region: re-encrypted under a key of that region.
    west = env.west.copy_snapshot(SourceRegion='us-east-1', SourceSnapshotId=enc, Encrypted=True,
                                  KmsKeyId=west_key['Arn'])['SnapshotId']
    env.west.get_waiter('snapshot_completed').wait(SnapshotIds=[west],
                                                   WaiterConfig={'Delay': 1, 'MaxAttempts': 60})
    s = env.west.describe_snapshots(SnapshotIds=[west])['Snapshots'][0]
    assert s['Encrypted'] is True and s['KmsKeyId'] == west_key['Arn']
    assert env.st.read(west, 3 * BLOCK) == data
    # Without a key: the account's default key of the destination region.
    west2 = env.west.copy_snapshot(SourceRegion='us-east-1', SourceSnapshotId=enc)['SnapshotId']
    env.west.get_waiter('snapshot_completed').wait(SnapshotIds=[west2],
                                                   WaiterConfig={'Delay': 1, 'MaxAttempts': 60})
    s = env.west.describe_snapshots(SnapshotIds=[west2])['Snapshots'][0]
    assert s['Encrypted'] is True and ':us-west-2:' in s['KmsKeyId']
    assert env.plaintext_in_chunks('us-west-2') == 0
    # A key of another region is not found here.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.west.copy_snapshot(SourceRegion='us-east-1', SourceSnapshotId=enc, Encrypted=True,
                               KmsKeyId=k1['KeyId'])
    assert code_of(e) == 'InvalidParameterValue'


def test_encrypted_snapshots_and_images_are_never_public(env):
    key = env.kms.create_key()['KeyMetadata']
    vid = env.volume_with(marked(1, b'g'), Encrypted=True, KmsKeyId=key['Arn'])
    sid = env.st.snapshot(vid)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ec2.modify_snapshot_attribute(SnapshotId=sid, Attribute='createVolumePermission',
                                          OperationType='add', GroupNames=['all'])
    assert code_of(e) == 'InvalidParameter'
    iid = env.ec2.register_image(
        Name='enc-public', RootDeviceName='/dev/xvda',
        BlockDeviceMappings=[{'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': sid}}])['ImageId']
    im = env.ec2.describe_images(ImageIds=[iid])['Images'][0]
    assert im['BlockDeviceMappings'][0]['Ebs']['Encrypted'] is True
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ec2.modify_image_attribute(ImageId=iid, LaunchPermission={'Add': [{'Group': 'all'}]})
    assert code_of(e) == 'InvalidParameter'
    assert env.ec2.describe_images(ImageIds=[iid])['Images'][0]['Public'] is False


@pytest.fixture(scope='module')
def catalogue(env):
    out = json.loads(run_amid('catalog', 'import', '--data', env.st.datadir,
                              '--format', 'json').stdout)
    return [i for i in out['Images'] if i['Region'] == 'us-east-1'][0]['ImageId']


def console_has(ec2, iid, text, timeout=240):
    deadline = time.time() + timeout
    out = ''
    while time.time() < deadline:
        out = ec2.get_console_output(InstanceId=iid).get('Output', '')
        if text in out:
            return True
        time.sleep(1)
    raise AssertionError('%s: no %r on the console:\n%s' % (iid, text, out[-2000:]))


def terminate(ec2, iid):
    ec2.terminate_instances(InstanceIds=[iid], Force=True)
    ec2.get_waiter('instance_terminated').wait(InstanceIds=[iid],
                                               WaiterConfig={'Delay': 1, 'MaxAttempts': 120})


def test_encrypted_copy_to_another_region_launches(env, catalogue):
    """The issue's command: aws ec2 copy-image --source-region us-east-1 --region us-west-2
    --encrypted --kms-key-id ... gives a launchable, encrypted copy."""
    key = env.kms_west.create_key(Description='west images')['KeyMetadata']
    env.kms_west.create_alias(AliasName='alias/west-images', TargetKeyId=key['KeyId'])
    rc, out, err = env.st.daemon.aws(env.st.creds, 'ec2', 'copy-image', '--source-region',
                                     'us-east-1', '--source-image-id', catalogue, '--name',
                                     'catalogue-west-encrypted', '--encrypted', '--kms-key-id',
                                     'alias/west-images', region='us-west-2')
    assert rc == 0, err
    new = out['ImageId']
    rc, _, err = env.st.daemon.aws(env.st.creds, 'ec2', 'wait', 'image-available', '--image-ids',
                                   new, region='us-west-2')
    assert rc == 0, err
    im = env.west.describe_images(ImageIds=[new])['Images'][0]
    ebs = im['BlockDeviceMappings'][0]['Ebs']
    assert ebs['Encrypted'] is True
    snap = env.west.describe_snapshots(SnapshotIds=[ebs['SnapshotId']])['Snapshots'][0]
    assert snap['Encrypted'] is True and snap['KmsKeyId'] == key['Arn']
    iid = env.west.run_instances(ImageId=new, MinCount=1, MaxCount=1,
                                 UserData='#!/bin/sh\necho "encrypted copy boots"\n')[
                                     'Instances'][0]['InstanceId']
    try:
        vol = None
        deadline = time.time() + 60
        while not vol and time.time() < deadline:
            inst = env.west.describe_instances(InstanceIds=[iid])['Reservations'][0][
                'Instances'][0]
            bdm = inst.get('BlockDeviceMappings', [])
            vol = bdm[0]['Ebs']['VolumeId'] if bdm else None
        v = env.west.describe_volumes(VolumeIds=[vol])['Volumes'][0]
        assert v['Encrypted'] is True and v['KmsKeyId'] == key['Arn']
        console_has(env.west, iid, 'encrypted copy boots')
    finally:
        terminate(env.west, iid)


def test_shared_encrypted_image_launches_only_with_the_key(env, catalogue):
    key = env.kms.create_key(Description='shared')['KeyMetadata']
    new = env.ec2.copy_image(SourceRegion='us-east-1', SourceImageId=catalogue,
                             Name='catalogue-encrypted-shared', Encrypted=True,
                             KmsKeyId=key['Arn'])['ImageId']
    env.ec2.get_waiter('image_available').wait(ImageIds=[new],
                                               WaiterConfig={'Delay': 1, 'MaxAttempts': 120})
    b_ec2, b_kms, b = env.account('enc-launcher')
    env.ec2.modify_image_attribute(ImageId=new, LaunchPermission={'Add': [{'UserId':
                                                                           b.account_id}]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        b_ec2.run_instances(ImageId=new, MinCount=1, MaxCount=1)
    assert code_of(e) == 'InvalidParameterValue' and key['Arn'] in str(e.value)
    # A grant to B's account lets it launch.
    env.kms.create_grant(KeyId=key['KeyId'], GranteePrincipal='arn:aws:iam::%s:root'
                         % b.account_id, Operations=['Decrypt', 'GenerateDataKey',
                                                     'CreateGrant', 'DescribeKey'])
    iid = b_ec2.run_instances(ImageId=new, MinCount=1, MaxCount=1,
                              UserData='#!/bin/sh\necho "shared encrypted boots"\n')[
                                  'Instances'][0]['InstanceId']
    try:
        console_has(b_ec2, iid, 'shared encrypted boots')
        # Stopped, then the key disabled: the start fails with EC2's state reason.
        b_ec2.stop_instances(InstanceIds=[iid], Force=True)
        b_ec2.get_waiter('instance_stopped').wait(InstanceIds=[iid],
                                                  WaiterConfig={'Delay': 1, 'MaxAttempts': 120})
        env.kms.disable_key(KeyId=key['KeyId'])
        try:
            b_ec2.start_instances(InstanceIds=[iid])
            deadline = time.time() + 60
            inst = None
            while time.time() < deadline:
                inst = b_ec2.describe_instances(InstanceIds=[iid])['Reservations'][0][
                    'Instances'][0]
                if inst['State']['Name'] == 'stopped' and inst.get('StateReason'):
                    break
                time.sleep(0.5)
            assert inst['State']['Name'] == 'stopped', inst['State']
            assert inst['StateReason']['Code'] == 'Client.InvalidKMSKey.InvalidState', inst
        finally:
            env.kms.enable_key(KeyId=key['KeyId'])
    finally:
        terminate(b_ec2, iid)


def test_tampered_encrypted_chunk_is_an_io_error(env):
    from storage_helpers import NbdError
    key = env.kms.create_key()['KeyMetadata']
    blocks = marked(2, b't')
    vid = env.volume_with(blocks, Encrypted=True, KmsKeyId=key['Arn'])
    sid = env.st.snapshot(vid)
    before = set(env.chunk_files())
    copy = env.ec2.copy_snapshot(SourceRegion='us-east-1', SourceSnapshotId=sid, Encrypted=True,
                                 KmsKeyId=env.kms.create_key()['KeyMetadata']['Arn'])[
                                     'SnapshotId']
    env.st.wait_snapshot(copy)
    mine = sorted(set(env.chunk_files()) - before)
    assert len(mine) == 2  # the re-encrypted copy's own chunks
    def flip():
        with open(mine[0], 'r+b') as f:
            f.seek(os.path.getsize(mine[0]) - 20)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x40]))
    flip()
    try:
        good = bad = 0
        for i in range(2):
            try:
                assert env.st.read(copy, BLOCK, i * BLOCK) == blocks[i]
                good += 1
            except NbdError:
                bad += 1
        assert (good, bad) == (1, 1)
        # verify --read-data opens the region's keys and finds the damaged sealed chunk.
        rc, doc = env.st.verify(read_data=True)
        kinds = [p['Kind'] for p in doc['Problems'] if not p.get('Warning')]
        assert rc == 1 and kinds == ['chunk-corrupt'], doc
    finally:
        flip()


def test_launch_encrypts_volumes_from_a_clear_image(env, catalogue):
    key = env.kms.create_key()['KeyMetadata']
    root = env.ec2.describe_images(ImageIds=[catalogue])['Images'][0]['RootDeviceName']
    iid = env.ec2.run_instances(
        ImageId=catalogue, MinCount=1, MaxCount=1,
        BlockDeviceMappings=[{'DeviceName': root, 'Ebs': {'Encrypted': True,
                                                           'KmsKeyId': key['KeyId']}}],
        UserData='#!/bin/sh\necho "encrypted at launch"\n')['Instances'][0]['InstanceId']
    try:
        console_has(env.ec2, iid, 'encrypted at launch')
        inst = env.ec2.describe_instances(InstanceIds=[iid])['Reservations'][0]['Instances'][0]
        vol = inst['BlockDeviceMappings'][0]['Ebs']['VolumeId']
        v = env.ec2.describe_volumes(VolumeIds=[vol])['Volumes'][0]
        assert v['Encrypted'] is True and v['KmsKeyId'] == key['Arn']
    finally:
        terminate(env.ec2, iid)


def test_verify_is_clean_with_encrypted_data(env):
    """`amid verify --read-data` accepts encrypted chunks (sealed: checked when read with their
    key) and volumes based on their own re-encoded maps."""
    doc = env.st.assert_clean(read_data=True, warnings_ok=True)
    assert doc['Errors'] == 0
