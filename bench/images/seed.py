#!/usr/bin/python3
"""Seeds N images across A accounts on an EC2 endpoint (amid or moto) with RegisterImage from
parallel threads, one snapshot per account.  Prints nothing but errors; exits non-zero on any."""
import concurrent.futures
import json
import sys

import boto3
import botocore.config


def client(endpoint, key, secret):
    return boto3.client('ec2', endpoint_url=endpoint, region_name='us-east-1',
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={'max_attempts': 3},
                                                      max_pool_connections=16))


def seed_account(endpoint, key, secret, per_account, prefix):
    ec2 = client(endpoint, key, secret)
    v = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    s = ec2.create_snapshot(VolumeId=v)['SnapshotId']
    ec2.get_waiter('snapshot_completed').wait(SnapshotIds=[s],
                                              WaiterConfig={'Delay': 1, 'MaxAttempts': 120})

    def one(i):
        ec2.register_image(Name='%s-%05d' % (prefix if i % 10 else 'web', i),
                           RootDeviceName='/dev/xvda',
                           BlockDeviceMappings=[{'DeviceName': '/dev/xvda',
                                                 'Ebs': {'SnapshotId': s}}])

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(one, range(per_account)))


def main():
    endpoint, creds_file, per_account = sys.argv[1], sys.argv[2], int(sys.argv[3])
    creds = json.load(open(creds_file))
    with concurrent.futures.ThreadPoolExecutor(len(creds)) as ex:
        futs = [ex.submit(seed_account, endpoint, c[0], c[1], per_account, 'img')
                for c in creds]
        for f in futs:
            f.result()


if __name__ == '__main__':
    main()
