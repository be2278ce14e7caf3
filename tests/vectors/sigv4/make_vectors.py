#!/usr/bin/python3
"""Writes vectors.json: requests signed by botocore's own SigV4 signer (Debian's botocore), which
the C unit test (tests/unit/test_sigv4.c) must verify byte for byte.  Run with /usr/bin/python3;
the output is committed so the unit test never needs botocore.
"""
import base64
import datetime
import json
import os
import urllib.parse
from unittest import mock

from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

KEY = 'AKIAIOSFODNN7EXAMPLE'
SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'
WHEN = datetime.datetime(2026, 12, 4, 20, 28, 58)


class Clock(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return WHEN


def sign(name, method, url, body=None, headers=None, service='ec2', region='us-east-1',
         presign=False):
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    c = Credentials(KEY, SECRET)
    signer = SigV4QueryAuth(c, service, region, expires=300) if presign else \
        SigV4Auth(c, service, region)
    with mock.patch('botocore.auth.datetime.datetime', Clock):
        signer.add_auth(req)
    p = req.prepare()
    u = urllib.parse.urlsplit(p.url)
    hdrs = [[k, v] for k, v in p.headers.items()]
    if not any(k.lower() == 'host' for k, _ in hdrs):
        hdrs.append(['Host', u.netloc])
    b = p.body or b''
    if isinstance(b, str):
        b = b.encode()
    return {
        'name': name, 'method': method, 'path': u.path or '/', 'query': u.query,
        'headers': hdrs, 'body_b64': base64.b64encode(b).decode(), 'key': KEY, 'secret': SECRET,
        'now': WHEN.strftime('%Y%m%dT%H%M%SZ'), 'presigned': presign,
        'service': service, 'region': region,
    }


def main():
    ep = 'http://127.0.0.1:8773'
    form = {'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8'}
    v = [
        sign('ec2-post-form', 'POST', ep + '/',
             'Action=DescribeRegions&Version=2016-11-15', dict(form)),
        sign('ec2-post-lists', 'POST', ep + '/',
             urllib.parse.urlencode({'Action': 'DescribeImages', 'Version': '2016-11-15',
                                     'Filter.1.Name': 'name', 'Filter.1.Value.1': 'a b*c',
                                     'Owner.1': 'self', 'ExecutableBy.1': 'all'}),
             dict(form)),
        sign('ec2-get-query', 'GET', ep + '/?Action=DescribeRegions&Version=2016-11-15'
             '&RegionName.1=us-east-1&Filter.1.Value.1=%2A%20x'),
        sign('ec2-unicode-body', 'POST', ep + '/',
             urllib.parse.urlencode({'Action': 'CreateTags', 'Version': '2016-11-15',
                                     'ResourceId.1': 'vol-0123456789abcdef0',
                                     'Tag.1.Key': 'név', 'Tag.1.Value': '値 ~!@#$%^&*()'}),
             dict(form)),
        sign('ec2-extra-headers', 'POST', ep + '/', 'Action=DescribeRegions&Version=2016-11-15',
             dict(form, **{'X-Amz-Meta-Thing': '  a   b  ', 'User-Agent': 'test/1.0'})),
        sign('sts-post', 'POST', ep + '/', 'Action=GetCallerIdentity&Version=2011-06-15',
             dict(form), service='sts'),
        sign('ec2-us-west-2', 'POST', ep + '/', 'Action=DescribeAvailabilityZones&'
             'Version=2016-11-15', dict(form), region='us-west-2'),
        sign('kms-json', 'POST', ep + '/', '{"KeyId": "alias/aws/ebs"}',
             {'X-Amz-Target': 'TrentService.DescribeKey',
              'Content-Type': 'application/x-amz-json-1.1'}, service='kms'),
        sign('ebs-rest-put', 'PUT', ep + '/snapshots/snap-0123456789abcdef0/blocks/7',
             b'\x00\x01\x02' * 1000, {'x-amz-Data-Length': '3000',
                                      'x-amz-Checksum': 'abc=', 'Content-Type':
                                      'application/octet-stream'}, service='ebs'),
        sign('ebs-rest-get-query', 'GET', ep + '/snapshots/snap-0123456789abcdef0/blocks?'
             'maxResults=100&startingBlockIndex=5', service='ebs'),
        sign('dlm-path-escape', 'GET', ep + '/tags/arn%3Aaws%3Adlm%3Aus-east-1%3A123456789012'
             '%3Apolicy%2Fpolicy-0123', service='dlm'),
        sign('ec2-presigned', 'GET', ep + '/?Action=DescribeRegions&Version=2016-11-15',
             presign=True),
        sign('ec2-presigned-copysnapshot', 'GET',
             ep + '/?Action=CopySnapshot&Version=2016-11-15&SourceRegion=us-west-2&'
             'SourceSnapshotId=snap-0123456789abcdef0&DestinationRegion=us-east-1',
             presign=True, region='us-west-2'),
    ]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'vectors.json')
    with open(out, 'w') as f:
        json.dump(v, f, indent=1, ensure_ascii=False)
        f.write('\n')
    print('wrote', out, len(v), 'vectors')


if __name__ == '__main__':
    main()
