"""DescribeImages answers repeated requests from the response cache: what a client sees must be
exactly what it would see without it. Each answer has its own request id; every change shows at
once — made through the API, or by another process writing the data directory — and so does time
passing a deprecation time with nothing written; accounts never see each other's answers."""
import calendar
import datetime
import json
import math
import sqlite3
import subprocess
import time
import urllib.request

import botocore.exceptions
import pytest

from conftest import AMID, Daemon, run_amid
from test_images import register, snapshot


def names(ec2, **kw):
    return sorted(i['Name'] for i in ec2.describe_images(**kw)['Images'])


def test_repeated_answer_has_its_own_request_id(amid):
    ec2 = amid.client('ec2', amid.new_account('cache-ids'))
    s = snapshot(ec2)
    for i in range(3):
        register(ec2, 'cache-ids-%d' % i, s)
    kw = dict(Owners=['self'], Filters=[{'Name': 'name', 'Values': ['cache-ids-*']}])
    answers = [ec2.describe_images(**kw) for _ in range(4)]
    ids = [a['ResponseMetadata']['RequestId'] for a in answers]
    assert len(set(ids)) == 4
    for a, rid in zip(answers, ids):
        assert a['ResponseMetadata']['HTTPHeaders']['x-amzn-requestid'] == rid
        assert a['Images'] == answers[0]['Images']
    assert sorted(i['Name'] for i in answers[0]['Images']) == ['cache-ids-0', 'cache-ids-1',
                                                                'cache-ids-2']


def test_api_changes_show_at_once(amid):
    ec2 = amid.client('ec2', amid.new_account('cache-writes'))
    s = snapshot(ec2)
    a = register(ec2, 'cache-w-a', s)
    kw = dict(Owners=['self'], Filters=[{'Name': 'name', 'Values': ['cache-w-*']}])
    assert names(ec2, **kw) == ['cache-w-a']
    names(ec2, **kw)
    b = register(ec2, 'cache-w-b', s)
    assert names(ec2, **kw) == ['cache-w-a', 'cache-w-b']
    ec2.create_tags(Resources=[a], Tags=[{'Key': 'k', 'Value': 'v1'}])
    got = {i['ImageId']: i for i in ec2.describe_images(**kw)['Images']}
    assert got[a]['Tags'] == [{'Key': 'k', 'Value': 'v1'}]
    ec2.modify_image_attribute(ImageId=a, Description={'Value': 'second'})
    got = {i['ImageId']: i for i in ec2.describe_images(**kw)['Images']}
    assert got[a]['Description'] == 'second'
    ec2.deregister_image(ImageId=b)
    assert names(ec2, **kw) == ['cache-w-a']


def test_another_process_writing_shows_at_once(amid):
    """A write to the database by another process (as amid's CLI on the same data directory
    makes) is seen by the next answer, though the daemon itself changed nothing."""
    ec2 = amid.client('ec2', amid.new_account('cache-extern'))
    iid = register(ec2, 'cache-extern', snapshot(ec2), Description='before')
    kw = dict(Owners=['self'], Filters=[{'Name': 'name', 'Values': ['cache-extern']}])
    for _ in range(2):
        assert ec2.describe_images(**kw)['Images'][0]['Description'] == 'before'
    db = sqlite3.connect('%s/amid.db' % amid.datadir, timeout=30)
    with db:
        assert db.execute("UPDATE images SET description = 'after' WHERE id = ?",
                          (iid,)).rowcount == 1
    db.close()
    assert ec2.describe_images(**kw)['Images'][0]['Description'] == 'after'


def test_time_passing_a_deprecation_shows_with_nothing_written(amid):
    """A public image deprecated at a whole minute drops out of a stranger's listing when amid's
    clock passes that minute, though nothing was written since the listing was last answered."""
    owner = amid.client('ec2', amid.new_account('cache-deprecator'))
    other = amid.client('ec2', amid.new_account('cache-stranger'))
    iid = register(owner, 'cache-deprecated', snapshot(owner))
    owner.modify_image_attribute(ImageId=iid, LaunchPermission={'Add': [{'Group': 'all'}]})
    offset_ms = json.loads(run_amid('clock', 'show', '--data', amid.datadir, '--format',
                                    'json').stdout)['OffsetMs']
    # A whole minute an hour ahead of amid's time; then amid's clock set 4 s before it.
    at = math.ceil((time.time() + offset_ms / 1000 + 3600) / 60) * 60
    owner.enable_image_deprecation(ImageId=iid,
                                   DeprecateAt=datetime.datetime.utcfromtimestamp(at))
    shown = owner.describe_images(ImageIds=[iid])['Images'][0]['DeprecationTime']
    assert calendar.timegm(time.strptime(shown[:19], '%Y-%m-%dT%H:%M:%S')) == at
    run_amid('clock', 'set', '%ds' % (at - 4 - math.ceil(time.time())), '--data', amid.datadir)
    try:
        time.sleep(1.2)  # the daemon re-reads the offset once a second
        kw = dict(ExecutableUsers=['all'], Filters=[{'Name': 'name',
                                                     'Values': ['cache-deprecated']}])
        assert names(other, **kw) == ['cache-deprecated']
        assert names(other, **kw) == ['cache-deprecated']
        time.sleep(4)
        assert names(other, **kw) == []
        assert names(other, IncludeDeprecated=True, **kw) == ['cache-deprecated']
    finally:
        run_amid('clock', 'reset', '--data', amid.datadir)
        time.sleep(1.2)


def amid_now(amid):
    """amid's time (seconds): the real clock plus the administrator's offset."""
    out = json.loads(run_amid('clock', 'show', '--data', amid.datadir, '--format', 'json').stdout)
    return time.time() + out['OffsetMs'] / 1000


def set_amid_now(amid, t):
    """Moves amid's clock so that it reads about t (to the second) now; returns the real time at
    which amid's clock reads t."""
    offset = math.floor(t - time.time())
    run_amid('clock', 'set', '%ds' % offset, '--data', amid.datadir)
    time.sleep(1.2)  # the daemon re-reads the offset once a second
    return t - offset


def test_time_ending_a_protection_cooldown_shows(amid):
    """DeregistrationProtection reads disabled-until-T during the cooldown and disabled once
    amid's clock passes T, with nothing written in between."""
    ec2 = amid.client('ec2', amid.new_account('cache-protector'))
    iid = register(ec2, 'cache-protected', snapshot(ec2))
    ec2.enable_image_deregistration_protection(ImageId=iid, WithCooldown=True)
    ec2.disable_image_deregistration_protection(ImageId=iid)
    kw = dict(Owners=['self'], Filters=[{'Name': 'name', 'Values': ['cache-protected']}])
    text = ec2.describe_images(**kw)['Images'][0]['DeregistrationProtection']
    assert text.startswith('disabled-until-'), text
    until = calendar.timegm(time.strptime(text[len('disabled-until-'):][:19],
                                          '%Y-%m-%dT%H:%M:%S'))
    until += float('0' + text[len('disabled-until-') + 19:].rstrip('Z') or '0')
    real_at = set_amid_now(amid, until - 3)
    try:
        for _ in range(2):
            assert ec2.describe_images(**kw)['Images'][0]['DeregistrationProtection'] == text
        time.sleep(max(0, real_at + 3.5 - time.time()))
        assert ec2.describe_images(**kw)['Images'][0]['DeregistrationProtection'] == 'disabled'
    finally:
        run_amid('clock', 'reset', '--data', amid.datadir)
        time.sleep(1.2)


def test_time_ending_a_deregistered_images_grace_shows(amid):
    """A deregistered image answers by id, as deregistered, for an hour; when amid's clock passes
    that hour the same request gets InvalidAMIID.NotFound, with nothing written in between."""
    ec2 = amid.client('ec2', amid.new_account('cache-deregisterer'))
    iid = register(ec2, 'cache-deregistered', snapshot(ec2))
    before = amid_now(amid)
    ec2.deregister_image(ImageId=iid)
    after = amid_now(amid)
    real_at = set_amid_now(amid, before + 3600 - 3)
    try:
        for _ in range(2):
            assert ec2.describe_images(ImageIds=[iid])['Images'][0]['State'] == 'deregistered'
        time.sleep(max(0, real_at + 3 + (after - before) + 0.5 - time.time()))
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_images(ImageIds=[iid])
        assert e.value.response['Error']['Code'] == 'InvalidAMIID.NotFound'
    finally:
        run_amid('clock', 'reset', '--data', amid.datadir)
        time.sleep(1.2)


def test_accounts_get_their_own_answers(amid):
    """The same request from two accounts: each gets its own images only, however often asked."""
    kw = dict(Owners=['self'], Filters=[{'Name': 'name', 'Values': ['cache-mine-*']}])
    clients = []
    for who in ('a', 'b'):
        ec2 = amid.client('ec2', amid.new_account('cache-acct-' + who))
        register(ec2, 'cache-mine-' + who, snapshot(ec2))
        clients.append((who, ec2))
    for _ in range(3):
        for who, ec2 in clients:
            assert names(ec2, **kw) == ['cache-mine-' + who]


def test_without_the_cache(tmpdir_amid):
    """`--response-cache 0` serves without it, with the same answers; a bad size is a usage
    error."""
    datadir = '%s/data' % tmpdir_amid
    p = run_amid('init', '--data', datadir, '--format', 'json')
    from conftest import Creds
    admin = Creds(json.loads(p.stdout))
    bad = subprocess.run([AMID, 'serve', '--data', datadir, '--response-cache', 'lots'],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and 'usage' in bad.stderr
    d = Daemon(datadir, extra=['--response-cache', '0']).start()
    try:
        ec2 = d.client('ec2', admin)
        s = snapshot(ec2)
        register(ec2, 'nocache-1', s)
        kw = dict(Owners=['self'])
        assert names(ec2, **kw) == ['nocache-1']
        register(ec2, 'nocache-2', s)
        assert names(ec2, **kw) == ['nocache-1', 'nocache-2']
    finally:
        d.stop()
