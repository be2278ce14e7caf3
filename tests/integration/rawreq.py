"""Hand-made signed requests, for the bad-input tests: botocore's own SigV4 signer, then any
field of the request tampered with before it is sent over a plain HTTP connection."""
import datetime
import http.client
import urllib.parse
from unittest import mock

from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

FORM = 'application/x-www-form-urlencoded; charset=utf-8'


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode(errors='replace')

    def code(self):
        """The AWS error code of an XML or JSON error body, or None."""
        t = self.text
        if '<Code>' in t:
            return t.split('<Code>', 1)[1].split('</Code>', 1)[0]
        if '"__type"' in t:
            import json
            return json.loads(t)['__type']
        return None


class _FixedClock(datetime.datetime):
    fixed = None

    @classmethod
    def utcnow(cls):
        return cls.fixed


def sign(endpoint, creds, method='POST', path='/', params=None, body=None, headers=None,
         service='ec2', region='us-east-1', when=None, presign=False, expires=300):
    """Returns (url, headers, body) of a request signed as botocore signs it."""
    hdrs = dict(headers or {})
    if params is not None and body is None and method == 'POST' and not presign:
        body = urllib.parse.urlencode(params).encode()
        hdrs.setdefault('Content-Type', FORM)
    url = endpoint + path
    if params is not None and (method == 'GET' or presign):
        url += '?' + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    req = AWSRequest(method=method, url=url, data=body, headers=hdrs)
    c = Credentials(creds.key, creds.secret)
    signer = SigV4QueryAuth(c, service, region, expires=expires) if presign else \
        SigV4Auth(c, service, region)
    if when is not None:
        _FixedClock.fixed = when
        with mock.patch('botocore.auth.datetime.datetime', _FixedClock):
            signer.add_auth(req)
    else:
        signer.add_auth(req)
    p = req.prepare()
    return p.url, dict(p.headers), p.body


def send(url, method='POST', headers=None, body=None, timeout=30):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    target = u.path or '/'
    if u.query:
        target += '?' + u.query
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    hdrs = dict(headers or {})
    if not any(k.lower() == 'host' for k in hdrs):
        hdrs['Host'] = u.netloc
    for k, v in hdrs.items():
        conn.putheader(k, v)
    if body is not None and not any(k.lower() == 'content-length' for k in hdrs):
        conn.putheader('Content-Length', str(len(body)))
    conn.endheaders()
    if body:
        conn.send(body if isinstance(body, bytes) else body.encode())
    r = conn.getresponse()
    resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    conn.close()
    return resp


def call(endpoint, creds, params, **kw):
    """Signs and sends an EC2 Query request; returns the Response."""
    method = kw.pop('method', 'POST')
    url, headers, body = sign(endpoint, creds, method=method, params=params, **kw)
    return send(url, method, headers, body)
