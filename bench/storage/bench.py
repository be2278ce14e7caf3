"""bench/storage: amid's block storage against what a user would pick instead, in one run.

Run by bench/storage/run.sh (which builds amid, installs the peers and makes the temporary
directory); see the usage there.  Everything is created under TMP and the processes started here
are stopped by id at the end.

Items (numbered as in the block storage issue):
  1 a 2 GiB ext4 image of real files from /usr, built with mke2fs -d (no mount)
  2 import: `amid import --data` (and through the daemon's EBS direct API) vs restic backup and
    borg create --chunker-params fixed,524288 --compression zstd,2
  3 incremental snapshot of a volume after 1% of its blocks changed, vs the full import
  4 export: `amid export --data` vs restic restore
  5 stored bytes after the import vs restic's repository
  6 NBD: sequential read/write, 4 KiB random read IOPS at QD 1 and 16, on a volume written
    first (its blocks in its top layer) and a volume made from the snapshot, vs nbdkit file
    (BENCH_ROUNDS rounds, each side in turn, medians: this shared machine's noise is larger
    than most differences)
  7 CreateVolume latency from a 1 GiB and a 16 GiB snapshot
"""
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AMID = os.path.join(ROOT, 'build', 'amid')
HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20
GIB = 1 << 30
BLOCK = 512 * 1024
IMAGE_BYTES = 2 * GIB
FILL_BYTES = 1600 * MIB  # file data copied into the image: it ends ~90% full

ROUNDS = int(os.environ.get('BENCH_ROUNDS', '3'))
FIO_SECONDS = int(os.environ.get('BENCH_FIO_SECONDS', '5'))
CREATE_CALLS = int(os.environ.get('BENCH_CREATE_CALLS', '40'))
# 'nbd': only item 6 (after one plain import of the image), for iterating on the NBD path.
ONLY = os.environ.get('BENCH_ONLY', '')


def log(msg):
    print(msg, flush=True)


class Procs:
    """Background processes started here, stopped by their own ids."""

    def __init__(self):
        self.procs = []

    def start(self, argv, logpath, env=None):
        f = open(logpath, 'ab')
        p = subprocess.Popen(argv, stdout=f, stderr=f, env=env)
        f.close()
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


PROCS = Procs()


def run(argv, env=None, check=True, stdout=subprocess.PIPE, input=None, timeout=3600):
    p = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, env=env, input=input,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError('%s failed (%d): %s' % (' '.join(argv), p.returncode,
                                                   p.stderr.decode(errors='replace')[-2000:]))
    return p


def timed(argv, env=None):
    """Runs argv; returns (wall seconds, CPU seconds of the child)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    run(argv, env=env, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def file_bytes(path):
    """Sum of the sizes of the regular files under path (directories not counted)."""
    total = 0
    for root, _, names in os.walk(path):
        for n in names:
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)
    # Let the file system settle (and discard) before the next timed run.
    os.sync()


class Cache:
    """Cold input for every timed run when the page cache can be dropped, else warm for all."""

    def __init__(self):
        self.cold = False
        try:
            os.sync()
            with open('/proc/sys/vm/drop_caches', 'w') as f:
                f.write('3\n')
            self.cold = True
        except OSError:
            pass

    def describe(self):
        return ('cold: page cache dropped (sync; echo 3 > drop_caches) before every timed run'
                if self.cold else
                'warm: drop_caches not writable, so every input is read once before its run')

    def prepare(self, *paths):
        os.sync()
        if self.cold:
            with open('/proc/sys/vm/drop_caches', 'w') as f:
                f.write('3\n')
            return
        for p in paths:
            if os.path.isdir(p):
                for root, _, names in os.walk(p):
                    for n in names:
                        with open(os.path.join(root, n), 'rb') as f:
                            while f.read(8 * MIB):
                                pass
            elif os.path.exists(p):
                with open(p, 'rb') as f:
                    while f.read(8 * MIB):
                        pass


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    def __init__(self, datadir, creds):
        self.datadir = datadir
        self.creds = creds
        self.port = free_port()
        self.endpoint = 'http://127.0.0.1:%d' % self.port
        self.proc = PROCS.start([AMID, 'serve', '--data', datadir, '--listen',
                                 '127.0.0.1:%d' % self.port, '--quiet'],
                                os.path.join(os.path.dirname(datadir), 'serve.log'))
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('amid serve exited')
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.sock = os.path.join(datadir, 'run', 'nbd.sock')
        while not os.path.exists(self.sock) and time.time() < deadline:
            time.sleep(0.05)
        self._ec2 = None

    def env(self):
        return dict(os.environ, AWS_ENDPOINT_URL=self.endpoint,
                    AWS_ACCESS_KEY_ID=self.creds['AccessKeyId'],
                    AWS_SECRET_ACCESS_KEY=self.creds['SecretAccessKey'],
                    AWS_DEFAULT_REGION='us-east-1')

    def ec2(self):
        if not self._ec2:
            import boto3
            import botocore.config
            os.environ['AWS_DATA_PATH'] = os.path.join(ROOT, 'tests', 'models')
            self._ec2 = boto3.client(
                'ec2', endpoint_url=self.endpoint, region_name='us-east-1',
                aws_access_key_id=self.creds['AccessKeyId'],
                aws_secret_access_key=self.creds['SecretAccessKey'],
                config=botocore.config.Config(retries={'max_attempts': 1}))
        return self._ec2

    def uri(self, export):
        return 'nbd+unix:///%s?socket=%s' % (export, self.sock)

    def stop(self):
        PROCS.stop(self.proc)

    def create_volume(self, size_gib, snapshot=None):
        kw = {'AvailabilityZone': 'us-east-1a', 'Size': size_gib}
        if snapshot:
            kw['SnapshotId'] = snapshot
        vid = self.ec2().create_volume(**kw)['VolumeId']
        self.wait_volume(vid)
        return vid

    def wait_volume(self, vid):
        deadline = time.time() + 120
        while time.time() < deadline:
            v = self.ec2().describe_volumes(VolumeIds=[vid])['Volumes'][0]
            if v['State'] == 'available':
                return
            time.sleep(0.01)
        raise RuntimeError('volume %s not available' % vid)

    def wait_snapshot(self, sid, poll=0.005):
        deadline = time.time() + 600
        while time.time() < deadline:
            s = self.ec2().describe_snapshots(SnapshotIds=[sid])['Snapshots'][0]
            if s['State'] == 'completed':
                return
            if s['State'] != 'pending':
                raise RuntimeError('snapshot %s: %s' % (sid, s))
            time.sleep(poll)
        raise RuntimeError('snapshot %s still pending' % sid)


def amid_init(datadir):
    p = run([AMID, 'init', '--data', datadir, '--format', 'json'])
    return json.loads(p.stdout)


def amid_import(path, datadir=None, env=None):
    argv = [AMID, 'import', path, '--no-progress', '--format', 'json']
    if datadir:
        argv += ['--data', datadir]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = run(argv, env=env)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return json.loads(p.stdout)['SnapshotId'], wall, cpu


class Table:
    def __init__(self):
        self.rows = []

    def add(self, item, amid, peer, ratio, target, met, note=''):
        self.rows.append((item, amid, peer, ratio, target, met, note))
        log('  %-44s amid %-16s peer %-22s ratio %-7s %s %s' % (
            item, amid, peer, ratio, target, '' if met is None else ('MET' if met else 'MISSED')))

    def print(self):
        head = ('item', 'amid', 'peer', 'ratio', 'target', 'met')
        ordered = sorted(self.rows, key=lambda r: int(r[0].split('.')[0]))
        rows = [head] + [r[:5] + ('-' if r[5] is None else 'yes' if r[5] else 'NO',)
                         for r in ordered]
        w = [max(len(str(r[i])) for r in rows) for i in range(6)]
        line = '+'.join('-' * (x + 2) for x in w)
        log('')
        log(line)
        for k, r in enumerate(rows):
            log('|'.join(' %-*s ' % (w[i], r[i]) for i in range(6)))
            if k == 0:
                log(line)
        log(line)
        notes = [(r[0], r[6]) for r in ordered if r[6]]
        for item, note in notes:
            log('  %s: %s' % (item, note))


def mibs(seconds, nbytes=IMAGE_BYTES):
    return nbytes / MIB / seconds


def fmt_rate(v):
    return '%.0f MiB/s' % v


def median(xs):
    return statistics.median(xs)


# ---- 1: the image ----

def make_image(tmp):
    tree = os.path.join(tmp, 'tree')
    img = os.path.join(tmp, 'disk.img')
    out = run(['/usr/bin/python3', os.path.join(HERE, 'mkimage.py'), tree, str(FILL_BYTES)])
    run(['mke2fs', '-q', '-t', 'ext4', '-F', '-N', '200000', '-d', tree, img, '2G'])
    rmtree(tree)
    st = os.stat(img)
    log('1. image: %s, %d bytes, %.0f MiB allocated; files: %s' % (
        img, st.st_size, st.st_blocks * 512 / MIB, out.stdout.decode().strip()))
    return img


# ---- 2, 4, 5: import, export and stored bytes ----

def peers_env(tmp):
    return dict(os.environ, RESTIC_PASSWORD='bench-storage',
                RESTIC_CACHE_DIR=os.path.join(tmp, 'restic-cache'),
                BORG_BASE_DIR=os.path.join(tmp, 'borg-base'),
                BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK='yes',
                BORG_RELOCATED_REPO_ACCESS_IS_OK='yes', BORG_PASSPHRASE='')


def bench_import(tmp, img, cache, table):
    env = peers_env(tmp)
    times = {'amid': [], 'restic': [], 'borg': [], 'api': []}
    cpu = {k: [] for k in times}
    keep = {}
    later = []
    log('2. import (%d rounds, interleaved; input %s)' % (ROUNDS, 'cold' if cache.cold else 'warm'))
    for r in range(ROUNDS):
        last = r == ROUNDS - 1
        # amid, direct: a fresh data directory each round (a second import would deduplicate).
        d = os.path.join(tmp, 'amid-%d' % r)
        creds = amid_init(os.path.join(d, 'data'))
        cache.prepare(img)
        sid, wall, c = amid_import(img, datadir=os.path.join(d, 'data'))
        times['amid'].append(wall)
        cpu['amid'].append(c)
        log('   round %d: amid import --data  %6.2f s  (%.1f CPU s)' % (r + 1, wall, c))
        if last:
            keep['amid'] = (d, creds, sid)
        else:
            later.append(d)
        # restic: a fresh repository on the same disk.
        repo = os.path.join(tmp, 'restic-%d' % r)
        run(['restic', 'init', '-q', '--repo', repo], env=env)
        cache.prepare(img)
        wall, c = timed(['restic', 'backup', '-q', '--repo', repo, img], env=env)
        times['restic'].append(wall)
        cpu['restic'].append(c)
        log('   round %d: restic backup        %6.2f s  (%.1f CPU s)' % (r + 1, wall, c))
        if last:
            keep['restic'] = repo
        else:
            later.append(repo)
        # borg: fixed 512 KiB chunks like amid's blocks, zstd level 2 like amid's store, holes
        # skipped like amid's import, and no encryption (amid's chunks are clear too).
        repo = os.path.join(tmp, 'borg-%d' % r)
        run(['borg', 'init', '-e', 'none', repo], env=env)
        cache.prepare(img)
        wall, c = timed(['borg', 'create', '--chunker-params', 'fixed,524288', '--compression',
                         'zstd,2', '--sparse', repo + '::bench', img], env=env)
        times['borg'].append(wall)
        cpu['borg'].append(c)
        log('   round %d: borg create          %6.2f s  (%.1f CPU s)' % (r + 1, wall, c))
        if last:
            keep['borg'] = repo
        else:
            later.append(repo)
        # amid through the daemon's EBS direct API (PutSnapshotBlock over HTTP).
        d = os.path.join(tmp, 'api-%d' % r)
        creds_api = amid_init(os.path.join(d, 'data'))
        dm = Daemon(os.path.join(d, 'data'), creds_api)
        try:
            cache.prepare(img)
            _, wall, c = amid_import(img, env=dm.env())
        finally:
            dm.stop()
        times['api'].append(wall)
        cpu['api'].append(c)
        log('   round %d: amid import (API)    %6.2f s  (%.1f CPU s of the CLI)' % (r + 1, wall, c))
        later.append(d)
    # Deleted only now: ext4 without a journal (this machine's root) skips inodes freed in the
    # last minute when it allocates new ones, which would slow whoever creates files next.
    for path in later:
        rmtree(path)
    m = {k: median(v) for k, v in times.items()}
    mc = {k: median(v) for k, v in cpu.items()}
    a = mibs(m['amid'])
    for peer, target in (('restic', 3.0), ('borg', 2.0)):
        p = mibs(m[peer])
        table.add('2. import vs %s' % ('restic backup' if peer == 'restic' else
                                       'borg create (fixed 512K, zstd,2)'),
                  '%s (%.2f s)' % (fmt_rate(a), m['amid']), '%s (%.2f s)' % (fmt_rate(p), m[peer]),
                  '%.2fx' % (a / p), '>= %.0fx' % target, a / p >= target,
                  'medians of %d rounds; CPU s: amid %.1f, %s %.1f' % (ROUNDS, mc['amid'], peer,
                                                                      mc[peer]))
    api = mibs(m['api'])
    table.add('2. import through the API vs restic', '%s (%.2f s)' % (fmt_rate(api), m['api']),
              '%s (%.2f s)' % (fmt_rate(mibs(m['restic'])), m['restic']),
              '%.2fx' % (api / mibs(m['restic'])), 'report', None,
              'PutSnapshotBlock over HTTP to a daemon, CLI CPU %.1f s' % mc['api'])
    return keep, m


def bench_stored(keep, table):
    d, _, _ = keep['amid']
    p = run([AMID, 'du', '--data', os.path.join(d, 'data'), '--format', 'json'])
    amid_bytes = json.loads(p.stdout)['Totals']['StoreBytes']
    restic_bytes = file_bytes(keep['restic'])
    borg_bytes = file_bytes(keep['borg'])
    ratio = amid_bytes / restic_bytes
    table.add('5. stored bytes vs restic repository', '%.1f MiB' % (amid_bytes / MIB),
              '%.1f MiB' % (restic_bytes / MIB), '%.3f' % ratio, '<= 1.1', ratio <= 1.1,
              'amid du StoreBytes vs the files of the restic repository; borg (zstd,2): '
              '%.1f MiB' % (borg_bytes / MIB))


def bench_export(tmp, keep, img, cache, table):
    env = peers_env(tmp)
    d, _, sid = keep['amid']
    data = os.path.join(d, 'data')
    a_times, r_times, r_nosync = [], [], []
    log('4. export (%d rounds, interleaved)' % ROUNDS)
    out = os.path.join(tmp, 'export.raw')
    rdir = os.path.join(tmp, 'restore')
    for r in range(ROUNDS):
        cache.prepare(os.path.join(data, 'regions'))
        wall, _ = timed([AMID, 'export', sid, out, '--data', data, '--no-progress'])
        a_times.append(wall)
        log('   round %d: amid export --data   %6.2f s' % (r + 1, wall))
        if r == ROUNDS - 1:
            if run(['cmp', out, img], check=False).returncode != 0:
                raise RuntimeError('the exported image differs from the imported one')
        os.unlink(out)
        os.sync()
        cache.prepare(keep['restic'])
        t0 = time.monotonic()
        run(['restic', 'restore', 'latest', '-q', '--repo', keep['restic'], '--target', rdir],
            env=env, stdout=subprocess.DEVNULL)
        t1 = time.monotonic()
        # amid export syncs its image before renaming it into place; restic leaves it to the
        # page cache.  The peer's figure includes syncing the restored file, like amid's.
        restored = [os.path.join(root, n) for root, _, names in os.walk(rdir) for n in names]
        run(['sync', *restored])
        t2 = time.monotonic()
        r_times.append(t2 - t0)
        r_nosync.append(t1 - t0)
        log('   round %d: restic restore       %6.2f s  (+ sync: %.2f s)' % (r + 1, t1 - t0,
                                                                           t2 - t0))
        rmtree(rdir)
    a, p = mibs(median(a_times)), mibs(median(r_times))
    table.add('4. export vs restic restore + sync', '%s (%.2f s)' % (fmt_rate(a), median(a_times)),
              '%s (%.2f s)' % (fmt_rate(p), median(r_times)), '%.2fx' % (a / p), '>= 2x',
              a / p >= 2,
              'medians of %d rounds, page cache dropped before each; restic restore without the '
              'sync: %s (%.2f s), ratio %.2fx; amid export checked bit-exact with cmp' % (
                  ROUNDS, fmt_rate(mibs(median(r_nosync))), median(r_nosync),
                  a / mibs(median(r_nosync))))


# ---- 3: incremental snapshot ----

def write_random_blocks(uri, nblocks, count, seed):
    import nbd
    rnd = random.Random(seed)
    picks = rnd.sample(range(nblocks), count)
    h = nbd.NBD()
    h.connect_uri(uri)
    for idx in picks:
        h.pwrite(os.urandom(BLOCK), idx * BLOCK)
    h.flush()
    h.shutdown()
    del h
    return picks


def bench_incremental(dm, sid, import_s, table):
    nblocks = IMAGE_BYTES // BLOCK
    count = nblocks // 100
    vid = dm.create_volume(2, sid)
    write_random_blocks(dm.uri(vid), nblocks, count, 1)
    t0 = time.monotonic()
    sid2 = dm.ec2().create_snapshot(VolumeId=vid)['SnapshotId']
    dm.wait_snapshot(sid2)
    t = time.monotonic() - t0
    ratio = t / import_s
    log('3. incremental snapshot: %d random 512 KiB blocks of %d rewritten over NBD' % (count,
                                                                                       nblocks))
    table.add('3. incremental snapshot (1% changed)', '%.3f s' % t,
              '%.2f s (full import)' % import_s, '%.1f%%' % (100 * ratio), '<= 5%', ratio <= 0.05,
              'CreateSnapshot until DescribeSnapshots says completed (polled every 5 ms)')
    return vid, sid2


# ---- 6: NBD ----

def fio_iops(uri, qd):
    p = run(['fio', '--name=randread', '--ioengine=nbd', '--uri=' + uri, '--rw=randread',
             '--bs=4k', '--iodepth=%d' % qd, '--time_based', '--runtime=%d' % FIO_SECONDS,
             '--ramp_time=1', '--randrepeat=1', '--norandommap', '--output-format=json'])
    txt = p.stdout.decode()
    return json.loads(txt[txt.index('{'):])['jobs'][0]['read']['iops']


def seq_read(uri):
    t0 = time.monotonic()
    run(['nbdcopy', uri, 'null:'])
    return mibs(time.monotonic() - t0)


def seq_write(img, uri):
    # Every writer starts from the same memory: the page cache dropped (what earlier steps
    # cached is freed), then the input read back in.  On this VM a page the guest never touched
    # costs a host fault on first use, so a writer that follows a step which filled memory with
    # cache (amid's decoded-chunk disk tier after reading a 2 GiB volume, say) otherwise pays
    # for every new page-cache page, and one that follows a deleted file does not: 3x apart.
    os.sync()
    try:
        with open('/proc/sys/vm/drop_caches', 'w') as f:
            f.write('3\n')
    except OSError:
        pass
    run(['cat', img], stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    run(['nbdcopy', '--flush', img, uri])
    return mibs(time.monotonic() - t0)


def start_nbdkit(tmp):
    """nbdkit file on a fresh raw file of the image's size, on a Unix socket."""
    raw = os.path.join(tmp, 'nbdkit.raw')
    if os.path.exists(raw):
        os.unlink(raw)
    with open(raw, 'wb') as f:
        f.truncate(IMAGE_BYTES)
    ksock = os.path.join(tmp, 'nbdkit.sock')
    if os.path.exists(ksock):
        os.unlink(ksock)  # the last round's: it would look ready before nbdkit listens
    kp = PROCS.start(['nbdkit', '--foreground', '--unix', ksock, 'file', 'file=' + raw],
                     os.path.join(tmp, 'nbdkit.log'))
    deadline = time.time() + 20
    while not os.path.exists(ksock) and time.time() < deadline:
        time.sleep(0.05)
    return kp, raw, 'nbd+unix:///?socket=' + ksock


def bench_nbd(tmp, dm, sid, img, table):
    log('6. NBD (%d rounds, interleaved, medians; inputs warm in the page cache; nbdcopy '
        'defaults plus --flush for writes; page cache dropped and the input re-read before '
        'each write)' % ROUNDS)
    res = {}

    def add(key, v):
        res.setdefault(key, []).append(v)

    run(['cat', img], stdout=subprocess.DEVNULL)
    # A volume made from the snapshot: every block read through the base map's chunks.
    vb = dm.create_volume(2, sid)
    for r in range(ROUNDS):
        kp, raw, kuri = start_nbdkit(tmp)
        try:
            add(('write', 'nbdkit'), seq_write(img, kuri))
            seq_read(kuri)  # warm
            add(('read', 'nbdkit'), seq_read(kuri))
            for qd in (1, 16):
                add(('qd%d' % qd, 'nbdkit'), fio_iops(kuri, qd))
        finally:
            PROCS.stop(kp)
            os.unlink(raw)
        # A volume written first: every block in its top layer.
        va = dm.create_volume(2)
        add(('write', 'top'), seq_write(img, dm.uri(va)))
        seq_read(dm.uri(va))
        add(('read', 'top'), seq_read(dm.uri(va)))
        for qd in (1, 16):
            add(('qd%d' % qd, 'top'), fio_iops(dm.uri(va), qd))
        dm.ec2().delete_volume(VolumeId=va)
        seq_read(dm.uri(vb))
        add(('read', 'snap'), seq_read(dm.uri(vb)))
        for qd in (1, 16):
            add(('qd%d' % qd, 'snap'), fio_iops(dm.uri(vb), qd))
        # Written over: a whole-image copy on top of the snapshot's blocks.
        vc = dm.create_volume(2, sid)
        add(('write', 'snap'), seq_write(img, dm.uri(vc)))
        dm.ec2().delete_volume(VolumeId=vc)
        log('   round %d: ' % (r + 1) + ', '.join(
            '%s %s %.0f' % (m, kind, res[(m, kind)][-1]) for kind in ('nbdkit', 'top', 'snap')
            for m in ('read', 'write', 'qd1', 'qd16')))
    dm.ec2().delete_volume(VolumeId=vb)
    names = {'read': 'sequential read', 'write': 'sequential write', 'qd1': '4K random read QD1',
             'qd16': '4K random read QD16'}
    for kind, label in (('top', 'volume, top layer'), ('snap', 'volume from snapshot')):
        for m in ('read', 'write', 'qd1', 'qd16'):
            a, k = median(res[(m, kind)]), median(res[(m, 'nbdkit')])
            unit = (lambda v: fmt_rate(v)) if m in ('read', 'write') else (
                lambda v: '%.0f IOPS' % v)
            table.add('6. NBD %s, %s' % (names[m], label), unit(a), unit(k) + ' (nbdkit)',
                      '%.0f%%' % (100 * a / k), '>= 70%', a / k >= 0.7)


# ---- 7: CreateVolume latency ----

def bench_create_volume(tmp, dm, img, table):
    data = dm.datadir
    small = os.path.join(tmp, 'one.raw')
    big = os.path.join(tmp, 'sixteen.raw')
    # 1 GiB of the image; 16 GiB sparse with 64 MiB of the image at each end.
    with open(img, 'rb') as src, open(small, 'wb') as dst:
        for _ in range(GIB // (8 * MIB)):
            dst.write(src.read(8 * MIB))
    with open(img, 'rb') as src, open(big, 'wb') as dst:
        dst.truncate(16 * GIB)
        head = src.read(64 * MIB)
        dst.write(head)
        src.seek(IMAGE_BYTES - 64 * MIB)
        dst.seek(16 * GIB - 64 * MIB)
        dst.write(src.read(64 * MIB))
    s1, _, _ = amid_import(small, datadir=data)
    s16, _, _ = amid_import(big, datadir=data)
    os.unlink(small)
    os.unlink(big)
    ec2 = dm.ec2()
    lat = {1: [], 16: []}
    vols = []
    for i in range(CREATE_CALLS):
        for size, sid in ((1, s1), (16, s16)) if i % 2 == 0 else ((16, s16), (1, s1)):
            t0 = time.monotonic()
            vid = ec2.create_volume(AvailabilityZone='us-east-1a', Size=size,
                                    SnapshotId=sid)['VolumeId']
            lat[size].append(time.monotonic() - t0)
            vols.append(vid)
    for v in vols:
        ec2.delete_volume(VolumeId=v)
    m1, m16 = median(lat[1]) * 1000, median(lat[16]) * 1000
    table.add('7. CreateVolume latency, 16 vs 1 GiB snapshot', '%.2f ms (16 GiB)' % m16,
              '%.2f ms (1 GiB)' % m1, '%.2f' % (m16 / m1), '<= 1.2', m16 / m1 <= 1.2,
              'median of %d calls each through boto3, alternating' % CREATE_CALLS)


def load():
    """The machine's load: others' work on this shared box moves every figure."""
    with open('/proc/loadavg') as f:
        la = ' '.join(f.read().split()[:3])
    psi = []
    for kind in ('cpu', 'io'):
        try:
            with open('/proc/pressure/' + kind) as f:
                psi.append('%s %s' % (kind, f.readline().split()[2].split('=')[1]))
        except OSError:
            pass
    return 'load average %s%s' % (la, '; pressure (some, avg60) ' + ', '.join(psi) if psi else '')


def main():
    # run.sh stops us with SIGTERM on an interrupt: unwind so the daemons are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = sys.argv[1]
    t_start = time.monotonic()
    cache = Cache()
    log('bench/storage in %s; %d rounds; %d CPUs; %s' % (tmp, ROUNDS, os.cpu_count(),
                                                          cache.describe()))
    log('at start: ' + load())
    table = Table()
    try:
        img = make_image(tmp)
        if ONLY == 'nbd':
            d = os.path.join(tmp, 'amid-nbd')
            creds = amid_init(os.path.join(d, 'data'))
            sid, _, _ = amid_import(img, datadir=os.path.join(d, 'data'))
            dm = Daemon(os.path.join(d, 'data'), creds)
            bench_nbd(tmp, dm, sid, img, table)
            dm.stop()
            return
        keep, medians = bench_import(tmp, img, cache, table)
        bench_stored(keep, table)
        bench_export(tmp, keep, img, cache, table)
        d, creds, sid = keep['amid']
        dm = Daemon(os.path.join(d, 'data'), creds)
        bench_incremental(dm, sid, medians['amid'], table)
        bench_nbd(tmp, dm, sid, img, table)
        bench_create_volume(tmp, dm, img, table)
        dm.stop()
    finally:
        PROCS.stop_all()
        table.print()
        log('at end: ' + load())
        log('bench/storage took %.0f s' % (time.monotonic() - t_start))


if __name__ == '__main__':
    main()
