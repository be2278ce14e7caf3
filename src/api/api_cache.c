/*
 * api_cache.c — answers to repeated reads: a bounded cache of whole response bodies, for the
 * operations whose handler vouches for how long its answer holds (api_call.cache_until_ms).
 *
 * An entry is keyed by what decides the answer: the caller's account, the region and the
 * request's parameters in order.  It is served only while the database is in the state the
 * answer was read from (the data version taken before the handler ran, which any commit by any
 * process changes) and while the deployment's time lies in [from, until): the handler reports the
 * earliest time at which its answer would change by time alone (a deprecation time passing, a
 * cooldown ending).  So a hit is byte for byte what the handler would write, except for the
 * request id, which each copy gets its own of.  Least recently used entries go first.  Data
 * versions only grow (api_cache_get's contract), so an entry older than an asker's version is
 * dead and one newer is kept for the askers that follow.
 */
#include "api/api_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_BUCKETS     4096u
#define CACHE_MAX_ENTRIES 8192u
#define RID_LEN           36u /* a request id: a UUID */

struct entry {
    struct entry *hnext;               /* bucket chain */
    struct entry *lru_prev, *lru_next; /* most recently used first */
    uint64_t hash;
    size_t klen, blen, rid_off;
    uint64_t version;
    int64_t from, until;
    char *body;
    char key[]; /* klen bytes */
};

struct api_cache {
    pthread_mutex_t lock;
    size_t max_bytes, bytes, n;
    struct entry *buckets[CACHE_BUCKETS];
    struct entry lru; /* sentinel */
};

static uint64_t hash_of(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static size_t cost(const struct entry *e)
{
    return sizeof(*e) + e->klen + e->blen;
}

static void lru_unlink(struct entry *e)
{
    e->lru_prev->lru_next = e->lru_next;
    e->lru_next->lru_prev = e->lru_prev;
}

static void lru_push(struct api_cache *c, struct entry *e)
{
    e->lru_prev = &c->lru;
    e->lru_next = c->lru.lru_next;
    c->lru.lru_next->lru_prev = e;
    c->lru.lru_next = e;
}

/* The slot that points at the entry for this key, or at the NULL ending its chain. */
static struct entry **slot_of(struct api_cache *c, uint64_t h, const char *key, size_t klen)
{
    struct entry **s = &c->buckets[h % CACHE_BUCKETS];
    while (*s && !((*s)->hash == h && (*s)->klen == klen && memcmp((*s)->key, key, klen) == 0))
        s = &(*s)->hnext;
    return s;
}

static void drop(struct api_cache *c, struct entry *e)
{
    struct entry **s = slot_of(c, e->hash, e->key, e->klen);
    *s = e->hnext;
    lru_unlink(e);
    c->bytes -= cost(e);
    c->n--;
    free(e->body);
    free(e);
}

int api_cache_new(size_t max_bytes, struct api_cache **ret)
{
    struct api_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    c->max_bytes = max_bytes;
    c->lru.lru_prev = c->lru.lru_next = &c->lru;
    *ret = c;
    return 0;
}

void api_cache_free(struct api_cache *c)
{
    if (!c)
        return;
    while (c->lru.lru_next != &c->lru)
        drop(c, c->lru.lru_next);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

bool api_cache_get(struct api_cache *c, const struct buf *key, uint64_t version, int64_t now,
                   const char *request_id, struct buf *out)
{
    if (!c || !key->data)
        return false;
    uint64_t h = hash_of(key->data, key->len);
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    struct entry *e = *slot_of(c, h, key->data, key->len);
    if (e && (e->version < version || now >= e->until)) {
        drop(c, e); /* it can never be served again: the state or the time moved on */
        e = NULL;
    }
    /* Made at a later state or time than this asker's (a request that raced a commit): kept
     * for the askers after it. */
    if (e && (e->version != version || now < e->from))
        e = NULL;
    if (e) {
        lru_unlink(e);
        lru_push(c, e);
        size_t at = out->len;
        hit = buf_append(out, e->body, e->blen) == 0;
        if (hit)
            memcpy(out->data + at + e->rid_off, request_id, RID_LEN);
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void api_cache_put(struct api_cache *c, const struct buf *key, uint64_t version, int64_t from,
                   int64_t until, const char *body, size_t len, const char *request_id)
{
    if (!c || !key->data || until <= from || strlen(request_id) != RID_LEN)
        return;
    /* The request id is near the start of every EC2 response (after the root element). */
    size_t look = len < 512 ? len : 512;
    const char *rid = memmem(body, look, request_id, RID_LEN);
    struct entry *e = calloc(1, sizeof(*e) + key->len);
    if (!rid || !e || sizeof(*e) + key->len + len > c->max_bytes / 4) {
        free(e);
        return;
    }
    e->hash = hash_of(key->data, key->len);
    e->klen = key->len;
    memcpy(e->key, key->data, key->len);
    e->blen = len;
    e->rid_off = (size_t)(rid - body);
    e->version = version;
    e->from = from;
    e->until = until;
    e->body = malloc(len);
    if (!e->body) {
        free(e);
        return;
    }
    memcpy(e->body, body, len);
    pthread_mutex_lock(&c->lock);
    struct entry *old = *slot_of(c, e->hash, e->key, e->klen);
    if (old && old->version > version) {
        pthread_mutex_unlock(&c->lock); /* a newer answer is there already */
        free(e->body);
        free(e);
        return;
    }
    if (old)
        drop(c, old);
    while (c->n > 0 && (c->bytes + cost(e) > c->max_bytes || c->n >= CACHE_MAX_ENTRIES))
        drop(c, c->lru.lru_prev);
    struct entry **s = slot_of(c, e->hash, e->key, e->klen);
    *s = e;
    lru_push(c, e);
    c->bytes += cost(e);
    c->n++;
    pthread_mutex_unlock(&c->lock);
}
