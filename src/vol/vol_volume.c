/*
 * vol_volume.c — a region's volumes: the state file, create/open/close/delete, grow, and the
 * volume as a block device (read with read-ahead of base chunks, write with copy-up or partial
 * blocks, trim and zeroing, block status, flush).
 *
 * DIR/volumes/<id>/state is a small text file, rewritten atomically and durably whenever the chain
 * changes, ending in the SHA-256 of what precedes it:
 *     amid-volume 1
 *     size <bytes>
 *     key <key id hex | ->
 *     base <snapshot id | ->
 *     next <next layer seq>
 *     xts <seq>                          with a key: layers from seq on are encrypted (AES-XTS)
 *     layer <seq>                        one a line, oldest first; the last takes writes
 *     pending <snapshot id> <upto seq> <nblocks> begun|finished    oldest first
 *     sum <hex>
 * Layer files the state does not name are leftovers of a crash and are removed on open.
 *
 * I/O holds the chain lock for reading, so a snapshot's begin (which holds it for writing) never
 * sees a request half done.  Writes to a block hold that block's stripe mutex across the
 * look-at-state, copy-up and write, so two writers to one block never lose an update while
 * writers to different blocks proceed in parallel; readers take it only for partial blocks.
 */
#include "vol/vol_int.h"
#include "crypto/crypto.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <sys/file.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAX (1u << 20)
/* Blocks block_status looks at in one call before answering with what it has. */
#define STATUS_SCAN_MAX 65536u

/* ---- the region ---- */

static int mkdir_p(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Removes the files of directory `path` (one level) and the directory. */
static void remove_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[PATH_MAX];
            if (snprintf(p, sizeof(p), "%s/%s", path, e->d_name) < (int)sizeof(p))
                unlink(p);
        }
        closedir(d);
    }
    rmdir(path);
}

/* Leftovers of a crashed create or delete, and of crashed map saves. */
static void region_cleanup(struct vol_region *r)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/volumes", r->dir);
    DIR *d = opendir(p);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (str_startswith(e->d_name, ".tmp-") || str_startswith(e->d_name, ".del-")) {
                char q[PATH_MAX];
                if (snprintf(q, sizeof(q), "%s/%s", p, e->d_name) < (int)sizeof(q))
                    remove_dir(q);
            }
        }
        closedir(d);
    }
    snprintf(p, sizeof(p), "%s/maps", r->dir);
    d = opendir(p);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strstr(e->d_name, ".map.tmp-")) {
                char q[PATH_MAX];
                if (snprintf(q, sizeof(q), "%s/%s", p, e->d_name) < (int)sizeof(q))
                    unlink(q);
            }
        }
        closedir(d);
    }
}

int vol_region_open(const char *dir, struct store *store, size_t cache_bytes,
                    uint64_t disk_cache_bytes, struct vol_region **ret)
{
    struct vol_region *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    char p[PATH_MAX];
    int rc = 0;
    if (snprintf(r->dir, sizeof(r->dir), "%s", dir) >= (int)sizeof(r->dir) ||
        strlen(dir) + 64 >= PATH_MAX)
        rc = -ENAMETOOLONG;
    if (rc == 0)
        rc = mkdir_p(dir, 0755);
    if (rc == 0) {
        snprintf(p, sizeof(p), "%s/maps", dir);
        rc = mkdir_p(p, 0755);
    }
    if (rc == 0) {
        snprintf(p, sizeof(p), "%s/volumes", dir);
        rc = mkdir_p(p, 0700);
    }
    if (rc == 0)
        rc = vol_cache_new(store, cache_bytes, dir, disk_cache_bytes, &r->cache);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->store = store;
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->maps_lock, NULL);
    /* Every process with the region open holds DIR/volumes shared; only a process alone with it
     * may take leftovers for a crashed writer's (a tool opening the region while the daemon
     * runs must never delete the daemon's files in progress). */
    snprintf(p, sizeof(p), "%s/volumes", dir);
    r->lock_fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r->lock_fd >= 0 && flock(r->lock_fd, LOCK_EX | LOCK_NB) == 0) {
        region_cleanup(r);
        flock(r->lock_fd, LOCK_SH);
    } else if (r->lock_fd >= 0) {
        flock(r->lock_fd, LOCK_SH);
    }
    *ret = r;
    return 0;
}

void vol_region_close(struct vol_region *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nmaps; i++)
        vol_map_unref(r->maps[i].m);
    free(r->maps);
    vol_cache_free(r->cache);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->maps_lock);
    if (r->lock_fd >= 0)
        close(r->lock_fd);
    free(r);
}

void vol_map_path(struct vol_region *r, const char *snapshot_id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/maps/%s.map", r->dir, snapshot_id);
}

/* Forgets maps nobody but the cache holds.  Under maps_lock. */
static void maps_prune(struct vol_region *r)
{
    size_t k = 0;
    for (size_t i = 0; i < r->nmaps; i++) {
        if (atomic_load(&r->maps[i].m->refs) == 1)
            vol_map_unref(r->maps[i].m);
        else
            r->maps[k++] = r->maps[i];
    }
    r->nmaps = k;
}

static void maps_insert(struct vol_region *r, const char *id, struct vol_map *m)
{
    for (size_t i = 0; i < r->nmaps; i++) {
        if (!strcmp(r->maps[i].id, id)) {
            vol_map_unref(r->maps[i].m);
            r->maps[i].m = vol_map_ref(m);
            return;
        }
    }
    maps_prune(r);
    if (r->nmaps == r->maps_cap) {
        size_t cap = r->maps_cap ? r->maps_cap * 2 : 16;
        struct vol_map_slot *n = realloc(r->maps, cap * sizeof(*n));
        if (!n)
            return; /* not cached: only costs a reload */
        r->maps = n;
        r->maps_cap = cap;
    }
    snprintf(r->maps[r->nmaps].id, VOL_ID_MAX, "%s", id);
    r->maps[r->nmaps++].m = vol_map_ref(m);
}

int vol_region_map_get(struct vol_region *r, const char *id, struct vol_map **ret)
{
    if (!vol_id_valid(id))
        return -EINVAL;
    pthread_mutex_lock(&r->maps_lock);
    for (size_t i = 0; i < r->nmaps; i++) {
        if (!strcmp(r->maps[i].id, id)) {
            *ret = vol_map_ref(r->maps[i].m);
            pthread_mutex_unlock(&r->maps_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&r->maps_lock);
    char path[PATH_MAX];
    vol_map_path(r, id, path, sizeof(path));
    struct vol_map *m;
    int rc = vol_map_load(path, &m);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&r->maps_lock);
    for (size_t i = 0; i < r->nmaps; i++) {
        if (!strcmp(r->maps[i].id, id)) {
            vol_map_unref(m);
            m = vol_map_ref(r->maps[i].m);
            pthread_mutex_unlock(&r->maps_lock);
            *ret = m;
            return 0;
        }
    }
    maps_insert(r, id, m);
    pthread_mutex_unlock(&r->maps_lock);
    *ret = m;
    return 0;
}

void vol_region_map_put(struct vol_region *r, const char *id, struct vol_map *m)
{
    pthread_mutex_lock(&r->maps_lock);
    maps_insert(r, id, m);
    pthread_mutex_unlock(&r->maps_lock);
}

/* ---- the state file ---- */

struct state_rec {
    uint64_t size;
    bool has_key;
    uint8_t key_id[STORE_KEY_ID_LEN];
    uint64_t xts_from; /* with a key: layers from this seq on are encrypted */
    char base_id[VOL_ID_MAX];
    uint64_t next_seq;
    uint64_t *seqs;
    size_t nseqs;
    struct vol_pending *pending;
    size_t npending;
};

static void state_rec_free(struct state_rec *st)
{
    free(st->seqs);
    free(st->pending);
}

/* Writes the state to a fresh temporary file in `dir` and fsyncs it; its name into tmp. */
static int state_write_tmp(const char *dir, const struct state_rec *st, char *tmp, size_t tmplen)
{
    struct buf b;
    buf_init(&b, STATE_MAX);
    char kid[2 * STORE_KEY_ID_LEN + 1] = "-";
    if (st->has_key)
        hex_encode(st->key_id, STORE_KEY_ID_LEN, kid);
    int rc = buf_printf(&b, "amid-volume 1\nsize %" PRIu64 "\nkey %s\nbase %s\nnext %" PRIu64 "\n",
                        st->size, kid, st->base_id[0] ? st->base_id : "-", st->next_seq);
    if (rc == 0 && st->has_key)
        rc = buf_printf(&b, "xts %" PRIu64 "\n", st->xts_from);
    for (size_t i = 0; i < st->nseqs && rc == 0; i++)
        rc = buf_printf(&b, "layer %" PRIu64 "\n", st->seqs[i]);
    for (size_t i = 0; i < st->npending && rc == 0; i++)
        rc = buf_printf(&b, "pending %s %" PRIu64 " %" PRIu64 " %s\n", st->pending[i].id,
                        st->pending[i].upto, st->pending[i].nblocks,
                        st->pending[i].finished ? "finished" : "begun");
    if (rc == 0) {
        uint8_t sum[SHA256_LEN];
        char hex[2 * SHA256_LEN + 1];
        crypto_sha256(b.data, b.len, sum);
        hex_encode(sum, sizeof(sum), hex);
        rc = buf_printf(&b, "sum %s\n", hex);
    }
    char rnd[20];
    if (rc == 0)
        rc = rand_id(rnd, sizeof(rnd), "", 12);
    if (rc == 0 && snprintf(tmp, tmplen, "%s/state.tmp-%s", dir, rnd) >= (int)tmplen)
        rc = -ENAMETOOLONG;
    if (rc < 0) {
        buf_free(&b);
        return rc;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        buf_free(&b);
        return -errno;
    }
    rc = vol_pwrite_all(fd, b.data, b.len, 0);
    if (rc == 0 && fsync(fd) < 0)
        rc = -EIO;
    if (close(fd) < 0 && rc == 0)
        rc = -EIO;
    if (rc < 0)
        unlink(tmp);
    buf_free(&b);
    return rc;
}

/* Renames a written temporary state file into place and fsyncs the directory. */
static int state_install(const char *dir, const char *tmp)
{
    char path[PATH_MAX];
    int rc = 0;
    if (snprintf(path, sizeof(path), "%s/state", dir) >= (int)sizeof(path))
        rc = -ENAMETOOLONG;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    return vol_fsync_dir(dir, true);
}

static int state_write(const char *dir, const struct state_rec *st)
{
    char tmp[PATH_MAX];
    int rc = state_write_tmp(dir, st, tmp, sizeof(tmp));
    return rc < 0 ? rc : state_install(dir, tmp);
}

static int parse_u64(const char *s, uint64_t *ret)
{
    if (!*s || *s == '-' || *s == '+' || *s == ' ')
        return -EBADMSG;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EBADMSG;
    *ret = v;
    return 0;
}

/* Splits line `s` (modified) into up to `max` space-separated words; returns their number. */
static size_t split(char *s, char **w, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (n == max)
            return max + 1;
        w[n++] = t;
    }
    return n;
}

static int state_parse(char *text, size_t len, struct state_rec *st)
{
    /* The last line is the checksum of everything before it. */
    if (len < 2 || text[len - 1] != '\n')
        return -EBADMSG;
    text[len - 1] = '\0';
    char *last = strrchr(text, '\n');
    if (!last || strncmp(last + 1, "sum ", 4) != 0 || strlen(last + 5) != 2 * SHA256_LEN)
        return -EBADMSG;
    uint8_t want[SHA256_LEN], got[SHA256_LEN];
    if (hex_decode(last + 5, want, sizeof(want)) < 0)
        return -EBADMSG;
    crypto_sha256(text, (size_t)(last + 1 - text), got);
    if (!crypto_memeq(want, got, sizeof(want)))
        return -EBADMSG;
    *last = '\0';

    memset(st, 0, sizeof(*st));
    char *save = NULL;
    int line = 0;
    size_t cap_seqs = 0, cap_pending = 0;
    bool xts_line = false;
    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save), line++) {
        char *w[6];
        size_t n = split(l, w, 5);
        if (line == 0) {
            if (n != 2 || strcmp(w[0], "amid-volume") || strcmp(w[1], "1"))
                return -EBADMSG;
        } else if (line == 1) {
            if (n != 2 || strcmp(w[0], "size") || parse_u64(w[1], &st->size) < 0)
                return -EBADMSG;
        } else if (line == 2) {
            if (n != 2 || strcmp(w[0], "key"))
                return -EBADMSG;
            if (strcmp(w[1], "-") != 0) {
                if (strlen(w[1]) != 2 * STORE_KEY_ID_LEN ||
                    hex_decode(w[1], st->key_id, STORE_KEY_ID_LEN) < 0)
                    return -EBADMSG;
                st->has_key = true;
            }
        } else if (line == 3) {
            if (n != 2 || strcmp(w[0], "base"))
                return -EBADMSG;
            if (strcmp(w[1], "-") != 0) {
                if (!vol_id_valid(w[1]))
                    return -EBADMSG;
                snprintf(st->base_id, sizeof(st->base_id), "%s", w[1]);
            }
        } else if (line == 4) {
            if (n != 2 || strcmp(w[0], "next") || parse_u64(w[1], &st->next_seq) < 0)
                return -EBADMSG;
        } else if (n == 2 && !strcmp(w[0], "xts") && st->has_key && !xts_line && !st->nseqs) {
            if (parse_u64(w[1], &st->xts_from) < 0 || st->xts_from > st->next_seq)
                return -EBADMSG;
            xts_line = true;
        } else if (n == 2 && !strcmp(w[0], "layer") && st->npending == 0) {
            uint64_t seq;
            if (parse_u64(w[1], &seq) < 0 || seq >= st->next_seq ||
                (st->nseqs && seq <= st->seqs[st->nseqs - 1]))
                return -EBADMSG;
            if (st->nseqs == cap_seqs) {
                cap_seqs = cap_seqs ? cap_seqs * 2 : 8;
                uint64_t *s = realloc(st->seqs, cap_seqs * sizeof(*s));
                if (!s)
                    return -ENOMEM;
                st->seqs = s;
            }
            st->seqs[st->nseqs++] = seq;
        } else if (n == 5 && !strcmp(w[0], "pending")) {
            struct vol_pending p = { 0 };
            if (!vol_id_valid(w[1]) || parse_u64(w[2], &p.upto) < 0 ||
                parse_u64(w[3], &p.nblocks) < 0 ||
                (strcmp(w[4], "begun") != 0 && strcmp(w[4], "finished") != 0))
                return -EBADMSG;
            p.finished = !strcmp(w[4], "finished");
            snprintf(p.id, sizeof(p.id), "%s", w[1]);
            for (size_t i = 0; i < st->npending; i++)
                if (!strcmp(st->pending[i].id, p.id))
                    return -EBADMSG;
            if (st->npending == cap_pending) {
                cap_pending = cap_pending ? cap_pending * 2 : 4;
                struct vol_pending *np = realloc(st->pending, cap_pending * sizeof(*np));
                if (!np)
                    return -ENOMEM;
                st->pending = np;
            }
            st->pending[st->npending++] = p;
        } else {
            return -EBADMSG;
        }
    }
    /* Written before layers were encrypted: those it has stay clear, later ones are not. */
    if (st->has_key && !xts_line)
        st->xts_from = st->next_seq;
    if (line < 5 || st->nseqs == 0 || st->size % VOL_BLOCK_SIZE ||
        st->size / VOL_BLOCK_SIZE > VOL_MAX_BLOCKS)
        return -EBADMSG;
    /* Each pending snapshot covers a frozen layer (never the top), in begin order. */
    uint64_t prev = 0;
    for (size_t i = 0; i < st->npending; i++) {
        const struct vol_pending *p = &st->pending[i];
        bool found = false;
        for (size_t k = 0; k + 1 < st->nseqs; k++)
            found |= st->seqs[k] == p->upto;
        if (!found || p->upto < prev || p->nblocks > st->size / VOL_BLOCK_SIZE)
            return -EBADMSG;
        prev = p->upto;
    }
    return 0;
}

static int state_read(const char *dir, struct state_rec *st)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/state", dir) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) < 0 || sb.st_size > STATE_MAX) {
        close(fd);
        return -EBADMSG;
    }
    size_t len = (size_t)sb.st_size;
    char *text = malloc(len + 1);
    if (!text) {
        close(fd);
        return -ENOMEM;
    }
    int rc = vol_pread_full(fd, text, len, 0);
    close(fd);
    text[len] = '\0';
    if (rc == 0 && strlen(text) != len)
        rc = -EBADMSG;
    if (rc == 0)
        rc = state_parse(text, len, st);
    free(text);
    if (rc < 0) {
        state_rec_free(st);
        memset(st, 0, sizeof(*st));
    }
    return rc;
}

int vol_state_prepare(struct vol_shared *s, uint64_t add_seq, const struct vol_pending *add,
                      char *tmp, size_t tmplen)
{
    struct state_rec st = { 0 };
    st.size = s->size;
    st.has_key = s->has_key;
    memcpy(st.key_id, s->key_id, sizeof(st.key_id));
    st.xts_from = s->xts_from;
    snprintf(st.base_id, sizeof(st.base_id), "%s", s->base_id);
    st.next_seq = add_seq ? add_seq + 1 : s->next_seq;
    st.seqs = malloc((s->nlayers + 1) * sizeof(*st.seqs));
    st.pending = malloc((s->npending + 1) * sizeof(*st.pending));
    int rc = st.seqs && st.pending ? 0 : -ENOMEM;
    if (rc == 0) {
        for (size_t i = 0; i < s->nlayers; i++)
            st.seqs[st.nseqs++] = s->layers[i]->seq;
        if (s->npending)
            memcpy(st.pending, s->pending, s->npending * sizeof(*st.pending));
        st.npending = s->npending;
        if (add_seq)
            st.seqs[st.nseqs++] = add_seq;
        if (add)
            st.pending[st.npending++] = *add;
        rc = state_write_tmp(s->dir, &st, tmp, tmplen);
    }
    free(st.seqs);
    free(st.pending);
    return rc;
}

int vol_state_install(struct vol_shared *s, const char *tmp)
{
    return state_install(s->dir, tmp);
}

int vol_state_save(struct vol_shared *s)
{
    char tmp[PATH_MAX];
    int rc = vol_state_prepare(s, 0, NULL, tmp, sizeof(tmp));
    return rc < 0 ? rc : vol_state_install(s, tmp);
}

/* ---- create, open, close, delete ---- */

static int vol_dir(struct vol_region *r, const char *id, char *out, size_t outlen)
{
    if (snprintf(out, outlen, "%s/volumes/%s", r->dir, id) >= (int)outlen)
        return -ENAMETOOLONG;
    return 0;
}

int vol_create(struct vol_region *r, const struct vol_params *p)
{
    if (!p || !vol_id_valid(p->id) || p->size == 0 || p->size % VOL_BLOCK_SIZE ||
        p->size / VOL_BLOCK_SIZE > VOL_MAX_BLOCKS ||
        (p->base_snapshot && !vol_id_valid(p->base_snapshot)))
        return -EINVAL;
    char dir[PATH_MAX], tmp[PATH_MAX], rnd[20];
    int rc = vol_dir(r, p->id, dir, sizeof(dir));
    if (rc < 0)
        return rc;
    if (access(dir, F_OK) == 0)
        return -EEXIST;
    if (p->base_snapshot) {
        /* Only the header: creating from a 16 TiB snapshot costs what a 1 GiB one does. */
        char path[PATH_MAX];
        uint64_t nblocks;
        vol_map_path(r, p->base_snapshot, path, sizeof(path));
        rc = vol_map_peek(path, &nblocks);
        if (rc < 0)
            return rc;
        if (nblocks > p->size / VOL_BLOCK_SIZE)
            return -EINVAL;
    }
    rc = rand_id(rnd, sizeof(rnd), "", 12);
    if (rc < 0)
        return rc;
    if (snprintf(tmp, sizeof(tmp), "%s/volumes/.tmp-%s-%s", r->dir, p->id, rnd) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    if (mkdir(tmp, 0700) < 0)
        return -errno;
    struct vol_layer *l;
    rc = vol_layer_open(tmp, 1, 0, true, &l);
    if (rc == 0)
        vol_layer_unref(l);
    uint64_t seq = 1;
    struct state_rec st = { .size = p->size, .next_seq = 2, .seqs = &seq, .nseqs = 1 };
    if (p->key) {
        st.has_key = true;
        st.xts_from = 1;
        memcpy(st.key_id, p->key->key_id, sizeof(st.key_id));
    }
    if (p->base_snapshot)
        snprintf(st.base_id, sizeof(st.base_id), "%s", p->base_snapshot);
    if (rc == 0)
        rc = state_write(tmp, &st);
    /* The directory appears whole or not at all. */
    if (rc == 0 && renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_NOREPLACE) < 0)
        rc = errno == EEXIST || errno == ENOTEMPTY ? -EEXIST : -errno;
    if (rc == 0)
        rc = vol_fsync_dir(dir, false);
    if (rc < 0)
        remove_dir(tmp);
    return rc;
}

static void shared_free(struct vol_shared *s)
{
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    for (size_t i = 0; i < s->nlayers; i++)
        vol_layer_unref(s->layers[i]);
    free(s->layers);
    free(s->pending);
    vol_map_unref(s->base);
    crypto_wipe(s->xts_key, sizeof(s->xts_key));
    pthread_mutex_destroy(&s->admin);
    pthread_rwlock_destroy(&s->chain);
    for (size_t i = 0; i < VOL_STRIPES; i++)
        pthread_mutex_destroy(&s->stripes[i]);
    pthread_mutex_destroy(&s->partial_lock);
    free(s);
}

/* Removes layer files and temporary state files the state does not name. */
static void dir_cleanup(struct vol_shared *s)
{
    DIR *d = opendir(s->dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        bool drop = str_startswith(e->d_name, "state.tmp-");
        uint64_t seq;
        char ext[16];
        if (!drop && sscanf(e->d_name, "L%" SCNu64 ".%15s", &seq, ext) == 2 &&
            (!strcmp(ext, "data") || !strcmp(ext, "bitmap"))) {
            drop = true;
            for (size_t i = 0; i < s->nlayers; i++)
                drop &= s->layers[i]->seq != seq;
        }
        if (drop) {
            char p[PATH_MAX];
            if (snprintf(p, sizeof(p), "%s/%s", s->dir, e->d_name) < (int)sizeof(p))
                unlink(p);
        }
    }
    closedir(d);
}

/* The key of an encrypted volume's layers: from its data key and its id, so that volumes sharing
 * a data key (those made from one snapshot) never share ciphertext for equal units. */
static void layer_key(const struct store_key *key, const char *volume_id, uint8_t out[XTS_KEY_LEN])
{
    char m[64 + VOL_ID_MAX];
    for (int half = 0; half < 2; half++) {
        int n =
            snprintf(m, sizeof(m), "amid.volume-layers.aes-256-xts.v1 %d %s", half + 1, volume_id);
        crypto_hmac_sha256(key->data_key, sizeof(key->data_key), m, (size_t)n,
                           out + half * SHA256_LEN);
    }
}

/* A volume an older amid wrote with its layers in the clear: its next writes go to a new,
 * encrypted top layer (the clear ones keep what they hold until a snapshot takes it into
 * sealed chunks).  The layer exists before the state names it. */
static int encrypt_from_here(struct vol_shared *s)
{
    struct vol_layer *l, **ls = realloc(s->layers, (s->nlayers + 1) * sizeof(*ls));
    if (!ls)
        return -ENOMEM;
    s->layers = ls;
    int rc = vol_layer_open(s->dir, s->next_seq, s->nblocks, true, &l);
    if (rc < 0)
        return rc;
    char tmp[PATH_MAX];
    rc = vol_state_prepare(s, s->next_seq, NULL, tmp, sizeof(tmp));
    if (rc == 0)
        rc = vol_state_install(s, tmp);
    if (rc < 0) {
        l->unlink_on_free = true;
        vol_layer_unref(l);
        return rc;
    }
    vol_layer_set_key(l, s->xts_key);
    s->layers[s->nlayers++] = l;
    s->next_seq++;
    return 0;
}

bool vol_layer_encrypted(const struct vol_shared *s, uint64_t seq)
{
    return s->xts && seq >= s->xts_from;
}

/* Whether `key` is the volume's (NULL for a volume in the clear). */
static bool key_matches(const struct vol_shared *s, const struct store_key *key)
{
    return s->has_key == (key != NULL) &&
           (!key || memcmp(s->key_id, key->key_id, STORE_KEY_ID_LEN) == 0);
}

/* Loads volume `id`; its layers are readable when `key` is its key. */
static int shared_load(struct vol_region *r, const char *id, const struct store_key *key,
                       struct vol_shared **ret)
{
    struct vol_shared *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->r = r;
    s->lock_fd = -1;
    snprintf(s->id, sizeof(s->id), "%s", id);
    pthread_mutex_init(&s->admin, NULL);
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    /* A begin must not starve behind a steady stream of I/O. */
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->chain, &a);
    pthread_rwlockattr_destroy(&a);
    for (size_t i = 0; i < VOL_STRIPES; i++)
        pthread_mutex_init(&s->stripes[i], NULL);
    pthread_mutex_init(&s->partial_lock, NULL);
    for (size_t i = 0; i < VOL_PARTIAL_MAX; i++)
        s->partials[i].idx = UINT64_MAX;

    struct state_rec st = { 0 };
    int rc = vol_dir(r, id, s->dir, sizeof(s->dir));
    /* One process at a time: layers and state are not shared across processes. */
    if (rc == 0) {
        s->lock_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->lock_fd < 0)
            rc = errno == ENOENT ? -ENOENT : -errno;
        else if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0)
            rc = -EBUSY;
    }
    if (rc == 0)
        rc = state_read(s->dir, &st);
    if (rc < 0)
        goto fail;
    s->size = st.size;
    s->nblocks = st.size / VOL_BLOCK_SIZE;
    s->has_key = st.has_key;
    memcpy(s->key_id, st.key_id, sizeof(s->key_id));
    s->xts_from = st.xts_from;
    /* Without the volume's key everything but the data still loads (amid verify checks it);
     * vol_open refuses such a handle. */
    if (key && key_matches(s, key)) {
        layer_key(key, id, s->xts_key);
        s->xts = true;
    }
    snprintf(s->base_id, sizeof(s->base_id), "%s", st.base_id);
    s->next_seq = st.next_seq;
    s->pending = st.pending;
    s->npending = st.npending;
    st.pending = NULL;
    if (s->base_id[0]) {
        rc = vol_region_map_get(r, s->base_id, &s->base);
        if (rc == -ENOENT)
            rc = -EIO; /* the volume's data is gone */
        if (rc == 0 && vol_map_blocks(s->base) > s->nblocks)
            rc = -EBADMSG;
        if (rc < 0)
            goto fail;
    }
    s->layers = calloc(st.nseqs, sizeof(*s->layers));
    if (!s->layers) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < st.nseqs; i++) {
        rc = vol_layer_open(s->dir, st.seqs[i], s->nblocks, false, &s->layers[i]);
        if (rc < 0)
            goto fail;
        if (vol_layer_encrypted(s, st.seqs[i]))
            vol_layer_set_key(s->layers[i], s->xts_key);
        s->nlayers++;
    }
    state_rec_free(&st);
    dir_cleanup(s);
    if (s->xts && !vol_layer_encrypted(s, s->layers[s->nlayers - 1]->seq)) {
        rc = encrypt_from_here(s);
        if (rc < 0)
            goto fail;
    }
    /* Finished snapshots whose older ones were resolved before a crash; on failure they wait
     * (their layers stay, nothing is lost).  No other thread can see `s` yet. */
    vol_snapshot_settle(s);
    *ret = s;
    return 0;
fail:
    state_rec_free(&st);
    shared_free(s);
    return rc;
}

const struct store_key *vol_key(const struct vol *v)
{
    return v->has_key ? &v->key : NULL;
}

static const struct blockdev_ops vol_bd_ops;

int vol_open(struct vol_region *r, const char *id, const struct store_key *key, struct vol **ret)
{
    if (!vol_id_valid(id))
        return -EINVAL;
    struct vol *v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    if (key) {
        v->has_key = true;
        v->key = *key;
    }
    pthread_mutex_lock(&r->lock);
    struct vol_shared *s = r->vols;
    while (s && strcmp(s->id, id) != 0)
        s = s->next;
    int rc = 0;
    bool fresh = !s;
    if (fresh)
        rc = shared_load(r, id, key, &s);
    if (rc == 0 && !key_matches(s, key))
        rc = -EACCES;
    if (rc < 0) {
        if (fresh && s)
            shared_free(s);
        pthread_mutex_unlock(&r->lock);
        crypto_wipe(&v->key, sizeof(v->key));
        free(v);
        return rc;
    }
    if (fresh) {
        s->next = r->vols;
        r->vols = s;
    }
    s->handles++;
    v->s = s;
    v->bd.ops = &vol_bd_ops;
    v->bd.size = s->size;
    v->bd.block_size = VOL_BLOCK_SIZE;
    v->next_handle = s->handle_list;
    s->handle_list = v;
    pthread_mutex_unlock(&r->lock);
    *ret = v;
    return 0;
}

void vol_close(struct vol *v)
{
    if (!v)
        return;
    struct vol_shared *s = v->s;
    struct vol_region *r = s->r;
    bool last;
    /* Best effort, like the flush below: partial blocks are kept only in memory. */
    pthread_rwlock_rdlock(&s->chain);
    vol_partials_complete(v);
    pthread_rwlock_unlock(&s->chain);
    pthread_mutex_lock(&r->lock);
    for (struct vol **pp = &s->handle_list; *pp; pp = &(*pp)->next_handle) {
        if (*pp == v) {
            *pp = v->next_handle;
            break;
        }
    }
    last = --s->handles == 0;
    if (last) {
        /* Best effort: what a caller did not flush may be lost anyway. */
        for (size_t i = 0; i < s->nlayers; i++)
            vol_layer_flush(s->layers[i]);
        for (struct vol_shared **pp = &r->vols; *pp; pp = &(*pp)->next) {
            if (*pp == s) {
                *pp = s->next;
                break;
            }
        }
    }
    pthread_mutex_unlock(&r->lock);
    if (last)
        shared_free(s);
    crypto_wipe(&v->key, sizeof(v->key));
    free(v);
}

int vol_delete(struct vol_region *r, const char *id)
{
    if (!vol_id_valid(id))
        return -EINVAL;
    char dir[PATH_MAX], del[PATH_MAX], rnd[20];
    int rc = vol_dir(r, id, dir, sizeof(dir));
    if (rc == 0)
        rc = rand_id(rnd, sizeof(rnd), "", 12);
    if (rc == 0 &&
        snprintf(del, sizeof(del), "%s/volumes/.del-%s-%s", r->dir, id, rnd) >= (int)sizeof(del))
        rc = -ENAMETOOLONG;
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&r->lock);
    for (struct vol_shared *s = r->vols; s; s = s->next)
        if (!strcmp(s->id, id))
            rc = -EBUSY;
    /* Nor may another process have it open. */
    int lfd = rc == 0 ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) < 0)
        rc = -EBUSY;
    /* Renamed away first, so a crash never leaves half a volume under its name. */
    if (rc == 0 && rename(dir, del) < 0)
        rc = -errno;
    if (rc == 0)
        rc = vol_fsync_dir(dir, false);
    pthread_mutex_unlock(&r->lock);
    if (lfd >= 0)
        close(lfd);
    if (rc == 0)
        remove_dir(del);
    return rc;
}

uint64_t vol_size(const struct vol *v)
{
    struct vol_shared *s = v->s;
    pthread_rwlock_rdlock(&s->chain);
    uint64_t size = s->size;
    pthread_rwlock_unlock(&s->chain);
    return size;
}

int vol_grow(struct vol *v, uint64_t size)
{
    struct vol_shared *s = v->s;
    if (size % VOL_BLOCK_SIZE || size / VOL_BLOCK_SIZE > VOL_MAX_BLOCKS)
        return -EINVAL;
    pthread_mutex_lock(&s->admin);
    pthread_rwlock_wrlock(&s->chain);
    int rc = 0;
    if (size < s->size)
        rc = -EINVAL;
    else if (size > s->size) {
        uint64_t old = s->size;
        rc = vol_layer_grow(s->layers[s->nlayers - 1], size / VOL_BLOCK_SIZE);
        if (rc == 0) {
            s->size = size;
            s->nblocks = size / VOL_BLOCK_SIZE;
            /* Under the write lock: no write past the old end is acknowledged before the state
             * that makes it reachable is durable. */
            rc = vol_state_save(s);
            if (rc < 0) {
                s->size = old;
                s->nblocks = old / VOL_BLOCK_SIZE;
            }
        }
        if (rc == 0) {
            pthread_mutex_lock(&s->r->lock);
            for (struct vol *h = s->handle_list; h; h = h->next_handle)
                h->bd.size = size;
            pthread_mutex_unlock(&s->r->lock);
        }
    }
    pthread_rwlock_unlock(&s->chain);
    pthread_mutex_unlock(&s->admin);
    return rc;
}

struct blockdev *vol_blockdev(struct vol *v)
{
    return &v->bd;
}

uint64_t vol_changed_blocks(struct vol *v)
{
    struct vol_shared *s = v->s;
    pthread_rwlock_rdlock(&s->chain);
    uint64_t n = atomic_load(&s->layers[s->nlayers - 1]->count);
    pthread_rwlock_unlock(&s->chain);
    return n;
}

/* ---- I/O ---- */

enum { SRC_HOLE, SRC_LZERO, SRC_LAYER, SRC_BASE, SRC_PARTIAL };

struct vol_src {
    int kind;
    struct vol_layer *l;
    struct chunk_id id;
};

/* Where block `idx` reads from, looking at layers[0..n) newest first, then the base map. */
static void resolve(struct vol_shared *s, size_t n, uint64_t idx, struct vol_src *src)
{
    for (size_t i = n; i-- > 0;) {
        unsigned st = vol_layer_get(s->layers[i], idx);
        if (st == VOL_ST_PRESENT || st == VOL_ST_PARTIAL) {
            src->kind = st == VOL_ST_PRESENT ? SRC_LAYER : SRC_PARTIAL;
            src->l = s->layers[i];
            return;
        }
        if (st == VOL_ST_ZERO) {
            src->kind = SRC_LZERO;
            return;
        }
    }
    if (s->base && idx < vol_map_blocks(s->base) && vol_map_get(s->base, idx, &src->id))
        src->kind = SRC_BASE;
    else
        src->kind = SRC_HOLE;
}

static int partial_read(struct vol *v, uint64_t idx, uint8_t *dst, size_t off, size_t len);

static int src_read(struct vol *v, const struct vol_src *src, uint64_t idx, void *dst, size_t off,
                    size_t len)
{
    switch (src->kind) {
    case SRC_LAYER:
        return vol_layer_read(src->l, dst, len, idx * VOL_BLOCK_SIZE + off);
    case SRC_BASE:
        return vol_cache_read(v->s->r->cache, &src->id, vol_key(v), dst, off, len);
    case SRC_PARTIAL:
        return partial_read(v, idx, dst, off, len);
    default:
        memset(dst, 0, len);
        return 0;
    }
}

/* ---- partial blocks ----
 *
 * A write of part of a block that the top layer lacks while older data lies below would have to
 * copy the block up first: read (for a base block, decode) all 512 KiB below and write them with
 * the new bytes.  A writer filling blocks piece by piece — a guest's 1 MiB requests, misaligned
 * to blocks — would pay that once per block for bytes it then overwrites.  So a sector-aligned
 * piece goes to the data file alone and the block becomes partial (VOL_ST_PARTIAL, in memory),
 * with the sectors it has in a vol_partial entry; once pieces cover it, it is present without
 * any read.  A flush completes the partial blocks first (copies up what they lack), and snapshot
 * begin and close do too, so neither a durable state nor a frozen layer is ever partial; the
 * bitmap stores one as absent, so a crash before its flush loses the piece as it would lose any
 * unflushed write.  A read of a partial block merges below and file under the block's stripe.
 * Unaligned pieces, and pieces once VOL_PARTIAL_MAX blocks are partial, are copied up at once.
 */

/* The entry of partial block `idx`, or with `create` a new one (NULL when all are taken).
 * Under the block's stripe. */
static struct vol_partial *partial_get(struct vol_shared *s, uint64_t idx, bool create)
{
    struct vol_partial *p = NULL, *free_slot = NULL;
    pthread_mutex_lock(&s->partial_lock);
    for (size_t i = 0; i < VOL_PARTIAL_MAX && !p; i++) {
        if (s->partials[i].idx == idx)
            p = &s->partials[i];
        else if (!free_slot && s->partials[i].idx == UINT64_MAX)
            free_slot = &s->partials[i];
    }
    if (!p && create && free_slot) {
        p = free_slot;
        p->idx = idx;
        memset(p->cover, 0, sizeof(p->cover));
        s->npartial++;
    }
    pthread_mutex_unlock(&s->partial_lock);
    return p;
}

static void partial_free(struct vol_shared *s, struct vol_partial *p)
{
    pthread_mutex_lock(&s->partial_lock);
    p->idx = UINT64_MAX;
    s->npartial--;
    pthread_mutex_unlock(&s->partial_lock);
}

static bool cover_has(const struct vol_partial *p, size_t sect)
{
    return (p->cover[sect / 64] >> (sect % 64)) & 1u;
}

/* The first run [*a, *b) of sectors at or after `from` whose coverage is `want`; false if none. */
static bool cover_run(const struct vol_partial *p, size_t from, bool want, size_t *a, size_t *b)
{
    const size_t nsect = VOL_BLOCK_SIZE / VOL_SECTOR;
    while (from < nsect && cover_has(p, from) != want)
        from++;
    if (from == nsect)
        return false;
    *a = from;
    while (from < nsect && cover_has(p, from) == want)
        from++;
    *b = from;
    return true;
}

/* Writes sector-aligned [boff, boff+n) of partial block `idx` to the data file and notes it;
 * the block becomes present when covered.  Under the stripe. */
static int partial_write(struct vol_shared *s, struct vol_partial *p, const uint8_t *data,
                         size_t boff, size_t n)
{
    struct vol_layer *top = s->layers[s->nlayers - 1];
    int rc = vol_layer_write(top, data, n, p->idx * VOL_BLOCK_SIZE + boff);
    if (rc < 0)
        return rc;
    for (size_t k = boff / VOL_SECTOR; k < (boff + n) / VOL_SECTOR; k++)
        p->cover[k / 64] |= 1ull << (k % 64);
    size_t a, b;
    if (cover_run(p, 0, false, &a, &b))
        return vol_layer_set(top, p->idx, VOL_ST_PARTIAL);
    rc = vol_layer_set(top, p->idx, VOL_ST_PRESENT);
    if (rc == 0)
        partial_free(s, p);
    return rc;
}

/* Copies up the sectors partial block p->idx lacks: it becomes present.  Under the stripe. */
static int partial_complete(struct vol *v, struct vol_partial *p)
{
    struct vol_shared *s = v->s;
    struct vol_layer *top = s->layers[s->nlayers - 1];
    uint64_t idx = p->idx;
    struct vol_src below;
    resolve(s, s->nlayers - 1, idx, &below);
    uint8_t *blk = malloc(VOL_BLOCK_SIZE);
    int rc = blk ? src_read(v, &below, idx, blk, 0, VOL_BLOCK_SIZE) : -ENOMEM;
    size_t a, b;
    for (size_t from = 0; rc == 0 && cover_run(p, from, false, &a, &b); from = b)
        rc = vol_layer_write(top, blk + a * VOL_SECTOR, (b - a) * VOL_SECTOR,
                             idx * VOL_BLOCK_SIZE + a * VOL_SECTOR);
    free(blk);
    if (rc == 0)
        rc = vol_layer_set(top, idx, VOL_ST_PRESENT);
    if (rc == 0)
        partial_free(s, p);
    return rc;
}

/* Reads [off, off+len) of block `idx`, which was partial when resolved: below, with the sectors
 * the data file holds on top. */
static int partial_read(struct vol *v, uint64_t idx, uint8_t *dst, size_t off, size_t len)
{
    struct vol_shared *s = v->s;
    struct vol_layer *top = s->layers[s->nlayers - 1];
    pthread_mutex_t *m = &s->stripes[idx % VOL_STRIPES];
    pthread_mutex_lock(m);
    struct vol_src src;
    resolve(s, s->nlayers, idx, &src);
    struct vol_partial *p = src.kind == SRC_PARTIAL ? partial_get(s, idx, false) : NULL;
    int rc = 0;
    if (src.kind != SRC_PARTIAL) {
        rc = src_read(v, &src, idx, dst, off, len); /* completed meanwhile */
    } else if (!p) {
        rc = -EIO; /* cannot be: a partial block has its entry */
    } else {
        size_t first = off / VOL_SECTOR, end = (off + len + VOL_SECTOR - 1) / VOL_SECTOR, a, b;
        if (cover_run(p, first, false, &a, &b) && a < end) {
            struct vol_src below;
            resolve(s, s->nlayers - 1, idx, &below);
            rc = src_read(v, &below, idx, dst, off, len);
        }
        for (size_t from = first; rc == 0 && cover_run(p, from, true, &a, &b) && a < end;
             from = b) {
            size_t lo = a * VOL_SECTOR > off ? a * VOL_SECTOR : off;
            size_t hi = b * VOL_SECTOR < off + len ? b * VOL_SECTOR : off + len;
            rc = vol_layer_read(top, dst + (lo - off), hi - lo, idx * VOL_BLOCK_SIZE + lo);
        }
    }
    pthread_mutex_unlock(m);
    return rc;
}

int vol_partials_complete(struct vol *v)
{
    struct vol_shared *s = v->s;
    uint64_t idx[VOL_PARTIAL_MAX];
    size_t n = 0;
    pthread_mutex_lock(&s->partial_lock);
    for (size_t i = 0; i < VOL_PARTIAL_MAX && s->npartial; i++)
        if (s->partials[i].idx != UINT64_MAX)
            idx[n++] = s->partials[i].idx;
    pthread_mutex_unlock(&s->partial_lock);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_t *m = &s->stripes[idx[i] % VOL_STRIPES];
        pthread_mutex_lock(m);
        /* Gone if a writer covered it meanwhile. */
        struct vol_partial *p = partial_get(s, idx[i], false);
        int r = p ? partial_complete(v, p) : 0;
        pthread_mutex_unlock(m);
        if (r < 0 && rc == 0)
            rc = r;
    }
    return rc;
}

/* ---- reads and writes ---- */

/* Queues the base chunks of blocks [from, to) for decoding in the background.  Under the chain
 * lock (read). */
static void prefetch_base(struct vol *v, uint64_t from, uint64_t to)
{
    struct vol_shared *s = v->s;
    for (uint64_t idx = from; idx < to && idx < s->nblocks; idx++) {
        struct vol_src src;
        resolve(s, s->nlayers, idx, &src);
        if (src.kind == SRC_BASE && vol_cache_prefetch(s->r->cache, &src.id, vol_key(v)) == -EAGAIN)
            break;
    }
}

static int vol_bd_pread(struct blockdev *bd, void *buf, size_t len, uint64_t off)
{
    struct vol *v = (struct vol *)bd;
    struct vol_shared *s = v->s;
    uint8_t *p = buf;
    int rc = 0;
    pthread_rwlock_rdlock(&s->chain);
    if (len > 0) {
        /* The request's later blocks decode on other cores while this thread does the first;
         * a sequential reader's next blocks while it is away. */
        uint64_t first = off / VOL_BLOCK_SIZE, last = (off + len - 1) / VOL_BLOCK_SIZE;
        if (s->base)
            prefetch_base(v, first + 1, last + 1 + vol_readahead(&s->ra_next, first, last));
    }
    while (len > 0 && rc == 0) {
        uint64_t idx = off / VOL_BLOCK_SIZE;
        size_t boff = (size_t)(off % VOL_BLOCK_SIZE);
        size_t n = VOL_BLOCK_SIZE - boff < len ? VOL_BLOCK_SIZE - boff : len;
        struct vol_src src;
        resolve(s, s->nlayers, idx, &src);
        rc = src_read(v, &src, idx, p, boff, n);
        p += n;
        off += n;
        len -= n;
    }
    pthread_rwlock_unlock(&s->chain);
    return rc;
}

/* Makes block `idx` of the top layer read as zero.  Under the block's stripe. */
static int zero_block(struct vol_shared *s, uint64_t idx)
{
    struct vol_layer *top = s->layers[s->nlayers - 1];
    unsigned st = vol_layer_get(top, idx);
    if (st == VOL_ST_ZERO)
        return 0;
    struct vol_src below;
    resolve(s, s->nlayers - 1, idx, &below);
    if (st == VOL_ST_ABSENT && (below.kind == SRC_HOLE || below.kind == SRC_LZERO))
        return 0; /* already reads as zero: not a change */
    int rc = vol_layer_punch(top, idx);
    if (rc == 0)
        rc = vol_layer_set(top, idx, VOL_ST_ZERO);
    return rc;
}

/* Writes [boff, boff+n) of block `idx` (less than a whole block); where the top layer lacks the
 * block and older data lies below, as a piece of a partial block or by copying the block up
 * first.  `data` NULL writes zeroes.  Under the stripe. */
static int write_partial(struct vol *v, uint64_t idx, const uint8_t *data, size_t boff, size_t n)
{
    struct vol_shared *s = v->s;
    struct vol_layer *top = s->layers[s->nlayers - 1];
    unsigned st = vol_layer_get(top, idx);
    uint64_t base_off = idx * VOL_BLOCK_SIZE;
    bool aligned = boff % VOL_SECTOR == 0 && n % VOL_SECTOR == 0;
    uint8_t *zeros = NULL;
    int rc = 0;
    if (!data) {
        struct vol_src below;
        resolve(s, s->nlayers - 1, idx, &below);
        if (st == VOL_ST_ZERO ||
            (st == VOL_ST_ABSENT && (below.kind == SRC_HOLE || below.kind == SRC_LZERO)))
            return 0;
        zeros = calloc(1, n);
        if (!zeros)
            return -ENOMEM;
        data = zeros;
    }
    if (st == VOL_ST_PRESENT) {
        rc = vol_layer_write(top, data, n, base_off + boff);
    } else if (st == VOL_ST_ZERO) {
        /* The rest of the block is a hole: it reads as zero. */
        rc = vol_layer_write(top, data, n, base_off + boff);
        if (rc == 0)
            rc = vol_layer_set(top, idx, VOL_ST_PRESENT);
    } else if (st == VOL_ST_PARTIAL) {
        struct vol_partial *p = partial_get(s, idx, false);
        if (!p)
            rc = -EIO; /* cannot be: a partial block has its entry */
        else if (aligned)
            rc = partial_write(s, p, data, boff, n);
        else if ((rc = partial_complete(v, p)) == 0)
            rc = vol_layer_write(top, data, n, base_off + boff);
    } else {
        struct vol_src below;
        struct vol_partial *p;
        resolve(s, s->nlayers - 1, idx, &below);
        if (below.kind == SRC_HOLE || below.kind == SRC_LZERO) {
            /* Punch first: an absent block's range may hold an unflushed write lost in a
             * crash, which must not reappear around this one — unless the range lay past the
             * file's end at open (a new layer's blocks: then the rest reads as zero anyway). */
            if (!vol_layer_fresh(top, idx))
                rc = vol_layer_punch(top, idx);
            if (rc == 0)
                rc = vol_layer_write(top, data, n, base_off + boff);
            if (rc == 0)
                rc = vol_layer_set(top, idx, VOL_ST_PRESENT);
        } else if (aligned && (p = partial_get(s, idx, true))) {
            rc = partial_write(s, p, data, boff, n);
            if (rc < 0 && vol_layer_get(top, idx) == VOL_ST_ABSENT)
                partial_free(s, p);
        } else {
            uint8_t *blk = malloc(VOL_BLOCK_SIZE);
            rc = blk ? src_read(v, &below, idx, blk, 0, VOL_BLOCK_SIZE) : -ENOMEM;
            if (rc == 0) {
                memcpy(blk + boff, data, n);
                rc = vol_layer_write(top, blk, VOL_BLOCK_SIZE, base_off);
            }
            free(blk);
            if (rc == 0)
                rc = vol_layer_set(top, idx, VOL_ST_PRESENT);
        }
    }
    free(zeros);
    return rc;
}

static int vol_bd_flush(struct blockdev *bd)
{
    struct vol *v = (struct vol *)bd;
    struct vol_shared *s = v->s;
    pthread_rwlock_rdlock(&s->chain);
    /* Partial blocks acknowledged before this flush become whole before their states are
     * staged (a partial state is staged as absent). */
    int rc = vol_partials_complete(v);
    size_t n = s->nlayers;
    struct vol_layer **ls = malloc(n * sizeof(*ls));
    if (!ls) {
        pthread_rwlock_unlock(&s->chain);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        ls[i] = vol_layer_ref(s->layers[i]);
    pthread_rwlock_unlock(&s->chain);
    /* Outside the chain lock: an fdatasync must not hold up a snapshot's begin. */
    for (size_t i = n; i-- > 0;) {
        int r = vol_layer_flush(ls[i]);
        if (r < 0 && rc == 0)
            rc = r;
        vol_layer_unref(ls[i]);
    }
    free(ls);
    return rc;
}

/* Writes `data` (NULL: zeroes) over [off, off+len). */
static int vol_write(struct vol *v, const uint8_t *data, size_t len, uint64_t off, unsigned flags)
{
    struct vol_shared *s = v->s;
    int rc = 0;
    pthread_rwlock_rdlock(&s->chain);
    struct vol_layer *top = s->layers[s->nlayers - 1];
    rc = atomic_load(&top->err);
    while (len > 0 && rc == 0) {
        uint64_t idx = off / VOL_BLOCK_SIZE;
        size_t boff = (size_t)(off % VOL_BLOCK_SIZE);
        size_t n = VOL_BLOCK_SIZE - boff < len ? VOL_BLOCK_SIZE - boff : len;
        pthread_mutex_t *m = &s->stripes[idx % VOL_STRIPES];
        pthread_mutex_lock(m);
        if (n == VOL_BLOCK_SIZE) {
            /* The whole block: a partial block's entry goes with the state it leaves. */
            struct vol_partial *p =
                vol_layer_get(top, idx) == VOL_ST_PARTIAL ? partial_get(s, idx, false) : NULL;
            if (!data || store_is_zero(data, n)) {
                rc = zero_block(s, idx);
            } else {
                rc = vol_layer_write(top, data, n, idx * VOL_BLOCK_SIZE);
                if (rc == 0 && vol_layer_get(top, idx) != VOL_ST_PRESENT)
                    rc = vol_layer_set(top, idx, VOL_ST_PRESENT);
            }
            if (rc == 0 && p)
                partial_free(s, p);
        } else {
            rc = write_partial(v, idx, data, boff, n);
        }
        pthread_mutex_unlock(m);
        if (data)
            data += n;
        off += n;
        len -= n;
    }
    pthread_rwlock_unlock(&s->chain);
    if (rc == 0 && (flags & BLOCKDEV_FUA))
        rc = vol_bd_flush(&v->bd);
    return rc;
}

static int vol_bd_pwrite(struct blockdev *bd, const void *buf, size_t len, uint64_t off,
                         unsigned flags)
{
    return vol_write((struct vol *)bd, buf, len, off, flags);
}

static int vol_bd_trim(struct blockdev *bd, uint64_t len, uint64_t off)
{
    return vol_write((struct vol *)bd, NULL, (size_t)len, off, 0);
}

static int vol_bd_write_zeroes(struct blockdev *bd, uint64_t len, uint64_t off, unsigned flags)
{
    return vol_write((struct vol *)bd, NULL, (size_t)len, off, flags);
}

static int vol_bd_block_status(struct blockdev *bd, uint64_t len, uint64_t off,
                               struct blockdev_extent *ret, size_t max, size_t *ret_n)
{
    struct vol_shared *s = ((struct vol *)bd)->s;
    if (max == 0 || len == 0)
        return -EINVAL;
    pthread_rwlock_rdlock(&s->chain);
    uint64_t end = off + len, pos = off;
    uint64_t end_idx = (end + VOL_BLOCK_SIZE - 1) / VOL_BLOCK_SIZE;
    size_t n = 0, scanned = 0;
    while (pos < end && scanned < STATUS_SCAN_MAX) {
        uint64_t idx = pos / VOL_BLOCK_SIZE, next = idx + 1;
        struct vol_src src;
        resolve(s, s->nlayers, idx, &src);
        uint32_t type = 0;
        if (src.kind == SRC_LZERO) {
            type = BLOCKDEV_EXTENT_ZERO;
        } else if (src.kind == SRC_HOLE) {
            type = BLOCKDEV_EXTENT_HOLE | BLOCKDEV_EXTENT_ZERO;
            /* Jump over the whole run of blocks nothing holds. */
            next = end_idx;
            for (size_t i = 0; i < s->nlayers; i++) {
                uint64_t k = vol_layer_next(s->layers[i], idx + 1, next);
                next = k < next ? k : next;
            }
            if (s->base) {
                uint64_t k = vol_map_next_allocated(s->base, idx + 1);
                next = k < next ? k : next;
            }
            if (next <= idx)
                next = idx + 1;
        }
        uint64_t run_end = next * VOL_BLOCK_SIZE < end ? next * VOL_BLOCK_SIZE : end;
        if (n > 0 && ret[n - 1].type == type) {
            ret[n - 1].length += run_end - pos;
        } else {
            if (n == max)
                break;
            ret[n].type = type;
            ret[n].length = run_end - pos;
            n++;
        }
        pos = run_end;
        scanned++;
    }
    pthread_rwlock_unlock(&s->chain);
    *ret_n = n;
    return 0;
}

static void vol_bd_close(struct blockdev *bd)
{
    /* Borrowed: the volume's owner closes it with vol_close. */
}

static const struct blockdev_ops vol_bd_ops = {
    .pread = vol_bd_pread,
    .pwrite = vol_bd_pwrite,
    .flush = vol_bd_flush,
    .trim = vol_bd_trim,
    .write_zeroes = vol_bd_write_zeroes,
    .block_status = vol_bd_block_status,
    .close = vol_bd_close,
};
