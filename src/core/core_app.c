/*
 * core_app.c — the data directory: creating it (`amid init`), opening it, the pool of database
 * connections, the deployment clock and the region list.
 *
 * Layout of a data directory:
 *   DIR/master.key       32 random bytes, mode 0600: wraps every stored secret
 *   DIR/amid.db          SQLite database (+ -wal, -shm)
 *   DIR/regions/NAME/    one chunk store per region (its path is configurable per region)
 *   DIR/run/             sockets of a running daemon
 */
#include "core/core_int.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

const char *core_datadir(const struct app *app)
{
    return app->datadir;
}

int core_dry_run(struct err *e)
{
    return err_set(e, -EALREADY, "DryRunOperation",
                   "Request would have succeeded, but DryRun flag is set.");
}

void core_creds_wipe(struct core_creds *c)
{
    crypto_wipe(c->secret, sizeof(c->secret));
}

/* AWS's Region names: lower-case words and a number, like "us-east-1" or "ap-southeast-2". */
static bool region_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 4 || n > 25 || s[0] == '-' || s[n - 1] == '-')
        return false;
    int dashes = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '-') {
            if (s[i + 1] == '-')
                return false;
            dashes++;
        } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
            return false;
        }
    }
    return dashes >= 2 && s[n - 1] >= '0' && s[n - 1] <= '9';
}

/* AWS's zone id prefix: "us-east-1" -> "use1", "ap-southeast-2" -> "apse2". */
static void zone_prefix(const char *region, char *out, size_t outlen)
{
    static const struct {
        const char *word, *abbr;
    } dirs[] = { { "northeast", "ne" }, { "northwest", "nw" }, { "southeast", "se" },
                 { "southwest", "sw" }, { "north", "n" },      { "south", "s" },
                 { "east", "e" },       { "west", "w" },       { "central", "c" } };
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "%s", region);
    char *save = NULL, *parts[8];
    int np = 0;
    for (char *t = strtok_r(tmp, "-", &save); t && np < 8; t = strtok_r(NULL, "-", &save))
        parts[np++] = t;
    struct buf b;
    buf_init(&b, outlen - 1);
    for (int i = 0; i < np; i++) {
        const char *abbr = NULL;
        char single[2] = { parts[i][0], '\0' };
        if (i > 0 && i < np - 1) {
            for (size_t k = 0; k < ARRAY_SIZE(dirs) && !abbr; k++)
                if (strcmp(parts[i], dirs[k].word) == 0)
                    abbr = dirs[k].abbr;
            if (!abbr)
                abbr = single;
        }
        buf_puts(&b, abbr ? abbr : parts[i]);
    }
    snprintf(out, outlen, "%s", b.data ? b.data : region);
    buf_free(&b);
}

struct init_ctx {
    const char *dir;
    char regions[CORE_MAX_REGIONS][32];
    char stores[CORE_MAX_REGIONS][1024]; /* an absolute directory, or "" for DIR/regions/NAME */
    size_t nregions;
    const char *listen;
    struct core_creds *creds;
    struct err *e;
};

static int init_tx(struct app *app, struct db *db, void *vctx)
{
    struct init_ctx *c = vctx;
    int rc;
    for (size_t i = 0; i < c->nregions; i++) {
        struct db_region r;
        snprintf(r.name, sizeof(r.name), "%s", c->regions[i]);
        if (c->stores[i][0])
            snprintf(r.store_path, sizeof(r.store_path), "%s", c->stores[i]);
        else
            snprintf(r.store_path, sizeof(r.store_path), "regions/%s", c->regions[i]);
        rc = db_region_insert(db, &r);
        if (rc < 0)
            return err_set(c->e, rc, "InternalError", "cannot record region %s", r.name);
        char prefix[32];
        zone_prefix(r.name, prefix, sizeof(prefix));
        for (int z = 0; z < 3; z++) {
            struct db_zone zone;
            snprintf(zone.name, sizeof(zone.name), "%s%c", r.name, 'a' + z);
            snprintf(zone.zone_id, sizeof(zone.zone_id), "%s-az%d", prefix, z + 1);
            snprintf(zone.region, sizeof(zone.region), "%s", r.name);
            rc = db_zone_insert(db, &zone);
            if (rc < 0)
                return err_set(c->e, rc, "InternalError", "cannot record zone %s", zone.name);
        }
    }
    char endpoint[128];
    snprintf(endpoint, sizeof(endpoint), "http://%s", c->listen);
    rc = db_setting_set(db, "endpoint", endpoint);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot record the endpoint");
    return core_account_insert_tx(app, db, "default", c->creds, c->e);
}

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, mode) < 0 && errno != EEXIST)
                return -errno;
            *p = '/';
        }
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static bool dir_is_empty_or_absent(const char *dir)
{
    char probe[PATH_MAX];
    snprintf(probe, sizeof(probe), "%s/amid.db", dir);
    if (access(probe, F_OK) == 0)
        return false;
    snprintf(probe, sizeof(probe), "%s/master.key", dir);
    return access(probe, F_OK) != 0;
}

/* Whether a region's store directory is absent or empty (never another store's). */
static bool store_dir_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT;
    struct dirent *de;
    bool empty = true;
    while (empty && (de = readdir(d)))
        empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
    closedir(d);
    return empty;
}

int core_datadir_init(const char *dir, const char *regions_csv, const char *listen,
                      struct core_creds *ret, struct err *e)
{
    static struct init_ctx c; /* large (a path per region); init runs once per process */
    memset(&c, 0, sizeof(c));
    c.dir = dir;
    c.listen = listen;
    c.creds = ret;
    c.e = e;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", regions_csv);
    char *save = NULL;
    for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        /* NAME or NAME=/absolute/directory: the region's chunk store elsewhere (another disk). */
        char *store = strchr(t, '=');
        if (store) {
            *store++ = '\0';
            if (store[0] != '/' || strlen(store) >= sizeof(c.stores[0]))
                return err_set(e, -EINVAL, "InvalidParameterValue",
                               "the store of region %s must be an absolute path", t);
            if (!store_dir_empty(store))
                return err_set(e, -EEXIST, "InvalidParameterValue",
                               "the store directory %s is not empty", store);
        }
        if (!region_name_valid(t))
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "invalid region name '%s' (expected a name like us-east-1)", t);
        for (size_t i = 0; i < c.nregions; i++)
            if (strcmp(c.regions[i], t) == 0)
                return err_set(e, -EINVAL, "InvalidParameterValue", "region %s listed twice", t);
        if (c.nregions == CORE_MAX_REGIONS)
            return err_set(e, -EINVAL, "InvalidParameterValue", "at most %d regions",
                           CORE_MAX_REGIONS);
        snprintf(c.stores[c.nregions], sizeof(c.stores[0]), "%s", store ? store : "");
        snprintf(c.regions[c.nregions++], 32, "%s", t);
    }
    if (c.nregions == 0)
        return err_set(e, -EINVAL, "InvalidParameterValue", "no regions given");
    if (!dir_is_empty_or_absent(dir))
        return err_set(e, -EEXIST, "InvalidParameterValue", "%s is already an amid data directory",
                       dir);
    int rc = mkdir_p(dir, 0700);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot create %s: %s", dir, strerror(-rc));
    char path[PATH_MAX];
    for (size_t i = 0; i < c.nregions; i++) {
        if (c.stores[i][0])
            snprintf(path, sizeof(path), "%s", c.stores[i]);
        else
            snprintf(path, sizeof(path), "%s/regions/%s", dir, c.regions[i]);
        rc = mkdir_p(path, 0700);
        if (rc < 0)
            return err_set(e, rc, "InternalError", "cannot create %s: %s", path, strerror(-rc));
    }
    snprintf(path, sizeof(path), "%s/master.key", dir);
    struct masterkey mk;
    rc = masterkey_create(path, &mk);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot create %s: %s", path, strerror(-rc));
    masterkey_wipe(&mk);
    snprintf(path, sizeof(path), "%s/amid.db", dir);
    struct db *db;
    rc = db_open(path, true, &db);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot create %s: %s", path, strerror(-rc));
    db_close(db);

    struct app *app;
    rc = core_open(dir, &app, e);
    if (rc < 0)
        return rc;
    rc = core_tx(app, init_tx, &c);
    core_close(app);
    return rc;
}

static int load_region(void *ctx, const struct db_region *r)
{
    struct app *app = ctx;
    if (app->nregions == CORE_MAX_REGIONS)
        return 0;
    struct core_region *out = &app->regions[app->nregions++];
    snprintf(out->name, sizeof(out->name), "%s", r->name);
    if (r->store_path[0] == '/')
        snprintf(out->store_path, sizeof(out->store_path), "%s", r->store_path);
    else
        snprintf(out->store_path, sizeof(out->store_path), "%s/%s", app->datadir, r->store_path);
    return 0;
}

int core_open(const char *dir, struct app **ret, struct err *e)
{
    struct app *app = calloc(1, sizeof(*app));
    if (!app)
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    char real[PATH_MAX];
    app->datadir = strdup(realpath(dir, real) ? real : dir);
    app->dbpath = path_join(app->datadir, "amid.db");
    pthread_mutex_init(&app->pool_lock, NULL);
    pthread_cond_init(&app->pool_cond, NULL);
    pthread_mutex_init(&app->rt_lock, NULL);
    pthread_cond_init(&app->rt_cond, NULL);
    pthread_mutex_init(&app->job_lock, NULL);
    pthread_cond_init(&app->job_cond, NULL);
    pthread_cond_init(&app->sup_cond, NULL);
    pthread_mutex_init(&app->inst_lock, NULL);
    pthread_mutex_init(&app->watch_lock, NULL);
    int rc = 0;
    char *keypath = path_join(app->datadir, "master.key");
    if (!app->datadir || !app->dbpath || !keypath) {
        rc = err_set(e, -ENOMEM, "InternalError", "out of memory");
        goto fail;
    }
    rc = masterkey_load(keypath, &app->mk);
    if (rc == -ENOENT) {
        err_set(e, rc, "InvalidParameterValue",
                "%s is not an amid data directory (no master.key); run `amid init --data %s`", dir,
                dir);
        goto fail;
    } else if (rc == -EPERM) {
        err_set(e, rc, "InvalidParameterValue",
                "%s is readable or writable by others; it must be mode 0600 (chmod 600 %s)",
                keypath, keypath);
        goto fail;
    } else if (rc < 0) {
        err_set(e, rc, "InvalidParameterValue", "cannot load %s: %s", keypath,
                rc == -EBADMSG ? "it is not 32 bytes" : strerror(-rc));
        goto fail;
    }
    masterkey_derive(&app->mk, "amid.access-key-secrets.v1", app->secrets_key);
    masterkey_derive(&app->mk, "amid.ebs-block-tokens.v1", app->block_token_key);
    struct db *db;
    rc = db_open(app->dbpath, false, &db);
    if (rc == -EPROTO) {
        int v = 0;
        db_file_version(app->dbpath, &v);
        err_set(e, rc, "InvalidParameterValue",
                "%s has schema version %d, newer than this amid understands (%d); "
                "run a newer amid",
                app->dbpath, v, db_schema_version());
        goto fail;
    } else if (rc < 0) {
        err_set(e, rc, "InvalidParameterValue", "cannot open %s: %s", app->dbpath, strerror(-rc));
        goto fail;
    }
    app->nopen = 1;
    app->pool_free[app->nfree++] = db;
    rc = db_region_each(db, load_region, app);
    if (rc < 0) {
        err_set(e, rc, "InternalError", "cannot read regions");
        goto fail;
    }
    char off[32];
    if (db_setting_get(db, "clock_offset_ms", off, sizeof(off)) == 0)
        app->clock_offset_ms = strtoll(off, NULL, 10);
    app->clock_checked_us = time_mono_us();
    free(keypath);
    *ret = app;
    return 0;
fail:
    free(keypath);
    core_close(app);
    return rc;
}

void core_close(struct app *app)
{
    if (!app)
        return;
    core_stop(app);
    core_instances_close(app);
    core_storage_close(app);
    for (int i = 0; i < app->nfree; i++)
        db_close(app->pool_free[i]);
    db_close(app->watch);
    pthread_mutex_destroy(&app->watch_lock);
    masterkey_wipe(&app->mk);
    crypto_wipe(app->secrets_key, sizeof(app->secrets_key));
    crypto_wipe(app->block_token_key, sizeof(app->block_token_key));
    pthread_mutex_destroy(&app->pool_lock);
    pthread_cond_destroy(&app->pool_cond);
    pthread_mutex_destroy(&app->rt_lock);
    pthread_cond_destroy(&app->rt_cond);
    pthread_mutex_destroy(&app->job_lock);
    pthread_cond_destroy(&app->job_cond);
    pthread_cond_destroy(&app->sup_cond);
    pthread_mutex_destroy(&app->inst_lock);
    free(app->datadir);
    free(app->dbpath);
    free(app);
}

int core_data_version(struct app *app, uint64_t *out)
{
    pthread_mutex_lock(&app->watch_lock);
    int rc = app->watch ? 0 : db_open(app->dbpath, false, &app->watch);
    if (rc == 0)
        rc = db_data_version(app->watch, out);
    pthread_mutex_unlock(&app->watch_lock);
    return rc < 0 ? -EIO : 0;
}

struct db *core_db_get(struct app *app)
{
    pthread_mutex_lock(&app->pool_lock);
    for (;;) {
        if (app->nfree > 0) {
            struct db *db = app->pool_free[--app->nfree];
            pthread_mutex_unlock(&app->pool_lock);
            return db;
        }
        if (app->nopen < CORE_DB_POOL) {
            app->nopen++;
            pthread_mutex_unlock(&app->pool_lock);
            struct db *db;
            if (db_open(app->dbpath, false, &db) == 0)
                return db;
            pthread_mutex_lock(&app->pool_lock);
            app->nopen--;
            if (app->nopen == 0) {
                /* Nothing to wait for: the database cannot be opened at all. */
                pthread_mutex_unlock(&app->pool_lock);
                abort();
            }
        }
        pthread_cond_wait(&app->pool_cond, &app->pool_lock);
    }
}

void core_db_put(struct app *app, struct db *db)
{
    if (!db)
        return;
    db_rollback(db); /* never hand out a connection inside a transaction */
    pthread_mutex_lock(&app->pool_lock);
    app->pool_free[app->nfree++] = db;
    pthread_cond_signal(&app->pool_cond);
    pthread_mutex_unlock(&app->pool_lock);
}

int core_tx(struct app *app, int (*fn)(struct app *app, struct db *db, void *ctx), void *ctx)
{
    struct db *db = core_db_get(app);
    int rc = db_begin(db);
    if (rc == 0) {
        rc = fn(app, db, ctx);
        if (rc == 0)
            rc = db_commit(db);
        else
            db_rollback(db);
    }
    core_db_put(app, db);
    return rc;
}

int64_t core_now_ms(struct app *app)
{
    /* Another process (the CLI) may move the clock: re-read the offset when it was last read
     * over a second ago.  The new offset is published before the time it was read, so a thread
     * that sees the fresh time never uses the old offset (threads racing in re-read too). */
    int64_t now_us = time_mono_us();
    if (now_us - app->clock_checked_us > 1000000) {
        struct db *db = core_db_get(app);
        char off[32];
        if (db_setting_get(db, "clock_offset_ms", off, sizeof(off)) == 0)
            app->clock_offset_ms = strtoll(off, NULL, 10);
        core_db_put(app, db);
        app->clock_checked_us = now_us;
    }
    return time_now_ms() + app->clock_offset_ms;
}

int64_t core_clock_offset(struct app *app)
{
    return app->clock_offset_ms;
}

int core_clock_set_offset(struct app *app, int64_t offset_ms)
{
    char v[32];
    snprintf(v, sizeof(v), "%lld", (long long)offset_ms);
    struct db *db = core_db_get(app);
    int rc = db_setting_set(db, "clock_offset_ms", v);
    core_db_put(app, db);
    if (rc == 0)
        app->clock_offset_ms = offset_ms;
    return rc;
}

int core_endpoint(struct app *app, char *out, size_t outlen)
{
    struct db *db = core_db_get(app);
    int rc = db_setting_get(db, "endpoint", out, outlen);
    core_db_put(app, db);
    if (rc == -ENOENT) {
        snprintf(out, outlen, "http://%s", CORE_DEFAULT_LISTEN);
        rc = 0;
    }
    return rc;
}

int core_set_listen(struct app *app, const char *listen)
{
    char endpoint[160];
    snprintf(endpoint, sizeof(endpoint), "http://%s", listen);
    struct db *db = core_db_get(app);
    int rc = db_setting_set(db, "endpoint", endpoint);
    core_db_put(app, db);
    return rc;
}

void core_subkey(struct app *app, const char *label, uint8_t out[32])
{
    masterkey_derive(&app->mk, label, out);
}

const struct core_region *core_regions(struct app *app, size_t *ret_n)
{
    *ret_n = app->nregions;
    return app->regions;
}

const struct core_region *core_region_find(struct app *app, const char *name)
{
    for (size_t i = 0; i < app->nregions; i++)
        if (strcmp(app->regions[i].name, name) == 0)
            return &app->regions[i];
    return NULL;
}

struct zone_ctx {
    int (*fn)(void *ctx, const char *zone, const char *zone_id, const char *rgn);
    void *ctx;
};

static int zone_cb(void *vctx, const struct db_zone *z)
{
    struct zone_ctx *c = vctx;
    return c->fn(c->ctx, z->name, z->zone_id, z->region);
}

int core_zone_each(struct app *app, const char *region,
                   int (*fn)(void *ctx, const char *zone, const char *zone_id, const char *rgn),
                   void *ctx)
{
    struct zone_ctx c = { fn, ctx };
    struct db *db = core_db_get(app);
    int rc = db_zone_each(db, region, zone_cb, &c);
    core_db_put(app, db);
    return rc;
}
