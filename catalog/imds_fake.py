#!/usr/bin/env python3
"""A tiny fake EC2 instance metadata service (IMDS) for QEMU guestfwd.

QEMU user-mode networking can hand every guest TCP connection to
169.254.169.254:80 to a fresh process, with the connection on its
stdin/stdout:

    -netdev user,id=n0,net=169.254.0.0/16,\
guestfwd=tcp:169.254.169.254:80-cmd:python3 catalog/imds_fake.py CONFIG.json

This script serves one connection (it honours keep-alive, so it may answer
several requests on it) and exits.  CONFIG.json:

    {
      "instance_id": "i-0123456789abcdef0",
      "user_data_file": "/path/to/user-data",   # optional; 404 when absent
      "imdsv2": "optional" | "required" | "disabled",   # default optional
      "meta_data": {"local-hostname": "..."},   # optional extra keys
      "log": "/path/to/requests.jsonl"          # optional request log
    }

"required": GETs without a valid token get 401 (like HttpTokens=required).
"disabled": the token PUT gets 403 (guests must fall back to IMDSv1).
Only the Python standard library is used.
"""

import json
import os
import sys
import time

TOKEN_PREFIX = "amid-fake-token-"


def _read_request(stream):
    """Returns (method, path, headers, body) or None at EOF."""
    line = stream.readline(8192)
    while line in (b"\r\n", b"\n"):
        line = stream.readline(8192)
    if not line:
        return None
    parts = line.decode("latin-1").strip().split()
    if len(parts) < 2:
        return ("BAD", "", {}, b"", "HTTP/1.0")
    method, path = parts[0], parts[1]
    version = parts[2] if len(parts) > 2 else "HTTP/1.0"
    headers = {}
    while True:
        h = stream.readline(8192)
        if not h or h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    n = int(headers.get("content-length", "0") or 0)
    if n > 0:
        body = stream.read(n)
    return (method, path, headers, body, version)


def _valid_token(tok, config):
    return bool(tok) and tok.startswith(TOKEN_PREFIX) and config.get("imdsv2", "optional") != "disabled"


def handle(method, path, headers, config):
    """Returns (status, reason, body-bytes)."""
    mode = config.get("imdsv2", "optional")
    path = path.split("?", 1)[0]
    if path == "/latest/api/token":
        if method != "PUT":
            return 405, "Method Not Allowed", b""
        if mode == "disabled":
            return 403, "Forbidden", b""
        ttl = headers.get("x-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return 400, "Bad Request", b""
        return 200, "OK", (TOKEN_PREFIX + str(config.get("instance_id", "x"))).encode()
    if method not in ("GET", "HEAD"):
        return 405, "Method Not Allowed", b""
    tok = headers.get("x-aws-ec2-metadata-token")
    if tok is not None and not _valid_token(tok, config):
        return 401, "Unauthorized", b""
    if mode == "required" and tok is None:
        return 401, "Unauthorized", b""
    meta = {"instance-id": config.get("instance_id", "i-00000000000000000")}
    meta.update(config.get("meta_data") or {})
    if path == "/latest/user-data":
        f = config.get("user_data_file")
        if f and os.path.exists(f):
            with open(f, "rb") as fh:
                return 200, "OK", fh.read()
        return 404, "Not Found", b""
    if path.startswith("/latest/meta-data/"):
        key = path[len("/latest/meta-data/"):].strip("/")
        if key == "":
            return 200, "OK", "\n".join(sorted(meta)).encode()
        if key in meta:
            return 200, "OK", str(meta[key]).encode()
        return 404, "Not Found", b""
    if path in ("/", "/latest", "/latest/"):
        return 200, "OK", b"dynamic\nmeta-data\nuser-data"
    return 404, "Not Found", b""


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: imds_fake.py CONFIG.json\n")
        return 2
    with open(argv[1]) as fh:
        config = json.load(fh)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    log = config.get("log")
    while True:
        req = _read_request(inp)
        if req is None:
            return 0
        method, path, headers, _body, version = req
        status, reason, body = handle(method, path, headers, config)
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if log:
            with open(log, "a") as fh:
                fh.write(json.dumps({
                    "time": time.time(), "method": method, "path": path,
                    "token": headers.get("x-aws-ec2-metadata-token"),
                    "ttl": headers.get("x-aws-ec2-metadata-token-ttl-seconds"),
                    "status": status}) + "\n")
        head = (f"{version if version.startswith('HTTP/1.') else 'HTTP/1.0'} {status} {reason}\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                f"Server: amid-imds-fake\r\nConnection: {'keep-alive' if keep else 'close'}\r\n")
        if path == "/latest/api/token" and status == 200:
            head += f"X-aws-ec2-metadata-token-ttl-seconds: {headers.get('x-aws-ec2-metadata-token-ttl-seconds')}\r\n"
        out.write(head.encode("latin-1") + b"\r\n" + (b"" if method == "HEAD" else body))
        out.flush()
        if not keep:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
