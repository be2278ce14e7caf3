/*
 * vol_cache.c — a region's bounded LRU cache of decoded base chunks.
 *
 * Reads of blocks that only the base map holds decode a whole 512 KiB chunk; a guest reading it in
 * 4 KiB requests must not decode it 128 times.  Entries are keyed by chunk id and the key id of
 * the encryption domain, hold the verified plaintext, and are reference-counted so that copying
 * out happens outside the lock.  A miss inserts a loading entry first: other threads wanting the
 * same chunk wait for it rather than decode it again.  Failed loads are not cached.
 */
#include "vol/vol_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { ENT_LOADING, ENT_READY, ENT_FAILED };

struct cache_ent {
    struct chunk_id id;
    uint8_t kid[STORE_KEY_ID_LEN];
    int refs;
    int state;
    int err;
    size_t len;
    uint8_t *data;
    struct cache_ent *hnext;
    struct cache_ent *prev, *next; /* LRU, most recent first; ready entries only */
};

struct vol_cache {
    struct store *store;
    pthread_mutex_t lock;
    pthread_cond_t loaded;
    size_t cap, used;
    size_t nbuckets;
    struct cache_ent **buckets;
    struct cache_ent *head, *tail;
};

int vol_cache_new(struct store *store, size_t cap, struct vol_cache **ret)
{
    struct vol_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->store = store;
    c->cap = cap;
    size_t want = cap / VOL_BLOCK_SIZE * 2;
    c->nbuckets = 64;
    while (c->nbuckets < want && c->nbuckets < (1u << 20))
        c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return -ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->loaded, NULL);
    *ret = c;
    return 0;
}

void vol_cache_free(struct vol_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct cache_ent *e = c->buckets[i];
        while (e) {
            struct cache_ent *n = e->hnext;
            free(e->data);
            free(e);
            e = n;
        }
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->loaded);
    free(c);
}

static size_t bucket_of(const struct vol_cache *c, const struct chunk_id *id)
{
    uint64_t h;
    memcpy(&h, id->b, sizeof(h));
    return (size_t)(h & (c->nbuckets - 1));
}

static void lru_unlink(struct vol_cache *c, struct cache_ent *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else if (c->head == e)
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else if (c->tail == e)
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct vol_cache *c, struct cache_ent *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void hash_remove(struct vol_cache *c, struct cache_ent *e)
{
    struct cache_ent **pp = &c->buckets[bucket_of(c, &e->id)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
}

/* Drops unreferenced ready entries from the cold end until the cache fits.  Under the lock. */
static void evict(struct vol_cache *c)
{
    struct cache_ent *e = c->tail;
    while (e && c->used > c->cap) {
        struct cache_ent *p = e->prev;
        if (e->refs == 0) {
            lru_unlink(c, e);
            hash_remove(c, e);
            c->used -= VOL_BLOCK_SIZE;
            free(e->data);
            free(e);
        }
        e = p;
    }
}

static void put_ent(struct vol_cache *c, struct cache_ent *e)
{
    if (--e->refs == 0 && e->state == ENT_FAILED) {
        free(e->data);
        free(e);
        return;
    }
    evict(c);
}

static int map_store_err(int rc)
{
    return rc == -ENOMEM ? -ENOMEM : -EIO;
}

int vol_cache_read(struct vol_cache *c, const struct chunk_id *id, const struct store_key *key,
                   void *dst, size_t off, size_t len)
{
    uint8_t kid[STORE_KEY_ID_LEN] = { 0 };
    if (key)
        memcpy(kid, key->key_id, sizeof(kid));

    pthread_mutex_lock(&c->lock);
    struct cache_ent *e = c->buckets[bucket_of(c, id)];
    while (e && (memcmp(&e->id, id, sizeof(*id)) != 0 || memcmp(e->kid, kid, sizeof(kid)) != 0))
        e = e->hnext;
    if (e) {
        e->refs++;
        while (e->state == ENT_LOADING)
            pthread_cond_wait(&c->loaded, &c->lock);
        if (e->state == ENT_FAILED) {
            int rc = e->err;
            put_ent(c, e);
            pthread_mutex_unlock(&c->lock);
            return rc;
        }
        lru_unlink(c, e);
        lru_push(c, e);
        pthread_mutex_unlock(&c->lock);
    } else {
        e = calloc(1, sizeof(*e));
        uint8_t *data = malloc(VOL_BLOCK_SIZE);
        if (!e || !data) {
            free(e);
            free(data);
            pthread_mutex_unlock(&c->lock);
            return -ENOMEM;
        }
        e->id = *id;
        memcpy(e->kid, kid, sizeof(kid));
        e->refs = 1;
        e->state = ENT_LOADING;
        e->data = data;
        size_t b = bucket_of(c, id);
        e->hnext = c->buckets[b];
        c->buckets[b] = e;
        pthread_mutex_unlock(&c->lock);

        size_t n = 0;
        int rc = store_get(c->store, id, key, e->data, &n, STORE_VERIFY);

        pthread_mutex_lock(&c->lock);
        if (rc < 0) {
            e->state = ENT_FAILED;
            e->err = map_store_err(rc);
            hash_remove(c, e);
            pthread_cond_broadcast(&c->loaded);
            put_ent(c, e);
            pthread_mutex_unlock(&c->lock);
            return map_store_err(rc);
        }
        e->len = n;
        e->state = ENT_READY;
        c->used += VOL_BLOCK_SIZE;
        lru_push(c, e);
        pthread_cond_broadcast(&c->loaded);
        pthread_mutex_unlock(&c->lock);
    }

    /* The entry is ready and referenced: its data no longer changes. */
    if (off < e->len) {
        size_t k = e->len - off < len ? e->len - off : len;
        memcpy(dst, e->data + off, k);
        memset((uint8_t *)dst + k, 0, len - k);
    } else {
        memset(dst, 0, len);
    }
    pthread_mutex_lock(&c->lock);
    put_ent(c, e);
    pthread_mutex_unlock(&c->lock);
    return 0;
}
