/*
 * api_ec2_instances.c — instances: RunInstances, DescribeInstances, DescribeInstanceStatus,
 * Stop/Start/Reboot/TerminateInstances, Modify/DescribeInstanceAttribute,
 * ModifyInstanceMetadataOptions, AttachVolume/DetachVolume, GetConsoleOutput, CreateImage,
 * CreateSnapshots and DescribeInstanceTypes.
 *
 * amid has no VPCs, security groups, spot or capacity reservations: parameters that need them
 * are refused with the error EC2 gives for a resource that does not exist, or
 * UnsupportedOperation; none is silently ignored.
 */
#include "api/api_int.h"
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct core_caller caller(struct api_call *c)
{
    struct core_caller w = { c->account_id, c->region, c->dry_run };
    return w;
}

static json_t *state_json(const char *state)
{
    return json_pack("{s:i, s:s}", "Code", core_instance_state_code(state), "Name", state);
}

/* ip-169-254-0-15.ec2.internal in us-east-1, ip-...<region>.compute.internal elsewhere. */
static void private_dns(const struct db_instance *i, char *out, size_t n)
{
    char ip[48];
    snprintf(ip, sizeof(ip), "%s", i->private_ip);
    for (char *p = ip; *p; p++)
        if (*p == '.')
            *p = '-';
    if (strcmp(i->region, "us-east-1") == 0)
        snprintf(out, n, "ip-%s.ec2.internal", ip);
    else
        snprintf(out, n, "ip-%s.%s.compute.internal", ip, i->region);
}

static int bdm_item(void *vctx, const struct db_attachment *a)
{
    json_t *list = vctx;
    json_t *ebs = json_pack("{s:I, s:b, s:s, s:s}", "AttachTime", (json_int_t)a->attach_ms,
                            "DeleteOnTermination", a->delete_on_termination, "Status", a->state,
                            "VolumeId", a->volume_id);
    return json_array_append_new(list,
                                 json_pack("{s:s, s:o}", "DeviceName", a->device_name, "Ebs", ebs));
}

static json_t *instance_item(struct api_call *c, struct db *db, const struct db_instance *i)
{
    const struct core_instance_type *t = core_instance_type(i->instance_type);
    char dns[128];
    private_dns(i, dns, sizeof(dns));
    bool live = strcmp(i->state, "terminated") != 0;
    json_t *o = json_pack(
        "{s:s, s:s, s:o, s:s, s:s, s:s, s:I, s:[], s:s, s:I, s:{s:s, s:s, s:s}, s:{s:s}, s:s, "
        "s:s, s:s, s:[], s:s, s:[], s:b, s:s, s:b, s:b}",
        "InstanceId", i->id, "ImageId", i->image_id, "State", state_json(i->state),
        "PrivateDnsName", live ? dns : "", "PublicDnsName", "", "StateTransitionReason",
        i->transition_reason, "AmiLaunchIndex", (json_int_t)i->launch_index, "ProductCodes",
        "InstanceType", i->instance_type, "LaunchTime", (json_int_t)i->launch_ms, "Placement",
        "AvailabilityZone", i->zone, "GroupName", "", "Tenancy", "default", "Monitoring", "State",
        "disabled", "Architecture", i->architecture, "RootDeviceType", "ebs", "RootDeviceName",
        i->root_device_name, "BlockDeviceMappings", "VirtualizationType", "hvm", "SecurityGroups",
        "SourceDestCheck", 1, "Hypervisor", "xen", "EbsOptimized", 0, "EnaSupport", i->ena_support);
    if (!o)
        return NULL;
    if (live)
        json_object_set_new(o, "PrivateIpAddress", json_string(i->private_ip));
    if (i->key_name[0])
        json_object_set_new(o, "KeyName", json_string(i->key_name));
    if (i->client_token[0])
        json_object_set_new(o, "ClientToken", json_string(i->client_token));
    if (i->state_reason_code[0])
        json_object_set_new(o, "StateReason",
                            json_pack("{s:s, s:s}", "Code", i->state_reason_code, "Message",
                                      i->state_reason_message));
    json_object_set_new(
        o, "CpuOptions",
        json_pack("{s:i, s:i}", "CoreCount", t ? (int)t->vcpus : 1, "ThreadsPerCore", 1));
    json_object_set_new(o, "MetadataOptions",
                        json_pack("{s:s, s:s, s:I, s:s, s:s, s:s}", "State", "applied",
                                  "HttpTokens", i->http_tokens, "HttpPutResponseHopLimit",
                                  (json_int_t)i->hop_limit, "HttpEndpoint", i->http_endpoint,
                                  "HttpProtocolIpv6", "disabled", "InstanceMetadataTags",
                                  i->metadata_tags));
    json_object_set_new(o, "HibernationOptions", json_pack("{s:b}", "Configured", 0));
    json_object_set_new(o, "EnclaveOptions", json_pack("{s:b}", "Enabled", 0));
    json_object_set_new(o, "MaintenanceOptions", json_pack("{s:s}", "AutoRecovery", "default"));
    json_object_set_new(o, "CapacityReservationSpecification",
                        json_pack("{s:s}", "CapacityReservationPreference", "open"));
    json_object_set_new(o, "PrivateDnsNameOptions",
                        json_pack("{s:s, s:b, s:b}", "HostnameType", "ip-name",
                                  "EnableResourceNameDnsARecord", 0,
                                  "EnableResourceNameDnsAAAARecord", 0));
    if (i->boot_mode[0])
        json_object_set_new(o, "BootMode", json_string(i->boot_mode));
    json_object_set_new(o, "CurrentInstanceBootMode",
                        json_string(strcmp(i->boot_mode, "uefi") == 0 ? "uefi" : "legacy-bios"));
    json_object_set_new(o, "PlatformDetails", json_string("Linux/UNIX"));
    json_object_set_new(o, "UsageOperation", json_string("RunInstances"));
    json_object_set_new(o, "UsageOperationUpdateTime", json_integer(i->launch_ms));
    json_object_set_new(o, "NetworkInterfaces", json_array());
    if (db) {
        db_attachment_each(db, i->id, bdm_item, json_object_get(o, "BlockDeviceMappings"));
        api_add_tags(c, db, o, i->id);
    }
    return o;
}

/* ---- RunInstances ---- */

/* Fails when a member amid cannot honour is present. */
static int refuse(struct api_call *c, json_t *in, const char *const *names, const char *code)
{
    for (; *names; names++)
        if (json_object_get(in, *names))
            return err_set(&c->err, -EINVAL, code, "The parameter %s is not supported by amid",
                           *names);
    return 0;
}

/* Reads RunInstances' or CreateImage's BlockDeviceMappings (overrides of the image's). */
static int read_run_bdms(struct api_call *c, json_t *list, struct core_run_bdm **ret, size_t *ret_n)
{
    size_t n = json_array_size(list);
    struct core_run_bdm *v = calloc(n + 1, sizeof(*v));
    if (!v)
        return err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
    int rc = 0;
    for (size_t k = 0; k < n && rc == 0; k++) {
        json_t *m = json_array_get(list, k);
        struct core_run_bdm *b = &v[k];
        const char *dev = jstr(m, "DeviceName");
        json_t *ebs = json_object_get(m, "Ebs");
        b->nodevice = json_object_get(m, "NoDevice") != NULL;
        b->delete_on_termination = -1;
        if (!dev) {
            rc = err_set(&c->err, -EINVAL, "InvalidBlockDeviceMapping",
                         "Every block device mapping needs a DeviceName");
            break;
        }
        snprintf(b->device, sizeof(b->device), "%s", dev);
        if (jstr(m, "VirtualName")) {
            rc = err_set(&c->err, -EINVAL, "InvalidBlockDeviceMapping",
                         "Instance store volumes (VirtualName) are not available in amid");
            break;
        }
        if (!ebs)
            continue;
        if (b->nodevice) {
            rc = err_set(&c->err, -EINVAL, "InvalidBlockDeviceMapping",
                         "The mapping for %.64s cannot have both Ebs and NoDevice", dev);
            break;
        }
        b->ebs = true;
        const char *sid = jstr(ebs, "SnapshotId"), *vt = jstr(ebs, "VolumeType");
        snprintf(b->snapshot_id, sizeof(b->snapshot_id), "%s", sid ? sid : "");
        snprintf(b->type, sizeof(b->type), "%s", vt ? vt : "");
        json_t *x;
        if ((x = json_object_get(ebs, "VolumeSize")) && (b->size_gib = json_integer_value(x)) <= 0)
            rc = err_set(&c->err, -EINVAL, "InvalidBlockDeviceMapping",
                         "VolumeSize must be positive");
        if ((x = json_object_get(ebs, "Iops")))
            b->iops = json_integer_value(x);
        if ((x = json_object_get(ebs, "Throughput")))
            b->throughput = json_integer_value(x);
        if ((x = json_object_get(ebs, "DeleteOnTermination")))
            b->delete_on_termination = json_is_true(x);
        b->encrypted = jbool(ebs, "Encrypted", false);
        const char *kms = jstr(ebs, "KmsKeyId");
        snprintf(b->kms_key_id, sizeof(b->kms_key_id), "%s", kms ? kms : "");
        static const char *const no[] = {
            "OutpostArn",   "AvailabilityZone",         "AvailabilityZoneId",
            "EbsCardIndex", "VolumeInitializationRate", NULL
        };
        if (rc == 0)
            rc = refuse(c, ebs, no, "InvalidBlockDeviceMapping");
    }
    if (rc < 0) {
        free(v);
        return rc;
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

static int read_placement(struct api_call *c, json_t *p, const char **zone)
{
    *zone = jstr(p, "AvailabilityZone");
    const char *tenancy = jstr(p, "Tenancy"), *group = jstr(p, "GroupName");
    if (tenancy && strcmp(tenancy, "default") != 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Tenancy %.16s is not available in amid (only default)", tenancy);
    if (group && *group)
        return err_set(&c->err, -EINVAL, "InvalidPlacementGroup.Unknown",
                       "The Placement Group '%.64s' is unknown.", group);
    static const char *const no[] = { "Affinity",
                                      "GroupId",
                                      "HostId",
                                      "SpreadDomain",
                                      "HostResourceGroupArn",
                                      "PartitionNumber",
                                      "AvailabilityZoneId",
                                      NULL };
    return refuse(c, p, no, "InvalidParameterValue");
}

static int read_metadata_options(struct api_call *c, json_t *m, struct core_run_spec *sp)
{
    sp->http_tokens = jstr(m, "HttpTokens");
    sp->http_endpoint = jstr(m, "HttpEndpoint");
    sp->metadata_tags = jstr(m, "InstanceMetadataTags");
    json_t *x = json_object_get(m, "HttpPutResponseHopLimit");
    if (x) {
        sp->hop_limit = json_integer_value(x);
        if (sp->hop_limit < 1 || sp->hop_limit > 64)
            return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                           "HttpPutResponseHopLimit must be between 1 and 64");
    }
    const char *v6 = jstr(m, "HttpProtocolIpv6");
    if (v6 && strcmp(v6, "disabled") != 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "The metadata service has no IPv6 endpoint in amid");
    return 0;
}

/* Reads the RunInstances members amid has no notion of: refused unless they ask for nothing. */
static int run_refusals(struct api_call *c, json_t *in)
{
    static const char *const absent[] = { "Ipv6AddressCount",
                                          "Ipv6Addresses",
                                          "KernelId",
                                          "RamdiskId",
                                          "NetworkInterfaces",
                                          "PrivateIpAddress",
                                          "ElasticGpuSpecification",
                                          "ElasticInferenceAccelerators",
                                          "LaunchTemplate",
                                          "InstanceMarketOptions",
                                          "CreditSpecification",
                                          "CpuOptions",
                                          "CapacityReservationSpecification",
                                          "LicenseSpecifications",
                                          "PrivateDnsNameOptions",
                                          "MaintenanceOptions",
                                          "IamInstanceProfile",
                                          "AdditionalInfo",
                                          "NetworkPerformanceOptions",
                                          "Operator",
                                          "SecondaryInterfaces",
                                          "EnablePrimaryIpv6",
                                          NULL };
    int rc = refuse(c, in, absent, "UnsupportedOperation");
    if (rc < 0)
        return rc;
    json_t *sg = json_object_get(in, "SecurityGroupIds");
    if (json_array_size(sg))
        return err_set(&c->err, -ENOENT, "InvalidGroup.NotFound",
                       "The security group '%.64s' does not exist",
                       json_string_value(json_array_get(sg, 0)));
    sg = json_object_get(in, "SecurityGroups");
    if (json_array_size(sg))
        return err_set(&c->err, -ENOENT, "InvalidGroup.NotFound",
                       "The security group '%.64s' does not exist in default VPC",
                       json_string_value(json_array_get(sg, 0)));
    if (jstr(in, "SubnetId"))
        return err_set(&c->err, -ENOENT, "InvalidSubnetID.NotFound",
                       "The subnet ID '%.64s' does not exist", jstr(in, "SubnetId"));
    if (jbool(json_object_get(in, "Monitoring"), "Enabled", false))
        return err_set(&c->err, -EINVAL, "UnsupportedOperation",
                       "Detailed monitoring is not available in amid");
    if (jbool(in, "EbsOptimized", false))
        return err_set(&c->err, -EINVAL, "UnsupportedOperation",
                       "EBS optimization is not available in amid");
    if (jbool(json_object_get(in, "HibernationOptions"), "Configured", false))
        return err_set(&c->err, -EINVAL, "UnsupportedHibernationConfiguration",
                       "Hibernation is not available in amid");
    if (jbool(json_object_get(in, "EnclaveOptions"), "Enabled", false))
        return err_set(&c->err, -EINVAL, "UnsupportedOperation",
                       "Nitro Enclaves are not available in amid");
    return 0;
}

/* The reservation of `ids`, described. */
static json_t *reservation_json(struct api_call *c, const char *reservation_id, char (*ids)[32],
                                size_t n)
{
    json_t *list = json_array();
    struct db *db = core_db_get(c->app);
    for (size_t k = 0; k < n; k++) {
        struct db_instance i;
        if (db_instance_get(db, ids[k], &i) == 0) {
            json_array_append_new(list, instance_item(c, db, &i));
            db_instance_free_data(&i);
        }
    }
    core_db_put(c->app, db);
    return json_pack("{s:s, s:s, s:[], s:o}", "ReservationId", reservation_id, "OwnerId",
                     c->account_id, "Groups", "Instances", list);
}

#define RUN_MAX 20

int ec2_run_instances(struct api_call *c, json_t *in, json_t **ret)
{
    int rc = run_refusals(c, in);
    if (rc < 0)
        return rc;
    struct core_run_spec sp = { 0 };
    sp.image_id = jstr(in, "ImageId");
    sp.instance_type = jstr(in, "InstanceType");
    sp.min_count = json_integer_value(json_object_get(in, "MinCount"));
    sp.max_count = json_integer_value(json_object_get(in, "MaxCount"));
    sp.key_name = jstr(in, "KeyName");
    sp.client_token = jstr(in, "ClientToken");
    sp.disable_api_termination = jbool(in, "DisableApiTermination", false);
    sp.disable_api_stop = jbool(in, "DisableApiStop", false);
    sp.shutdown_behavior = jstr(in, "InstanceInitiatedShutdownBehavior");
    if (sp.client_token && strlen(sp.client_token) > 64)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "ClientToken is limited to 64 characters");
    rc = read_placement(c, json_object_get(in, "Placement"), &sp.zone);
    if (rc == 0)
        rc = read_metadata_options(c, json_object_get(in, "MetadataOptions"), &sp);
    if (rc < 0)
        return rc;
    /* UserData travels base64-encoded (the SDKs encode it). */
    uint8_t *ud = NULL;
    const char *ud64 = jstr(in, "UserData");
    if (ud64) {
        size_t n = strlen(ud64);
        ud = malloc(base64_decoded_max(n) + 1);
        if (!ud)
            return err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
        if (base64_decode(ud64, n, false, ud, &sp.user_data_len) < 0) {
            free(ud);
            return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                           "Invalid BASE64 encoding of user data.");
        }
        sp.user_data = ud;
    }
    struct core_run_bdm *bdms = NULL;
    struct core_tag *tags[2] = { NULL, NULL };
    size_t ntags[2];
    static const char *const types[] = { "instance", "volume" };
    rc = read_run_bdms(c, json_object_get(in, "BlockDeviceMappings"), &bdms, &sp.nbdms);
    if (rc == 0) {
        sp.bdms = bdms;
        rc = api_tag_specs_multi(c, in, types, 2, tags, ntags);
    }
    char(*ids)[32] = calloc(RUN_MAX, 32);
    if (rc == 0 && !ids)
        rc = err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
    char reservation[32];
    size_t n = 0;
    if (rc == 0) {
        sp.instance_tags = tags[0];
        sp.ninstance_tags = ntags[0];
        sp.volume_tags = tags[1];
        sp.nvolume_tags = ntags[1];
        struct core_caller who = caller(c);
        rc = core_run_instances(c->app, &who, &sp, reservation, ids, RUN_MAX, &n, &c->err);
    }
    if (rc >= 0) {
        *ret = reservation_json(c, reservation, ids, n);
        rc = 0;
    }
    free(ids);
    free(tags[0]);
    free(tags[1]);
    free(bdms);
    free(ud);
    return rc;
}

/* ---- DescribeInstances ---- */

static void state_reason_code(json_t *item, json_t *out)
{
    const char *code = jstr(json_object_get(item, "StateReason"), "Code");
    if (code)
        json_array_append_new(out, json_string(code));
}

static const struct api_filter_def instance_filters[] = {
    { "affinity", "Placement.Affinity", 0, NULL },
    { "architecture", "Architecture", 0, NULL },
    { "availability-zone", "Placement.AvailabilityZone", 0, NULL },
    { "availability-zone-id", "Placement.AvailabilityZoneId", 0, NULL },
    { "block-device-mapping.attach-time", "BlockDeviceMappings.Ebs.AttachTime", API_FILTER_TIME,
      NULL },
    { "block-device-mapping.delete-on-termination", "BlockDeviceMappings.Ebs.DeleteOnTermination",
      0, NULL },
    { "block-device-mapping.device-name", "BlockDeviceMappings.DeviceName", 0, NULL },
    { "block-device-mapping.status", "BlockDeviceMappings.Ebs.Status", 0, NULL },
    { "block-device-mapping.volume-id", "BlockDeviceMappings.Ebs.VolumeId", 0, NULL },
    { "boot-mode", "BootMode", 0, NULL },
    { "capacity-reservation-id", "CapacityReservationId", 0, NULL },
    { "capacity-reservation-specification.capacity-reservation-preference",
      "CapacityReservationSpecification.CapacityReservationPreference", 0, NULL },
    { "capacity-reservation-specification.capacity-reservation-target.capacity-reservation-id",
      "CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId", 0, NULL },
    { "client-token", "ClientToken", 0, NULL },
    { "current-instance-boot-mode", "CurrentInstanceBootMode", 0, NULL },
    { "dns-name", "PublicDnsName", 0, NULL },
    { "ebs-optimized", "EbsOptimized", 0, NULL },
    { "ena-support", "EnaSupport", 0, NULL },
    { "enclave-options.enabled", "EnclaveOptions.Enabled", 0, NULL },
    { "hibernation-options.configured", "HibernationOptions.Configured", 0, NULL },
    { "host-id", "Placement.HostId", 0, NULL },
    { "hypervisor", "Hypervisor", 0, NULL },
    { "iam-instance-profile.arn", "IamInstanceProfile.Arn", 0, NULL },
    { "iam-instance-profile.id", "IamInstanceProfile.Id", 0, NULL },
    { "image-id", "ImageId", 0, NULL },
    { "instance-id", "InstanceId", 0, NULL },
    { "instance-lifecycle", "InstanceLifecycle", 0, NULL },
    { "instance-state-code", "State.Code", 0, NULL },
    { "instance-state-name", "State.Name", 0, NULL },
    { "instance-type", "InstanceType", 0, NULL },
    { "instance.group-id", "SecurityGroups.GroupId", 0, NULL },
    { "instance.group-name", "SecurityGroups.GroupName", 0, NULL },
    { "ip-address", "PublicIpAddress", 0, NULL },
    { "ipv6-address", "Ipv6Address", 0, NULL },
    { "kernel-id", "KernelId", 0, NULL },
    { "key-name", "KeyName", 0, NULL },
    { "launch-index", "AmiLaunchIndex", 0, NULL },
    { "launch-time", "LaunchTime", API_FILTER_TIME, NULL },
    { "maintenance-options.auto-recovery", "MaintenanceOptions.AutoRecovery", 0, NULL },
    { "metadata-options.http-endpoint", "MetadataOptions.HttpEndpoint", 0, NULL },
    { "metadata-options.http-protocol-ipv4", "_HttpProtocolIpv4", 0, NULL },
    { "metadata-options.http-protocol-ipv6", "MetadataOptions.HttpProtocolIpv6", 0, NULL },
    { "metadata-options.http-put-response-hop-limit", "MetadataOptions.HttpPutResponseHopLimit", 0,
      NULL },
    { "metadata-options.http-tokens", "MetadataOptions.HttpTokens", 0, NULL },
    { "metadata-options.instance-metadata-tags", "MetadataOptions.InstanceMetadataTags", 0, NULL },
    { "metadata-options.state", "MetadataOptions.State", 0, NULL },
    { "monitoring-state", "Monitoring.State", 0, NULL },
    { "network-performance-options.bandwidth-weighting",
      "NetworkPerformanceOptions.BandwidthWeighting", 0, NULL },
    { "operator.managed", "Operator.Managed", 0, NULL },
    { "operator.principal", "Operator.Principal", 0, NULL },
    { "outpost-arn", "OutpostArn", 0, NULL },
    { "owner-id", "_OwnerId", 0, NULL },
    { "placement-group-name", "Placement.GroupName", 0, NULL },
    { "placement-partition-number", "Placement.PartitionNumber", 0, NULL },
    { "platform", "Platform", 0, NULL },
    { "platform-details", "PlatformDetails", 0, NULL },
    { "private-dns-name", "PrivateDnsName", 0, NULL },
    { "private-dns-name-options.enable-resource-name-dns-a-record",
      "PrivateDnsNameOptions.EnableResourceNameDnsARecord", 0, NULL },
    { "private-dns-name-options.enable-resource-name-dns-aaaa-record",
      "PrivateDnsNameOptions.EnableResourceNameDnsAAAARecord", 0, NULL },
    { "private-dns-name-options.hostname-type", "PrivateDnsNameOptions.HostnameType", 0, NULL },
    { "private-ip-address", "PrivateIpAddress", 0, NULL },
    { "product-code", "ProductCodes.ProductCodeId", 0, NULL },
    { "product-code.type", "ProductCodes.ProductCodeType", 0, NULL },
    { "ramdisk-id", "RamdiskId", 0, NULL },
    { "reason", "StateTransitionReason", 0, NULL },
    { "requester-id", "_RequesterId", 0, NULL },
    { "reservation-id", "_ReservationId", 0, NULL },
    { "root-device-name", "RootDeviceName", 0, NULL },
    { "root-device-type", "RootDeviceType", 0, NULL },
    { "source-dest-check", "SourceDestCheck", 0, NULL },
    { "spot-instance-request-id", "SpotInstanceRequestId", 0, NULL },
    { "state-reason-code", NULL, 0, state_reason_code },
    { "state-reason-message", "StateReason.Message", 0, NULL },
    { "subnet-id", "SubnetId", 0, NULL },
    { "tenancy", "Placement.Tenancy", 0, NULL },
    { "tpm-support", "TpmSupport", 0, NULL },
    { "usage-operation", "UsageOperation", 0, NULL },
    { "usage-operation-update-time", "UsageOperationUpdateTime", API_FILTER_TIME, NULL },
    { "virtualization-type", "VirtualizationType", 0, NULL },
    { "vpc-id", "VpcId", 0, NULL },
    /* Names of the model for members amid never has (network interfaces, capacity, TPM...):
     * accepted, matching nothing. */
    { "capacity-reservation-specification.capacity-reservation-target.capacity-reservation-"
      "resource-group-arn",
      "_none", 0, NULL },
    { "network-interface.addresses.association.allocation-id", "_none", 0, NULL },
    { "network-interface.addresses.association.association-id", "_none", 0, NULL },
    { "network-interface.addresses.association.carrier-ip", "_none", 0, NULL },
    { "network-interface.addresses.association.customer-owned-ip", "_none", 0, NULL },
    { "network-interface.addresses.association.ip-owner-id", "_none", 0, NULL },
    { "network-interface.addresses.association.public-dns-name", "_none", 0, NULL },
    { "network-interface.addresses.association.public-ip", "_none", 0, NULL },
    { "network-interface.addresses.primary", "_none", 0, NULL },
    { "network-interface.addresses.private-dns-name", "_none", 0, NULL },
    { "network-interface.addresses.private-ip-address", "_none", 0, NULL },
    { "network-interface.association.allocation-id", "_none", 0, NULL },
    { "network-interface.association.association-id", "_none", 0, NULL },
    { "network-interface.association.carrier-ip", "_none", 0, NULL },
    { "network-interface.association.customer-owned-ip", "_none", 0, NULL },
    { "network-interface.association.ip-owner-id", "_none", 0, NULL },
    { "network-interface.association.public-dns-name", "_none", 0, NULL },
    { "network-interface.association.public-ip", "_none", 0, NULL },
    { "network-interface.attachment.attach-time", "_none", 0, NULL },
    { "network-interface.attachment.attachment-id", "_none", 0, NULL },
    { "network-interface.attachment.delete-on-termination", "_none", 0, NULL },
    { "network-interface.attachment.device-index", "_none", 0, NULL },
    { "network-interface.attachment.instance-id", "_none", 0, NULL },
    { "network-interface.attachment.instance-owner-id", "_none", 0, NULL },
    { "network-interface.attachment.network-card-index", "_none", 0, NULL },
    { "network-interface.attachment.status", "_none", 0, NULL },
    { "network-interface.availability-zone", "_none", 0, NULL },
    { "network-interface.deny-all-igw-traffic", "_none", 0, NULL },
    { "network-interface.description", "_none", 0, NULL },
    { "network-interface.group-id", "_none", 0, NULL },
    { "network-interface.group-name", "_none", 0, NULL },
    { "network-interface.ipv4-prefixes.ipv4-prefix", "_none", 0, NULL },
    { "network-interface.ipv6-address", "_none", 0, NULL },
    { "network-interface.ipv6-addresses.ipv6-address", "_none", 0, NULL },
    { "network-interface.ipv6-addresses.is-primary-ipv6", "_none", 0, NULL },
    { "network-interface.ipv6-native", "_none", 0, NULL },
    { "network-interface.ipv6-prefixes.ipv6-prefix", "_none", 0, NULL },
    { "network-interface.mac-address", "_none", 0, NULL },
    { "network-interface.network-interface-id", "_none", 0, NULL },
    { "network-interface.operator.managed", "_none", 0, NULL },
    { "network-interface.operator.principal", "_none", 0, NULL },
    { "network-interface.outpost-arn", "_none", 0, NULL },
    { "network-interface.owner-id", "_none", 0, NULL },
    { "network-interface.private-dns-name", "_none", 0, NULL },
    { "network-interface.private-ip-address", "_none", 0, NULL },
    { "network-interface.public-dns-name", "_none", 0, NULL },
    { "network-interface.requester-id", "_none", 0, NULL },
    { "network-interface.requester-managed", "_none", 0, NULL },
    { "network-interface.status", "_none", 0, NULL },
    { "network-interface.source-dest-check", "_none", 0, NULL },
    { "network-interface.subnet-id", "_none", 0, NULL },
    { "network-interface.tag-key", "_none", 0, NULL },
    { "network-interface.tag-value", "_none", 0, NULL },
    { "network-interface.vpc-id", "_none", 0, NULL },
    { NULL, NULL, 0, NULL },
};

struct list_ctx {
    struct api_call *c;
    struct db *db;
    json_t *items;
    struct api_filters *f;
    json_t *ids;
    bool all; /* DescribeInstanceStatus: IncludeAllInstances */
};

static int instance_row(void *vctx, const struct db_instance *i)
{
    struct list_ctx *l = vctx;
    if (!api_wanted(l->ids, i->id))
        return 0;
    json_t *item = instance_item(l->c, l->db, i);
    if (!item)
        return -ENOMEM;
    /* Members of the reservation, for filters and grouping; not in the output shape. */
    json_object_set_new(item, "_ReservationId", json_string(i->reservation_id));
    json_object_set_new(item, "_OwnerId", json_string(i->owner));
    json_object_set_new(item, "_HttpProtocolIpv4", json_string("enabled"));
    if (api_filters_match(l->f, item))
        json_array_append(l->items, item);
    json_decref(item);
    return 0;
}

/* Lists the caller's instances as items (filtered, only `ids` when given, sorted by id). */
static int list_instances(struct api_call *c, struct list_ctx *l,
                          int (*row)(void *, const struct db_instance *))
{
    struct core_caller who = caller(c);
    l->db = core_db_get(c->app);
    int rc = core_instance_each(c->app, &who, row, l);
    core_db_put(c->app, l->db);
    if (rc < 0)
        return err_set(&c->err, rc, "InternalError", "cannot list instances");
    api_sort_items(l->items, "InstanceId");
    return 0;
}

/* Checks the ids asked for exist (a filter may still hide them). */
static int ids_exist(struct api_call *c, json_t *ids)
{
    if (!json_array_size(ids))
        return 0;
    struct list_ctx l = { c, NULL, json_array(), NULL, ids, false };
    int rc = list_instances(c, &l, instance_row);
    if (rc == 0)
        rc = api_ids_found(c, ids, l.items, "InstanceId", "i-", "InvalidInstanceID.Malformed",
                           "InvalidInstanceID.NotFound", "instance ID");
    json_decref(l.items);
    return rc;
}

/* InstanceIds and MaxResults do not go together. */
static int page_check(struct api_call *c, json_t *in)
{
    if (json_array_size(json_object_get(in, "InstanceIds")) && json_object_get(in, "MaxResults"))
        return err_set(&c->err, -EINVAL, "InvalidParameterCombination",
                       "The parameter instancesSet cannot be used with the parameter maxResults");
    return 0;
}

int ec2_describe_instances(struct api_call *c, json_t *in, json_t **ret)
{
    json_t *ids = json_object_get(in, "InstanceIds");
    struct list_ctx l = { c, NULL, json_array(), NULL, json_array_size(ids) ? ids : NULL, false };
    int rc = api_filters_parse(in, instance_filters, true, &l.f, &c->err);
    if (rc == 0)
        rc = ids_exist(c, l.ids);
    if (rc == 0)
        rc = list_instances(c, &l, instance_row);
    api_filters_free(l.f);
    json_t *pg = NULL;
    char *next = NULL;
    if (rc == 0)
        rc = page_check(c, in);
    if (rc == 0)
        rc = api_page(c, in, l.items, "InstanceId", 5, 1000, &pg, &next);
    json_decref(l.items);
    if (rc < 0)
        return rc;
    /* Group the page's instances by reservation, in order of first appearance. */
    json_t *res = json_array();
    for (size_t k = 0; k < json_array_size(pg); k++) {
        json_t *item = json_array_get(pg, k);
        const char *rid = jstr(item, "_ReservationId");
        json_t *r = NULL;
        for (size_t x = 0; x < json_array_size(res) && !r; x++)
            if (strcmp(jstr(json_array_get(res, x), "ReservationId"), rid) == 0)
                r = json_array_get(res, x);
        if (!r) {
            r = json_pack("{s:s, s:s, s:[], s:[]}", "ReservationId", rid, "OwnerId",
                          jstr(item, "_OwnerId"), "Groups", "Instances");
            json_array_append_new(res, r);
        }
        json_array_append(json_object_get(r, "Instances"), item);
    }
    json_decref(pg);
    *ret = json_pack("{s:o}", "Reservations", res);
    if (next) {
        json_object_set_new(*ret, "NextToken", json_string(next));
        free(next);
    }
    return 0;
}

/* ---- DescribeInstanceStatus ---- */

static const struct api_filter_def status_filters[] = {
    { "availability-zone", "AvailabilityZone", 0, NULL },
    { "availability-zone-id", "AvailabilityZoneId", 0, NULL },
    { "event.code", "Events.Code", 0, NULL },
    { "event.description", "Events.Description", 0, NULL },
    { "event.instance-event-id", "Events.InstanceEventId", 0, NULL },
    { "event.not-after", "Events.NotAfter", API_FILTER_TIME, NULL },
    { "event.not-before", "Events.NotBefore", API_FILTER_TIME, NULL },
    { "event.not-before-deadline", "Events.NotBeforeDeadline", API_FILTER_TIME, NULL },
    { "instance-state-code", "InstanceState.Code", 0, NULL },
    { "instance-state-name", "InstanceState.Name", 0, NULL },
    { "instance-status.reachability", "InstanceStatus.Details.Status", 0, NULL },
    { "instance-status.status", "InstanceStatus.Status", 0, NULL },
    { "operator.managed", "Operator.Managed", 0, NULL },
    { "operator.principal", "Operator.Principal", 0, NULL },
    { "system-status.reachability", "SystemStatus.Details.Status", 0, NULL },
    { "system-status.status", "SystemStatus.Status", 0, NULL },
    { "attached-ebs-status.status", "AttachedEbsStatus.Status", 0, NULL },
    { NULL, NULL, 0, NULL },
};

static json_t *summary(const char *status, const char *check)
{
    return json_pack("{s:s, s:[{s:s, s:s}]}", "Status", status, "Details", "Name", "reachability",
                     "Status", check);
}

static int status_row(void *vctx, const struct db_instance *i)
{
    struct list_ctx *l = vctx;
    bool running = strcmp(i->state, "running") == 0;
    if (!api_wanted(l->ids, i->id) || (!running && !l->all))
        return 0;
    json_t *item = json_pack("{s:s, s:s, s:o, s:[]}", "InstanceId", i->id, "AvailabilityZone",
                             i->zone, "InstanceState", state_json(i->state), "Events");
    if (!item)
        return -ENOMEM;
    if (running) {
        /* The host side (QEMU) is up once running; the guest passes once it has booted. */
        bool up = core_instance_reachable(l->c->app, i);
        json_object_set_new(item, "InstanceStatus",
                            up ? summary("ok", "passed") : summary("initializing", "initializing"));
        json_object_set_new(item, "SystemStatus", summary("ok", "passed"));
        json_object_set_new(item, "AttachedEbsStatus", summary("ok", "passed"));
    } else {
        json_object_set_new(item, "InstanceStatus", json_pack("{s:s}", "Status", "not-applicable"));
        json_object_set_new(item, "SystemStatus", json_pack("{s:s}", "Status", "not-applicable"));
    }
    if (api_filters_match(l->f, item))
        json_array_append(l->items, item);
    json_decref(item);
    return 0;
}

int ec2_describe_instance_status(struct api_call *c, json_t *in, json_t **ret)
{
    if (jbool(in, "IncludeManagedResources", false))
        return err_set(&c->err, -EINVAL, "UnsupportedOperation", "amid has no managed instances");
    json_t *ids = json_object_get(in, "InstanceIds");
    struct list_ctx l = { c,
                          NULL,
                          json_array(),
                          NULL,
                          json_array_size(ids) ? ids : NULL,
                          jbool(in, "IncludeAllInstances", false) };
    int rc = api_filters_parse(in, status_filters, false, &l.f, &c->err);
    if (rc == 0)
        rc = ids_exist(c, l.ids);
    if (rc == 0)
        rc = list_instances(c, &l, status_row);
    api_filters_free(l.f);
    if (rc == 0)
        rc = page_check(c, in);
    if (rc == 0)
        rc = api_page_into(c, in, l.items, "InstanceId", 5, 1000, "InstanceStatuses", ret);
    json_decref(l.items);
    return rc;
}

/* ---- state changes ---- */

static void change_item(void *vctx, const char *id, const char *prev, const char *cur)
{
    json_array_append_new(vctx, json_pack("{s:s, s:o, s:o}", "InstanceId", id, "PreviousState",
                                          state_json(prev), "CurrentState", state_json(cur)));
}

static int change(struct api_call *c, json_t *in, enum core_instance_op op, bool force,
                  const char *key, json_t **ret)
{
    json_t *ids = json_object_get(in, "InstanceIds");
    size_t n = json_array_size(ids);
    const char **v = calloc(n + 1, sizeof(*v));
    if (!v)
        return err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
    for (size_t k = 0; k < n; k++)
        v[k] = json_string_value(json_array_get(ids, k));
    json_t *items = json_array();
    struct core_caller who = caller(c);
    int rc = core_instances_change(c->app, &who, op, v, n, force, change_item, items, &c->err);
    free(v);
    if (rc == 0 && key)
        *ret = json_pack("{s:O}", key, items);
    json_decref(items);
    return rc;
}

int ec2_stop_instances(struct api_call *c, json_t *in, json_t **ret)
{
    if (jbool(in, "Hibernate", false))
        return err_set(&c->err, -EINVAL, "UnsupportedHibernationConfiguration",
                       "Hibernation is not available in amid");
    bool force = jbool(in, "Force", false) || jbool(in, "SkipOsShutdown", false);
    return change(c, in, CORE_OP_STOP, force, "StoppingInstances", ret);
}

int ec2_start_instances(struct api_call *c, json_t *in, json_t **ret)
{
    if (jstr(in, "AdditionalInfo"))
        return err_set(&c->err, -EINVAL, "UnsupportedOperation",
                       "The parameter AdditionalInfo is not supported by amid");
    return change(c, in, CORE_OP_START, false, "StartingInstances", ret);
}

int ec2_reboot_instances(struct api_call *c, json_t *in, json_t **ret)
{
    return change(c, in, CORE_OP_REBOOT, false, NULL, ret);
}

int ec2_terminate_instances(struct api_call *c, json_t *in, json_t **ret)
{
    bool force = jbool(in, "Force", false) || jbool(in, "SkipOsShutdown", false);
    return change(c, in, CORE_OP_TERMINATE, force, "TerminatingInstances", ret);
}

/* ---- attributes ---- */

static const char *value_str(json_t *in, const char *member)
{
    return jstr(json_object_get(in, member), "Value");
}

static int value_bool(json_t *in, const char *member)
{
    json_t *v = json_object_get(json_object_get(in, member), "Value");
    return v ? json_is_true(v) : -1;
}

/* ModifyInstanceAttribute's generic form: Attribute plus Value. */
static int modify_generic(struct api_call *c, json_t *in, struct core_instance_mod *m)
{
    const char *attr = jstr(in, "Attribute"), *val = jstr(in, "Value");
    if (!attr)
        return 0;
    if (!val)
        return err_set(&c->err, -EINVAL, "MissingParameter",
                       "The request must contain the parameter Value");
    bool t = strcmp(val, "true") == 0;
    if (strcmp(attr, "instanceType") == 0)
        m->instance_type = val;
    else if (strcmp(attr, "disableApiTermination") == 0)
        m->disable_api_termination = t;
    else if (strcmp(attr, "disableApiStop") == 0)
        m->disable_api_stop = t;
    else if (strcmp(attr, "instanceInitiatedShutdownBehavior") == 0)
        m->shutdown_behavior = val;
    else if (strcmp(attr, "userData") == 0) {
        m->user_data = (const uint8_t *)val;
        m->user_data_len = strlen(val);
        m->has_user_data = true;
    } else
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Attribute %.40s cannot be modified in amid", attr);
    return 1;
}

int ec2_modify_instance_attribute(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    static const char *const no[] = { "SourceDestCheck", "EbsOptimized",
                                      "EnaSupport",      "Groups",
                                      "Kernel",          "Ramdisk",
                                      "SriovNetSupport", NULL };
    int rc = refuse(c, in, no, "UnsupportedOperation");
    if (rc < 0)
        return rc;
    struct core_instance_mod m = { 0 };
    m.disable_api_termination = m.disable_api_stop = m.dot = -1;
    int given = 0;
    if ((m.instance_type = value_str(in, "InstanceType")))
        given++;
    json_t *ud = json_object_get(json_object_get(in, "UserData"), "Value");
    if (ud) {
        m.user_data = (const uint8_t *)json_string_value(ud);
        m.user_data_len = json_string_length(ud);
        m.has_user_data = true;
        given++;
    }
    if ((m.disable_api_termination = value_bool(in, "DisableApiTermination")) >= 0)
        given++;
    if ((m.disable_api_stop = value_bool(in, "DisableApiStop")) >= 0)
        given++;
    if ((m.shutdown_behavior = value_str(in, "InstanceInitiatedShutdownBehavior")))
        given++;
    json_t *bdms = json_object_get(in, "BlockDeviceMappings");
    if (json_array_size(bdms)) {
        if (json_array_size(bdms) > 1)
            return err_set(&c->err, -EINVAL, "InvalidParameterCombination",
                           "amid changes one block device mapping per call");
        json_t *b = json_array_get(bdms, 0);
        json_t *dot = json_object_get(json_object_get(b, "Ebs"), "DeleteOnTermination");
        m.dot_device = jstr(b, "DeviceName");
        if (!m.dot_device || !dot)
            return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                           "A block device mapping change needs DeviceName and "
                           "Ebs.DeleteOnTermination");
        m.dot = json_is_true(dot);
        given++;
    }
    rc = modify_generic(c, in, &m);
    if (rc < 0)
        return rc;
    given += rc;
    if (given == 0)
        return err_set(&c->err, -EINVAL, "MissingParameter",
                       "The request must name an attribute to modify");
    if (given > 1)
        return err_set(&c->err, -EINVAL, "InvalidParameterCombination",
                       "Only one attribute can be modified at a time");
    struct core_caller who = caller(c);
    return core_instance_modify(c->app, &who, jstr(in, "InstanceId"), &m, &c->err);
}

int ec2_describe_instance_attribute(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    struct db_instance i;
    const char *id = jstr(in, "InstanceId"), *attr = jstr(in, "Attribute");
    int rc = core_instance_get(c->app, &who, id, &i, &c->err);
    if (rc < 0)
        return rc;
    json_t *o = json_pack("{s:s}", "InstanceId", i.id);
    if (strcmp(attr, "instanceType") == 0) {
        json_object_set_new(o, "InstanceType", json_pack("{s:s}", "Value", i.instance_type));
    } else if (strcmp(attr, "userData") == 0) {
        json_t *v = json_object();
        if (i.user_data_len) {
            char *enc = malloc(base64_encoded_len(i.user_data_len) + 1);
            if (enc) {
                base64_encode(i.user_data, i.user_data_len, enc);
                json_object_set_new(v, "Value", json_string(enc));
                free(enc);
            }
        }
        json_object_set_new(o, "UserData", v);
    } else if (strcmp(attr, "disableApiTermination") == 0) {
        json_object_set_new(o, "DisableApiTermination",
                            json_pack("{s:b}", "Value", i.disable_api_termination));
    } else if (strcmp(attr, "disableApiStop") == 0) {
        json_object_set_new(o, "DisableApiStop", json_pack("{s:b}", "Value", i.disable_api_stop));
    } else if (strcmp(attr, "instanceInitiatedShutdownBehavior") == 0) {
        json_object_set_new(o, "InstanceInitiatedShutdownBehavior",
                            json_pack("{s:s}", "Value", i.shutdown_behavior));
    } else if (strcmp(attr, "rootDeviceName") == 0) {
        json_object_set_new(o, "RootDeviceName", json_pack("{s:s}", "Value", i.root_device_name));
    } else if (strcmp(attr, "blockDeviceMapping") == 0) {
        json_t *l = json_array();
        struct db *db = core_db_get(c->app);
        db_attachment_each(db, i.id, bdm_item, l);
        core_db_put(c->app, db);
        json_object_set_new(o, "BlockDeviceMappings", l);
    } else if (strcmp(attr, "productCodes") == 0) {
        json_object_set_new(o, "ProductCodes", json_array());
    } else if (strcmp(attr, "groupSet") == 0) {
        json_object_set_new(o, "Groups", json_array());
    } else if (strcmp(attr, "sourceDestCheck") == 0) {
        json_object_set_new(o, "SourceDestCheck", json_pack("{s:b}", "Value", 1));
    } else if (strcmp(attr, "ebsOptimized") == 0) {
        json_object_set_new(o, "EbsOptimized", json_pack("{s:b}", "Value", 0));
    } else if (strcmp(attr, "enaSupport") == 0) {
        json_object_set_new(o, "EnaSupport", json_pack("{s:b}", "Value", i.ena_support));
    } else if (strcmp(attr, "enclaveOptions") == 0) {
        json_object_set_new(o, "EnclaveOptions", json_pack("{s:b}", "Enabled", 0));
    } else if (strcmp(attr, "kernel") == 0) {
        json_object_set_new(o, "KernelId", json_object());
    } else if (strcmp(attr, "ramdisk") == 0) {
        json_object_set_new(o, "RamdiskId", json_object());
    } else if (strcmp(attr, "sriovNetSupport") == 0) {
        json_object_set_new(o, "SriovNetSupport", json_object());
    } else {
        json_decref(o);
        db_instance_free_data(&i);
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Value (%.40s) for parameter attribute is invalid.", attr);
    }
    db_instance_free_data(&i);
    *ret = o;
    return 0;
}

int ec2_modify_instance_metadata_options(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_run_spec sp = { 0 };
    int rc = read_metadata_options(c, in, &sp);
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    struct db_instance i;
    rc = core_instance_metadata_options(c->app, &who, jstr(in, "InstanceId"), sp.http_tokens,
                                        sp.hop_limit, sp.http_endpoint, sp.metadata_tags, &i,
                                        &c->err);
    if (rc < 0)
        return rc;
    *ret = json_pack("{s:s, s:{s:s, s:s, s:I, s:s, s:s, s:s}}", "InstanceId", i.id,
                     "InstanceMetadataOptions", "State", "applied", "HttpTokens", i.http_tokens,
                     "HttpPutResponseHopLimit", (json_int_t)i.hop_limit, "HttpEndpoint",
                     i.http_endpoint, "HttpProtocolIpv6", "disabled", "InstanceMetadataTags",
                     i.metadata_tags);
    db_instance_free_data(&i);
    return 0;
}

/* ---- volumes ---- */

static json_t *attachment_json(const struct db_attachment *a, bool dot)
{
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s}", "AttachTime", (json_int_t)a->attach_ms,
                          "Device", a->device_name, "InstanceId", a->instance_id, "State", a->state,
                          "VolumeId", a->volume_id);
    if (o && dot)
        json_object_set_new(o, "DeleteOnTermination", json_boolean(a->delete_on_termination));
    return o;
}

int ec2_attach_volume(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    struct db_attachment a;
    int rc = core_volume_attach(c->app, &who, jstr(in, "VolumeId"), jstr(in, "InstanceId"),
                                jstr(in, "Device"), &a, &c->err);
    if (rc == 0)
        *ret = attachment_json(&a, true);
    return rc;
}

int ec2_detach_volume(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    struct db_attachment a;
    int rc = core_volume_detach(c->app, &who, jstr(in, "VolumeId"), jstr(in, "InstanceId"),
                                jstr(in, "Device"), jbool(in, "Force", false), &a, &c->err);
    if (rc == 0)
        *ret = attachment_json(&a, false);
    return rc;
}

int ec2_get_console_output(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    struct buf out;
    buf_init(&out, 1 << 20);
    const char *id = jstr(in, "InstanceId");
    int rc = core_console_output(c->app, &who, id, jbool(in, "Latest", false), &out, &c->err);
    if (rc < 0) {
        buf_free(&out);
        return rc;
    }
    *ret = json_pack("{s:s, s:I}", "InstanceId", id, "Timestamp", (json_int_t)c->now_ms);
    if (out.len) {
        char *enc = malloc(base64_encoded_len(out.len) + 1);
        if (!enc) {
            buf_free(&out);
            return err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
        }
        base64_encode(out.data, out.len, enc);
        json_object_set_new(*ret, "Output", json_string(enc));
        free(enc);
    }
    buf_free(&out);
    return 0;
}

/* ---- images and snapshots of instances ---- */

int ec2_create_image(struct api_call *c, json_t *in, json_t **ret)
{
    if (json_object_get(in, "SnapshotLocation"))
        return err_set(&c->err, -EINVAL, "UnsupportedOperation",
                       "Snapshots in Local Zones are not available in amid");
    struct core_run_bdm *bdms = NULL;
    size_t nbdms = 0;
    struct core_tag *tags[2] = { NULL, NULL };
    size_t ntags[2];
    static const char *const types[] = { "image", "snapshot" };
    int rc = read_run_bdms(c, json_object_get(in, "BlockDeviceMappings"), &bdms, &nbdms);
    if (rc == 0)
        rc = api_tag_specs_multi(c, in, types, 2, tags, ntags);
    char id[32];
    if (rc == 0) {
        struct core_caller who = caller(c);
        rc = core_image_create(c->app, &who, jstr(in, "InstanceId"), jstr(in, "Name"),
                               jstr(in, "Description"), jbool(in, "NoReboot", false), bdms, nbdms,
                               tags[0], ntags[0], tags[1], ntags[1], id, &c->err);
    }
    if (rc == 0)
        *ret = json_pack("{s:s}", "ImageId", id);
    free(bdms);
    free(tags[0]);
    free(tags[1]);
    return rc;
}

static void snapshot_info(void *vctx, const struct db_snapshot *s)
{
    json_array_append_new(
        vctx, json_pack("{s:s, s:s, s:I, s:s, s:I, s:s, s:s, s:b, s:s, s:s}", "Description",
                        s->description, "SnapshotId", s->id, "StartTime", (json_int_t)s->start_ms,
                        "VolumeId", s->volume_id, "VolumeSize", (json_int_t)s->volume_size_gib,
                        "State", s->state, "Progress", "0%", "Encrypted", s->encrypted, "OwnerId",
                        s->owner, "SseType", "none"));
}

int ec2_create_snapshots(struct api_call *c, json_t *in, json_t **ret)
{
    if (json_object_get(in, "OutpostArn") || json_object_get(in, "Location"))
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Snapshots on Outposts or in Local Zones are not available in amid");
    json_t *spec = json_object_get(in, "InstanceSpecification");
    json_t *ex = json_object_get(spec, "ExcludeDataVolumeIds");
    size_t nex = json_array_size(ex);
    const char **exv = calloc(nex + 1, sizeof(*exv));
    struct core_tag *tags = NULL;
    size_t ntags = 0;
    if (!exv)
        return err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
    for (size_t k = 0; k < nex; k++)
        exv[k] = json_string_value(json_array_get(ex, k));
    const char *copy = jstr(in, "CopyTagsFromSource");
    int rc = api_tag_specs(c, in, "snapshot", &tags, &ntags);
    json_t *items = json_array();
    if (rc == 0) {
        struct core_caller who = caller(c);
        rc = core_snapshots_create(
            c->app, &who, jstr(spec, "InstanceId"), jbool(spec, "ExcludeBootVolume", false), exv,
            nex, jstr(in, "Description"), tags, ntags, copy && strcmp(copy, "volume") == 0,
            snapshot_info, items, &c->err);
    }
    if (rc == 0) {
        struct db *db = core_db_get(c->app);
        for (size_t k = 0; k < json_array_size(items); k++) {
            json_t *s = json_array_get(items, k);
            api_add_tags(c, db, s, jstr(s, "SnapshotId"));
        }
        core_db_put(c->app, db);
        *ret = json_pack("{s:O}", "Snapshots", items);
    }
    json_decref(items);
    free(exv);
    free(tags);
    return rc;
}

/* ---- DescribeInstanceTypes ---- */

static json_t *type_item(const struct core_instance_type *t)
{
    bool t2 = strncmp(t->name, "t2.", 3) == 0;
    bool free_tier = strcmp(t->name, "t2.micro") == 0 || strcmp(t->name, "t3.micro") == 0;
    unsigned threads = t2 ? 1 : (t->vcpus > 1 ? 2 : 1);
    json_t *o = json_pack(
        "{s:s, s:b, s:b, s:[s], s:[s], s:[s], s:b, s:s, s:{s:[s]}, s:{s:i, s:i, s:i}, "
        "s:{s:I}, s:b, s:{s:s, s:s, s:s}, s:b, s:b, s:b, s:b, s:b}",
        "InstanceType", t->name, "CurrentGeneration", t->current, "FreeTierEligible", free_tier,
        "SupportedUsageClasses", "on-demand", "SupportedRootDeviceTypes", "ebs",
        "SupportedVirtualizationTypes", "hvm", "BareMetal", 0, "Hypervisor", t2 ? "xen" : "nitro",
        "ProcessorInfo", "SupportedArchitectures", "x86_64", "VCpuInfo", "DefaultVCpus",
        (int)t->vcpus, "DefaultCores", (int)(t->vcpus / threads), "DefaultThreadsPerCore",
        (int)threads, "MemoryInfo", "SizeInMiB", (json_int_t)t->mem_mib, "InstanceStorageSupported",
        0, "EbsInfo", "EbsOptimizedSupport", t2 ? "unsupported" : "default", "EncryptionSupport",
        "supported", "NvmeSupport", t2 ? "unsupported" : "required", "HibernationSupported", 0,
        "BurstablePerformanceSupported", t->burstable, "DedicatedHostsSupported", 0,
        "AutoRecoverySupported", 1, "SupportedInRegion", 1);
    if (!o)
        return NULL;
    if (t2) /* t2 runs 32-bit x86 as well */
        json_array_append_new(
            json_object_get(json_object_get(o, "ProcessorInfo"), "SupportedArchitectures"),
            json_string("i386"));
    json_t *modes = json_pack("[s]", "legacy-bios");
    if (!t2)
        json_array_append_new(modes, json_string("uefi"));
    json_object_set_new(o, "SupportedBootModes", modes);
    json_object_set_new(
        o, "NetworkInfo",
        json_pack("{s:s, s:i, s:i, s:s, s:b, s:b}", "NetworkPerformance", "Up to 5 Gigabit",
                  "MaximumNetworkInterfaces", 2, "Ipv4AddressesPerInterface", 2, "EnaSupport",
                  t2 ? "unsupported" : "required", "Ipv6Supported", 0, "EfaSupported", 0));
    json_object_set_new(o, "PlacementGroupInfo",
                        json_pack("{s:[s]}", "SupportedStrategies", "partition"));
    json_object_set_new(o, "NitroEnclavesSupport", json_string("unsupported"));
    json_object_set_new(o, "NitroTpmSupport", json_string("unsupported"));
    return o;
}

static const struct api_filter_def type_filters[] = {
    { "auto-recovery-supported", "AutoRecoverySupported", 0, NULL },
    { "bare-metal", "BareMetal", 0, NULL },
    { "burstable-performance-supported", "BurstablePerformanceSupported", 0, NULL },
    { "current-generation", "CurrentGeneration", 0, NULL },
    { "dedicated-hosts-supported", "DedicatedHostsSupported", 0, NULL },
    { "ebs-info.ebs-optimized-support", "EbsInfo.EbsOptimizedSupport", 0, NULL },
    { "ebs-info.encryption-support", "EbsInfo.EncryptionSupport", 0, NULL },
    { "ebs-info.nvme-support", "EbsInfo.NvmeSupport", 0, NULL },
    { "free-tier-eligible", "FreeTierEligible", 0, NULL },
    { "hibernation-supported", "HibernationSupported", 0, NULL },
    { "hypervisor", "Hypervisor", 0, NULL },
    { "instance-storage-supported", "InstanceStorageSupported", 0, NULL },
    { "instance-type", "InstanceType", 0, NULL },
    { "memory-info.size-in-mib", "MemoryInfo.SizeInMiB", 0, NULL },
    { "network-info.ena-support", "NetworkInfo.EnaSupport", 0, NULL },
    { "network-info.efa-supported", "NetworkInfo.EfaSupported", 0, NULL },
    { "network-info.ipv4-addresses-per-interface", "NetworkInfo.Ipv4AddressesPerInterface", 0,
      NULL },
    { "network-info.ipv6-supported", "NetworkInfo.Ipv6Supported", 0, NULL },
    { "network-info.maximum-network-interfaces", "NetworkInfo.MaximumNetworkInterfaces", 0, NULL },
    { "network-info.network-performance", "NetworkInfo.NetworkPerformance", 0, NULL },
    { "nitro-enclaves-support", "NitroEnclavesSupport", 0, NULL },
    { "nitro-tpm-support", "NitroTpmSupport", 0, NULL },
    { "processor-info.supported-architecture", "ProcessorInfo.SupportedArchitectures", 0, NULL },
    { "supported-boot-mode", "SupportedBootModes", 0, NULL },
    { "supported-root-device-type", "SupportedRootDeviceTypes", 0, NULL },
    { "supported-usage-class", "SupportedUsageClasses", 0, NULL },
    { "supported-virtualization-type", "SupportedVirtualizationTypes", 0, NULL },
    { "vcpu-info.default-cores", "VCpuInfo.DefaultCores", 0, NULL },
    { "vcpu-info.default-threads-per-core", "VCpuInfo.DefaultThreadsPerCore", 0, NULL },
    { "vcpu-info.default-vcpus", "VCpuInfo.DefaultVCpus", 0, NULL },
    /* Names of the model for members amid never has (network interfaces, capacity, TPM...):
     * accepted, matching nothing. */
    { "ebs-info.attachment-limit-type", "_none", 0, NULL },
    { "ebs-info.maximum-ebs-attachments", "_none", 0, NULL },
    { "ebs-info.ebs-optimized-info.baseline-bandwidth-in-mbps", "_none", 0, NULL },
    { "ebs-info.ebs-optimized-info.baseline-iops", "_none", 0, NULL },
    { "ebs-info.ebs-optimized-info.baseline-throughput-in-mbps", "_none", 0, NULL },
    { "ebs-info.ebs-optimized-info.maximum-bandwidth-in-mbps", "_none", 0, NULL },
    { "ebs-info.ebs-optimized-info.maximum-iops", "_none", 0, NULL },
    { "ebs-info.ebs-optimized-info.maximum-throughput-in-mbps", "_none", 0, NULL },
    { "instance-storage-info.disk.count", "_none", 0, NULL },
    { "instance-storage-info.disk.size-in-gb", "_none", 0, NULL },
    { "instance-storage-info.disk.type", "_none", 0, NULL },
    { "instance-storage-info.encryption-support", "_none", 0, NULL },
    { "instance-storage-info.nvme-support", "_none", 0, NULL },
    { "instance-storage-info.total-size-in-gb", "_none", 0, NULL },
    { "network-info.bandwidth-weightings", "_none", 0, NULL },
    { "network-info.efa-info.maximum-efa-interfaces", "_none", 0, NULL },
    { "network-info.flexible-ena-queues-support", "_none", 0, NULL },
    { "network-info.encryption-in-transit-supported", "_none", 0, NULL },
    { "network-info.ipv6-addresses-per-interface", "_none", 0, NULL },
    { "network-info.maximum-network-cards", "_none", 0, NULL },
    { "nitro-tpm-info.supported-versions", "_none", 0, NULL },
    { "processor-info.sustained-clock-speed-in-ghz", "_none", 0, NULL },
    { "processor-info.supported-features", "_none", 0, NULL },
    { "reboot-migration-support", "_none", 0, NULL },
    { "vcpu-info.valid-cores", "_none", 0, NULL },
    { "vcpu-info.valid-threads-per-core", "_none", 0, NULL },
    { NULL, NULL, 0, NULL },
};

int ec2_describe_instance_types(struct api_call *c, json_t *in, json_t **ret)
{
    json_t *want = json_object_get(in, "InstanceTypes");
    for (size_t k = 0; k < json_array_size(want); k++) {
        const char *name = json_string_value(json_array_get(want, k));
        if (!core_instance_type(name))
            return err_set(&c->err, -EINVAL, "InvalidInstanceType",
                           "The following supplied instance types do not exist: [%.32s]", name);
    }
    struct api_filters *f;
    int rc = api_filters_parse(in, type_filters, false, &f, &c->err);
    if (rc < 0)
        return rc;
    size_t n;
    const struct core_instance_type *types = core_instance_types(&n);
    json_t *items = json_array();
    for (size_t k = 0; k < n; k++) {
        if (json_array_size(want) && !api_wanted(want, types[k].name))
            continue;
        json_t *item = type_item(&types[k]);
        if (item && api_filters_match(f, item))
            json_array_append(items, item);
        json_decref(item);
    }
    api_filters_free(f);
    rc = api_page_into(c, in, items, "InstanceType", 5, 100, "InstanceTypes", ret);
    json_decref(items);
    return rc;
}
