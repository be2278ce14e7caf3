/*
 * api_dispatch.c — one request from bytes to answer: which protocol it speaks, who signed it,
 * which service and operation it calls, the typed input, the handler, and the encoded result or
 * error.  The services table at the bottom is the only place a new service is added.
 */
#include "api/api_int.h"
#include "core/core.h"
#include "crypto/crypto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EC2_VERSION "2016-11-15"

/* ---- small helpers shared by handlers ---- */

const char *jstr(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

bool jbool(json_t *obj, const char *key, bool dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

int api_dry_run(struct api_call *call)
{
    return core_dry_run(&call->err);
}

void api_response_header(struct api_response *resp, const char *name, const char *fmt, ...)
{
    if (resp->nheaders >= API_MAX_RESP_HEADERS)
        return;
    va_list ap;
    va_start(ap, fmt);
    resp->headers[resp->nheaders].name = name;
    vsnprintf(resp->headers[resp->nheaders].value, sizeof(resp->headers[0].value), fmt, ap);
    va_end(ap);
    resp->nheaders++;
}

struct tags_acc {
    json_t *arr;
};

static int add_tag(void *ctx, const struct core_tag_row *t)
{
    struct tags_acc *a = ctx;
    json_t *o = json_pack("{s:s, s:s}", "Key", t->key, "Value", t->value);
    return o ? json_array_append_new(a->arr, o) : -ENOMEM;
}

int api_add_tags(struct api_call *call, struct db *db, json_t *item, const char *resource_id)
{
    struct tags_acc a = { json_array() };
    int rc = core_tags_of(call->app, db, call->region, call->account_id, resource_id, add_tag, &a);
    if (rc == 0 && json_array_size(a.arr))
        json_object_set(item, "Tags", a.arr);
    json_decref(a.arr);
    return rc;
}

/* ---- the services ---- */

static const struct api_op ec2_ops[] = {
    { "AttachVolume", ec2_attach_volume, API_OP_MUTATING },
    { "CancelImageLaunchPermission", ec2_cancel_image_launch_permission, API_OP_MUTATING },
    { "CopyImage", ec2_copy_image, API_OP_MUTATING },
    { "CopySnapshot", ec2_copy_snapshot, API_OP_MUTATING },
    { "CreateImage", ec2_create_image, API_OP_MUTATING },
    { "CreateKeyPair", ec2_create_key_pair, API_OP_MUTATING },
    { "CreateSnapshot", ec2_create_snapshot, API_OP_MUTATING },
    { "CreateSnapshots", ec2_create_snapshots, API_OP_MUTATING },
    { "CreateTags", ec2_create_tags, API_OP_MUTATING },
    { "CreateVolume", ec2_create_volume, API_OP_MUTATING },
    { "DeleteKeyPair", ec2_delete_key_pair, API_OP_MUTATING },
    { "DeleteSnapshot", ec2_delete_snapshot, API_OP_MUTATING },
    { "DeleteTags", ec2_delete_tags, API_OP_MUTATING },
    { "DeleteVolume", ec2_delete_volume, API_OP_MUTATING },
    { "DeregisterImage", ec2_deregister_image, API_OP_MUTATING },
    { "DescribeAccountAttributes", ec2_describe_account_attributes, 0 },
    { "DescribeAvailabilityZones", ec2_describe_availability_zones, 0 },
    { "DescribeImageAttribute", ec2_describe_image_attribute, API_OP_MUTATING },
    { "DescribeImages", ec2_describe_images, API_OP_CACHED },
    { "DescribeInstanceAttribute", ec2_describe_instance_attribute, 0 },
    { "DescribeInstanceStatus", ec2_describe_instance_status, 0 },
    { "DescribeInstanceTypes", ec2_describe_instance_types, 0 },
    { "DescribeInstances", ec2_describe_instances, 0 },
    { "DescribeKeyPairs", ec2_describe_key_pairs, 0 },
    { "DescribeRegions", ec2_describe_regions, 0 },
    { "DescribeSnapshotAttribute", ec2_describe_snapshot_attribute, 0 },
    { "DescribeSnapshots", ec2_describe_snapshots, 0 },
    { "DescribeTags", ec2_describe_tags, 0 },
    { "DescribeVolumes", ec2_describe_volumes, 0 },
    { "DescribeVolumesModifications", ec2_describe_volumes_modifications, 0 },
    { "DetachVolume", ec2_detach_volume, API_OP_MUTATING },
    { "DisableEbsEncryptionByDefault", ec2_disable_ebs_encryption_by_default, API_OP_MUTATING },
    { "DisableImage", ec2_disable_image, API_OP_MUTATING },
    { "DisableImageBlockPublicAccess", ec2_disable_image_block_public_access, API_OP_MUTATING },
    { "DisableImageDeprecation", ec2_disable_image_deprecation, API_OP_MUTATING },
    { "DisableImageDeregistrationProtection", ec2_disable_image_deregistration_protection,
      API_OP_MUTATING },
    { "EnableEbsEncryptionByDefault", ec2_enable_ebs_encryption_by_default, API_OP_MUTATING },
    { "EnableImage", ec2_enable_image, API_OP_MUTATING },
    { "EnableImageBlockPublicAccess", ec2_enable_image_block_public_access, API_OP_MUTATING },
    { "EnableImageDeprecation", ec2_enable_image_deprecation, API_OP_MUTATING },
    { "EnableImageDeregistrationProtection", ec2_enable_image_deregistration_protection,
      API_OP_MUTATING },
    { "GetConsoleOutput", ec2_get_console_output, 0 },
    { "GetEbsDefaultKmsKeyId", ec2_get_ebs_default_kms_key_id, 0 },
    { "GetEbsEncryptionByDefault", ec2_get_ebs_encryption_by_default, 0 },
    { "GetImageBlockPublicAccessState", ec2_get_image_block_public_access_state, 0 },
    { "ImportKeyPair", ec2_import_key_pair, API_OP_MUTATING },
    { "ModifyEbsDefaultKmsKeyId", ec2_modify_ebs_default_kms_key_id, API_OP_MUTATING },
    { "ModifyImageAttribute", ec2_modify_image_attribute, API_OP_MUTATING },
    { "ModifyInstanceAttribute", ec2_modify_instance_attribute, API_OP_MUTATING },
    { "ModifyInstanceMetadataOptions", ec2_modify_instance_metadata_options, API_OP_MUTATING },
    { "ModifySnapshotAttribute", ec2_modify_snapshot_attribute, API_OP_MUTATING },
    { "ModifyVolume", ec2_modify_volume, API_OP_MUTATING },
    { "RebootInstances", ec2_reboot_instances, API_OP_MUTATING },
    { "RegisterImage", ec2_register_image, API_OP_MUTATING },
    { "ResetEbsDefaultKmsKeyId", ec2_reset_ebs_default_kms_key_id, API_OP_MUTATING },
    { "ResetImageAttribute", ec2_reset_image_attribute, API_OP_MUTATING },
    { "ResetSnapshotAttribute", ec2_reset_snapshot_attribute, API_OP_MUTATING },
    { "RunInstances", ec2_run_instances, API_OP_MUTATING },
    { "StartInstances", ec2_start_instances, API_OP_MUTATING },
    { "StopInstances", ec2_stop_instances, API_OP_MUTATING },
    { "TerminateInstances", ec2_terminate_instances, API_OP_MUTATING },
};

static const struct api_op ebs_ops[] = {
    { "CompleteSnapshot", ebs_complete_snapshot, 0 },
    { "GetSnapshotBlock", ebs_get_snapshot_block, 0 },
    { "ListChangedBlocks", ebs_list_changed_blocks, 0 },
    { "ListSnapshotBlocks", ebs_list_snapshot_blocks, 0 },
    { "PutSnapshotBlock", ebs_put_snapshot_block, 0 },
    { "StartSnapshot", ebs_start_snapshot, 0 },
};

/* KMS: the operations with a DryRun member answer it themselves (DryRunOperationException). */
static const struct api_op kms_ops[] = {
    { "CancelKeyDeletion", kms_cancel_key_deletion, 0 },
    { "CreateAlias", kms_create_alias, 0 },
    { "CreateGrant", kms_create_grant, API_OP_MUTATING },
    { "CreateKey", kms_create_key, 0 },
    { "Decrypt", kms_decrypt, API_OP_MUTATING },
    { "DeleteAlias", kms_delete_alias, 0 },
    { "DescribeKey", kms_describe_key, 0 },
    { "DisableKey", kms_disable_key, 0 },
    { "EnableKey", kms_enable_key, 0 },
    { "Encrypt", kms_encrypt, API_OP_MUTATING },
    { "GenerateDataKey", kms_generate_data_key, API_OP_MUTATING },
    { "GenerateDataKeyWithoutPlaintext", kms_generate_data_key_without_plaintext, API_OP_MUTATING },
    { "GetKeyPolicy", kms_get_key_policy, 0 },
    { "ListAliases", kms_list_aliases, 0 },
    { "ListGrants", kms_list_grants, 0 },
    { "ListKeys", kms_list_keys, 0 },
    { "ListResourceTags", kms_list_resource_tags, 0 },
    { "PutKeyPolicy", kms_put_key_policy, 0 },
    { "ReEncrypt", kms_re_encrypt, API_OP_MUTATING },
    { "RetireGrant", kms_retire_grant, API_OP_MUTATING },
    { "RevokeGrant", kms_revoke_grant, API_OP_MUTATING },
    { "ScheduleKeyDeletion", kms_schedule_key_deletion, 0 },
    { "TagResource", kms_tag_resource, 0 },
    { "UntagResource", kms_untag_resource, 0 },
    { "UpdateAlias", kms_update_alias, 0 },
};

static const struct api_op sts_ops[] = {
    { "GetCallerIdentity", sts_get_caller_identity, 0 },
};

static const struct api_service services[] = {
    { "ebs", PROTO_REST_JSON, &model_ebs, ebs_ops, ARRAY_SIZE(ebs_ops) },
    { "ec2", PROTO_EC2, &model_ec2, ec2_ops, ARRAY_SIZE(ec2_ops) },
    { "kms", PROTO_JSON, &model_kms, kms_ops, ARRAY_SIZE(kms_ops) },
    { "sts", PROTO_QUERY, &model_sts, sts_ops, ARRAY_SIZE(sts_ops) },
};

const struct api_service *api_service_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(services); i++)
        if (strcmp(services[i].name, name) == 0)
            return &services[i];
    return NULL;
}

static const struct api_op *op_find(const struct api_service *svc, const char *name)
{
    for (size_t i = 0; i < svc->nops; i++)
        if (strcmp(svc->ops[i].name, name) == 0)
            return &svc->ops[i];
    return NULL;
}

/* ---- responses ---- */

static void fail_full(struct api_response *resp, enum api_proto proto,
                      const struct api_service *svc, const char *code, int status, const char *msg,
                      const char *reason)
{
    buf_reset(&resp->body);
    resp->nheaders = 0;
    resp->status = status ? status : api_error_status(proto, svc ? svc->model : NULL, code);
    snprintf(resp->error_code, sizeof(resp->error_code), "%s", code);
    if (proto == PROTO_EC2 || proto == PROTO_QUERY) {
        resp->content_type = "text/xml;charset=UTF-8";
        api_xml_error(&resp->body, proto == PROTO_EC2, code, msg, resp->request_id);
    } else {
        resp->content_type =
            proto == PROTO_JSON ? "application/x-amz-json-1.1" : "application/json";
        api_response_header(resp, "x-amzn-ErrorType", "%s", code);
        json_t *o = json_pack("{s:s, s:s}", "__type", code, "message", msg);
        if (o && reason)
            json_object_set_new(o, "Reason", json_string(reason));
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        buf_puts(&resp->body, s ? s : "{}");
        free(s);
        json_decref(o);
    }
}

static void fail(struct api_response *resp, enum api_proto proto, const char *code, int status,
                 const char *msg)
{
    fail_full(resp, proto, NULL, code, status, msg, NULL);
}

/* The protocol a request looks like, before we know who sent it. */
static enum api_proto sniff(const struct api_request *req, const struct api_params *params)
{
    if (api_header_get(req, "X-Amz-Target"))
        return PROTO_JSON;
    if (req->path[0] && strcmp(req->path, "/") != 0)
        return PROTO_REST_JSON;
    const char *v = api_params_get(params, "Version");
    return v && strcmp(v, "2011-06-15") == 0 ? PROTO_QUERY : PROTO_EC2;
}

static bool is_form(const struct api_request *req)
{
    const char *ct = api_header_get(req, "Content-Type");
    return ct && str_startswith(ct, "application/x-www-form-urlencoded");
}

/* JSON services name validation failures differently. */
static const char *json_code(const char *code)
{
    if (strcmp(code, "InvalidParameterValue") == 0 || strcmp(code, "MissingParameter") == 0 ||
        strcmp(code, "UnknownParameter") == 0)
        return "ValidationException";
    return code;
}

static bool authenticate(struct api *api, const struct api_request *req, struct api_response *resp,
                         struct api_params *params, enum api_proto *proto, struct sigv4_auth *auth,
                         const struct api_service **ret_svc, char account_id[16])
{
    const char *msg = NULL;
    char msgbuf[512];
    enum sigv4_fail f = sigv4_parse(req, auth, &msg, msgbuf, sizeof(msgbuf));
    const struct api_service *svc = NULL;
    if (f == SIGV4_OK) {
        svc = api_service_find(auth->service);
        if (svc)
            *proto = svc->proto;
        if (!svc) {
            f = SIGV4_BAD_SERVICE;
            snprintf(msgbuf, sizeof(msgbuf),
                     "Credential should be scoped to correct service: '%s' is not a service "
                     "this endpoint offers.",
                     auth->service);
            msg = msgbuf;
        } else if (!core_region_find(api->app, auth->region) &&
                   !(strcmp(auth->service, "sts") == 0 && strcmp(auth->region, "us-east-1") == 0)) {
            f = SIGV4_BAD_REGION;
            snprintf(msgbuf, sizeof(msgbuf),
                     "Credential should be scoped to a valid region, not '%s'.", auth->region);
            msg = msgbuf;
        }
    }
    if (f == SIGV4_OK) {
        /* Signatures are checked against the real clock: the admin's offset moves amid's own
         * time (for time-based rules), not the clients'. */
        f = sigv4_check_time(auth, time_now_ms(), api->cfg.time_window_s, msgbuf, sizeof(msgbuf));
        msg = msgbuf;
    }
    char secret[48];
    if (f == SIGV4_OK && core_key_secret(api->app, auth->key_id, account_id, secret) < 0) {
        f = SIGV4_UNKNOWN_KEY;
        msg = *proto == PROTO_EC2 ? "AWS was not able to validate the provided access credentials"
                                  : "The security token included in the request is invalid.";
    }
    if (f == SIGV4_OK) {
        char mine[65];
        bool unsigned_ok = strcmp(svc->name, "ebs") == 0;
        f = sigv4_sign(req, auth, secret, unsigned_ok, NULL, mine);
        bool same = f == SIGV4_OK && crypto_memeq(mine, auth->signature, 64);
        if (f == SIGV4_OK && !same && auth->presigned) {
            /* A presigned URL may have been signed without a payload hash. */
            f = sigv4_sign(req, auth, secret, unsigned_ok, "UNSIGNED-PAYLOAD", mine);
            same = f == SIGV4_OK && crypto_memeq(mine, auth->signature, 64);
        }
        crypto_wipe(mine, sizeof(mine));
        if (f == SIGV4_PAYLOAD_HASH) {
            msg = "The provided 'x-amz-content-sha256' header does not match what was computed.";
        } else if (!same) {
            f = SIGV4_MISMATCH;
            msg = *proto == PROTO_EC2
                      ? "AWS was not able to validate the provided access credentials"
                      : "The request signature we calculated does not match the signature you "
                        "provided. Check your AWS Secret Access Key and signing method. Consult "
                        "the service documentation for details.";
        }
    }
    crypto_wipe(secret, sizeof(secret));
    if (f != SIGV4_OK) {
        const char *code;
        int status;
        api_auth_error(*proto, auth->service, f, &code, &status);
        fail(resp, *proto, code, status, msg ? msg : "authentication failed");
        (void)params;
        return false;
    }
    *ret_svc = svc;
    snprintf(resp->account, sizeof(resp->account), "%s", account_id);
    snprintf(resp->service, sizeof(resp->service), "%s", svc->name);
    return true;
}

/* The response cache's key: what decides a read's answer besides the database and the time —
 * the caller's account, the region and the parameters, in order. */
static int cache_key(const struct api_call *call, const struct api_params *params, struct buf *key)
{
    buf_init(key, (size_t)4 << 20);
    int rc = buf_append(key, call->account_id, strlen(call->account_id) + 1);
    if (rc == 0)
        rc = buf_append(key, call->region, strlen(call->region) + 1);
    for (size_t i = 0; i < params->n && rc == 0; i++) {
        /* Names are C strings; values carry their length (a value may hold a NUL). */
        uint64_t vlen = params->v[i].value_len;
        rc = buf_append(key, params->v[i].name, strlen(params->v[i].name) + 1);
        if (rc == 0)
            rc = buf_append(key, &vlen, sizeof(vlen));
        if (rc == 0)
            rc = buf_append(key, params->v[i].value, params->v[i].value_len);
    }
    return rc;
}

void api_handle(struct api *api, const struct api_request *req, struct api_response *resp)
{
    memset(resp, 0, sizeof(*resp));
    buf_init(&resp->body, 64 << 20);
    rand_uuid(resp->request_id);
    resp->status = 200;
    api->requests++;

    struct api_params params = { 0 };
    struct buf ckey = { 0 };
    uint64_t data_version = 0;
    json_t *in = NULL, *out = NULL;
    enum api_proto proto = PROTO_EC2;
    int rc = api_params_parse(&params, req->query, strlen(req->query), true);
    if (rc == 0 && is_form(req) && !api_header_get(req, "X-Amz-Target") &&
        (!req->path[0] || strcmp(req->path, "/") == 0))
        rc = api_params_parse(&params, req->body ? req->body : "", req->body_len, true);
    proto = sniff(req, &params);
    if (rc == -E2BIG) {
        fail(resp, proto, "InvalidParameterValue", 0, "The request has too many parameters");
        goto done;
    } else if (rc < 0) {
        fail(resp, proto, proto == PROTO_EC2 ? "MalformedQueryString" : "InvalidParameterValue", 0,
             "The request's query string or form body is malformed");
        goto done;
    }

    struct sigv4_auth auth;
    const struct api_service *svc;
    struct api_call call = {
        .api = api, .app = api->app, .req = req, .resp = resp, .request_id = resp->request_id
    };
    if (!authenticate(api, req, resp, &params, &proto, &auth, &svc, call.account_id))
        goto done;
    call.svc = svc;
    snprintf(call.region, sizeof(call.region), "%s", auth.region);
    call.now_ms = core_now_ms(api->app);

    const char *opname = NULL;
    if (proto == PROTO_EC2 || proto == PROTO_QUERY) {
        opname = api_params_get(&params, "Action");
        const char *version = api_params_get(&params, "Version");
        if (!opname || !*opname) {
            fail(resp, proto, "MissingAction", 0, "The request must contain the parameter Action");
            goto done;
        }
        snprintf(resp->action, sizeof(resp->action), "%s", opname);
        if (!version) {
            fail(resp, proto, "MissingParameter", 0,
                 "The request must contain the parameter Version");
            goto done;
        }
        if (strcmp(version, svc->model->api_version) != 0) {
            char m[256];
            snprintf(m, sizeof(m), "The requested version (%.40s) of service %s does not exist",
                     version, proto == PROTO_EC2 ? "AmazonEC2" : "AWSSecurityTokenService");
            fail(resp, proto, "NoSuchVersion", 0, m);
            goto done;
        }
    } else if (proto == PROTO_JSON) {
        const char *target = api_header_get(req, "X-Amz-Target");
        size_t pl = svc->model->target_prefix ? strlen(svc->model->target_prefix) : 0;
        if (target && pl && strncmp(target, svc->model->target_prefix, pl) == 0 &&
            target[pl] == '.')
            opname = target + pl + 1;
    } else {
        for (unsigned i = 0; i < svc->model->nops && !opname; i++)
            if (api_rest_match(&svc->model->ops[i], req->method, req->path))
                opname = svc->model->ops[i].name;
    }
    const struct api_op *op = opname ? op_find(svc, opname) : NULL;
    call.mop = opname ? model_op_find(svc->model, opname) : NULL;
    if (!op || !call.mop) {
        char m[256];
        snprintf(m, sizeof(m), "The action %.64s is not valid for this web service.",
                 opname && str_utf8_valid(opname, strlen(opname)) ? opname : "(none)");
        fail(resp, proto,
             proto == PROTO_EC2 || proto == PROTO_QUERY ? "InvalidAction"
                                                        : "UnknownOperationException",
             0, m);
        goto done;
    }
    snprintf(resp->action, sizeof(resp->action), "%s", op->name);

    /* A repeated read may have its answer in the response cache; the data version is taken
     * before the handler reads anything, so an answer is never newer than its version. */
    bool cacheable = api->cache && (op->flags & API_OP_CACHED) && proto == PROTO_EC2 &&
                     core_data_version(api->app, &data_version) == 0 &&
                     cache_key(&call, &params, &ckey) == 0;
    if (cacheable && api_cache_get(api->cache, &ckey, data_version, call.now_ms, resp->request_id,
                                   &resp->body)) {
        resp->content_type = "text/xml;charset=UTF-8";
        goto done;
    }

    switch (proto) {
    case PROTO_EC2:
    case PROTO_QUERY:
        rc = api_query_decode(call.mop->input, &params, proto == PROTO_EC2, &in, &call.err);
        break;
    case PROTO_JSON:
        rc = api_json_decode(call.mop->input, req->body, req->body_len, &in, &call.err);
        break;
    case PROTO_REST_JSON:
        rc = api_rest_decode(call.mop, req, &in, &call.err);
        break;
    }
    if (rc == 0) {
        call.dry_run = jbool(in, "DryRun", false);
        rc = op->fn(&call, in, &out);
        if (rc == 0 && call.dry_run && !(op->flags & API_OP_MUTATING))
            rc = api_dry_run(&call);
    }
    if (rc < 0) {
        const char *code = call.err.code ? call.err.code : "InternalError";
        const char *msg = call.err.code ? call.err.msg : "An internal error has occurred";
        if (proto == PROTO_JSON || proto == PROTO_REST_JSON)
            code = json_code(code);
        fail_full(resp, proto, svc, code, 0, msg, call.err.reason);
        buf_free(&call.encoded);
        goto done;
    }
    switch (proto) {
    case PROTO_EC2:
    case PROTO_QUERY:
        resp->content_type = "text/xml;charset=UTF-8";
        if (call.encoded_member)
            rc = api_xml_response_encoded(&resp->body, svc->model, call.mop, out, resp->request_id,
                                          call.encoded_member, &call.encoded);
        else
            rc = api_xml_response(&resp->body, svc->model, call.mop, out, resp->request_id);
        break;
    case PROTO_JSON:
        resp->content_type = "application/x-amz-json-1.1";
        rc = api_json_encode(&resp->body, call.mop->output, out);
        break;
    case PROTO_REST_JSON:
        rc = api_rest_encode(call.mop, out, resp);
        break;
    }
    /* Only the XML protocols carry a list the handler encoded. */
    if (call.encoded_member && proto != PROTO_EC2 && proto != PROTO_QUERY)
        rc = -EINVAL;
    buf_free(&call.encoded);
    if (rc < 0)
        fail(resp, proto, proto == PROTO_EC2 ? "InternalError" : "InternalFailure", 500,
             "The response could not be encoded");
    else if (cacheable && call.cache_until_ms > call.now_ms)
        api_cache_put(api->cache, &ckey, data_version, call.now_ms, call.cache_until_ms,
                      resp->body.data, resp->body.len, resp->request_id);
done:
    buf_free(&ckey);
    json_decref(in);
    json_decref(out);
    api_params_free(&params);
}

static int item_cmp(const void *a, const void *b, void *key)
{
    const char *x = jstr(*(json_t *const *)a, key);
    const char *y = jstr(*(json_t *const *)b, key);
    return strcmp(x ? x : "", y ? y : "");
}

void api_sort_items(json_t *items, const char *key)
{
    size_t n = json_array_size(items);
    if (n < 2)
        return;
    json_t **v = malloc(n * sizeof(*v));
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(items, i));
    qsort_r(v, n, sizeof(*v), item_cmp, (void *)key);
    json_array_clear(items);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, v[i]);
    free(v);
}
