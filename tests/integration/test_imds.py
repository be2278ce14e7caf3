"""The instance metadata service: `amid imds --data DIR --instance ID`, the process QEMU runs for
every guest connection to 169.254.169.254:80, driven here exactly as QEMU drives it — hand-made
HTTP on its stdin, answers read from its stdout (or one socket for all three, as libslirp gives
it).  Instances come from RunInstances with the catalogue image; one test boots a guest that
reads its metadata through QEMU.
"""
import json
import os
import socket
import subprocess
import time

import pytest

from conftest import AMID, run_amid

REGION = 'us-east-1'
TOKEN_HDR = 'X-aws-ec2-metadata-token'
TTL_HDR = 'X-aws-ec2-metadata-token-ttl-seconds'
UNKNOWN = 'i-0fedcba9876543210'


# ---- HTTP by hand ----

def request(method, path, headers=(), body=b'', version='HTTP/1.1'):
    """One request's bytes; `headers` is a list of (name, value)."""
    lines = ['%s %s %s' % (method, path, version), 'Host: 169.254.169.254']
    lines += ['%s: %s' % h for h in headers]
    if body:
        lines.append('Content-Length: %d' % len(body))
    return ('\r\n'.join(lines) + '\r\n\r\n').encode() + body


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self):
        return self.body.decode()

    def header(self, name):
        return self.headers.get(name.lower())


def parse_one(data, head_only=False):
    """Parses one response off the front of `data`; returns (Resp, rest) or (None, data)."""
    end = data.find(b'\r\n\r\n')
    if end < 0:
        return None, data
    lines = data[:end].decode('latin-1').split('\r\n')
    proto, status, _ = lines[0].split(' ', 2)
    assert proto == 'HTTP/1.1', lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(':')
        headers[k.strip().lower()] = v.strip()
    n = 0 if head_only else int(headers['content-length'])
    if len(data) < end + 4 + n:
        return None, data
    return Resp(int(status), headers, data[end + 4:end + 4 + n]), data[end + 4 + n:]


def parse_all(data, heads=()):
    """Every response in `data` (the whole of an imds process's output); indexes in `heads`
    answered HEAD requests.  Fails on trailing bytes that are not a whole response."""
    out = []
    while data:
        r, data = parse_one(data, len(out) in heads)
        assert r is not None, 'trailing bytes: %r' % data[:200]
        out.append(r)
    return out


def run_imds(amid, iid, raw, heads=(), datadir=None):
    """Runs one `amid imds` with `raw` on stdin (then end of file); returns its responses."""
    p = subprocess.run([AMID, 'imds', '--data', datadir or amid.datadir, '--instance', iid],
                       input=raw, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return parse_all(p.stdout, heads)


def get(amid, iid, path, headers=()):
    [r] = run_imds(amid, iid, request('GET', path, headers))
    return r


def put_token(amid, iid, ttl='21600', headers=()):
    hs = list(headers) + ([(TTL_HDR, ttl)] if ttl is not None else [])
    [r] = run_imds(amid, iid, request('PUT', '/latest/api/token', hs))
    return r


def assert_error(r, status, title):
    assert r.status == status, (r.status, r.body)
    assert r.header('content-type') == 'text/html'
    assert ('<title>%d - %s</title>' % (status, title)) in r.text
    assert ('<h1>%d - %s</h1>' % (status, title)) in r.text


# ---- instances ----

class Launcher:
    """Launches instances of the catalogue image with RunInstances and terminates them at the
    end.  Their guests boot in the background; the metadata service only needs their rows."""

    def __init__(self, amid, ec2):
        self.ec2 = ec2
        self.launched = []
        images = json.loads(run_amid('catalog', 'import', '--data', amid.datadir,
                                     '--format', 'json').stdout)['Images']
        self.image = [i['ImageId'] for i in images if i['Region'] == REGION][0]

    def launch(self, user_data=None, key_name=None, http_tokens='optional',
               http_endpoint='enabled', metadata_tags='disabled', tags=None):
        kw = dict(ImageId=self.image, InstanceType='t2.micro', MinCount=1, MaxCount=1,
                  MetadataOptions={'HttpTokens': http_tokens, 'HttpEndpoint': http_endpoint,
                                   'InstanceMetadataTags': metadata_tags})
        if user_data is not None:
            kw['UserData'] = user_data  # botocore base64-encodes it
        if key_name:
            kw['KeyName'] = key_name
        if tags:
            kw['TagSpecifications'] = [{'ResourceType': 'instance', 'Tags': [
                {'Key': k, 'Value': v} for k, v in tags.items()]}]
        iid = self.ec2.run_instances(**kw)['Instances'][0]['InstanceId']
        self.launched.append(iid)
        return iid

    def describe(self, iid):
        """The instance as DescribeInstances gives it, with its reservation's id."""
        res = self.ec2.describe_instances(InstanceIds=[iid])['Reservations'][0]
        return dict(res['Instances'][0], ReservationId=res['ReservationId'])

    def set_tokens(self, iid, http_tokens):
        self.ec2.modify_instance_metadata_options(InstanceId=iid, HttpTokens=http_tokens)

    def cleanup(self):
        if self.launched:
            self.ec2.terminate_instances(InstanceIds=self.launched)


USER_DATA = b'#!/bin/sh\necho hello from user data\n\x00\x01\xfe\xff binary tail'


@pytest.fixture(scope='module')
def owner(amid):
    """The account that owns this module's instances (their metadata names it)."""
    return amid.new_account('imds-owner')


@pytest.fixture(scope='module')
def ec2(amid, owner):
    """EC2 as the owner: overrides conftest's client for the first account in this module."""
    return amid.client('ec2', owner)


@pytest.fixture(scope='module')
def launcher(amid, ec2):
    lt = Launcher(amid, ec2)
    yield lt
    lt.cleanup()


@pytest.fixture(scope='module')
def pubkey(ec2, tmp_path_factory):
    d = tmp_path_factory.mktemp('imds-key')
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'imds-test', '-f',
                    str(d / 'k')], check=True)
    pub = (d / 'k.pub').read_bytes()
    ec2.import_key_pair(KeyName='imds-key', PublicKeyMaterial=pub)
    yield pub.decode().split()
    ec2.delete_key_pair(KeyName='imds-key')


@pytest.fixture(scope='module')
def inst(launcher, pubkey):
    """The full instance: user data, a key pair, tags exposed in the metadata."""
    return launcher.launch(user_data=USER_DATA, key_name='imds-key', metadata_tags='enabled',
                           tags={'Name': 'imds-web', 'team': 'storage', 'empty': ''})


@pytest.fixture(scope='module')
def bare(launcher):
    """An instance without user data, key or metadata tags (but with a tag)."""
    return launcher.launch(tags={'Name': 'hidden'})


@pytest.fixture(scope='module')
def strict(launcher):
    return launcher.launch(http_tokens='required')


@pytest.fixture(scope='module')
def closed(launcher):
    return launcher.launch(http_endpoint='disabled')


# ---- listings and values ----

def test_versions_and_top_listings(amid, inst, bare):
    r = get(amid, inst, '/')
    assert r.status == 200 and r.header('content-type') == 'text/plain'
    assert r.header('server') == 'EC2ws' and r.header('date').endswith(' GMT')
    assert r.header('connection') == 'keep-alive'
    versions = r.text.split('\n')
    assert versions[0] == '1.0' and versions[-1] == 'latest'
    assert {'2007-01-19', '2016-09-02', '2021-07-15'} <= set(versions)
    assert versions[:-1] == sorted(versions[:-1])
    assert get(amid, inst, '/latest/').text == 'dynamic\nmeta-data\nuser-data'
    assert get(amid, inst, '/latest').text == 'dynamic\nmeta-data\nuser-data'
    assert get(amid, bare, '/latest/').text == 'dynamic\nmeta-data'
    for v in ('1.0', '2009-04-04', '2021-07-15', 'latest'):
        assert get(amid, inst, '/%s/meta-data/instance-id' % v).text == inst
    assert get(amid, inst, '/latest/dynamic/').text == 'instance-identity/'
    assert get(amid, inst, '/latest/dynamic/instance-identity/').text == 'document'


def test_meta_data_listing(amid, inst, bare):
    listing = get(amid, inst, '/latest/meta-data/').text.split('\n')
    assert listing == sorted(listing)
    for entry in ('ami-id', 'ami-launch-index', 'ami-manifest-path', 'block-device-mapping/',
                  'hostname', 'instance-action', 'instance-id', 'instance-life-cycle',
                  'instance-type', 'local-hostname', 'local-ipv4', 'mac', 'network/',
                  'placement/', 'profile', 'public-keys/', 'reservation-id', 'security-groups',
                  'services/', 'tags/'):
        assert entry in listing, entry
    plain = get(amid, bare, '/latest/meta-data').text.split('\n')
    assert 'public-keys/' not in plain and 'tags/' not in plain and 'instance-id' in plain


def test_meta_data_values(amid, ec2, owner, launcher, inst):
    d = launcher.describe(inst)

    def md(path):
        r = get(amid, inst, '/latest/meta-data/' + path)
        assert r.status == 200, (path, r.status)
        assert r.header('content-type') == 'text/plain'
        return r.text

    assert md('instance-id') == inst
    assert md('ami-id') == d['ImageId'] and md('ami-id').startswith('ami-')
    assert md('instance-type') == 't2.micro'
    assert md('ami-launch-index') == '0'
    assert md('ami-manifest-path') == '(unknown)'
    assert md('instance-action') == 'none'
    assert md('instance-life-cycle') == 'on-demand'
    assert md('profile') == 'default-hvm'
    assert md('reservation-id') == d['ReservationId']
    assert md('security-groups') == ''
    ip = d['PrivateIpAddress']
    assert md('local-ipv4') == ip
    host = 'ip-%s.ec2.internal' % ip.replace('.', '-')
    assert md('local-hostname') == host and md('hostname') == host
    # placement, with the zone id DescribeAvailabilityZones gives
    assert md('placement/') == 'availability-zone\navailability-zone-id\nregion'
    assert md('placement/availability-zone') == d['Placement']['AvailabilityZone']
    assert md('placement/region') == REGION
    zones = ec2.describe_availability_zones()['AvailabilityZones']
    assert md('placement/availability-zone-id') == [
        z['ZoneId'] for z in zones if z['ZoneName'] == d['Placement']['AvailabilityZone']][0]
    assert md('services/') == 'domain\npartition'
    assert md('services/domain') == 'amazonaws.com'
    assert md('services/partition') == 'aws'
    # the network interface, keyed by the MAC
    mac = md('mac')
    assert mac.startswith('52:54:00:') and len(mac) == 17
    assert md('network/') == 'interfaces/'
    assert md('network/interfaces/') == 'macs/'
    assert md('network/interfaces/macs/') == mac + '/'
    nic = 'network/interfaces/macs/%s/' % mac
    assert md(nic).split('\n') == ['device-number', 'interface-id', 'local-hostname',
                                   'local-ipv4s', 'mac', 'owner-id', 'security-groups']
    assert md(nic + 'device-number') == '0'
    assert md(nic + 'interface-id') == 'eni-' + inst[2:]
    assert md(nic + 'local-ipv4s') == ip and md(nic + 'local-hostname') == host
    assert md(nic + 'mac') == mac
    assert md(nic + 'owner-id') == owner.account_id
    # the root device, as the image names it
    assert md('block-device-mapping/') == 'ami\nroot'
    assert md('block-device-mapping/ami') == d['RootDeviceName']
    assert md('block-device-mapping/root') == d['RootDeviceName']


def test_identity_document(amid, owner, launcher, inst):
    d = launcher.describe(inst)
    r = get(amid, inst, '/latest/dynamic/instance-identity/document')
    assert r.status == 200
    doc = json.loads(r.text)
    assert list(doc) == ['accountId', 'architecture', 'availabilityZone', 'billingProducts',
                         'devpayProductCodes', 'marketplaceProductCodes', 'imageId',
                         'instanceId', 'instanceType', 'kernelId', 'pendingTime', 'privateIp',
                         'ramdiskId', 'region', 'version']
    assert doc['accountId'] == owner.account_id
    assert doc['architecture'] == 'x86_64'
    assert doc['availabilityZone'] == d['Placement']['AvailabilityZone']
    assert doc['imageId'] == d['ImageId'] and doc['instanceId'] == inst
    assert doc['instanceType'] == 't2.micro'
    assert doc['privateIp'] == d['PrivateIpAddress']
    assert doc['region'] == REGION and doc['version'] == '2017-09-30'
    for k in ('billingProducts', 'devpayProductCodes', 'marketplaceProductCodes', 'kernelId',
              'ramdiskId'):
        assert doc[k] is None
    assert doc['pendingTime'] == d['LaunchTime'].strftime('%Y-%m-%dT%H:%M:%SZ')


def test_user_data_is_raw_bytes(amid, inst, bare):
    r = get(amid, inst, '/latest/user-data')
    assert r.status == 200 and r.body == USER_DATA
    assert r.header('content-type') == 'application/octet-stream'
    assert get(amid, inst, '/2016-09-02/user-data').body == USER_DATA
    assert_error(get(amid, bare, '/latest/user-data'), 404, 'Not Found')


def test_public_keys(amid, inst, bare, pubkey):
    assert get(amid, inst, '/latest/meta-data/public-keys/').text == '0=imds-key'
    assert get(amid, inst, '/latest/meta-data/public-keys/0/').text == 'openssh-key'
    assert get(amid, inst, '/latest/meta-data/public-keys/0').text == 'openssh-key'
    key = get(amid, inst, '/latest/meta-data/public-keys/0/openssh-key').text
    assert key.endswith('\n') and key.split()[:2] == pubkey[:2]
    assert_error(get(amid, inst, '/latest/meta-data/public-keys/1/openssh-key'), 404,
                 'Not Found')
    assert_error(get(amid, bare, '/latest/meta-data/public-keys/'), 404, 'Not Found')
    assert_error(get(amid, bare, '/latest/meta-data/public-keys/0/openssh-key'), 404,
                 'Not Found')


def test_public_key_outlives_its_key_pair(amid, ec2, launcher, tmp_path):
    """As on EC2, the key a guest was launched with stays in its metadata after the key pair is
    deleted."""
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(tmp_path / 'k')],
                   check=True)
    pub = (tmp_path / 'k.pub').read_bytes()
    ec2.import_key_pair(KeyName='imds-short-lived', PublicKeyMaterial=pub)
    i = launcher.launch(key_name='imds-short-lived')
    ec2.delete_key_pair(KeyName='imds-short-lived')
    assert get(amid, i, '/latest/meta-data/public-keys/').text == '0=imds-short-lived'
    key = get(amid, i, '/latest/meta-data/public-keys/0/openssh-key').text
    assert key.split()[:2] == pub.decode().split()[:2]


def test_tags_in_metadata(amid, inst, bare):
    assert get(amid, inst, '/latest/meta-data/tags/').text == 'instance/'
    assert get(amid, inst, '/latest/meta-data/tags/instance/').text == 'Name\nempty\nteam'
    assert get(amid, inst, '/latest/meta-data/tags/instance/Name').text == 'imds-web'
    assert get(amid, inst, '/latest/meta-data/tags/instance/team').text == 'storage'
    r = get(amid, inst, '/latest/meta-data/tags/instance/empty')
    assert r.status == 200 and r.body == b''
    assert_error(get(amid, inst, '/latest/meta-data/tags/instance/nope'), 404, 'Not Found')
    # InstanceMetadataTags disabled: no tags at all
    assert_error(get(amid, bare, '/latest/meta-data/tags/instance/'), 404, 'Not Found')
    assert_error(get(amid, bare, '/latest/meta-data/tags/instance/Name'), 404, 'Not Found')


@pytest.mark.parametrize('path', [
    '/latest/meta-data/nope', '/latest/nope', '/2099-01-01/meta-data/', '/nope',
    '/latest/meta-data/ami-id/extra', '/latest/meta-data/block-device-mapping/ebs1',
    '/latest/meta-data/network/interfaces/macs/52:54:00:00:00:00/', '/latest/dynamic/fws/',
    '/latest/meta-data/iam/', '/latest/meta-data/placement/partition-number',
])
def test_not_found(amid, inst, path):
    assert_error(get(amid, inst, path), 404, 'Not Found')


# ---- IMDSv2 ----

def test_token_then_get(amid, inst):
    r = put_token(amid, inst, '60')
    assert r.status == 200 and r.header(TTL_HDR) == '60'
    token = r.text
    assert token and '\n' not in token
    r = get(amid, inst, '/latest/meta-data/instance-id', [(TOKEN_HDR, token)])
    assert r.status == 200 and r.text == inst
    # an instance that does not exist has no token to give
    assert_error(put_token(amid, UNKNOWN), 404, 'Not Found')


def test_token_expires_on_the_deployment_clock(amid, inst):
    token = put_token(amid, inst, '60').text
    assert get(amid, inst, '/latest/meta-data/', [(TOKEN_HDR, token)]).status == 200
    run_amid('clock', 'advance', '2m', '--data', amid.datadir)
    try:
        time.sleep(1.2)  # the daemon re-reads the offset once a second
        assert_error(get(amid, inst, '/latest/meta-data/', [(TOKEN_HDR, token)]), 401,
                     'Unauthorized')
    finally:
        run_amid('clock', 'reset', '--data', amid.datadir)
        time.sleep(1.2)


def test_token_errors(amid, inst, bare):
    for ttl in (None, '0', '21601', 'abc', '-5', '', '99999999999999999999999'):
        assert_error(put_token(amid, inst, ttl), 400, 'Bad Request')
    assert put_token(amid, inst, '21600').status == 200
    assert put_token(amid, inst, '1').status == 200
    assert_error(put_token(amid, inst, '60', [('X-Forwarded-For', '10.0.0.1')]), 403,
                 'Forbidden')
    assert_error(get(amid, inst, '/latest/api/token'), 405, 'Method Not Allowed')
    for bad in ('nonsense', 'A' * 43, 'A' * 500):
        assert_error(get(amid, inst, '/latest/meta-data/', [(TOKEN_HDR, bad)]), 401,
                     'Unauthorized')
    # a token made for another instance does not open this one
    foreign = put_token(amid, bare).text
    assert_error(get(amid, inst, '/latest/meta-data/', [(TOKEN_HDR, foreign)]), 401,
                 'Unauthorized')
    assert get(amid, bare, '/latest/meta-data/', [(TOKEN_HDR, foreign)]).status == 200


def test_tokens_required(amid, strict):
    assert_error(get(amid, strict, '/latest/meta-data/instance-id'), 401, 'Unauthorized')
    assert_error(get(amid, strict, '/'), 401, 'Unauthorized')
    token = put_token(amid, strict, '300').text
    r = get(amid, strict, '/latest/meta-data/instance-id', [(TOKEN_HDR, token)])
    assert r.status == 200 and r.text == strict
    assert_error(get(amid, strict, '/latest/meta-data/', [(TOKEN_HDR, 'x' + token)]), 401,
                 'Unauthorized')


def test_endpoint_disabled_and_unknown_instance(amid, closed):
    assert_error(get(amid, closed, '/latest/meta-data/instance-id'), 403, 'Forbidden')
    assert_error(put_token(amid, closed), 403, 'Forbidden')
    assert_error(get(amid, UNKNOWN, '/'), 404, 'Not Found')
    assert_error(get(amid, UNKNOWN, '/latest/meta-data/instance-id'), 404, 'Not Found')


# ---- the connection ----

def test_several_requests_on_one_connection(amid, inst):
    """Pipelined requests, a PUT body consumed per Content-Length, HEAD without a body, then
    Connection: close ends the connection (what follows it is not answered)."""
    raw = (request('GET', '/latest/meta-data/instance-id') +
           request('PUT', '/latest/api/token', [(TTL_HDR, '120')], body=b'ignored') +
           request('HEAD', '/latest/user-data') +
           request('GET', '/latest/meta-data/ami-launch-index', [('Connection', 'close')]) +
           request('GET', '/latest/meta-data/instance-id'))
    rs = run_imds(amid, inst, raw, heads=(2,))
    assert [r.status for r in rs] == [200, 200, 200, 200]
    assert rs[0].text == inst and rs[0].header('connection') == 'keep-alive'
    assert rs[1].header(TTL_HDR) == '120'
    assert rs[2].body == b'' and rs[2].header('content-length') == str(len(USER_DATA))
    assert rs[3].text == '0' and rs[3].header('connection') == 'close'
    # and a token from the first request serves a later one on the same connection
    token = rs[1].text
    raw = (request('GET', '/latest/meta-data/instance-id', [(TOKEN_HDR, token)]) +
           request('GET', '/latest/meta-data/instance-type', [(TOKEN_HDR, token)]))
    assert [r.text for r in run_imds(amid, inst, raw)] == [inst, 't2.micro']


def test_http10_and_malformed_requests(amid, inst):
    # HTTP/1.0 closes unless asked to keep the connection
    raw = request('GET', '/latest/meta-data/instance-id', version='HTTP/1.0') * 2
    [r] = run_imds(amid, inst, raw)
    assert r.text == inst and r.header('connection') == 'close'
    raw = request('GET', '/latest/meta-data/instance-id', [('Connection', 'keep-alive')],
                  version='HTTP/1.0') * 2
    assert len(run_imds(amid, inst, raw)) == 2
    # bare LF line ends and a query string are tolerated
    [r] = run_imds(amid, inst, b'GET /latest/meta-data/instance-id?x=1 HTTP/1.1\n\n')
    assert r.text == inst
    # malformed: answered 400, then the connection ends
    for raw in (b'GARBAGE\r\n\r\n', b'GET /latest HTTP/2.0\r\n\r\n',
                b'GET latest HTTP/1.1\r\n\r\n', b'GET / HTTP/1.1\r\nNo colon\r\n\r\n',
                b'GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n',
                b'PUT /latest/api/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n',
                b'GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n'):
        rs = run_imds(amid, inst, raw + request('GET', '/'))
        assert len(rs) == 1, raw
        assert_error(rs[0], 400, 'Bad Request')
        assert rs[0].header('connection') == 'close'


def test_head_cap(amid, inst):
    big = request('GET', '/latest/meta-data/instance-id', [('X-Pad', 'a' * 17000)])
    assert get(amid, inst, '/latest/meta-data/instance-id').status == 200
    rs = run_imds(amid, inst, big + request('GET', '/'))
    assert len(rs) == 1
    assert_error(rs[0], 400, 'Bad Request')
    fits = request('GET', '/latest/meta-data/instance-id', [('X-Pad', 'a' * 15000)])
    assert run_imds(amid, inst, fits)[0].text == inst


def read_response(stream, buf):
    """Reads from a pipe until one whole response is there; returns (Resp, rest)."""
    while True:
        r, rest = parse_one(buf)
        if r:
            return r, rest
        chunk = os.read(stream.fileno(), 65536)
        assert chunk, 'connection closed early'
        buf += chunk


def test_row_read_afresh_for_each_request(amid, launcher, bare):
    """Metadata options change while a connection lives: the next request sees them."""
    p = subprocess.Popen([AMID, 'imds', '--data', amid.datadir, '--instance', bare],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(request('GET', '/latest/meta-data/instance-id'))
        p.stdin.flush()
        r, buf = read_response(p.stdout, b'')
        assert r.status == 200
        launcher.set_tokens(bare, 'required')
        p.stdin.write(request('GET', '/latest/meta-data/instance-id'))
        p.stdin.flush()
        r, buf = read_response(p.stdout, buf)
        assert_error(r, 401, 'Unauthorized')
        p.stdin.close()
        assert p.wait(timeout=30) == 0
        assert p.stdout.read() == b''
    finally:
        launcher.set_tokens(bare, 'optional')
        if p.poll() is None:
            p.kill()
            p.wait()


def over_one_socket(amid, iid, raw, datadir=None):
    """As libslirp runs it: one socket as stdin, stdout and stderr."""
    ours, theirs = socket.socketpair()
    p = subprocess.Popen([AMID, 'imds', '--data', datadir or amid.datadir, '--instance', iid],
                         stdin=theirs, stdout=theirs, stderr=theirs)
    theirs.close()
    ours.sendall(raw)
    ours.shutdown(socket.SHUT_WR)
    ours.settimeout(30)
    data = b''
    while True:
        chunk = ours.recv(65536)
        if not chunk:
            break
        data += chunk
    ours.close()
    assert p.wait(timeout=30) == 0
    return parse_all(data)


def test_only_http_reaches_the_guest(amid, inst, tmp_path):
    rs = over_one_socket(amid, inst, request('GET', '/latest/meta-data/instance-id') * 2)
    assert [r.text for r in rs] == [inst, inst]
    # a data directory that does not open: the diagnostic stays off the connection
    rs = over_one_socket(amid, inst, request('GET', '/') * 2, datadir=str(tmp_path / 'none'))
    assert [r.status for r in rs] == [500, 500]
    assert b'amid' not in rs[0].body


def test_idle_end_of_input_and_usage(amid, inst):
    # nothing sent: the process ends with its input, writing nothing
    assert run_imds(amid, inst, b'') == []
    # half a request, then the end: nothing is answered
    assert run_imds(amid, inst, b'GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n') == []
    p = subprocess.run([AMID, 'imds', '--data', amid.datadir], capture_output=True, timeout=30)
    assert p.returncode == 2 and p.stdout == b'' and b'usage' in p.stderr


# ---- a real guest ----

GUEST_SCRIPT = b'''#!/bin/sh
M=http://169.254.169.254/latest
echo "IMDS-IID=$(wget -q -O - $M/meta-data/instance-id)"
echo "IMDS-MAC=$(wget -q -O - $M/meta-data/mac) $(cat /sys/class/net/eth0/address)"
echo "IMDS-DOC=$(wget -q -O - $M/dynamic/instance-identity/document | tr -d '\\n ')"
'''


def test_guest_reads_its_metadata(amid, ec2, owner, launcher):
    """The whole path: QEMU's guestfwd runs `amid imds` inside its sandbox for the booted
    catalogue guest, which takes an IMDSv2 token, fetches its user data and runs it."""
    iid = launcher.launch(user_data=GUEST_SCRIPT)
    deadline, out = time.time() + 300, ''
    while time.time() < deadline and 'AMID-BOOT: ready' not in out:
        time.sleep(2)
        out = ec2.get_console_output(InstanceId=iid, Latest=True).get('Output') or ''
    assert 'AMID-BOOT: imds v2' in out, out[-3000:]
    assert 'AMID-INSTANCE-ID: %s' % iid in out
    assert 'IMDS-IID=%s' % iid in out
    mac = [ln for ln in out.splitlines() if ln.startswith('IMDS-MAC=')][0].split('=', 1)[1]
    assert mac.split() == [mac.split()[0]] * 2
    doc = json.loads([ln for ln in out.splitlines() if ln.startswith('IMDS-DOC=')][0][9:])
    assert doc['instanceId'] == iid and doc['accountId'] == owner.account_id
