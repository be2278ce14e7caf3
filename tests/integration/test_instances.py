"""Instances: real QEMU guests (TCG) booted from the system catalogue image, driven through boto3
and the AWS CLI as users drive EC2.

The catalogue guest (catalog/README.md) prints AMID-BOOT/AMID-MARKER lines on its serial
console, runs `#!` user data from the metadata service once per instance id and mounts
/dev/vda2 at /data, so every check here is one a user could make from GetConsoleOutput.

Guests are expensive (a TCG boot is several seconds of a core), so one guest serves several
tests: the "seed" (user data, images with and without reboot, launches of both images), the
"worker" (block device mappings, console paging, attributes, stop/start, hot-plug, terminate with
DeleteOnTermination) and the "torn" guest (NoReboot images and CreateSnapshots of a guest
writing two disks).  Everything launched is terminated by the module's `fleet`.
"""
import base64
import json
import os
import signal
import time
import uuid

import botocore.exceptions
import pytest

from conftest import Amid, run_amid

W = {'Delay': 1, 'MaxAttempts': 120}
BOOT_TIMEOUT = 180  # seconds to "AMID-BOOT: ready" under TCG on a loaded machine
EBS_BLOCK = 512 * 1024


def code_of(e):
    return e.value.response['Error']['Code']


def uid():
    return uuid.uuid4().hex[:12]


def wait(client, name, **kw):
    client.get_waiter(name).wait(WaiterConfig=W, **kw)


def describe(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])['Reservations'][0]['Instances'][0]


def console(ec2, iid, latest=False):
    """The console output decoded by boto3 ('' when there is none yet)."""
    return ec2.get_console_output(InstanceId=iid, Latest=latest).get('Output', '')


def wait_console(ec2, iid, *texts, timeout=BOOT_TIMEOUT):
    """Waits until both ends of the console (first and last 64 KiB) hold every text."""
    deadline = time.time() + timeout
    out = ''
    while True:
        out = console(ec2, iid) + '\n' + console(ec2, iid, latest=True)
        if all(t in out for t in texts):
            return out
        if time.time() > deadline:
            raise AssertionError('%s: the console lacks %r after %ds; it ends with:\n%s'
                                 % (iid, [t for t in texts if t not in out], timeout,
                                    out[-3000:]))
        time.sleep(0.5)


def volumes_of(ec2, iid):
    """The instance's volumes by device name."""
    vols = ec2.describe_volumes(Filters=[{'Name': 'attachment.instance-id',
                                          'Values': [iid]}])['Volumes']
    return {v['Attachments'][0]['Device']: v for v in vols}


def qemu_pids(iid):
    pids = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                cmd = f.read()
        except OSError:
            continue
        if b'qemu-system' in cmd.split(b'\0')[0] and iid.encode() in cmd:
            pids.append(int(pid))
    return pids


class Fleet:
    """Launches instances and terminates whatever is left of them at the end."""

    def __init__(self, ec2):
        self.ec2 = ec2
        self.ids = []

    def run(self, **kw):
        kw.setdefault('MinCount', 1)
        kw.setdefault('MaxCount', 1)
        kw.setdefault('InstanceType', 't2.micro')
        r = self.ec2.run_instances(**kw)
        self.ids += [i['InstanceId'] for i in r['Instances']]
        return r

    def run_one(self, **kw):
        return self.run(**kw)['Instances'][0]['InstanceId']

    def kill(self, ids):
        """Terminates at once (no guest shutdown): frees the CPU for the next guests."""
        self.ec2.terminate_instances(InstanceIds=list(ids), Force=True)

    def cleanup(self):
        live = []
        for iid in self.ids:
            try:
                st = describe(self.ec2, iid)['State']['Name']
            except botocore.exceptions.ClientError:
                continue
            if st != 'terminated':
                live.append(iid)
        for iid in live:
            try:
                self.ec2.modify_instance_attribute(InstanceId=iid,
                                                   DisableApiTermination={'Value': False})
            except botocore.exceptions.ClientError:
                pass
        if live:
            self.ec2.terminate_instances(InstanceIds=live, Force=True)
            wait(self.ec2, 'instance_terminated', InstanceIds=live)


@pytest.fixture(scope='module')
def fleet(ec2):
    f = Fleet(ec2)
    yield f
    f.cleanup()


@pytest.fixture(scope='module')
def catalogue(amid):
    """The system catalogue image's id in us-east-1 (imported once per data directory)."""
    out = json.loads(run_amid('catalog', 'import', '--data', amid.datadir,
                              '--format', 'json').stdout)
    return [i for i in out['Images'] if i['Region'] == 'us-east-1'][0]['ImageId']


@pytest.fixture(scope='module')
def root_device(ec2, catalogue):
    return ec2.describe_images(ImageIds=[catalogue])['Images'][0]['RootDeviceName']


# ---- 1. the seed workflow ----

@pytest.fixture(scope='module')
def seed(ec2, catalogue, fleet):
    """A running guest whose user data left a marker on /data."""
    marker = 'seed-' + uid()
    ud = ('#!/bin/sh\necho "seed user data for %s"\necho %s > /data/marker-seed\nsync\n'
          % (marker, marker))
    iid = fleet.run_one(ImageId=catalogue, UserData=ud, TagSpecifications=[
        {'ResourceType': 'instance', 'Tags': [{'Key': 'Name', 'Value': marker}]},
        {'ResourceType': 'volume', 'Tags': [{'Key': 'owner', 'Value': marker}]}])
    return {'id': iid, 'marker': marker}


def test_seed_workflow(ec2, catalogue, root_device, fleet, seed):
    iid, marker = seed['id'], seed['marker']
    wait(ec2, 'instance_running', InstanceIds=[iid])
    inst = describe(ec2, iid)
    assert inst['State'] == {'Code': 16, 'Name': 'running'}
    assert inst['ImageId'] == catalogue and inst['InstanceType'] == 't2.micro'
    assert {'Key': 'Name', 'Value': marker} in inst['Tags']
    assert [b['DeviceName'] for b in inst['BlockDeviceMappings']] == [root_device]
    root_vol = inst['BlockDeviceMappings'][0]['Ebs']['VolumeId']
    vol = ec2.describe_volumes(VolumeIds=[root_vol])['Volumes'][0]
    assert {'Key': 'owner', 'Value': marker} in vol['Tags'] and vol['State'] == 'in-use'

    out = wait_console(ec2, iid, 'AMID-BOOT: ready')
    assert 'AMID-INSTANCE-ID: %s' % iid in out, out
    assert 'AMID-USERDATA: begin' in out and 'seed user data for %s' % marker in out, out
    assert 'AMID-USERDATA: end rc=0' in out, out

    # A crash-consistent image of the running guest, then one with a clean reboot.
    tags = [{'ResourceType': 'image', 'Tags': [{'Key': 'kind', 'Value': 'seed-image'}]},
            {'ResourceType': 'snapshot', 'Tags': [{'Key': 'from', 'Value': marker}]}]
    img_hot = ec2.create_image(InstanceId=iid, Name='seed-noreboot-' + marker, NoReboot=True,
                               Description='hot', TagSpecifications=tags)['ImageId']
    img_cold = ec2.create_image(InstanceId=iid, Name='seed-reboot-' + marker,
                                TagSpecifications=tags)['ImageId']
    wait(ec2, 'image_available', ImageIds=[img_hot, img_cold])

    # The reboot image rebooted the guest: a fresh console, user data not run again.
    assert describe(ec2, iid)['State']['Name'] == 'running'
    out = wait_console(ec2, iid, 'AMID-BOOT: ready')
    assert 'AMID-BOOT: start' in out
    assert 'AMID-USERDATA: skipped (already ran for %s)' % iid in out, out
    assert 'AMID-MARKER: %s' % marker in out, out
    assert 'seed user data for' not in out, out

    for img, name in ((img_hot, 'seed-noreboot-'), (img_cold, 'seed-reboot-')):
        im = ec2.describe_images(ImageIds=[img])['Images'][0]
        assert im['State'] == 'available' and im['Name'] == name + marker
        assert im.get('SourceInstanceId') == iid, im
        assert im['Tags'] == [{'Key': 'kind', 'Value': 'seed-image'}]
        assert im['RootDeviceName'] == root_device
        assert [b['DeviceName'] for b in im['BlockDeviceMappings']] == [root_device]
        ebs = im['BlockDeviceMappings'][0]['Ebs']
        snap = ec2.describe_snapshots(SnapshotIds=[ebs['SnapshotId']])['Snapshots'][0]
        assert snap['State'] == 'completed' and snap['VolumeId'] == root_vol
        assert {'Key': 'from', 'Value': marker} in snap.get('Tags', []), snap
        got = ec2.describe_images(Owners=['self'], Filters=[
            {'Name': 'source-instance-id', 'Values': [iid]}])['Images']
        assert img in [i['ImageId'] for i in got]

    # Each image boots with the data the seed wrote.
    b1 = fleet.run_one(ImageId=img_hot)
    b2 = fleet.run_one(ImageId=img_cold)
    wait(ec2, 'instance_running', InstanceIds=[b1, b2])
    for b, img in ((b1, img_hot), (b2, img_cold)):
        assert describe(ec2, b)['ImageId'] == img
        out = wait_console(ec2, b, 'AMID-BOOT: ready')
        assert 'AMID-MARKER: %s' % marker in out, out
        assert 'AMID-INSTANCE-ID: %s' % b in out, out
    fleet.kill([b1, b2])


def test_instance_status(ec2, seed):
    iid = seed['id']
    wait(ec2, 'instance_status_ok', InstanceIds=[iid])
    st = ec2.describe_instance_status(InstanceIds=[iid])['InstanceStatuses']
    assert len(st) == 1 and st[0]['InstanceId'] == iid
    assert st[0]['InstanceState']['Name'] == 'running'
    assert st[0]['InstanceStatus']['Status'] == 'ok'
    assert st[0]['SystemStatus']['Status'] == 'ok'
    assert st[0]['AvailabilityZone'] == describe(ec2, iid)['Placement']['AvailabilityZone']
    got = ec2.describe_instance_status(Filters=[
        {'Name': 'instance-status.status', 'Values': ['ok']}])['InstanceStatuses']
    assert iid in [s['InstanceId'] for s in got]


def wait_new_boot(ec2, iid, before, timeout=BOOT_TIMEOUT):
    """Waits for a boot that began after `before` (the console then) to be ready; returns its
    part of the console."""
    n = before.count('AMID-BOOT: start')
    deadline = time.time() + timeout
    out = ''
    while time.time() < deadline:
        out = console(ec2, iid)
        fresh = out.count('AMID-BOOT: start') > n or not out.startswith(before[:200])
        boot = out[out.rfind('AMID-BOOT: start'):]
        if fresh and 'AMID-BOOT: ready' in boot:
            return boot
        time.sleep(0.5)
    raise AssertionError('%s: no new boot after %ds:\n%s' % (iid, timeout, out[-3000:]))


def test_metadata_options_and_reboot(ec2, seed):
    iid = seed['id']
    wait_console(ec2, iid, 'AMID-BOOT: ready')
    r = ec2.modify_instance_metadata_options(InstanceId=iid, HttpTokens='required',
                                             HttpPutResponseHopLimit=2)
    assert r['InstanceId'] == iid
    assert r['InstanceMetadataOptions']['HttpTokens'] == 'required'
    assert r['InstanceMetadataOptions']['HttpPutResponseHopLimit'] == 2
    mo = describe(ec2, iid)['MetadataOptions']
    assert (mo['HttpTokens'], mo['HttpPutResponseHopLimit'], mo['HttpEndpoint']) == \
        ('required', 2, 'enabled')
    got = ec2.describe_instances(Filters=[{'Name': 'metadata-options.http-tokens',
                                           'Values': ['required']}])
    assert iid in ids_of(got)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_instance_metadata_options(InstanceId=iid, HttpPutResponseHopLimit=65)
    assert code_of(e) == 'InvalidParameterValue'
    # With the endpoint off the rebooted guest finds no metadata service.
    ec2.modify_instance_metadata_options(InstanceId=iid, HttpEndpoint='disabled')
    try:
        before = console(ec2, iid)
        ec2.reboot_instances(InstanceIds=[iid])
        boot = wait_new_boot(ec2, iid, before)
        assert 'AMID-BOOT: imds none' in boot, boot
        assert 'AMID-MARKER: %s' % seed['marker'] in boot, boot
        assert describe(ec2, iid)['State']['Name'] == 'running'
    finally:
        ec2.modify_instance_metadata_options(InstanceId=iid, HttpEndpoint='enabled',
                                             HttpTokens='optional', HttpPutResponseHopLimit=1)
    # Back on: the next boot (IMDSv2) finds it again, and user data does not run twice.
    before = console(ec2, iid)
    ec2.reboot_instances(InstanceIds=[iid])
    boot = wait_new_boot(ec2, iid, before)
    assert 'AMID-BOOT: imds v2' in boot and 'AMID-INSTANCE-ID: %s' % iid in boot, boot
    assert 'AMID-USERDATA: skipped (already ran for %s)' % iid in boot, boot


def test_guest_initiated_shutdown(ec2, catalogue, root_device, fleet):
    """`poweroff` in the guest stops the instance, or terminates it when its
    InstanceInitiatedShutdownBehavior says so (its volumes then go as on TerminateInstances)."""
    ud = '#!/bin/sh\n(sleep 2; echo "powering off"; poweroff) </dev/null >/dev/console 2>&1 &\n'
    stop = fleet.run_one(ImageId=catalogue, UserData=ud)
    term = fleet.run_one(ImageId=catalogue, UserData=ud,
                         InstanceInitiatedShutdownBehavior='terminate',
                         BlockDeviceMappings=[{'DeviceName': '/dev/sdb',
                                               'Ebs': {'VolumeSize': 1,
                                                       'DeleteOnTermination': False}}])
    kept = volumes_of(ec2, term)['/dev/sdb']['VolumeId']
    root = volumes_of(ec2, term)[root_device]['VolumeId']
    wait(ec2, 'instance_running', InstanceIds=[stop, term])
    wait(ec2, 'instance_stopped', InstanceIds=[stop])
    wait(ec2, 'instance_terminated', InstanceIds=[term])
    for iid in (stop, term):
        inst = describe(ec2, iid)
        assert inst['StateReason']['Code'] == 'Client.InstanceInitiatedShutdown', inst
        out = console(ec2, iid, latest=True)
        assert 'powering off' in out and 'AMID-BOOT: shutdown' in out, out[-2000:]
    assert all(v['State'] == 'in-use' for v in volumes_of(ec2, stop).values())
    v = ec2.describe_volumes(VolumeIds=[kept])['Volumes'][0]
    assert v['State'] == 'available'
    ec2.delete_volume(VolumeId=kept)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_volumes(VolumeIds=[root])
    assert code_of(e) == 'InvalidVolume.NotFound'


# ---- 2, 3, 5, 6. the worker: block devices, console, attributes, stop/start, hot plug ----

FILLER = 'x' * 64
# Prints the guest's virtio disks whenever they change (hot plug made visible).
DISK_WATCHER = r'''cat > /run/disks.sh <<'EOF'
#!/bin/sh
old=""
while :; do
  now=$(cd /sys/block && echo vd*)
  if [ "$now" != "$old" ]; then printf '\nDISKS-NOW: %s\n' "$now"; old=$now; fi
  usleep 300000
done
EOF
chmod 0755 /run/disks.sh
/run/disks.sh </dev/null >/dev/console 2>&1 &
'''


def guest_disks(ec2, iid):
    """The disks the guest saw last (its shell prompt may precede a line)."""
    lines = [x[x.find('DISKS-NOW: ') + len('DISKS-NOW: '):]
             for x in console(ec2, iid, latest=True).splitlines() if 'DISKS-NOW: ' in x]
    return lines[-1].split() if lines else None


def wait_guest_disks(ec2, iid, want, timeout=30):
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = guest_disks(ec2, iid)
        if got == want:
            return
        time.sleep(0.5)
    raise AssertionError('%s: the guest sees disks %s, not %s' % (iid, got, want))


@pytest.fixture(scope='module')
def worker(ec2, catalogue, root_device, fleet):
    """A guest with a grown root of another type, an extra kept volume, and user data that
    leaves a marker and prints more than GetConsoleOutput's 64 KiB."""
    marker = 'worker-' + uid()
    ud = ('#!/bin/sh\necho %s > /data/marker-worker\nsync\n'
          'i=0\nwhile [ $i -lt 1500 ]; do echo "filler $i %s"; i=$((i + 1)); done\n'
          % (marker, FILLER)) + DISK_WATCHER + 'echo "worker user data done"\n'
    iid = fleet.run_one(ImageId=catalogue, UserData=ud, BlockDeviceMappings=[
        {'DeviceName': root_device, 'Ebs': {'VolumeSize': 2, 'VolumeType': 'gp2'}},
        {'DeviceName': '/dev/sdb', 'Ebs': {'VolumeSize': 1, 'DeleteOnTermination': False,
                                           'VolumeType': 'standard'}},
        {'DeviceName': '/dev/sdc', 'NoDevice': ''}])
    wait(ec2, 'instance_running', InstanceIds=[iid])
    return {'id': iid, 'marker': marker}


def test_run_block_device_mappings(ec2, root_device, worker):
    iid = worker['id']
    inst = describe(ec2, iid)
    bdm = {b['DeviceName']: b['Ebs'] for b in inst['BlockDeviceMappings']}
    assert sorted(bdm) == sorted([root_device, '/dev/sdb'])  # NoDevice: no /dev/sdc
    assert bdm[root_device]['DeleteOnTermination'] is True
    assert bdm['/dev/sdb']['DeleteOnTermination'] is False
    vols = volumes_of(ec2, iid)
    assert sorted(vols) == sorted(bdm)
    root, extra = vols[root_device], vols['/dev/sdb']
    assert root['VolumeId'] == bdm[root_device]['VolumeId']
    assert root['Size'] == 2 and root['VolumeType'] == 'gp2' and root['State'] == 'in-use'
    assert root['SnapshotId']  # made from the image's snapshot
    assert extra['Size'] == 1 and extra['VolumeType'] == 'standard'
    assert extra['State'] == 'in-use' and not extra.get('SnapshotId')
    for dev, v in vols.items():
        a = v['Attachments']
        assert len(a) == 1 and a[0]['InstanceId'] == iid and a[0]['State'] == 'attached'
        assert a[0]['DeleteOnTermination'] is (dev == root_device)
        assert v['AvailabilityZone'] == inst['Placement']['AvailabilityZone']
    got = ec2.describe_instances(Filters=[
        {'Name': 'block-device-mapping.volume-id', 'Values': [extra['VolumeId']]}])
    assert [i['InstanceId'] for r in got['Reservations'] for i in r['Instances']] == [iid]


def test_console_output_latest(ec2, worker):
    iid = worker['id']
    wait_console(ec2, iid, 'worker user data done', 'AMID-BOOT: ready')
    first = console(ec2, iid)
    last = console(ec2, iid, latest=True)
    r = ec2.get_console_output(InstanceId=iid)
    assert r['InstanceId'] == iid and r['Timestamp']
    # The default is the start of the console, Latest its end; each at most 64 KiB.
    assert 'AMID-BOOT: start' in first and 'AMID-BOOT: ready' not in first
    assert 'AMID-BOOT: ready' in last and 'AMID-BOOT: start' not in last
    assert 'worker user data done' in last and 'filler 1499 ' in last
    assert 'filler 0 ' in first and 'filler 0 ' not in last
    assert len(first.encode()) <= 64 * 1024 and len(last.encode()) <= 64 * 1024
    assert len(first) > 32 * 1024 and len(last) > 32 * 1024


def test_attach_detach_hotplug(ec2, worker):
    iid = worker['id']
    inst = describe(ec2, iid)
    assert inst['State']['Name'] == 'running'
    zone = inst['Placement']['AvailabilityZone']
    vid = ec2.create_volume(AvailabilityZone=zone, Size=1,
                            TagSpecifications=[{'ResourceType': 'volume', 'Tags': [
                                {'Key': 'Name', 'Value': 'hotplug'}]}])['VolumeId']
    try:
        wait(ec2, 'volume_available', VolumeIds=[vid])
        wait_console(ec2, iid, 'worker user data done')
        wait_guest_disks(ec2, iid, ['vda', 'vdb'])
        a = ec2.attach_volume(VolumeId=vid, InstanceId=iid, Device='/dev/sdf')
        assert a['VolumeId'] == vid and a['InstanceId'] == iid and a['Device'] == '/dev/sdf'
        assert a['State'] in ('attaching', 'attached')
        wait(ec2, 'volume_in_use', VolumeIds=[vid])
        v = ec2.describe_volumes(VolumeIds=[vid])['Volumes'][0]
        assert v['State'] == 'in-use'
        assert [(x['InstanceId'], x['Device'], x['State']) for x in v['Attachments']] == \
            [(iid, '/dev/sdf', 'attached')]
        bdm = {b['DeviceName']: b['Ebs']['VolumeId']
               for b in describe(ec2, iid)['BlockDeviceMappings']}
        assert bdm.get('/dev/sdf') == vid, bdm
        a = ec2.describe_instance_attribute(InstanceId=iid, Attribute='blockDeviceMapping')
        assert vid in [b['Ebs']['VolumeId'] for b in a['BlockDeviceMappings']]
        wait_guest_disks(ec2, iid, ['vda', 'vdb', 'vdc'])  # the guest has it
        # The device name is taken now; the volume cannot be attached twice.
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.attach_volume(VolumeId=vid, InstanceId=iid, Device='/dev/sdg')
        assert code_of(e) == 'VolumeInUse'

        d = ec2.detach_volume(VolumeId=vid)
        assert d['VolumeId'] == vid and d['InstanceId'] == iid
        assert d['State'] in ('detaching', 'detached')
        wait(ec2, 'volume_available', VolumeIds=[vid])
        v = ec2.describe_volumes(VolumeIds=[vid])['Volumes'][0]
        assert v['State'] == 'available' and not v.get('Attachments')
        bdm = [b['DeviceName'] for b in describe(ec2, iid)['BlockDeviceMappings']]
        assert '/dev/sdf' not in bdm
        wait_guest_disks(ec2, iid, ['vda', 'vdb'])  # and it is gone from the guest
        assert describe(ec2, iid)['State']['Name'] == 'running'
        # The root volume of a running instance stays.
        root = [b['Ebs']['VolumeId'] for b in describe(ec2, iid)['BlockDeviceMappings']
                if b['DeviceName'] == inst['RootDeviceName']][0]
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.detach_volume(VolumeId=root)
        assert code_of(e) == 'OperationNotPermitted'
    finally:
        try:
            ec2.detach_volume(VolumeId=vid, Force=True)
            wait(ec2, 'volume_available', VolumeIds=[vid])
        except botocore.exceptions.ClientError:
            pass
        ec2.delete_volume(VolumeId=vid)


def test_modify_attributes_stop_start(ec2, worker):
    iid = worker['id']
    assert describe(ec2, iid)['State']['Name'] == 'running'
    # Type and user data change only while stopped.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_instance_attribute(InstanceId=iid, InstanceType={'Value': 't2.small'})
    assert code_of(e) == 'IncorrectInstanceState'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_instance_attribute(InstanceId=iid, UserData={'Value': b'#!/bin/sh\n'})
    assert code_of(e) == 'IncorrectInstanceState'
    # Termination protection.
    ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={'Value': True})
    a = ec2.describe_instance_attribute(InstanceId=iid, Attribute='disableApiTermination')
    assert a['DisableApiTermination']['Value'] is True
    try:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.terminate_instances(InstanceIds=[iid])
        assert code_of(e) == 'OperationNotPermitted'
        assert describe(ec2, iid)['State']['Name'] == 'running'
    finally:
        ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={'Value': False})
    ec2.modify_instance_attribute(InstanceId=iid, DisableApiStop={'Value': True})
    try:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.stop_instances(InstanceIds=[iid])
        assert code_of(e) == 'OperationNotPermitted'
    finally:
        ec2.modify_instance_attribute(InstanceId=iid, DisableApiStop={'Value': False})
    ec2.modify_instance_attribute(InstanceId=iid,
                                  InstanceInitiatedShutdownBehavior={'Value': 'terminate'})
    a = ec2.describe_instance_attribute(InstanceId=iid,
                                        Attribute='instanceInitiatedShutdownBehavior')
    assert a['InstanceInitiatedShutdownBehavior']['Value'] == 'terminate'
    ec2.modify_instance_attribute(InstanceId=iid,
                                  InstanceInitiatedShutdownBehavior={'Value': 'stop'})

    # Stop: a clean shutdown through the power button.
    r = ec2.stop_instances(InstanceIds=[iid])['StoppingInstances'][0]
    assert r['InstanceId'] == iid and r['PreviousState']['Name'] == 'running'
    assert r['CurrentState']['Name'] == 'stopping'
    wait(ec2, 'instance_stopped', InstanceIds=[iid])
    inst = describe(ec2, iid)
    assert inst['State'] == {'Code': 80, 'Name': 'stopped'}
    assert inst['StateReason']['Code'] == 'Client.UserInitiatedShutdown'
    assert inst['StateTransitionReason'].startswith('User initiated')
    out = console(ec2, iid, latest=True)  # readable while stopped
    assert 'AMID-BOOT: poweroff' in out, out[-2000:]
    assert all(v['State'] == 'in-use' for v in volumes_of(ec2, iid).values())

    # An image of the stopped instance keeps its mappings' sizes, types and deletion flags.
    img = ec2.create_image(InstanceId=iid, Name='worker-stopped-' + uid())['ImageId']
    wait(ec2, 'image_available', ImageIds=[img])
    im = ec2.describe_images(ImageIds=[img])['Images'][0]
    bdm = {b['DeviceName']: b['Ebs'] for b in im['BlockDeviceMappings']}
    root = inst['RootDeviceName']
    assert sorted(bdm) == sorted([root, '/dev/sdb'])
    assert (bdm[root]['VolumeSize'], bdm[root]['VolumeType'],
            bdm[root]['DeleteOnTermination']) == (2, 'gp2', True)
    assert (bdm['/dev/sdb']['VolumeSize'], bdm['/dev/sdb']['VolumeType'],
            bdm['/dev/sdb']['DeleteOnTermination']) == (1, 'standard', False)
    assert describe(ec2, iid)['State']['Name'] == 'stopped'

    new_ud = b'#!/bin/sh\necho "changed user data"\n'
    ec2.modify_instance_attribute(InstanceId=iid, InstanceType={'Value': 't2.small'})
    ec2.modify_instance_attribute(InstanceId=iid, UserData={'Value': new_ud})
    a = ec2.describe_instance_attribute(InstanceId=iid, Attribute='instanceType')
    assert a['InstanceType']['Value'] == 't2.small'
    a = ec2.describe_instance_attribute(InstanceId=iid, Attribute='userData')
    assert base64.b64decode(a['UserData']['Value']) == new_ud
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_instance_attribute(InstanceId=iid, InstanceType={'Value': 't9.giant'})
    assert code_of(e) in ('InvalidParameterValue', 'InvalidInstanceAttributeValue')

    r = ec2.start_instances(InstanceIds=[iid])['StartingInstances'][0]
    assert r['PreviousState']['Name'] == 'stopped' and r['CurrentState']['Name'] == 'pending'
    wait(ec2, 'instance_running', InstanceIds=[iid])
    assert describe(ec2, iid)['InstanceType'] == 't2.small'
    # The marker written before the stop is on the disk after the start; user data ran once.
    out = wait_console(ec2, iid, 'AMID-BOOT: ready')
    assert 'AMID-MARKER: %s' % worker['marker'] in out, out
    assert 'AMID-USERDATA: skipped (already ran for %s)' % iid in out, out
    assert 'changed user data' not in out and 'filler 0 ' not in out


def test_terminate_delete_on_termination(ec2, root_device, worker):
    """Runs last of the worker's tests: it ends the worker."""
    iid = worker['id']
    vols = volumes_of(ec2, iid)
    root, kept = vols[root_device]['VolumeId'], vols['/dev/sdb']['VolumeId']
    r = ec2.terminate_instances(InstanceIds=[iid])['TerminatingInstances'][0]
    assert r['PreviousState']['Name'] == 'running'
    assert r['CurrentState']['Name'] == 'shutting-down'
    wait(ec2, 'instance_terminated', InstanceIds=[iid])
    inst = describe(ec2, iid)
    assert inst['State'] == {'Code': 48, 'Name': 'terminated'}
    assert inst['BlockDeviceMappings'] == []
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_volumes(VolumeIds=[root])
    assert code_of(e) == 'InvalidVolume.NotFound'
    v = ec2.describe_volumes(VolumeIds=[kept])['Volumes'][0]
    assert v['State'] == 'available' and not v.get('Attachments')
    assert v['Size'] == 1 and v['VolumeType'] == 'standard'
    ec2.delete_volume(VolumeId=kept)
    # Terminating again is harmless; a terminated instance cannot be stopped or started.
    r = ec2.terminate_instances(InstanceIds=[iid])['TerminatingInstances'][0]
    assert r['PreviousState']['Name'] == r['CurrentState']['Name'] == 'terminated'
    for op in (ec2.stop_instances, ec2.start_instances, ec2.reboot_instances):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            op(InstanceIds=[iid])
        assert code_of(e) == 'IncorrectInstanceState', op


# ---- 4. NoReboot images of a guest writing two disks are never torn ----

TORN_UD = r'''#!/bin/sh
cat > /run/torn.sh <<'EOF'
#!/bin/sh
n=0
while :; do
  n=$((n + 1))
  printf '%-511s\n' "$n vdb" | dd of=/dev/vdb bs=512 count=1 conv=notrunc,fsync 2>/dev/null
  printf '%-511s\n' "$n vdc" | dd of=/dev/vdc bs=512 count=1 conv=notrunc,fsync 2>/dev/null
done
EOF
chmod 0755 /run/torn.sh
/run/torn.sh </dev/null >/dev/null 2>&1 &
echo "torn writer started"
'''


def block0(ebs, sid):
    """(n, device) from the first 512 bytes of a snapshot, read with the EBS direct API."""
    blocks = ebs.list_snapshot_blocks(SnapshotId=sid)['Blocks']
    b = [x for x in blocks if x['BlockIndex'] == 0]
    assert b, 'snapshot %s has no block 0: %s' % (sid, blocks)
    data = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=0,
                                  BlockToken=b[0]['BlockToken'])['BlockData'].read()
    assert len(data) == EBS_BLOCK
    words = data[:512].decode(errors='replace').split()
    assert len(words) == 2 and words[0].isdigit() and words[1] in ('vdb', 'vdc'), data[:80]
    return int(words[0]), words[1]


def pair(ebs, sids):
    """{device: n} of two data snapshots; checks they show one instant of the writer."""
    got = dict(reversed(block0(ebs, s)) for s in sids)
    assert sorted(got) == ['vdb', 'vdc'], got
    # vdb is written first: at any instant vdc holds the same n or the one before.
    assert got['vdb'] in (got['vdc'], got['vdc'] + 1), 'torn snapshot: %s' % got
    return got


@pytest.fixture(scope='module')
def torn(ec2, catalogue, root_device, fleet):
    iid = fleet.run_one(ImageId=catalogue, UserData=TORN_UD, BlockDeviceMappings=[
        {'DeviceName': '/dev/sdb', 'Ebs': {'VolumeSize': 1}},
        {'DeviceName': '/dev/sdc', 'Ebs': {'VolumeSize': 1}}])
    wait(ec2, 'instance_running', InstanceIds=[iid])
    out = wait_console(ec2, iid, 'AMID-BOOT: ready')
    assert 'torn writer started' in out and 'AMID-BOOT: disks vda vdb vdc' in out, out
    time.sleep(1)
    tag = uid()
    images = []
    for k in range(3):
        images.append(ec2.create_image(InstanceId=iid, Name='torn-%s-%d' % (tag, k),
                                       NoReboot=True)['ImageId'])
        time.sleep(1.2)
    snaps = ec2.create_snapshots(
        InstanceSpecification={'InstanceId': iid, 'ExcludeBootVolume': True},
        Description='data volumes of ' + iid,
        TagSpecifications=[{'ResourceType': 'snapshot',
                            'Tags': [{'Key': 'set', 'Value': tag}]}])['Snapshots']
    vols = volumes_of(ec2, iid)
    # The writer keeps going through all of it.
    assert describe(ec2, iid)['State']['Name'] == 'running'
    fleet.kill([iid])
    wait(ec2, 'image_available', ImageIds=images)
    wait(ec2, 'snapshot_completed', SnapshotIds=[s['SnapshotId'] for s in snaps])
    return {'id': iid, 'images': images, 'snaps': snaps, 'vols': vols, 'tag': tag}


@pytest.fixture(scope='module')
def ebs(amid):
    return amid.client('ebs')


def test_noreboot_images_are_not_torn(ec2, ebs, root_device, torn):
    ns = []
    for img in torn['images']:
        im = ec2.describe_images(ImageIds=[img])['Images'][0]
        assert im['SourceInstanceId'] == torn['id']
        bdm = {b['DeviceName']: b['Ebs'] for b in im['BlockDeviceMappings']}
        assert sorted(bdm) == sorted([root_device, '/dev/sdb', '/dev/sdc'])
        assert bdm['/dev/sdb']['VolumeSize'] == 1 and bdm['/dev/sdc']['VolumeSize'] == 1
        got = pair(ebs, [bdm['/dev/sdb']['SnapshotId'], bdm['/dev/sdc']['SnapshotId']])
        ns.append(got['vdb'])
    print('writer sequence numbers in the three images:', ns)
    assert ns[0] < ns[1] < ns[2], 'the writer did not advance between images: %s' % ns


def test_create_snapshots_exclude_boot(ec2, ebs, root_device, torn):
    snaps = torn['snaps']
    vols = torn['vols']
    assert sorted(s['VolumeId'] for s in snaps) == \
        sorted([vols['/dev/sdb']['VolumeId'], vols['/dev/sdc']['VolumeId']])
    assert vols[root_device]['VolumeId'] not in [s['VolumeId'] for s in snaps]
    got = ec2.describe_snapshots(Filters=[{'Name': 'tag:set', 'Values': [torn['tag']]}])
    assert sorted(s['SnapshotId'] for s in got['Snapshots']) == \
        sorted(s['SnapshotId'] for s in snaps)
    for s in got['Snapshots']:
        assert s['State'] == 'completed' and s['VolumeSize'] == 1
        assert s['Description'] == 'data volumes of ' + torn['id']
    pair(ebs, [s['SnapshotId'] for s in snaps])


def test_run_overrides_image_mappings(ec2, root_device, fleet, torn):
    """NoDevice drops an image's volume, Ebs overrides change the others."""
    img = torn['images'][0]
    im = ec2.describe_images(ImageIds=[img])['Images'][0]
    snap_b = [b for b in im['BlockDeviceMappings']
              if b['DeviceName'] == '/dev/sdb'][0]['Ebs']['SnapshotId']
    iid = fleet.run_one(ImageId=img, BlockDeviceMappings=[
        {'DeviceName': '/dev/sdc', 'NoDevice': ''},
        {'DeviceName': '/dev/sdb', 'Ebs': {'VolumeSize': 2, 'VolumeType': 'standard'}}])
    try:
        vols = volumes_of(ec2, iid)
        assert sorted(vols) == sorted([root_device, '/dev/sdb'])
        assert vols['/dev/sdb']['Size'] == 2 and vols['/dev/sdb']['VolumeType'] == 'standard'
        assert vols['/dev/sdb']['SnapshotId'] == snap_b
        assert vols[root_device]['Size'] == 1
    finally:
        fleet.kill([iid])


# ---- 7. DescribeInstances, DescribeInstanceTypes, ClientToken ----

def ids_of(resp):
    return [i['InstanceId'] for r in resp['Reservations'] for i in r['Instances']]


def test_describe_instances(ec2, catalogue, fleet):
    tag = 'batch-' + uid()
    r1 = fleet.run(ImageId=catalogue, MinCount=3, MaxCount=3, TagSpecifications=[
        {'ResourceType': 'instance', 'Tags': [{'Key': 'Name', 'Value': tag + '-a'},
                                              {'Key': 'batch', 'Value': tag}]}])
    r2 = fleet.run(ImageId=catalogue, MinCount=1, MaxCount=3, InstanceType='t2.nano',
                   TagSpecifications=[{'ResourceType': 'instance', 'Tags': [
                       {'Key': 'Name', 'Value': tag + '-b'}, {'Key': 'batch', 'Value': tag}]}])
    a = [i['InstanceId'] for i in r1['Instances']]
    b = [i['InstanceId'] for i in r2['Instances']]
    try:
        assert len(a) == 3 and len(b) == 3 and r1['ReservationId'] != r2['ReservationId']
        assert sorted(i['AmiLaunchIndex'] for i in r1['Instances']) == [0, 1, 2]
        assert r1['OwnerId'] == r2['OwnerId']
        batch = {'Name': 'tag:batch', 'Values': [tag]}
        got = ec2.describe_instances(Filters=[batch])['Reservations']
        assert sorted((r['ReservationId'], tuple(sorted(i['InstanceId'] for i in r['Instances'])))
                      for r in got) == \
            sorted([(r1['ReservationId'], tuple(sorted(a))),
                    (r2['ReservationId'], tuple(sorted(b)))])
        for r in got:
            assert sorted(i['AmiLaunchIndex'] for i in r['Instances']) == [0, 1, 2]

        def find(*filters):
            return sorted(ids_of(ec2.describe_instances(Filters=[batch, *filters])))

        assert find({'Name': 'instance-type', 'Values': ['t2.nano']}) == sorted(b)
        assert find({'Name': 'instance-type', 'Values': ['t2.micro', 't2.nano']}) == \
            sorted(a + b)
        assert find({'Name': 'image-id', 'Values': [catalogue]}) == sorted(a + b)
        assert find({'Name': 'image-id', 'Values': ['ami-0123456789abcdef0']}) == []
        assert find({'Name': 'tag:Name', 'Values': [tag + '-a']}) == sorted(a)
        assert find({'Name': 'tag:Name', 'Values': [tag + '-*']}) == sorted(a + b)
        assert find({'Name': 'reservation-id', 'Values': [r2['ReservationId']]}) == sorted(b)
        assert find({'Name': 'instance-state-name',
                     'Values': ['pending', 'running']}) == sorted(a + b)
        assert find({'Name': 'instance-state-name', 'Values': ['stopped']}) == []
        assert find({'Name': 'launch-index', 'Values': ['2']}) == \
            sorted([i['InstanceId'] for i in r1['Instances'] + r2['Instances']
                    if i['AmiLaunchIndex'] == 2])
        vol = describe(ec2, a[1])['BlockDeviceMappings'][0]['Ebs']['VolumeId']
        assert sorted(ids_of(ec2.describe_instances(Filters=[
            {'Name': 'block-device-mapping.volume-id', 'Values': [vol]}]))) == [a[1]]
        assert sorted(ids_of(ec2.describe_instances(InstanceIds=[a[0], b[0]]))) == \
            sorted([a[0], b[0]])
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_instances(Filters=[{'Name': 'colour', 'Values': ['blue']}])
        assert code_of(e) == 'InvalidParameterValue'

        # Paging: MaxResults=5 over six instances.
        pages = list(ec2.get_paginator('describe_instances').paginate(
            Filters=[batch], PaginationConfig={'PageSize': 5}))
        seen = [i for p in pages for i in ids_of(p)]
        assert len(pages) >= 2 and all(len(ids_of(p)) <= 5 for p in pages)
        assert len(seen) == len(set(seen)) and sorted(seen) == sorted(a + b)
        every = [i for p in ec2.get_paginator('describe_instances').paginate(
            PaginationConfig={'PageSize': 5}) for i in ids_of(p)]
        assert len(every) == len(set(every)) and set(a + b) <= set(every)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_instances(InstanceIds=[a[0]], MaxResults=5)
        assert code_of(e) == 'InvalidParameterCombination'
    finally:
        fleet.kill(a + b)
    wait(ec2, 'instance_terminated', InstanceIds=a + b)
    assert find({'Name': 'instance-state-name', 'Values': ['terminated']}) == sorted(a + b)
    # DescribeInstanceStatus lists instances that are not running only when asked to.
    assert ec2.describe_instance_status(InstanceIds=[a[0]])['InstanceStatuses'] == []
    st = ec2.describe_instance_status(InstanceIds=[a[0]],
                                      IncludeAllInstances=True)['InstanceStatuses']
    assert len(st) == 1 and st[0]['InstanceState']['Name'] == 'terminated'
    assert st[0]['InstanceStatus']['Status'] == 'not-applicable'


def test_client_token_idempotency(ec2, catalogue, fleet):
    token = 'token-' + uid()
    r1 = fleet.run(ImageId=catalogue, ClientToken=token)
    r2 = fleet.run(ImageId=catalogue, ClientToken=token)
    try:
        assert [i['InstanceId'] for i in r1['Instances']] == \
            [i['InstanceId'] for i in r2['Instances']]
        assert r1['ReservationId'] == r2['ReservationId']
        got = ids_of(ec2.describe_instances(Filters=[{'Name': 'client-token',
                                                      'Values': [token]}]))
        assert got == [r1['Instances'][0]['InstanceId']]
        assert describe(ec2, got[0])['ClientToken'] == token
        # The same token with another request is refused, and launches nothing.
        before = all_ids(ec2)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.run_instances(ImageId=catalogue, MinCount=1, MaxCount=1, ClientToken=token,
                              InstanceType='t2.nano')
        assert e.value.response['Error']['Code'] == 'IdempotentParameterMismatch'
        assert all_ids(ec2) == before
    finally:
        fleet.kill([r1['Instances'][0]['InstanceId']])


# ---- 8. bad input ----

def registered_image(ec2, name):
    v = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    s = ec2.create_snapshot(VolumeId=v)['SnapshotId']
    wait(ec2, 'snapshot_completed', SnapshotIds=[s])
    ec2.delete_volume(VolumeId=v)
    return ec2.register_image(Name=name, RootDeviceName='/dev/xvda', BlockDeviceMappings=[
        {'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': s}}])['ImageId']


def all_ids(ec2):
    return set(ids_of(ec2.describe_instances()))


def test_bad_input(amid, ec2, catalogue, fleet):
    before = all_ids(ec2)

    def refused(code, **kw):
        args = dict(ImageId=catalogue, MinCount=1, MaxCount=1, InstanceType='t2.micro')
        args.update(kw)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.run_instances(**args)
        assert code_of(e) == code, (kw, e.value)

    refused('InvalidParameterValue', InstanceType='t9.giant')
    refused('InstanceLimitExceeded', MinCount=21, MaxCount=21)
    refused('InvalidParameterValue', MinCount=3, MaxCount=2)
    refused('InvalidGroup.NotFound', SecurityGroupIds=['sg-0123456789abcdef0'])
    refused('InvalidAMIID.NotFound', ImageId='ami-0123456789abcdef0')
    refused('InvalidAMIID.Malformed', ImageId='image-1')
    # Another account's private image is as good as missing.
    other = amid.new_account('inst-other-' + uid())
    oec2 = amid.client('ec2', other)
    private = registered_image(oec2, 'private-' + uid())
    refused('InvalidAMIID.NotFound', ImageId=private)
    # A deregistered image.
    gone = registered_image(ec2, 'gone-' + uid())
    ec2.deregister_image(ImageId=gone)
    refused('InvalidAMIID.NotFound', ImageId=gone)
    refused('DryRunOperation', DryRun=True)
    assert all_ids(ec2) == before  # nothing was launched

    for bad in ('instance-1', 'i-xyz', 'i-0123'):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_instances(InstanceIds=[bad])
        assert code_of(e) == 'InvalidInstanceID.Malformed', bad
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.stop_instances(InstanceIds=['not-an-instance'])
    assert code_of(e) == 'InvalidInstanceID.Malformed'
    ghost = 'i-0123456789abcdef0'
    for call in (lambda: ec2.describe_instances(InstanceIds=[ghost]),
                 lambda: ec2.stop_instances(InstanceIds=[ghost]),
                 lambda: ec2.terminate_instances(InstanceIds=[ghost]),
                 lambda: ec2.get_console_output(InstanceId=ghost),
                 lambda: ec2.describe_instance_attribute(InstanceId=ghost,
                                                         Attribute='instanceType')):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e) == 'InvalidInstanceID.NotFound'
        assert ghost in str(e.value)

    # A terminated instance cannot be stopped.
    iid = fleet.run_one(ImageId=catalogue)
    fleet.kill([iid])
    wait(ec2, 'instance_terminated', InstanceIds=[iid])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.stop_instances(InstanceIds=[iid])
    assert code_of(e) == 'IncorrectInstanceState'
    # DryRun of a change that would succeed, and of one that would not.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.terminate_instances(InstanceIds=[iid], DryRun=True)
    assert code_of(e) == 'DryRunOperation'
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.stop_instances(InstanceIds=[iid], DryRun=True)
    assert code_of(e) == 'IncorrectInstanceState'


def test_other_account_cannot_see_instances(amid, ec2, seed):
    iid = seed['id']
    other = amid.new_account('inst-stranger-' + uid())
    oec2 = amid.client('ec2', other)
    assert iid not in ids_of(oec2.describe_instances())
    for call in (lambda: oec2.describe_instances(InstanceIds=[iid]),
                 lambda: oec2.stop_instances(InstanceIds=[iid]),
                 lambda: oec2.terminate_instances(InstanceIds=[iid]),
                 lambda: oec2.get_console_output(InstanceId=iid),
                 lambda: oec2.describe_instance_status(InstanceIds=[iid]),
                 lambda: oec2.create_image(InstanceId=iid, Name='stolen-' + uid())):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e) == 'InvalidInstanceID.NotFound'
    assert describe(ec2, iid)['State']['Name'] == 'running'
    # Not in another region of the same account either.
    west = amid.client('ec2', region='us-west-2')
    with pytest.raises(botocore.exceptions.ClientError) as e:
        west.describe_instances(InstanceIds=[iid])
    assert code_of(e) == 'InvalidInstanceID.NotFound'


# ---- the AWS CLI ----

def test_aws_cli_run_and_wait(amid, ec2, catalogue, fleet):
    name = 'cli-' + uid()
    rc, out, err = amid.aws('ec2', 'run-instances', '--image-id', catalogue, '--count', '1',
                            '--instance-type', 't2.micro', '--user-data',
                            '#!/bin/sh\necho "cli user data %s"\n' % name,
                            '--tag-specifications',
                            'ResourceType=instance,Tags=[{Key=Name,Value=%s}]' % name)
    iid = out['Instances'][0]['InstanceId']
    fleet.ids.append(iid)
    assert out['Instances'][0]['State']['Name'] in ('pending', 'running')
    rc, _, err = amid.aws('ec2', 'wait', 'instance-running', '--instance-ids', iid)
    assert rc == 0, err
    rc, out, _ = amid.aws('ec2', 'describe-instances', '--filters',
                          'Name=tag:Name,Values=%s' % name)
    got = [i for r in out['Reservations'] for i in r['Instances']]
    assert [i['InstanceId'] for i in got] == [iid] and got[0]['State']['Name'] == 'running'
    wait_console(ec2, iid, 'AMID-BOOT: ready')
    rc, out, _ = amid.aws('ec2', 'get-console-output', '--instance-id', iid, '--latest')
    assert 'cli user data %s' % name in out['Output']
    rc, out, _ = amid.aws('ec2', 'terminate-instances', '--instance-ids', iid)
    assert out['TerminatingInstances'][0]['CurrentState']['Name'] == 'shutting-down'
    wait(ec2, 'instance_terminated', InstanceIds=[iid])


# ---- 9. a daemon restart under a running guest ----

TICKER_UD = r'''#!/bin/sh
cat > /run/tick.sh <<'EOF'
#!/bin/sh
n=0
while :; do
  n=$((n + 1))
  echo "$n" > /data/tick
  sync
  printf '\ntick %d\n' "$n"
  sleep 1
done
EOF
chmod 0755 /run/tick.sh
/run/tick.sh </dev/null >/dev/console 2>&1 &
echo "ticker started"
'''


def last_tick(ec2, iid):
    ticks = [int(line.split()[1]) for line in console(ec2, iid, latest=True).splitlines()
             if line.startswith('tick ') and line.split()[1:] and line.split()[1].isdigit()]
    return ticks[-1] if ticks else 0


def wait_tick_after(ec2, iid, n, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        t = last_tick(ec2, iid)
        if t > n:
            return t
        time.sleep(0.5)
    raise AssertionError('%s: no tick after %d in %ds:\n%s'
                         % (iid, n, timeout, console(ec2, iid, latest=True)[-2000:]))


def test_daemon_restart(tmpdir_amid):
    a = Amid(tmpdir_amid)
    try:
        out = json.loads(run_amid('catalog', 'import', '--data', a.datadir,
                                  '--format', 'json').stdout)
        img = [i for i in out['Images'] if i['Region'] == 'us-east-1'][0]['ImageId']
        ec2 = a.client('ec2')
        iid = ec2.run_instances(ImageId=img, MinCount=1, MaxCount=1, InstanceType='t2.micro',
                                UserData=TICKER_UD)['Instances'][0]['InstanceId']
        wait(ec2, 'instance_running', InstanceIds=[iid])
        wait_console(ec2, iid, 'ticker started', 'AMID-BOOT: ready')
        t = wait_tick_after(ec2, iid, 0)
        pids = qemu_pids(iid)
        assert len(pids) == 1, pids

        rc = a.daemon.stop(signal.SIGKILL)
        assert rc == -signal.SIGKILL
        time.sleep(1)
        assert qemu_pids(iid) == pids  # the guest outlives the daemon
        a.daemon.start()
        ec2 = a.client('ec2')
        inst = describe(ec2, iid)
        assert inst['State']['Name'] == 'running', inst['State']
        # The guest goes on, its disk served again (every tick syncs /data).
        t = wait_tick_after(ec2, iid, t + 2)
        img2 = ec2.create_image(InstanceId=iid, Name='after-restart', NoReboot=True)['ImageId']
        wait(ec2, 'image_available', ImageIds=[img2])
        wait_tick_after(ec2, iid, t + 1)
        assert qemu_pids(iid) == pids and describe(ec2, iid)['State']['Name'] == 'running'

        # QEMU dies under the daemon: the instance is reported stopped, with the reason.
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.time() + 10
        while time.time() < deadline:
            inst = describe(ec2, iid)
            if inst['State']['Name'] != 'running':
                break
            time.sleep(0.25)
        assert inst['State']['Name'] == 'stopped', inst['State']
        assert inst['StateReason']['Code'] == 'Server.InternalError', inst.get('StateReason')
        # It can be started again.
        ec2.start_instances(InstanceIds=[iid])
        wait(ec2, 'instance_running', InstanceIds=[iid])
        wait_console(ec2, iid, 'AMID-BOOT: ready')
        ec2.terminate_instances(InstanceIds=[iid], Force=True)
        wait(ec2, 'instance_terminated', InstanceIds=[iid])
    finally:
        if a.daemon.proc:
            a.daemon.stop()


def test_describe_instance_types(ec2):
    got = {t['InstanceType']: t for t in ec2.describe_instance_types(
        InstanceTypes=['t2.micro', 'm5.large'])['InstanceTypes']}
    assert sorted(got) == ['m5.large', 't2.micro']
    assert got['t2.micro']['VCpuInfo']['DefaultVCpus'] == 1
    assert got['t2.micro']['MemoryInfo']['SizeInMiB'] == 1024
    assert got['m5.large']['VCpuInfo']['DefaultVCpus'] == 2
    assert got['m5.large']['MemoryInfo']['SizeInMiB'] == 8192
    # A type EC2 has but amid does not offer, and a name no one has.
    for name in ('p4d.24xlarge', 'x9.colossal'):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_instance_types(InstanceTypes=['t2.micro', name])
        assert code_of(e) == 'InvalidInstanceType', (name, e.value)
        assert name in str(e.value)
    every = [t['InstanceType'] for p in ec2.get_paginator('describe_instance_types').paginate(
        PaginationConfig={'PageSize': 5}) for t in p['InstanceTypes']]
    assert len(every) == len(set(every)) and {'t2.micro', 'm5.large'} <= set(every)
    f = ec2.describe_instance_types(Filters=[{'Name': 'vcpu-info.default-vcpus',
                                              'Values': ['1']}])['InstanceTypes']
    assert 't2.micro' in [t['InstanceType'] for t in f]
    assert all(t['VCpuInfo']['DefaultVCpus'] == 1 for t in f)
