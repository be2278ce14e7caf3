"""The foundation: set-up commands, STS and the EC2 regions/zones/account calls through boto3
and the AWS CLI, SigV4 and every kind of bad input with the code AWS gives."""
import datetime
import json
import os
import re
import socket
import sqlite3
import stat
import subprocess
import time
import urllib.parse

import botocore.exceptions
import pytest

from conftest import AMID, Creds, Daemon, free_port, run_amid
import rawreq

EXPORT_RE = re.compile(r'^export AWS_ENDPOINT_URL=http://127\.0\.0\.1:\d+ '
                       r'AWS_ACCESS_KEY_ID=(AKIA[A-Z2-7]{16}) '
                       r'AWS_SECRET_ACCESS_KEY=([A-Za-z0-9+/]{40}) '
                       r'AWS_DEFAULT_REGION=us-east-1$')


def code_of(excinfo):
    return excinfo.value.response['Error']['Code']


# ---- set-up commands ----

def test_init_prints_export_line_and_protects_master_key(tmpdir_amid):
    d = os.path.join(tmpdir_amid, 'data')
    p = run_amid('init', '--data', d)
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1 and EXPORT_RE.match(lines[0]), p.stdout
    assert stat.S_IMODE(os.stat(os.path.join(d, 'master.key')).st_mode) == 0o600
    assert os.path.getsize(os.path.join(d, 'master.key')) == 32
    secret = EXPORT_RE.match(lines[0]).group(2)
    # The secret is stored sealed, never in clear, anywhere in the data directory.
    for root, _, files in os.walk(d):
        for f in files:
            with open(os.path.join(root, f), 'rb') as fh:
                assert secret.encode() not in fh.read(), f
    # A second init of the same directory is refused and changes nothing.
    p2 = run_amid('init', '--data', d, check=False)
    assert p2.returncode != 0 and 'already' in p2.stderr
    conn = sqlite3.connect(os.path.join(d, 'amid.db'))
    assert conn.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    regions = [r[0] for r in conn.execute('SELECT name FROM regions ORDER BY name')]
    assert regions == ['us-east-1', 'us-west-2']
    zones = [r[0] for r in conn.execute('SELECT name FROM zones ORDER BY name')]
    assert zones == ['us-east-1a', 'us-east-1b', 'us-east-1c', 'us-west-2a', 'us-west-2b',
                     'us-west-2c']


def test_init_regions_and_json_format(tmpdir_amid):
    d = os.path.join(tmpdir_amid, 'data')
    p = run_amid('init', '--data', d, '--regions', 'eu-west-1,ap-southeast-2', '--format', 'json')
    doc = json.loads(p.stdout)
    assert re.fullmatch(r'[1-9]\d{11}', doc['AccountId'])
    assert re.fullmatch(r'AKIA[A-Z2-7]{16}', doc['AccessKeyId'])
    assert len(doc['SecretAccessKey']) == 40
    assert doc['Region'] == 'ap-southeast-2'  # no us-east-1 here: the first region
    bad = run_amid('init', '--data', os.path.join(tmpdir_amid, 'x'), '--regions', 'Mars',
                   check=False)
    assert bad.returncode != 0 and 'invalid region' in bad.stderr


def test_accounts_and_keys_commands(tmpdir_amid):
    d = os.path.join(tmpdir_amid, 'data')
    first = json.loads(run_amid('init', '--data', d, '--format', 'json').stdout)
    p = run_amid('account', 'create', 'team-b', '--data', d)
    m = EXPORT_RE.match(p.stdout.strip())
    assert m, p.stdout
    dup = run_amid('account', 'create', 'team-b', '--data', d, check=False)
    assert dup.returncode != 0 and 'already exists' in dup.stderr
    listed = json.loads(run_amid('account', 'list', '--data', d, '--format', 'json').stdout)
    names = [a['Name'] for a in listed['Accounts']]
    assert names == ['default', 'team-b']
    env = run_amid('account', 'list', '--data', d).stdout
    assert 'AMID_ACCOUNT_NAME=team-b' in env
    k = json.loads(run_amid('key', 'create', 'team-b', '--data', d, '--format', 'json').stdout)
    keys = json.loads(run_amid('key', 'list', 'team-b', '--data', d, '--format', 'json').stdout)
    ids = [x['AccessKeyId'] for x in keys['AccessKeys']]
    assert m.group(1) in ids and k['AccessKeyId'] in ids
    assert all('Secret' not in json.dumps(x) for x in keys['AccessKeys'])
    run_amid('key', 'delete', k['AccessKeyId'], '--data', d)
    keys = json.loads(run_amid('key', 'list', 'team-b', '--data', d, '--format', 'json').stdout)
    assert k['AccessKeyId'] not in [x['AccessKeyId'] for x in keys['AccessKeys']]
    gone = run_amid('key', 'delete', k['AccessKeyId'], '--data', d, check=False)
    assert gone.returncode != 0
    # --replace with a label keeps one key per label.
    a = json.loads(run_amid('key', 'create', first['AccountId'], '--label', 'run', '--replace',
                            '--data', d, '--format', 'json').stdout)
    b = json.loads(run_amid('key', 'create', 'default', '--label', 'run', '--replace',
                            '--data', d, '--format', 'json').stdout)
    keys = json.loads(run_amid('key', 'list', 'default', '--data', d, '--format', 'json').stdout)
    ids = [x['AccessKeyId'] for x in keys['AccessKeys']]
    assert b['AccessKeyId'] in ids and a['AccessKeyId'] not in ids
    assert first['AccessKeyId'] in ids


def test_new_key_works_and_deleted_key_is_refused(amid):
    p = run_amid('key', 'create', 'default', '--data', amid.datadir, '--format', 'json')
    c = Creds(dict(json.loads(p.stdout)))
    sts = amid.client('sts', c)
    assert sts.get_caller_identity()['Account'] == amid.admin.account_id
    run_amid('key', 'delete', c.key, '--data', amid.datadir)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sts.get_caller_identity()
    assert code_of(e) == 'InvalidClientTokenId'


def test_serve_refuses_world_readable_master_key(tmpdir_amid):
    d = os.path.join(tmpdir_amid, 'data')
    run_amid('init', '--data', d)
    os.chmod(os.path.join(d, 'master.key'), 0o644)
    p = subprocess.run([AMID, 'serve', '--data', d, '--listen', '127.0.0.1:%d' % free_port()],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert 'master.key' in p.stderr and '0600' in p.stderr


def test_serve_refuses_newer_schema(tmpdir_amid):
    d = os.path.join(tmpdir_amid, 'data')
    run_amid('init', '--data', d)
    conn = sqlite3.connect(os.path.join(d, 'amid.db'))
    conn.execute('PRAGMA user_version = 9999')
    conn.commit()
    conn.close()
    p = subprocess.run([AMID, 'serve', '--data', d, '--listen', '127.0.0.1:%d' % free_port()],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and 'newer' in p.stderr
    conn = sqlite3.connect(os.path.join(d, 'amid.db'))
    assert conn.execute('PRAGMA user_version').fetchone()[0] == 9999


def test_serve_refuses_port_in_use(tmpdir_amid):
    d = os.path.join(tmpdir_amid, 'data')
    run_amid('init', '--data', d)
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    s.listen(1)
    port = s.getsockname()[1]
    p = subprocess.run([AMID, 'serve', '--data', d, '--listen', '127.0.0.1:%d' % port],
                       capture_output=True, text=True, timeout=30)
    s.close()
    assert p.returncode != 0 and 'in use' in p.stderr


def test_serve_stops_cleanly_on_sigint(tmpdir_amid):
    import signal
    d = os.path.join(tmpdir_amid, 'data')
    creds = Creds(json.loads(run_amid('init', '--data', d, '--format', 'json').stdout))
    dm = Daemon(d).start()
    assert dm.client('sts', creds).get_caller_identity()['Account'] == creds.account_id
    assert dm.stop(signal.SIGINT) == 0
    assert 'event=stopped' in dm.read_log()


# ---- the calls a newcomer makes first ----

def test_sts_get_caller_identity_cli_and_boto3(amid):
    rc, out, _ = amid.aws('sts', 'get-caller-identity')
    assert out['Account'] == amid.admin.account_id
    assert out['Arn'] == 'arn:aws:iam::%s:root' % amid.admin.account_id
    other = amid.new_account('sts-other')
    assert amid.client('sts', other).get_caller_identity()['Account'] == other.account_id


def test_wrong_secret_is_refused(amid):
    bad = Creds({'AccountId': '', 'AccountName': '', 'AccessKeyId': amid.admin.key,
                 'SecretAccessKey': 'x' * 40})
    rc, _, err = amid.daemon.aws(bad, 'ec2', 'describe-regions', check=False)
    assert rc != 0 and 'AuthFailure' in err
    rc, _, err = amid.daemon.aws(bad, 'sts', 'get-caller-identity', check=False)
    assert rc != 0 and 'SignatureDoesNotMatch' in err
    unknown = Creds({'AccountId': '', 'AccountName': '', 'AccessKeyId': 'AKIAAAAAAAAAAAAAAAAA',
                     'SecretAccessKey': 'x' * 40})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        amid.client('ec2', unknown).describe_regions()
    assert code_of(e) == 'AuthFailure'
    assert e.value.response['ResponseMetadata']['HTTPStatusCode'] == 401


def test_describe_regions(amid, ec2):
    rc, out, _ = amid.aws('ec2', 'describe-regions')
    names = sorted(r['RegionName'] for r in out['Regions'])
    assert names == ['us-east-1', 'us-west-2']
    for r in out['Regions']:
        assert r['OptInStatus'] == 'opt-in-not-required'
        assert r['Endpoint'] == amid.endpoint.split('://')[1]
    assert [r['RegionName'] for r in
            ec2.describe_regions(RegionNames=['us-west-2'])['Regions']] == ['us-west-2']
    assert len(ec2.describe_regions(AllRegions=True)['Regions']) == 2
    got = ec2.describe_regions(Filters=[{'Name': 'region-name', 'Values': ['*west*']}])
    assert [r['RegionName'] for r in got['Regions']] == ['us-west-2']
    got = ec2.describe_regions(Filters=[{'Name': 'region-name', 'Values': ['us-?ast-1',
                                                                          'nowhere']}])
    assert [r['RegionName'] for r in got['Regions']] == ['us-east-1']
    got = ec2.describe_regions(Filters=[{'Name': 'region-name', 'Values': ['us-*']},
                                        {'Name': 'opt-in-status', 'Values': ['opted-in']}])
    assert got['Regions'] == []
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_regions(Filters=[{'Name': 'colour', 'Values': ['blue']}])
    assert code_of(e) == 'InvalidParameterValue'
    assert "The filter 'colour' is invalid" in str(e.value)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_regions(RegionNames=['mars-north-1'])
    assert code_of(e) == 'InvalidParameterValue'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_regions(DryRun=True)
    assert code_of(e) == 'DryRunOperation'
    assert e.value.response['ResponseMetadata']['HTTPStatusCode'] == 412


def test_describe_availability_zones_follow_the_signed_region(amid):
    east = amid.client('ec2', region='us-east-1')
    west = amid.client('ec2', region='us-west-2')
    ez = east.describe_availability_zones()['AvailabilityZones']
    assert [z['ZoneName'] for z in ez] == ['us-east-1a', 'us-east-1b', 'us-east-1c']
    assert [z['ZoneId'] for z in ez] == ['use1-az1', 'use1-az2', 'use1-az3']
    assert all(z['State'] == 'available' and z['RegionName'] == 'us-east-1' and
               z['ZoneType'] == 'availability-zone' for z in ez)
    wz = west.describe_availability_zones()['AvailabilityZones']
    assert [z['ZoneId'] for z in wz] == ['usw2-az1', 'usw2-az2', 'usw2-az3']
    got = east.describe_availability_zones(ZoneNames=['us-east-1b'])['AvailabilityZones']
    assert [z['ZoneName'] for z in got] == ['us-east-1b']
    got = east.describe_availability_zones(ZoneIds=['use1-az3'])['AvailabilityZones']
    assert [z['ZoneName'] for z in got] == ['us-east-1c']
    got = east.describe_availability_zones(
        Filters=[{'Name': 'zone-name', 'Values': ['*a', '*c']}])['AvailabilityZones']
    assert [z['ZoneName'] for z in got] == ['us-east-1a', 'us-east-1c']
    got = east.describe_availability_zones(
        Filters=[{'Name': 'state', 'Values': ['available']},
                 {'Name': 'zone-id', 'Values': ['use1-az2']}])['AvailabilityZones']
    assert [z['ZoneName'] for z in got] == ['us-east-1b']
    with pytest.raises(botocore.exceptions.ClientError) as e:
        east.describe_availability_zones(ZoneNames=['us-west-2a'])
    assert code_of(e) == 'InvalidParameterValue'
    rc, out, _ = amid.aws('ec2', 'describe-availability-zones', region='us-west-2')
    assert [z['ZoneName'] for z in out['AvailabilityZones']] == ['us-west-2a', 'us-west-2b',
                                                                 'us-west-2c']


def test_describe_account_attributes(ec2):
    attrs = {a['AttributeName']: [v['AttributeValue'] for v in a['AttributeValues']]
             for a in ec2.describe_account_attributes()['AccountAttributes']}
    assert attrs['supported-platforms'] == ['VPC']
    assert attrs['default-vpc'] == ['none']
    got = ec2.describe_account_attributes(AttributeNames=['default-vpc'])['AccountAttributes']
    assert [a['AttributeName'] for a in got] == ['default-vpc']
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_account_attributes(AttributeNames=['colour'])
    assert code_of(e) == 'InvalidParameterValue'


def test_tags_need_real_resources(amid):
    ec2 = amid.client('ec2', amid.new_account('tags-fresh'))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_tags(Resources=['nothing-here'], Tags=[{'Key': 'a', 'Value': 'b'}])
    assert code_of(e) == 'InvalidID'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_tags(Resources=['vol-0123456789abcdef0'], Tags=[{'Key': 'aws:x', 'Value': 'b'}])
    assert code_of(e) == 'InvalidParameterValue'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_tags(Resources=['vol-0123456789abcdef0'],
                        Tags=[{'Key': 'k' * 129, 'Value': 'b'}])
    assert code_of(e) == 'InvalidParameterValue'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_tags(Resources=['vol-0123456789abcdef0'],
                        Tags=[{'Key': 'k%d' % i, 'Value': 'v'} for i in range(51)])
    assert code_of(e) == 'TagLimitExceeded'
    assert ec2.describe_tags()['Tags'] == []
    pages = list(ec2.get_paginator('describe_tags').paginate(PaginationConfig={'PageSize': 5}))
    assert pages and pages[0]['Tags'] == []


def test_describe_tags_max_results_bounds_and_forged_token(amid):
    ec2 = amid.client('ec2', amid.new_account('tags-bounds'))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_tags(MaxResults=2)
    assert code_of(e) == 'InvalidParameterValue'
    assert ec2.describe_tags(MaxResults=100000)['Tags'] == []  # clamped, as EC2 does
    for forged in ['abc', 'AXZyZWFs', 'A' * 60, '%%%']:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_tags(NextToken=forged)
        assert code_of(e) == 'InvalidNextToken', forged


# ---- SigV4 and bad input, request by request ----

def params(action='DescribeRegions', **extra):
    p = {'Action': action, 'Version': '2016-11-15'}
    p.update(extra)
    return p


def test_signed_raw_request_works_and_has_request_id(amid):
    r = rawreq.call(amid.endpoint, amid.admin, params())
    assert r.status == 200, r.text
    rid = r.headers['x-amzn-requestid']
    assert re.fullmatch(r'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}', rid)
    assert '<requestId>%s</requestId>' % rid in r.text
    assert r.text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert 'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"' in r.text
    # GET works too, with the parameters in the query string.
    r = rawreq.call(amid.endpoint, amid.admin, params(), method='GET')
    assert r.status == 200, r.text


def test_tampered_body_is_refused(amid):
    url, headers, body = rawreq.sign(amid.endpoint, amid.admin, params=params())
    body = body.replace(b'DescribeRegions', b'DescribeAvailabilityZones')
    r = rawreq.send(url, 'POST', headers, body)
    assert r.status == 401 and r.code() == 'AuthFailure', r.text
    assert r.headers.get('x-amzn-requestid')


def test_tampered_signed_header_is_refused(amid):
    url, headers, body = rawreq.sign(amid.endpoint, amid.admin, params=params(),
                                     headers={'X-Amz-Meta': 'one'})
    headers['X-Amz-Meta'] = 'two'
    r = rawreq.send(url, 'POST', headers, body)
    assert r.code() == 'AuthFailure', r.text
    # An unsigned header may change freely.
    url, headers, body = rawreq.sign(amid.endpoint, amid.admin, params=params())
    headers['User-Agent'] = 'something else'
    assert rawreq.send(url, 'POST', headers, body).status == 200


def test_expired_and_future_requests(amid):
    now = datetime.datetime.utcnow()
    for delta in (datetime.timedelta(minutes=-16), datetime.timedelta(minutes=16),
                  datetime.timedelta(days=-2)):
        r = rawreq.call(amid.endpoint, amid.admin, params(), when=now + delta)
        assert r.status == 400 and r.code() == 'RequestExpired', (delta, r.text)
    r = rawreq.call(amid.endpoint, amid.admin, params(), when=now - datetime.timedelta(minutes=14))
    assert r.status == 200, r.text
    r = rawreq.call(amid.endpoint, amid.admin, params(), service='sts', when=now +
                    datetime.timedelta(hours=1), **{})
    assert r.code() in ('SignatureDoesNotMatch',), r.text


def test_host_must_be_signed(amid):
    url, headers, body = rawreq.sign(amid.endpoint, amid.admin, params=params())
    auth = headers['Authorization']
    sh = re.search(r'SignedHeaders=([^,]+)', auth).group(1)
    headers['Authorization'] = auth.replace(sh, ';'.join(h for h in sh.split(';') if h != 'host'))
    r = rawreq.send(url, 'POST', headers, body)
    assert r.code() == 'IncompleteSignature', r.text
    assert "'Host'" in r.text


def test_missing_and_malformed_authorization(amid):
    body = urllib.parse.urlencode(params()).encode()
    r = rawreq.send(amid.endpoint + '/', 'POST', {'Content-Type': rawreq.FORM}, body)
    assert r.code() == 'MissingAuthenticationToken' and r.status == 401, r.text
    for auth in ['AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/ec2/aws4_request',
                 'AWS4-HMAC-SHA256 garbage', 'Basic dXNlcjpwYXNz',
                 'AWS4-HMAC-SHA256 Credential=AKIA/x/us-east-1/ec2/aws4_request, '
                 'SignedHeaders=host, Signature=' + '0' * 64]:
        r = rawreq.send(amid.endpoint + '/', 'POST', {'Content-Type': rawreq.FORM,
                                                      'Authorization': auth,
                                                      'X-Amz-Date': '20260101T000000Z'}, body)
        assert r.code() == 'IncompleteSignature', (auth, r.text)
    r = rawreq.send(amid.endpoint + '/', 'POST', {'Content-Type': rawreq.FORM,
                                                  'Authorization': 'AWS4-HMAC-SHA256 Credential='
                                                  'AKIA/20260101/us-east-1/ec2/aws4_request, '
                                                  'SignedHeaders=host, Signature=' + 'a' * 64},
                    body)
    assert r.code() == 'IncompleteSignature' and 'X-Amz-Date' in r.text, r.text


def test_unknown_key_unknown_region_unknown_service(amid):
    ghost = Creds({'AccountId': '', 'AccountName': '', 'AccessKeyId': 'AKIAZZZZZZZZZZZZZZZZ',
                   'SecretAccessKey': 'y' * 40})
    r = rawreq.call(amid.endpoint, ghost, params())
    assert r.status == 401 and r.code() == 'AuthFailure', r.text
    r = rawreq.call(amid.endpoint, ghost, {'Action': 'GetCallerIdentity',
                                            'Version': '2011-06-15'}, service='sts')
    assert r.status == 403 and r.code() == 'InvalidClientTokenId', r.text
    r = rawreq.call(amid.endpoint, amid.admin, params(), region='eu-north-9')
    assert r.code() == 'AuthFailure' and 'region' in r.text, r.text
    r = rawreq.call(amid.endpoint, amid.admin, params(), service='s3')
    assert r.code() == 'AuthFailure' and 'service' in r.text, r.text
    # And in the JSON protocols' own words.
    url, headers, body = rawreq.sign(amid.endpoint, ghost, body=b'{}', service='kms',
                                     headers={'X-Amz-Target': 'TrentService.ListKeys',
                                              'Content-Type': 'application/x-amz-json-1.1'})
    r = rawreq.send(url, 'POST', headers, body)
    assert r.code() in ('InvalidSignatureException', 'UnrecognizedClientException'), r.text


def test_presigned_get(amid):
    url, headers, _ = rawreq.sign(amid.endpoint, amid.admin, method='GET', params=params(),
                                  presign=True, expires=60)
    assert 'X-Amz-Signature=' in url and 'Authorization' not in headers
    r = rawreq.send(url, 'GET', headers)
    assert r.status == 200 and '<regionInfo>' in r.text, r.text
    # Tampering with any parameter breaks it.
    r = rawreq.send(url.replace('DescribeRegions', 'DescribeAvailabilityZones'), 'GET', headers)
    assert r.code() == 'AuthFailure', r.text
    old = datetime.datetime.utcnow() - datetime.timedelta(seconds=120)
    url, headers, _ = rawreq.sign(amid.endpoint, amid.admin, method='GET', params=params(),
                                  presign=True, expires=60, when=old)
    r = rawreq.send(url, 'GET', headers)
    assert r.code() == 'RequestExpired', r.text


def test_oversized_body_gets_413_without_reading_it(amid):
    s = socket.create_connection(('127.0.0.1', amid.daemon.port))
    s.sendall(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded'
              b'\r\nContent-Length: 1073741824\r\n\r\n')
    s.settimeout(10)
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b'HTTP/1.1 413'), data[:200]
    # A body just over the cap, actually sent, gets the same.
    big = urllib.parse.urlencode(params(Junk='x' * (1 << 20))).encode()
    url, headers, body = rawreq.sign(amid.endpoint, amid.admin, body=big,
                                     headers={'Content-Type': rawreq.FORM})
    try:
        r = rawreq.send(url, 'POST', headers, body)
        assert r.status == 413
    except (ConnectionResetError, BrokenPipeError):
        pass
    assert rawreq.call(amid.endpoint, amid.admin, params()).status == 200


def test_oversized_headers_are_refused(amid):
    url, headers, body = rawreq.sign(amid.endpoint, amid.admin, params=params())
    headers['X-Filler'] = 'a' * (64 << 10)
    try:
        r = rawreq.send(url, 'POST', headers, body)
        assert r.status in (413, 431), r.status
    except (ConnectionResetError, BrokenPipeError, http_client_errors()):
        pass
    assert rawreq.call(amid.endpoint, amid.admin, params()).status == 200


def http_client_errors():
    import http.client
    return http.client.RemoteDisconnected


def test_malformed_and_unknown_parameters(amid):
    r = rawreq.call(amid.endpoint, amid.admin, params(Colour='blue'))
    assert r.code() == 'UnknownParameter' and 'Colour' in r.text, r.text
    r = rawreq.call(amid.endpoint, amid.admin, params(**{'Filter.1.Nmae': 'x'}))
    assert r.code() == 'UnknownParameter', r.text
    r = rawreq.call(amid.endpoint, amid.admin, params(**{'Filter.x.Name': 'x'}))
    assert r.code() == 'UnknownParameter', r.text
    r = rawreq.call(amid.endpoint, amid.admin, params(AllRegions='perhaps'))
    assert r.code() == 'InvalidParameterValue', r.text
    r = rawreq.call(amid.endpoint, amid.admin, params('DescribeTags', MaxResults='ten'))
    assert r.code() == 'InvalidParameterValue', r.text
    r = rawreq.call(amid.endpoint, amid.admin, params('DescribeTags', MaxResults='99999999999'))
    assert r.code() == 'InvalidParameterValue', r.text
    r = rawreq.call(amid.endpoint, amid.admin, params('DescribeAccountAttributes',
                                                      **{'AttributeName.1': 'bogus'}))
    assert r.code() == 'InvalidParameterValue', r.text
    # A malformed percent escape in a signed body.
    url, headers, _ = rawreq.sign(amid.endpoint, amid.admin, body=b'Action=Describe%ZZRegions',
                                  headers={'Content-Type': rawreq.FORM})
    r = rawreq.send(url, 'POST', headers, b'Action=Describe%ZZRegions')
    assert r.status == 400 and r.code() == 'MalformedQueryString', r.text


def test_missing_and_wrong_action_and_version(amid):
    r = rawreq.call(amid.endpoint, amid.admin, params('LaunchRockets'))
    assert r.code() == 'InvalidAction', r.text
    r = rawreq.call(amid.endpoint, amid.admin, {'Version': '2016-11-15'})
    assert r.code() == 'MissingAction', r.text
    r = rawreq.call(amid.endpoint, amid.admin, {'Action': 'DescribeRegions'})
    assert r.code() == 'MissingParameter', r.text
    r = rawreq.call(amid.endpoint, amid.admin, {'Action': 'DescribeRegions',
                                                 'Version': '2099-01-01'})
    assert r.code() == 'NoSuchVersion', r.text


def test_invalid_utf8_is_refused(amid):
    body = b'Action=DescribeRegions&Version=2016-11-15&RegionName.1=%FF%FE'
    url, headers, _ = rawreq.sign(amid.endpoint, amid.admin, body=body,
                                  headers={'Content-Type': rawreq.FORM})
    r = rawreq.send(url, 'POST', headers, body)
    assert r.status == 400 and r.code() == 'InvalidParameterValue', r.text
    body = b'Action=DescribeRegions&Version=2016-11-15&%C0%AF=1'
    url, headers, _ = rawreq.sign(amid.endpoint, amid.admin, body=body,
                                  headers={'Content-Type': rawreq.FORM})
    r = rawreq.send(url, 'POST', headers, body)
    assert r.code() == 'UnknownParameter', r.text
    body = b'Action=DescribeRegions&Version=2016-11-15&RegionName.1=us-east-1%00x'
    url, headers, _ = rawreq.sign(amid.endpoint, amid.admin, body=body,
                                  headers={'Content-Type': rawreq.FORM})
    r = rawreq.send(url, 'POST', headers, body)
    assert r.code() == 'InvalidParameterValue', r.text


def test_ten_thousand_parameters(amid):
    many = params(**{'RegionName.%d' % i: 'us-east-1' for i in range(1, 10001)})
    r = rawreq.call(amid.endpoint, amid.admin, many)
    assert r.status == 200, r.text[:300]
    assert r.text.count('<regionName>us-east-1</regionName>') == 1
    many = params(**{'Filter.1.Name': 'region-name'},
                  **{'Filter.1.Value.%d' % i: 'v%d' % i for i in range(1, 10000)})
    r = rawreq.call(amid.endpoint, amid.admin, many)
    assert r.code() == 'FilterLimitExceeded', r.text[:300]
    junk = params(**{'Junk%d' % i: 'x' for i in range(10000)})
    r = rawreq.call(amid.endpoint, amid.admin, junk)
    assert r.code() == 'UnknownParameter'
    assert rawreq.call(amid.endpoint, amid.admin, params()).status == 200


def test_access_log_has_one_line_per_request_and_no_secrets(amid):
    url, headers, body = rawreq.sign(amid.endpoint, amid.admin, params=params())
    sig = re.search(r'Signature=([0-9a-f]{64})', headers['Authorization']).group(1)
    r = rawreq.send(url, 'POST', headers, body)
    rid = r.headers['x-amzn-requestid']
    purl, _, _ = rawreq.sign(amid.endpoint, amid.admin, method='GET', params=params(),
                             presign=True)
    psig = urllib.parse.parse_qs(urllib.parse.urlsplit(purl).query)['X-Amz-Signature'][0]
    assert rawreq.send(purl, 'GET').status == 200
    log = amid.daemon.read_log()
    lines = [l for l in log.splitlines() if 'rid=%s' % rid in l]
    assert len(lines) == 1
    line = lines[0]
    assert 'action=DescribeRegions' in line and 'status=200' in line
    assert 'account=%s' % amid.admin.account_id in line
    assert amid.admin.secret not in log
    assert sig not in log and psig not in log
    assert 'X-Amz-Signature' not in log and 'X-Amz-Credential' not in log


def test_schema_7_upgrades(tmpdir_amid):
    """A data directory from schema 7 (one tag set per resource, mappings in a rowid table)
    keeps its tags and images' mappings on upgrade, and afterwards two accounts hold the same
    tag key on one resource, each its own."""
    d = os.path.join(tmpdir_amid, 'data')
    a = Creds(json.loads(run_amid('init', '--data', d, '--format', 'json').stdout))
    b = Creds(json.loads(run_amid('account', 'create', 'b', '--data', d, '--format',
                                  'json').stdout))
    daemon = Daemon(d).start()
    ea = daemon.client('ec2', a)
    vol = ea.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    ea.create_tags(Resources=[vol], Tags=[{'Key': 'team', 'Value': 'blue'}])
    snap0 = ea.create_snapshot(VolumeId=vol)['SnapshotId']
    for _ in range(200):
        if ea.describe_snapshots(SnapshotIds=[snap0])['Snapshots'][0]['State'] == 'completed':
            break
        time.sleep(0.05)
    ami = ea.register_image(
        Name='upgrade-me', RootDeviceName='/dev/xvda',
        BlockDeviceMappings=[{'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': snap0}},
                             {'DeviceName': '/dev/sdb', 'VirtualName': 'ephemeral0'}])['ImageId']
    mappings = ea.describe_images(ImageIds=[ami])['Images'][0]['BlockDeviceMappings']
    daemon.stop()
    # Back to schema 7's table, as amid 7 left it.
    conn = sqlite3.connect(os.path.join(d, 'amid.db'))
    rows = conn.execute('SELECT * FROM tags').fetchall()
    conn.executescript(
        'DROP TABLE tags;'
        'CREATE TABLE tags (region TEXT NOT NULL, resource_id TEXT NOT NULL,'
        '  resource_type TEXT NOT NULL, owner TEXT NOT NULL, key TEXT NOT NULL,'
        '  value TEXT NOT NULL, PRIMARY KEY (region, resource_id, key)) STRICT;'
        'CREATE INDEX tags_owner ON tags(region, owner, resource_id);'
        'CREATE TABLE bdms7 AS SELECT * FROM image_bdms;'
        'DROP TABLE image_bdms;'
        'CREATE TABLE image_bdms (image_id TEXT NOT NULL REFERENCES images(id) ON DELETE '
        '  CASCADE, idx INTEGER NOT NULL, device_name TEXT NOT NULL, kind TEXT NOT NULL,'
        "  virtual_name TEXT NOT NULL DEFAULT '', snapshot_id TEXT NOT NULL DEFAULT '',"
        "  volume_size INTEGER NOT NULL DEFAULT 0, volume_type TEXT NOT NULL DEFAULT '',"
        '  iops INTEGER NOT NULL DEFAULT 0, throughput INTEGER NOT NULL DEFAULT 0,'
        '  delete_on_termination INTEGER NOT NULL DEFAULT 1, encrypted INTEGER NOT NULL '
        "  DEFAULT 0, kms_key_id TEXT NOT NULL DEFAULT '', PRIMARY KEY (image_id, idx)) STRICT;"
        'INSERT INTO image_bdms SELECT * FROM bdms7;'
        'DROP TABLE bdms7;'
        'CREATE INDEX image_bdms_snapshot ON image_bdms(snapshot_id);'
        'PRAGMA user_version = 7;')
    conn.executemany('INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?)', rows)
    conn.commit()
    conn.close()
    daemon = Daemon(d).start()
    try:
        ea = daemon.client('ec2', a)
        [v] = ea.describe_volumes(VolumeIds=[vol])['Volumes']
        assert v['Tags'] == [{'Key': 'team', 'Value': 'blue'}]
        assert ea.describe_images(ImageIds=[ami])['Images'][0]['BlockDeviceMappings'] == \
            mappings
        assert [i['ImageId'] for i in ea.describe_images(Filters=[
            {'Name': 'block-device-mapping.snapshot-id', 'Values': [snap0]}])['Images']] == [ami]
        snap = ea.create_snapshot(VolumeId=vol)['SnapshotId']
        ea.modify_snapshot_attribute(SnapshotId=snap, Attribute='createVolumePermission',
                                     OperationType='add', UserIds=[b.account_id])
        ea.create_tags(Resources=[snap], Tags=[{'Key': 'team', 'Value': 'blue'}])
        eb = daemon.client('ec2', b)
        eb.create_tags(Resources=[snap], Tags=[{'Key': 'team', 'Value': 'red'}])
        assert ea.describe_snapshots(SnapshotIds=[snap])['Snapshots'][0]['Tags'] == \
            [{'Key': 'team', 'Value': 'blue'}]
        assert eb.describe_snapshots(SnapshotIds=[snap])['Snapshots'][0]['Tags'] == \
            [{'Key': 'team', 'Value': 'red'}]
        # DeleteTags without tags removes the caller's, never the owner's.
        eb.delete_tags(Resources=[snap])
        assert 'Tags' not in eb.describe_snapshots(SnapshotIds=[snap])['Snapshots'][0]
        assert ea.describe_snapshots(SnapshotIds=[snap])['Snapshots'][0]['Tags'] == \
            [{'Key': 'team', 'Value': 'blue'}]
    finally:
        daemon.stop()
    conn = sqlite3.connect(os.path.join(d, 'amid.db'))
    assert conn.execute('PRAGMA user_version').fetchone()[0] >= 8



def test_daemon_raises_its_descriptor_limit(tmpdir_amid):
    """Open volumes hold a few descriptors per layer and every client a socket: started with a
    soft limit of 256 open files, the daemon lifts it to the hard one (at most 65536)."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY or hard > 65536 else hard
    assert want > 256
    datadir = os.path.join(tmpdir_amid, 'data')
    run_amid('init', '--data', datadir, '--format', 'json')
    port = free_port()
    p = subprocess.Popen([AMID, 'serve', '--data', datadir, '--listen', '127.0.0.1:%d' % port,
                          '--quiet'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                               (256, hard)))
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        with open('/proc/%d/limits' % p.pid) as f:
            line = [ln for ln in f if ln.startswith('Max open files')][0]
        assert int(line.split()[3]) == want, line
    finally:
        p.terminate()
        assert p.wait(timeout=30) == 0
