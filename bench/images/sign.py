#!/usr/bin/python3
"""Prints a wrk Lua script replaying one signed DescribeImages(Owners=self, MaxResults=100,
Filter name=web-*) request against HOST:PORT, reporting requests/s and p99 latency."""
import sys
import urllib.parse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

host, key, secret = sys.argv[1], sys.argv[2], sys.argv[3]
body = urllib.parse.urlencode({'Action': 'DescribeImages', 'Version': '2016-11-15',
                               'Owner.1': 'self', 'MaxResults': '100',
                               'Filter.1.Name': 'name', 'Filter.1.Value.1': 'web-*'})
req = AWSRequest(method='POST', url='http://%s/' % host, data=body,
                 headers={'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8'})
SigV4Auth(Credentials(key, secret), 'ec2', 'us-east-1').add_auth(req)
p = req.prepare()
print('wrk.method = "POST"')
print('wrk.body = "%s"' % body)
for k, v in p.headers.items():
    if k.lower() != 'content-length':
        print('wrk.headers["%s"] = "%s"' % (k, v))
print('wrk.headers["Host"] = "%s"' % host)
print('''
local bad = 0
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, "web%-", 1) then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p99_ms=%.2f p50_ms=%.2f errors=%d\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000,
    latency:percentile(50) / 1000, summary.errors.status + summary.errors.connect +
    summary.errors.read + summary.errors.write + summary.errors.timeout))
end''')
