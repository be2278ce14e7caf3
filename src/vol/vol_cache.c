/*
 * vol_cache.c — a region's bounded LRU cache of decoded base chunks, with read-ahead.
 *
 * Reads of blocks that only the base map holds decode a whole 512 KiB chunk; a guest reading it in
 * 4 KiB requests must not decode it 128 times.  Entries are keyed by chunk id and the key id of
 * the encryption domain, hold the decoded plaintext (checked as store_get checks it), and are
 * reference-counted so that copying out happens outside the lock.  A miss inserts a loading entry
 * first: other threads wanting the same chunk wait for it rather than decode it again.  Failed
 * loads are not cached.
 *
 * Read-ahead: vol_cache_prefetch queues a chunk a sequential reader will want next; up to
 * PREFETCH_THREADS threads (started on first use) decode queued chunks into loading entries, so
 * that the reader finds them decoded, or being decoded, on another core.  The queue is short
 * (PREFETCH_QUEUE): when it is full, read-ahead is skipped, never waited for.
 *
 * The disk tier: every clear chunk decoded is also written to a slot of an unnamed file in the
 * region's directory (O_TMPFILE: private to this process, gone when it exits or crashes), up to
 * `disk_cap` bytes, with its own LRU.  A read that misses in memory but finds the chunk there
 * reads just the bytes it wants with pread — a volume made from a snapshot reads like a volume of
 * its own once its blocks were read once, as an EBS volume does once initialised.  Chunks are
 * named by their content, so a slot never goes stale.  Encrypted chunks never go to the disk
 * tier (their plaintext stays in memory).  A slot being written is not in the index, and one
 * being read is pinned: eviction skips it.  A failed write (disk full) turns the tier off.
 */
#include "vol/vol_int.h"

#include "crypto/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PREFETCH_THREADS 2
#define PREFETCH_QUEUE   32

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

/* A queued read-ahead: the loading entry it fills (one reference held) and the key to decode
 * with (wiped once used). */
struct prefetch_job {
    struct cache_ent *e;
    bool has_key;
    struct store_key key;
};

struct vol_cache {
    struct store *store;
    pthread_mutex_t lock;
    pthread_cond_t loaded;
    size_t cap, used;
    size_t nbuckets;
    struct cache_ent **buckets;
    struct cache_ent *head, *tail;
    /* read-ahead, under lock */
    pthread_cond_t queued;
    struct prefetch_job queue[PREFETCH_QUEUE];
    size_t qhead, qlen;
    pthread_t threads[PREFETCH_THREADS];
    unsigned nthreads;
    bool stopping;
    /* the disk tier, under lock (dfd and ds fixed once made); dfd < 0: none */
    int dfd;
    size_t dn, dused; /* slots; slots [0, dused) were handed out at least once */
    bool doff;        /* a write failed: no more spills */
    struct dslot *ds;
    struct dslot *dfree;     /* written for a chunk another thread wrote first: reusable */
    struct dslot **dbuckets; /* dn * 2 rounded up to a power of two */
    size_t dnbuckets;
    struct dslot *dhead, *dtail; /* indexed slots, most recent first */
};

/* A slot of the disk tier: VOL_BLOCK_SIZE bytes at (slot index) * VOL_BLOCK_SIZE. */
struct dslot {
    struct chunk_id id;
    size_t len;
    int pins;     /* readers copying out of it */
    bool indexed; /* holds id's decoded bytes and is in dbuckets and the LRU */
    bool writing;
    struct dslot *hnext, *prev, *next;
};

/* Opens the disk tier's file in `dir` (unnamed where the file system allows, else unlinked at
 * once) and its tables, for at most `cap` bytes and an eighth of the file system's free space
 * (the store and volumes come first); leaves the cache without one when anything fails. */
static void disk_open(struct vol_cache *c, const char *dir, uint64_t cap)
{
    c->dfd = -1;
    if (!dir || cap < VOL_BLOCK_SIZE)
        return;
    int fd = open(dir, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
    if (fd < 0) {
        char p[PATH_MAX];
        if (snprintf(p, sizeof(p), "%s/.decoded-XXXXXX", dir) >= (int)sizeof(p))
            return;
        fd = mkostemp(p, O_CLOEXEC);
        if (fd < 0)
            return;
        unlink(p);
    }
    struct statvfs sv;
    if (fstatvfs(fd, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize / 8 < cap)
        cap = (uint64_t)sv.f_bavail * sv.f_frsize / 8;
    size_t n = (size_t)(cap / VOL_BLOCK_SIZE);
    if (n == 0) {
        close(fd);
        return;
    }
    size_t nb = 64;
    while (nb < n * 2 && nb < (1u << 24))
        nb *= 2;
    c->ds = calloc(n, sizeof(*c->ds));
    c->dbuckets = calloc(nb, sizeof(*c->dbuckets));
    if (!c->ds || !c->dbuckets) {
        free(c->ds);
        free(c->dbuckets);
        c->ds = NULL;
        c->dbuckets = NULL;
        close(fd);
        return;
    }
    c->dfd = fd;
    c->dn = n;
    c->dnbuckets = nb;
}

int vol_cache_new(struct store *store, size_t cap, const char *disk_dir, uint64_t disk_cap,
                  struct vol_cache **ret)
{
    struct vol_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->store = store;
    c->cap = cap;
    c->dfd = -1;
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
    pthread_cond_init(&c->queued, NULL);
    disk_open(c, disk_dir, disk_cap);
    *ret = c;
    return 0;
}

void vol_cache_free(struct vol_cache *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    pthread_cond_broadcast(&c->queued);
    pthread_mutex_unlock(&c->lock);
    for (unsigned i = 0; i < c->nthreads; i++)
        pthread_join(c->threads[i], NULL);
    /* Jobs never run: their loading entries are still in the table, freed below. */
    for (size_t i = 0; i < c->qlen; i++)
        crypto_wipe(&c->queue[(c->qhead + i) % PREFETCH_QUEUE].key, sizeof(struct store_key));
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
    if (c->dfd >= 0)
        close(c->dfd);
    free(c->ds);
    free(c->dbuckets);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->loaded);
    pthread_cond_destroy(&c->queued);
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

/* ---- the disk tier (under the lock unless said otherwise) ---- */

static size_t dbucket_of(const struct vol_cache *c, const struct chunk_id *id)
{
    uint64_t h;
    memcpy(&h, id->b + 8, sizeof(h));
    return (size_t)(h & (c->dnbuckets - 1));
}

static struct dslot *dfind(struct vol_cache *c, const struct chunk_id *id)
{
    if (c->dfd < 0)
        return NULL;
    struct dslot *s = c->dbuckets[dbucket_of(c, id)];
    while (s && memcmp(&s->id, id, sizeof(*id)) != 0)
        s = s->hnext;
    return s;
}

static void dlru_unlink(struct vol_cache *c, struct dslot *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->dhead = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        c->dtail = s->prev;
    s->prev = s->next = NULL;
}

static void dlru_push(struct vol_cache *c, struct dslot *s)
{
    s->prev = NULL;
    s->next = c->dhead;
    if (c->dhead)
        c->dhead->prev = s;
    c->dhead = s;
    if (!c->dtail)
        c->dtail = s;
}

/* Takes an indexed slot out of the index (and the LRU). */
static void dunindex(struct vol_cache *c, struct dslot *s)
{
    struct dslot **pp = &c->dbuckets[dbucket_of(c, &s->id)];
    while (*pp && *pp != s)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = s->hnext;
    dlru_unlink(c, s);
    s->indexed = false;
}

/* A slot to write a chunk into, marked `writing` and out of the index: a never used one, else the
 * coldest unpinned one.  NULL when every slot is busy. */
static struct dslot *dtake(struct vol_cache *c)
{
    struct dslot *s = NULL;
    if (c->doff) {
        return NULL;
    } else if (c->dfree) {
        s = c->dfree;
        c->dfree = s->hnext;
    } else if (c->dused < c->dn) {
        s = &c->ds[c->dused++];
    } else {
        for (s = c->dtail; s && s->pins; s = s->prev)
            ;
        if (s)
            dunindex(c, s);
    }
    if (s)
        s->writing = true;
    return s;
}

/* Writes the decoded chunk of the ready entry `e` (referenced by the caller, which holds no
 * lock) to the disk tier, unless it is there already or `e` is encrypted. */
static void spill(struct vol_cache *c, struct cache_ent *e)
{
    static const uint8_t clear[STORE_KEY_ID_LEN];
    if (c->dfd < 0 || memcmp(e->kid, clear, sizeof(clear)) != 0)
        return;
    pthread_mutex_lock(&c->lock);
    struct dslot *s = dfind(c, &e->id) ? NULL : dtake(c);
    pthread_mutex_unlock(&c->lock);
    if (!s)
        return;
    bool ok = vol_pwrite_all(c->dfd, e->data, e->len, (uint64_t)(s - c->ds) * VOL_BLOCK_SIZE) == 0;
    pthread_mutex_lock(&c->lock);
    s->writing = false;
    if (ok && !dfind(c, &e->id)) {
        s->id = e->id;
        s->len = e->len;
        s->indexed = true;
        size_t b = dbucket_of(c, &s->id);
        s->hnext = c->dbuckets[b];
        c->dbuckets[b] = s;
        dlru_push(c, s);
    } else {
        s->hnext = c->dfree;
        c->dfree = s;
        /* Disk full or failing: no more spills (what is indexed stays readable). */
        c->doff = c->doff || !ok;
    }
    pthread_mutex_unlock(&c->lock);
}

/* Copies [off, off+len) of the chunk in slot `s` (pinned by the caller, which holds no lock) into
 * `dst`, zeros past its length.  0, or -EIO when the file cannot give the bytes back. */
static int dread(struct vol_cache *c, const struct dslot *s, void *dst, size_t off, size_t len)
{
    size_t k = off < s->len ? (s->len - off < len ? s->len - off : len) : 0;
    off_t at = (off_t)((size_t)(s - c->ds) * VOL_BLOCK_SIZE + off);
    size_t done = 0;
    while (done < k) {
        ssize_t n = pread(c->dfd, (uint8_t *)dst + done, k - done, at + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -EIO;
        done += (size_t)n;
    }
    memset((uint8_t *)dst + k, 0, len - k);
    return 0;
}

static int map_store_err(int rc)
{
    return rc == -ENOMEM ? -ENOMEM : -EIO;
}

/* The entry for (id, kid), or NULL.  Under the lock. */
static struct cache_ent *find(struct vol_cache *c, const struct chunk_id *id, const uint8_t *kid)
{
    struct cache_ent *e = c->buckets[bucket_of(c, id)];
    while (e &&
           (memcmp(&e->id, id, sizeof(*id)) != 0 || memcmp(e->kid, kid, STORE_KEY_ID_LEN) != 0))
        e = e->hnext;
    return e;
}

/* A new loading entry for (id, kid) in the table, with one reference (the loader's).  Under the
 * lock.  NULL when out of memory. */
static struct cache_ent *insert_loading(struct vol_cache *c, const struct chunk_id *id,
                                        const uint8_t *kid)
{
    struct cache_ent *e = calloc(1, sizeof(*e));
    uint8_t *data = malloc(VOL_BLOCK_SIZE);
    if (!e || !data) {
        free(e);
        free(data);
        return NULL;
    }
    e->id = *id;
    memcpy(e->kid, kid, STORE_KEY_ID_LEN);
    e->refs = 1;
    e->state = ENT_LOADING;
    e->data = data;
    size_t b = bucket_of(c, id);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    return e;
}

/*
 * Decodes chunk e->id into the loading entry `e` (the caller holds a reference and not the lock)
 * and makes it ready or failed, waking its waiters.  Returns 0 or the error readers get.
 */
static int load(struct vol_cache *c, struct cache_ent *e, const struct store_key *key)
{
    size_t n = 0;
    /* No STORE_VERIFY: re-hashing would cost as much as decoding, and the decode already checks
     * the zstd content checksum (corruption) and, for an encrypted chunk, the GCM tag over
     * header, id and payload (substitution).  A clear chunk can only hold other bytes than its
     * name says through a bug or a hand in the store, which `amid verify`, reading with
     * STORE_VERIFY, reports.  The EBS direct API serves chunks the same way. */
    int rc = store_get(c->store, &e->id, key, e->data, &n, 0);

    pthread_mutex_lock(&c->lock);
    if (rc < 0) {
        rc = map_store_err(rc);
        e->state = ENT_FAILED;
        e->err = rc;
        hash_remove(c, e);
    } else {
        e->len = n;
        e->state = ENT_READY;
        c->used += VOL_BLOCK_SIZE;
        lru_push(c, e);
    }
    pthread_cond_broadcast(&c->loaded);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int vol_cache_read(struct vol_cache *c, const struct chunk_id *id, const struct store_key *key,
                   void *dst, size_t off, size_t len)
{
    uint8_t kid[STORE_KEY_ID_LEN] = { 0 };
    if (key)
        memcpy(kid, key->key_id, sizeof(kid));

    pthread_mutex_lock(&c->lock);
    struct cache_ent *e = find(c, id, kid);
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
        struct dslot *s = key ? NULL : dfind(c, id);
        if (s) {
            /* On disk: just the bytes wanted, no decode. */
            s->pins++;
            dlru_unlink(c, s);
            dlru_push(c, s);
            pthread_mutex_unlock(&c->lock);
            int rc = dread(c, s, dst, off, len);
            pthread_mutex_lock(&c->lock);
            s->pins--;
            if (rc < 0 && s->indexed) {
                dunindex(c, s); /* unreadable: decode it again below */
                if (!s->pins) {
                    s->hnext = c->dfree;
                    c->dfree = s;
                }
            }
            pthread_mutex_unlock(&c->lock);
            if (rc == 0)
                return 0;
            return vol_cache_read(c, id, key, dst, off, len);
        }
        e = insert_loading(c, id, kid);
        pthread_mutex_unlock(&c->lock);
        if (!e)
            return -ENOMEM;
        int rc = load(c, e, key);
        if (rc < 0) {
            pthread_mutex_lock(&c->lock);
            put_ent(c, e);
            pthread_mutex_unlock(&c->lock);
            return rc;
        }
        spill(c, e);
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

/* ---- read-ahead ---- */

static void *prefetch_main(void *arg)
{
    struct vol_cache *c = arg;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->stopping && c->qlen == 0)
            pthread_cond_wait(&c->queued, &c->lock);
        if (c->stopping)
            break;
        struct prefetch_job job = c->queue[c->qhead];
        crypto_wipe(&c->queue[c->qhead].key, sizeof(job.key));
        c->qhead = (c->qhead + 1) % PREFETCH_QUEUE;
        c->qlen--;
        pthread_mutex_unlock(&c->lock);
        if (load(c, job.e, job.has_key ? &job.key : NULL) == 0)
            spill(c, job.e);
        crypto_wipe(&job.key, sizeof(job.key));
        pthread_mutex_lock(&c->lock);
        put_ent(c, job.e);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

int vol_cache_prefetch(struct vol_cache *c, const struct chunk_id *id, const struct store_key *key)
{
    uint8_t kid[STORE_KEY_ID_LEN] = { 0 };
    if (key)
        memcpy(kid, key->key_id, sizeof(kid));
    int rc = 0;

    pthread_mutex_lock(&c->lock);
    if (find(c, id, kid) || (!key && dfind(c, id))) {
        /* cached (in memory or on disk), or being decoded */
    } else if (c->stopping || c->qlen == PREFETCH_QUEUE) {
        rc = -EAGAIN;
    } else {
        /* A thread for each job waiting, up to the limit. */
        if (c->nthreads < PREFETCH_THREADS && c->nthreads <= c->qlen &&
            pthread_create(&c->threads[c->nthreads], NULL, prefetch_main, c) == 0)
            c->nthreads++;
        struct cache_ent *e = c->nthreads ? insert_loading(c, id, kid) : NULL;
        if (!e) {
            rc = c->nthreads ? -ENOMEM : -EAGAIN;
        } else {
            struct prefetch_job *j = &c->queue[(c->qhead + c->qlen) % PREFETCH_QUEUE];
            j->e = e;
            j->has_key = key != NULL;
            if (key)
                j->key = *key;
            c->qlen++;
            pthread_cond_signal(&c->queued);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

uint64_t vol_readahead(atomic_ullong *cursor, uint64_t first, uint64_t last)
{
    uint64_t prev = atomic_exchange(cursor, last + 1);
    /* Starting where the previous read ended (in its last block or the next) and reaching past
     * it: a reader of 4 KiB requests triggers once per block, not 128 times. */
    return (first == prev || first + 1 == prev) && last + 1 != prev ? VOL_READAHEAD : 0;
}
