#!/usr/bin/python3
"""bench/copy: copies between regions, amid against what a user would do by hand, in one run.

1. CopyImage of a SIZE_GIB (2) GiB image (random data: nothing compresses or deduplicates) from
   us-east-1 to a region whose store is empty, to `available`, against `cp -r` of the same stored
   chunk files between the two store directories, with and without a final `sync` (amid's copy is
   durable when it answers; cp's is not until synced).  Target: amid >= 70% of cp's speed.
2. CopyImage of v2 of the image (1% of its blocks changed, uploaded with the EBS direct API on
   top of v1) to the same region after v1: only the changed chunks move.  Target: <= 5% of the
   first copy's time.
3. `amid import` of a fresh 1 GiB raw file of random data, encrypted (--encrypted, a KMS key)
   against unencrypted, each into an empty encryption domain.  Target: encrypted >= 80% of the
   unencrypted throughput.
Each repetition copies into a region of its own, so every first copy starts from an empty store.
Usage: bench/copy/run.sh [REPS]; SIZE_GIB overrides the image size.
"""
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ['AWS_DATA_PATH'] = os.path.join(ROOT, 'tests', 'models')

import boto3  # noqa: E402
import botocore.config  # noqa: E402

AMID = os.path.join(ROOT, 'build', 'amid')
REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
SIZE_GIB = int(os.environ.get('SIZE_GIB', '2'))
CHUNK = 512 * 1024
DEST = ['us-west-2', 'us-west-1', 'eu-west-1', 'eu-central-1', 'ap-south-1', 'sa-east-1']


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return total


class Bench:
    def __init__(self, tmp, regions):
        self.tmp = tmp
        self.data = os.path.join(tmp, 'data')
        self.creds = json.loads(sh(AMID, 'init', '--data', self.data, '--regions',
                                   ','.join(['us-east-1'] + regions), '--format', 'json'))
        self.port = free_port()
        self.log_path = os.path.join(tmp, 'serve.log')
        self.log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen([AMID, 'serve', '--data', self.data, '--listen',
                                      '127.0.0.1:%d' % self.port], stdout=self.log,
                                     stderr=self.log)
        time.sleep(0.5)

    def client(self, service, region='us-east-1'):
        cfg = botocore.config.Config(retries={'max_attempts': 1})
        return boto3.client(service, endpoint_url='http://127.0.0.1:%d' % self.port,
                            region_name=region, aws_access_key_id=self.creds['AccessKeyId'],
                            aws_secret_access_key=self.creds['SecretAccessKey'], config=cfg)

    def store(self, region):
        return os.path.join(self.data, 'regions', region, 'chunks')

    def events(self):
        with open(self.log_path, 'rb') as f:
            text = f.read().decode(errors='replace')
        return [dict(re.findall(r'(\w+)=(\S+)', ln)) for ln in text.splitlines()
                if 'event=snapshot-copied' in ln]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def wait_available(ec2, iid):
    while True:
        st = ec2.describe_images(ImageIds=[iid])['Images'][0]['State']
        if st == 'available':
            return
        if st != 'pending':
            raise SystemExit('copy %s ended %s' % (iid, st))
        time.sleep(0.01)


def timed_copy(b, region, image, name):
    ec2 = b.client('ec2', region)
    os.sync()  # every timed run starts with no dirty pages of an earlier one
    t0 = time.monotonic()
    iid = ec2.copy_image(SourceRegion='us-east-1', SourceImageId=image, Name=name)['ImageId']
    wait_available(ec2, iid)
    return time.monotonic() - t0


def make_image(b, path):
    with open(path, 'wb') as f:
        for _ in range(SIZE_GIB * 16):
            f.write(os.urandom(64 << 20))
    out = json.loads(sh(AMID, 'import', path, '--data', b.data, '--region', 'us-east-1',
                        '--format', 'json', '--no-progress'))
    os.unlink(path)
    snap = out['SnapshotId']
    ec2 = b.client('ec2')
    iid = ec2.register_image(Name='bench-v1', RootDeviceName='/dev/xvda',
                             BlockDeviceMappings=[{'DeviceName': '/dev/xvda',
                                                   'Ebs': {'SnapshotId': snap}}])['ImageId']
    return iid, snap


def make_v2(b, parent):
    """v2: 1% of the blocks rewritten through the EBS direct API on top of v1."""
    ebs = b.client('ebs')
    nblocks = SIZE_GIB * 2048
    changed = {i: os.urandom(CHUNK) for i in range(0, nblocks, 100)}
    sid = ebs.start_snapshot(VolumeSize=SIZE_GIB, ParentSnapshotId=parent,
                             Timeout=60)['SnapshotId']
    h = hashlib.sha256()
    for i, d in sorted(changed.items()):
        dig = hashlib.sha256(d).digest()
        h.update(dig)
        ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=d, DataLength=CHUNK,
                               Checksum=base64.b64encode(dig).decode(),
                               ChecksumAlgorithm='SHA256')
    ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(changed),
                          Checksum=base64.b64encode(h.digest()).decode(),
                          ChecksumAlgorithm='SHA256', ChecksumAggregationMethod='LINEAR')
    ec2 = b.client('ec2')
    while ec2.describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]['State'] != 'completed':
        time.sleep(0.05)
    iid = ec2.register_image(Name='bench-v2', RootDeviceName='/dev/xvda',
                             BlockDeviceMappings=[{'DeviceName': '/dev/xvda',
                                                   'Ebs': {'SnapshotId': sid}}])['ImageId']
    return iid, len(changed)


def timed_cp(src, dst, sync):
    os.sync()
    t0 = time.monotonic()
    subprocess.run(['cp', '-r', src, dst], check=True)
    if sync:
        subprocess.run(['sync', '-f', dst], check=True)
    t = time.monotonic() - t0
    shutil.rmtree(dst)
    return t


def timed_import(b, path, encrypted, key_arn):
    args = [AMID, 'import', path, '--data', b.data, '--region', 'us-east-1', '--format', 'json',
            '--no-progress']
    if encrypted:
        args += ['--encrypted', '--kms-key-id', key_arn]
    os.sync()
    t0 = time.monotonic()
    sh(*args)
    return time.monotonic() - t0


def import_rows(b, reps):
    key = b.client('kms').create_key(Description='bench')['KeyMetadata']['Arn']
    rows = []
    path = os.path.join(b.tmp, 'import.raw')
    for r in range(reps):
        with open(path, 'wb') as f:
            for _ in range(16):
                f.write(os.urandom(64 << 20))
        # Alternate the order so that neither side always runs on a warmer page cache.
        order = [False, True] if r % 2 == 0 else [True, False]
        t = {enc: timed_import(b, path, enc, key) for enc in order}
        rows.append((t[False], t[True]))
        print('import rep %d: clear %.2f s (%.0f MiB/s), encrypted %.2f s (%.0f MiB/s)'
              % (r + 1, t[False], 1024 / t[False], t[True], 1024 / t[True]))
    os.unlink(path)
    return rows


def main():
    reps = min(REPS, len(DEST))
    tmp = tempfile.mkdtemp(prefix='amid-bench-copy-')
    b = Bench(tmp, DEST[:reps])
    try:
        v1, v1_snap = make_image(b, os.path.join(tmp, 'image.raw'))
        v2, nchanged = make_v2(b, v1_snap)
        stored = du(b.store('us-east-1'))
        print('image: %d GiB of random data, %.0f MiB stored in us-east-1; v2 changes %d '
              'blocks (%.1f%%)' % (SIZE_GIB, stored / 2**20, nchanged,
                                   100.0 * nchanged / (SIZE_GIB * 2048)))
        rows = []
        for r in range(reps):
            region = DEST[r]
            t_copy = timed_copy(b, region, v1, 'copy-v1-%d' % r)
            t_v2 = timed_copy(b, region, v2, 'copy-v2-%d' % r)
            cp_dst = os.path.join(b.data, 'regions', 'cp-target')
            t_cp = timed_cp(b.store('us-east-1'), cp_dst, sync=False)
            t_cps = timed_cp(b.store('us-east-1'), cp_dst, sync=True)
            rows.append((t_copy, t_v2, t_cp, t_cps))
            print('rep %d (%s): CopyImage %.2f s (%.0f MiB/s) | cp %.2f s, cp+sync %.2f s | '
                  'v2 copy %.3f s' % (r + 1, region, t_copy, stored / 2**20 / t_copy, t_cp,
                                      t_cps, t_v2))
        ev = [e for e in b.events() if e.get('rc') == '0']
        moved = sorted(int(e['chunks_moved']) for e in ev)
        print('chunks moved per copy (from the daemon log):', moved)
        irows = import_rows(b, reps)
        med = [statistics.median(x) for x in zip(*rows)]
        t_clear, t_enc = [statistics.median(x) for x in zip(*irows)]
        t_copy, t_v2, t_cp, t_cps = med
        print()
        print('medians over %d reps' % reps)
        print('  CopyImage %d GiB across regions: %.2f s = %.0f MiB/s of stored bytes'
              % (SIZE_GIB, t_copy, stored / 2**20 / t_copy))
        print('  cp -r of the same chunk files:    %.2f s (%.2f s with sync)' % (t_cp, t_cps))
        print('  speed vs cp:       %.2f  (target >= 0.70)' % (t_cp / t_copy))
        print('  speed vs cp+sync:  %.2f' % (t_cps / t_copy))
        print('  v2 after v1:       %.3f s = %.1f%% of the first copy (target <= 5%%)'
              % (t_v2, 100.0 * t_v2 / t_copy))
        print('  import 1 GiB: clear %.0f MiB/s, encrypted %.0f MiB/s: %.2f (target >= 0.80)'
              % (1024 / t_clear, 1024 / t_enc, t_clear / t_enc))
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
