#!/usr/bin/python3
"""bench/instances: real guests, amid against what a user would do by hand, in one run.

1. RunInstances to `running` (QEMU started and answering) from a 1 GiB and an 8 GiB image
   (the 8 GiB one holds 3 GiB of data past the catalogue disk's 1 GiB): the ratio shows that a
   launch costs the same whatever the image's size (target <= 1.2).
2. The same QEMU started by hand on a qcow2 overlay (`qemu-img create -b`) of the same raw
   disks: the usual do-it-yourself way of a cheap copy (target amid <= 1.5x).
3. CreateImage NoReboot of an 8 GiB instance that changed 1% of its root disk (82 MiB), to
   `available`, against hashing (SHA-256 per 512 KiB chunk) and storing (one file per chunk,
   fsync'd) just those bytes (target <= 2x).
4. Sequential guest disk throughput (write then read 256 MiB with dd) over amid's NBD, against
   the same QEMU opening a raw file directly: the same CPU model, vCPUs, memory and virtio-blk
   options as amid gave its guest (target >= 70%).

Guests run under TCG on both sides (the accelerator is forced so that both sides match).
Usage: bench/instances/run.sh [REPS]; BENCH_ONLY=disk runs only item 4, REPS times.
"""
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
os.environ['AWS_DATA_PATH'] = os.path.join(ROOT, 'tests', 'models')

import boto3  # noqa: E402
import botocore.config  # noqa: E402
from guest_helpers import FakeImds, QemuGuest  # noqa: E402

AMID = os.path.join(ROOT, 'build', 'amid')
REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
# 'disk': only item 4, REPS rounds (medians), for iterating on the disk path.
ONLY = os.environ.get('BENCH_ONLY', '')
GiB = 1 << 30
CHUNK = 512 * 1024


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def median(xs):
    return statistics.median(xs)


class Bench:
    def __init__(self, tmp):
        self.tmp = tmp
        self.data = os.path.join(tmp, 'data')
        creds = json.loads(sh(AMID, 'init', '--data', self.data, '--format', 'json'))
        sh(AMID, 'catalog', 'import', '--data', self.data, cwd=ROOT)
        port = free_port()
        env = dict(os.environ, AMID_ACCEL='tcg')
        self.log = open(os.path.join(tmp, 'serve.log'), 'wb')
        self.proc = subprocess.Popen([AMID, 'serve', '--data', self.data, '--listen',
                                      '127.0.0.1:%d' % port, '--quiet'], stdout=self.log,
                                     stderr=self.log, env=env)
        time.sleep(0.5)
        cfg = botocore.config.Config(retries={'max_attempts': 1})
        self.ec2 = boto3.client('ec2', endpoint_url='http://127.0.0.1:%d' % port,
                                region_name='us-east-1', aws_access_key_id=creds['AccessKeyId'],
                                aws_secret_access_key=creds['SecretAccessKey'], config=cfg)

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def catalog(self):
        imgs = self.ec2.describe_images(Owners=['amid'])['Images']
        return imgs[0]

    def import_image(self, raw, name):
        """A raw disk imported as a snapshot (direct mode) and registered as an image like the
        catalogue's."""
        out = sh(AMID, 'import', '--data', self.data, raw, '--format', 'json')
        snap = json.loads(out)['SnapshotId']
        cat = self.catalog()
        return self.ec2.register_image(
            Name=name, Architecture='x86_64', RootDeviceName=cat['RootDeviceName'],
            VirtualizationType='hvm', EnaSupport=True,
            BlockDeviceMappings=[{'DeviceName': cat['RootDeviceName'],
                                  'Ebs': {'SnapshotId': snap, 'VolumeType': 'gp3'}}])['ImageId']

    def run_to_running(self, image, **kw):
        kw.setdefault('InstanceType', 't3.micro')
        t = time.monotonic()
        iid = self.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                     **kw)['Instances'][0]['InstanceId']
        while True:
            st = self.ec2.describe_instances(InstanceIds=[iid])['Reservations'][0]['Instances'][0]
            if st['State']['Name'] == 'running':
                return iid, time.monotonic() - t
            if st['State']['Name'] not in ('pending',):
                raise RuntimeError('instance %s went %s: %s' % (iid, st['State'],
                                                                st.get('StateReason')))
            time.sleep(0.002)

    def console_wait(self, iid, pattern, timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = self.ec2.get_console_output(InstanceId=iid, Latest=True).get('Output', '')
            m = re.search(pattern, out)
            if m:
                return m, out
            time.sleep(0.5)
        raise RuntimeError('%s: no %r on the console:\n%s' % (iid, pattern, out[-2000:]))

    def terminate(self, iid):
        self.ec2.terminate_instances(InstanceIds=[iid], Force=True)


def make_disks(tmp, catalog_raw):
    """The 1 GiB catalogue disk and an 8 GiB disk: the same first GiB, 3 GiB of data after."""
    small = os.path.join(tmp, 'small.raw')
    big = os.path.join(tmp, 'big.raw')
    shutil.copyfile(catalog_raw, small)
    shutil.copyfile(catalog_raw, big)
    with open(big, 'r+b') as f:
        f.seek(GiB)
        block = os.urandom(CHUNK)
        for i in range(3 * GiB // CHUNK):
            f.write(hashlib.sha256(block + i.to_bytes(8, 'little')).digest() * (CHUNK // 32))
        f.truncate(8 * GiB)
    return small, big


def qemu_by_hand(tmp, base, n):
    """Starts QEMU on a fresh qcow2 overlay of `base` as a user would, daemonized, and times it
    until its QMP monitor answers (what amid's `running` means)."""
    d = os.path.join(tmp, 'hand%d' % n)
    os.makedirs(d)
    t = time.monotonic()
    ov = os.path.join(d, 'overlay.qcow2')
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', ov)
    qmp = os.path.join(d, 'qmp.sock')
    sh('qemu-system-x86_64', '-accel', 'tcg', '-m', '1024', '-smp', '2', '-nodefaults',
       '-display', 'none', '-vga', 'none', '-serial', 'file:' + os.path.join(d, 'console.log'),
       '-drive', 'file=%s,format=qcow2,if=virtio' % ov, '-netdev',
       'user,id=n0,net=169.254.0.0/16', '-device', 'virtio-net-pci,netdev=n0',
       '-qmp', 'unix:%s,server=on,wait=off' % qmp, '-pidfile', os.path.join(d, 'pid'),
       '-daemonize')
    s = socket.socket(socket.AF_UNIX)
    s.connect(qmp)
    f = s.makefile('rwb')
    f.readline()
    f.write(b'{"execute":"qmp_capabilities"}\n')
    f.flush()
    f.readline()
    f.write(b'{"execute":"query-status"}\n')
    f.flush()
    f.readline()
    elapsed = time.monotonic() - t
    s.close()
    with open(os.path.join(d, 'pid')) as p:
        os.kill(int(p.read()), signal.SIGKILL)
    return elapsed


def hash_and_store(tmp, nbytes):
    """The floor for CreateImage of `nbytes` changed: SHA-256 per chunk, one file per chunk,
    fsync'd."""
    src = os.path.join(tmp, 'changed.bin')
    with open(src, 'wb') as f:
        f.write(os.urandom(nbytes))
    out = os.path.join(tmp, 'chunks')
    os.makedirs(out, exist_ok=True)
    subprocess.run(['sync'])
    t = time.monotonic()
    with open(src, 'rb') as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            name = os.path.join(out, hashlib.sha256(b).hexdigest())
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, b)
            os.fsync(fd)
            os.close(fd)
    dfd = os.open(out, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
    return time.monotonic() - t


DD_SCRIPT = r'''#!/bin/sh
# Sequential throughput of the second disk: 256 MiB written from RAM, then read back.
dd if=/dev/urandom of=/tmp/piece bs=1M count=16 2>/dev/null
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do cat /tmp/piece; done > /tmp/blob
rm /tmp/piece
sync
echo BENCH-DD-START
now() { cut -d' ' -f1 /proc/uptime | tr -d .; }  # centiseconds
t0=$(now)
dd if=/tmp/blob of=/dev/vdb bs=1M conv=fsync 2>/dev/null
t1=$(now)
echo 3 > /proc/sys/vm/drop_caches
t2=$(now)
dd if=/dev/vdb of=/dev/null bs=1M count=256 2>/dev/null
t3=$(now)
echo "BENCH-DD write_cs=$((t1 - t0)) read_cs=$((t3 - t2))"
'''

DD_RE = r'BENCH-DD write_cs=(\d+) read_cs=(\d+)'


def dd_rates(m):
    mib = 256
    return mib / (max(1, int(m.group(1))) / 100), mib / (max(1, int(m.group(2))) / 100)


def qemu_argv(b, iid):
    """The command line of the QEMU amid runs for instance `iid` (found by its pid file)."""
    with open(os.path.join(b.data, 'run', 'i', iid, 'qemu.pid')) as f:
        pid = int(f.read())
    with open('/proc/%d/cmdline' % pid, 'rb') as f:
        return [a.decode() for a in f.read().split(b'\0')[:-1]]


def raw_twin(argv, data_raw):
    """QemuGuest arguments (and memory) giving the raw-file guest what amid gave its guest: the
    CPU model, vCPUs, memory, and the second disk's virtio-blk options and iothread, with a raw
    file instead of the NBD node under it."""
    def opt(name):
        return argv[argv.index(name) + 1]
    devs = [json.loads(argv[i + 1]) for i, a in enumerate(argv[:-1])
            if a == '-device' and argv[i + 1].startswith('{')]
    disk = [d for d in devs if d.get('driver') == 'virtio-blk-pci' and 'bootindex' not in d][0]
    props = {k: v for k, v in disk.items() if k not in ('id', 'drive', 'serial')}
    args = ['-cpu', opt('-cpu'), '-smp', opt('-smp')]
    if 'iothread' in props:
        args += ['-object', json.dumps({'qom-type': 'iothread', 'id': props['iothread']})]
    # The last PCI slot: QemuGuest's boot disk keeps the lower one, so SeaBIOS boots from it.
    args += ['-blockdev', json.dumps({'driver': 'raw', 'node-name': 'data',
                                      'file': {'driver': 'file', 'filename': data_raw}}),
             '-device', json.dumps(dict(props, drive='data', addr='0x1f'))]
    return args, int(opt('-m').rstrip('M'))


def guest_disk(b, tmp, image, root_raw, reps):
    """4: sequential guest disk throughput over amid's NBD against the same QEMU opening a raw
    file directly (the same CPU model, vCPUs, memory and virtio-blk options, read from the
    command line amid gave its QEMU); `reps` rounds, the side that goes first alternating."""
    res = {'amid': [], 'raw': []}
    disk = os.path.join(tmp, 'raw-root.raw')
    shutil.copyfile(root_raw, disk)
    data = os.path.join(tmp, 'raw-data.raw')
    twin = None

    def amid_side():
        nonlocal twin
        iid, _ = b.run_to_running(
            image, UserData=DD_SCRIPT, InstanceType='t3.medium',
            BlockDeviceMappings=[{'DeviceName': '/dev/sdb',
                                  'Ebs': {'VolumeSize': 1, 'DeleteOnTermination': True}}])
        if twin is None:
            twin = raw_twin(qemu_argv(b, iid), data)
        m, _ = b.console_wait(iid, DD_RE)
        b.terminate(iid)
        return dd_rates(m)

    def raw_side(r):
        with open(data, 'wb') as f:
            f.truncate(0)
            f.truncate(GiB)
        imds = FakeImds(os.path.join(tmp, 'imds%d' % r), 'i-0bench', user_data=DD_SCRIPT)
        with QemuGuest(disk, os.path.join(tmp, 'rawvm%d' % r), imds=imds, memory_mb=twin[1],
                       extra_args=twin[0]) as vm:
            return dd_rates(vm.console.wait_for(DD_RE, timeout=600))

    for r in range(reps):
        # amid first in even rounds (the first gives the raw side its command line).
        for side in ('amid', 'raw') if r % 2 == 0 else ('raw', 'amid'):
            res[side].append(amid_side() if side == 'amid' else raw_side(r))
        if reps > 1:
            (aw, ar), (rw, rr) = res['amid'][-1], res['raw'][-1]
            print('  round %d: write amid %.1f, raw %.1f MiB/s; read amid %.1f, raw %.1f MiB/s'
                  % (r + 1, aw, rw, ar, rr), flush=True)
    aw, ar = median(x[0] for x in res['amid']), median(x[1] for x in res['amid'])
    rw, rr = median(x[0] for x in res['raw']), median(x[1] for x in res['raw'])
    print('guest sequential disk, 256 MiB%s: write amid %.1f MiB/s, raw file %.1f MiB/s '
          '(%.0f%%); read amid %.1f MiB/s, raw file %.1f MiB/s (%.0f%%) (target >= 70%%)'
          % (' (medians of %d)' % reps if reps > 1 else '', aw, rw, 100 * aw / rw, ar, rr,
             100 * ar / rr))


def main():
    tmp = tempfile.mkdtemp(prefix='amid-bench-inst-')
    b = None
    try:
        b = Bench(tmp)
        catalog_raw = os.path.join(ROOT, 'catalog', 'out', 'amid-busybox-x86_64.raw')
        if ONLY == 'disk':
            guest_disk(b, tmp, b.catalog()['ImageId'], catalog_raw, REPS)
            return
        small, big = make_disks(tmp, catalog_raw)
        img1 = b.import_image(small, 'bench-1g')
        img8 = b.import_image(big, 'bench-8g')
        b.ec2.get_waiter('image_available').wait(ImageIds=[img1, img8])
        root = b.catalog()['RootDeviceName']

        # 1 and 2: launch times.
        t1, t8, h1, h8 = [], [], [], []
        for r in range(REPS):
            iid, t = b.run_to_running(img1)
            t1.append(t)
            b.terminate(iid)
            iid, t = b.run_to_running(img8)
            t8.append(t)
            b.terminate(iid)
            h1.append(qemu_by_hand(tmp, small, 2 * r))
            h8.append(qemu_by_hand(tmp, big, 2 * r + 1))
        print('launch to running (median of %d): amid 1 GiB %.3f s, amid 8 GiB %.3f s, '
              'ratio 8/1 = %.2f (target <= 1.2)' % (REPS, median(t1), median(t8),
                                                    median(t8) / median(t1)))
        print('QEMU by hand on a qcow2 overlay: 1 GiB %.3f s, 8 GiB %.3f s; amid/by-hand = '
              '%.2f (1 GiB), %.2f (8 GiB) (target <= 1.5)'
              % (median(h1), median(h8), median(t1) / median(h1), median(t8) / median(h8)))

        # 3: CreateImage NoReboot after 1% of 8 GiB changed.
        changed_mib = 82
        ud = ('#!/bin/sh\ndd if=/dev/urandom of=/tmp/c bs=1M count=%d 2>/dev/null\n'
              'dd if=/tmp/c of=/dev/vda bs=1M seek=5000 conv=fsync 2>/dev/null\n'
              'echo BENCH-WROTE\n' % changed_mib)
        iid, _ = b.run_to_running(img8, UserData=ud)
        b.console_wait(iid, r'BENCH-WROTE')
        t = time.monotonic()
        im = b.ec2.create_image(InstanceId=iid, Name='bench-noreboot', NoReboot=True)['ImageId']
        while b.ec2.describe_images(ImageIds=[im])['Images'][0]['State'] != 'available':
            time.sleep(0.02)
        t_img = time.monotonic() - t
        b.terminate(iid)
        t_floor = hash_and_store(tmp, changed_mib << 20)
        print('CreateImage NoReboot, %d MiB of 8 GiB changed, to available: amid %.3f s; hash '
              'and store those bytes %.3f s; ratio %.2f (target <= 2)'
              % (changed_mib, t_img, t_floor, t_img / t_floor))

        guest_disk(b, tmp, img1, small, 1)
    finally:
        if b:
            b.close()
        subprocess.run(['pkill', '-9', '-f', tmp])  # the guests amid left running
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
