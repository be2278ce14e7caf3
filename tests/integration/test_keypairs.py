"""Key pairs: created (rsa, ed25519) and imported, with EC2's fingerprints, checked with
ssh-keygen and OpenSSL; names unique per account and region; errors as EC2 gives them."""
import base64
import hashlib
import os
import subprocess
import tempfile

import botocore.exceptions
import pytest


def code_of(e):
    return e.value.response['Error']['Code']


def keygen(*args, **kw):
    return subprocess.run(['ssh-keygen', *args], capture_output=True, text=True, check=True, **kw)


@pytest.fixture(scope='module')
def kp(amid):
    return amid.client('ec2', amid.new_account('keypair-owner'))


def test_create_rsa_and_ed25519(kp, tmp_path):
    r = kp.create_key_pair(KeyName='rsa-one')
    assert r['KeyPairId'].startswith('key-') and r['KeyName'] == 'rsa-one'
    pem = r['KeyMaterial']
    assert pem.startswith('-----BEGIN RSA PRIVATE KEY-----')
    # EC2's fingerprint of a created RSA key: SHA-1 of the DER PKCS#8 private key.
    p = tmp_path / 'rsa.pem'
    p.write_text(pem)
    der = subprocess.run(['openssl', 'pkcs8', '-topk8', '-nocrypt', '-in', str(p), '-outform',
                          'DER'], capture_output=True, check=True).stdout
    assert r['KeyFingerprint'] == ':'.join('%02x' % b for b in hashlib.sha1(der).digest())
    os.chmod(p, 0o600)
    pub = keygen('-y', '-f', str(p)).stdout.split()[1]
    e = kp.create_key_pair(KeyName='ed-one', KeyType='ed25519')
    assert e['KeyMaterial'].startswith('-----BEGIN OPENSSH PRIVATE KEY-----')
    q = tmp_path / 'ed'
    q.write_text(e['KeyMaterial'])
    os.chmod(q, 0o600)
    edpub = keygen('-y', '-f', str(q)).stdout.split()[1]
    fp = keygen('-l', '-E', 'sha256', '-f', str(q)).stdout.split()[1]
    assert fp == 'SHA256:' + e['KeyFingerprint']
    got = {k['KeyName']: k for k in kp.describe_key_pairs(IncludePublicKey=True)['KeyPairs']}
    assert got['rsa-one']['KeyType'] == 'rsa' and got['ed-one']['KeyType'] == 'ed25519'
    assert got['rsa-one']['PublicKey'].split()[1] == pub
    assert got['ed-one']['PublicKey'].split()[1] == edpub
    assert 'KeyMaterial' not in got['rsa-one']
    with pytest.raises(botocore.exceptions.ClientError) as ex:
        kp.create_key_pair(KeyName='rsa-one')
    assert code_of(ex) == 'InvalidKeyPair.Duplicate'


def test_import_and_delete(kp, tmp_path):
    keygen('-q', '-t', 'rsa', '-b', '2048', '-N', '', '-f', str(tmp_path / 'k'))
    pub = (tmp_path / 'k.pub').read_bytes()
    r = kp.import_key_pair(KeyName='imported', PublicKeyMaterial=pub,
                           TagSpecifications=[{'ResourceType': 'key-pair',
                                               'Tags': [{'Key': 'who', 'Value': 'me'}]}])
    # EC2's fingerprint of an imported RSA key: MD5 of the DER public key.
    der = subprocess.run(['ssh-keygen', '-e', '-m', 'PKCS8', '-f', str(tmp_path / 'k.pub')],
                         capture_output=True, check=True).stdout
    der = subprocess.run(['openssl', 'pkey', '-pubin', '-outform', 'DER'], input=der,
                         capture_output=True, check=True).stdout
    assert r['KeyFingerprint'] == ':'.join('%02x' % b for b in hashlib.md5(der).digest())
    got = kp.describe_key_pairs(KeyNames=['imported'])['KeyPairs'][0]
    assert got['Tags'] == [{'Key': 'who', 'Value': 'me'}]
    assert kp.describe_key_pairs(Filters=[{'Name': 'tag:who', 'Values': ['me']}])[
        'KeyPairs'][0]['KeyName'] == 'imported'
    assert kp.describe_key_pairs(KeyPairIds=[r['KeyPairId']])['KeyPairs'][0]['KeyName'] == \
        'imported'
    for bad in (b'not a key', b'ssh-rsa AAAA', b''):
        with pytest.raises((botocore.exceptions.ClientError,
                            botocore.exceptions.ParamValidationError)) as ex:
            kp.import_key_pair(KeyName='bad-' + str(len(bad)), PublicKeyMaterial=bad or b'x')
        if isinstance(ex.value, botocore.exceptions.ClientError):
            assert code_of(ex) == 'InvalidKey.Format'
    with pytest.raises(botocore.exceptions.ClientError) as ex:
        kp.describe_key_pairs(KeyNames=['nope'])
    assert code_of(ex) == 'InvalidKeyPair.NotFound'
    kp.delete_key_pair(KeyName='imported')
    kp.delete_key_pair(KeyName='imported')  # unknown names succeed, as on EC2
    with pytest.raises(botocore.exceptions.ClientError) as ex:
        kp.delete_key_pair(KeyPairId=r['KeyPairId'])
    assert code_of(ex) == 'InvalidKeyPair.NotFound'


def test_key_pairs_are_per_account(amid, kp):
    kp.create_key_pair(KeyName='mine')
    other = amid.client('ec2', amid.new_account('keypair-other'))
    assert other.describe_key_pairs()['KeyPairs'] == []
    other.create_key_pair(KeyName='mine')  # the same name in another account is fine
    with pytest.raises(botocore.exceptions.ClientError) as ex:
        other.describe_key_pairs(KeyNames=['rsa-one'])
    assert code_of(ex) == 'InvalidKeyPair.NotFound'
