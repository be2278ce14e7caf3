/*
 * core_maint.c — maintenance of block storage: `verify` (every reference and, optionally, every
 * chunk's content), `gc` (frees the chunks nothing refers to) and `du` (storage per snapshot and
 * image).
 *
 * These run in the command line's process, usually while a daemon serves the same directory, so
 * they reach a region only through what is safe to share between processes: the chunk store,
 * opened privately (its temporary files are shared under flock, store_local.c), map files read
 * with vol_map_load, and volumes' state files read without opening the volumes.  vol_region_open
 * and vol_open tidy up files they do not expect — a layer a concurrent snapshot is creating, a
 * map being saved — which only the process that owns the volumes may do.  Only verify opens
 * volumes with vol_open, as a deeper check, and only when no daemon answers on the NBD socket.
 *
 * What refers to chunks (gc's roots):
 *   - every map file in REGION/maps: snapshots in any state, and maps of deleted snapshots kept
 *     because a volume or an upload still needs them (core_map_needed);
 *   - volumes: through their base map and the maps of their snapshots in flight, which are map
 *     files too (a volume's base missing is a fatal scan error);
 *   - EBS uploads: their blocks' rows (ebs_blocks);
 *   - chunks being written: a capture saves its map only at its end, a put commits its chunk
 *     before the row naming it — the grace period covers these, and so does a put that
 *     deduplicates against an old chunk, since the store then refreshes the chunk's mtime.  A
 *     capture still running since before the grace period moves the cutoff back to its start.
 * gc reads, in this order, the snapshot rows and upload blocks, the volumes' states, then the
 * map files: a map that appears after the rows were read was saved by an operation that either
 * wrote its chunks (fresh mtimes) or copied them from a map that was a root when read.
 */
#include "core/core_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <pthread.h>
#include <unistd.h>

#define STATE_MAX    (1u << 20)
#define READ_THREADS 16
#define ID_LEN       32
/* A capture running longer than the grace period moves gc's cutoff to its start, less this. */
#define CAPTURE_MARGIN_MS (60LL * 1000)

/* ---- a set of chunk ids with what refers to them ---- */

struct ment {
    struct chunk_id id;
    uint64_t size;  /* the chunk file's size; 0 when absent */
    uint64_t block; /* the block index under which the first referrer names it */
    uint32_t ref;   /* first referrer + 1; 0 marks a free slot */
    uint32_t nrefs; /* distinct referrers */
    uint32_t last;  /* the last referrer counted */
    int32_t img;    /* du: the one image whose snapshots alone refer to it, or -2 */
    bool present;
    int rc; /* verify: the result of reading it */
};

struct mset {
    struct ment *v;
    size_t cap, n;
};

static size_t mset_slot(const struct chunk_id *id, size_t cap)
{
    uint64_t h;
    memcpy(&h, id->b, sizeof(h)); /* ids are hashes: uniform already */
    return (size_t)h & (cap - 1);
}

static struct ment *mset_find(const struct mset *s, const struct chunk_id *id)
{
    if (!s->cap)
        return NULL;
    for (size_t i = mset_slot(id, s->cap);; i = (i + 1) & (s->cap - 1)) {
        if (!s->v[i].ref)
            return NULL;
        if (memcmp(s->v[i].id.b, id->b, STORE_ID_LEN) == 0)
            return &s->v[i];
    }
}

static int mset_grow(struct mset *s)
{
    size_t cap = s->cap ? s->cap * 2 : 4096;
    struct ment *v = calloc(cap, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->v[i].ref)
            continue;
        size_t k = mset_slot(&s->v[i].id, cap);
        while (v[k].ref)
            k = (k + 1) & (cap - 1);
        v[k] = s->v[i];
    }
    free(s->v);
    s->v = v;
    s->cap = cap;
    return 0;
}

/* Notes that referrer `ref` (a snapshot of image `img` alone, or -2) names chunk `id` (as block
 * `block`).  A referrer's chunks are added together, so `last` counts each referrer once. */
static int mset_add(struct mset *s, const struct chunk_id *id, uint32_t ref, int32_t img,
                    uint64_t block)
{
    struct ment *m = mset_find(s, id);
    if (m) {
        if (m->last != ref) {
            m->nrefs++;
            m->last = ref;
            if (m->img != img)
                m->img = -2;
        }
        return 0;
    }
    if (2 * (s->n + 1) > s->cap) {
        int rc = mset_grow(s);
        if (rc < 0)
            return rc;
    }
    size_t k = mset_slot(id, s->cap);
    while (s->v[k].ref)
        k = (k + 1) & (s->cap - 1);
    m = &s->v[k];
    memset(m, 0, sizeof(*m));
    m->id = *id;
    m->ref = ref + 1;
    m->nrefs = 1;
    m->last = ref;
    m->block = block;
    m->img = img;
    s->n++;
    return 0;
}

static void mset_free(struct mset *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* ---- what a region holds ---- */

struct msnap {
    char id[ID_LEN];
    char state[16];
    char source[16];
    char parent[ID_LEN];
    char volume_id[ID_LEN];
    char owner[16];
    int64_t start_ms;
    int64_t size_gib;
    bool has_map;
};

struct mvol {
    char id[ID_LEN];
    char state[16];
    bool has_row, has_dir;
};

/* Why a map must stay although no snapshot row may name it. */
#define NEED_BASE     1u /* a volume's base */
#define NEED_INFLIGHT 2u /* a volume's snapshot being captured or finished (may not exist yet) */
#define NEED_PARENT   4u /* a pending EBS upload's parent */

struct mneed {
    char id[ID_LEN];
    unsigned why;
};

struct mmap {
    char id[ID_LEN];
    int64_t mtime_ms;
    struct vol_map *m; /* loaded, or NULL */
};

/* Who refers to chunks: a snapshot's map, a map kept for a volume or upload, an upload. */
enum mref_kind { REF_SNAPSHOT, REF_KEPT_MAP, REF_UPLOAD, REF_ANY_UPLOAD };

struct mref {
    enum mref_kind kind;
    char id[ID_LEN];
    int32_t snap; /* index in snaps, or -1 */
    int32_t img;  /* du: the one image the snapshot belongs to, or -2 */
};

struct mregion {
    struct app *app;
    const struct core_region *r;
    char maps_dir[PATH_MAX];
    char vols_dir[PATH_MAX];
    struct store *store;
    struct msnap *snaps;
    size_t nsnaps;
    struct mvol *vols;
    size_t nvols;
    struct mmap *maps;
    size_t nmaps;
    struct mneed *needed; /* maps volumes and pending uploads need, sorted */
    size_t nneeded;
    struct mref *refs;
    size_t nrefs, refs_cap;
    int32_t *snap_img; /* du: per snapshot, its one image, -1 none, -2 several (NULL: none) */
    struct mset set;
};

static int grow(void **p, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 32;
    void *q = realloc(*p, c * size);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* Sorts structs whose first member is char id[ID_LEN] by it. */
static void sort_ids(void *base, size_t n, size_t size)
{
    if (n > 1)
        qsort(base, n, size, cmp_id);
}

/* In such sorted structs: the index of `id`, or -1. */
static ssize_t find_id(const void *base, size_t n, size_t size, const char *id)
{
    if (n == 0)
        return -1;
    const char *p = bsearch(id, base, n, size, cmp_id);
    return p ? (p - (const char *)base) / (ssize_t)size : -1;
}

static void mregion_free(struct mregion *mr)
{
    for (size_t i = 0; i < mr->nmaps; i++)
        vol_map_unref(mr->maps[i].m);
    free(mr->maps);
    free(mr->snaps);
    free(mr->vols);
    free(mr->needed);
    free(mr->refs);
    free(mr->snap_img);
    mset_free(&mr->set);
    if (mr->store)
        store_close(mr->store);
    memset(mr, 0, sizeof(*mr));
}

static void mregion_init(struct mregion *mr, struct app *app, const struct core_region *r)
{
    memset(mr, 0, sizeof(*mr));
    mr->app = app;
    mr->r = r;
    snprintf(mr->maps_dir, sizeof(mr->maps_dir), "%s/maps", r->store_path);
    snprintf(mr->vols_dir, sizeof(mr->vols_dir), "%s/volumes", r->store_path);
}

static int add_ref(struct mregion *mr, enum mref_kind kind, const char *id, int32_t snap,
                   uint32_t *ret)
{
    int rc = grow((void **)&mr->refs, &mr->refs_cap, mr->nrefs, sizeof(*mr->refs));
    if (rc < 0)
        return rc;
    struct mref *f = &mr->refs[mr->nrefs];
    f->kind = kind;
    snprintf(f->id, sizeof(f->id), "%s", id);
    f->snap = snap;
    /* Only a snapshot of exactly one image makes a chunk that image's alone. */
    f->img = -2;
    if (kind == REF_SNAPSHOT && snap >= 0 && mr->snap_img && mr->snap_img[snap] >= 0)
        f->img = mr->snap_img[snap];
    *ret = (uint32_t)mr->nrefs++;
    return 0;
}

/* ---- database rows ---- */

struct rows_ctx {
    struct mregion *mr;
    size_t cap;
};

static int collect_snap(void *vctx, const struct db_snapshot *s)
{
    struct rows_ctx *c = vctx;
    struct mregion *mr = c->mr;
    if (grow((void **)&mr->snaps, &c->cap, mr->nsnaps, sizeof(*mr->snaps)) < 0)
        return -ENOMEM;
    struct msnap *m = &mr->snaps[mr->nsnaps++];
    memset(m, 0, sizeof(*m));
    snprintf(m->id, sizeof(m->id), "%s", s->id);
    snprintf(m->state, sizeof(m->state), "%s", s->state);
    snprintf(m->source, sizeof(m->source), "%s", s->source);
    snprintf(m->parent, sizeof(m->parent), "%s", s->parent_id);
    snprintf(m->volume_id, sizeof(m->volume_id), "%s", s->volume_id);
    snprintf(m->owner, sizeof(m->owner), "%s", s->owner);
    m->start_ms = s->start_ms;
    m->size_gib = s->volume_size_gib;
    return 0;
}

static int collect_vol(void *vctx, const struct db_volume *v)
{
    struct rows_ctx *c = vctx;
    struct mregion *mr = c->mr;
    if (grow((void **)&mr->vols, &c->cap, mr->nvols, sizeof(*mr->vols)) < 0)
        return -ENOMEM;
    struct mvol *m = &mr->vols[mr->nvols++];
    memset(m, 0, sizeof(*m));
    snprintf(m->id, sizeof(m->id), "%s", v->id);
    snprintf(m->state, sizeof(m->state), "%s", v->state);
    m->has_row = true;
    return 0;
}

/* The region's snapshot and volume rows, sorted by id. */
static int load_rows(struct mregion *mr)
{
    struct db *db = core_db_get(mr->app);
    struct rows_ctx c = { mr, 0 };
    int rc = db_snapshot_each(db, mr->r->name, NULL, NULL, collect_snap, &c);
    struct rows_ctx v = { mr, 0 };
    if (rc == 0)
        rc = db_volume_each(db, mr->r->name, NULL, collect_vol, &v);
    core_db_put(mr->app, db);
    sort_ids(mr->snaps, mr->nsnaps, sizeof(*mr->snaps));
    sort_ids(mr->vols, mr->nvols, sizeof(*mr->vols));
    return rc;
}

static ssize_t snap_find(const struct mregion *mr, const char *id)
{
    return find_id(mr->snaps, mr->nsnaps, sizeof(*mr->snaps), id);
}

/* Whether a row exists for snapshot `id` right now (re-checks what a concurrent delete may have
 * changed since the rows were read). */
static bool snap_row_now(struct app *app, const char *id)
{
    struct db *db = core_db_get(app);
    struct db_snapshot s;
    int rc = db_snapshot_get(db, id, &s);
    core_db_put(app, db);
    return rc != -ENOENT;
}

/* ---- volumes' state files, read without opening the volumes ---- */

/*
 * The state file is vol's (vol_volume.c): "amid-volume 1", "size N", "key K", "base ID|-",
 * "next N", "layer SEQ"..., "pending ID UPTO NBLOCKS begun|finished"..., and last "sum HEX", the
 * SHA-256 of everything before it.  Only what maintenance needs is read: the base, the layers
 * and the snapshots in flight.
 */
struct vpeek {
    char base[ID_LEN];
    uint64_t *layers;
    size_t nlayers, cap_layers;
    char (*pending)[ID_LEN];
    size_t npending, cap_pending;
};

static void vpeek_free(struct vpeek *p)
{
    free(p->layers);
    free(p->pending);
    memset(p, 0, sizeof(*p));
}

static int read_small(const char *path, char **ret, size_t *ret_n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > STATE_MAX) {
        close(fd);
        return -EBADMSG;
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *p = malloc(n + 1);
    if (!p) {
        close(fd);
        return -ENOMEM;
    }
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    p[got] = '\0';
    *ret = p;
    *ret_n = got;
    return 0;
}

static int vpeek_read(const char *vol_dir, struct vpeek *ret)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/state", vol_dir) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    char *text = NULL;
    size_t n = 0;
    memset(ret, 0, sizeof(*ret));
    int rc = read_small(path, &text, &n);
    if (rc < 0)
        return rc;
    rc = -EBADMSG;
    char *sum = n > 2 && text[n - 1] == '\n' && strlen(text) == n ? text + n - 1 : NULL;
    if (sum) {
        *sum = '\0';
        sum = strrchr(text, '\n');
    }
    uint8_t want[32], got[32];
    if (sum && str_startswith(sum + 1, "sum ") && strlen(sum + 5) == 64 &&
        hex_decode(sum + 5, want, sizeof(want)) == 0) {
        crypto_sha256(text, (size_t)(sum + 1 - text), got);
        if (crypto_memeq(want, got, sizeof(want)))
            rc = 0;
    }
    if (rc == 0) {
        *sum = '\0';
        char *save = NULL;
        int line = 0;
        for (char *l = strtok_r(text, "\n", &save); l && rc == 0;
             l = strtok_r(NULL, "\n", &save), line++) {
            char id[ID_LEN + 1];
            uint64_t seq;
            if (line == 0 && strcmp(l, "amid-volume 1") != 0) {
                rc = -EBADMSG;
            } else if (str_startswith(l, "base ")) {
                if (strcmp(l + 5, "-") != 0 && strlen(l + 5) < ID_LEN)
                    snprintf(ret->base, sizeof(ret->base), "%s", l + 5);
                else if (strcmp(l + 5, "-") != 0)
                    rc = -EBADMSG;
            } else if (sscanf(l, "layer %" SCNu64, &seq) == 1) {
                rc = grow((void **)&ret->layers, &ret->cap_layers, ret->nlayers,
                          sizeof(*ret->layers));
                if (rc == 0)
                    ret->layers[ret->nlayers++] = seq;
            } else if (sscanf(l, "pending %32s", id) == 1) {
                rc = strlen(id) < ID_LEN ? grow((void **)&ret->pending, &ret->cap_pending,
                                                ret->npending, sizeof(*ret->pending))
                                         : -EBADMSG;
                if (rc == 0)
                    snprintf(ret->pending[ret->npending++], ID_LEN, "%s", id);
            }
        }
        if (rc == 0 && (line < 5 || ret->nlayers == 0))
            rc = -EBADMSG;
    }
    free(text);
    if (rc < 0)
        vpeek_free(ret);
    return rc;
}

static bool dir_entry_ok(const char *name)
{
    return name[0] != '.' && strlen(name) < ID_LEN;
}

/* Volume directories merged into mr->vols (sorted by id). */
static int list_vol_dirs(struct mregion *mr)
{
    DIR *d = opendir(mr->vols_dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    size_t cap = mr->nvols;
    size_t nrows = mr->nvols;
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        if (!dir_entry_ok(de->d_name))
            continue; /* ".tmp-" and ".del-": a create or delete in progress */
        ssize_t k = find_id(mr->vols, nrows, sizeof(*mr->vols), de->d_name);
        if (k >= 0) {
            mr->vols[k].has_dir = true;
            continue;
        }
        rc = grow((void **)&mr->vols, &cap, mr->nvols, sizeof(*mr->vols));
        if (rc == 0) {
            struct mvol *v = &mr->vols[mr->nvols++];
            memset(v, 0, sizeof(*v));
            snprintf(v->id, sizeof(v->id), "%s", de->d_name);
            v->has_dir = true;
        }
    }
    closedir(d);
    sort_ids(mr->vols, mr->nvols, sizeof(*mr->vols));
    return rc;
}

/* Appends; load_needed sorts and merges duplicates at the end. */
static int add_needed(struct mregion *mr, size_t *cap, const char *id, unsigned why)
{
    int rc = grow((void **)&mr->needed, cap, mr->nneeded, sizeof(*mr->needed));
    if (rc == 0) {
        snprintf(mr->needed[mr->nneeded].id, ID_LEN, "%s", id);
        mr->needed[mr->nneeded++].why = why;
    }
    return rc;
}

/* Why map `id` is needed (NEED_*), 0 when it is not. */
static unsigned needed_why(const struct mregion *mr, const char *id)
{
    ssize_t k = find_id(mr->needed, mr->nneeded, sizeof(*mr->needed), id);
    return k >= 0 ? mr->needed[k].why : 0;
}

static bool is_needed(const struct mregion *mr, const char *id)
{
    return needed_why(mr, id) != 0;
}

/* A volume whose row says it should have data on disk. */
static bool vol_expected(const struct mvol *v)
{
    return v->has_row && strcmp(v->state, "deleting") != 0;
}

/* The maps volumes and pending uploads need (sorted): volumes' bases and snapshots in flight,
 * uploads' parents.  `fail` (may be NULL) gets each volume whose state cannot be read. */
static int load_needed(struct mregion *mr, int (*fail)(void *ctx, const struct mvol *v, int rc),
                       void *ctx)
{
    size_t cap = 0;
    int rc = 0;
    for (size_t i = 0; i < mr->nsnaps && rc == 0; i++) {
        const struct msnap *s = &mr->snaps[i];
        if (s->parent[0] && strcmp(s->source, "ebs") == 0 && strcmp(s->state, "pending") == 0)
            rc = add_needed(mr, &cap, s->parent, NEED_PARENT);
    }
    for (size_t i = 0; i < mr->nvols && rc == 0; i++) {
        struct mvol *v = &mr->vols[i];
        if (!v->has_dir)
            continue;
        char dir[PATH_MAX];
        struct vpeek p;
        snprintf(dir, sizeof(dir), "%s/%s", mr->vols_dir, v->id);
        int prc = vpeek_read(dir, &p);
        if (prc < 0) {
            /* A directory without a row may be half made or half deleted: nothing to keep. */
            if (fail && (v->has_row || prc != -ENOENT))
                rc = fail(ctx, v, prc);
            continue;
        }
        if (p.base[0])
            rc = add_needed(mr, &cap, p.base, NEED_BASE);
        for (size_t k = 0; k < p.npending && rc == 0; k++)
            rc = add_needed(mr, &cap, p.pending[k], NEED_INFLIGHT);
        vpeek_free(&p);
    }
    sort_ids(mr->needed, mr->nneeded, sizeof(*mr->needed));
    size_t k = 0;
    for (size_t i = 0; i < mr->nneeded; i++) {
        if (k && strcmp(mr->needed[k - 1].id, mr->needed[i].id) == 0)
            mr->needed[k - 1].why |= mr->needed[i].why;
        else
            mr->needed[k++] = mr->needed[i];
    }
    mr->nneeded = k;
    return rc;
}

struct parent_ctx {
    const char *region, *id;
    bool found;
};

static int pending_parent(void *vctx, const struct db_snapshot *s)
{
    struct parent_ctx *c = vctx;
    if (strcmp(s->source, "ebs") == 0 && strcmp(s->region, c->region) == 0 &&
        strcmp(s->parent_id, c->id) == 0)
        c->found = true;
    return c->found;
}

static int state_unknown(void *ctx, const struct mvol *v, int rc)
{
    (void)ctx;
    (void)v;
    (void)rc;
    return -EIO;
}

bool core_map_needed(struct app *app, const char *region, const char *snapshot_id)
{
    const struct core_region *r = core_region_find(app, region);
    if (!r)
        return true;
    /* Pending uploads (few) and the region's volumes' states; not every snapshot row. */
    struct parent_ctx pc = { region, snapshot_id, false };
    struct db *db = core_db_get(app);
    int rc = db_snapshot_each_state(db, "pending", pending_parent, &pc);
    core_db_put(app, db);
    if (rc >= 0 && pc.found)
        return true;
    struct mregion mr;
    mregion_init(&mr, app, r);
    if (rc >= 0)
        rc = list_vol_dirs(&mr);
    if (rc >= 0)
        rc = load_needed(&mr, state_unknown, NULL);
    /* Unknown is needed: a map kept too long costs space, one removed too soon a volume. */
    bool needed = rc < 0 || is_needed(&mr, snapshot_id);
    mregion_free(&mr);
    return needed;
}

/* ---- map files ---- */

/* The map files present, sorted by snapshot id. */
static int list_maps(struct mregion *mr)
{
    DIR *d = opendir(mr->maps_dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    size_t cap = 0;
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.' || l < 5 || l - 4 >= ID_LEN ||
            strcmp(de->d_name + l - 4, ".map") != 0)
            continue; /* "X.map.tmp-...": a save in progress */
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0) {
            if (errno == ENOENT)
                continue;
            rc = -errno;
            break;
        }
        rc = grow((void **)&mr->maps, &cap, mr->nmaps, sizeof(*mr->maps));
        if (rc < 0)
            break;
        struct mmap *m = &mr->maps[mr->nmaps++];
        memset(m, 0, sizeof(*m));
        memcpy(m->id, de->d_name, l - 4);
        m->id[l - 4] = '\0';
        m->mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    }
    closedir(d);
    sort_ids(mr->maps, mr->nmaps, sizeof(*mr->maps));
    for (size_t i = 0; i < mr->nmaps; i++) {
        ssize_t k = snap_find(mr, mr->maps[i].id);
        if (k >= 0)
            mr->snaps[k].has_map = true;
    }
    return rc;
}

static ssize_t map_find(const struct mregion *mr, const char *id)
{
    return find_id(mr->maps, mr->nmaps, sizeof(*mr->maps), id);
}

static void map_path(const struct mregion *mr, const char *id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s.map", mr->maps_dir, id);
}

struct addmap_ctx {
    struct mregion *mr;
    uint32_t ref;
};

static int addmap_block(void *vctx, uint64_t idx, const struct chunk_id *id)
{
    struct addmap_ctx *c = vctx;
    return mset_add(&c->mr->set, id, c->ref, c->mr->refs[c->ref].img, idx);
}

/* Loads map `id` (once) and notes its chunks as referred to by `kind`. */
static int add_map(struct mregion *mr, const char *id, enum mref_kind kind, struct vol_map **ret)
{
    char path[PATH_MAX];
    struct vol_map *m = NULL;
    ssize_t k = map_find(mr, id);
    if (k >= 0 && mr->maps[k].m) {
        if (ret)
            *ret = mr->maps[k].m;
        return 0;
    }
    map_path(mr, id, path, sizeof(path));
    int rc = vol_map_load(path, &m);
    if (rc < 0)
        return rc;
    if (k >= 0)
        mr->maps[k].m = m;
    ssize_t s = snap_find(mr, id);
    uint32_t ref;
    rc = add_ref(mr, kind, id, (int32_t)s, &ref);
    if (rc == 0) {
        struct addmap_ctx c = { mr, ref };
        rc = vol_map_each(m, addmap_block, &c);
    }
    if (k < 0) {
        if (rc == 0 && ret)
            rc = -EAGAIN; /* not kept: callers that want it listed it first */
        vol_map_unref(m);
        return rc;
    }
    if (rc == 0 && ret)
        *ret = m;
    return rc;
}

/* ---- uploads ---- */

struct upl_ctx {
    struct mregion *mr;
    uint32_t ref;
};

static int upl_block(void *vctx, int64_t idx, const uint8_t *chunk, const uint8_t *sha256)
{
    struct upl_ctx *c = vctx;
    (void)sha256;
    if (!chunk)
        return 0;
    struct chunk_id id;
    memcpy(id.b, chunk, STORE_ID_LEN);
    return mset_add(&c->mr->set, &id, c->ref, -2, (uint64_t)idx);
}

static int upl_any(void *vctx, const uint8_t *chunk)
{
    struct upl_ctx *c = vctx;
    struct chunk_id id;
    memcpy(id.b, chunk, STORE_ID_LEN);
    return mset_add(&c->mr->set, &id, c->ref, -2, 0);
}

/* The blocks of uploads not completed (pending, or failed and not yet deleted); with `all`,
 * every block row in the database too, whatever its region (gc's belt and braces). */
static int add_uploads(struct mregion *mr, bool all, uint64_t *ret_n)
{
    int rc = 0;
    uint64_t n = 0;
    struct db *db = core_db_get(mr->app);
    for (size_t i = 0; i < mr->nsnaps && rc == 0; i++) {
        const struct msnap *s = &mr->snaps[i];
        if (strcmp(s->source, "ebs") != 0 || strcmp(s->state, "completed") == 0)
            continue;
        struct upl_ctx c = { mr, 0 };
        rc = add_ref(mr, REF_UPLOAD, s->id, (int32_t)i, &c.ref);
        if (rc == 0)
            rc = db_ebs_block_each(db, s->id, upl_block, &c);
        n += strcmp(s->state, "pending") == 0;
    }
    if (rc == 0 && all) {
        struct upl_ctx c = { mr, 0 };
        rc = add_ref(mr, REF_ANY_UPLOAD, "uploads", -1, &c.ref);
        if (rc == 0)
            rc = db_ebs_chunk_each(db, upl_any, &c);
    }
    core_db_put(mr->app, db);
    if (ret_n)
        *ret_n = n;
    return rc;
}

/* The region's chunk store, opened privately; NULL (no chunks at all) for a region whose store
 * was never created, so that looking creates nothing. */
static int open_store(struct mregion *mr)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/chunks", mr->r->store_path);
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return 0;
    return store_open_local(mr->r->store_path, NULL, &mr->store);
}

static int chunk_stat(struct mregion *mr, const struct chunk_id *id, struct store_chunk_info *ret)
{
    return mr->store ? store_stat(mr->store, id, ret) : -ENOENT;
}

static int chunk_each(struct mregion *mr, int (*fn)(void *ctx, const struct store_chunk_info *c),
                      void *ctx)
{
    return mr->store ? store_each(mr->store, fn, ctx) : 0;
}

/* Whether a daemon answers on the data directory's NBD socket. */
static bool daemon_serving(struct app *app)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char path[1200];
    core_nbd_socket(app, path, sizeof(path));
    if (strlen(path) >= sizeof(sa.sun_path))
        return true; /* cannot tell: assume it does */
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return true;
    bool up = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return up;
}

/* ==== verify ==== */

struct vctx {
    struct app *app;
    const struct core_verify_opts *o;
    void (*fn)(void *ctx, const struct core_problem *p);
    void *ctx;
    struct core_verify_stats *st;
    struct mregion *mr;
};

static void report(struct vctx *v, const char *kind, bool warning, const char *id,
                   const struct chunk_id *chunk, const char *fmt, ...) PRINTF(6, 7);

static void report(struct vctx *v, const char *kind, bool warning, const char *id,
                   const struct chunk_id *chunk, const char *fmt, ...)
{
    char detail[512], hex[65];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    if (chunk)
        chunk_id_hex(chunk, hex);
    struct core_problem p = { kind, warning, v->mr->r->name, id, chunk ? hex : NULL, detail };
    if (warning)
        v->st->warnings++;
    else
        v->st->errors++;
    if (v->fn)
        v->fn(v->ctx, &p);
}

static const char *errtext(int rc)
{
    return rc == -EBADMSG ? "damaged (checksum or format)" : strerror(-rc);
}

static int vol_state_fail(void *vctx, const struct mvol *vol, int rc)
{
    struct vctx *v = vctx;
    if (vol_expected(vol))
        report(v, "volume-state", false, vol->id, NULL, "its state file cannot be read: %s",
               errtext(rc));
    return 0;
}

static bool layer_file_exists(const char *dir, uint64_t seq, const char *ext)
{
    char path[PATH_MAX];
    struct stat st;
    if (snprintf(path, sizeof(path), "%s/L%" PRIu64 ".%s", dir, seq, ext) >= (int)sizeof(path))
        return false;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The first layer of `p` whose files are missing, or 0. */
static uint64_t missing_layer(const char *dir, const struct vpeek *p)
{
    for (size_t i = 0; i < p->nlayers; i++)
        if (!layer_file_exists(dir, p->layers[i], "data") ||
            !layer_file_exists(dir, p->layers[i], "bitmap"))
            return p->layers[i] ? p->layers[i] : UINT64_MAX;
    return 0;
}

/* A volume's layer files and base map, from its state file. */
static void verify_volume_files(struct vctx *v, const struct mvol *vol)
{
    struct mregion *mr = v->mr;
    char dir[PATH_MAX];
    struct vpeek p;
    uint64_t gone = 0;
    snprintf(dir, sizeof(dir), "%s/%s", mr->vols_dir, vol->id);
    /* A snapshot finishing meanwhile drops layers: read the state again before blaming. */
    for (int tries = 0; tries < 3; tries++) {
        if (tries)
            vpeek_free(&p);
        if (vpeek_read(dir, &p) < 0)
            return; /* reported by load_needed */
        gone = missing_layer(dir, &p);
        if (!gone)
            break;
    }
    if (gone) {
        report(v, "volume-layer-missing", false, vol->id, NULL,
               "layer %" PRIu64 " named by its state is missing (its writes are lost)",
               gone == UINT64_MAX ? 0 : gone);
    } else if (p.base[0]) {
        char path[PATH_MAX];
        map_path(mr, p.base, path, sizeof(path));
        int rc =
            add_map(mr, p.base, snap_find(mr, p.base) >= 0 ? REF_SNAPSHOT : REF_KEPT_MAP, NULL);
        if (rc == -ENOENT) {
            /* Rebased meanwhile onto a newer map?  Then the old one may go. */
            struct vpeek again;
            if (vpeek_read(dir, &again) == 0 && strcmp(again.base, p.base) == 0 &&
                access(path, F_OK) != 0)
                report(v, "volume-base-missing", false, vol->id, NULL,
                       "its base, the map of %s, is missing (the volume's data is lost)", p.base);
            vpeek_free(&again);
        } else if (rc < 0) {
            report(v, "volume-base-corrupt", false, vol->id, NULL,
                   "its base, the map of %s, cannot be loaded: %s", p.base, errtext(rc));
        }
    }
    vpeek_free(&p);
}

static void verify_volumes(struct vctx *v, bool deep)
{
    struct mregion *mr = v->mr;
    struct vol_region *vr = NULL;
    if (deep && core_region_storage(v->app, mr->r->name, NULL, &vr) < 0)
        vr = NULL;
    for (size_t i = 0; i < mr->nvols; i++) {
        struct mvol *vol = &mr->vols[i];
        if (vol->has_row && !vol->has_dir) {
            if (vol_expected(vol))
                report(v, "volume-missing", false, vol->id, NULL,
                       "the volume (%s) has no directory in %s", vol->state, mr->vols_dir);
            continue;
        }
        if (!vol->has_row) {
            report(v, "orphan-volume-dir", true, vol->id, NULL,
                   "volume directory without a volume: %s/%s", mr->vols_dir, vol->id);
            continue;
        }
        if (!vol_expected(vol))
            continue;
        v->st->volumes++;
        verify_volume_files(v, vol);
        if (vr) {
            struct vol *h;
            int rc = vol_open(vr, vol->id, NULL, &h);
            if (rc == 0)
                vol_close(h);
            else if (rc != -EACCES) /* encrypted: needs its key */
                report(v, "volume-open", false, vol->id, NULL, "vol_open fails: %s", errtext(rc));
        }
    }
}

static void verify_snapshots(struct vctx *v)
{
    struct mregion *mr = v->mr;
    for (size_t i = 0; i < mr->nsnaps; i++) {
        struct msnap *s = &mr->snaps[i];
        if (strcmp(s->state, "completed") != 0)
            continue;
        v->st->snapshots++;
        struct vol_map *m = NULL;
        int rc = s->has_map ? add_map(mr, s->id, REF_SNAPSHOT, &m) : -ENOENT;
        if (rc == -ENOENT) {
            if (snap_row_now(v->app, s->id))
                report(v, "snapshot-map-missing", false, s->id, NULL,
                       "the completed snapshot has no map file in %s", mr->maps_dir);
            continue;
        }
        if (rc < 0) {
            report(v, "snapshot-map-corrupt", false, s->id, NULL, "its map cannot be loaded: %s",
                   errtext(rc));
            continue;
        }
        v->st->maps++;
        uint64_t max = (uint64_t)s->size_gib * CORE_BLOCKS_PER_GIB;
        if (vol_map_blocks(m) > max)
            report(v, "snapshot-map-size", false, s->id, NULL,
                   "its map has %" PRIu64 " blocks; a %" PRId64 " GiB snapshot has %" PRIu64,
                   vol_map_blocks(m), s->size_gib, max);
    }
}

struct img_list {
    struct db_image *v;
    size_t n, cap;
};

static int collect_image(void *vctx, const struct db_image *im)
{
    struct img_list *l = vctx;
    if (grow((void **)&l->v, &l->cap, l->n, sizeof(*l->v)) < 0)
        return -ENOMEM;
    l->v[l->n++] = *im;
    return 0;
}

struct bdm_list {
    struct db_bdm *v;
    size_t n, cap;
};

static int collect_bdm(void *vctx, const struct db_bdm *b)
{
    struct bdm_list *l = vctx;
    if (grow((void **)&l->v, &l->cap, l->n, sizeof(*l->v)) < 0)
        return -ENOMEM;
    l->v[l->n++] = *b;
    return 0;
}

/* The region's images that still count (not deregistered), in id order. */
static int load_images(struct app *app, const char *region, struct img_list *ret)
{
    struct db *db = core_db_get(app);
    struct db_image_query q = { .region = region };
    struct img_list all = { 0 };
    int rc = db_image_each(db, &q, collect_image, &all);
    core_db_put(app, db);
    memset(ret, 0, sizeof(*ret));
    for (size_t i = 0; i < all.n && rc == 0; i++) {
        if (strcmp(all.v[i].state, "deregistered") == 0)
            continue;
        rc = collect_image(ret, &all.v[i]);
    }
    free(all.v);
    return rc;
}

static int image_bdms(struct app *app, const char *image_id, struct bdm_list *ret)
{
    memset(ret, 0, sizeof(*ret));
    struct db *db = core_db_get(app);
    int rc = db_bdm_each(db, image_id, collect_bdm, ret);
    core_db_put(app, db);
    return rc;
}

static int verify_images(struct vctx *v)
{
    struct mregion *mr = v->mr;
    struct img_list imgs;
    int rc = load_images(v->app, mr->r->name, &imgs);
    for (size_t i = 0; i < imgs.n && rc == 0; i++) {
        const struct db_image *im = &imgs.v[i];
        struct bdm_list b;
        rc = image_bdms(v->app, im->id, &b);
        v->st->images++;
        for (size_t k = 0; k < b.n && rc == 0; k++) {
            if (strcmp(b.v[k].kind, "ebs") != 0 || !b.v[k].snapshot_id[0])
                continue;
            ssize_t s = snap_find(mr, b.v[k].snapshot_id);
            if (s < 0 && snap_row_now(v->app, b.v[k].snapshot_id))
                continue; /* made since the rows were read */
            if (s < 0)
                report(v, "image-snapshot-missing", false, im->id, NULL,
                       "%s maps to snapshot %s, which does not exist", b.v[k].device_name,
                       b.v[k].snapshot_id);
            else if (strcmp(im->state, "available") == 0 &&
                     strcmp(mr->snaps[s].state, "completed") != 0)
                report(v, "image-snapshot-state", false, im->id, NULL,
                       "the image is available but its snapshot %s (%s) is %s", b.v[k].snapshot_id,
                       b.v[k].device_name, mr->snaps[s].state);
        }
        free(b.v);
    }
    free(imgs.v);
    return rc;
}

static void verify_orphans(struct vctx *v)
{
    struct mregion *mr = v->mr;
    for (size_t i = 0; i < mr->nmaps; i++) {
        const struct mmap *m = &mr->maps[i];
        if (snap_find(mr, m->id) >= 0 || is_needed(mr, m->id) || snap_row_now(v->app, m->id))
            continue;
        report(v, "orphan-map", true, m->id, NULL,
               "map file of a deleted snapshot that nothing needs (gc removes it)");
    }
}

/* ---- reading chunks (both cores) ---- */

struct reader {
    struct store *store;
    struct ment **ents;
    size_t n;
    _Atomic size_t next;
    _Atomic uint64_t bytes;
    const struct store_key *keys; /* the region's encryption domains the key service opened */
    size_t nkeys;
};

/* The encryption domains of a region's encrypted snapshots and volumes, opened through the key
 * service as their owners (a key that cannot be used now is left out: its chunks stay sealed and
 * are not checked), without duplicates. */
struct key_set {
    struct app *app;
    const char *region;
    struct store_key *v;
    size_t n, cap;
};

static void key_add(struct key_set *k, const char *owner, const struct core_dkey *dk)
{
    if (!dk->encrypted)
        return;
    struct core_caller who = { owner, k->region, false };
    struct store_key sk;
    struct err e = { 0 };
    if (core_dkey_open(k->app, &who, dk, &sk, &e) < 0)
        return;
    for (size_t i = 0; i < k->n; i++)
        if (memcmp(k->v[i].key_id, sk.key_id, STORE_KEY_ID_LEN) == 0) {
            crypto_wipe(&sk, sizeof(sk));
            return;
        }
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 8;
        struct store_key *nv = realloc(k->v, cap * sizeof(*nv));
        if (!nv) {
            crypto_wipe(&sk, sizeof(sk));
            return;
        }
        k->v = nv;
        k->cap = cap;
    }
    k->v[k->n++] = sk;
    crypto_wipe(&sk, sizeof(sk));
}

static int key_of_snapshot(void *vctx, const struct db_snapshot *s)
{
    struct core_dkey dk;
    core_dkey_of_snapshot(s, &dk);
    key_add(vctx, s->owner, &dk);
    return 0;
}

static int key_of_volume(void *vctx, const struct db_volume *v)
{
    struct core_dkey dk;
    core_dkey_of_volume(v, &dk);
    key_add(vctx, v->owner, &dk);
    return 0;
}

static void keys_load(struct key_set *k)
{
    struct db *db = core_db_get(k->app);
    db_snapshot_each(db, k->region, NULL, NULL, key_of_snapshot, k);
    db_volume_each(db, k->region, NULL, key_of_volume, k);
    core_db_put(k->app, db);
}

static void keys_free(struct key_set *k)
{
    if (k->v)
        crypto_wipe(k->v, k->cap * sizeof(*k->v));
    free(k->v);
}

static void *reader_main(void *p)
{
    struct reader *r = p;
    uint8_t *buf = malloc(STORE_CHUNK_SIZE);
    for (;;) {
        size_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->n)
            break;
        size_t n = 0;
        struct ment *m = r->ents[i];
        m->rc = buf ? store_get(r->store, &m->id, NULL, buf, &n, STORE_VERIFY) : -ENOMEM;
        /* Sealed: read with the domain whose key id it names (the others are refused). */
        for (size_t k = 0; m->rc == -EACCES && k < r->nkeys; k++)
            m->rc = store_get(r->store, &m->id, &r->keys[k], buf, &n, STORE_VERIFY);
        if (m->rc == 0)
            atomic_fetch_add(&r->bytes, n);
    }
    free(buf);
    return NULL;
}

static unsigned reader_threads(const struct core_verify_opts *o)
{
    long n = o->threads ? (long)o->threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > READ_THREADS ? READ_THREADS : (unsigned)n;
}

static int read_chunks(struct vctx *v, struct ment **ents, size_t n)
{
    struct key_set keys = { .app = v->app, .region = v->mr->r->name };
    keys_load(&keys);
    struct reader r = { v->mr->store, ents, n, 0, 0, keys.v, keys.n };
    pthread_t t[READ_THREADS];
    unsigned nt = reader_threads(v->o), started = 0;
    for (unsigned i = 0; i < nt; i++) {
        if (pthread_create(&t[i], NULL, reader_main, &r) != 0)
            break;
        started++;
    }
    if (!started)
        reader_main(&r);
    for (unsigned i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    v->st->bytes_read += atomic_load(&r.bytes);
    keys_free(&keys);
    return 0;
}

/* "block 12 of snap-1 (and 2 others)" for a chunk's problem line. */
static void chunk_where(const struct mregion *mr, const struct ment *m, char *out, size_t outlen)
{
    const struct mref *f = &mr->refs[m->ref - 1];
    const char *what = f->kind == REF_UPLOAD ? "uploaded block" : "block";
    int l = snprintf(out, outlen, "%s %" PRIu64 " of %s", what, m->block, f->id);
    if (m->nrefs > 1 && l > 0 && (size_t)l < outlen)
        snprintf(out + l, outlen - (size_t)l, " (and %u more)", m->nrefs - 1);
}

static int verify_chunks(struct vctx *v)
{
    struct mregion *mr = v->mr;
    struct ment **ents = malloc((mr->set.n ? mr->set.n : 1) * sizeof(*ents));
    if (!ents)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < mr->set.cap; i++) {
        struct ment *m = &mr->set.v[i];
        if (!m->ref)
            continue;
        struct store_chunk_info info;
        int rc = chunk_stat(mr, &m->id, &info);
        m->present = rc == 0;
        m->rc = rc;
        if (rc == 0)
            ents[n++] = m;
    }
    v->st->chunks += mr->set.n;
    if (v->o->read_data) {
        read_chunks(v, ents, n);
        v->st->chunks_read += n;
    }
    free(ents);
    for (size_t i = 0; i < mr->set.cap; i++) {
        struct ment *m = &mr->set.v[i];
        if (!m->ref || m->rc == 0 || m->rc == -EACCES)
            continue;
        char where[160];
        chunk_where(mr, m, where, sizeof(where));
        const char *id = mr->refs[m->ref - 1].id;
        if (!m->present && m->rc == -ENOENT) {
            report(v, "chunk-missing", false, id, &m->id, "%s: the chunk is missing", where);
        } else if (m->rc == -EBADMSG) {
            /* Tell a wrong length or header (truncated, overwritten) from damaged content. */
            uint8_t *raw = NULL;
            size_t rn;
            int hrc = store_get_raw(mr->store, &m->id, &raw, &rn);
            free(raw);
            if (hrc == -EBADMSG)
                report(v, "chunk-truncated", false, id, &m->id,
                       "%s: the chunk's header or length is wrong (truncated?)", where);
            else
                report(v, "chunk-corrupt", false, id, &m->id,
                       "%s: the chunk's content fails its checksum or id", where);
        } else {
            report(v, "chunk-unreadable", false, id, &m->id, "%s: %s", where, strerror(-m->rc));
        }
    }
    return 0;
}

static int verify_region(struct vctx *v, bool deep)
{
    struct mregion *mr = v->mr;
    int rc = open_store(mr);
    if (rc == 0)
        rc = load_rows(mr);
    if (rc == 0)
        rc = list_vol_dirs(mr);
    if (rc == 0)
        rc = load_needed(mr, vol_state_fail, v);
    if (rc == 0)
        rc = list_maps(mr);
    if (rc < 0)
        return rc;
    verify_snapshots(v);
    verify_volumes(v, deep);
    uint64_t uploads = 0;
    rc = add_uploads(mr, false, &uploads);
    v->st->uploads += uploads;
    if (rc == 0)
        rc = verify_images(v);
    if (rc == 0)
        verify_orphans(v);
    if (rc == 0)
        rc = verify_chunks(v);
    return rc;
}

int core_verify(struct app *app, const struct core_verify_opts *o,
                void (*fn)(void *ctx, const struct core_problem *p), void *ctx,
                struct core_verify_stats *ret, struct err *e)
{
    struct core_verify_opts def = { 0 };
    struct core_verify_stats st;
    memset(&st, 0, sizeof(st));
    if (!o)
        o = &def;
    /* Opening volumes tidies their directories: only the owner of the volumes may. */
    bool deep = !daemon_serving(app);
    st.volumes_opened = deep;
    size_t nr;
    const struct core_region *regions = core_regions(app, &nr);
    int rc = 0;
    for (size_t i = 0; i < nr && rc == 0; i++) {
        struct mregion mr;
        mregion_init(&mr, app, &regions[i]);
        struct vctx v = { app, o, fn, ctx, &st, &mr };
        rc = verify_region(&v, deep);
        if (rc < 0)
            err_set(e, rc, "InternalError", "cannot check region %s: %s", regions[i].name,
                    strerror(-rc));
        mregion_free(&mr);
        st.regions++;
    }
    *ret = st;
    return rc;
}

/* ==== gc ==== */

struct cand {
    struct chunk_id id;
    uint64_t size;
};

struct gcctx {
    struct mregion *mr;
    int64_t cutoff_ms;
    struct core_gc_stats *st;
    struct cand *c;
    size_t n, cap;
};

static int gc_chunk(void *vctx, const struct store_chunk_info *ci)
{
    struct gcctx *g = vctx;
    g->st->chunks++;
    g->st->bytes += ci->stored_bytes;
    if (mset_find(&g->mr->set, &ci->id)) {
        g->st->referenced++;
        return 0;
    }
    if (ci->mtime_ms >= g->cutoff_ms) {
        g->st->recent++;
        g->st->recent_bytes += ci->stored_bytes;
        return 0;
    }
    if (grow((void **)&g->c, &g->cap, g->n, sizeof(*g->c)) < 0)
        return -ENOMEM;
    g->c[g->n].id = ci->id;
    g->c[g->n].size = ci->stored_bytes;
    g->n++;
    return 0;
}

/* A region's plan: orphan maps to remove and chunks to free. */
struct gcplan {
    struct mregion mr;
    char (*maps)[ID_LEN];
    size_t nmaps;
    struct cand *c;
    size_t n;
    int64_t cutoff_ms;
};

static int gc_scan_region(struct app *app, const struct core_region *r, int64_t cutoff_ms,
                          struct gcplan *p, struct core_gc_stats *st, struct err *e)
{
    struct mregion *mr = &p->mr;
    mregion_init(mr, app, r);
    p->cutoff_ms = cutoff_ms;
    const char *step = "open its chunk store";
    int rc = open_store(mr);
    /* Rows first, then volumes, then map files: see the top of this file. */
    if (rc == 0) {
        step = "read its snapshots and volumes";
        rc = load_rows(mr);
    }
    if (rc == 0) {
        step = "read EBS uploads' blocks";
        rc = add_uploads(mr, true, NULL);
    }
    /* A capture that began long ago may have written chunks its map does not list yet. */
    int64_t offset = core_clock_offset(app);
    for (size_t i = 0; rc == 0 && i < mr->nsnaps; i++) {
        const struct msnap *s = &mr->snaps[i];
        if (strcmp(s->state, "pending") == 0 && strcmp(s->source, "volume") == 0 &&
            s->start_ms - offset - CAPTURE_MARGIN_MS < p->cutoff_ms)
            p->cutoff_ms = s->start_ms - offset - CAPTURE_MARGIN_MS;
    }
    struct mvol *bad = NULL;
    int bad_rc = 0;
    if (rc == 0) {
        step = "read its volumes' states";
        rc = list_vol_dirs(mr);
    }
    if (rc == 0) {
        rc = load_needed(mr, NULL, NULL);
        /* Every volume the database knows must be readable: its base is a root. */
        for (size_t i = 0; rc == 0 && i < mr->nvols; i++) {
            struct mvol *v = &mr->vols[i];
            char dir[PATH_MAX];
            struct vpeek pk;
            snprintf(dir, sizeof(dir), "%s/%s", mr->vols_dir, v->id);
            if (!vol_expected(v))
                continue;
            bad_rc = vpeek_read(dir, &pk);
            vpeek_free(&pk);
            if (bad_rc < 0) {
                bad = v;
                rc = -EIO;
            }
        }
    }
    if (rc == 0) {
        step = "list its map files";
        rc = list_maps(mr);
    }
    /* Maps of deleted snapshots nothing needs, old enough: removed before their chunks count. */
    size_t cap = 0;
    for (size_t i = 0; rc == 0 && i < mr->nmaps; i++) {
        struct mmap *m = &mr->maps[i];
        if (snap_find(mr, m->id) >= 0 || is_needed(mr, m->id) || m->mtime_ms >= cutoff_ms)
            continue;
        rc = grow((void **)&p->maps, &cap, p->nmaps, sizeof(*p->maps));
        if (rc == 0)
            snprintf(p->maps[p->nmaps++], ID_LEN, "%s", m->id);
    }
    const char *map_id = NULL;
    for (size_t i = 0; rc == 0 && i < mr->nmaps; i++) {
        struct mmap *m = &mr->maps[i];
        if (find_id(p->maps, p->nmaps, sizeof(*p->maps), m->id) >= 0)
            continue;
        ssize_t s = snap_find(mr, m->id);
        rc = add_map(mr, m->id, s >= 0 ? REF_SNAPSHOT : REF_KEPT_MAP, NULL);
        if (rc == -ENOENT && !snap_row_now(app, m->id))
            rc = 0; /* deleted meanwhile (and so not needed) */
        if (rc < 0) {
            step = "load a map file";
            map_id = m->id;
        }
    }
    /* A map volumes or uploads need that the listing did not have: made since, or missing.  A
     * volume's base must exist (its chunks are the volume's data); a snapshot in flight has no
     * map until captured, and an upload whose parent is gone cannot complete anyway. */
    for (size_t i = 0; rc == 0 && i < mr->nneeded; i++) {
        const struct mneed *nd = &mr->needed[i];
        if (map_find(mr, nd->id) >= 0)
            continue;
        rc = add_map(mr, nd->id, REF_KEPT_MAP, NULL);
        if (rc == -ENOENT && (!(nd->why & NEED_BASE) || !core_map_needed(app, r->name, nd->id)))
            rc = 0;
        if (rc < 0) {
            step = rc == -ENOENT ? "find the base map of a volume:" : "load a map a volume needs:";
            map_id = nd->id;
        }
    }
    if (rc == 0) {
        step = "list its chunks";
        struct gcctx g = { mr, p->cutoff_ms, st, NULL, 0, 0 };
        rc = chunk_each(mr, gc_chunk, &g);
        p->c = g.c;
        p->n = g.n;
    }
    if (rc < 0) {
        if (bad)
            err_set(e, rc, "InternalError",
                    "region %s: cannot read the state of volume %s (%s): its base map is a root; "
                    "nothing was deleted",
                    r->name, bad->id, errtext(bad_rc));
        else
            err_set(e, rc, "InternalError", "region %s: cannot %s%s%s: %s; nothing was deleted",
                    r->name, step, map_id ? " " : "", map_id ? map_id : "", errtext(rc));
    }
    return rc;
}

static void gc_plan_free(struct gcplan *p)
{
    mregion_free(&p->mr);
    free(p->maps);
    free(p->c);
}

static int gc_apply(struct app *app, struct gcplan *p, bool dry_run, struct core_gc_stats *st,
                    struct err *e)
{
    struct mregion *mr = &p->mr;
    int rc = 0;
    /* The maps to remove are checked again just before: nothing can come to need a map without
     * a row, but the check is cheap next to a volume's data. */
    struct mregion now;
    mregion_init(&now, app, mr->r);
    if (p->nmaps) {
        rc = load_rows(&now);
        if (rc == 0)
            rc = list_vol_dirs(&now);
        if (rc == 0)
            rc = load_needed(&now, NULL, NULL);
        if (rc < 0) {
            mregion_free(&now);
            return err_set(e, rc, "InternalError", "region %s: cannot read volumes again: %s",
                           mr->r->name, strerror(-rc));
        }
    }
    for (size_t i = 0; i < p->nmaps && rc == 0; i++) {
        if (snap_find(&now, p->maps[i]) >= 0 || is_needed(&now, p->maps[i]) ||
            snap_row_now(app, p->maps[i])) {
            /* Needed after all: its chunks stay. */
            rc = add_map(mr, p->maps[i], REF_KEPT_MAP, NULL);
            if (rc == -ENOENT)
                rc = 0;
            if (rc < 0)
                err_set(e, rc, "InternalError", "region %s: cannot load map %s: %s", mr->r->name,
                        p->maps[i], errtext(rc));
            continue;
        }
        st->maps_freed++;
        if (dry_run)
            continue;
        char path[PATH_MAX];
        map_path(mr, p->maps[i], path, sizeof(path));
        if (unlink(path) < 0 && errno != ENOENT)
            rc = err_set(e, -errno, "InternalError", "region %s: cannot remove %s: %s", mr->r->name,
                         path, strerror(errno));
    }
    mregion_free(&now);
    if (rc < 0)
        return rc; /* the chunks of a map still there stay referenced */
    for (size_t i = 0; i < p->n; i++) {
        struct store_chunk_info info;
        if (mset_find(&mr->set, &p->c[i].id))
            continue; /* a map found needed above refers to it */
        /* A put may have deduplicated against it since the walk: it then has a new mtime. */
        int src = chunk_stat(mr, &p->c[i].id, &info);
        if (src < 0 || info.mtime_ms >= p->cutoff_ms) {
            st->skipped += src == 0;
            continue;
        }
        if (!dry_run) {
            src = store_delete(mr->store, &p->c[i].id);
            if (src == -ENOENT)
                continue;
            if (src < 0)
                return err_set(e, src, "InternalError", "region %s: cannot delete a chunk: %s",
                               mr->r->name, strerror(-src));
        }
        st->freed++;
        st->freed_bytes += info.stored_bytes;
    }
    return 0;
}

int core_gc(struct app *app, const struct core_gc_opts *o, struct core_gc_stats *ret, struct err *e)
{
    struct core_gc_stats st;
    memset(&st, 0, sizeof(st));
    if (!o || o->grace_ms < 0)
        return err_set(e, -EINVAL, "InvalidParameterValue", "the grace period must be >= 0");
    /* Before anything is read: whatever is written from now on is newer than this. */
    int64_t start_ms = time_now_ms();
    int64_t cutoff_ms = start_ms - o->grace_ms;
    size_t nr;
    const struct core_region *regions = core_regions(app, &nr);
    struct gcplan *plans = calloc(nr ? nr : 1, sizeof(*plans));
    if (!plans)
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    int rc = 0;
    size_t done = 0;
    for (; done < nr && rc == 0; done++)
        rc = gc_scan_region(app, &regions[done], cutoff_ms, &plans[done], &st, e);
    /* Only once every region's scan succeeded is anything deleted. */
    for (size_t i = 0; i < nr && rc == 0; i++)
        rc = gc_apply(app, &plans[i], o->dry_run, &st, e);
    for (size_t i = 0; i < done; i++)
        gc_plan_free(&plans[i]);
    free(plans);
    *ret = st;
    return rc;
}

/* ==== du ==== */

struct du_walk {
    struct mregion *mr;
    uint32_t mark; /* visits each chunk once per walk */
    int32_t img;   /* an image's walk: its index; a snapshot's: -1 */
    uint64_t stored, unique, chunks, missing;
};

static int du_block(void *vctx, uint64_t idx, const struct chunk_id *id)
{
    struct du_walk *w = vctx;
    (void)idx;
    struct ment *m = mset_find(&w->mr->set, id);
    if (!m || m->last == w->mark)
        return 0;
    m->last = w->mark;
    w->chunks++;
    w->stored += m->size;
    w->missing += !m->present;
    if (w->img >= 0 ? m->img == w->img : m->nrefs == 1)
        w->unique += m->size;
    return 0;
}

static int du_store_chunk(void *vctx, const struct store_chunk_info *ci)
{
    struct du_walk *w = vctx;
    struct ment *m = mset_find(&w->mr->set, &ci->id);
    w->chunks++;
    w->stored += ci->stored_bytes;
    if (m) {
        m->present = true;
        m->size = ci->stored_bytes;
    } else {
        w->unique += ci->stored_bytes; /* unreferenced */
    }
    return 0;
}

static struct vol_map *du_map(const struct mregion *mr, const char *id)
{
    ssize_t k = map_find(mr, id);
    return k >= 0 ? mr->maps[k].m : NULL;
}

static int du_region(struct app *app, const struct core_region *r,
                     void (*snapshot_fn)(void *ctx, const struct core_du_snapshot *s),
                     void (*image_fn)(void *ctx, const struct core_du_image *im), void *ctx,
                     struct core_du_totals *t)
{
    struct mregion mr;
    mregion_init(&mr, app, r);
    struct img_list imgs = { 0 };
    char(**isnaps)[ID_LEN] = NULL; /* per image: its snapshots, sorted */
    size_t *nisnaps = NULL;
    int rc = open_store(&mr);
    if (rc == 0)
        rc = load_rows(&mr);
    /* Which image each snapshot belongs to, before any referrer is recorded. */
    if (rc == 0)
        rc = load_images(app, r->name, &imgs);
    if (rc == 0) {
        mr.snap_img = malloc((mr.nsnaps ? mr.nsnaps : 1) * sizeof(*mr.snap_img));
        isnaps = calloc(imgs.n ? imgs.n : 1, sizeof(*isnaps));
        nisnaps = calloc(imgs.n ? imgs.n : 1, sizeof(*nisnaps));
        if (!mr.snap_img || !isnaps || !nisnaps)
            rc = -ENOMEM;
    }
    for (size_t i = 0; rc == 0 && i < mr.nsnaps; i++)
        mr.snap_img[i] = -1;
    for (size_t i = 0; rc == 0 && i < imgs.n; i++) {
        struct bdm_list b;
        size_t cap = 0;
        rc = image_bdms(app, imgs.v[i].id, &b);
        for (size_t k = 0; rc == 0 && k < b.n; k++) {
            ssize_t s = b.v[k].snapshot_id[0] ? snap_find(&mr, b.v[k].snapshot_id) : -1;
            bool dup = false;
            for (size_t q = 0; q < nisnaps[i]; q++)
                dup |= strcmp(isnaps[i][q], b.v[k].snapshot_id) == 0;
            if (s < 0 || dup)
                continue;
            rc = grow((void **)&isnaps[i], &cap, nisnaps[i], ID_LEN);
            if (rc == 0)
                snprintf(isnaps[i][nisnaps[i]++], ID_LEN, "%s", b.v[k].snapshot_id);
            mr.snap_img[s] = mr.snap_img[s] == -1 ? (int32_t)i : -2;
        }
        free(b.v);
    }
    if (rc == 0)
        rc = add_uploads(&mr, false, NULL);
    if (rc == 0)
        rc = list_vol_dirs(&mr);
    if (rc == 0)
        rc = load_needed(&mr, NULL, NULL);
    if (rc == 0)
        rc = list_maps(&mr);
    /* Who refers to what: snapshots with a map (in any state) and maps kept for volumes and
     * uploads; an orphan map gc will remove counts for nothing. */
    for (size_t i = 0; rc == 0 && i < mr.nmaps; i++) {
        const char *id = mr.maps[i].id;
        bool rowed = snap_find(&mr, id) >= 0;
        if (!rowed && !is_needed(&mr, id))
            continue;
        struct vol_map *m;
        rc = add_map(&mr, id, rowed ? REF_SNAPSHOT : REF_KEPT_MAP, &m);
        if (rc == -ENOENT)
            rc = 0; /* deleted meanwhile */
    }
    /* Sizes from the store, and what nothing refers to. */
    struct du_walk sw = { &mr, 0, -1, 0, 0, 0, 0 };
    if (rc == 0)
        rc = chunk_each(&mr, du_store_chunk, &sw);
    if (rc < 0)
        goto out;
    t->store_chunks += sw.chunks;
    t->store_bytes += sw.stored;
    t->unreferenced_bytes += sw.unique;
    for (size_t i = 0; i < mr.set.cap; i++) {
        mr.set.v[i].last = UINT32_MAX;
        if (mr.set.v[i].ref) {
            t->referenced_chunks++;
            t->referenced_bytes += mr.set.v[i].size;
        }
    }
    /* Each snapshot (each walk marks the chunks it saw with its own mark). */
    uint32_t mark = 0;
    for (size_t i = 0; i < mr.nsnaps; i++) {
        const struct msnap *s = &mr.snaps[i];
        struct vol_map *m = du_map(&mr, s->id);
        struct du_walk w = { &mr, mark++, -1, 0, 0, 0, 0 };
        if (m)
            vol_map_each(m, du_block, &w);
        struct core_du_snapshot d = {
            .id = s->id,
            .region = r->name,
            .owner = s->owner,
            .state = s->state,
            .volume_id = s->volume_id,
            .blocks = m ? vol_map_allocated(m) : 0,
            .chunks = w.chunks,
            .stored_bytes = w.stored,
            .unique_bytes = w.unique,
            .shared_bytes = w.stored - w.unique,
            /* A volume based on it keeps its map, and so its chunks, after a delete. */
            .freed_bytes = needed_why(&mr, s->id) & (NEED_BASE | NEED_INFLIGHT) ? 0 : w.unique,
            .missing = w.missing,
        };
        d.full_bytes = d.blocks * CORE_BLOCK_SIZE;
        t->snapshots++;
        t->full_bytes += d.full_bytes;
        if (snapshot_fn)
            snapshot_fn(ctx, &d);
    }
    /* Each image: its snapshots' chunks, counted once; unique when only its snapshots use them. */
    for (size_t i = 0; i < imgs.n; i++) {
        struct du_walk w = { &mr, mark++, (int32_t)i, 0, 0, 0, 0 };
        uint64_t full = 0;
        const char **ids = calloc(nisnaps[i] ? nisnaps[i] : 1, sizeof(*ids));
        if (!ids) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t k = 0; k < nisnaps[i]; k++) {
            struct vol_map *m = du_map(&mr, isnaps[i][k]);
            ids[k] = isnaps[i][k];
            if (!m)
                continue;
            full += vol_map_allocated(m) * CORE_BLOCK_SIZE;
            vol_map_each(m, du_block, &w);
        }
        struct core_du_image d = {
            .id = imgs.v[i].id,
            .region = r->name,
            .name = imgs.v[i].name,
            .state = imgs.v[i].state,
            .snapshots = ids,
            .nsnapshots = nisnaps[i],
            .full_bytes = full,
            .stored_bytes = w.stored,
            .unique_bytes = w.unique,
            .shared_bytes = w.stored - w.unique,
        };
        t->images++;
        if (image_fn)
            image_fn(ctx, &d);
        free(ids);
    }
out:
    for (size_t i = 0; isnaps && i < imgs.n; i++)
        free(isnaps[i]);
    free(isnaps);
    free(nisnaps);
    free(imgs.v);
    mregion_free(&mr);
    return rc;
}

int core_du(struct app *app, const char *region,
            void (*snapshot_fn)(void *ctx, const struct core_du_snapshot *s),
            void (*image_fn)(void *ctx, const struct core_du_image *im), void *ctx,
            struct core_du_totals *ret, struct err *e)
{
    struct core_du_totals t;
    memset(&t, 0, sizeof(t));
    size_t nr;
    const struct core_region *regions = core_regions(app, &nr);
    if (region && !core_region_find(app, region))
        return err_set(e, -ENOENT, "InvalidParameterValue", "no region %.64s", region);
    int rc = 0;
    for (size_t i = 0; i < nr && rc == 0; i++) {
        if (region && strcmp(region, regions[i].name) != 0)
            continue;
        rc = du_region(app, &regions[i], snapshot_fn, image_fn, ctx, &t);
        if (rc < 0)
            err_set(e, rc, "InternalError", "cannot measure region %s: %s", regions[i].name,
                    strerror(-rc));
    }
    *ret = t;
    return rc;
}
