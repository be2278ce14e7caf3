"""Integration test harness: the real amid daemon on a free loopback port with a temporary data
directory, driven with Debian's boto3 and AWS CLI as users drive it.

Debian 12's boto3 (1.26) and AWS CLI (2.9) predate AWS_ENDPOINT_URL, so every client is given its
endpoint explicitly.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import boto3
import botocore.config
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AMID = os.environ.get('AMID_BIN') or os.path.join(ROOT, 'build', 'amid')
AWS = '/usr/bin/aws'
# Current service models (tools/gen-test-models.py), so Debian's older boto3 and AWS CLI know
# every operation and parameter amid serves.
os.environ['AWS_DATA_PATH'] = os.path.join(ROOT, 'tests', 'models')


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_amid(*args, check=True, env=None):
    """Runs the amid command line; returns the CompletedProcess."""
    p = subprocess.run([AMID, *args], capture_output=True, text=True, env=env, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError('amid %s failed (%d): %s' % (' '.join(args), p.returncode, p.stderr))
    return p


class Creds:
    def __init__(self, d):
        self.account_id = d['AccountId']
        self.name = d['AccountName']
        self.key = d['AccessKeyId']
        self.secret = d['SecretAccessKey']


class Daemon:
    """One `amid serve` process over one data directory."""

    def __init__(self, datadir, port=None, extra=()):
        self.datadir = datadir
        self.port = port or free_port()
        self.endpoint = 'http://127.0.0.1:%d' % self.port
        self.extra = list(extra)
        self.proc = None
        self.log_path = os.path.join(datadir, 'serve-%d.log' % self.port)

    def start(self):
        self.log = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(
            [AMID, 'serve', '--data', self.datadir, '--listen', '127.0.0.1:%d' % self.port,
             *self.extra], stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError('amid serve exited: ' + self.read_log())
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError('amid serve did not listen: ' + self.read_log())

    def read_log(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode(errors='replace')

    def stop(self, sig=signal.SIGTERM):
        """Stops the daemon; with SIGTERM it must exit 0 with sanitizers silent."""
        if not self.proc:
            return None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.log.close()
        if sig == signal.SIGTERM:
            log = self.read_log()
            assert 'AddressSanitizer' not in log and 'runtime error' not in log, log[-4000:]
            assert rc == 0, 'amid serve exited %d: %s' % (rc, log[-2000:])
        return rc

    def client(self, service, creds, region='us-east-1', **kw):
        cfg = botocore.config.Config(retries={'max_attempts': 1}, **kw)
        return boto3.client(service, endpoint_url=self.endpoint, region_name=region,
                            aws_access_key_id=creds.key, aws_secret_access_key=creds.secret,
                            config=cfg)

    def aws(self, creds, *args, region='us-east-1', check=True):
        """Runs the AWS CLI; returns (rc, parsed JSON or None, stderr)."""
        env = dict(os.environ, AWS_ACCESS_KEY_ID=creds.key, AWS_SECRET_ACCESS_KEY=creds.secret,
                   AWS_DEFAULT_REGION=region, AWS_PAGER='', AWS_CONFIG_FILE='/dev/null',
                   AWS_SHARED_CREDENTIALS_FILE='/dev/null')
        p = subprocess.run([AWS, '--endpoint-url', self.endpoint, '--output', 'json', *args],
                           capture_output=True, text=True, env=env, timeout=120)
        out = json.loads(p.stdout) if p.stdout.strip() else None
        if check and p.returncode != 0:
            raise AssertionError('aws %s failed: %s' % (' '.join(args), p.stderr))
        return p.returncode, out, p.stderr


class Amid:
    """A data directory with its daemon and accounts."""

    def __init__(self, tmp):
        self.datadir = os.path.join(tmp, 'data')
        p = run_amid('init', '--data', self.datadir, '--format', 'json')
        self.admin = Creds(json.loads(p.stdout))
        self.daemon = Daemon(self.datadir).start()
        self.endpoint = self.daemon.endpoint

    def new_account(self, name):
        p = run_amid('account', 'create', name, '--data', self.datadir, '--format', 'json')
        return Creds(json.loads(p.stdout))

    def client(self, service, creds=None, region='us-east-1', **kw):
        return self.daemon.client(service, creds or self.admin, region, **kw)

    def aws(self, *args, creds=None, region='us-east-1', check=True):
        return self.daemon.aws(creds or self.admin, *args, region=region, check=check)


def kill_guests(path):
    """Kills the QEMU processes of instances under data directory `path` (they run detached and
    outlive the daemon, as they must); returns how many there were."""
    killed = 0
    marker = os.path.realpath(path).encode()
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                cmd = f.read()
        except OSError:
            continue
        if b'qemu-system' in cmd.split(b'\0')[0] and marker in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


@pytest.fixture(scope='session')
def amid():
    tmp = tempfile.mkdtemp(prefix='amid-test-')
    try:
        a = Amid(tmp)
        yield a
        a.daemon.stop()
    finally:
        kill_guests(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope='session')
def ec2(amid):
    return amid.client('ec2')


@pytest.fixture
def tmpdir_amid():
    """A fresh empty directory for tests that make their own data directory."""
    tmp = tempfile.mkdtemp(prefix='amid-t-')
    yield tmp
    kill_guests(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
