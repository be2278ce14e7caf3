#!/usr/bin/python3
"""Prints a wrk Lua script replaying signed DescribeImages(Owners=self, MaxResults=100,
Filter name=web-*) requests against HOST:PORT, one request per account of CREDS.json (a list of
[AccessKeyId, SecretAccessKey, AccountId]); every connection cycles through the accounts.  The
script reports requests/s, p50/p99 latency and the error count (non-2xx, timeouts, socket errors).
With --moto every request also carries x-moto-account-id (moto does not map access keys to
accounts; the header is not signed, so the signed part is the same on both sides).
Usage: sign.py HOST:PORT CREDS.json [--moto]"""
import json
import sys
import urllib.parse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def lua(s):
    return '"%s"' % s.replace('\\', '\\\\').replace('"', '\\"')


host, creds = sys.argv[1], json.load(open(sys.argv[2]))
moto = sys.argv[3:] == ['--moto']
body = urllib.parse.urlencode({'Action': 'DescribeImages', 'Version': '2016-11-15',
                               'Owner.1': 'self', 'MaxResults': '100',
                               'Filter.1.Name': 'name', 'Filter.1.Value.1': 'web-*'})
print('local body = %s' % lua(body))
print('local specs = {')
for key, secret, account in creds:
    req = AWSRequest(method='POST', url='http://%s/' % host, data=body,
                     headers={'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8'})
    SigV4Auth(Credentials(key, secret), 'ec2', 'us-east-1').add_auth(req)
    h = {k: v for k, v in req.prepare().headers.items() if k.lower() != 'content-length'}
    h['Host'] = host
    if moto:
        h['x-moto-account-id'] = account
    print('  {%s},' % ', '.join('[%s] = %s' % (lua(k), lua(v)) for k, v in h.items()))
print('}')
print('''
local reqs = {}
local n = 0
local next_id = 0
setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
init = function(args)
  for _, h in ipairs(specs) do
    reqs[#reqs + 1] = wrk.format("POST", "/", h, body)
  end
  n = (id or 0) * 3
end
request = function()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p99_ms=%.2f p50_ms=%.2f requests=%d errors=%d " ..
    "bytes_per_response=%d\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000,
    latency:percentile(50) / 1000, summary.requests, summary.errors.status +
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, math.floor(summary.bytes / math.max(summary.requests, 1))))
end''')
