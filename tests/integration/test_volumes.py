"""Volumes and snapshots through boto3 and the AWS CLI: CreateVolume's rules, DescribeVolumes'
filters and paging, ModifyVolume, snapshots from volumes, DescribeSnapshots' owners and
permissions, CopySnapshot, the attribute calls, tags on both, and the errors AWS gives."""
import time

import botocore.exceptions
import pytest

import rawreq


def code_of(e):
    return e.value.response['Error']['Code']


def wait_snapshot(ec2, sid, state='completed', timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = ec2.describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]
        if s['State'] == state:
            return s
        assert s['State'] == 'pending', s
        time.sleep(0.1)
    raise AssertionError('snapshot %s stayed %s' % (sid, s['State']))


def test_create_describe_delete_volume(amid, ec2):
    v = ec2.create_volume(AvailabilityZone='us-east-1a', Size=2, VolumeType='gp3',
                          TagSpecifications=[{'ResourceType': 'volume',
                                              'Tags': [{'Key': 'Name', 'Value': 'data'}]}])
    assert v['VolumeId'].startswith('vol-') and len(v['VolumeId']) == 21
    assert v['State'] == 'creating' and v['Size'] == 2 and v['VolumeType'] == 'gp3'
    assert v['Iops'] == 3000 and v['Throughput'] == 125
    assert v['Tags'] == [{'Key': 'Name', 'Value': 'data'}]
    ec2.get_waiter('volume_available').wait(VolumeIds=[v['VolumeId']],
                                            WaiterConfig={'Delay': 1, 'MaxAttempts': 10})
    d = ec2.describe_volumes(VolumeIds=[v['VolumeId']])['Volumes'][0]
    assert d['State'] == 'available' and d['AvailabilityZone'] == 'us-east-1a'
    assert d['Encrypted'] is False and d['Attachments'] == []
    assert {'Key': 'Name', 'Value': 'data'} in d['Tags']
    got = ec2.describe_volumes(Filters=[{'Name': 'tag:Name', 'Values': ['data']},
                                        {'Name': 'volume-type', 'Values': ['gp3']}])['Volumes']
    assert v['VolumeId'] in [x['VolumeId'] for x in got]
    ec2.delete_volume(VolumeId=v['VolumeId'])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_volumes(VolumeIds=[v['VolumeId']])
    assert code_of(e) == 'InvalidVolume.NotFound'
    ec2.get_waiter('volume_deleted').wait(VolumeIds=[v['VolumeId']],
                                          WaiterConfig={'Delay': 1, 'MaxAttempts': 5})


@pytest.mark.parametrize('kw, code', [
    ({'Size': 10, 'VolumeType': 'io1'}, 'InvalidParameterCombination'),      # iops required
    ({'Size': 1, 'VolumeType': 'gp2', 'Iops': 300}, 'InvalidParameterCombination'),
    ({'Size': 10, 'VolumeType': 'gp2', 'Throughput': 200}, 'InvalidParameterCombination'),
    ({'Size': 20000, 'VolumeType': 'gp3'}, 'InvalidParameterValue'),
    ({'Size': 100, 'VolumeType': 'st1'}, 'InvalidParameterValue'),              # min 125
    ({'Size': 2000, 'VolumeType': 'standard'}, 'InvalidParameterValue'),        # max 1024
    ({'Size': 10, 'VolumeType': 'gp3', 'Iops': 2000}, 'InvalidParameterValue'),
    ({'Size': 10, 'VolumeType': 'gp3', 'Iops': 3000, 'Throughput': 1000},
     'InvalidParameterValue'),                                                  # > 0.25 MiB/iops
    ({'Size': 4, 'VolumeType': 'io1', 'Iops': 1000}, 'InvalidParameterValue'),   # > 50/GiB
    ({'Size': 1, 'VolumeType': 'floppy'}, 'InvalidParameterValue'),
    ({'VolumeType': 'gp2'}, 'MissingParameter'),
    ({'Size': 1, 'SnapshotId': 'snap-0123456789abcdef0'}, 'InvalidSnapshot.NotFound'),
    ({'Size': 1, 'SnapshotId': 'snap-xyz'}, 'InvalidSnapshotID.Malformed'),
    ({'Size': 1, 'KmsKeyId': 'alias/aws/ebs'}, 'InvalidParameterDependency'),
    ({'Size': 1, 'Encrypted': True, 'KmsKeyId': 'alias/no-such-key'}, 'InvalidParameterValue'),
])
def test_create_volume_rules(ec2, kw, code):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_volume(AvailabilityZone='us-east-1b', **kw)
    assert code_of(e) == code, e.value


def test_create_volume_zone_rules(amid, ec2):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_volume(AvailabilityZone='us-west-2a', Size=1)
    assert code_of(e) == 'InvalidParameterValue'
    # Debian's botocore predates AvailabilityZoneId: send it by hand.
    r = rawreq.call(amid.endpoint, amid.admin, {'Action': 'CreateVolume', 'Version': '2016-11-15',
                                                 'AvailabilityZoneId': 'use1-az3', 'Size': '1'})
    assert r.status == 200, r.text
    assert '<availabilityZone>us-east-1c</availabilityZone>' in r.text
    vid = r.text.split('<volumeId>')[1].split('<')[0]
    ec2.delete_volume(VolumeId=vid)
    r = rawreq.call(amid.endpoint, amid.admin, {'Action': 'CreateVolume', 'Version': '2016-11-15',
                                                 'AvailabilityZoneId': 'use1-az3', 'Size': '1',
                                                 'AvailabilityZone': 'us-east-1a'})
    assert r.code() == 'InvalidParameterCombination', r.text


def test_create_volume_client_token_and_dry_run(ec2):
    a = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1, ClientToken='tok-1')
    b = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1, ClientToken='tok-1')
    assert a['VolumeId'] == b['VolumeId']
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_volume(AvailabilityZone='us-east-1a', Size=2, ClientToken='tok-1')
    assert code_of(e) == 'IdempotentParameterMismatch'
    before = len(ec2.describe_volumes()['Volumes'])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_volume(AvailabilityZone='us-east-1a', Size=1, DryRun=True)
    assert code_of(e) == 'DryRunOperation'
    assert len(ec2.describe_volumes()['Volumes']) == before
    ec2.delete_volume(VolumeId=a['VolumeId'])


def test_describe_volumes_paging_and_malformed_ids(ec2):
    ids = [ec2.create_volume(AvailabilityZone='us-east-1a', Size=1,
                             TagSpecifications=[{'ResourceType': 'volume', 'Tags': [
                                 {'Key': 'batch', 'Value': 'paging'}]}])['VolumeId']
           for _ in range(12)]
    pages = list(ec2.get_paginator('describe_volumes').paginate(
        Filters=[{'Name': 'tag:batch', 'Values': ['paging']}],
        PaginationConfig={'PageSize': 5}))
    seen = [v['VolumeId'] for p in pages for v in p['Volumes']]
    assert sorted(seen) == sorted(ids) and len(pages) == 3
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_volumes(VolumeIds=['vol-nothex'])
    assert code_of(e) == 'InvalidVolumeID.Malformed'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_volumes(MaxResults=4)
    assert code_of(e) == 'InvalidParameterValue'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_volumes(Filters=[{'Name': 'colour', 'Values': ['x']}])
    assert code_of(e) == 'InvalidParameterValue'
    for i in ids:
        ec2.delete_volume(VolumeId=i)


def test_modify_volume(ec2):
    v = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1, VolumeType='gp2')['VolumeId']
    m = ec2.modify_volume(VolumeId=v, Size=10, VolumeType='gp3', Iops=4000)['VolumeModification']
    assert m['OriginalSize'] == 1 and m['TargetSize'] == 10
    assert m['TargetVolumeType'] == 'gp3' and m['TargetIops'] == 4000
    d = ec2.describe_volumes(VolumeIds=[v])['Volumes'][0]
    assert d['Size'] == 10 and d['VolumeType'] == 'gp3' and d['Iops'] == 4000
    mods = ec2.describe_volumes_modifications(VolumeIds=[v])['VolumesModifications']
    assert mods[0]['TargetSize'] == 10 and mods[0]['ModificationState'] == 'completed'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_volume(VolumeId=v, Iops=9000)  # 900 IOPS per GiB
    assert code_of(e) == 'InvalidParameterValue'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_volume(VolumeId=v, Size=2)
    assert code_of(e) == 'InvalidParameterValue'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_volume(VolumeId='vol-0123456789abcdef0', Size=5)
    assert code_of(e) == 'InvalidVolume.NotFound'
    ec2.delete_volume(VolumeId=v)


def test_snapshot_lifecycle_and_tags(amid, ec2):
    v = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    s = ec2.create_snapshot(VolumeId=v, Description='first',
                            TagSpecifications=[{'ResourceType': 'snapshot',
                                                'Tags': [{'Key': 'k', 'Value': 'v'}]}])
    assert s['State'] == 'pending' and s['VolumeId'] == v and s['VolumeSize'] == 1
    assert s['OwnerId'] == amid.admin.account_id and s['Description'] == 'first'
    ec2.get_waiter('snapshot_completed').wait(SnapshotIds=[s['SnapshotId']],
                                              WaiterConfig={'Delay': 1, 'MaxAttempts': 30})
    d = ec2.describe_snapshots(SnapshotIds=[s['SnapshotId']])['Snapshots'][0]
    assert d['State'] == 'completed' and d['Progress'] == '100%'
    assert d['Tags'] == [{'Key': 'k', 'Value': 'v'}]
    ec2.create_tags(Resources=[s['SnapshotId'], v], Tags=[{'Key': 'env', 'Value': 'test'}])
    tags = ec2.describe_tags(Filters=[{'Name': 'key', 'Values': ['env']}])['Tags']
    assert sorted(t['ResourceId'] for t in tags) == sorted([s['SnapshotId'], v])
    assert {t['ResourceType'] for t in tags} == {'snapshot', 'volume'}
    ec2.delete_tags(Resources=[v], Tags=[{'Key': 'env'}])
    tags = ec2.describe_tags(Filters=[{'Name': 'resource-id', 'Values': [v]}])['Tags']
    assert tags == []
    got = ec2.describe_snapshots(OwnerIds=['self'],
                                 Filters=[{'Name': 'volume-id', 'Values': [v]}])['Snapshots']
    assert [x['SnapshotId'] for x in got] == [s['SnapshotId']]
    # A volume from the snapshot, bigger than it.
    nv = ec2.create_volume(AvailabilityZone='us-east-1b', SnapshotId=s['SnapshotId'], Size=4)
    assert nv['SnapshotId'] == s['SnapshotId'] and nv['Size'] == 4
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_volume(AvailabilityZone='us-east-1b', SnapshotId=s['SnapshotId'], Size=1,
                          VolumeType='sc1')
    assert code_of(e) == 'InvalidParameterValue'
    c = ec2.copy_snapshot(SourceRegion='us-east-1', SourceSnapshotId=s['SnapshotId'],
                          Description='copy')
    cd = wait_snapshot(ec2, c['SnapshotId'])
    assert cd['Description'] == 'copy' and cd['VolumeSize'] == 1
    for sid in (s['SnapshotId'], c['SnapshotId']):
        ec2.delete_snapshot(SnapshotId=sid)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_snapshots(SnapshotIds=[s['SnapshotId']])
    assert code_of(e) == 'InvalidSnapshot.NotFound'
    ec2.delete_volume(VolumeId=nv['VolumeId'])
    ec2.delete_volume(VolumeId=v)


def test_snapshot_sharing_across_accounts(amid, ec2):
    other = amid.new_account('vol-sharer')
    ec2b = amid.client('ec2', other)
    v = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    sid = ec2.create_snapshot(VolumeId=v)['SnapshotId']
    wait_snapshot(ec2, sid)
    # Not shared: the other account sees nothing and cannot use it.
    assert sid not in [x['SnapshotId'] for x in ec2b.describe_snapshots()['Snapshots']]
    for call in (lambda: ec2b.describe_snapshots(SnapshotIds=[sid]),
                 lambda: ec2b.create_volume(AvailabilityZone='us-east-1a', SnapshotId=sid),
                 lambda: ec2b.delete_snapshot(SnapshotId=sid),
                 lambda: ec2b.describe_snapshot_attribute(SnapshotId=sid,
                                                          Attribute='createVolumePermission')):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e) == 'InvalidSnapshot.NotFound'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2b.describe_volumes(VolumeIds=[v])
    assert code_of(e) == 'InvalidVolume.NotFound'
    ec2.modify_snapshot_attribute(SnapshotId=sid, Attribute='createVolumePermission',
                                  OperationType='add', UserIds=[other.account_id])
    attr = ec2.describe_snapshot_attribute(SnapshotId=sid, Attribute='createVolumePermission')
    assert attr['CreateVolumePermissions'] == [{'UserId': other.account_id}]
    got = ec2b.describe_snapshots(RestorableByUserIds=['self'])['Snapshots']
    assert sid in [x['SnapshotId'] for x in got]
    got = ec2b.describe_snapshots(OwnerIds=[amid.admin.account_id])['Snapshots']
    assert [x['SnapshotId'] for x in got] == [sid]
    nv = ec2b.create_volume(AvailabilityZone='us-east-1a', SnapshotId=sid)['VolumeId']
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2b.delete_snapshot(SnapshotId=sid)
    assert code_of(e) == 'UnauthorizedOperation'
    # Public, then reset.
    ec2.modify_snapshot_attribute(SnapshotId=sid,
                                  CreateVolumePermission={'Add': [{'Group': 'all'}],
                                                          'Remove': [{'UserId':
                                                                      other.account_id}]})
    attr = ec2.describe_snapshot_attribute(SnapshotId=sid, Attribute='createVolumePermission')
    assert attr['CreateVolumePermissions'] == [{'Group': 'all'}]
    third = amid.client('ec2', amid.new_account('vol-third'))
    assert sid in [x['SnapshotId'] for x in
                   third.describe_snapshots(RestorableByUserIds=['all'])['Snapshots']]
    ec2.reset_snapshot_attribute(SnapshotId=sid, Attribute='createVolumePermission')
    assert sid not in [x['SnapshotId'] for x in third.describe_snapshots()['Snapshots']]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_snapshot_attribute(SnapshotId=sid, Attribute='createVolumePermission',
                                      OperationType='add', UserIds=['12345'])
    assert code_of(e) == 'InvalidUserID.Malformed'
    ec2b.delete_volume(VolumeId=nv)
    ec2.delete_snapshot(SnapshotId=sid)
    ec2.delete_volume(VolumeId=v)


def test_cli_volume_and_snapshot(amid):
    rc, v, _ = amid.aws('ec2', 'create-volume', '--availability-zone', 'us-east-1c', '--size', '1')
    rc, s, _ = amid.aws('ec2', 'create-snapshot', '--volume-id', v['VolumeId'])
    amid.aws('ec2', 'wait', 'snapshot-completed', '--snapshot-ids', s['SnapshotId'])
    rc, out, _ = amid.aws('ec2', 'describe-snapshots', '--owner-ids', 'self', '--snapshot-ids',
                          s['SnapshotId'])
    assert out['Snapshots'][0]['State'] == 'completed'
    rc, _, err = amid.aws('ec2', 'delete-volume', '--volume-id', 'vol-0000000000000000f',
                          check=False)
    assert rc != 0 and 'InvalidVolume.NotFound' in err
    amid.aws('ec2', 'delete-snapshot', '--snapshot-id', s['SnapshotId'])
    amid.aws('ec2', 'delete-volume', '--volume-id', v['VolumeId'])
