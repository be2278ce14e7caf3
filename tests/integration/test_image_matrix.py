"""The authorization matrix of machine images and snapshots: every image and snapshot operation
amid serves, for the owner A, an account B with an explicit launch (or create-volume)
permission, and a third account C, on images and snapshots in every state.

The expected outcomes are the tables below, one row per (operation, actor) and one column per
state.  "hid" means the request must get exactly the answer a nonexistent id gets: for each such
cell the test sends the same request with a random unused id and compares error code, HTTP status
and message with the id substituted, so "exists but not yours" is indistinguishable from "does
not exist".  Listing tables say which states' images appear ("in") in each listing.

Everything is created once per module (about 280 images and 65 snapshots, mostly cheap copies);
the deprecated image and the deregistered ones need the deployment clock, which the fixture moves
forward 3 hours (`amid clock advance`) and resets at the end.
"""
import base64
import datetime
import hashlib
import os
import secrets
import time

import botocore.exceptions
import pytest

from conftest import run_amid

BLOCK = 512 * 1024
DUMMY = '111122223333'  # an account id nobody has: a harmless launch-permission grantee
DESCRIPTION = 'matrix image'

# ---- the states ----

IMAGE_STATES = ['private', 'shared', 'public', 'deprecated', 'disabled', 'protected',
                'dereg-new', 'dereg-old']
# private     A's image, no launch permissions
# shared      launch permission for B
# public      launch permission for B and for "all": C sees it as a member of the public
# deprecated  shared with B, deprecation time passed (deprecated AMIs leave others' listings)
# disabled    shared with B and public, then disabled (which makes it private)
# protected   shared with B, deregistration protection on
# dereg-new   shared with B and public, deregistered 0 minutes ago (visible to A by id for 1 h)
# dereg-old   the same, deregistered 3 hours ago
SNAP_STATES = ['private', 'backing', 'shared', 'public', 'deleted']
# private  A's snapshot, no permissions
# backing  the snapshot of A's images shared with B and public: sharing an image never
#          shares its snapshot, so it stays private
# shared   create-volume permission for B
# public   create-volume permission for B and "all": C sees it as a member of the public
# deleted  A deleted it
ACTORS = ['owner', 'grantee', 'stranger']  # A, B, C

# Outcome codes of the tables.
CODES = {
    'ok': None,           # success
    'hid': None,          # exactly the answer for a nonexistent id
    'Auth': 'AuthFailure',
    'IncSt': 'IncorrectState',
    'NoPerm': 'OperationNotPermitted',
    'IPV': 'InvalidParameterValue',
    'Unauth': 'UnauthorizedOperation',
    'InUse': 'InvalidSnapshot.InUse',
}

# Outcomes amid knowingly gets wrong: strict xfails, with the reason (none at present).
XFAIL_REASONS = {}


def rows(**kw):
    """One operation's table: actor -> {state: outcome}."""
    out = {}
    for actor, line in kw.items():
        cells = line.split()
        states = IMAGE_STATES if len(cells) == len(IMAGE_STATES) else SNAP_STATES
        assert len(cells) == len(states), (actor, line)
        out[actor] = dict(zip(states, cells))
    return out


# ---- image operations: the table ----
#                          private shared public deprec disabled protect dereg-new dereg-old
SEE = rows(owner=         'ok      ok     ok     ok     ok       ok      ok        hid',
           grantee=       'hid     ok     ok     ok     hid      ok      hid       hid',
           stranger=      'hid     hid    ok     hid    hid      hid     hid       hid')
OWNER_ONLY = rows(owner=  'ok      ok     ok     ok     ok       ok      hid       hid',
                  grantee='hid     Auth   Auth   Auth   hid      Auth    hid       hid',
                  stranger='hid    hid    Auth   hid    hid      hid     hid       hid')


def owner_row(line):
    return dict(OWNER_ONLY, owner=rows(owner=line)['owner'])


# Non-owners may read every attribute but the launch permissions.  A recently deregistered image
# stays readable by id for its owner (as DescribeImages shows it); its launch permissions, which
# deregistering cleared, are looked up as an owner's change would be: not found.  (What AWS
# answers for attributes of a deregistered AMI is not documented.)
IMAGE_TABLE = {
    'DescribeImages(ImageIds)': SEE,
    'DescribeImageAttribute(launchPermission)': OWNER_ONLY,
    'ModifyImageAttribute(Description)': OWNER_ONLY,
    # A disabled AMI can't be shared (DisableImage's documentation).
    'ModifyImageAttribute(LaunchPermission.Add)': owner_row(
        'ok ok ok ok IncSt ok hid hid'),
    'ModifyImageAttribute(LaunchPermission.Remove)': OWNER_ONLY,
    'ModifyImageAttribute(ImdsSupport)': OWNER_ONLY,
    'ModifyImageAttribute(Attribute=launchPermission, UserIds)': owner_row(
        'ok ok ok ok IncSt ok hid hid'),
    'ResetImageAttribute(launchPermission)': OWNER_ONLY,
    # Only an account with an explicit launch permission has one to cancel; the owner and a
    # member of the public get InvalidParameterValue (AWS documents no code for this; amid's).
    'CancelImageLaunchPermission': rows(
        owner=   'IPV IPV IPV IPV IPV IPV hid hid',
        grantee= 'hid ok  ok  ok  hid ok  hid hid',
        stranger='hid hid IPV hid hid hid hid hid'),
    'EnableImageDeprecation': OWNER_ONLY,
    'DisableImageDeprecation': OWNER_ONLY,
    'EnableImageDeregistrationProtection': OWNER_ONLY,
    'DisableImageDeregistrationProtection': OWNER_ONLY,
    'EnableImage': owner_row('IncSt IncSt IncSt IncSt ok IncSt hid hid'),
    'DisableImage': owner_row('ok ok ok ok IncSt ok hid hid'),
    'DeregisterImage': owner_row('ok ok ok ok ok NoPerm hid hid'),
    'CreateTags(image)': rows(
        owner=   'ok  ok  ok  ok  ok  ok  hid hid',
        grantee= 'hid ok  ok  ok  hid ok  hid hid',
        stranger='hid hid ok  hid hid hid hid hid'),
    'DeleteTags(image)': rows(
        owner=   'ok  ok  ok  ok  ok  ok  hid hid',
        grantee= 'hid ok  ok  ok  hid ok  hid hid',
        stranger='hid hid ok  hid hid hid hid hid'),
}
IMAGE_ATTRIBUTES = ['description', 'kernel', 'ramdisk', 'productCodes', 'blockDeviceMapping',
                    'sriovNetSupport', 'bootMode', 'tpmSupport', 'uefiData', 'lastLaunchedTime',
                    'imdsSupport', 'deregistrationProtection']
for _a in IMAGE_ATTRIBUTES:
    IMAGE_TABLE['DescribeImageAttribute(%s)' % _a] = SEE

# Operations that change the image get a fresh image per (operation, state, actor).
IMAGE_FRESH = {'ModifyImageAttribute(LaunchPermission.Add)',
               'ModifyImageAttribute(Attribute=launchPermission, UserIds)',
               'ResetImageAttribute(launchPermission)', 'CancelImageLaunchPermission',
               'EnableImageDeprecation', 'DisableImageDeprecation',
               'EnableImageDeregistrationProtection', 'DisableImageDeregistrationProtection',
               'EnableImage', 'DisableImage', 'DeregisterImage'}

# ---- snapshot operations: the table ----
#                              private backing shared public deleted
SNAP_SEE = rows(owner=        'ok      ok      ok     ok     hid',
                grantee=      'hid     hid     ok     ok     hid',
                stranger=     'hid     hid     hid    ok     hid')
SNAP_OWNER_ONLY = rows(owner=   'ok      ok      ok     ok     hid',
                       grantee= 'hid     hid     Unauth Unauth hid',
                       stranger='hid     hid     hid    Unauth hid')
SNAP_TABLE = {
    'DescribeSnapshots(SnapshotIds)': SNAP_SEE,
    # A snapshot the caller sees but does not own: UnauthorizedOperation, as amid answers a
    # grantee's DeleteSnapshot (tests/integration/test_volumes.py).
    'DescribeSnapshotAttribute(createVolumePermission)': SNAP_OWNER_ONLY,
    'DescribeSnapshotAttribute(productCodes)': SNAP_OWNER_ONLY,
    'ModifySnapshotAttribute(CreateVolumePermission.Add)': SNAP_OWNER_ONLY,
    'ModifySnapshotAttribute(Attribute, UserIds)': SNAP_OWNER_ONLY,
    'ResetSnapshotAttribute(createVolumePermission)': SNAP_OWNER_ONLY,
    'DeleteSnapshot': dict(SNAP_OWNER_ONLY, owner=rows(owner='ok InUse ok ok hid')['owner']),
    'CopySnapshot': SNAP_SEE,
    'CreateVolume(SnapshotId)': SNAP_SEE,
    'RegisterImage(BlockDeviceMapping.Ebs.SnapshotId)': SNAP_SEE,
    'CreateTags(snapshot)': rows(owner=   'ok  ok  ok  ok  hid',
                                 grantee= 'hid hid ok  ok  hid',
                                 stranger='hid hid hid ok  hid'),
    # EBS direct: "Public snapshots are not supported" (EBS direct APIs FAQ); a snapshot shared
    # with the account explicitly is.
    'ebs:ListSnapshotBlocks': rows(owner=   'ok  ok  ok  ok  hid',
                                   grantee= 'hid hid ok  ok  hid',
                                   stranger='hid hid hid hid hid'),
    'ebs:GetSnapshotBlock': rows(owner=   'ok  ok  ok  ok  hid',
                                 grantee= 'hid hid ok  ok  hid',
                                 stranger='hid hid hid hid hid'),
}
SNAP_FRESH = {'ModifySnapshotAttribute(CreateVolumePermission.Add)',
              'ModifySnapshotAttribute(Attribute, UserIds)',
              'ResetSnapshotAttribute(createVolumePermission)', 'DeleteSnapshot'}

# ---- listings: which states' images and snapshots each actor's listing shows ----
#                                private shared public deprec disabled protect dereg-new dereg-old
VISIBLE = rows(owner=           'in      in     in     in     -        in      -         -',
               grantee=         '-       in     in     -      -        in      -         -',
               stranger=        '-       -      in     -      -        -       -         -')
OWN_ONLY = rows(owner=          'in      in     in     in     -        in      -         -',
                grantee=        '-       -      -      -      -        -       -         -',
                stranger=       '-       -      -      -      -        -       -         -')
IMAGE_LISTINGS = {
    'DescribeImages()': VISIBLE,
    'DescribeImages(Owners=[A])': VISIBLE,
    'DescribeImages(Owners=[self])': OWN_ONLY,
    # amid counts the caller's own images as executable by "self" (AWS documents explicit
    # permissions only; not verified against AWS).  C has no explicit permission anywhere.
    'DescribeImages(ExecutableUsers=[self])': rows(
        owner=   'in in in in - in - -',
        grantee= '-  in in -  - in - -',
        stranger='-  -  -  -  - -  - -'),
    'DescribeImages(ExecutableUsers=[all])': rows(
        owner=   '- - in - - - - -',
        grantee= '- - in - - - - -',
        stranger='- - in - - - - -'),
    # Another account's id: only the caller's own images shared with it ("You can specify AWS
    # account IDs (if you own the snapshots)" says DescribeSnapshots; launch permissions are
    # the owner's to read) — C must not learn whom A shared a public image with.
    'DescribeImages(ExecutableUsers=[B])': rows(
        owner=   '- in in in - in - -',
        grantee= '- in in -  - in - -',
        stranger='- -  -  -  - -  - -'),
    'DescribeImages(IncludeDeprecated)': rows(
        owner=   'in in in in - in - -',
        grantee= '-  in in in - in - -',
        stranger='-  -  in -  - -  - -'),
    'DescribeImages(IncludeDisabled)': rows(
        owner=   'in in in in in in - -',
        grantee= '-  in in -  -  in - -',
        stranger='-  -  in -  -  -  - -'),
    # Tags are the owner's: a filter on them never matches for anyone else.
    'DescribeImages(Filters=[tag:matrix])': OWN_ONLY,
    # Deregistering deletes the image's tags.
    'DescribeTags(resource-type=image)': rows(
        owner=   'in in in in in in - -',
        grantee= '-  -  -  -  -  -  - -',
        stranger='-  -  -  -  -  -  - -'),
}
#                                 private backing shared public deleted
SNAP_VISIBLE = rows(owner=       'in      in      in     in     -',
                    grantee=     '-       -       in     in     -',
                    stranger=    '-       -       -      in     -')
SNAP_OWN = rows(owner=           'in      in      in     in     -',
                grantee=         '-       -       -      -      -',
                stranger=        '-       -       -      -      -')
SNAP_LISTINGS = {
    'DescribeSnapshots()': SNAP_VISIBLE,
    'DescribeSnapshots(OwnerIds=[A])': SNAP_VISIBLE,
    'DescribeSnapshots(OwnerIds=[self])': SNAP_OWN,
    # "self for snapshots for which you own or have explicit permissions"
    'DescribeSnapshots(RestorableByUserIds=[self])': rows(owner=   'in in in in -',
                                                          grantee= '-  -  in in -',
                                                          stranger='-  -  -  -  -'),
    'DescribeSnapshots(RestorableByUserIds=[all])': rows(owner=   '- - - in -',
                                                         grantee= '- - - in -',
                                                         stranger='- - - in -'),
    # "You can specify AWS account IDs (if you own the snapshots)"
    'DescribeSnapshots(RestorableByUserIds=[B])': rows(owner=   '- - in in -',
                                                       grantee= '- - in in -',
                                                       stranger='- - -  -  -'),
    'DescribeSnapshots(Filters=[tag:matrix])': SNAP_OWN,
    'DescribeTags(resource-type=snapshot)': SNAP_OWN,
}


def image_cases():
    for op, table in IMAGE_TABLE.items():
        for actor in ACTORS:
            for state in IMAGE_STATES:
                yield op, state, actor, table[actor][state]


def snap_cases():
    for op, table in SNAP_TABLE.items():
        for actor in ACTORS:
            for state in SNAP_STATES:
                yield op, state, actor, table[actor][state]


def params(cases):
    out = []
    for op, state, actor, want in cases:
        marks = []
        if want in XFAIL_REASONS:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAIL_REASONS[want]))
        out.append(pytest.param(op, state, actor, want, marks=marks,
                                id='%s-%s-%s' % (op, state, actor)))
    return out


IMAGE_CASES = params(image_cases())
SNAP_CASES = params(snap_cases())
N_IMAGE_LISTING = len(IMAGE_LISTINGS) * len(ACTORS) * len(IMAGE_STATES)
N_SNAP_LISTING = len(SNAP_LISTINGS) * len(ACTORS) * len(SNAP_STATES)

# ---- helpers ----


def ghost(prefix):
    return prefix + secrets.token_hex(9)[:17]


def outcome(fn):
    """(ok, response or error dict, HTTP status)."""
    try:
        r = fn()
        return True, r, r.get('ResponseMetadata', {}).get('HTTPStatusCode', 200)
    except botocore.exceptions.ClientError as e:
        err = dict(e.response['Error'])
        if 'Reason' in e.response:
            err['Reason'] = e.response['Reason']
        return False, err, e.response['ResponseMetadata']['HTTPStatusCode']


def substitute(v, old, new):
    if isinstance(v, str):
        return v.replace(old, new)
    if isinstance(v, dict):
        return {k: substitute(x, old, new) for k, x in v.items()}
    if isinstance(v, list):
        return [substitute(x, old, new) for x in v]
    return v


def assert_hidden(call, real, prefix):
    """The request on `real` gets exactly what it gets on an id that does not exist."""
    fake = ghost(prefix)
    ok_f, ref, st_f = outcome(lambda: call(fake))
    assert not ok_f, 'a nonexistent id succeeded: %r' % ref
    ok_r, got, st_r = outcome(lambda: call(real))
    assert not ok_r, 'exists-but-not-visible answered with success: %r' % got
    assert (st_r, substitute(got, real, fake)) == (st_f, ref), \
        'distinguishable from a nonexistent id:\n real %s %r\n fake %s %r' % (st_r, got, st_f,
                                                                              ref)
    assert real in got.get('Message', ''), got  # the message names the id asked for


def clock(amid, *args):
    run_amid('clock', *args, '--data', amid.datadir)
    time.sleep(1.2)  # the daemon re-reads the offset once a second


# ---- the world, built once ----


class World:
    pass


def _snapshot_with_data(ebs, ec2):
    s = ebs.start_snapshot(VolumeSize=1, Description='matrix base', Timeout=60)['SnapshotId']
    data = os.urandom(BLOCK)
    ebs.put_snapshot_block(SnapshotId=s, BlockIndex=3, BlockData=data, DataLength=BLOCK,
                           Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                           ChecksumAlgorithm='SHA256')
    ebs.complete_snapshot(SnapshotId=s, ChangedBlocksCount=1)
    deadline = time.time() + 60
    while ec2.describe_snapshots(SnapshotIds=[s])['Snapshots'][0]['State'] != 'completed':
        assert time.time() < deadline
        time.sleep(0.1)
    return s, data


@pytest.fixture(scope='module')
def world(amid, request):
    w = World()
    w.creds = {'owner': amid.new_account('matrix-a'), 'grantee': amid.new_account('matrix-b'),
               'stranger': amid.new_account('matrix-c')}
    w.ec2 = {k: amid.client('ec2', c) for k, c in w.creds.items()}
    w.ebs = {k: amid.client('ebs', c) for k, c in w.creds.items()}
    w.acct = {k: c.account_id for k, c in w.creds.items()}
    a = w.ec2['owner']
    b_id = w.acct['grantee']
    base, w.block = _snapshot_with_data(w.ebs['owner'], a)
    w.block_index = 3
    counter = [0]

    def register(state, snap=base):
        counter[0] += 1
        iid = a.register_image(
            Name='matrix-%s-%04d' % (state, counter[0]), Description=DESCRIPTION,
            RootDeviceName='/dev/xvda', EnaSupport=True,
            BlockDeviceMappings=[{'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': snap}}],
            TagSpecifications=[{'ResourceType': 'image',
                                'Tags': [{'Key': 'matrix', 'Value': state}]}])['ImageId']
        grantees = {'private': [], 'shared': [b_id], 'deprecated': [b_id],
                    'protected': [b_id]}.get(state, [b_id, 'all'])
        if grantees:
            a.modify_image_attribute(ImageId=iid, LaunchPermission={'Add': [
                {'Group': 'all'} if g == 'all' else {'UserId': g} for g in grantees]})
        if state == 'deprecated':
            a.enable_image_deprecation(
                ImageId=iid, DeprecateAt=datetime.datetime.utcnow() + datetime.timedelta(hours=2))
        elif state == 'disabled':
            a.disable_image(ImageId=iid)
        elif state == 'protected':
            a.enable_image_deregistration_protection(ImageId=iid)
        elif state == 'dereg-old':
            a.deregister_image(ImageId=iid)
        return iid

    w.image = {s: register(s) for s in IMAGE_STATES}
    w.fresh_image = {}
    for op, state, actor, _ in image_cases():
        if op in IMAGE_FRESH:
            w.fresh_image[op, state, actor] = register(state)

    # Snapshots: the base one backs every image above; the others are copies of it (each
    # fresh "backing" copy backs a public image shared with B).
    def make_snap(state):
        if state == 'backing' and 'backing' not in w.snap:
            sid = base
            a.create_tags(Resources=[sid], Tags=[{'Key': 'matrix', 'Value': state}])
        else:
            sid = a.copy_snapshot(SourceRegion='us-east-1', SourceSnapshotId=base,
                                  Description='matrix %s' % state,
                                  TagSpecifications=[{'ResourceType': 'snapshot', 'Tags': [
                                      {'Key': 'matrix', 'Value': state}]}])['SnapshotId']
            if state == 'backing':
                register('public', sid)
        # Tokens are taken while the snapshot exists (the deleted one's are then stale).
        blocks = w.ebs['owner'].list_snapshot_blocks(SnapshotId=sid)['Blocks']
        w.token[sid] = blocks[0]['BlockToken']
        if state in ('shared', 'public'):
            a.modify_snapshot_attribute(SnapshotId=sid, CreateVolumePermission={'Add': [
                {'UserId': b_id}] + ([{'Group': 'all'}] if state == 'public' else [])})
        if state == 'deleted':
            a.delete_snapshot(SnapshotId=sid)
        return sid

    w.snap, w.token = {}, {}
    for s in SNAP_STATES:
        w.snap[s] = make_snap(s)
    w.fresh_snap = {}
    for op, state, actor, _ in snap_cases():
        if op in SNAP_FRESH:
            w.fresh_snap[op, state, actor] = make_snap(state)

    clock(amid, 'advance', '3h')
    try:
        # Deregistered now, in the advanced clock's present: within its visible hour.
        for iid in [w.image['dereg-new']] + [v for k, v in w.fresh_image.items()
                                             if k[1] == 'dereg-new']:
            a.deregister_image(ImageId=iid)
        tr = request.config.pluginmanager.get_plugin('terminalreporter')
        if tr:
            tr.write_line(
                '\nauthorization matrix: images %d operations x %d states x %d actors = %d, '
                'snapshots %d x %d x %d = %d; listings %d + %d cells; %d images, %d snapshots '
                'made' % (len(IMAGE_TABLE), len(IMAGE_STATES), len(ACTORS), len(IMAGE_CASES),
                          len(SNAP_TABLE), len(SNAP_STATES), len(ACTORS), len(SNAP_CASES),
                          N_IMAGE_LISTING, N_SNAP_LISTING, counter[0],
                          len(w.snap) + len(w.fresh_snap)))
        yield w
    finally:
        clock(amid, 'reset')


# ---- the operations ----

FAR = datetime.datetime.utcnow() + datetime.timedelta(days=30)


def image_request(w, op, actor, iid):
    """Operation `op` on image `iid` as `actor`: (client method, parameters)."""
    c = w.ec2[actor]
    if op == 'DescribeImages(ImageIds)':
        return c.describe_images, dict(ImageIds=[iid])
    if op.startswith('DescribeImageAttribute('):
        return c.describe_image_attribute, dict(ImageId=iid,
                                                Attribute=op[len('DescribeImageAttribute('):-1])
    m = c.modify_image_attribute
    if op == 'ModifyImageAttribute(Description)':
        return m, dict(ImageId=iid, Description={'Value': DESCRIPTION})
    if op == 'ModifyImageAttribute(LaunchPermission.Add)':
        return m, dict(ImageId=iid, LaunchPermission={'Add': [{'UserId': DUMMY}]})
    if op == 'ModifyImageAttribute(LaunchPermission.Remove)':
        return m, dict(ImageId=iid, LaunchPermission={'Remove': [{'UserId': DUMMY}]})
    if op == 'ModifyImageAttribute(Attribute=launchPermission, UserIds)':
        return m, dict(ImageId=iid, Attribute='launchPermission', OperationType='add',
                       UserIds=[DUMMY])
    if op == 'ModifyImageAttribute(ImdsSupport)':
        return m, dict(ImageId=iid, ImdsSupport={'Value': 'v2.0'})
    if op == 'ResetImageAttribute(launchPermission)':
        return c.reset_image_attribute, dict(ImageId=iid, Attribute='launchPermission')
    if op == 'EnableImageDeprecation':
        return c.enable_image_deprecation, dict(ImageId=iid, DeprecateAt=FAR)
    if op == 'EnableImageDeregistrationProtection':
        return c.enable_image_deregistration_protection, dict(ImageId=iid, WithCooldown=False)
    if op == 'CreateTags(image)':
        return c.create_tags, dict(Resources=[iid],
                                   Tags=[{'Key': 'matrix-%s' % actor, 'Value': 'x'}])
    if op == 'DeleteTags(image)':
        return c.delete_tags, dict(Resources=[iid], Tags=[{'Key': 'matrix-none'}])
    simple = {'CancelImageLaunchPermission': c.cancel_image_launch_permission,
              'DisableImageDeprecation': c.disable_image_deprecation,
              'DisableImageDeregistrationProtection': c.disable_image_deregistration_protection,
              'EnableImage': c.enable_image, 'DisableImage': c.disable_image,
              'DeregisterImage': c.deregister_image}
    return simple[op], dict(ImageId=iid)


def image_call(w, op, actor, iid, **extra):
    fn, kw = image_request(w, op, actor, iid)
    return fn(**kw, **extra)


def image_checks(w, op, state, actor, iid, r):
    """What a success must show."""
    a = w.ec2['owner']
    if op == 'DescribeImages(ImageIds)':
        [im] = r['Images']
        assert im['ImageId'] == iid and im['OwnerId'] == w.acct['owner']
        assert im['State'] == {'disabled': 'disabled', 'dereg-new': 'deregistered'}.get(
            state, 'available')
        assert im['Public'] is (state == 'public')
        # Tags are per account: the owner's tag only for the owner, and never another
        # account's (a grantee or stranger may have tagged the image for itself).
        keys = {t['Key']: t['Value'] for t in im.get('Tags', [])}
        if actor == 'owner' and state != 'dereg-new':
            assert keys.get('matrix') == state, im
        else:
            assert 'matrix' not in keys, im
        assert not [k for k in keys if k.startswith('matrix-') and k != 'matrix-' + actor], im
    elif op == 'DescribeImageAttribute(launchPermission)':
        want = {'shared': [w.acct['grantee']], 'deprecated': [w.acct['grantee']],
                'protected': [w.acct['grantee']], 'public': [w.acct['grantee'], 'all']}
        got = sorted(p.get('UserId') or p.get('Group') for p in r['LaunchPermissions'])
        assert got == sorted(want.get(state, []))
    elif op.startswith('DescribeImageAttribute('):
        assert r['ImageId'] == iid
        if op == 'DescribeImageAttribute(description)':
            assert r['Description']['Value'] == DESCRIPTION
        if op == 'DescribeImageAttribute(blockDeviceMapping)':
            assert r['BlockDeviceMappings'][0]['Ebs']['SnapshotId'] == w.snap['backing']
    elif op == 'CancelImageLaunchPermission':
        # The grantee's own permission went: it sees the image only while it is public.
        assert r['Return'] is True
        lp = a.describe_image_attribute(ImageId=iid, Attribute='launchPermission')
        assert {'UserId': w.acct['grantee']} not in lp['LaunchPermissions']
    elif op == 'ResetImageAttribute(launchPermission)':
        lp = a.describe_image_attribute(ImageId=iid, Attribute='launchPermission')
        assert lp['LaunchPermissions'] == []
    elif op == 'DeregisterImage':
        assert a.describe_images(ImageIds=[iid])['Images'][0]['State'] == 'deregistered'
    elif op == 'DisableImage':
        got = a.describe_images(ImageIds=[iid])['Images'][0]
        assert got['State'] == 'disabled' and got['Public'] is False
    elif op == 'EnableImage':
        assert a.describe_images(ImageIds=[iid])['Images'][0]['State'] == 'available'
    elif op == 'CreateTags(image)':
        # The tag is the tagging account's own: it lists it, and, where that is another account
        # (AWS lets one tag a shared or public image), the owner never sees it.
        c = w.ec2[actor]
        mine = c.describe_tags(Filters=[{'Name': 'resource-id', 'Values': [iid]}])['Tags']
        assert {'Key': 'matrix-%s' % actor, 'Value': 'x', 'ResourceId': iid,
                'ResourceType': 'image'} in mine
        [im] = c.describe_images(ImageIds=[iid])['Images']
        assert {'Key': 'matrix-%s' % actor, 'Value': 'x'} in im['Tags']
        got = c.describe_images(ImageIds=[iid], Filters=[
            {'Name': 'tag:matrix-%s' % actor, 'Values': ['x']}])['Images']
        assert [i['ImageId'] for i in got] == [iid]
        if actor != 'owner':
            assert 'matrix' not in [t['Key'] for t in mine]  # the owner's tag is not shown
            tags = a.describe_tags(Filters=[{'Name': 'resource-id', 'Values': [iid]}])['Tags']
            assert 'matrix-%s' % actor not in [t['Key'] for t in tags]
            got = a.describe_images(ImageIds=[iid], Filters=[
                {'Name': 'tag:matrix-%s' % actor, 'Values': ['x']}])['Images']
            assert got == []
    elif op == 'DeleteTags(image)' and actor != 'owner':
        # Deleting a key the caller does not have deletes nothing of the owner's.
        [im] = a.describe_images(ImageIds=[iid])['Images']
        assert {'Key': 'matrix', 'Value': state} in im['Tags']


@pytest.mark.parametrize('op, state, actor, want', IMAGE_CASES)
def test_image_matrix(world, op, state, actor, want):
    w = world
    iid = w.fresh_image.get((op, state, actor)) or w.image[state]

    def call(i):
        return image_call(w, op, actor, i)

    if want == 'hid':
        assert_hidden(call, iid, 'ami-')
        return
    ok, r, status = outcome(lambda: call(iid))
    if want == 'ok':
        assert ok, 'expected success, got %s %r' % (status, r)
        image_checks(w, op, state, actor, iid, r)
    else:
        assert not ok, 'expected %s, got success %r' % (CODES[want], r)
        assert r['Code'] == CODES[want], (status, r)


def snap_request(w, op, actor, sid, token=None):
    """Operation `op` on snapshot `sid` as `actor`: (client method, parameters)."""
    c = w.ec2[actor]
    if op == 'DescribeSnapshots(SnapshotIds)':
        return c.describe_snapshots, dict(SnapshotIds=[sid])
    if op.startswith('DescribeSnapshotAttribute('):
        return c.describe_snapshot_attribute, dict(
            SnapshotId=sid, Attribute=op[len('DescribeSnapshotAttribute('):-1])
    if op == 'ModifySnapshotAttribute(CreateVolumePermission.Add)':
        return c.modify_snapshot_attribute, dict(SnapshotId=sid, CreateVolumePermission={
            'Add': [{'UserId': DUMMY}]})
    if op == 'ModifySnapshotAttribute(Attribute, UserIds)':
        return c.modify_snapshot_attribute, dict(SnapshotId=sid,
                                                 Attribute='createVolumePermission',
                                                 OperationType='add', UserIds=[DUMMY])
    if op == 'ResetSnapshotAttribute(createVolumePermission)':
        return c.reset_snapshot_attribute, dict(SnapshotId=sid,
                                                Attribute='createVolumePermission')
    if op == 'DeleteSnapshot':
        return c.delete_snapshot, dict(SnapshotId=sid)
    if op == 'CopySnapshot':
        return c.copy_snapshot, dict(SourceRegion='us-east-1', SourceSnapshotId=sid)
    if op == 'CreateVolume(SnapshotId)':
        return c.create_volume, dict(AvailabilityZone='us-east-1a', SnapshotId=sid)
    if op == 'RegisterImage(BlockDeviceMapping.Ebs.SnapshotId)':
        return c.register_image, dict(
            Name='matrix-from-%s' % secrets.token_hex(6), RootDeviceName='/dev/xvda',
            BlockDeviceMappings=[{'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': sid}}])
    if op == 'CreateTags(snapshot)':
        return c.create_tags, dict(Resources=[sid],
                                   Tags=[{'Key': 'matrix-%s' % actor, 'Value': 'x'}])
    if op == 'ebs:ListSnapshotBlocks':
        return w.ebs[actor].list_snapshot_blocks, dict(SnapshotId=sid)
    if op == 'ebs:GetSnapshotBlock':
        # The owner's token: a block token alone must open nothing for an account that may not
        # read the snapshot.
        return w.ebs[actor].get_snapshot_block, dict(SnapshotId=sid, BlockIndex=w.block_index,
                                                     BlockToken=token)
    raise AssertionError(op)


def snap_call(w, op, actor, sid, token=None, **extra):
    fn, kw = snap_request(w, op, actor, sid, token)
    return fn(**kw, **extra)


def snap_checks(w, op, state, actor, sid, r):
    c = w.ec2[actor]
    if op == 'DescribeSnapshots(SnapshotIds)':
        [s] = r['Snapshots']
        assert s['SnapshotId'] == sid and s['OwnerId'] == w.acct['owner']
        keys = {t['Key']: t['Value'] for t in s.get('Tags', [])}
        if actor == 'owner':
            assert keys.get('matrix') == state, s
        else:
            assert 'matrix' not in keys, s  # tags are per account
        assert not [k for k in keys if k.startswith('matrix-') and k != 'matrix-' + actor], s
    elif op == 'DescribeSnapshotAttribute(createVolumePermission)':
        got = sorted(p.get('UserId') or p.get('Group') for p in r['CreateVolumePermissions'])
        want = {'shared': [w.acct['grantee']], 'public': [w.acct['grantee'], 'all']}
        assert got == sorted(want.get(state, []))
    elif op == 'CreateTags(snapshot)':
        # The tagging account's own tag: on its listing, never on the owner's.
        [s] = c.describe_snapshots(SnapshotIds=[sid])['Snapshots']
        assert {'Key': 'matrix-%s' % actor, 'Value': 'x'} in s['Tags']
        if actor != 'owner':
            [s] = w.ec2['owner'].describe_snapshots(SnapshotIds=[sid])['Snapshots']
            assert 'matrix-%s' % actor not in [t['Key'] for t in s['Tags']]
            assert {'Key': 'matrix', 'Value': state} in s['Tags']
    elif op == 'CopySnapshot':
        new = c.describe_snapshots(SnapshotIds=[r['SnapshotId']])['Snapshots'][0]
        assert new['OwnerId'] == w.acct[actor]
        c.delete_snapshot(SnapshotId=r['SnapshotId'])
    elif op == 'CreateVolume(SnapshotId)':
        assert r['SnapshotId'] == sid
        c.delete_volume(VolumeId=r['VolumeId'])
    elif op.startswith('RegisterImage('):
        im = c.describe_images(ImageIds=[r['ImageId']])['Images'][0]
        assert im['OwnerId'] == w.acct[actor] and im['State'] == 'available'
        c.deregister_image(ImageId=r['ImageId'])
    elif op == 'ebs:ListSnapshotBlocks':
        assert [b['BlockIndex'] for b in r['Blocks']] == [w.block_index]
    elif op == 'ebs:GetSnapshotBlock':
        assert r['BlockData'].read() == w.block
    elif op == 'DeleteSnapshot':
        with pytest.raises(botocore.exceptions.ClientError):
            c.describe_snapshots(SnapshotIds=[sid])


@pytest.mark.parametrize('op, state, actor, want', SNAP_CASES)
def test_snapshot_matrix(world, op, state, actor, want):
    w = world
    sid = w.fresh_snap.get((op, state, actor)) or w.snap[state]

    def call(i):
        return snap_call(w, op, actor, i, w.token[sid])

    if want == 'hid':
        assert_hidden(call, sid, 'snap-')
        return
    ok, r, status = outcome(lambda: call(sid))
    if want == 'ok':
        assert ok, 'expected success, got %s %r' % (status, r)
        snap_checks(w, op, state, actor, sid, r)
    else:
        assert not ok, 'expected %s, got success %r' % (CODES[want], r)
        assert r['Code'] == CODES[want], (status, r)


# ---- listings ----


def image_listing(w, name, actor):
    c = w.ec2[actor]
    kw = {
        'DescribeImages()': {},
        'DescribeImages(Owners=[A])': {'Owners': [w.acct['owner']]},
        'DescribeImages(Owners=[self])': {'Owners': ['self']},
        'DescribeImages(ExecutableUsers=[self])': {'ExecutableUsers': ['self']},
        'DescribeImages(ExecutableUsers=[all])': {'ExecutableUsers': ['all']},
        'DescribeImages(ExecutableUsers=[B])': {'ExecutableUsers': [w.acct['grantee']]},
        'DescribeImages(IncludeDeprecated)': {'IncludeDeprecated': True},
        'DescribeImages(IncludeDisabled)': {'IncludeDisabled': True},
        'DescribeImages(Filters=[tag:matrix])': {'Filters': [{'Name': 'tag:matrix',
                                                              'Values': ['*']}]},
    }
    if name in kw:
        return {i['ImageId'] for i in c.describe_images(**kw[name])['Images']}
    if name == 'DescribeTags(resource-type=image)':
        tags = c.describe_tags(Filters=[{'Name': 'resource-type', 'Values': ['image']}])['Tags']
        return {t['ResourceId'] for t in tags if t['Key'] == 'matrix'}
    raise AssertionError(name)


def snap_listing(w, name, actor):
    c = w.ec2[actor]
    kw = {
        'DescribeSnapshots()': {},
        'DescribeSnapshots(OwnerIds=[A])': {'OwnerIds': [w.acct['owner']]},
        'DescribeSnapshots(OwnerIds=[self])': {'OwnerIds': ['self']},
        'DescribeSnapshots(RestorableByUserIds=[self])': {'RestorableByUserIds': ['self']},
        'DescribeSnapshots(RestorableByUserIds=[all])': {'RestorableByUserIds': ['all']},
        'DescribeSnapshots(RestorableByUserIds=[B])': {
            'RestorableByUserIds': [w.acct['grantee']]},
        'DescribeSnapshots(Filters=[tag:matrix])': {'Filters': [{'Name': 'tag:matrix',
                                                                 'Values': ['*']}]},
    }
    if name in kw:
        return {s['SnapshotId'] for s in c.describe_snapshots(**kw[name])['Snapshots']}
    if name == 'DescribeTags(resource-type=snapshot)':
        tags = c.describe_tags(Filters=[{'Name': 'resource-type',
                                         'Values': ['snapshot']}])['Tags']
        return {t['ResourceId'] for t in tags if t['Key'] == 'matrix'}
    raise AssertionError(name)


def listing_params(table):
    return [pytest.param(name, actor, id='%s-%s' % (name, actor))
            for name in table for actor in ACTORS]


@pytest.mark.parametrize('name, actor', listing_params(IMAGE_LISTINGS))
def test_image_listing(world, name, actor):
    got = image_listing(world, name, actor)
    wrong = ['%s: %s' % (state, 'missing' if want == 'in' else 'LISTED')
             for state, want in IMAGE_LISTINGS[name][actor].items()
             if (world.image[state] in got) != (want == 'in')]
    assert not wrong, wrong


@pytest.mark.parametrize('name, actor', listing_params(SNAP_LISTINGS))
def test_snapshot_listing(world, name, actor):
    got = snap_listing(world, name, actor)
    wrong = ['%s: %s' % (state, 'missing' if want == 'in' else 'LISTED')
             for state, want in SNAP_LISTINGS[name][actor].items()
             if (world.snap[state] in got) != (want == 'in')]
    assert not wrong, wrong


# ---- whole-listing properties ----


def a_ids(w):
    return set(w.image.values()) | set(w.fresh_image.values()) | set(w.snap.values()) | \
        set(w.fresh_snap.values())


@pytest.mark.parametrize('actor', ['grantee', 'stranger'])
def test_no_leaks_in_listings(world, actor):
    """Every A resource that B or C sees in any listing is one A shared with it or made public,
    as A itself reports right now; no A tag ever shows (only the tag the account may have put
    on A's shared and public resources itself: tags are per account)."""
    w = world
    a, c = w.ec2['owner'], w.ec2[actor]
    me = w.acct[actor]
    own = 'matrix-%s' % actor
    mine = a_ids(w)
    seen_images = {}
    for kw in ({}, {'IncludeDeprecated': True}, {'IncludeDisabled': True},
               {'Owners': [w.acct['owner']], 'IncludeDeprecated': True},
               {'ExecutableUsers': ['all', 'self', w.acct['owner'], w.acct['grantee'],
                                    w.acct['stranger']]}):
        for im in c.describe_images(**kw)['Images']:
            if im['OwnerId'] == w.acct['owner']:
                assert [t['Key'] for t in im.get('Tags', [])] in ([], [own]), im
                seen_images[im['ImageId']] = im
    for iid, im in seen_images.items():
        lp = a.describe_image_attribute(ImageId=iid, Attribute='launchPermission')
        grantees = {p.get('UserId') or p.get('Group') for p in lp['LaunchPermissions']}
        assert grantees & {me, 'all'}, (iid, grantees)
        assert im['State'] == 'available', im
    seen_snaps = set()
    for kw in ({}, {'OwnerIds': [w.acct['owner']]},
               {'RestorableByUserIds': ['all', 'self', w.acct['owner'], w.acct['grantee'],
                                        w.acct['stranger']]}):
        for s in c.describe_snapshots(**kw)['Snapshots']:
            if s['OwnerId'] == w.acct['owner']:
                assert [t['Key'] for t in s.get('Tags', [])] in ([], [own]), s
                seen_snaps.add(s['SnapshotId'])
    for sid in seen_snaps:
        p = a.describe_snapshot_attribute(SnapshotId=sid, Attribute='createVolumePermission')
        grantees = {x.get('UserId') or x.get('Group') for x in p['CreateVolumePermissions']}
        assert grantees & {me, 'all'}, (sid, grantees)
    # The backing snapshot of every image B was granted stays out of B's sight.
    assert w.snap['backing'] not in seen_snaps
    tags = c.describe_tags()['Tags']
    assert {t['Key'] for t in tags if t['ResourceId'] in mine} <= {own}, tags
    for f in ('resource-id', 'key'):
        vals = sorted(mine)[:200] if f == 'resource-id' else ['matrix']
        assert not [t for t in c.describe_tags(Filters=[{'Name': f, 'Values': vals}])['Tags']
                    if t['ResourceId'] in mine and t['Key'] != own]


def test_filters_reveal_nothing(world):
    """Filtering other accounts' images by what only their owner may know (tags, launch
    permissions) matches nothing; filtering by what is visible behaves as for the owner."""
    w = world
    for actor in ('grantee', 'stranger'):
        c = w.ec2[actor]
        for f in ({'Name': 'tag:matrix', 'Values': ['*']},
                  {'Name': 'tag-key', 'Values': ['matrix']},
                  {'Name': 'tag-value', 'Values': list(IMAGE_STATES)}):
            got = c.describe_images(Owners=[w.acct['owner']], Filters=[f])['Images']
            assert got == [], (actor, f, got)
        # Any tag key it finds on them is one it put there itself (tags are per account).
        got = c.describe_images(Owners=[w.acct['owner']], IncludeDeprecated=True,
                                Filters=[{'Name': 'tag-key', 'Values': ['*']}])['Images']
        assert all({t['Key'] for t in i['Tags']} == {'matrix-' + actor} for i in got), got
        # The public image is found by what anyone sees of it.
        got = c.describe_images(Filters=[{'Name': 'image-id', 'Values': [w.image['public']]},
                                         {'Name': 'is-public', 'Values': ['true']}])['Images']
        assert [i['ImageId'] for i in got] == [w.image['public']]
        for f in ({'Name': 'image-id', 'Values': [w.image['private']]},
                  {'Name': 'block-device-mapping.snapshot-id', 'Values': [w.snap['backing']]},
                  {'Name': 'owner-id', 'Values': [w.acct['owner']]}):
            ids = {i['ImageId'] for i in c.describe_images(Filters=[f])['Images']}
            assert w.image['private'] not in ids and w.image['disabled'] not in ids


def test_image_sharing_never_shares_snapshots(world):
    """B may launch (see) the shared, public, deprecated and protected images, all of them on the
    backing snapshot — and still may do nothing with the snapshot."""
    w = world
    b = w.ec2['grantee']
    for state in ('shared', 'public', 'deprecated', 'protected'):
        im = b.describe_images(ImageIds=[w.image[state]])['Images'][0]
        assert im['BlockDeviceMappings'][0]['Ebs']['SnapshotId'] == w.snap['backing']
    for op in SNAP_TABLE:
        assert SNAP_TABLE[op]['grantee']['backing'] == 'hid', op
    got = b.describe_snapshots(Filters=[{'Name': 'snapshot-id',
                                         'Values': [w.snap['backing']]}])['Snapshots']
    assert got == []


def test_multiple_ids_one_hidden(world):
    """A request naming a visible image and a hidden one fails on the hidden one exactly as it
    would on a nonexistent one."""
    w = world
    for actor, seen, hidden in (('grantee', 'shared', 'private'),
                                ('stranger', 'public', 'shared')):
        c = w.ec2[actor]
        assert_hidden(lambda i: c.describe_images(ImageIds=[w.image[seen], i]),
                      w.image[hidden], 'ami-')
        assert_hidden(lambda i: c.describe_snapshots(SnapshotIds=[w.snap['public'], i]),
                      w.snap['private'], 'snap-')


@pytest.mark.parametrize('op', [o for o in IMAGE_TABLE] + [o for o in SNAP_TABLE
                                                           if not o.startswith('ebs:')])
def test_dry_run_hides_too(world, op):
    """DryRun answers DryRunOperation only once the caller may act: on every cell the table
    hides, the DryRun request is as indistinguishable from a nonexistent id as the real one."""
    w = world
    images = op in IMAGE_TABLE
    table = IMAGE_TABLE[op] if images else SNAP_TABLE[op]
    n = 0
    for actor in ACTORS:
        for state, want in table[actor].items():
            if want != 'hid':
                continue
            if images:
                rid = w.fresh_image.get((op, state, actor)) or w.image[state]
                assert_hidden(lambda i: image_call(w, op, actor, i, DryRun=True), rid, 'ami-')
            else:
                rid = w.fresh_snap.get((op, state, actor)) or w.snap[state]
                assert_hidden(lambda i: snap_call(w, op, actor, i, DryRun=True), rid, 'snap-')
            n += 1
    assert n


def test_raw_error_bodies_identical(amid, world):
    """On the wire: the whole error document for a hidden id equals the one for a nonexistent id
    but for the id and the request id."""
    import re

    import rawreq
    w = world
    c = w.creds['stranger']
    V = {'Version': '2016-11-15'}
    img, snap = w.image, w.snap

    def q(action, **kw):
        return lambda i: dict(V, Action=action, **{k: (i if v is None else v)
                                                  for k, v in kw.items()})

    requests = [
        ('ami-', img['private'], q('DescribeImages', **{'ImageId.1': None})),
        ('ami-', img['shared'], q('DescribeImageAttribute', ImageId=None,
                                  Attribute='blockDeviceMapping')),
        ('ami-', img['disabled'], q('ModifyImageAttribute', ImageId=None,
                                    **{'Description.Value': 'x'})),
        ('ami-', img['dereg-new'], q('DeregisterImage', ImageId=None)),
        ('ami-', img['protected'], q('CreateTags', **{'ResourceId.1': None, 'Tag.1.Key': 'k'})),
        ('snap-', snap['backing'], q('DescribeSnapshots', **{'SnapshotId.1': None})),
        ('snap-', snap['shared'], q('CreateVolume', SnapshotId=None,
                                    AvailabilityZone='us-east-1a')),
        ('snap-', snap['private'], q('CopySnapshot', SourceSnapshotId=None,
                                     SourceRegion='us-east-1')),
    ]
    for prefix, real, params in requests:
        fake = ghost(prefix)
        a = rawreq.call(amid.endpoint, c, params(real))
        b = rawreq.call(amid.endpoint, c, params(fake))

        def norm(r, i):
            body = re.sub(r'<RequestID>[^<]*</RequestID>', '', r.text).replace(i, 'ID')
            hdrs = {k: v for k, v in r.headers.items() if k not in ('date', 'x-amzn-requestid')}
            return r.status, hdrs, body

        assert norm(a, real) == norm(b, fake), (a.text, b.text)
        assert a.status == 400 and real in a.text
