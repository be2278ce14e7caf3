#!/usr/bin/python3
"""bench/images seeding and checking, against an EC2 endpoint (amid or moto_server).

  seed.py seed   ENDPOINT CREDS.json PER_ACCOUNT [--moto]
      registers PER_ACCOUNT images in every account of CREDS.json (a list of
      [AccessKeyId, SecretAccessKey, AccountId]) with RegisterImage from parallel threads, one
      snapshot per account; one image in ten is named web-NNNNN, the others img-NNNNN.
  seed.py verify ENDPOINT CREDS.json PER_ACCOUNT [--moto]
      checks every account holds exactly PER_ACCOUNT images of its own and that the benchmarked
      request (Owners=self, MaxResults=100, name=web-*) returns min(100, ceil(PER_ACCOUNT/10))
      web-* images, all the account's own; prints one summary line.  moto ignores MaxResults, so
      both sides do the same work only while PER_ACCOUNT <= 1000 (the issue's 1,000).

moto_server does not check signatures and puts every request in its default account unless told
otherwise, so with --moto each request carries x-moto-account-id: the amid account's id, and moto
holds the same images under the same account ids.  Exits non-zero on any error."""
import concurrent.futures
import json
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import boto3.session
import botocore.config
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def client(endpoint, key, secret, account, moto):
    # A session per client: boto3's default session is not thread-safe to create clients from.
    ec2 = boto3.session.Session().client(
        'ec2', endpoint_url=endpoint, region_name='us-east-1', aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={'max_attempts': 3}, max_pool_connections=16))
    if moto:
        def add_account(request, **_):
            request.headers['x-moto-account-id'] = account
        ec2.meta.events.register('before-send.ec2.*', add_account)
    return ec2


def seed_account(endpoint, cred, per_account, moto):
    ec2 = client(endpoint, cred[0], cred[1], cred[2], moto)
    v = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    s = ec2.create_snapshot(VolumeId=v)['SnapshotId']
    ec2.get_waiter('snapshot_completed').wait(SnapshotIds=[s],
                                              WaiterConfig={'Delay': 1, 'MaxAttempts': 120})

    def one(i):
        ec2.register_image(Name='%s-%05d' % ('img' if i % 10 else 'web', i),
                           RootDeviceName='/dev/xvda',
                           BlockDeviceMappings=[{'DeviceName': '/dev/xvda',
                                                 'Ebs': {'SnapshotId': s}}])

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(one, range(per_account)))


def raw(endpoint, cred, moto, params):
    """POSTs a SigV4-signed EC2 query request built by hand (Debian's botocore predates
    DescribeImages' MaxResults) and returns the images of the response as (name, owner) pairs and
    whether it had a NextToken."""
    body = urllib.parse.urlencode(dict({'Action': 'DescribeImages', 'Version': '2016-11-15'},
                                       **params))
    req = AWSRequest(method='POST', url=endpoint + '/', data=body,
                     headers={'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8'})
    SigV4Auth(Credentials(cred[0], cred[1]), 'ec2', 'us-east-1').add_auth(req)
    headers = dict(req.prepare().headers)
    if moto:
        headers['x-moto-account-id'] = cred[2]
    r = urllib.request.urlopen(urllib.request.Request(endpoint + '/', data=body.encode(),
                                                      headers=headers, method='POST'))
    root = ET.fromstring(r.read())
    ns = root.tag[:root.tag.index('}') + 1] if root.tag.startswith('{') else ''
    images = [(i.findtext(ns + 'name'), i.findtext(ns + 'imageOwnerId'))
              for i in root.find(ns + 'imagesSet').findall(ns + 'item')]
    return images, bool(root.findtext(ns + 'nextToken'))


def verify_account(endpoint, cred, per_account, moto):
    images, _ = raw(endpoint, cred, moto, {'Owner.1': 'self'})
    if any(o != cred[2] for _, o in images):
        raise SystemExit('account %s: Owners=self returned an image of another owner' % cred[2])
    if len(images) != per_account:
        raise SystemExit('account %s holds %d images, not %d' % (cred[2], len(images),
                                                                  per_account))
    # exactly the request wrk replays (sign.py)
    images, more = raw(endpoint, cred, moto, {'Owner.1': 'self', 'MaxResults': '100',
                                              'Filter.1.Name': 'name',
                                              'Filter.1.Value.1': 'web-*'})
    want = min(100, (per_account + 9) // 10)
    names = [n for n, _ in images]
    if len(names) != want or not all(n.startswith('web-') for n in names):
        raise SystemExit('account %s: the benchmarked request returned %d images (%d web-*), '
                         'not %d' % (cred[2], len(names),
                                     sum(n.startswith('web-') for n in names), want))
    return '%d%s' % (len(names), ' +NextToken' if more else '')


def main():
    if len(sys.argv) not in (5, 6) or sys.argv[1] not in ('seed', 'verify'):
        raise SystemExit(__doc__)
    mode, endpoint, creds_file, per_account = sys.argv[1:5]
    per_account = int(per_account)
    moto = sys.argv[5:] == ['--moto']
    creds = json.load(open(creds_file))
    fn = seed_account if mode == 'seed' else verify_account
    with concurrent.futures.ThreadPoolExecutor(len(creds)) as ex:
        res = [f.result() for f in [ex.submit(fn, endpoint, c, per_account, moto)
                                    for c in creds]]
    if mode == 'verify':
        print('verified: %d accounts x %d images; the benchmarked request returns %s images' %
              (len(creds), per_account, '/'.join(sorted(set(res)))))


if __name__ == '__main__':
    main()
