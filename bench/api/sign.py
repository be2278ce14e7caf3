#!/usr/bin/python3
"""Prints a wrk Lua script that replays one SigV4-signed EC2 DescribeRegions request (signed now,
valid for the server's 15-minute window) against HOST:PORT."""
import sys

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

host, key, secret = sys.argv[1], sys.argv[2], sys.argv[3]
body = 'Action=DescribeRegions&Version=2016-11-15'
req = AWSRequest(method='POST', url='http://%s/' % host, data=body,
                 headers={'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8'})
SigV4Auth(Credentials(key, secret), 'ec2', 'us-east-1').add_auth(req)
p = req.prepare()
print('wrk.method = "POST"')
print('wrk.body = "%s"' % body)
for k, v in p.headers.items():
    if k.lower() in ('content-length',):
        continue
    print('wrk.headers["%s"] = "%s"' % (k, v))
print('wrk.headers["Host"] = "%s"' % host)
print('''
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p99_ms=%.2f errors=%d\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
response = function(status, headers, body)
  if status ~= 200 then io.write("status " .. status .. "\\n") end
end''')
