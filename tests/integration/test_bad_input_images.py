"""Bad input for the image and snapshot operations, sent as hand-signed EC2 Query requests (the
SDKs validate much of it before sending): malformed and unknown ids, values of the wrong type,
unknown parameters, values outside the model's enums, filters, empty lists, oversized names and
descriptions, duplicates and malformed account ids — each with the code EC2 answers.

Every case is a valid request of a fresh account with one parameter spoiled, so the code can only
come from that parameter (test_valid_baselines checks the unspoiled requests pass validation).

What the expectations rest on (AWS's "Error codes for the Amazon EC2 API" unless said otherwise):
- malformed ids: InvalidAMIID.Malformed / InvalidSnapshotID.Malformed / InvalidVolumeID.Malformed
  ("...malformed. Ensure that you provide the full ID, in the form ami-xxxxxxxxxxxxxxxxx"); EC2
  ids are lowercase hex, so uppercase hex is malformed too (not checked against AWS, which
  documents only the form).  The 8-digit form of old ids is well formed: NotFound.  CreateTags
  takes any resource's id and answers InvalidID for one it cannot parse.
- wrong types and values outside the model's enums: InvalidParameterValue (AWS answers "Value
  (x) for parameter y is invalid"; a separate type-error code does not exist in EC2's list).
- unknown parameters: UnknownParameter; missing required ones: MissingParameter.
- more than 200 filter values in a request: FilterLimitExceeded ("The maximum number of filter
  values specified on a single call is 200"); a filter name EC2 does not know, or values without
  a name: InvalidParameterValue ("The filter 'null' is invalid").
- names: InvalidAMIName.Malformed outside 3-128 characters of letters, digits and ( ) [ ] space
  . / - ' @ _ (RegisterImage's reference); descriptions longer than 255 characters (characters,
  not bytes: the models' `max`) get InvalidParameterValue — the code is not documented for this
  case; it is the one EC2 gives for values out of range.
- block device mappings: InvalidBlockDeviceMapping.  An EBS-backed RegisterImage without any
  mapping gets it too (amid's choice: AWS documents no code for it).
- account ids: InvalidUserID.Malformed for anything but 12 digits (or self/all/aliases where the
  parameter takes them); an empty one included (assumed, not documented).
"""
import time

import pytest

import rawreq

V = '2016-11-15'
GHOST_AMI = 'ami-0123456789abcdef0'
GHOST_SNAP = 'snap-0123456789abcdef0'
GHOST_VOL = 'vol-0123456789abcdef0'

# Malformed ids: EC2 ids are the prefix and 8 or 17 lowercase hex digits.
BAD_HEX = ['xyz', '', '0123456789ABCDEF0', '012345678', '0123456789abcdef01',
           '0123456789abcdef', '0123456789abcdeg0', '0123456789abcdef0 ', '-0123456789abcdef0']


def bad_ids(prefix, other):
    return [prefix + h for h in BAD_HEX] + [
        prefix.upper() + '0123456789abcdef0', prefix.rstrip('-'), other + '-0123456789abcdef0',
        ' ' + prefix + '0123456789abcdef0', prefix + '0123456789abcdef0/x']


BAD_AMI = bad_ids('ami-', 'snap')
BAD_SNAP = bad_ids('snap-', 'ami')
BAD_VOL = bad_ids('vol-', 'snap')

# Operations taking one ImageId, with the rest of a valid request.
IMAGE_ID_OPS = {
    'DescribeImages': {'ImageId.1': '{id}'},
    'DescribeImageAttribute': {'ImageId': '{id}', 'Attribute': 'description'},
    'ModifyImageAttribute': {'ImageId': '{id}', 'Description.Value': 'x'},
    'ResetImageAttribute': {'ImageId': '{id}', 'Attribute': 'launchPermission'},
    'CancelImageLaunchPermission': {'ImageId': '{id}'},
    'DeregisterImage': {'ImageId': '{id}'},
    'EnableImage': {'ImageId': '{id}'},
    'DisableImage': {'ImageId': '{id}'},
    'EnableImageDeprecation': {'ImageId': '{id}', 'DeprecateAt': '{future}'},
    'DisableImageDeprecation': {'ImageId': '{id}'},
    'EnableImageDeregistrationProtection': {'ImageId': '{id}'},
    'DisableImageDeregistrationProtection': {'ImageId': '{id}'},
    'CreateTags': {'ResourceId.1': '{id}', 'Tag.1.Key': 'k'},
}
SNAP_ID_OPS = {
    'DescribeSnapshots': {'SnapshotId.1': '{id}'},
    'DescribeSnapshotAttribute': {'SnapshotId': '{id}', 'Attribute': 'createVolumePermission'},
    'ModifySnapshotAttribute': {'SnapshotId': '{id}',
                                'CreateVolumePermission.Add.1.UserId': '123456789012'},
    'ResetSnapshotAttribute': {'SnapshotId': '{id}', 'Attribute': 'createVolumePermission'},
    'DeleteSnapshot': {'SnapshotId': '{id}'},
    'CopySnapshot': {'SourceSnapshotId': '{id}', 'SourceRegion': 'us-east-1'},
    'CreateVolume': {'SnapshotId': '{id}', 'AvailabilityZone': 'us-east-1a'},
    'RegisterImage': {'Name': 'bad-{uniq}', 'RootDeviceName': '/dev/xvda',
                      'BlockDeviceMapping.1.DeviceName': '/dev/xvda',
                      'BlockDeviceMapping.1.Ebs.SnapshotId': '{id}'},
}

# Valid requests of every operation under test; each case below spoils one parameter of one.
VALID = {
    'RegisterImage': {'Name': 'bad-{uniq}', 'RootDeviceName': '/dev/xvda',
                      'BlockDeviceMapping.1.DeviceName': '/dev/xvda',
                      'BlockDeviceMapping.1.Ebs.SnapshotId': '{snap}'},
    'DescribeImages': {'Owner.1': 'self'},
    'DescribeImageAttribute': {'ImageId': '{image}', 'Attribute': 'description'},
    'ModifyImageAttribute': {'ImageId': '{image}', 'Description.Value': 'fine'},
    'ResetImageAttribute': {'ImageId': '{image}', 'Attribute': 'launchPermission'},
    'DeregisterImage': {'ImageId': '{spare}'},
    'EnableImageDeprecation': {'ImageId': '{image}', 'DeprecateAt': '{future}'},
    'DisableImageDeprecation': {'ImageId': '{image}'},
    'EnableImageDeregistrationProtection': {'ImageId': '{image}'},
    'DisableImageDeregistrationProtection': {'ImageId': '{image}'},
    'EnableImage': {'ImageId': '{disabled}'},
    'DisableImage': {'ImageId': '{image}'},
    'CancelImageLaunchPermission': {'ImageId': '{shared}'},  # another account's, shared
    'CreateVolume': {'AvailabilityZone': 'us-east-1a', 'Size': '1'},
    'CreateSnapshot': {'VolumeId': '{volume}'},
    'DescribeSnapshots': {'Owner.1': 'self'},
    'ModifySnapshotAttribute': {'SnapshotId': '{snap}',
                                'CreateVolumePermission.Add.1.UserId': '123456789012'},
    'DescribeSnapshotAttribute': {'SnapshotId': '{snap}', 'Attribute': 'createVolumePermission'},
}

DROP = object()  # removes the parameter from the valid request


def case(op, changes, code, name):
    return pytest.param(op, changes, code, id='%s-%s' % (op, name))


def cases():
    out = []
    # ---- malformed and unknown ids ----
    for op, params in IMAGE_ID_OPS.items():
        for bad in BAD_AMI:
            code = 'InvalidAMIID.Malformed'
            if op == 'CreateTags':  # any resource's id: another type's id is that type's
                code = 'InvalidSnapshot.NotFound' if bad.startswith('snap-0') else 'InvalidID'
            out.append(case(op, {k: (bad if v == '{id}' else v) for k, v in params.items()},
                            code, 'malformed[%s]' % bad))
        # Ids of the old 8-digit form are well formed.
        for ghost in (GHOST_AMI, 'ami-01234567'):
            out.append(case(op, {k: (ghost if v == '{id}' else v) for k, v in params.items()},
                            'InvalidAMIID.NotFound', 'unknown[%s]' % ghost))
    for op, params in SNAP_ID_OPS.items():
        for bad in BAD_SNAP:
            out.append(case(op, {k: (bad if v == '{id}' else v) for k, v in params.items()},
                            'InvalidSnapshotID.Malformed', 'malformed[%s]' % bad))
        out.append(case(op, {k: (GHOST_SNAP if v == '{id}' else v) for k, v in params.items()},
                        'InvalidSnapshot.NotFound', 'unknown'))
    for bad in BAD_VOL:
        out.append(case('CreateSnapshot', {'VolumeId': bad}, 'InvalidVolumeID.Malformed',
                        'malformed[%s]' % bad))
    out.append(case('CreateSnapshot', {'VolumeId': GHOST_VOL}, 'InvalidVolume.NotFound',
                    'unknown'))
    # ---- values of the wrong type ----
    IPV = 'InvalidParameterValue'
    for op, param, value in [
            ('DescribeImages', 'MaxResults', 'ten'),
            ('DescribeImages', 'MaxResults', '5.5'),
            ('DescribeImages', 'MaxResults', '99999999999999999999999'),
            ('DescribeImages', 'IncludeDeprecated', 'yes'),
            ('DescribeImages', 'IncludeDisabled', '2'),
            ('DescribeImages', 'DryRun', 'maybe'),
            ('RegisterImage', 'EnaSupport', 'yes'),
            ('RegisterImage', 'BlockDeviceMapping.1.Ebs.VolumeSize', 'big'),
            ('RegisterImage', 'BlockDeviceMapping.1.Ebs.VolumeSize', '1e3'),
            ('RegisterImage', 'BlockDeviceMapping.1.Ebs.DeleteOnTermination', 'nope'),
            ('RegisterImage', 'BlockDeviceMapping.1.Ebs.Iops', '3000.0'),
            ('ModifyImageAttribute', 'DryRun', '1'),
            ('DescribeImageAttribute', 'DryRun', 'TRUEISH'),
            ('DeregisterImage', 'DeleteAssociatedSnapshots', 'maybe'),
            ('EnableImageDeprecation', 'DeprecateAt', 'yesterday'),
            ('EnableImageDeprecation', 'DeprecateAt', '2030-13-45T00:00:00Z'),
            ('EnableImageDeprecation', 'DeprecateAt', '2030-01-01T25:00:00Z'),
            ('EnableImageDeprecation', 'DeprecateAt', ''),
            ('EnableImageDeregistrationProtection', 'WithCooldown', 'sometimes'),
            ('EnableImage', 'DryRun', 'x'),
            ('DisableImage', 'DryRun', 'x'),
            ('CreateVolume', 'Size', 'ten'),
            ('CreateVolume', 'Size', '1.5'),
            ('CreateVolume', 'Size', '-1'),
            ('CreateVolume', 'Size', '0'),
            ('CreateVolume', 'Size', '18446744073709551617'),
            ('CreateVolume', 'Iops', 'fast'),
            ('CreateVolume', 'Encrypted', 'perhaps'),
            ('CreateVolume', 'MultiAttachEnabled', '2'),
            ('CreateSnapshot', 'DryRun', 'nah'),
            ('DescribeSnapshots', 'MaxResults', 'many'),
            ('DescribeSnapshots', 'MaxResults', '-5'),
            ('ModifySnapshotAttribute', 'DryRun', 'x')]:
        out.append(case(op, {param: value}, IPV, 'type[%s=%s]' % (param, value)))
    # ---- unknown parameters (a near miss of a real name is unknown too) ----
    for op in VALID:
        out.append(case(op, {'Bogus': '1'}, 'UnknownParameter', 'unknown-param'))
    for op, param in [('DescribeImages', 'ImageIds.1'), ('DescribeImages', 'ImageId'),
                      ('DescribeImages', 'Filter.1.Values.1'),
                      ('DescribeImages', 'Owners.1'),
                      ('RegisterImage', 'BlockDeviceMappings.1.DeviceName'),
                      ('RegisterImage', 'BlockDeviceMapping.1.Ebs.Bogus'),
                      ('RegisterImage', 'TagSpecification.1.Tags.1.Key'),
                      ('DeregisterImage', 'ImageId.1'),
                      ('ModifyImageAttribute', 'LaunchPermission.Add.1.Account'),
                      ('ModifyImageAttribute', 'Description.Text'),
                      ('CreateVolume', 'VolumeSize'),
                      ('CreateSnapshot', 'VolumeId.1'),
                      ('DescribeSnapshots', 'SnapshotIds.1'),
                      ('ModifySnapshotAttribute', 'CreateVolumePermission.Add.1.User')]:
        out.append(case(op, {param: 'x'}, 'UnknownParameter', 'near-miss[%s]' % param))
    # ---- values outside the model's enums ----
    for op, param, value in [
            ('RegisterImage', 'Architecture', 'sparc'),
            ('RegisterImage', 'Architecture', 'X86_64'),
            ('RegisterImage', 'BootMode', 'bios'),
            ('RegisterImage', 'TpmSupport', 'v1.2'),
            ('RegisterImage', 'ImdsSupport', 'v1.0'),
            ('RegisterImage', 'BlockDeviceMapping.1.Ebs.VolumeType', 'floppy'),
            ('DescribeImageAttribute', 'Attribute', 'colour'),
            ('DescribeImageAttribute', 'Attribute', 'LaunchPermission'),
            ('DescribeImageAttribute', 'Attribute', ''),
            ('ResetImageAttribute', 'Attribute', 'description'),
            ('ModifyImageAttribute', 'OperationType', 'replace'),
            ('CreateVolume', 'VolumeType', 'GP3'),
            ('CreateSnapshot', 'Location', 'mars'),
            ('DescribeSnapshotAttribute', 'Attribute', 'colour'),
            ('ModifySnapshotAttribute', 'Attribute', 'colour'),
            ('ModifySnapshotAttribute', 'OperationType', 'replace')]:
        out.append(case(op, {param: value}, IPV, 'enum[%s=%s]' % (param, value)))
    # Valid enum values that cannot be changed (ModifyImageAttribute's Attribute is a plain
    # string in the model; EC2 accepts only description, launchPermission and imdsSupport).
    for op, changes in [
            ('ModifyImageAttribute', {'Attribute': 'kernel', 'Value': 'aki-01234567'}),
            ('ModifyImageAttribute', {'Attribute': 'blockDeviceMapping', 'Value': 'x'}),
            ('ModifyImageAttribute', {'Attribute': 'launchPermission', 'OperationType': 'add',
                                      'UserGroup.1': 'admins', 'Description.Value': DROP}),
            ('ModifySnapshotAttribute', {'Attribute': 'productCodes'})]:
        out.append(case(op, changes, IPV, 'unchangeable[%s]' % '&'.join(
            '%s=%s' % (k, v) for k, v in changes.items() if v is not DROP)))
    # ---- filters ----
    for op in ('DescribeImages', 'DescribeSnapshots'):
        out.append(case(op, {'Filter.1.Name': 'colour', 'Filter.1.Value.1': 'x'}, IPV,
                        'filter-unknown'))
        out.append(case(op, {'Filter.1.Name': 'Owner-Id', 'Filter.1.Value.1': 'x'}, IPV,
                        'filter-case'))
        many = {'Filter.1.Name': 'description'}
        many.update({'Filter.1.Value.%d' % i: 'v%d' % i for i in range(1, 202)})
        out.append(case(op, many, 'FilterLimitExceeded', 'filter-201-values'))
        # 200 values over two filters plus one more in a third: the limit is per request.
        split = {'Filter.1.Name': 'description', 'Filter.2.Name': 'volume-size' if
                 op == 'DescribeSnapshots' else 'name'}
        split.update({'Filter.1.Value.%d' % i: 'v%d' % i for i in range(1, 101)})
        split.update({'Filter.2.Value.%d' % i: 'w%d' % i for i in range(1, 102)})
        out.append(case(op, split, 'FilterLimitExceeded', 'filter-201-values-in-two'))
        # EC2 answers "The filter 'null' is invalid" for values without a name.
        out.append(case(op, {'Filter.1.Value.1': 'x'}, IPV, 'filter-no-name'))
    # ---- empty lists and missing parameters ----
    MP = 'MissingParameter'
    for op, changes, code, name in [
            ('DescribeImages', {'ImageId.1': ''}, 'InvalidAMIID.Malformed', 'empty-id'),
            ('DescribeSnapshots', {'SnapshotId.1': ''}, 'InvalidSnapshotID.Malformed',
             'empty-id'),
            ('DescribeImages', {'Owner.1': ''}, 'InvalidUserID.Malformed', 'empty-owner'),
            ('DescribeImages', {'ExecutableBy.1': ''}, 'InvalidUserID.Malformed',
             'empty-executable-by'),
            ('DescribeSnapshots', {'Owner.1': ''}, 'InvalidUserID.Malformed', 'empty-owner'),
            ('DescribeSnapshots', {'RestorableBy.1': ''}, 'InvalidUserID.Malformed',
             'empty-restorable-by'),
            ('ModifyImageAttribute', {'Description.Value': DROP,
                                      'LaunchPermission.Add.1.UserId': ''},
             'InvalidUserID.Malformed', 'empty-user-id'),
            ('ModifySnapshotAttribute', {'CreateVolumePermission.Add.1.UserId': ''},
             'InvalidUserID.Malformed', 'empty-user-id'),
            ('DeregisterImage', {'ImageId': ''}, 'InvalidAMIID.Malformed', 'empty-image-id'),
            ('CreateSnapshot', {'VolumeId': ''}, 'InvalidVolumeID.Malformed', 'empty-volume-id'),
            ('RegisterImage', {'BlockDeviceMapping.1.DeviceName': DROP,
                               'BlockDeviceMapping.1.Ebs.SnapshotId': DROP,
                               'RootDeviceName': DROP}, 'InvalidBlockDeviceMapping',
             'no-mappings'),
            ('RegisterImage', {'Name': DROP}, MP, 'no-name'),
            ('DescribeImageAttribute', {'Attribute': DROP}, MP, 'no-attribute'),
            ('DescribeImageAttribute', {'ImageId': DROP}, MP, 'no-image-id'),
            ('ModifyImageAttribute', {'ImageId': DROP}, MP, 'no-image-id'),
            ('ModifyImageAttribute', {'Description.Value': DROP}, MP, 'nothing-to-change'),
            ('ModifyImageAttribute', {'Description.Value': DROP, 'OperationType': 'add'}, MP,
             'operation-without-users'),
            ('ModifyImageAttribute', {'Description.Value': DROP, 'UserId.1': '123456789012'},
             MP, 'users-without-operation'),
            ('ResetImageAttribute', {'Attribute': DROP}, MP, 'no-attribute'),
            ('DeregisterImage', {'ImageId': DROP}, MP, 'no-image-id'),
            ('EnableImageDeprecation', {'DeprecateAt': DROP}, MP, 'no-deprecate-at'),
            ('EnableImage', {'ImageId': DROP}, MP, 'no-image-id'),
            ('DisableImage', {'ImageId': DROP}, MP, 'no-image-id'),
            ('CancelImageLaunchPermission', {'ImageId': DROP}, MP, 'no-image-id'),
            ('EnableImageDeregistrationProtection', {'ImageId': DROP}, MP, 'no-image-id'),
            ('CreateSnapshot', {'VolumeId': DROP}, MP, 'no-volume-id'),
            ('CreateVolume', {'AvailabilityZone': DROP}, MP, 'no-zone'),
            ('ModifySnapshotAttribute', {'SnapshotId': DROP}, MP, 'no-snapshot-id'),
            ('ModifySnapshotAttribute', {'CreateVolumePermission.Add.1.UserId': DROP}, MP,
             'nothing-to-change'),
            ('ModifySnapshotAttribute', {'CreateVolumePermission.Add.1.UserId': DROP,
                                         'UserId.1': '123456789012'}, MP,
             'users-without-operation'),
            ('DescribeSnapshotAttribute', {'Attribute': DROP}, MP, 'no-attribute')]:
        out.append(case(op, changes, code, name))
    # ---- lengths: names and descriptions ----
    for op, changes, code, name in [
            ('RegisterImage', {'Name': 'x' * 129}, 'InvalidAMIName.Malformed', 'name-129'),
            ('RegisterImage', {'Name': 'n\u00e4me-with-umlaut'}, 'InvalidAMIName.Malformed',
             'name-non-ascii'),
            ('RegisterImage', {'Name': 'name{braces}'}, 'InvalidAMIName.Malformed',
             'name-braces'),
            ('RegisterImage', {'Name': 'tab\tname'}, 'InvalidAMIName.Malformed', 'name-tab'),
            ('RegisterImage', {'Name': ''}, 'InvalidAMIName.Malformed', 'name-empty'),
            ('RegisterImage', {'Description': 'd' * 256}, IPV, 'description-256'),
            ('RegisterImage', {'Description': '\u00e9' * 256}, IPV,
             'description-256-two-byte-chars'),
            ('ModifyImageAttribute', {'Description.Value': 'd' * 256}, IPV, 'description-256'),
            ('ModifyImageAttribute', {'Description.Value': DROP, 'Attribute': 'description',
                                      'Value': 'd' * 256}, IPV, 'attribute-value-256'),
            ('CreateSnapshot', {'Description': 'd' * 256}, IPV, 'description-256'),
            ('CopySnapshot', {'SourceSnapshotId': '{snap}', 'SourceRegion': 'us-east-1',
                              'Description': 'd' * 256}, IPV, 'description-256'),
            ('CreateVolume', {'ClientToken': 't' * 65}, IPV, 'client-token-65'),
            ('RegisterImage', {'TagSpecification.1.ResourceType': 'image',
                               'TagSpecification.1.Tag.1.Key': 'k' * 129}, IPV, 'tag-key-129'),
            ('RegisterImage', {'TagSpecification.1.ResourceType': 'snapshot',
                               'TagSpecification.1.Tag.1.Key': 'k'}, IPV,
             'tag-wrong-resource-type'),
            ('CreateSnapshot', {'TagSpecification.1.ResourceType': 'image',
                                'TagSpecification.1.Tag.1.Key': 'k'}, IPV,
             'tag-wrong-resource-type')]:
        out.append(case(op, changes, code, name))
    # ---- block device mappings ----
    BDM = 'InvalidBlockDeviceMapping'
    for changes, name in [
            ({'BlockDeviceMapping.2.DeviceName': '/dev/xvda',
              'BlockDeviceMapping.2.Ebs.VolumeSize': '1'}, 'duplicate-root'),
            ({'BlockDeviceMapping.2.DeviceName': '/dev/xvdb',
              'BlockDeviceMapping.2.Ebs.VolumeSize': '1',
              'BlockDeviceMapping.3.DeviceName': '/dev/xvdb',
              'BlockDeviceMapping.3.NoDevice': ''}, 'duplicate-device'),
            ({'BlockDeviceMapping.2.DeviceName': '/dev/xvdb'}, 'mapping-without-device'),
            ({'BlockDeviceMapping.2.DeviceName': '/dev/xvdb',
              'BlockDeviceMapping.2.Ebs.VolumeSize': '1',
              'BlockDeviceMapping.2.VirtualName': 'ephemeral0'}, 'ebs-and-virtual-name'),
            ({'BlockDeviceMapping.2.DeviceName': '/dev/xvdb',
              'BlockDeviceMapping.2.VirtualName': 'swap'}, 'bad-virtual-name'),
            ({'BlockDeviceMapping.1.Ebs.VolumeSize': '0'}, 'volume-size-0'),
            ({'BlockDeviceMapping.1.Ebs.VolumeSize': '65537'}, 'volume-size-too-big'),
            ({'BlockDeviceMapping.2.Ebs.VolumeSize': '1'}, 'mapping-without-name'),
            ({'RootDeviceName': '/dev/xvdz'}, 'root-not-mapped'),
            ({'BlockDeviceMapping.1.DeviceName': '/dev/hda', 'RootDeviceName': '/dev/hda'},
             'bad-device-name')]:
        out.append(case('RegisterImage', changes, BDM, name))
    # ---- account ids ----
    MAL = 'InvalidUserID.Malformed'
    for op, changes, name in [
            ('ModifyImageAttribute', {'Description.Value': DROP,
                                      'LaunchPermission.Add.1.UserId': '12345678901'}, '11-digits'),
            ('ModifyImageAttribute', {'Description.Value': DROP,
                                      'LaunchPermission.Add.1.UserId': '1234567890123'},
             '13-digits'),
            ('ModifyImageAttribute', {'Description.Value': DROP,
                                      'LaunchPermission.Remove.1.UserId': 'abcdefghijkl'},
             'letters'),
            ('ModifyImageAttribute', {'Description.Value': DROP,
                                      'LaunchPermission.Add.1.UserId': 'self'}, 'self'),
            ('ModifyImageAttribute', {'Description.Value': DROP, 'OperationType': 'add',
                                      'UserId.1': '12345678901x'}, 'user-ids'),
            ('DescribeImages', {'ExecutableBy.1': '12345'}, 'executable-by'),
            ('DescribeImages', {'Owner.1': 'nobody-by-that-alias'}, 'owner'),
            ('DescribeSnapshots', {'Owner.1': '1234'}, 'owner'),
            ('DescribeSnapshots', {'RestorableBy.1': 'someone'}, 'restorable-by'),
            ('DescribeSnapshots', {'RestorableBy.1': '12345678901'}, 'restorable-by-11'),
            ('ModifySnapshotAttribute', {'CreateVolumePermission.Add.1.UserId': 'root'},
             'add'),
            ('ModifySnapshotAttribute', {'CreateVolumePermission.Add.1.UserId': DROP,
                                         'CreateVolumePermission.Remove.1.UserId': '0'},
             'remove'),
            ('ModifySnapshotAttribute', {'CreateVolumePermission.Add.1.UserId': DROP,
                                         'OperationType': 'add', 'Attribute':
                                         'createVolumePermission', 'UserId.1': '1e11'},
             'user-ids')]:
        out.append(case(op, changes, MAL, name))
    # ---- parameters amid refuses (EC2 has them; amid's images are EBS-backed hvm, without
    # product codes, organizations, Outposts or a key service) ----
    for op, changes, code in [
            ('RegisterImage', {'KernelId': 'aki-01234567'}, IPV),
            ('RegisterImage', {'RamdiskId': 'ari-01234567'}, IPV),
            ('RegisterImage', {'BillingProduct.1': 'bp-6ba54002'}, IPV),
            ('RegisterImage', {'UefiData': 'QU1aTlVFRkk='}, IPV),
            ('RegisterImage', {'VirtualizationType': 'xen'}, IPV),
            ('RegisterImage', {'SriovNetSupport': 'complex'}, IPV),
            ('RegisterImage', {'TpmSupport': 'v2.0', 'BootMode': 'legacy-bios'},
             'InvalidParameterCombination'),
            ('RegisterImage', {'BlockDeviceMapping.1.Ebs.KmsKeyId': 'alias/x'},
             'InvalidParameterDependency'),
            ('ModifyImageAttribute', {'ProductCode.1': 'abcdefghijklmnopqrstuvwxy'}, IPV),
            ('ModifyImageAttribute', {'Description.Value': DROP, 'OrganizationArn.1':
                                      'arn:aws:organizations::123456789012:organization/o-1'},
             IPV),
            ('ModifyImageAttribute', {'Description.Value': DROP,
                                      'LaunchPermission.Add.1.OrganizationArn':
                                      'arn:aws:organizations::123456789012:organization/o-1'},
             IPV),
            ('ModifyImageAttribute', {'Description.Value': DROP, 'ImdsSupport.Value': 'v1.0'},
             IPV),
            ('CreateVolume', {'OutpostArn': 'arn:aws:outposts:us-east-1:123456789012:outpost/x'},
             IPV),
            ('CreateVolume', {'AvailabilityZone': 'us-east-1z'}, IPV),
            ('CreateVolume', {'Throughput': 'fast'}, IPV),
            ('CreateVolume', {'TagSpecification.1.ResourceType': 'snapshot',
                              'TagSpecification.1.Tag.1.Key': 'k'}, IPV),
            ('CreateSnapshot', {'OutpostArn': 'arn:aws:outposts:us-east-1:123456789012:outpost/x'},
             IPV),
            ('DescribeSnapshots', {'DryRun': 'x'}, IPV),
            # The only group is "all" (PermissionGroup's enum; GroupNames is a plain string).
            ('ModifySnapshotAttribute', {'CreateVolumePermission.Add.1.UserId': DROP,
                                         'OperationType': 'add', 'UserGroup.1': 'admins'}, IPV),
            ('ModifySnapshotAttribute', {'CreateVolumePermission.Add.1.UserId': DROP,
                                         'CreateVolumePermission.Add.1.Group': 'admins'}, IPV),
            ('ModifyImageAttribute', {'Description.Value': DROP,
                                      'LaunchPermission.Add.1.Group': 'admins'}, IPV)]:
        out.append(case(op, changes, code, 'refused[%s]' % '&'.join(
            '%s=%s' % (k, v) for k, v in changes.items() if v is not DROP)))
    # ---- other combinations ----
    for op, changes, code, name in [
            ('DescribeImages', {'ImageId.1': '{image}', 'MaxResults': '5'},
             'InvalidParameterCombination', 'ids-and-max-results'),
            ('DescribeSnapshots', {'SnapshotId.1': '{snap}', 'MaxResults': '5'},
             'InvalidParameterCombination', 'ids-and-max-results'),
            ('DescribeImages', {'MaxResults': '4'}, IPV, 'max-results-4'),
            ('DescribeSnapshots', {'MaxResults': '4'}, IPV, 'max-results-4'),
            ('DescribeSnapshots', {'NextToken': 'garbage'}, 'InvalidNextToken', 'next-token'),
            ('ModifyImageAttribute', {'Description.Value': DROP,
                                      'LaunchPermission.Add.1.UserId': '123456789012',
                                      'LaunchPermission.Add.1.Group': 'all'},
             'InvalidParameterCombination', 'user-and-group'),
            ('EnableImageDeprecation', {'DeprecateAt': '2001-01-01T00:00:00Z'}, IPV,
             'deprecate-in-the-past'),
            ('EnableImage', {'ImageId': '{image}'}, 'IncorrectState', 'not-disabled'),
            ('RegisterImage', {'Name': '{image_name}'}, 'InvalidAMIName.Duplicate',
             'duplicate-name'),
            ('CreateVolume', {'SnapshotId': '{snap}', 'Size': '0'}, IPV, 'size-0-from-snap')]:
        out.append(case(op, changes, code, name))
    return out


CASES = cases()


class Ctx:
    pass


@pytest.fixture(scope='module')
def ctx(amid):
    c = Ctx()
    c.creds = amid.new_account('bad-input')
    ec2 = amid.client('ec2', c.creds)
    c.volume = ec2.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    c.snap = ec2.create_snapshot(VolumeId=c.volume)['SnapshotId']
    ec2.get_waiter('snapshot_completed').wait(SnapshotIds=[c.snap],
                                              WaiterConfig={'Delay': 1, 'MaxAttempts': 60})
    c.image_name = 'bad-input-image'

    def register(name):
        return ec2.register_image(Name=name, RootDeviceName='/dev/xvda', BlockDeviceMappings=[
            {'DeviceName': '/dev/xvda', 'Ebs': {'SnapshotId': c.snap}}])['ImageId']

    c.image = register(c.image_name)
    owner = amid.client('ec2', amid.new_account('bad-input-owner'))
    v = owner.create_volume(AvailabilityZone='us-east-1a', Size=1)['VolumeId']
    s = owner.create_snapshot(VolumeId=v)['SnapshotId']
    owner.get_waiter('snapshot_completed').wait(SnapshotIds=[s],
                                                WaiterConfig={'Delay': 1, 'MaxAttempts': 60})
    c.shared = owner.register_image(Name=c.image_name, RootDeviceName='/dev/xvda',
                                    BlockDeviceMappings=[{'DeviceName': '/dev/xvda',
                                                          'Ebs': {'SnapshotId': s}}])['ImageId']
    owner.modify_image_attribute(ImageId=c.shared, LaunchPermission={
        'Add': [{'UserId': c.creds.account_id}]})
    c.spare = register('bad-input-spare')
    c.disabled = register('bad-input-disabled')
    ec2.disable_image(ImageId=c.disabled)
    c.ec2 = ec2
    c.n = 0
    return c


def request_params(ctx, op, changes):
    params = dict(VALID.get(op, {}))
    for k, v in changes.items():
        if v is DROP:
            params.pop(k, None)
        else:
            params[k] = v
    ctx.n += 1
    subst = {'{snap}': ctx.snap, '{image}': ctx.image, '{spare}': ctx.spare,
             '{shared}': ctx.shared,
             '{disabled}': ctx.disabled, '{volume}': ctx.volume,
             '{uniq}': '%d-%d' % (time.time(), ctx.n), '{image_name}': ctx.image_name,
             '{future}': '2099-01-01T00:00:00Z'}
    out = {'Action': op, 'Version': V}
    for k, v in params.items():
        for a, b in subst.items():
            v = v.replace(a, b)
        out[k] = v
    return out


@pytest.mark.parametrize('op', sorted(VALID))
def test_valid_baselines(amid, ctx, op):
    """Each operation's valid request succeeds (or, for those that change something, passes
    validation: DryRun answers DryRunOperation), so a case's error comes from its change."""
    params = request_params(ctx, op, {'DryRun': 'true'})
    r = rawreq.call(amid.endpoint, ctx.creds, params)
    assert r.code() == 'DryRunOperation', r.text


@pytest.mark.parametrize('op, changes, code', CASES)
def test_bad_input(amid, ctx, op, changes, code):
    params = request_params(ctx, op, changes)
    r = rawreq.call(amid.endpoint, ctx.creds, params)
    assert r.code() == code, (params, r.status, r.text)
    assert r.status == 400, r.status
    # A well-formed EC2 error document, whatever the input.
    assert r.text.startswith('<?xml') and '<RequestID>' in r.text and '<Message>' in r.text


def test_filter_limit_boundary(amid, ctx):
    """200 filter values in all are fine."""
    for op in ('DescribeImages', 'DescribeSnapshots'):
        changes = {'Filter.1.Name': 'description'}
        changes.update({'Filter.1.Value.%d' % i: 'v%d' % i for i in range(1, 201)})
        r = rawreq.call(amid.endpoint, ctx.creds, request_params(ctx, op, changes))
        assert r.status == 200, r.text


def test_name_and_description_boundaries(amid, ctx):
    """The longest name, a three-character one, every allowed punctuation mark, and a 255
    character description (of two-byte characters) register."""
    ec2 = ctx.ec2
    for name, desc in (('n' * 128, 'd' * 255), ('abc', '\u00e9' * 255),
                       ("all ()[]./-'@_ marks", '')):
        iid = ec2.register_image(Name=name, Description=desc, RootDeviceName='/dev/xvda',
                                 BlockDeviceMappings=[{'DeviceName': '/dev/xvda',
                                                       'Ebs': {'SnapshotId': ctx.snap}}])['ImageId']
        im = ec2.describe_images(ImageIds=[iid])['Images'][0]
        assert im['Name'] == name and im.get('Description', '') == desc
        ec2.deregister_image(ImageId=iid)
    ec2.modify_image_attribute(ImageId=ctx.image, Description={'Value': '\u00e9' * 255})
    got = ec2.describe_image_attribute(ImageId=ctx.image, Attribute='description')
    assert got['Description']['Value'] == '\u00e9' * 255
    ec2.modify_image_attribute(ImageId=ctx.image, Description={'Value': 'fine'})
    r = rawreq.call(amid.endpoint, ctx.creds, request_params(
        ctx, 'CreateSnapshot', {'Description': '\u00e9' * 255}))
    assert r.status == 200, r.text
    sid = r.text.split('<snapshotId>')[1].split('<')[0]
    ctx.ec2.get_waiter('snapshot_completed').wait(SnapshotIds=[sid],
                                                  WaiterConfig={'Delay': 1, 'MaxAttempts': 60})
    ctx.ec2.delete_snapshot(SnapshotId=sid)


def test_duplicates(amid, ctx):
    """The same id twice is described once; the same image name in another account is free (the
    fixture's other account registered one of the same name)."""
    r = ctx.ec2.describe_images(ImageIds=[ctx.image, ctx.image])['Images']
    assert [i['ImageId'] for i in r] == [ctx.image]
    r = ctx.ec2.describe_snapshots(SnapshotIds=[ctx.snap, ctx.snap])['Snapshots']
    assert [s['SnapshotId'] for s in r] == [ctx.snap]
    got = ctx.ec2.describe_images(ImageIds=[ctx.shared])['Images'][0]
    assert got['Name'] == ctx.image_name and got['ImageId'] != ctx.image
