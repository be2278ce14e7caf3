"""The key service (KMS, JSON 1.1): keys per account and region, every KeyId form, aliases, the
AWS-managed alias/aws/ebs key, Encrypt/Decrypt/ReEncrypt and data keys with encryption contexts,
key states and the deletion window on the deployment clock, key policies and grants across
accounts, tags, paging, DryRun, EC2's EBS encryption defaults, durability across kill -9, and the
AWS CLI — through Debian's boto3 and AWS CLI, with hand-signed requests for broken input."""
import base64
import glob
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid

import botocore.exceptions
import pytest

import rawreq
from conftest import AMID, Amid, run_amid


def code_of(e):
    return e.value.response['Error']['Code']


def raises(code, fn, *args, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn(*args, **kw)
    assert code_of(e) == code, e.value.response['Error']
    return e.value.response['Error']


@pytest.fixture(scope='module')
def acct_a(amid):
    return amid.new_account('kms-a')


@pytest.fixture(scope='module')
def acct_b(amid):
    return amid.new_account('kms-b')


@pytest.fixture(scope='module')
def ka(amid, acct_a):
    return amid.client('kms', acct_a)


@pytest.fixture(scope='module')
def kb(amid, acct_b):
    return amid.client('kms', acct_b)


def new_key(kms, **kw):
    return kms.create_key(**kw)['KeyMetadata']


def test_create_describe_and_every_key_id_form(ka, acct_a):
    m = new_key(ka, Description='first key', Tags=[{'TagKey': 'team', 'TagValue': 'storage'}])
    kid = m['KeyId']
    assert str(uuid.UUID(kid)) == kid
    arn = 'arn:aws:kms:us-east-1:%s:key/%s' % (acct_a.account_id, kid)
    assert m['Arn'] == arn and m['AWSAccountId'] == acct_a.account_id
    assert m['KeyState'] == 'Enabled' and m['Enabled'] is True
    assert m['KeyManager'] == 'CUSTOMER' and m['Origin'] == 'AWS_KMS'
    assert m['KeySpec'] == 'SYMMETRIC_DEFAULT' and m['KeyUsage'] == 'ENCRYPT_DECRYPT'
    assert m['EncryptionAlgorithms'] == ['SYMMETRIC_DEFAULT'] and m['Description'] == 'first key'
    assert abs(m['CreationDate'].timestamp() - time.time()) < 600
    ka.create_alias(AliasName='alias/first', TargetKeyId=kid)
    aarn = 'arn:aws:kms:us-east-1:%s:alias/first' % acct_a.account_id
    for ref in (kid, kid.upper(), arn, 'alias/first', aarn):
        assert ka.describe_key(KeyId=ref)['KeyMetadata']['KeyId'] == kid
    keys = ka.list_keys()['Keys']
    assert {'KeyId': kid, 'KeyArn': arn} in keys
    assert ka.list_resource_tags(KeyId=kid)['Tags'] == [{'TagKey': 'team',
                                                         'TagValue': 'storage'}]


def test_not_found_and_invalid_arns(ka, acct_a):
    raises('NotFoundException', ka.describe_key, KeyId=str(uuid.uuid4()))
    raises('NotFoundException', ka.describe_key, KeyId='not-a-key')
    raises('NotFoundException', ka.describe_key, KeyId='alias/nothing-here')
    raises('InvalidArnException', ka.describe_key, KeyId='arn:aws:kms:us-east-1:12:key/x')
    raises('InvalidArnException', ka.describe_key,
           KeyId='arn:aws:s3:us-east-1:%s:key/%s' % (acct_a.account_id, uuid.uuid4()))


def test_keys_are_per_region(amid, acct_a, ka):
    m = new_key(ka)
    west = amid.client('kms', acct_a, region='us-west-2')
    raises('NotFoundException', west.describe_key, KeyId=m['KeyId'])
    raises('NotFoundException', west.describe_key, KeyId=m['Arn'])
    assert m['KeyId'] not in [k['KeyId'] for k in west.list_keys(Limit=1000)['Keys']]
    w = new_key(west)
    assert w['Arn'].startswith('arn:aws:kms:us-west-2:')


def test_encrypt_decrypt_round_trip(ka):
    kid = new_key(ka)['KeyId']
    ka.create_alias(AliasName='alias/rt', TargetKeyId=kid)
    ctx = {'purpose': 'test', 'b-key': 'value \u00e9'}
    e = ka.encrypt(KeyId='alias/rt', Plaintext=b'top secret', EncryptionContext=ctx)
    assert e['KeyId'].endswith(kid) and e['EncryptionAlgorithm'] == 'SYMMETRIC_DEFAULT'
    blob = e['CiphertextBlob']
    # The blob names its key: no KeyId needed; the context's order does not matter.
    d = ka.decrypt(CiphertextBlob=blob, EncryptionContext=dict(reversed(list(ctx.items()))))
    assert d['Plaintext'] == b'top secret' and d['KeyId'] == e['KeyId']
    for ref in (kid, e['KeyId'], 'alias/rt'):
        assert ka.decrypt(CiphertextBlob=blob, EncryptionContext=ctx, KeyId=ref)[
            'Plaintext'] == b'top secret'
    # A wrong or missing context, or any changed byte, fails authentication.
    raises('InvalidCiphertextException', ka.decrypt, CiphertextBlob=blob)
    raises('InvalidCiphertextException', ka.decrypt, CiphertextBlob=blob,
           EncryptionContext={'purpose': 'other', 'b-key': 'value \u00e9'})
    raises('InvalidCiphertextException', ka.decrypt, CiphertextBlob=blob,
           EncryptionContext=dict(ctx, extra='x'))
    for i in (len(blob) - 1, len(blob) - 20, 45, 0):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        raises('InvalidCiphertextException', ka.decrypt, CiphertextBlob=bytes(bad),
               EncryptionContext=ctx)
    raises('InvalidCiphertextException', ka.decrypt, CiphertextBlob=b'\x00' * 80)
    raises('InvalidCiphertextException', ka.decrypt, CiphertextBlob=blob[:40])
    # The blob is under another key than the KeyId given.
    other = new_key(ka)['KeyId']
    raises('IncorrectKeyException', ka.decrypt, CiphertextBlob=blob, EncryptionContext=ctx,
           KeyId=other)
    # Plaintext: up to 4096 bytes.
    big = os.urandom(4096)
    e = ka.encrypt(KeyId=kid, Plaintext=big)
    assert ka.decrypt(CiphertextBlob=e['CiphertextBlob'])['Plaintext'] == big
    raises('ValidationException', ka.encrypt, KeyId=kid, Plaintext=big + b'x')
    raises('InvalidKeyUsageException', ka.encrypt, KeyId=kid, Plaintext=b'x',
           EncryptionAlgorithm='RSAES_OAEP_SHA_256')


def test_data_keys(ka, amid):
    kid = new_key(ka)['KeyId']
    r = ka.generate_data_key(KeyId=kid, KeySpec='AES_256', EncryptionContext={'vol': '1'})
    assert len(r['Plaintext']) == 32 and r['KeyId'].endswith(kid)
    d = ka.decrypt(CiphertextBlob=r['CiphertextBlob'], EncryptionContext={'vol': '1'})
    assert d['Plaintext'] == r['Plaintext']
    assert len(ka.generate_data_key(KeyId=kid, KeySpec='AES_128')['Plaintext']) == 16
    assert len(ka.generate_data_key(KeyId=kid, NumberOfBytes=1)['Plaintext']) == 1
    big = ka.generate_data_key(KeyId=kid, NumberOfBytes=1024)
    assert ka.decrypt(CiphertextBlob=big['CiphertextBlob'])['Plaintext'] == big['Plaintext']
    raises('ValidationException', ka.generate_data_key, KeyId=kid, NumberOfBytes=1025)
    raises('ValidationException', ka.generate_data_key, KeyId=kid)
    raises('ValidationException', ka.generate_data_key, KeyId=kid, KeySpec='AES_256',
           NumberOfBytes=32)
    w = ka.generate_data_key_without_plaintext(KeyId=kid, KeySpec='AES_256')
    assert 'Plaintext' not in w
    assert len(ka.decrypt(CiphertextBlob=w['CiphertextBlob'])['Plaintext']) == 32
    # Key material and data keys never reach the log.
    log = amid.daemon.read_log()
    assert base64.b64encode(r['Plaintext']).decode() not in log
    assert r['Plaintext'].hex() not in log


def test_reencrypt(ka):
    k1, k2 = new_key(ka), new_key(ka)
    e = ka.encrypt(KeyId=k1['KeyId'], Plaintext=b'move me', EncryptionContext={'a': '1'})
    r = ka.re_encrypt(CiphertextBlob=e['CiphertextBlob'], SourceEncryptionContext={'a': '1'},
                      DestinationKeyId=k2['Arn'], DestinationEncryptionContext={'b': '2'})
    assert r['SourceKeyId'] == k1['Arn'] and r['KeyId'] == k2['Arn']
    d = ka.decrypt(CiphertextBlob=r['CiphertextBlob'], EncryptionContext={'b': '2'})
    assert d['Plaintext'] == b'move me' and d['KeyId'] == k2['Arn']
    raises('IncorrectKeyException', ka.re_encrypt, CiphertextBlob=e['CiphertextBlob'],
           SourceEncryptionContext={'a': '1'}, SourceKeyId=k2['KeyId'],
           DestinationKeyId=k2['KeyId'])
    raises('InvalidCiphertextException', ka.re_encrypt, CiphertextBlob=e['CiphertextBlob'],
           DestinationKeyId=k2['KeyId'])


def test_key_states(ka):
    m = new_key(ka)
    kid, arn = m['KeyId'], m['Arn']
    blob = ka.encrypt(KeyId=kid, Plaintext=b'x')['CiphertextBlob']
    ka.disable_key(KeyId=kid)
    d = ka.describe_key(KeyId=kid)['KeyMetadata']
    assert d['KeyState'] == 'Disabled' and d['Enabled'] is False
    err = raises('DisabledException', ka.encrypt, KeyId=kid, Plaintext=b'x')
    assert arn in err['Message']
    raises('DisabledException', ka.decrypt, CiphertextBlob=blob)
    raises('DisabledException', ka.generate_data_key, KeyId=kid, KeySpec='AES_256')
    ka.enable_key(KeyId=arn)
    assert ka.decrypt(CiphertextBlob=blob)['Plaintext'] == b'x'
    raises('ValidationException', ka.schedule_key_deletion, KeyId=kid, PendingWindowInDays=6)
    raises('ValidationException', ka.schedule_key_deletion, KeyId=kid, PendingWindowInDays=31)
    raises('NotFoundException', ka.schedule_key_deletion, KeyId='alias/whatever')
    before = time.time()
    s = ka.schedule_key_deletion(KeyId=kid)
    assert s['KeyState'] == 'PendingDeletion' and s['PendingWindowInDays'] == 30
    assert s['KeyId'] == arn
    assert abs(s['DeletionDate'].timestamp() - (before + 30 * 86400)) < 600
    d = ka.describe_key(KeyId=kid)['KeyMetadata']
    assert d['KeyState'] == 'PendingDeletion' and 'DeletionDate' in d
    raises('KMSInvalidStateException', ka.encrypt, KeyId=kid, Plaintext=b'x')
    raises('KMSInvalidStateException', ka.decrypt, CiphertextBlob=blob)
    raises('KMSInvalidStateException', ka.enable_key, KeyId=kid)
    raises('KMSInvalidStateException', ka.disable_key, KeyId=kid)
    raises('KMSInvalidStateException', ka.schedule_key_deletion, KeyId=kid)
    raises('KMSInvalidStateException', ka.tag_resource, KeyId=kid,
           Tags=[{'TagKey': 'a', 'TagValue': 'b'}])
    raises('KMSInvalidStateException', ka.create_alias, AliasName='alias/doomed',
           TargetKeyId=kid)
    assert ka.cancel_key_deletion(KeyId=kid)['KeyId'] == arn
    assert ka.describe_key(KeyId=kid)['KeyMetadata']['KeyState'] == 'Disabled'
    raises('KMSInvalidStateException', ka.cancel_key_deletion, KeyId=kid)
    ka.enable_key(KeyId=kid)
    assert ka.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)['PendingWindowInDays'] == 7


def test_unsupported_key_kinds_are_refused(ka):
    raises('UnsupportedOperationException', ka.create_key, KeySpec='RSA_2048',
           KeyUsage='ENCRYPT_DECRYPT')
    raises('UnsupportedOperationException', ka.create_key, KeySpec='HMAC_256',
           KeyUsage='GENERATE_VERIFY_MAC')
    raises('UnsupportedOperationException', ka.create_key, CustomerMasterKeySpec='ECC_NIST_P256')
    raises('ValidationException', ka.create_key, KeyUsage='SIGN_VERIFY')
    raises('ValidationException', ka.create_key, KeySpec='SYMMETRIC_DEFAULT',
           CustomerMasterKeySpec='SYMMETRIC_DEFAULT')
    raises('UnsupportedOperationException', ka.create_key, Origin='EXTERNAL')
    raises('UnsupportedOperationException', ka.create_key, MultiRegion=True)
    raises('CustomKeyStoreNotFoundException', ka.create_key, CustomKeyStoreId='cks-1234567890')
    assert new_key(ka, KeySpec='SYMMETRIC_DEFAULT', KeyUsage='ENCRYPT_DECRYPT',
                   Origin='AWS_KMS', MultiRegion=False)['KeyState'] == 'Enabled'


def test_aliases(ka, acct_a):
    k1, k2 = new_key(ka)['KeyId'], new_key(ka)['KeyId']
    ka.create_alias(AliasName='alias/app-1', TargetKeyId=k1)
    err = raises('AlreadyExistsException', ka.create_alias, AliasName='alias/app-1',
                 TargetKeyId=k2)
    assert 'arn:aws:kms:us-east-1:%s:alias/app-1' % acct_a.account_id in err['Message']
    raises('ValidationException', ka.create_alias, AliasName='app-2', TargetKeyId=k1)
    raises('ValidationException', ka.create_alias, AliasName='alias/bad:name', TargetKeyId=k1)
    raises('ValidationException', ka.create_alias, AliasName='alias/sp ace', TargetKeyId=k1)
    raises('InvalidAliasNameException', ka.create_alias, AliasName='alias/', TargetKeyId=k1)
    raises('AccessDeniedException', ka.create_alias, AliasName='alias/aws/mine', TargetKeyId=k1)
    raises('ValidationException', ka.create_alias, AliasName='alias/app-3',
           TargetKeyId='alias/app-1')
    raises('NotFoundException', ka.create_alias, AliasName='alias/app-3',
           TargetKeyId=str(uuid.uuid4()))
    ka.update_alias(AliasName='alias/app-1', TargetKeyId=k2)
    assert ka.describe_key(KeyId='alias/app-1')['KeyMetadata']['KeyId'] == k2
    raises('NotFoundException', ka.update_alias, AliasName='alias/none', TargetKeyId=k2)
    raises('NotFoundException', ka.update_alias, AliasName='alias/aws/s3', TargetKeyId=k2)
    listed = ka.list_aliases(KeyId=k2)['Aliases']
    assert [a['AliasName'] for a in listed] == ['alias/app-1']
    assert listed[0]['TargetKeyId'] == k2 and 'CreationDate' in listed[0]
    assert listed[0]['AliasArn'] == 'arn:aws:kms:us-east-1:%s:alias/app-1' % acct_a.account_id
    assert ka.list_aliases(KeyId=k1)['Aliases'] == []
    ka.delete_alias(AliasName='alias/app-1')
    raises('NotFoundException', ka.delete_alias, AliasName='alias/app-1')
    raises('NotFoundException', ka.describe_key, KeyId='alias/app-1')


def test_list_paging(amid):
    c = amid.new_account('kms-pager')
    k = amid.client('kms', c)
    ids = sorted(new_key(k)['KeyId'] for _ in range(5))
    for i, kid in enumerate(ids):
        k.create_alias(AliasName='alias/p%d' % i, TargetKeyId=kid)
    keys_marker = k.list_keys(Limit=1)['NextMarker']
    seen, marker = [], None
    while True:
        r = k.list_keys(Limit=2, **({'Marker': marker} if marker else {}))
        seen += [x['KeyId'] for x in r['Keys']]
        if not r['Truncated']:
            assert 'NextMarker' not in r
            break
        marker = r['NextMarker']
    assert seen == ids
    names, marker = [], None
    while True:
        r = k.list_aliases(Limit=1, **({'Marker': marker} if marker else {}))
        names += [x['AliasName'] for x in r['Aliases']]
        if not r['Truncated']:
            break
        marker = r['NextMarker']
    # The predefined alias/aws/ebs is listed (without a target until its key exists).
    assert names == ['alias/aws/ebs'] + ['alias/p%d' % i for i in range(5)]
    raises('InvalidMarkerException', k.list_keys, Marker='bogus-marker')
    # A marker is good only for the operation that made it.
    raises('InvalidMarkerException', k.list_aliases, Marker=keys_marker)
    raises('ValidationException', k.list_aliases, Limit=101)
    # A marker is good only for the account that received it.
    r = k.list_keys(Limit=1)
    other = amid.client('kms', amid.new_account('kms-pager-2'))
    raises('InvalidMarkerException', other.list_keys, Marker=r['NextMarker'])


def test_aws_managed_ebs_key(ka, acct_a):
    m = ka.describe_key(KeyId='alias/aws/ebs')['KeyMetadata']
    assert m['KeyManager'] == 'AWS' and m['KeyState'] == 'Enabled'
    kid = m['KeyId']
    assert ka.describe_key(KeyId='alias/aws/ebs')['KeyMetadata']['KeyId'] == kid
    assert kid in [k['KeyId'] for k in ka.list_keys(Limit=1000)['Keys']]
    aliases = {a['AliasName']: a for a in ka.list_aliases(Limit=100)['Aliases']}
    assert aliases['alias/aws/ebs']['TargetKeyId'] == kid
    pol = json.loads(ka.get_key_policy(KeyId=kid, PolicyName='default')['Policy'])
    assert pol['Statement'][0]['Condition']['StringEquals']['kms:ViaService'] == \
        'ec2.us-east-1.amazonaws.com'
    # Users cannot manage or directly use AWS-managed keys.
    raises('AccessDeniedException', ka.disable_key, KeyId=kid)
    raises('AccessDeniedException', ka.schedule_key_deletion, KeyId=kid)
    raises('AccessDeniedException', ka.put_key_policy, KeyId=kid, PolicyName='default',
           Policy=json.dumps(pol))
    raises('AccessDeniedException', ka.encrypt, KeyId='alias/aws/ebs', Plaintext=b'x')
    raises('AccessDeniedException', ka.tag_resource, KeyId=kid,
           Tags=[{'TagKey': 'a', 'TagValue': 'b'}])
    raises('AccessDeniedException', ka.create_alias, AliasName='alias/mine-ebs', TargetKeyId=kid)
    raises('AccessDeniedException', ka.delete_alias, AliasName='alias/aws/ebs')
    raises('AccessDeniedException', ka.create_alias, AliasName='alias/aws/ebs',
           TargetKeyId=new_key(ka)['KeyId'])
    raises('NotFoundException', ka.describe_key, KeyId='alias/aws/s3')


def test_cross_account_by_policy(ka, kb, acct_a, acct_b):
    m = new_key(ka)
    kid, arn = m['KeyId'], m['Arn']
    ka.create_alias(AliasName='alias/shared', TargetKeyId=kid)
    aarn = 'arn:aws:kms:us-east-1:%s:alias/shared' % acct_a.account_id
    blob = ka.encrypt(KeyId=kid, Plaintext=b'for b')['CiphertextBlob']
    # Without policy or grant B gets nothing; by id or alias name B looks in its own account.
    raises('AccessDeniedException', kb.encrypt, KeyId=arn, Plaintext=b'x')
    raises('AccessDeniedException', kb.describe_key, KeyId=arn)
    raises('AccessDeniedException', kb.decrypt, CiphertextBlob=blob)
    raises('NotFoundException', kb.describe_key, KeyId=kid)
    raises('NotFoundException', kb.describe_key, KeyId='alias/shared')
    assert kid not in [k['KeyId'] for k in kb.list_keys(Limit=1000)['Keys']]
    assert 'alias/shared' not in [a['AliasName'] for a in kb.list_aliases(Limit=100)['Aliases']]
    default = json.loads(ka.get_key_policy(KeyId=kid, PolicyName='default')['Policy'])
    assert default['Statement'][0]['Principal'] == {
        'AWS': 'arn:aws:iam::%s:root' % acct_a.account_id}
    assert default['Statement'][0]['Action'] == 'kms:*'
    policy = {
        'Version': '2012-10-17',
        'Statement': [
            default['Statement'][0],
            {'Sid': 'b-uses', 'Effect': 'Allow',
             'Principal': {'AWS': [acct_b.account_id, '999999999999']},
             'Action': ['kms:Encrypt', 'kms:Decrypt', 'kms:GenerateDataKey*',
                        'kms:Describe*'],
             'Resource': '*'},
        ]}
    ka.put_key_policy(KeyId=kid, PolicyName='default', Policy=json.dumps(policy))
    assert kb.describe_key(KeyId=arn)['KeyMetadata']['KeyId'] == kid
    assert kb.describe_key(KeyId=aarn)['KeyMetadata']['KeyId'] == kid
    e = kb.encrypt(KeyId=aarn, Plaintext=b'from b', EncryptionContext={'x': 'y'})
    assert e['KeyId'] == arn
    assert ka.decrypt(CiphertextBlob=e['CiphertextBlob'],
                      EncryptionContext={'x': 'y'})['Plaintext'] == b'from b'
    assert kb.decrypt(CiphertextBlob=blob)['Plaintext'] == b'for b'
    assert len(kb.generate_data_key_without_plaintext(KeyId=arn, NumberOfBytes=16)[
        'CiphertextBlob']) > 16
    # Management never crosses accounts; B still lists nothing of A's.
    raises('NotFoundException', kb.disable_key, KeyId=arn)
    raises('NotFoundException', kb.get_key_policy, KeyId=arn, PolicyName='default')
    raises('NotFoundException', kb.tag_resource, KeyId=arn,
           Tags=[{'TagKey': 'a', 'TagValue': 'b'}])
    assert kid not in [k['KeyId'] for k in kb.list_keys(Limit=1000)['Keys']]
    # ReEncrypt needs ReEncryptFrom/To, which the policy does not give B.
    raises('AccessDeniedException', kb.re_encrypt, CiphertextBlob=blob, DestinationKeyId=arn)
    # An explicit Deny wins over an Allow.
    policy['Statement'].append({'Effect': 'Deny', 'Principal': {'AWS': 'arn:aws:iam::%s:root'
                                                                % acct_b.account_id},
                                'Action': 'kms:Decrypt', 'Resource': arn})
    ka.put_key_policy(KeyId=kid, PolicyName='default', Policy=json.dumps(policy))
    err = raises('AccessDeniedException', kb.decrypt, CiphertextBlob=blob)
    assert 'explicit deny' in err['Message']
    kb.encrypt(KeyId=arn, Plaintext=b'still allowed')
    # Principal "*" with a kms:CallerAccount condition.
    star = {'Version': '2012-10-17', 'Statement': [
        default['Statement'][0],
        {'Effect': 'Allow', 'Principal': '*', 'Action': 'kms:Encrypt', 'Resource': '*',
         'Condition': {'StringEquals': {'kms:CallerAccount': acct_b.account_id}}}]}
    ka.put_key_policy(KeyId=kid, PolicyName='default', Policy=json.dumps(star))
    kb.encrypt(KeyId=arn, Plaintext=b'x')
    raises('AccessDeniedException', kb.decrypt, CiphertextBlob=blob)


def test_put_key_policy_errors(ka, acct_a, acct_b):
    kid = new_key(ka)['KeyId']
    root = 'arn:aws:iam::%s:root' % acct_a.account_id

    def pol(*stmts, **top):
        d = {'Version': '2012-10-17', 'Statement': list(stmts)}
        d.update(top)
        return json.dumps(d)

    owner = {'Effect': 'Allow', 'Principal': {'AWS': root}, 'Action': 'kms:*', 'Resource': '*'}
    for bad in ('not json', '[]', pol(), json.dumps({'Statement': [owner], 'Version': '2000'}),
                pol(dict(owner, Effect='Maybe')),
                pol(dict(owner, Principal={'AWS': 'arn:aws:iam::%s:user/bob' %
                                           acct_a.account_id})),
                pol(dict(owner, Principal={'AWS': '12345'})),
                pol(dict(owner, Principal={'Federated': 'x'})),
                pol(dict(owner, Action='s3:GetObject')),
                pol(owner, {'Effect': 'Allow', 'NotPrincipal': {'AWS': root},
                            'Action': 'kms:*', 'Resource': '*'}),
                pol(dict(owner, Condition={'StringEquals': {'kms:EncryptionContext:x': 'y'}})),
                pol(dict(owner, Condition={'NumericLessThan': {'kms:CallerAccount': '1'}})),
                pol(dict(owner, Resource='arn:aws:s3:::bucket')),
                pol(owner, Extra='x')):
        raises('MalformedPolicyDocumentException', ka.put_key_policy, KeyId=kid,
               PolicyName='default', Policy=bad)
        raises('MalformedPolicyDocumentException', ka.create_key, Policy=bad)
    # The lockout safety check, and its bypass.
    only_b = pol({'Effect': 'Allow', 'Principal': {'AWS': acct_b.account_id}, 'Action': 'kms:*',
                  'Resource': '*'})
    err = raises('MalformedPolicyDocumentException', ka.put_key_policy, KeyId=kid,
                 PolicyName='default', Policy=only_b)
    assert 'update the key policy in the future' in err['Message']
    raises('MalformedPolicyDocumentException', ka.create_key, Policy=only_b)
    raises('NotFoundException', ka.put_key_policy, KeyId=kid, PolicyName='other',
           Policy=pol(owner))
    raises('NotFoundException', ka.get_key_policy, KeyId=kid, PolicyName='other')
    # Wildcard actions and a list of principals, then a policy that leaves out PutKeyPolicy.
    ka.put_key_policy(KeyId=kid, PolicyName='default', Policy=pol(
        dict(owner, Action=['kms:Put*', 'kms:Get*', 'kms:Describe*', 'kms:Encrypt'],
             Principal={'AWS': [root, acct_b.account_id]})))
    ka.encrypt(KeyId=kid, Plaintext=b'x')
    raises('AccessDeniedException', ka.disable_key, KeyId=kid)
    locked = new_key(ka, Policy=only_b, BypassPolicyLockoutSafetyCheck=True)['KeyId']
    raises('AccessDeniedException', ka.get_key_policy, KeyId=locked, PolicyName='default')
    raises('AccessDeniedException', ka.describe_key, KeyId=locked)
    assert locked in [k['KeyId'] for k in ka.list_keys(Limit=1000)['Keys']]


def test_grants(ka, kb, acct_a, acct_b):
    m = new_key(ka)
    kid, arn = m['KeyId'], m['Arn']
    b_root = 'arn:aws:iam::%s:root' % acct_b.account_id
    g = ka.create_grant(KeyId=kid, GranteePrincipal=b_root, Name='b-encrypt',
                        Operations=['Encrypt', 'Decrypt', 'DescribeKey'],
                        RetiringPrincipal=acct_a.account_id,
                        Constraints={'EncryptionContextSubset': {'tenant': 'b'}})
    gid, token = g['GrantId'], g['GrantToken']
    assert len(gid) == 64
    # The same name and parameters give the same grant.
    again = ka.create_grant(KeyId=kid, GranteePrincipal=b_root, Name='b-encrypt',
                            Operations=['DescribeKey', 'Encrypt', 'Decrypt'],
                            RetiringPrincipal=acct_a.account_id,
                            Constraints={'EncryptionContextSubset': {'tenant': 'b'}})
    assert again['GrantId'] == gid
    e = kb.encrypt(KeyId=arn, Plaintext=b'granted', EncryptionContext={'tenant': 'b', 'x': '1'},
                   GrantTokens=[token])
    assert kb.decrypt(CiphertextBlob=e['CiphertextBlob'],
                      EncryptionContext={'tenant': 'b', 'x': '1'})['Plaintext'] == b'granted'
    # The constraint binds the context; DescribeKey is not constrained.
    raises('AccessDeniedException', kb.encrypt, KeyId=arn, Plaintext=b'x')
    raises('AccessDeniedException', kb.encrypt, KeyId=arn, Plaintext=b'x',
           EncryptionContext={'tenant': 'c'})
    assert kb.describe_key(KeyId=arn)['KeyMetadata']['KeyId'] == kid
    raises('AccessDeniedException', kb.generate_data_key, KeyId=arn, KeySpec='AES_256',
           EncryptionContext={'tenant': 'b'})
    raises('InvalidGrantTokenException', kb.encrypt, KeyId=arn, Plaintext=b'x',
           EncryptionContext={'tenant': 'b'}, GrantTokens=['not-a-token'])
    forged = base64.urlsafe_b64decode(token + '=' * (-len(token) % 4))
    forged = base64.urlsafe_b64encode(forged[:-1] + bytes([forged[-1] ^ 1])).decode()
    raises('InvalidGrantTokenException', kb.describe_key, KeyId=arn, GrantTokens=[forged])
    # ListGrants: the key's account by policy; B has no kms:ListGrants.
    lg = ka.list_grants(KeyId=kid)['Grants']
    assert len(lg) == 1
    assert lg[0]['GrantId'] == gid and lg[0]['KeyId'] == arn and lg[0]['Name'] == 'b-encrypt'
    assert lg[0]['GranteePrincipal'] == b_root
    assert lg[0]['IssuingAccount'] == 'arn:aws:iam::%s:root' % acct_a.account_id
    assert sorted(lg[0]['Operations']) == ['Decrypt', 'DescribeKey', 'Encrypt']
    assert lg[0]['Constraints'] == {'EncryptionContextSubset': {'tenant': 'b'}}
    raises('AccessDeniedException', kb.list_grants, KeyId=arn)
    # Grants for B that may create grants: no wider than their own operations.
    g2 = ka.create_grant(KeyId=kid, GranteePrincipal=acct_b.account_id,
                         Operations=['GenerateDataKey', 'CreateGrant', 'RetireGrant'])
    g3 = kb.create_grant(KeyId=arn, GranteePrincipal=acct_b.account_id,
                         Operations=['GenerateDataKey'])
    raises('AccessDeniedException', kb.create_grant, KeyId=arn,
           GranteePrincipal=acct_b.account_id, Operations=['Decrypt'])
    assert len(kb.generate_data_key(KeyId=arn, KeySpec='AES_256')['Plaintext']) == 32
    assert {x['GrantId'] for x in ka.list_grants(KeyId=kid)['Grants']} == \
        {gid, g2['GrantId'], g3['GrantId']}
    # Filters and paging.
    assert [x['GrantId'] for x in ka.list_grants(KeyId=kid, GrantId=g3['GrantId'])[
        'Grants']] == [g3['GrantId']]
    assert [x['GrantId'] for x in ka.list_grants(KeyId=kid, GranteePrincipal=b_root)[
        'Grants']] == [gid]
    pages, marker = [], None
    while True:
        r = ka.list_grants(KeyId=kid, Limit=1, **({'Marker': marker} if marker else {}))
        pages += [x['GrantId'] for x in r['Grants']]
        if not r['Truncated']:
            break
        marker = r['NextMarker']
    assert sorted(pages) == sorted({gid, g2['GrantId'], g3['GrantId']})
    # Retiring: the grantee with RetireGrant may; the retiring principal may; others not.
    kb.retire_grant(GrantToken=g3['GrantToken'])
    raises('NotFoundException', kb.retire_grant, GrantToken=g3['GrantToken'])
    raises('AccessDeniedException', kb.retire_grant, KeyId=arn, GrantId=gid)
    ka.retire_grant(KeyId=arn, GrantId=gid)
    raises('AccessDeniedException', kb.encrypt, KeyId=arn, Plaintext=b'x',
           EncryptionContext={'tenant': 'b'})
    raises('ValidationException', kb.retire_grant, GrantId=g2['GrantId'])
    raises('InvalidGrantIdException', ka.retire_grant, KeyId=arn, GrantId='nope')
    # Revoking: the key's account by policy.
    raises('AccessDeniedException', kb.revoke_grant, KeyId=arn, GrantId=g2['GrantId'])
    raises('InvalidGrantIdException', ka.revoke_grant, KeyId=kid, GrantId='bad-id')
    raises('NotFoundException', ka.revoke_grant, KeyId=kid, GrantId='0' * 64)
    ka.revoke_grant(KeyId=kid, GrantId=g2['GrantId'])
    assert ka.list_grants(KeyId=kid)['Grants'] == []
    raises('AccessDeniedException', kb.generate_data_key, KeyId=arn, KeySpec='AES_256')
    # What grants cannot hold.
    raises('ValidationException', ka.create_grant, KeyId=kid, GranteePrincipal=b_root,
           Operations=['Sign'])
    raises('ValidationException', ka.create_grant, KeyId=kid,
           GranteePrincipal='arn:aws:iam::%s:user/bob' % acct_b.account_id,
           Operations=['Decrypt'])
    raises('ValidationException', ka.create_grant, KeyId=kid, GranteePrincipal=b_root,
           Operations=['Decrypt'], Name='bad name')
    raises('NotFoundException', ka.create_grant, KeyId='alias/none', GranteePrincipal=b_root,
           Operations=['Decrypt'])


def test_grant_limit_per_grantee(amid):
    k = amid.client('kms', amid.new_account('kms-grant-limit'))
    kid = new_key(k)['KeyId']
    grantee = amid.new_account('kms-grant-limit-b').account_id
    for i in range(500):
        k.create_grant(KeyId=kid, GranteePrincipal=grantee, Operations=['Decrypt'],
                       Name='g%d' % i)
    raises('LimitExceededException', k.create_grant, KeyId=kid, GranteePrincipal=grantee,
           Operations=['Decrypt'], Name='one-too-many')
    # The same name and parameters is the existing grant, not a new one.
    k.create_grant(KeyId=kid, GranteePrincipal=grantee, Operations=['Decrypt'], Name='g7')


def test_tags(ka):
    kid = new_key(ka)['KeyId']
    ka.tag_resource(KeyId=kid, Tags=[{'TagKey': 'b', 'TagValue': '2'},
                                     {'TagKey': 'a', 'TagValue': '1'},
                                     {'TagKey': 'c d', 'TagValue': 'x@y.z/+=-_:'}])
    ka.tag_resource(KeyId=kid, Tags=[{'TagKey': 'a', 'TagValue': 'one'}])
    assert ka.list_resource_tags(KeyId=kid)['Tags'] == [
        {'TagKey': 'a', 'TagValue': 'one'}, {'TagKey': 'b', 'TagValue': '2'},
        {'TagKey': 'c d', 'TagValue': 'x@y.z/+=-_:'}]
    r = ka.list_resource_tags(KeyId=kid, Limit=2)
    assert r['Truncated'] and len(r['Tags']) == 2
    r = ka.list_resource_tags(KeyId=kid, Limit=2, Marker=r['NextMarker'])
    assert not r['Truncated'] and r['Tags'] == [{'TagKey': 'c d', 'TagValue': 'x@y.z/+=-_:'}]
    ka.untag_resource(KeyId=kid, TagKeys=['b', 'missing'])
    assert [t['TagKey'] for t in ka.list_resource_tags(KeyId=kid)['Tags']] == ['a', 'c d']
    raises('TagException', ka.tag_resource, KeyId=kid, Tags=[{'TagKey': 'aws:x',
                                                              'TagValue': '1'}])
    raises('TagException', ka.tag_resource, KeyId=kid, Tags=[{'TagKey': 'bad#char',
                                                              'TagValue': '1'}])
    raises('TagException', ka.tag_resource, KeyId=kid, Tags=[{'TagKey': 'd', 'TagValue': '1'},
                                                             {'TagKey': 'd', 'TagValue': '2'}])
    raises('TagException', ka.untag_resource, KeyId=kid, TagKeys=['aws:x'])
    raises('TagException', ka.create_key, Tags=[{'TagKey': 'aws:x', 'TagValue': '1'}])
    raises('LimitExceededException', ka.tag_resource, KeyId=kid,
           Tags=[{'TagKey': 't%d' % i, 'TagValue': 'v'} for i in range(49)])
    assert len(ka.list_resource_tags(KeyId=kid)['Tags']) == 2
    ka.tag_resource(KeyId=kid, Tags=[{'TagKey': 't%d' % i, 'TagValue': 'v'} for i in range(48)])
    raises('ValidationException', ka.list_resource_tags, KeyId=kid, Limit=51)
    raises('NotFoundException', ka.tag_resource, KeyId=str(uuid.uuid4()),
           Tags=[{'TagKey': 'a', 'TagValue': 'b'}])


def test_dry_run(ka):
    kid = new_key(ka)['KeyId']
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ka.encrypt(KeyId=kid, Plaintext=b'x', DryRun=True)
    assert code_of(e) == 'DryRunOperationException'
    assert e.value.response['ResponseMetadata']['HTTPStatusCode'] == 412
    blob = ka.encrypt(KeyId=kid, Plaintext=b'x')['CiphertextBlob']
    raises('DryRunOperationException', ka.decrypt, CiphertextBlob=blob, DryRun=True)
    bad = blob[:-1] + bytes([blob[-1] ^ 1])
    raises('InvalidCiphertextException', ka.decrypt, CiphertextBlob=bad, DryRun=True)
    raises('DryRunOperationException', ka.decrypt, CiphertextBlob=bad, DryRun=True,
           DryRunModifiers=['IGNORE_CIPHERTEXT'])
    raises('DryRunOperationException', ka.generate_data_key, KeyId=kid, KeySpec='AES_256',
           DryRun=True)
    raises('DryRunOperationException', ka.create_grant, KeyId=kid,
           GranteePrincipal='123456789012', Operations=['Decrypt'], DryRun=True)
    assert ka.list_grants(KeyId=kid)['Grants'] == []
    ka.disable_key(KeyId=kid)
    raises('DisabledException', ka.encrypt, KeyId=kid, Plaintext=b'x', DryRun=True)


def test_json_protocol_errors(amid, acct_a):
    def call(target, body):
        url, headers, data = rawreq.sign(
            amid.endpoint, acct_a, body=body, service='kms',
            headers={'X-Amz-Target': target, 'Content-Type': 'application/x-amz-json-1.1'})
        return rawreq.send(url, 'POST', headers, data)

    r = call('TrentService.ListKeys', b'{}')
    assert r.status == 200 and 'Keys' in json.loads(r.text)
    r = call('TrentService.NoSuchThing', b'{}')
    assert r.status == 400 and r.code() == 'UnknownOperationException'
    r = call('TrentService.DescribeKey', b'{not json')
    assert r.code() == 'SerializationException'
    r = call('TrentService.DescribeKey', b'{"KeyId": "x", "Bogus": 1}')
    assert r.code() == 'ValidationException'
    r = call('TrentService.DescribeKey', b'{}')
    assert r.code() == 'ValidationException'
    r = call('TrentService.DescribeKey', json.dumps({'KeyId': str(uuid.uuid4())}).encode())
    body = json.loads(r.text)
    assert r.status == 400 and body['__type'] == 'NotFoundException' and body['message']
    assert r.headers['content-type'] == 'application/x-amz-json-1.1'
    assert r.headers['x-amzn-errortype'] == 'NotFoundException'


def test_ebs_encryption_defaults(amid, acct_a, ka):
    ec2 = amid.client('ec2', acct_a)
    alias_arn = 'arn:aws:kms:us-east-1:%s:alias/aws/ebs' % acct_a.account_id
    assert ec2.get_ebs_default_kms_key_id()['KmsKeyId'] == alias_arn
    assert ec2.get_ebs_encryption_by_default()['EbsEncryptionByDefault'] is False
    assert ec2.enable_ebs_encryption_by_default()['EbsEncryptionByDefault'] is True
    assert ec2.get_ebs_encryption_by_default()['EbsEncryptionByDefault'] is True
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.disable_ebs_encryption_by_default(DryRun=True)
    assert code_of(e) == 'DryRunOperation'
    assert ec2.get_ebs_encryption_by_default()['EbsEncryptionByDefault'] is True
    # Per account and region.
    west = amid.client('ec2', acct_a, region='us-west-2')
    assert west.get_ebs_encryption_by_default()['EbsEncryptionByDefault'] is False
    other = amid.client('ec2', amid.new_account('kms-ebs-other'))
    assert other.get_ebs_encryption_by_default()['EbsEncryptionByDefault'] is False
    m = new_key(ka)
    ka.create_alias(AliasName='alias/ebs-default', TargetKeyId=m['KeyId'])
    for ref in (m['KeyId'], m['Arn'], 'alias/ebs-default',
                'arn:aws:kms:us-east-1:%s:alias/ebs-default' % acct_a.account_id):
        assert ec2.modify_ebs_default_kms_key_id(KmsKeyId=ref)['KmsKeyId'] == m['Arn']
        assert ec2.get_ebs_default_kms_key_id()['KmsKeyId'] == m['Arn']
    # The AWS-managed key, which users cannot use directly, EC2 can.
    ebs_key = ka.describe_key(KeyId='alias/aws/ebs')['KeyMetadata']['Arn']
    assert ec2.modify_ebs_default_kms_key_id(KmsKeyId='alias/aws/ebs')['KmsKeyId'] == ebs_key
    raises('InvalidParameterValue', ec2.modify_ebs_default_kms_key_id,
           KmsKeyId=str(uuid.uuid4()))
    raises('InvalidParameterValue', ec2.modify_ebs_default_kms_key_id, KmsKeyId='alias/none')
    # The key must be usable: enabled, and the caller's or shared with it.
    off = new_key(ka)['KeyId']
    ka.disable_key(KeyId=off)
    err = raises('InvalidParameterValue', ec2.modify_ebs_default_kms_key_id, KmsKeyId=off)
    assert 'DisabledException' in err['Message']
    theirs = new_key(amid.client('kms', amid.new_account('kms-ebs-stranger')))['Arn']
    err = raises('InvalidParameterValue', ec2.modify_ebs_default_kms_key_id, KmsKeyId=theirs)
    assert 'AccessDeniedException' in err['Message']
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.reset_ebs_default_kms_key_id(DryRun=True)
    assert code_of(e) == 'DryRunOperation'
    assert ec2.get_ebs_default_kms_key_id()['KmsKeyId'] == ebs_key
    assert ec2.reset_ebs_default_kms_key_id()['KmsKeyId'] == alias_arn
    assert ec2.get_ebs_default_kms_key_id()['KmsKeyId'] == alias_arn
    assert ec2.disable_ebs_encryption_by_default()['EbsEncryptionByDefault'] is False


@pytest.fixture(scope='module')
def own():
    """A deployment of its own: these tests move its clock and kill its daemon."""
    tmp = tempfile.mkdtemp(prefix='amid-kms-')
    a = Amid(tmp)
    try:
        yield a
        a.daemon.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clock(amid, *args):
    run_amid('clock', *args, '--data', amid.datadir)
    time.sleep(1.2)  # the daemon re-reads the offset once a second


# The interface core offers EC2 (core.h, "Keys (KMS)"), driven from C as volumes and snapshots
# call it.  argv: DATA A B KEY_A DISABLED_A PENDING_A SHARED_A (ARNs of A's customer keys; SHARED_A
# lets B use it by key policy).
CORE_CHECK_C = r'''
#include "core/core.h"
#include "crypto/crypto.h"

#include <stdio.h>
#include <string.h>

static int fails;
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "FAIL line %d: ", __LINE__);                   \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
            fails++;                                                       \
        }                                                                  \
    } while (0)

static const char *code(int rc, const struct err *e)
{
    return rc == 0 ? "ok" : e->code ? e->code : "?";
}

int main(int argc, char **argv)
{
    if (argc != 8)
        return 2;
    struct app *app;
    struct err e = { 0 };
    if (core_open(argv[1], &app, &e) < 0) {
        fprintf(stderr, "core_open: %s\n", e.msg);
        return 2;
    }
    struct core_caller a = { argv[2], "us-east-1", false }, b = { argv[3], "us-east-1", false };
    const char *key_a = argv[4], *disabled = argv[5], *pending = argv[6], *shared = argv[7];
    struct core_kms_key ebs, k, again_k;
    int rc = core_kms_ebs_key(app, &a, &ebs, &e);
    CHECK(rc == 0 && ebs.aws_managed && !strcmp(ebs.state, "Enabled") &&
              !strcmp(ebs.account, a.account_id) && !strcmp(ebs.region, "us-east-1"),
          "core_kms_ebs_key: %s", code(rc, &e));
    rc = core_kms_ebs_key(app, &a, &again_k, &e);
    CHECK(rc == 0 && !strcmp(again_k.id, ebs.id), "alias/aws/ebs is made once");
    rc = core_kms_key_for_use(app, &a, "alias/aws/ebs", &k, &e);
    CHECK(rc == 0 && !strcmp(k.arn, ebs.arn), "key_for_use alias/aws/ebs: %s", code(rc, &e));

    uint8_t plain[32], again[32], blob[CORE_KMS_BLOB_MAX], bad[CORE_KMS_BLOB_MAX];
    size_t n = 0;
    rc = core_kms_data_key_new(app, &a, ebs.arn, plain, blob, &n, &e);
    CHECK(rc == 0 && n > 32 && n <= CORE_KMS_BLOB_MAX, "data_key_new: %s", code(rc, &e));
    rc = core_kms_data_key_open(app, &a, "alias/aws/ebs", blob, n, again, &e);
    CHECK(rc == 0 && !memcmp(plain, again, 32), "data_key_open: %s", code(rc, &e));
    memset(&e, 0, sizeof(e));
    rc = core_kms_data_key_open(app, &a, key_a, blob, n, again, &e);
    CHECK(rc < 0 && !strcmp(code(rc, &e), "IncorrectKeyException"), "wrong key: %s",
          code(rc, &e));
    memcpy(bad, blob, n);
    bad[n - 1] ^= 1;
    memset(&e, 0, sizeof(e));
    rc = core_kms_data_key_open(app, &a, ebs.arn, bad, n, again, &e);
    CHECK(rc < 0 && !strcmp(code(rc, &e), "InvalidCiphertextException"), "tampered: %s",
          code(rc, &e));

    /* A's customer key: round trip; its other states. */
    rc = core_kms_key_for_use(app, &a, key_a, &k, &e);
    CHECK(rc == 0 && !k.aws_managed && !strcmp(k.arn, key_a), "key_for_use: %s", code(rc, &e));
    rc = core_kms_data_key_new(app, &a, key_a, plain, blob, &n, &e);
    CHECK(rc == 0, "data_key_new customer: %s", code(rc, &e));
    rc = core_kms_data_key_open(app, &a, k.id, blob, n, again, &e);
    CHECK(rc == 0 && !memcmp(plain, again, 32), "data_key_open customer: %s", code(rc, &e));
    memset(&e, 0, sizeof(e));
    rc = core_kms_key_for_use(app, &a, disabled, &k, &e);
    CHECK(rc < 0 && !strcmp(code(rc, &e), "DisabledException"), "disabled: %s", code(rc, &e));
    memset(&e, 0, sizeof(e));
    rc = core_kms_key_for_use(app, &a, pending, &k, &e);
    CHECK(rc < 0 && !strcmp(code(rc, &e), "KMSInvalidStateException"), "pending: %s",
          code(rc, &e));
    memset(&e, 0, sizeof(e));
    rc = core_kms_key_for_use(app, &a, "00000000-0000-4000-8000-000000000000", &k, &e);
    CHECK(rc < 0 && !strcmp(code(rc, &e), "NotFoundException"), "missing: %s", code(rc, &e));

    /* B: nothing of A's without policy or grant, A's managed key never; the shared key yes. */
    memset(&e, 0, sizeof(e));
    rc = core_kms_key_for_use(app, &b, key_a, &k, &e);
    CHECK(rc < 0 && !strcmp(code(rc, &e), "AccessDeniedException"), "B key_a: %s",
          code(rc, &e));
    memset(&e, 0, sizeof(e));
    rc = core_kms_key_for_use(app, &b, ebs.arn, &k, &e);
    CHECK(rc < 0 && !strcmp(code(rc, &e), "AccessDeniedException"), "B ebs: %s", code(rc, &e));
    memset(&e, 0, sizeof(e));
    rc = core_kms_data_key_open(app, &b, ebs.arn, blob, n, again, &e);
    CHECK(rc < 0, "B opens A's data key: %s", code(rc, &e));
    memset(&e, 0, sizeof(e));
    rc = core_kms_key_for_use(app, &b, strrchr(key_a, '/') + 1, &k, &e);
    CHECK(rc < 0 && !strcmp(code(rc, &e), "NotFoundException"), "B by id: %s", code(rc, &e));
    rc = core_kms_key_for_use(app, &b, shared, &k, &e);
    CHECK(rc == 0 && !strcmp(k.account, a.account_id), "B shared: %s", code(rc, &e));
    rc = core_kms_data_key_new(app, &b, shared, plain, blob, &n, &e);
    CHECK(rc == 0, "B data_key_new shared: %s", code(rc, &e));
    rc = core_kms_data_key_open(app, &b, shared, blob, n, again, &e);
    CHECK(rc == 0 && !memcmp(plain, again, 32), "B data_key_open shared: %s", code(rc, &e));

    /* EBS defaults: B's own alias/aws/ebs, made on first use. */
    bool on = true;
    struct core_kms_key dk;
    rc = core_ebs_encryption_defaults(app, &b, &on, &dk, &e);
    CHECK(rc == 0 && !on && dk.aws_managed && !strcmp(dk.account, b.account_id),
          "defaults: %s", code(rc, &e));
    rc = core_ebs_encryption_defaults(app, &a, &on, &dk, &e);
    CHECK(rc == 0 && !strcmp(dk.arn, ebs.arn), "defaults A: %s", code(rc, &e));
    crypto_wipe(plain, sizeof(plain));
    crypto_wipe(again, sizeof(again));
    core_close(app);
    if (!fails)
        printf("core kms: ok\n");
    return fails ? 1 : 0;
}
'''


def build_core_check(tmp_path):
    """Compiles CORE_CHECK_C against the static libraries of the build AMID comes from."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bdir = os.path.dirname(AMID)
    libs = sorted(p for p in glob.glob(os.path.join(bdir, 'src', '*', 'lib*.a'))
                  if 'testdev' not in p)
    with open(os.path.join(bdir, 'build.ninja')) as f:
        sanitize = ['-fsanitize=address,undefined'] if '-fsanitize=address' in f.read() else []
    src = tmp_path / 'core_check.c'
    src.write_text(CORE_CHECK_C)
    exe = str(tmp_path / 'core_check')
    subprocess.run(['cc', '-std=gnu11', '-g', '-D_GNU_SOURCE', '-D_FILE_OFFSET_BITS=64', *sanitize,
                    '-I', os.path.join(root, 'src'), str(src), '-o', exe,
                    '-Wl,--start-group', *libs, '-Wl,--end-group', '-pthread', '-lcrypto',
                    '-lsqlite3', '-lzstd', '-ljansson', '-lmicrohttpd', '-lcurl', '-lm'],
                   check=True, capture_output=True, text=True)
    return exe


def test_core_interface_for_ec2(own, tmp_path):
    a = own.client('kms')
    b_creds = own.new_account('core-check-b')
    key_a = new_key(a)['Arn']
    disabled = new_key(a)['Arn']
    a.disable_key(KeyId=disabled)
    pending = new_key(a)['Arn']
    a.schedule_key_deletion(KeyId=pending, PendingWindowInDays=7)
    shared = new_key(a)
    root = 'arn:aws:iam::%s:root' % own.admin.account_id
    a.put_key_policy(KeyId=shared['KeyId'], PolicyName='default', Policy=json.dumps({
        'Version': '2012-10-17', 'Statement': [
            {'Effect': 'Allow', 'Principal': {'AWS': root}, 'Action': 'kms:*', 'Resource': '*'},
            {'Effect': 'Allow', 'Principal': {'AWS': b_creds.account_id},
             'Action': ['kms:GenerateDataKey*', 'kms:Decrypt'], 'Resource': '*',
             'Condition': {'StringLike': {'kms:ViaService': 'ec2.*.amazonaws.com'}}}]}))
    # The policy's ViaService condition: B may use the key through EC2 only.
    kb = own.client('kms', b_creds)
    raises('AccessDeniedException', kb.generate_data_key, KeyId=shared['Arn'], KeySpec='AES_256')
    exe = build_core_check(tmp_path)
    p = subprocess.run([exe, own.datadir, own.admin.account_id, b_creds.account_id, key_a,
                        disabled, pending, shared['Arn']], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and 'core kms: ok' in p.stdout, p.stderr
    # What the C side made is what the API sees.
    ebs = own.client('ec2', b_creds).get_ebs_default_kms_key_id()['KmsKeyId']
    assert ebs.endswith(':alias/aws/ebs')
    assert kb.describe_key(KeyId='alias/aws/ebs')['KeyMetadata']['KeyManager'] == 'AWS'


def test_deletion_window_on_the_deployment_clock(own):
    k = own.client('kms')
    m = new_key(k)
    kid = m['KeyId']
    k.create_alias(AliasName='alias/short-lived', TargetKeyId=kid)
    g = k.create_grant(KeyId=kid, GranteePrincipal=own.admin.account_id,
                       Operations=['Decrypt'])
    k.tag_resource(KeyId=kid, Tags=[{'TagKey': 'a', 'TagValue': 'b'}])
    blob = k.encrypt(KeyId=kid, Plaintext=b'short-lived')['CiphertextBlob']
    keep = new_key(k)['KeyId']
    s = k.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    try:
        clock(own, 'advance', '6d')
        assert k.describe_key(KeyId=kid)['KeyMetadata']['KeyState'] == 'PendingDeletion'
        assert k.cancel_key_deletion(KeyId=kid)['KeyId'] == m['Arn']
        s = k.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
        clock(own, 'advance', '6d')
        assert k.describe_key(KeyId=kid)['KeyMetadata']['KeyState'] == 'PendingDeletion'
        clock(own, 'advance', '25h')
        assert s['DeletionDate'].timestamp() < time.time() + 13 * 86400 + 3600
        raises('NotFoundException', k.describe_key, KeyId=kid)
        raises('NotFoundException', k.describe_key, KeyId='alias/short-lived')
        raises('NotFoundException', k.cancel_key_deletion, KeyId=kid)
        raises('AccessDeniedException', k.decrypt, CiphertextBlob=blob)
        assert kid not in [x['KeyId'] for x in k.list_keys()['Keys']]
        assert 'alias/short-lived' not in [a['AliasName'] for a in k.list_aliases()['Aliases']]
        # The next write purges it: the alias name is free again, grants and tags went too.
        k.create_alias(AliasName='alias/short-lived', TargetKeyId=keep)
        assert k.describe_key(KeyId='alias/short-lived')['KeyMetadata']['KeyId'] == keep
        raises('NotFoundException', k.list_grants, KeyId=kid)
        raises('NotFoundException', k.retire_grant, GrantToken=g['GrantToken'])
    finally:
        clock(own, 'reset')
    db = sqlite3.connect('file:%s?mode=ro' % os.path.join(own.datadir, 'amid.db'), uri=True)
    for table in ('kms_keys', 'kms_grants', 'kms_tags', 'kms_aliases'):
        col = 'id' if table == 'kms_keys' else 'key_id'
        n = db.execute('SELECT count(*) FROM %s WHERE %s = ?' % (table, col), (kid,)).fetchone()
        assert n == (0,), table
    db.close()


def test_acknowledged_writes_survive_kill9(own):
    k = own.client('kms')
    m = new_key(k, Description='durable')
    k.create_alias(AliasName='alias/durable', TargetKeyId=m['KeyId'])
    k.tag_resource(KeyId=m['KeyId'], Tags=[{'TagKey': 'd', 'TagValue': '1'}])
    g = k.create_grant(KeyId=m['KeyId'], GranteePrincipal=own.admin.account_id,
                       Operations=['Encrypt'])
    blob = k.encrypt(KeyId='alias/durable', Plaintext=b'after the crash')['CiphertextBlob']
    ec2 = own.client('ec2')
    ec2.enable_ebs_encryption_by_default()
    ec2.modify_ebs_default_kms_key_id(KmsKeyId='alias/durable')
    own.daemon.stop(signal.SIGKILL)
    own.daemon.start()
    k = own.client('kms')
    assert k.describe_key(KeyId='alias/durable')['KeyMetadata']['Description'] == 'durable'
    assert k.decrypt(CiphertextBlob=blob)['Plaintext'] == b'after the crash'
    assert k.list_resource_tags(KeyId=m['KeyId'])['Tags'] == [{'TagKey': 'd', 'TagValue': '1'}]
    assert [x['GrantId'] for x in k.list_grants(KeyId=m['KeyId'])['Grants']] == [g['GrantId']]
    ec2 = own.client('ec2')
    assert ec2.get_ebs_encryption_by_default()['EbsEncryptionByDefault'] is True
    assert ec2.get_ebs_default_kms_key_id()['KmsKeyId'] == m['Arn']
    # Key material is stored sealed: the raw database never holds it in the clear.
    for name in ('amid.db', 'amid.db-wal'):
        path = os.path.join(own.datadir, name)
        if os.path.exists(path):
            assert b'after the crash' not in open(path, 'rb').read()


def test_aws_cli(amid, acct_a, tmp_path):
    rc, out, err = amid.aws('kms', 'create-key', '--description', 'from the cli', creds=acct_a)
    kid = out['KeyMetadata']['KeyId']
    amid.aws('kms', 'create-alias', '--alias-name', 'alias/cli', '--target-key-id', kid,
             creds=acct_a)
    (tmp_path / 'plain').write_bytes(b'cli secret\n')
    rc, out, err = amid.aws('kms', 'encrypt', '--key-id', 'alias/cli', '--plaintext',
                            'fileb://%s' % (tmp_path / 'plain'), '--encryption-context',
                            'app=cli', creds=acct_a)
    (tmp_path / 'blob').write_bytes(base64.b64decode(out['CiphertextBlob']))
    rc, out, err = amid.aws('kms', 'decrypt', '--ciphertext-blob',
                            'fileb://%s' % (tmp_path / 'blob'), '--encryption-context',
                            'app=cli', creds=acct_a)
    assert base64.b64decode(out['Plaintext']) == b'cli secret\n'
    assert out['KeyId'].endswith(kid)
    rc, out, err = amid.aws('kms', 'decrypt', '--ciphertext-blob',
                            'fileb://%s' % (tmp_path / 'blob'), creds=acct_a, check=False)
    assert rc != 0 and 'InvalidCiphertextException' in err
    rc, out, err = amid.aws('kms', 'list-aliases', '--key-id', kid, creds=acct_a)
    assert [a['AliasName'] for a in out['Aliases']] == ['alias/cli']
    rc, out, err = amid.aws('ec2', 'get-ebs-default-kms-key-id', creds=acct_a)
    assert out['KmsKeyId'].startswith('arn:aws:kms:us-east-1:%s:' % acct_a.account_id)
