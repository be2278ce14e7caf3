/*
 * api_ebs.c — the EBS direct APIs (REST-JSON): StartSnapshot, PutSnapshotBlock,
 * CompleteSnapshot, ListSnapshotBlocks, ListChangedBlocks and GetSnapshotBlock, wire-compatible
 * with AWS so that boto3's `ebs` client and coldsnap work.
 */
#include "api/api_int.h"
#include "core/core.h"
#include "crypto/crypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EBS_LIST_MAX 10000

static struct core_caller caller(struct api_call *c)
{
    struct core_caller w = { c->account_id, c->region, false };
    return w;
}

static int validation(struct api_call *c, const char *reason, const char *msg)
{
    err_set(&c->err, -EINVAL, "ValidationException", "%s", msg);
    c->err.reason = reason;
    return -EINVAL;
}

/* Decodes a base64 SHA-256 checksum. */
static int checksum_of(struct api_call *c, const char *b64, uint8_t out[32])
{
    uint8_t raw[48];
    size_t n;
    if (!b64 || strlen(b64) > 64 || base64_decode(b64, strlen(b64), false, raw, &n) < 0 || n != 32)
        return validation(c, "INVALID_CHECKSUM", "The checksum is not a base64 SHA-256 digest");
    memcpy(out, raw, 32);
    return 0;
}

static int algorithm_ok(struct api_call *c, const char *alg)
{
    if (alg && strcmp(alg, "SHA256") != 0)
        return validation(c, "INVALID_CHECKSUM", "Only the SHA256 checksum algorithm is supported");
    return 0;
}

int ebs_start_snapshot(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_ebs_start p = { 0 };
    p.volume_size_gib = json_integer_value(json_object_get(in, "VolumeSize"));
    p.parent_id = jstr(in, "ParentSnapshotId");
    p.description = jstr(in, "Description");
    p.client_token = jstr(in, "ClientToken");
    p.encrypted = jbool(in, "Encrypted", false);
    p.kms_key_arn = jstr(in, "KmsKeyArn");
    json_t *t = json_object_get(in, "Timeout");
    if (t)
        p.timeout_min = json_integer_value(t);
    if (jstr(in, "KmsKeyArn") && !p.encrypted)
        return validation(c, "INVALID_PARAMETER_VALUE",
                          "KmsKeyArn may only be given for encrypted snapshots");
    json_t *tags = json_object_get(in, "Tags");
    size_t ntags = json_array_size(tags);
    struct core_tag *tv = calloc(ntags + 1, sizeof(*tv));
    if (!tv)
        return err_set(&c->err, -ENOMEM, "InternalServerException", "out of memory");
    for (size_t i = 0; i < ntags; i++) {
        tv[i].key = jstr(json_array_get(tags, i), "Key");
        tv[i].value = jstr(json_array_get(tags, i), "Value");
        if (!tv[i].key || !tv[i].value) {
            free(tv);
            return validation(c, "INVALID_TAG", "Every tag needs a Key and a Value");
        }
    }
    p.tags = tv;
    p.ntags = ntags;
    struct core_caller who = caller(c);
    struct db_snapshot s;
    int rc = core_ebs_start(c->app, &who, &p, &s, &c->err);
    free(tv);
    if (rc < 0)
        return rc;
    *ret = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:i, s:s}", "Description", s.description,
                     "SnapshotId", s.id, "OwnerId", s.owner, "Status", s.state, "StartTime",
                     (json_int_t)s.start_ms, "VolumeSize", (json_int_t)s.volume_size_gib,
                     "BlockSize", CORE_BLOCK_SIZE, "SseType", s.encrypted ? "sse-kms" : "none");
    if (s.encrypted)
        json_object_set_new(*ret, "KmsKeyArn", json_string(s.kms_key_id));
    if (s.parent_id[0])
        json_object_set_new(*ret, "ParentSnapshotId", json_string(s.parent_id));
    if (ntags)
        json_object_set(*ret, "Tags", tags);
    return 0;
}

int ebs_put_snapshot_block(struct api_call *c, json_t *in, json_t **ret)
{
    json_t *data = json_object_get(in, "BlockData");
    size_t n = json_string_length(data);
    int64_t len = json_integer_value(json_object_get(in, "DataLength"));
    if (len != (int64_t)n)
        return validation(c, "INVALID_BLOCK", "DataLength does not match the data sent");
    int rc = algorithm_ok(c, jstr(in, "ChecksumAlgorithm"));
    uint8_t sum[32];
    if (rc == 0)
        rc = checksum_of(c, jstr(in, "Checksum"), sum);
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    rc = core_ebs_put(c->app, &who, jstr(in, "SnapshotId"),
                      json_integer_value(json_object_get(in, "BlockIndex")),
                      json_string_value(data), n, sum, &c->err);
    if (rc < 0)
        return rc;
    *ret = json_pack("{s:s, s:s}", "Checksum", jstr(in, "Checksum"), "ChecksumAlgorithm", "SHA256");
    return 0;
}

int ebs_complete_snapshot(struct api_call *c, json_t *in, json_t **ret)
{
    const char *method = jstr(in, "ChecksumAggregationMethod");
    if (method && strcmp(method, "LINEAR") != 0)
        return validation(c, "INVALID_CHECKSUM", "Only the LINEAR aggregation is supported");
    int rc = algorithm_ok(c, jstr(in, "ChecksumAlgorithm"));
    uint8_t sum[32];
    const char *cs = jstr(in, "Checksum");
    if (rc == 0 && cs)
        rc = checksum_of(c, cs, sum);
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    struct db_snapshot s;
    rc = core_ebs_complete(c->app, &who, jstr(in, "SnapshotId"),
                           json_integer_value(json_object_get(in, "ChangedBlocksCount")),
                           cs ? sum : NULL, &s, &c->err);
    if (rc < 0)
        return rc;
    *ret = json_pack("{s:s}", "Status", s.state);
    return 0;
}

struct list_ctx {
    struct api_call *c;
    const char *id;  /* the snapshot listed, or the first of two compared */
    const char *id2; /* the second of two compared */
    json_t *blocks;
    int64_t limit;
    int64_t last;
    bool more;
    int64_t expiry;
};

static int list_block(void *vctx, int64_t idx, const uint8_t *chunk)
{
    struct list_ctx *l = vctx;
    if ((int64_t)json_array_size(l->blocks) == l->limit) {
        l->more = true;
        return 1;
    }
    char tok[64];
    core_block_token(l->c->app, l->id, idx, chunk, l->expiry, tok);
    json_array_append_new(
        l->blocks, json_pack("{s:I, s:s}", "BlockIndex", (json_int_t)idx, "BlockToken", tok));
    l->last = idx;
    return 0;
}

static const uint8_t zero_chunk[32];

static int changed_block(void *vctx, int64_t idx, const uint8_t *a, const uint8_t *b)
{
    struct list_ctx *l = vctx;
    if ((int64_t)json_array_size(l->blocks) == l->limit) {
        l->more = true;
        return 1;
    }
    json_t *o = json_pack("{s:I}", "BlockIndex", (json_int_t)idx);
    char tok[64];
    if (a) {
        core_block_token(l->c->app, l->id, idx, a, l->expiry, tok);
        json_object_set_new(o, "FirstBlockToken", json_string(tok));
    }
    /* The second snapshot's side: a zero block has a token too (reads return zeros). */
    core_block_token(l->c->app, l->id2, idx, b ? b : zero_chunk, l->expiry, tok);
    json_object_set_new(o, "SecondBlockToken", json_string(tok));
    json_array_append_new(l->blocks, o);
    l->last = idx;
    return 0;
}

/* Reads MaxResults, NextToken and StartingBlockIndex into a starting index and a limit. */
static int paging(struct api_call *c, json_t *in, int64_t *start, int64_t *limit)
{
    json_t *mr = json_object_get(in, "MaxResults");
    *limit = mr ? json_integer_value(mr) : EBS_LIST_MAX;
    json_t *sb = json_object_get(in, "StartingBlockIndex");
    *start = sb ? json_integer_value(sb) : 0;
    const char *tok = jstr(in, "NextToken");
    if (tok) {
        char pos[32];
        if (api_token_open(c, tok, pos, sizeof(pos)) < 0)
            return validation(c, "INVALID_PAGE_TOKEN", "The page token is not valid");
        int64_t after = strtoll(pos, NULL, 10);
        if (after + 1 > *start)
            *start = after + 1;
    }
    return 0;
}

static int list_result(struct api_call *c, struct list_ctx *l, const struct db_snapshot *s,
                       const char *key, json_t **ret)
{
    *ret = json_pack("{s:o, s:I, s:I, s:i}", key, l->blocks, "ExpiryTime", (json_int_t)l->expiry,
                     "VolumeSize", (json_int_t)s->volume_size_gib, "BlockSize", CORE_BLOCK_SIZE);
    if (l->more) {
        char pos[32];
        snprintf(pos, sizeof(pos), "%lld", (long long)l->last);
        char *next = api_token_make(c, pos);
        if (next)
            json_object_set_new(*ret, "NextToken", json_string(next));
        free(next);
    }
    return 0;
}

int ebs_list_snapshot_blocks(struct api_call *c, json_t *in, json_t **ret)
{
    const char *id = jstr(in, "SnapshotId");
    int64_t start, limit;
    int rc = paging(c, in, &start, &limit);
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    struct db_snapshot s;
    memset(&s, 0, sizeof(s));
    core_snapshot_get(c->app, &who, id, CORE_VISIBLE, &s, NULL);
    struct list_ctx l = { c,     id, NULL,  json_array(),
                          limit, -1, false, c->now_ms + CORE_BLOCK_TOKEN_TTL_MS };
    rc = core_snapshot_blocks(c->app, &who, id, start, list_block, &l, &c->err);
    if (rc < 0) {
        json_decref(l.blocks);
        return rc;
    }
    return list_result(c, &l, &s, "Blocks", ret);
}

int ebs_list_changed_blocks(struct api_call *c, json_t *in, json_t **ret)
{
    const char *first = jstr(in, "FirstSnapshotId"), *second = jstr(in, "SecondSnapshotId");
    int64_t start, limit;
    int rc = paging(c, in, &start, &limit);
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    struct db_snapshot s;
    memset(&s, 0, sizeof(s));
    struct list_ctx l = { c,     first, second, json_array(),
                          limit, -1,    false,  c->now_ms + CORE_BLOCK_TOKEN_TTL_MS };
    rc = core_snapshot_diff(c->app, &who, first, second, start, changed_block, &l, &c->err);
    if (rc == 0)
        rc = core_snapshot_get(c->app, &who, second, CORE_VISIBLE, &s, &c->err);
    if (rc < 0) {
        json_decref(l.blocks);
        return rc;
    }
    return list_result(c, &l, &s, "ChangedBlocks", ret);
}

int ebs_get_snapshot_block(struct api_call *c, json_t *in, json_t **ret)
{
    const char *id = jstr(in, "SnapshotId");
    int64_t idx = json_integer_value(json_object_get(in, "BlockIndex"));
    char *buf = malloc(CORE_BLOCK_SIZE);
    if (!buf)
        return err_set(&c->err, -ENOMEM, "InternalServerException", "out of memory");
    struct core_caller who = caller(c);
    uint8_t chunk[32];
    int rc = core_snapshot_read_block(c->app, &who, id, idx, buf, chunk, &c->err);
    if (rc == 0 && core_block_token_check(c->app, jstr(in, "BlockToken"), id, idx, chunk) < 0)
        rc = validation(c, "INVALID_BLOCK_TOKEN", "The block token is not valid or has expired");
    if (rc < 0) {
        free(buf);
        return rc;
    }
    uint8_t h[32];
    crypto_sha256(buf, CORE_BLOCK_SIZE, h);
    char b64[48];
    base64_encode(h, 32, b64);
    *ret = json_pack("{s:i, s:s#, s:s, s:s}", "DataLength", CORE_BLOCK_SIZE, "BlockData", "", 0,
                     "Checksum", b64, "ChecksumAlgorithm", "SHA256");
    json_object_set_new(*ret, "BlockData", json_stringn_nocheck(buf, CORE_BLOCK_SIZE));
    free(buf);
    return 0;
}
