"""Machine images: RegisterImage's rules, DescribeImages' owners, executable users, filters and
paging, attributes, sharing across accounts (owner, grantee, stranger, public), image block
public access, deprecation, deregistration protection with its cooldown, disabling and
deregistering with the snapshots — through boto3 and the AWS CLI."""
import datetime
import json
import time

import botocore.exceptions
import pytest

from conftest import run_amid


def code_of(e):
    return e.value.response['Error']['Code']


def snapshot(ec2, size=1):
    v = ec2.create_volume(AvailabilityZone='us-east-1a', Size=size)['VolumeId']
    s = ec2.create_snapshot(VolumeId=v)['SnapshotId']
    ec2.get_waiter('snapshot_completed').wait(SnapshotIds=[s],
                                              WaiterConfig={'Delay': 1, 'MaxAttempts': 60})
    ec2.delete_volume(VolumeId=v)
    return s


def register(ec2, name, snap, **kw):
    return ec2.register_image(
        Name=name, RootDeviceName='/dev/xvda', Architecture='x86_64',
        VirtualizationType='hvm', EnaSupport=True,
        BlockDeviceMappings=[{'DeviceName': '/dev/xvda',
                              'Ebs': {'SnapshotId': snap, 'VolumeType': 'gp3'}}],
        **kw)['ImageId']


def clock(amid, *args):
    run_amid('clock', *args, '--data', amid.datadir)
    time.sleep(1.2)  # the daemon re-reads the offset once a second


@pytest.fixture(scope='module')
def snap(ec2):
    return snapshot(ec2)


def test_register_and_describe(amid, ec2, snap):
    iid = register(ec2, 'reg-basic-1', snap, Description='first image',
                   TagSpecifications=[{'ResourceType': 'image',
                                       'Tags': [{'Key': 'role', 'Value': 'web'}]}])
    assert iid.startswith('ami-')
    ec2.get_waiter('image_exists').wait(ImageIds=[iid], WaiterConfig={'Delay': 1,
                                                                       'MaxAttempts': 10})
    ec2.get_waiter('image_available').wait(ImageIds=[iid], WaiterConfig={'Delay': 1,
                                                                          'MaxAttempts': 10})
    im = ec2.describe_images(ImageIds=[iid])['Images'][0]
    assert im['State'] == 'available' and im['Name'] == 'reg-basic-1'
    assert im['OwnerId'] == amid.admin.account_id and im['Public'] is False
    assert im['RootDeviceType'] == 'ebs' and im['RootDeviceName'] == '/dev/xvda'
    assert im['Architecture'] == 'x86_64' and im['VirtualizationType'] == 'hvm'
    assert im['EnaSupport'] is True and im['Description'] == 'first image'
    assert im['ImageType'] == 'machine' and im['Hypervisor'] == 'xen'
    assert im['DeregistrationProtection'] == 'disabled'
    bdm = im['BlockDeviceMappings'][0]
    assert bdm['DeviceName'] == '/dev/xvda' and bdm['Ebs']['SnapshotId'] == snap
    assert bdm['Ebs']['VolumeSize'] == 1 and bdm['Ebs']['VolumeType'] == 'gp3'
    assert bdm['Ebs']['DeleteOnTermination'] is True
    assert datetime.datetime.strptime(im['CreationDate'], '%Y-%m-%dT%H:%M:%S.%fZ')
    assert im['Tags'] == [{'Key': 'role', 'Value': 'web'}]
    got = ec2.describe_images(Owners=['self'], Filters=[
        {'Name': 'name', 'Values': ['reg-basic-*']},
        {'Name': 'block-device-mapping.snapshot-id', 'Values': [snap]},
        {'Name': 'tag:role', 'Values': ['web']}])['Images']
    assert [i['ImageId'] for i in got] == [iid]
    for f in ({'Name': 'is-public', 'Values': ['true']},
              {'Name': 'architecture', 'Values': ['arm64']},
              {'Name': 'name', 'Values': ['REG-*']}):
        assert iid not in [i['ImageId'] for i in
                           ec2.describe_images(Owners=['self'], Filters=[f])['Images']]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_images(Filters=[{'Name': 'colour', 'Values': ['x']}])
    assert code_of(e) == 'InvalidParameterValue'


def test_register_name_lengths(amid, snap):
    """Current SDKs check lengths before sending; amid answers raw requests as EC2 does."""
    import rawreq
    for name in ('ab', 'x' * 129):
        r = rawreq.call(amid.endpoint, amid.admin, {
            'Action': 'RegisterImage', 'Version': '2016-11-15', 'Name': name,
            'RootDeviceName': '/dev/xvda', 'BlockDeviceMapping.1.DeviceName': '/dev/xvda',
            'BlockDeviceMapping.1.Ebs.SnapshotId': snap})
        assert r.code() == 'InvalidAMIName.Malformed', r.text


@pytest.mark.parametrize('kw, code', [
    ({'Name': 'bad*name'}, 'InvalidAMIName.Malformed'),
    ({'RootDeviceName': '/dev/sdz'}, 'InvalidBlockDeviceMapping'),
    ({'VirtualizationType': 'paravirtual'}, 'InvalidParameterValue'),
    ({'BlockDeviceMappings': [{'DeviceName': '/dev/xvda',
                               'Ebs': {'SnapshotId': 'snap-0123456789abcdef0'}}]},
     'InvalidSnapshot.NotFound'),
    ({'BlockDeviceMappings': [{'DeviceName': 'floppy', 'Ebs': {'VolumeSize': 1}}]},
     'InvalidBlockDeviceMapping'),
    ({'BlockDeviceMappings': [{'DeviceName': '/dev/xvda', 'Ebs': {'VolumeSize': 1}}]},
     'InvalidBlockDeviceMapping'),
    ({'ImageLocation': 'bucket/manifest.xml'}, 'InvalidParameterValue'),
])
def test_register_rules(ec2, snap, kw, code):
    args = dict(Name='rules-image', RootDeviceName='/dev/xvda',
                BlockDeviceMappings=[{'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': snap}}])
    args.update(kw)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.register_image(**args)
    assert code_of(e) == code, e.value


def test_duplicate_name_and_small_volume(ec2, snap):
    register(ec2, 'dup-name', snap)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        register(ec2, 'dup-name', snap)
    assert code_of(e) == 'InvalidAMIName.Duplicate'
    big = snapshot(ec2, size=2)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.register_image(Name='too-small', RootDeviceName='/dev/xvda', BlockDeviceMappings=[
            {'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': big, 'VolumeSize': 1}}])
    assert code_of(e) == 'InvalidBlockDeviceMapping'


def test_sharing_matrix(amid, ec2, snap):
    owner = ec2
    b_creds = amid.new_account('img-grantee')
    c_creds = amid.new_account('img-stranger')
    b, c = amid.client('ec2', b_creds), amid.client('ec2', c_creds)
    iid = register(owner, 'shared-img', snap)
    # A stranger gets exactly what it would get for an image that does not exist.
    ghost = 'ami-0123456789abcdef0'
    for cli in (b, c):
        for target in (iid, ghost):
            with pytest.raises(botocore.exceptions.ClientError) as e:
                cli.describe_images(ImageIds=[target])
            assert code_of(e) == 'InvalidAMIID.NotFound'
            assert target in str(e.value)
            with pytest.raises(botocore.exceptions.ClientError) as e:
                cli.describe_image_attribute(ImageId=target, Attribute='description')
            assert code_of(e) == 'InvalidAMIID.NotFound'
            with pytest.raises(botocore.exceptions.ClientError) as e:
                cli.modify_image_attribute(ImageId=target, Description={'Value': 'x'})
            assert code_of(e) == 'InvalidAMIID.NotFound'
            with pytest.raises(botocore.exceptions.ClientError) as e:
                cli.deregister_image(ImageId=target)
            assert code_of(e) == 'InvalidAMIID.NotFound'
        assert iid not in [i['ImageId'] for i in cli.describe_images()['Images']]
    owner.modify_image_attribute(ImageId=iid, LaunchPermission={
        'Add': [{'UserId': b_creds.account_id}]})
    attr = owner.describe_image_attribute(ImageId=iid, Attribute='launchPermission')
    assert attr['LaunchPermissions'] == [{'UserId': b_creds.account_id}]
    # The grantee sees it by owner and as executable by itself, and may read, not change.
    assert [i['ImageId'] for i in b.describe_images(Owners=[amid.admin.account_id])['Images']] \
        == [iid]
    assert iid in [i['ImageId'] for i in b.describe_images(ExecutableUsers=['self'])['Images']]
    assert b.describe_image_attribute(ImageId=iid, Attribute='description')['ImageId'] == iid
    for call in (lambda: b.describe_image_attribute(ImageId=iid, Attribute='launchPermission'),
                 lambda: b.modify_image_attribute(ImageId=iid, Description={'Value': 'x'}),
                 lambda: b.deregister_image(ImageId=iid)):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e) == 'AuthFailure'
    # Sharing the image does not share its snapshot.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        b.describe_snapshots(SnapshotIds=[snap])
    assert code_of(e) == 'InvalidSnapshot.NotFound'
    # The stranger still sees nothing.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.describe_images(ImageIds=[iid])
    assert code_of(e) == 'InvalidAMIID.NotFound'
    # Public: everyone sees it.
    owner.modify_image_attribute(ImageId=iid, Attribute='launchPermission',
                                 OperationType='add', UserGroups=['all'])
    assert c.describe_images(ImageIds=[iid])['Images'][0]['Public'] is True
    assert iid in [i['ImageId'] for i in c.describe_images(ExecutableUsers=['all'])['Images']]
    # The grantee cancels its own permission; the image stays public.
    assert b.cancel_image_launch_permission(ImageId=iid)['Return'] is True
    attr = owner.describe_image_attribute(ImageId=iid, Attribute='launchPermission')
    assert attr['LaunchPermissions'] == [{'Group': 'all'}]
    owner.reset_image_attribute(ImageId=iid, Attribute='launchPermission')
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.describe_images(ImageIds=[iid])
    assert code_of(e) == 'InvalidAMIID.NotFound'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        owner.modify_image_attribute(ImageId=iid, LaunchPermission={'Add': [{'UserId': 'x1'}]})
    assert code_of(e) == 'InvalidUserID.Malformed'


def test_block_public_access(amid, snap):
    creds = amid.new_account('img-bpa')
    ec2 = amid.client('ec2', creds)
    s = snapshot(ec2)
    a = register(ec2, 'bpa-a', s)
    b = register(ec2, 'bpa-b', s)
    ec2.modify_image_attribute(ImageId=a, LaunchPermission={'Add': [{'Group': 'all'}]})
    assert ec2.get_image_block_public_access_state()['ImageBlockPublicAccessState'] == 'unblocked'
    r = ec2.enable_image_block_public_access(ImageBlockPublicAccessState='block-new-sharing')
    assert r['ImageBlockPublicAccessState'] == 'block-new-sharing'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_image_attribute(ImageId=b, LaunchPermission={'Add': [{'Group': 'all'}]})
    assert code_of(e) == 'OperationNotPermitted'
    # Existing public images stay public; sharing with accounts still works.
    assert ec2.describe_images(ImageIds=[a])['Images'][0]['Public'] is True
    ec2.modify_image_attribute(ImageId=b, LaunchPermission={'Add': [{'UserId': '123456789012'}]})
    # Another region is another setting.
    west = amid.client('ec2', creds, region='us-west-2')
    assert west.get_image_block_public_access_state()['ImageBlockPublicAccessState'] == \
        'unblocked'
    assert ec2.disable_image_block_public_access()['ImageBlockPublicAccessState'] == 'unblocked'
    ec2.modify_image_attribute(ImageId=b, LaunchPermission={'Add': [{'Group': 'all'}]})


def test_deprecation(amid, snap):
    owner_creds = amid.new_account('img-deprecator')
    owner = amid.client('ec2', owner_creds)
    other = amid.client('ec2', amid.new_account('img-deprecation-viewer'))
    s = snapshot(owner)
    iid = register(owner, 'old-image', s)
    owner.modify_image_attribute(ImageId=iid, LaunchPermission={'Add': [{'Group': 'all'}]})
    at = datetime.datetime.utcnow() + datetime.timedelta(hours=2)
    owner.enable_image_deprecation(ImageId=iid, DeprecateAt=at)
    im = owner.describe_images(ImageIds=[iid])['Images'][0]
    # EC2 rounds the seconds to the nearest minute.
    shown = datetime.datetime.strptime(im['DeprecationTime'], '%Y-%m-%dT%H:%M:%S.%fZ'
                                       if '.' in im['DeprecationTime'] else '%Y-%m-%dT%H:%M:%SZ')
    assert shown.second == 0 and abs((shown - at).total_seconds()) <= 30
    assert iid in [i['ImageId'] for i in other.describe_images(ExecutableUsers=['all'])['Images']]
    clock(amid, 'advance', '3h')
    try:
        # Deprecated: gone from others' listings unless IncludeDeprecated; the owner still sees it.
        assert iid not in [i['ImageId'] for i in
                           other.describe_images(ExecutableUsers=['all'])['Images']]
        assert iid in [i['ImageId'] for i in
                       other.describe_images(ExecutableUsers=['all'],
                                             IncludeDeprecated=True)['Images']]
        assert iid in [i['ImageId'] for i in owner.describe_images(Owners=['self'])['Images']]
        assert other.describe_images(ImageIds=[iid])['Images'][0]['ImageId'] == iid
        owner.disable_image_deprecation(ImageId=iid)
        assert iid in [i['ImageId'] for i in
                       other.describe_images(ExecutableUsers=['all'])['Images']]
    finally:
        clock(amid, 'reset')
    with pytest.raises(botocore.exceptions.ClientError) as e:
        owner.enable_image_deprecation(ImageId=iid, DeprecateAt=datetime.datetime(2000, 1, 1))
    assert code_of(e) == 'InvalidParameterValue'


def test_deregistration_protection_and_cooldown(amid, ec2, snap):
    iid = register(ec2, 'protected-img', snap)
    ec2.enable_image_deregistration_protection(ImageId=iid, WithCooldown=True)
    assert ec2.describe_images(ImageIds=[iid])['Images'][0]['DeregistrationProtection'] == \
        'enabled-with-cooldown'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.deregister_image(ImageId=iid)
    assert code_of(e) == 'OperationNotPermitted'
    ec2.disable_image_deregistration_protection(ImageId=iid)
    prot = ec2.describe_images(ImageIds=[iid])['Images'][0]['DeregistrationProtection']
    assert prot.startswith('disabled-until-')
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.deregister_image(ImageId=iid)
    assert code_of(e) == 'OperationNotPermitted'
    clock(amid, 'advance', '25h')
    try:
        assert ec2.describe_images(ImageIds=[iid])['Images'][0]['DeregistrationProtection'] == \
            'disabled'
        ec2.deregister_image(ImageId=iid)
    finally:
        clock(amid, 'reset')
    # Without cooldown: free as soon as disabled.
    iid2 = register(ec2, 'protected-img-2', snap)
    ec2.enable_image_deregistration_protection(ImageId=iid2)
    assert ec2.describe_images(ImageIds=[iid2])['Images'][0]['DeregistrationProtection'] == \
        'enabled-without-cooldown'
    ec2.disable_image_deregistration_protection(ImageId=iid2)
    ec2.deregister_image(ImageId=iid2)


def test_disable_and_enable(amid, ec2, snap):
    other = amid.client('ec2', amid.new_account('img-disable-viewer'))
    iid = register(ec2, 'disable-me', snap)
    ec2.modify_image_attribute(ImageId=iid, LaunchPermission={'Add': [{'Group': 'all'}]})
    assert ec2.disable_image(ImageId=iid)['Return'] is True
    assert iid not in [i['ImageId'] for i in ec2.describe_images(Owners=['self'])['Images']]
    got = ec2.describe_images(Owners=['self'], IncludeDisabled=True)['Images']
    assert [i['State'] for i in got if i['ImageId'] == iid] == ['disabled']
    with pytest.raises(botocore.exceptions.ClientError) as e:
        other.describe_images(ImageIds=[iid])
    assert code_of(e) == 'InvalidAMIID.NotFound'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_image_attribute(ImageId=iid, LaunchPermission={'Add': [{'Group': 'all'}]})
    assert code_of(e) == 'IncorrectState'
    ec2.enable_image(ImageId=iid)
    im = ec2.describe_images(ImageIds=[iid])['Images'][0]
    assert im['State'] == 'available' and im['Public'] is False  # disabling made it private
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.enable_image(ImageId=iid)
    assert code_of(e) == 'IncorrectState'


def test_deregister_with_snapshots_and_in_use(amid, ec2):
    s1, s2 = snapshot(ec2), snapshot(ec2)
    a = ec2.register_image(Name='dereg-a', RootDeviceName='/dev/xvda', BlockDeviceMappings=[
        {'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': s1}},
        {'DeviceName': '/dev/xvdb', 'Ebs': {'SnapshotId': s2}}])['ImageId']
    b = register(ec2, 'dereg-b', s2)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_snapshot(SnapshotId=s1)
    assert code_of(e) == 'InvalidSnapshot.InUse'
    # boto3 1.26 predates DeleteAssociatedSnapshots: send it by hand.
    import rawreq
    r = rawreq.call(amid.endpoint, amid.admin, {'Action': 'DeregisterImage',
                                                 'Version': '2016-11-15', 'ImageId': a,
                                                 'DeleteAssociatedSnapshots': 'true'})
    assert r.status == 200, r.text
    assert '<snapshotId>%s</snapshotId><returnCode>success</returnCode>' % s1 in r.text
    assert '<snapshotId>%s</snapshotId><returnCode>skipped</returnCode>' % s2 in r.text
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_snapshots(SnapshotIds=[s1])
    assert code_of(e) == 'InvalidSnapshot.NotFound'
    assert ec2.describe_snapshots(SnapshotIds=[s2])['Snapshots']
    # Recently deregistered images still show, as deregistered, when asked for by id.
    assert ec2.describe_images(ImageIds=[a])['Images'][0]['State'] == 'deregistered'
    assert a not in [i['ImageId'] for i in ec2.describe_images(Owners=['self'])['Images']]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.deregister_image(ImageId=a)
    assert code_of(e) == 'InvalidAMIID.NotFound'
    # The name is free again.
    register(ec2, 'dereg-a', s2)
    ec2.deregister_image(ImageId=b)


def test_describe_images_paging(amid):
    creds = amid.new_account('img-pager')
    ec2 = amid.client('ec2', creds)
    s = snapshot(ec2)
    ids = sorted(register(ec2, 'page-%02d' % i, s) for i in range(12))
    pages = list(ec2.get_paginator('describe_images').paginate(
        Owners=['self'], PaginationConfig={'PageSize': 5}))
    assert [i['ImageId'] for p in pages for i in p['Images']] == ids
    assert len(pages) == 3
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_images(Owners=['self'], NextToken='garbage')
    assert code_of(e) == 'InvalidNextToken'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_images(ImageIds=ids[:1], MaxResults=5)
    assert code_of(e) == 'InvalidParameterCombination'


def test_cli(amid, ec2, snap):
    rc, out, _ = amid.aws('ec2', 'register-image', '--name', 'cli-image', '--root-device-name',
                          '/dev/xvda', '--block-device-mappings',
                          json.dumps([{'DeviceName': '/dev/xvda',
                                       'Ebs': {'SnapshotId': snap}}]))
    iid = out['ImageId']
    amid.aws('ec2', 'wait', 'image-available', '--image-ids', iid)
    rc, out, _ = amid.aws('ec2', 'describe-images', '--owners', 'self', '--filters',
                          'Name=name,Values=cli-*')
    assert [i['ImageId'] for i in out['Images']] == [iid]
    amid.aws('ec2', 'modify-image-attribute', '--image-id', iid, '--description',
             'Value=described')
    rc, out, _ = amid.aws('ec2', 'describe-image-attribute', '--image-id', iid, '--attribute',
                          'description')
    assert out['Description']['Value'] == 'described'
    amid.aws('ec2', 'deregister-image', '--image-id', iid)


def test_system_catalogue(amid):
    """`amid catalog import` (what `make run` does) puts a public image owned by "amid" in every
    region, once; any account finds it with --owners amid."""
    first = json.loads(run_amid('catalog', 'import', '--data', amid.datadir,
                                '--format', 'json').stdout)
    again = json.loads(run_amid('catalog', 'import', '--data', amid.datadir,
                                '--format', 'json').stdout)
    assert [i['ImageId'] for i in first['Images']] == [i['ImageId'] for i in again['Images']]
    assert all(not i['Imported'] for i in again['Images'])
    assert sorted(i['Region'] for i in first['Images']) == ['us-east-1', 'us-west-2']
    viewer = amid.new_account('catalogue-viewer')
    rc, out, _ = amid.aws('ec2', 'describe-images', '--owners', 'amid', creds=viewer)
    east = [i for i in first['Images'] if i['Region'] == 'us-east-1'][0]['ImageId']
    assert [i['ImageId'] for i in out['Images']] == [east]
    im = out['Images'][0]
    assert im['ImageOwnerAlias'] == 'amid' and im['Public'] is True
    assert im['Name'].startswith('amid-busybox-x86_64-20') and im['State'] == 'available'
    assert im['BlockDeviceMappings'][0]['Ebs']['VolumeSize'] == 1
    assert 'Tags' not in im  # tags are the owner's, never shared with the image
    rc, out, _ = amid.aws('ec2', 'describe-images', '--owners', 'amid', creds=viewer,
                          region='us-west-2')
    assert len(out['Images']) == 1
    # Its snapshot is the system account's and stays private.
    snap = im['BlockDeviceMappings'][0]['Ebs']['SnapshotId']
    rc, _, err = amid.aws('ec2', 'describe-snapshots', '--snapshot-ids', snap, creds=viewer,
                          check=False)
    assert rc != 0 and 'InvalidSnapshot.NotFound' in err
