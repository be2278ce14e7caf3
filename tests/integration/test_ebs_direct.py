"""The EBS direct APIs through boto3's `ebs` client, as coldsnap uses them: uploads verified by
SHA-256 and the LINEAR aggregate, incremental snapshots on a parent, block lists, changed blocks
between any two snapshots, reads with expiring block tokens, and every error with its reason."""
import base64
import hashlib
import os

import botocore.exceptions
import pytest

BLOCK = 512 * 1024


def sha(b):
    return base64.b64encode(hashlib.sha256(b).digest()).decode()


def linear(blocks):
    """LINEAR aggregation over {index: data}, in index order."""
    h = hashlib.sha256()
    for i in sorted(blocks):
        h.update(hashlib.sha256(blocks[i]).digest())
    return base64.b64encode(h.digest()).decode()


def put(ebs, sid, idx, data):
    return ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=idx, BlockData=data,
                                  DataLength=len(data), Checksum=sha(data),
                                  ChecksumAlgorithm='SHA256')


def upload(ebs, size_gib, blocks, parent=None, desc='upload'):
    kw = {'ParentSnapshotId': parent} if parent else {}
    s = ebs.start_snapshot(VolumeSize=size_gib, Description=desc, Timeout=60, **kw)
    for i, d in blocks.items():
        put(ebs, s['SnapshotId'], i, d)
    r = ebs.complete_snapshot(SnapshotId=s['SnapshotId'], ChangedBlocksCount=len(blocks),
                              Checksum=linear(blocks), ChecksumAlgorithm='SHA256',
                              ChecksumAggregationMethod='LINEAR')
    assert r['Status'] == 'completed'
    return s['SnapshotId']


def read_all(ebs, sid):
    out = {}
    kw = {}
    while True:
        r = ebs.list_snapshot_blocks(SnapshotId=sid, **kw)
        for b in r['Blocks']:
            g = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=b['BlockIndex'],
                                       BlockToken=b['BlockToken'])
            data = g['BlockData'].read()
            assert g['Checksum'] == sha(data) and g['DataLength'] == BLOCK
            out[b['BlockIndex']] = data
        if 'NextToken' not in r:
            return out
        kw = {'NextToken': r['NextToken']}


@pytest.fixture(scope='module')
def ebs(amid):
    return amid.client('ebs')


def test_upload_and_read_back(ebs, ec2):
    blocks = {0: os.urandom(BLOCK), 7: b'A' * BLOCK, 2047: os.urandom(BLOCK)}
    s = ebs.start_snapshot(VolumeSize=1, Description='coldsnap-like',
                           Tags=[{'Key': 'k', 'Value': 'v'}])
    assert s['Status'] == 'pending' and s['BlockSize'] == BLOCK and s['VolumeSize'] == 1
    sid = s['SnapshotId']
    for i, d in blocks.items():
        r = put(ebs, sid, i, d)
        assert r['Checksum'] == sha(d) and r['ChecksumAlgorithm'] == 'SHA256'
    put(ebs, sid, 9, bytes(BLOCK))  # an explicit zero block counts as written
    blocks9 = dict(blocks)
    blocks9[9] = bytes(BLOCK)
    assert ec2.describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]['State'] == 'pending'
    r = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=4, Checksum=linear(blocks9),
                              ChecksumAlgorithm='SHA256', ChecksumAggregationMethod='LINEAR')
    assert r['Status'] == 'completed'
    d = ec2.describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]
    assert d['State'] == 'completed' and d['Tags'] == [{'Key': 'k', 'Value': 'v'}]
    assert read_all(ebs, sid) == blocks  # the zero block is not listed
    lst = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100, StartingBlockIndex=5)
    assert [b['BlockIndex'] for b in lst['Blocks']] == [7, 2047]
    assert lst['VolumeSize'] == 1 and lst['BlockSize'] == BLOCK


def test_incremental_and_changed_blocks(ebs):
    base = {i: os.urandom(BLOCK) for i in range(4)}
    a = upload(ebs, 1, base)
    delta = {1: os.urandom(BLOCK), 10: os.urandom(BLOCK)}
    b = upload(ebs, 1, delta, parent=a)
    expect = dict(base)
    expect.update(delta)
    assert read_all(ebs, b) == expect
    ch = ebs.list_changed_blocks(FirstSnapshotId=a, SecondSnapshotId=b)['ChangedBlocks']
    assert [c['BlockIndex'] for c in ch] == [1, 10]
    assert 'FirstBlockToken' in ch[0] and 'FirstBlockToken' not in ch[1]
    g = ebs.get_snapshot_block(SnapshotId=b, BlockIndex=1, BlockToken=ch[0]['SecondBlockToken'])
    assert g['BlockData'].read() == delta[1]
    g = ebs.get_snapshot_block(SnapshotId=a, BlockIndex=1, BlockToken=ch[0]['FirstBlockToken'])
    assert g['BlockData'].read() == base[1]
    # Two unrelated snapshots of one size compare too.
    c = upload(ebs, 1, {1: delta[1], 3: base[3]})
    ch = ebs.list_changed_blocks(FirstSnapshotId=a, SecondSnapshotId=c)['ChangedBlocks']
    assert [x['BlockIndex'] for x in ch] == [0, 1, 2]
    # Without a first snapshot: every block of the second.
    ch = ebs.list_changed_blocks(SecondSnapshotId=c)['ChangedBlocks']
    assert [x['BlockIndex'] for x in ch] == [1, 3]
    big = upload(ebs, 2, {0: base[0]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ebs.list_changed_blocks(FirstSnapshotId=a, SecondSnapshotId=big)
    assert e.value.response['Error']['Code'] == 'ValidationException'


def reason(e):
    return e.value.response.get('Reason') or e.value.response['Error'].get('Reason')


def test_errors(amid, ebs):
    sid = ebs.start_snapshot(VolumeSize=1)['SnapshotId']
    data = os.urandom(BLOCK)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockData=data, DataLength=BLOCK,
                               Checksum=sha(b'other'), ChecksumAlgorithm='SHA256')
    assert e.value.response['Error']['Code'] == 'ValidationException'
    assert reason(e) == 'INVALID_CHECKSUM'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        put(ebs, sid, 2048, data)
    assert reason(e) == 'INVALID_BLOCK'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        put(ebs, sid, 0, data[:1000])
    assert reason(e) == 'INVALID_BLOCK'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        put(ebs, 'snap-0123456789abcdef0', 0, data)
    assert e.value.response['Error']['Code'] == 'ResourceNotFoundException'
    assert e.value.response['ResponseMetadata']['HTTPStatusCode'] == 404
    put(ebs, sid, 0, data)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2)
    assert e.value.response['Error']['Code'] == 'ValidationException'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1, Checksum=linear({0: b'x'}),
                              ChecksumAlgorithm='SHA256', ChecksumAggregationMethod='LINEAR')
    assert reason(e) == 'INVALID_CHECKSUM'
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=1)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        put(ebs, sid, 1, data)
    assert e.value.response['Error']['Code'] == 'ValidationException'
    tok = ebs.list_snapshot_blocks(SnapshotId=sid)['Blocks'][0]['BlockToken']
    for bad in ('AAAA', tok[:-4] + 'AAA=', ''):
        with pytest.raises((botocore.exceptions.ClientError,
                            botocore.exceptions.ParamValidationError)) as e:
            ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockToken=bad)
    # A token for block 0 does not open block 1.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=1, BlockToken=tok)
    assert reason(e) == 'INVALID_BLOCK_TOKEN'
    # Another account cannot read or write it.
    other = amid.client('ebs', amid.new_account('ebs-other'))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        other.list_snapshot_blocks(SnapshotId=sid)
    assert e.value.response['Error']['Code'] == 'ResourceNotFoundException'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        other.get_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockToken=tok)
    assert e.value.response['Error']['Code'] == 'ResourceNotFoundException'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ebs.start_snapshot(VolumeSize=1, ParentSnapshotId='snap-0123456789abcdef0')
    assert e.value.response['Error']['Code'] == 'ResourceNotFoundException'


def test_client_token(ebs):
    a = ebs.start_snapshot(VolumeSize=1, ClientToken='ct-1')
    b = ebs.start_snapshot(VolumeSize=1, ClientToken='ct-1')
    assert a['SnapshotId'] == b['SnapshotId']
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ebs.start_snapshot(VolumeSize=2, ClientToken='ct-1')
    assert e.value.response['Error']['Code'] == 'ConflictException'
