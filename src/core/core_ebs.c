/*
 * core_ebs.c — the EBS direct APIs' semantics: snapshots built block by block (StartSnapshot,
 * PutSnapshotBlock, CompleteSnapshot) and completed snapshots read block by block
 * (ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock), with expiring block tokens.
 *
 * A block put is durable when acknowledged: its chunk is committed to the store, then its row
 * (index, chunk id, SHA-256) to the database.  CompleteSnapshot turns the parent's map and the
 * rows into the snapshot's map.  Errors carry the EBS codes and ValidationException reasons.
 */
#include "core/core_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EBS_DEFAULT_TIMEOUT_MIN 60

static int validation(struct err *e, const char *reason, const char *fmt, ...) PRINTF(3, 4);

static int validation(struct err *e, const char *reason, const char *fmt, ...)
{
    char msg[sizeof(e->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_set(e, -EINVAL, "ValidationException", "%s", msg);
    e->reason = reason;
    return -EINVAL;
}

/* The caller's snapshot for EBS direct calls: ResourceNotFoundException when absent or not its
 * own (and not shared with it explicitly, for reads: the EBS direct APIs do not serve public
 * snapshots). */
static int ebs_lookup(struct db *db, const struct core_caller *who, const char *id, bool write,
                      struct db_snapshot *ret, struct err *e)
{
    int rc = db_snapshot_get(db, id, ret);
    bool ok = rc == 0 && strcmp(ret->region, who->region) == 0;
    if (ok && strcmp(ret->owner, who->account_id) != 0)
        ok = !write && db_snapshot_perm_has(db, id, who->account_id, false) == 0;
    if (rc == -ENOENT || (rc == 0 && !ok)) {
        err_set(e, -ENOENT, "ResourceNotFoundException", "The snapshot '%s' does not exist.", id);
        e->reason = "SNAPSHOT_NOT_FOUND";
        return -ENOENT;
    }
    if (rc < 0)
        return err_set(e, rc, "InternalServerException", "cannot read snapshot %s", id);
    return 0;
}

/* A pending upload the caller owns, not yet timed out. */
static int ebs_pending(struct app *app, struct db *db, const struct core_caller *who,
                       const char *id, struct db_snapshot *s, struct err *e)
{
    int rc = ebs_lookup(db, who, id, true, s, e);
    if (rc < 0)
        return rc;
    if (strcmp(s->source, "ebs") != 0 || strcmp(s->state, "pending") != 0)
        return validation(e, "INVALID_SNAPSHOT_ID",
                          "The snapshot '%s' is not a pending EBS direct upload", id);
    if (core_now_ms(app) > s->expiry_ms) {
        snprintf(s->state, sizeof(s->state), "error");
        snprintf(s->state_message, sizeof(s->state_message),
                 "Client.Timeout: the upload was not completed before its timeout");
        db_snapshot_update(db, s);
        return validation(e, "WRITE_REQUEST_TIMEOUT",
                          "The snapshot '%s' timed out before it was completed", id);
    }
    return 0;
}

/* The encryption domain of snapshot `s`'s blocks as `who` may use it (NULL *ret when clear); the
 * key service's refusal is EBS direct's AccessDeniedException. */
static int snapshot_key(struct app *app, const struct core_caller *who, const struct db_snapshot *s,
                        struct store_key *key, const struct store_key **ret, struct err *e)
{
    struct core_dkey dk;
    core_dkey_of_snapshot(s, &dk);
    int rc = core_dkey_key(app, who, &dk, key, ret, e);
    if (rc < 0)
        e->code = "AccessDeniedException";
    return rc;
}

struct start_ctx {
    const struct core_caller *who;
    const struct core_ebs_start *p;
    const struct core_enc *enc;
    struct db_snapshot *s;
    const char *params;
    struct err *e;
};

static int start_tx(struct app *app, struct db *db, void *vctx)
{
    struct start_ctx *c = vctx;
    if (c->p->client_token && *c->p->client_token) {
        char had_params[512], had[32];
        int rc = db_idem_get(db, c->who->account_id, c->who->region, "StartSnapshot",
                             c->p->client_token, had_params, sizeof(had_params), had, sizeof(had));
        if (rc == 0) {
            if (strcmp(had_params, c->params) != 0)
                return err_set(c->e, -EINVAL, "ConflictException",
                               "The request uses the same client token as a previous, but "
                               "non-identical request.");
            return db_snapshot_get(db, had, c->s);
        }
    }
    struct db_snapshot *s = c->s;
    if (c->p->parent_id) {
        struct db_snapshot parent;
        int rc = ebs_lookup(db, c->who, c->p->parent_id, false, &parent, c->e);
        if (rc < 0) {
            c->e->reason = "INVALID_PARENT_SNAPSHOT_ID"; /* not a ResourceNotFound reason */
            c->e->code = "ResourceNotFoundException";
            return rc;
        }
        if (strcmp(parent.state, "completed") != 0)
            return validation(c->e, "INVALID_PARENT_SNAPSHOT_ID",
                              "The parent snapshot '%s' is not completed", parent.id);
        if (parent.encrypted != c->enc->dk.encrypted ||
            (parent.encrypted && strcmp(parent.kms_key_id, c->enc->dk.key_arn) != 0))
            return validation(c->e, "INVALID_PARAMETER_VALUE",
                              "The snapshot must be encrypted under its parent's key");
        if (parent.volume_size_gib > c->p->volume_size_gib)
            return validation(c->e, "INVALID_VOLUME_SIZE",
                              "The volume size is smaller than the parent snapshot '%s'",
                              parent.id);
        snprintf(s->parent_id, sizeof(s->parent_id), "%s", parent.id);
    }
    snprintf(s->region, sizeof(s->region), "%s", c->who->region);
    snprintf(s->owner, sizeof(s->owner), "%s", c->who->account_id);
    s->volume_size_gib = c->p->volume_size_gib;
    snprintf(s->state, sizeof(s->state), "pending");
    s->start_ms = core_now_ms(app);
    snprintf(s->description, sizeof(s->description), "%s",
             c->p->description ? c->p->description : "");
    snprintf(s->source, sizeof(s->source), "ebs");
    core_dkey_to_snapshot(&c->enc->dk, s);
    /* As on AWS, the timeout is idle time: each block written moves the deadline. */
    s->timeout_min = c->p->timeout_min ? c->p->timeout_min : EBS_DEFAULT_TIMEOUT_MIN;
    s->expiry_ms = s->start_ms + s->timeout_min * 60000;
    int rc = db_snapshot_insert(db, s);
    if (rc == 0)
        rc = core_tags_insert(db, c->who, s->id, "snapshot", c->p->tags, c->p->ntags);
    if (rc == 0 && c->p->client_token && *c->p->client_token)
        rc = db_idem_put(db, c->who->account_id, c->who->region, "StartSnapshot",
                         c->p->client_token, c->params, s->id, s->start_ms);
    if (rc < 0)
        return err_set(c->e, rc, "InternalServerException", "cannot record the snapshot");
    return 0;
}

int core_ebs_start(struct app *app, const struct core_caller *who, const struct core_ebs_start *p,
                   struct db_snapshot *ret, struct err *e)
{
    if (p->volume_size_gib < 1 || p->volume_size_gib > 65536)
        return validation(e, "INVALID_VOLUME_SIZE", "%s",
                          "The volume size must be between 1 and 65536 GiB");
    if (p->kms_key_arn && !p->encrypted)
        return validation(e, "INVALID_PARAMETER_VALUE",
                          "KmsKeyArn may only be given for encrypted snapshots");
    for (size_t i = 0; i < p->ntags; i++) {
        if (core_tag_validate(p->tags[i].key, p->tags[i].value, e) < 0)
            return validation(e, "INVALID_TAG", "%s", e->msg);
    }
    if (p->ntags > CORE_TAGS_MAX)
        return validation(e, "INVALID_TAG", "%s", "At most 50 tags");
    struct db_snapshot s;
    memset(&s, 0, sizeof(s));
    int rc = rand_id(s.id, sizeof(s.id), "snap-", 17);
    if (rc < 0)
        return err_set(e, rc, "InternalServerException", "no randomness");
    char params[512];
    snprintf(params, sizeof(params), "%lld|%s|%.200s|%lld", (long long)p->volume_size_gib,
             p->parent_id ? p->parent_id : "", p->description ? p->description : "",
             (long long)p->timeout_min);
    /* The encryption, outside the transaction (the key service writes): the parent's domain
     * when it has one (the new snapshot shares its blocks), else a new data key. */
    struct db_snapshot parent;
    struct core_dkey pdk;
    struct err pe = { 0 };
    bool has_parent =
        p->parent_id && core_snapshot_get(app, who, p->parent_id, CORE_VISIBLE, &parent, &pe) == 0;
    if (has_parent)
        core_dkey_of_snapshot(&parent, &pdk);
    struct core_enc enc;
    rc = core_enc_plan(app, who, p->encrypted, p->kms_key_arn, has_parent ? &pdk : NULL, &enc, e);
    if (rc < 0) {
        e->code = "AccessDeniedException";
        return rc;
    }
    core_enc_wipe(&enc);
    snprintf(params + strlen(params), sizeof(params) - strlen(params), "|%d|%.160s", p->encrypted,
             p->kms_key_arn ? p->kms_key_arn : "");
    struct start_ctx c = { who, p, &enc, &s, params, e };
    rc = core_tx(app, start_tx, &c);
    if (rc == 0)
        *ret = s;
    return rc;
}

int core_ebs_put(struct app *app, const struct core_caller *who, const char *snapshot_id,
                 int64_t idx, const void *data, size_t n, const uint8_t sha256[32], struct err *e)
{
    struct db *db = core_db_get(app);
    struct db_snapshot s;
    int rc = ebs_pending(app, db, who, snapshot_id, &s, e);
    core_db_put(app, db);
    if (rc < 0)
        return rc;
    if (idx < 0 || idx >= s.volume_size_gib * CORE_BLOCKS_PER_GIB)
        return validation(e, "INVALID_BLOCK", "Block index %lld is outside the volume",
                          (long long)idx);
    if (n != CORE_BLOCK_SIZE)
        return validation(e, "INVALID_BLOCK", "%s", "The block must be 524288 bytes");
    uint8_t h[32];
    crypto_sha256(data, n, h);
    if (!crypto_memeq(h, sha256, 32))
        return validation(e, "INVALID_CHECKSUM", "%s",
                          "The checksum does not match the block's SHA-256");
    struct store *st;
    rc = core_region_storage(app, who->region, &st, NULL);
    if (rc < 0)
        return err_set(e, rc, "InternalServerException", "the region's store is unavailable");
    struct chunk_id id;
    size_t stored = 0;
    bool zero = store_is_zero(data, n);
    struct store_key key;
    const struct store_key *kp = NULL;
    if (!zero && (rc = snapshot_key(app, who, &s, &key, &kp, e)) < 0)
        return rc;
    if (!zero) {
        store_chunk_id_of(kp, h, &id);
        struct store_batch *b;
        rc = store_batch_new(st, &b);
        if (rc == 0)
            rc = store_put(st, b, &id, kp, data, n, &stored);
        crypto_wipe(&key, sizeof(key));
        if (rc == 0)
            rc = store_batch_commit(b);
        store_batch_free(b);
        if (rc < 0)
            return err_set(
                e, rc, rc == -ENOSPC ? "ServiceQuotaExceededException" : "InternalServerException",
                "cannot store the block: %s", strerror(-rc));
    }
    db = core_db_get(app);
    rc = db_begin(db);
    if (rc == 0)
        rc = db_ebs_block_put(db, snapshot_id, idx, zero ? NULL : id.b, h);
    if (rc == 0) {
        rc = db_snapshot_get(db, snapshot_id, &s);
        s.stored_bytes += (int64_t)stored;
        s.expiry_ms = core_now_ms(app) + s.timeout_min * 60000;
        if (rc == 0)
            rc = db_snapshot_update(db, &s);
    }
    if (rc == 0)
        rc = db_commit(db);
    else
        db_rollback(db);
    core_db_put(app, db);
    if (rc < 0)
        return err_set(e, rc, "InternalServerException", "cannot record the block");
    return 0;
}

struct complete_ctx {
    struct vol_map *m;
    struct vol_linear *lin;
    int64_t count;
};

static int apply_block(void *vctx, int64_t idx, const uint8_t *chunk, const uint8_t *sha256)
{
    struct complete_ctx *c = vctx;
    struct chunk_id id;
    if (chunk)
        memcpy(id.b, chunk, 32);
    int rc = vol_map_set(c->m, (uint64_t)idx, chunk ? &id : NULL);
    vol_linear_add(c->lin, sha256);
    c->count++;
    return rc;
}

int core_ebs_complete(struct app *app, const struct core_caller *who, const char *snapshot_id,
                      int64_t changed_blocks, const uint8_t *linear, struct db_snapshot *ret,
                      struct err *e)
{
    struct db *db = core_db_get(app);
    struct db_snapshot s;
    int rc = ebs_pending(app, db, who, snapshot_id, &s, e);
    int have = rc == 0 ? db_ebs_block_count(db, snapshot_id) : 0;
    core_db_put(app, db);
    if (rc < 0)
        return rc;
    if (have < 0)
        return err_set(e, have, "InternalServerException", "cannot count blocks");
    if (have != changed_blocks) {
        return validation(e, "INVALID_PARAMETER_VALUE",
                          "ChangedBlocksCount is %lld but %d blocks were written",
                          (long long)changed_blocks, have);
    }
    struct vol_region *vr;
    rc = core_region_storage(app, who->region, NULL, &vr);
    if (rc < 0)
        return err_set(e, rc, "InternalServerException", "the region's store is unavailable");
    uint64_t nblocks = (uint64_t)s.volume_size_gib * CORE_BLOCKS_PER_GIB;
    struct complete_ctx c = { NULL, NULL, 0 };
    if (s.parent_id[0]) {
        struct vol_map *parent;
        rc = core_map_get(app, s.region, s.parent_id, &parent);
        if (rc == 0) {
            rc = vol_map_copy(parent, nblocks, &c.m);
            vol_map_unref(parent);
        }
    } else {
        rc = vol_map_new(nblocks, &c.m);
    }
    if (rc == 0)
        rc = vol_linear_new(&c.lin);
    if (rc == 0) {
        db = core_db_get(app);
        rc = db_ebs_block_each(db, snapshot_id, apply_block, &c);
        core_db_put(app, db);
    }
    uint8_t sum[32];
    if (rc == 0)
        vol_linear_final(c.lin, sum);
    vol_linear_free(c.lin);
    if (rc == 0 && linear && !crypto_memeq(sum, linear, 32)) {
        vol_map_unref(c.m);
        return validation(e, "INVALID_CHECKSUM", "%s",
                          "The aggregated LINEAR checksum does not match the blocks written");
    }
    char path[1200];
    if (rc == 0) {
        vol_map_path(vr, snapshot_id, path, sizeof(path));
        rc = vol_map_save(c.m, path);
    }
    uint64_t blocks = c.m ? vol_map_allocated(c.m) : 0;
    vol_map_unref(c.m);
    if (rc < 0)
        return err_set(e, rc, "InternalServerException", "cannot build the snapshot: %s",
                       strerror(-rc));
    db = core_db_get(app);
    rc = db_begin(db);
    if (rc == 0)
        rc = db_snapshot_get(db, snapshot_id, &s);
    if (rc == 0 && strcmp(s.state, "pending") != 0)
        rc = -EALREADY;
    if (rc == 0) {
        snprintf(s.state, sizeof(s.state), "completed");
        s.progress = 100;
        s.complete_ms = core_now_ms(app);
        s.blocks = (int64_t)blocks;
        s.full_bytes = (int64_t)blocks * CORE_BLOCK_SIZE;
        memcpy(s.linear, sum, 32);
        s.has_linear = true;
        rc = db_snapshot_update(db, &s);
    }
    if (rc == 0)
        rc = db_ebs_block_clear(db, snapshot_id);
    if (rc == 0)
        rc = db_commit(db);
    else
        db_rollback(db);
    core_db_put(app, db);
    if (rc == -EALREADY)
        return validation(e, "INVALID_SNAPSHOT_ID", "The snapshot '%s' is already completed",
                          snapshot_id);
    if (rc < 0)
        return err_set(e, rc, "InternalServerException", "cannot complete the snapshot");
    core_images_snapshot_done(app, snapshot_id);
    *ret = s;
    return 0;
}

/* ---- reading ---- */

static int readable(struct app *app, const struct core_caller *who, const char *id,
                    struct db_snapshot *s, struct err *e)
{
    struct db *db = core_db_get(app);
    int rc = ebs_lookup(db, who, id, false, s, e);
    core_db_put(app, db);
    if (rc == 0 && strcmp(s->state, "completed") != 0)
        return validation(e, "INVALID_SNAPSHOT_ID", "The snapshot '%s' is not completed", id);
    return rc;
}

struct blocks_ctx {
    int64_t start;
    int (*fn)(void *ctx, int64_t idx, const uint8_t *chunk);
    void *ctx;
};

static int each_block(void *vctx, uint64_t idx, const struct chunk_id *id)
{
    struct blocks_ctx *c = vctx;
    if ((int64_t)idx < c->start)
        return 0;
    return c->fn(c->ctx, (int64_t)idx, id->b);
}

int core_snapshot_blocks(struct app *app, const struct core_caller *who, const char *id,
                         int64_t start, int (*fn)(void *ctx, int64_t idx, const uint8_t *chunk),
                         void *ctx, struct err *e)
{
    struct db_snapshot s;
    int rc = readable(app, who, id, &s, e);
    if (rc < 0)
        return rc;
    struct vol_map *m;
    rc = core_map_get(app, s.region, id, &m);
    if (rc < 0)
        return err_set(e, rc, "InternalServerException", "cannot read the snapshot's map");
    struct blocks_ctx c = { start, fn, ctx };
    rc = vol_map_each(m, each_block, &c);
    vol_map_unref(m);
    return rc > 0 ? 0 : rc;
}

struct alloc_list {
    struct {
        uint64_t idx;
        struct chunk_id id;
    } * v;
    size_t n, cap;
};

static int collect_alloc(void *vctx, uint64_t idx, const struct chunk_id *id)
{
    struct alloc_list *l = vctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        void *nv = realloc(l->v, cap * sizeof(*l->v));
        if (!nv)
            return -ENOMEM;
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n].idx = idx;
    l->v[l->n].id = *id;
    l->n++;
    return 0;
}

int core_snapshot_diff(struct app *app, const struct core_caller *who, const char *first,
                       const char *second, int64_t start,
                       int (*fn)(void *ctx, int64_t idx, const uint8_t *a, const uint8_t *b),
                       void *ctx, struct err *e)
{
    struct db_snapshot s1, s2;
    int rc = readable(app, who, second, &s2, e);
    if (rc == 0 && first)
        rc = readable(app, who, first, &s1, e);
    if (rc < 0)
        return rc;
    if (first && s1.volume_size_gib != s2.volume_size_gib)
        return validation(e, "UNRELATED_SNAPSHOTS", "%s",
                          "The two snapshots are of volumes of different sizes");
    struct vol_map *a = NULL, *b = NULL;
    rc = core_map_get(app, s2.region, second, &b);
    if (rc == 0 && first)
        rc = core_map_get(app, s1.region, first, &a);
    if (rc < 0) {
        vol_map_unref(b);
        return err_set(e, rc, "InternalServerException", "cannot read the snapshots' maps");
    }
    /* Maps are sparse: merge their allocated blocks instead of visiting every index. */
    struct alloc_list la = { 0 }, lb = { 0 };
    rc = a ? vol_map_each(a, collect_alloc, &la) : 0;
    if (rc == 0)
        rc = vol_map_each(b, collect_alloc, &lb);
    size_t i = 0, k = 0;
    uint64_t from = start < 0 ? 0 : (uint64_t)start;
    while (rc == 0 && (i < la.n || k < lb.n)) {
        uint64_t ia = i < la.n ? la.v[i].idx : UINT64_MAX;
        uint64_t ib = k < lb.n ? lb.v[k].idx : UINT64_MAX;
        uint64_t idx = ia < ib ? ia : ib;
        const uint8_t *x = ia == idx ? la.v[i++].id.b : NULL;
        const uint8_t *y = ib == idx ? lb.v[k++].id.b : NULL;
        if (idx < from || (x && y && memcmp(x, y, 32) == 0))
            continue;
        rc = fn(ctx, (int64_t)idx, x, y);
    }
    free(la.v);
    free(lb.v);
    vol_map_unref(a);
    vol_map_unref(b);
    return rc > 0 ? 0 : rc;
}

int core_snapshot_read_block(struct app *app, const struct core_caller *who, const char *id,
                             int64_t idx, void *buf, uint8_t ret_chunk[32], struct err *e)
{
    struct db_snapshot s;
    int rc = readable(app, who, id, &s, e);
    if (rc < 0)
        return rc;
    if (idx < 0 || idx >= s.volume_size_gib * CORE_BLOCKS_PER_GIB)
        return validation(e, "INVALID_BLOCK", "Block index %lld is outside the snapshot",
                          (long long)idx);
    struct vol_map *m;
    rc = core_map_get(app, s.region, id, &m);
    if (rc < 0)
        return err_set(e, rc, "InternalServerException", "cannot read the snapshot's map");
    struct chunk_id cid;
    bool has = (uint64_t)idx < vol_map_blocks(m) && vol_map_get(m, (uint64_t)idx, &cid);
    vol_map_unref(m);
    if (!has) {
        memset(buf, 0, CORE_BLOCK_SIZE);
        memset(ret_chunk, 0, 32);
        return 0;
    }
    struct store *st;
    struct store_key key;
    const struct store_key *kp = NULL;
    rc = snapshot_key(app, who, &s, &key, &kp, e);
    if (rc < 0)
        return rc;
    rc = core_region_storage(app, s.region, &st, NULL);
    size_t n = 0;
    if (rc == 0)
        rc = store_get(st, &cid, kp, buf, &n, 0);
    crypto_wipe(&key, sizeof(key));
    if (rc < 0)
        return err_set(e, -EIO, "InternalServerException", "block %lld of %s cannot be read: %s",
                       (long long)idx, id, strerror(-rc));
    if (n < CORE_BLOCK_SIZE)
        memset((char *)buf + n, 0, CORE_BLOCK_SIZE - n);
    memcpy(ret_chunk, cid.b, 32);
    return 0;
}

/* ---- block tokens ---- */

static void token_mac(struct app *app, const char *id, int64_t idx, const uint8_t chunk[32],
                      int64_t expiry_s, uint8_t out[32])
{
    uint8_t msg[160];
    size_t n = 0;
    size_t il = strlen(id);
    if (il > 64)
        il = 64;
    memcpy(msg, id, il);
    n += il;
    msg[n++] = 0;
    for (int i = 7; i >= 0; i--)
        msg[n++] = (uint8_t)((uint64_t)idx >> (8 * i));
    for (int i = 7; i >= 0; i--)
        msg[n++] = (uint8_t)((uint64_t)expiry_s >> (8 * i));
    memcpy(msg + n, chunk, 32);
    n += 32;
    crypto_hmac_sha256(app->block_token_key, 32, msg, n, out);
}

void core_block_token(struct app *app, const char *id, int64_t idx, const uint8_t chunk[32],
                      int64_t expiry_ms, char out[64])
{
    int64_t expiry_s = expiry_ms / 1000;
    uint8_t raw[8 + 24], mac[32];
    for (int i = 0; i < 8; i++)
        raw[i] = (uint8_t)((uint64_t)expiry_s >> (8 * (7 - i)));
    token_mac(app, id, idx, chunk, expiry_s, mac);
    memcpy(raw + 8, mac, 24);
    base64_encode(raw, sizeof(raw), out);
}

int core_block_token_check(struct app *app, const char *token, const char *id, int64_t idx,
                           const uint8_t chunk[32])
{
    uint8_t raw[48], mac[32];
    size_t n;
    size_t tl = strlen(token);
    if (tl > 60 || base64_decode(token, tl, false, raw, &n) < 0 || n != 32)
        return -EINVAL;
    int64_t expiry_s = 0;
    for (int i = 0; i < 8; i++)
        expiry_s = (int64_t)((uint64_t)expiry_s << 8 | raw[i]);
    token_mac(app, id, idx, chunk, expiry_s, mac);
    if (!crypto_memeq(mac, raw + 8, 24))
        return -EINVAL;
    if (core_now_ms(app) / 1000 > expiry_s)
        return -EINVAL;
    return 0;
}
