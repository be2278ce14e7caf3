/*
 * test_db_query.c — DescribeImages' filter pushdown (db_image_each with the pattern lists of a
 * struct db_image_query): EC2 wildcards translated to GLOB, literal name prefixes walked as a
 * range of the name index, lists too long or not ASCII left to the caller.
 *
 * db.h promises that the lists only narrow: every image that matches is returned, and the caller
 * checks each row again with str_wildcard_match.  So every case asserts (1) that the rows
 * returned include every expected id, (2) that those rows, checked as the caller checks them, are
 * exactly the expected ids, in id order, and (3) for a list db can express (ASCII, at most 256
 * bytes a pattern) that SQL already returned exactly those ids — the narrowing the pushdown is
 * for.  Each case runs through every statement db_image_each picks (no owner; an owner; an
 * owner's live images through the name index, with and without a name range; small pages joined
 * up with `after`).
 *
 * Each test works on a fresh database in a directory under $TMPDIR (or /tmp), removed afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db/db.h"
#include "util/util.h"

#define REGION "us-east-1"
#define OWNER  "111111111111"
#define OTHER  "222222222222"

struct fx {
    char dir[PATH_MAX];
    char path[PATH_MAX];
    struct db *db;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "%s/test_db_query.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/amid.db", f->dir);
    assert_int_equal(db_open(f->path, true, &f->db), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    static const char *const suffix[] = { "", "-wal", "-shm" };
    char p[PATH_MAX + 8];

    db_close(f->db);
    for (size_t i = 0; i < ARRAY_SIZE(suffix); i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static void add_image(struct db *db, const char *id, const char *region, const char *owner,
                      const char *name, const char *state)
{
    struct db_image im;

    memset(&im, 0, sizeof(im));
    snprintf(im.id, sizeof(im.id), "%s", id);
    snprintf(im.region, sizeof(im.region), "%s", region);
    snprintf(im.owner, sizeof(im.owner), "%s", owner);
    assert_true(strlen(name) < sizeof(im.name));
    memcpy(im.name, name, strlen(name) + 1);
    snprintf(im.architecture, sizeof(im.architecture), "x86_64");
    snprintf(im.root_device_name, sizeof(im.root_device_name), "/dev/xvda");
    snprintf(im.virtualization_type, sizeof(im.virtualization_type), "hvm");
    snprintf(im.state, sizeof(im.state), "%s", state);
    im.creation_ms = 1796416138000LL;
    if (strcmp(state, "deregistered") == 0)
        im.deregistered_ms = im.creation_ms + 1;
    assert_int_equal(db_image_insert(db, &im), 0);
}

/* ---- collecting and checking what db_image_each returns ---- */

#define ROWS_MAX 64

struct row {
    char id[32];
    char name[520];
    char state[16];
};

struct rows {
    struct row r[ROWS_MAX];
    size_t n;
};

static int collect(void *ctx, const struct db_image *im)
{
    struct rows *rs = ctx;

    assert_true(rs->n < ROWS_MAX);
    struct row *r = &rs->r[rs->n++];
    memcpy(r->id, im->id, sizeof(r->id));
    memcpy(r->name, im->name, sizeof(r->name));
    memcpy(r->state, im->state, sizeof(r->state));
    return 0;
}

/* Runs `q`, one page of `page` rows at a time when non-zero (joined up with `after`, as the API
 * pages), appending every row SQL returned to `rs`, and checks they come in strictly rising id
 * order. */
static void run_query(struct db *db, struct db_image_query q, size_t page, struct rows *rs)
{
    char after[32] = "";

    memset(rs, 0, sizeof(*rs));
    q.limit = page;
    for (int guard = 0; guard < ROWS_MAX + 1; guard++) {
        size_t before = rs->n;
        q.after = after[0] ? after : NULL;
        assert_int_equal(db_image_each(db, &q, collect, rs), 0);
        size_t got = rs->n - before;
        if (page)
            assert_true(got <= page);
        if (got)
            memcpy(after, rs->r[rs->n - 1].id, sizeof(after));
        if (!page || got < page)
            break;
    }
    for (size_t i = 1; i < rs->n; i++)
        if (strcmp(rs->r[i - 1].id, rs->r[i].id) >= 0)
            fail_msg("ids out of order: %s then %s", rs->r[i - 1].id, rs->r[i].id);
}

/* Whether a list lets `value` through, as the caller checks it. */
static bool list_passes(const char *const *pats, const char *value)
{
    bool any = false;

    for (size_t i = 0; i < DB_IMAGE_PATTERNS; i++) {
        if (!pats[i])
            continue;
        any = true;
        if (str_wildcard_match(pats[i], value))
            return true;
    }
    return !any;
}

static bool row_passes(const struct db_image_query *q, const struct row *r)
{
    return list_passes(q->ids, r->id) && list_passes(q->names, r->name) &&
           list_passes(q->states, r->state);
}

/* The ids of `rs` (only those the caller's check passes, with `filter`) as "a,b,c". */
static void ids_of(const struct rows *rs, const struct db_image_query *q, bool filter, char *out,
                   size_t outlen)
{
    size_t o = 0;

    out[0] = '\0';
    for (size_t i = 0; i < rs->n; i++) {
        if (filter && !row_passes(q, &rs->r[i]))
            continue;
        int n = snprintf(out + o, outlen - o, "%s%s", o ? "," : "", rs->r[i].id);
        assert_true(n > 0 && (size_t)n < outlen - o);
        o += (size_t)n;
    }
}

/* Whether every id of the comma-separated list `want` is among the rows. */
static void assert_includes(const struct rows *rs, const char *want, const char *what)
{
    char copy[1024], *save = NULL;

    snprintf(copy, sizeof(copy), "%s", want);
    for (char *id = strtok_r(copy, ",", &save); id; id = strtok_r(NULL, ",", &save)) {
        bool found = false;
        for (size_t i = 0; i < rs->n && !found; i++)
            found = strcmp(rs->r[i].id, id) == 0;
        if (!found)
            fail_msg("%s: %s matches but was not returned", what, id);
    }
}

/* Checks one query as described in the file comment: `want` is the comma-separated ids the
 * caller must end up with, `exact` whether SQL must already have returned just those. */
static void check(struct db *db, const struct db_image_query *q, const char *want, bool exact,
                  const char *what)
{
    struct rows *rs = malloc(sizeof(*rs));
    char got[1024];

    assert_non_null(rs);
    run_query(db, *q, q->limit, rs);
    assert_includes(rs, want, what);
    ids_of(rs, q, true, got, sizeof(got));
    if (strcmp(got, want) != 0)
        fail_msg("%s: after the caller's check got {%s}, want {%s}", what, got, want);
    if (exact) {
        ids_of(rs, q, false, got, sizeof(got));
        if (strcmp(got, want) != 0)
            fail_msg("%s: SQL returned {%s}, want exactly {%s}", what, got, want);
    }
    free(rs);
}

/* The statements db_image_each chooses between, for a query on OWNER's live images (where all
 * of them give the same answer). */
enum mode {
    MODE_REGION,      /* no owner: the region's walk in id order */
    MODE_OWNER,       /* an owner, deregistered ones included: the owner index */
    MODE_LIVE,        /* an owner's live images, no limit: the owner index again */
    MODE_NAME_INDEX,  /* an owner's live images with a limit: the name index (and range) */
    MODE_NAME_PAGED,  /* the same two rows at a time: keeps the smallest ids of many */
    MODE_REGION_PAGED /* no owner, three rows at a time: SQL's ORDER BY ... LIMIT */
};
static const char *const mode_names[] = { "region",     "owner",      "live",
                                          "name-index", "name-paged", "region-paged" };

static struct db_image_query query_for(enum mode m)
{
    struct db_image_query q;

    memset(&q, 0, sizeof(q));
    q.region = REGION;
    q.owner = m == MODE_REGION || m == MODE_REGION_PAGED ? NULL : OWNER;
    q.live = m >= MODE_LIVE && m <= MODE_NAME_PAGED;
    q.limit = m == MODE_NAME_INDEX     ? 1000
              : m == MODE_NAME_PAGED   ? 2
              : m == MODE_REGION_PAGED ? 3
                                       : 0;
    return q;
}

/* ---- the catalogue the pattern cases query ---- */

static char long_x[302];      /* "L" and 300 'x': past the pushdown limit */
static char m256[257];        /* "M" and 255 'm': exactly at it */
static char brackets256[257]; /* 256 '[': the longest GLOB translation pushed down */
static char brackets257[258]; /* 257 '[' */

static void make_long_names(void)
{
    long_x[0] = 'L';
    memset(long_x + 1, 'x', 300);
    long_x[301] = '\0';
    m256[0] = 'M';
    memset(m256 + 1, 'm', 255);
    m256[256] = '\0';
    memset(brackets256, '[', 256);
    brackets256[256] = '\0';
    memset(brackets257, '[', 257);
    brackets257[257] = '\0';
}

static const struct {
    const char *id, *name;
} catalogue[] = {
    { "ami-01", "web[1]" },
    { "ami-02", "web1" },
    { "ami-03", "web[12]" },
    { "ami-04", "web]x[" },
    { "ami-05", "a*b" },
    { "ami-06", "axxb" },
    { "ami-07", "a?b" },
    { "ami-08", "acb" },
    { "ami-09", "back\\slash" },
    { "ami-10", "Web1" },
    { "ami-11", "WEB1" },
    { "ami-12", "tilde~" },
    { "ami-13", "tilde~~" },
    { "ami-14", "tildf" },
    { "ami-15", "tilde" },
    { "ami-16", "z~" },
    { "ami-17", "z\x7f" },
    { "ami-18", "z\x7f"
                "a" },
    { "ami-19", "abc" },
    { "ami-20", "abd" },
    { "ami-21", "abcd" },
    { "ami-22", long_x },
    { "ami-23", m256 },
    { "ami-24", brackets256 },
    { "ami-25", brackets257 },
    { "ami-26", "a\\b" },
    { "ami-27", "back\\" },
    { "ami-28", "~" },
    { "ami-29", "web2" },
    { "ami-[x]", "qid1" }, /* ids with GLOB's metacharacters too */
    { "ami-x", "qid2" },
    { "ami-?1", "qid3" },
};

static void add_catalogue(struct db *db)
{
    make_long_names();
    assert_int_equal(db_begin(db), 0);
    for (size_t i = 0; i < ARRAY_SIZE(catalogue); i++)
        add_image(db, catalogue[i].id, REGION, OWNER, catalogue[i].name, "available");
    /* The same names elsewhere: another region is never listed. */
    add_image(db, "ami-w1", "us-west-2", OWNER, "web[1]", "available");
    add_image(db, "ami-w2", "us-west-2", OWNER, "abc", "available");
    assert_int_equal(db_commit(db), 0);
}

struct pcase {
    char col;                            /* 'i' ids, 'n' names, 's' states */
    const char *pats[DB_IMAGE_PATTERNS]; /* filled from the long names when NULL and `longpat` */
    int longpat;                         /* which generated pattern (see long_pattern), 0 none */
    const char *want;                    /* comma-separated ids, in id order */
    bool exact;                          /* db can express the list: SQL narrows exactly */
};

/* Generated patterns too long to spell out in the table. */
static void long_pattern(int which, char *out, size_t outlen)
{
    switch (which) {
    case 1: /* the long name itself, 301 bytes */
        snprintf(out, outlen, "%s", long_x);
        break;
    case 2: /* the long name with its last byte as `?` */
        snprintf(out, outlen, "%.300s?", long_x);
        break;
    case 3: /* "L*" and 300 'y': matches nothing */
        snprintf(out, outlen, "L*%s", long_x + 1);
        memset(out + 2, 'y', 300);
        break;
    case 4: /* exactly 256 bytes: still pushed down */
        snprintf(out, outlen, "%s", m256);
        break;
    case 5: /* 256 '[': the longest GLOB form, "[[]" 256 times */
        snprintf(out, outlen, "%s", brackets256);
        break;
    case 6: /* 257 '[': not pushed down */
        snprintf(out, outlen, "%s", brackets257);
        break;
    case 7: /* 256 '[' and a star: 257 bytes, not pushed down */
        snprintf(out, outlen, "%s*", brackets256);
        break;
    case 8: /* 255 'm' after "M" with a `?` in the middle, 256 bytes */
        snprintf(out, outlen, "%s", m256);
        out[100] = '?';
        break;
    default:
        fail_msg("no long pattern %d", which);
    }
}

static void run_cases(struct db *db, const struct pcase *cases, size_t n)
{
    static char longbuf[DB_IMAGE_PATTERNS][400];

    for (size_t i = 0; i < n; i++) {
        for (enum mode m = MODE_REGION; m <= MODE_REGION_PAGED; m++) {
            struct db_image_query q = query_for(m);
            const char *pats[DB_IMAGE_PATTERNS];
            char what[160];

            memcpy(pats, cases[i].pats, sizeof(pats));
            if (cases[i].longpat) {
                /* The generated pattern takes the first empty slot. */
                for (size_t k = 0; k < DB_IMAGE_PATTERNS; k++) {
                    if (!pats[k]) {
                        long_pattern(cases[i].longpat, longbuf[k], sizeof(longbuf[k]));
                        pats[k] = longbuf[k];
                        break;
                    }
                }
            }
            const char **dst = cases[i].col == 'i'   ? q.ids
                               : cases[i].col == 'n' ? q.names
                                                     : q.states;
            memcpy(dst, pats, sizeof(pats));
            snprintf(what, sizeof(what), "case %zu (%c: %.40s%s), %s", i, cases[i].col,
                     pats[0] ? pats[0] : "(null)", cases[i].longpat ? " +long" : "", mode_names[m]);
            check(db, &q, cases[i].want, cases[i].exact, what);
        }
    }
}

/* ---- the cases ---- */

/* GLOB's metacharacters in names match literally; EC2's wildcards do their job. */
static void test_glob_metacharacters(void **state)
{
    struct fx *f = *state;
    static const struct pcase cases[] = {
        /* `[` `]` are ordinary bytes to EC2, a character class to GLOB. */
        { 'n', { "web[1]" }, 0, "ami-01", true },
        { 'n', { "web[12]" }, 0, "ami-03", true },
        { 'n', { "web]x[" }, 0, "ami-04", true },
        { 'n', { "web[*" }, 0, "ami-01,ami-03", true },
        { 'n', { "web*]" }, 0, "ami-01,ami-03", true },
        { 'n', { "*[*" }, 0, "ami-01,ami-03,ami-04,ami-24,ami-25", true },
        { 'n', { "*]" }, 0, "ami-01,ami-03", true },
        { 'n', { "web[?]" }, 0, "ami-01", true },
        { 'n', { "[" }, 0, "", true },
        { 'n', { "[[" }, 0, "", true },
        { 'n', { "web[1-2]" }, 0, "", true }, /* no ranges either */
        { 'n', { "web[!1]" }, 0, "", true },
        { 'n', { "web[^1]" }, 0, "", true },
        /* `*` and `?`. */
        { 'n',
          { "*" },
          0,
          "ami-01,ami-02,ami-03,ami-04,ami-05,ami-06,ami-07,ami-08,ami-09,ami-10,ami-11,ami-12,"
          "ami-13,ami-14,ami-15,ami-16,ami-17,ami-18,ami-19,ami-20,ami-21,ami-22,ami-23,ami-24,"
          "ami-25,ami-26,ami-27,ami-28,ami-29,ami-?1,ami-[x],ami-x",
          true },
        { 'n', { "a*b" }, 0, "ami-05,ami-06,ami-07,ami-08,ami-26", true },
        { 'n', { "a?b" }, 0, "ami-05,ami-07,ami-08,ami-26", true },
        { 'n', { "web?" }, 0, "ami-02,ami-29", true },
        { 'n', { "web" }, 0, "", true },
        { 'n', { "web1*" }, 0, "ami-02", true },
        { 'n', { "*1" }, 0, "ami-02,ami-10,ami-11,ami-[x]", true },
        { 'n', { "??" }, 0, "ami-16,ami-17", true },
        { 'n', { "?" }, 0, "ami-28", true },
        { 'n', { "**b" }, 0, "ami-05,ami-06,ami-07,ami-08,ami-26", true },
        { 'n', { "a**?*b" }, 0, "ami-05,ami-06,ami-07,ami-08,ami-26", true },
        /* Escaped wildcards are the characters themselves. */
        { 'n', { "a\\*b" }, 0, "ami-05", true },
        { 'n', { "a\\?b" }, 0, "ami-07", true },
        { 'n', { "a\\\\b" }, 0, "ami-26", true },
        { 'n', { "\\**" }, 0, "", true },
        { 'n', { "*\\?*" }, 0, "ami-07", true },
        { 'n', { "*\\**" }, 0, "ami-05", true },
        /* Backslashes: before an ordinary byte, or trailing, they are themselves. */
        { 'n', { "back\\slash" }, 0, "ami-09", true },
        { 'n', { "back\\" }, 0, "ami-27", true },
        { 'n', { "back\\*" }, 0, "", true }, /* a literal star: no name is "back*" */
        { 'n', { "back\\\\*" }, 0, "ami-09,ami-27", true },
        { 'n', { "back*" }, 0, "ami-09,ami-27", true },
        { 'n', { "*\\" }, 0, "ami-27", true },
        /* Ids too: `[x]` and `?` in an id. */
        { 'i', { "ami-[x]" }, 0, "ami-[x]", true },
        { 'i', { "ami-\\?1" }, 0, "ami-?1", true },
        { 'i', { "ami-?1" }, 0, "ami-01,ami-11,ami-21,ami-?1", true },
        { 'i',
          { "ami-2?" },
          0,
          "ami-20,ami-21,ami-22,ami-23,ami-24,ami-25,ami-26,ami-27,ami-28,ami-29",
          true },
        { 'i', { "*x*" }, 0, "ami-[x],ami-x", true },
    };
    add_catalogue(f->db);
    run_cases(f->db, cases, ARRAY_SIZE(cases));
}

/* Filters are case-sensitive, as on EC2. */
static void test_case_sensitive(void **state)
{
    struct fx *f = *state;
    static const struct pcase cases[] = {
        { 'n', { "web1" }, 0, "ami-02", true },
        { 'n', { "Web1" }, 0, "ami-10", true },
        { 'n', { "WEB1" }, 0, "ami-11", true },
        { 'n', { "wEb1" }, 0, "", true },
        { 'n', { "w*" }, 0, "ami-01,ami-02,ami-03,ami-04,ami-29", true },
        { 'n', { "W*" }, 0, "ami-10,ami-11", true },
        { 'n', { "*eb1" }, 0, "ami-02,ami-10", true },
        { 'n', { "?EB1" }, 0, "ami-11", true },
        { 'n', { "ABC" }, 0, "", true },
        { 'i', { "AMI-01" }, 0, "", true },
        { 'i', { "ami-X" }, 0, "", true },
        { 's', { "Available" }, 0, "", true },
        { 's', { "AVAIL*" }, 0, "", true },
    };
    add_catalogue(f->db);
    run_cases(f->db, cases, ARRAY_SIZE(cases));
}

/* A literal prefix is walked as [prefix, prefix with its last byte raised): prefixes ending in
 * the last printable and the last ASCII byte, prefixes that are names themselves. */
static void test_prefix_ranges(void **state)
{
    struct fx *f = *state;
    static const struct pcase cases[] = {
        { 'n', { "tilde~*" }, 0, "ami-12,ami-13", true },
        { 'n', { "tilde~" }, 0, "ami-12", true },
        { 'n', { "tilde~?" }, 0, "ami-13", true },
        { 'n', { "tilde*" }, 0, "ami-12,ami-13,ami-15", true },
        { 'n', { "tilde" }, 0, "ami-15", true },
        { 'n', { "tild?" }, 0, "ami-14,ami-15", true },
        { 'n', { "tildf*" }, 0, "ami-14", true },
        { 'n', { "~*" }, 0, "ami-28", true },
        { 'n', { "~" }, 0, "ami-28", true },
        { 'n', { "z~*" }, 0, "ami-16", true },
        { 'n', { "z~" }, 0, "ami-16", true },
        { 'n',
          { "z\x7f"
            "*" },
          0,
          "ami-17,ami-18",
          true },
        { 'n', { "z\x7f" }, 0, "ami-17", true },
        { 'n',
          { "z\x7f"
            "a" },
          0,
          "ami-18",
          true },
        { 'n', { "z*" }, 0, "ami-16,ami-17,ami-18", true },
        { 'n', { "abc*" }, 0, "ami-19,ami-21", true },
        { 'n', { "ab" }, 0, "", true },
        { 'n', { "abcd*" }, 0, "ami-21", true },
        { 'n', { "abcde*" }, 0, "", true },
        /* Escaped wildcards and brackets inside the prefix. */
        { 'n',
          { "a\\*"
            "*" },
          0,
          "ami-05",
          true },
        { 'n', { "a\\?*" }, 0, "ami-07", true },
        { 'n', { "web[1*" }, 0, "ami-01,ami-03", true },
        { 'n', { "web]*" }, 0, "ami-04", true },
        { 'n', { "back\\\\*" }, 0, "ami-09,ami-27", true },
    };
    add_catalogue(f->db);
    run_cases(f->db, cases, ARRAY_SIZE(cases));
}

/* Several patterns in a list: a row passes when any one matches (their common prefix, if any,
 * bounds the range); NULL entries anywhere are unused. */
static void test_pattern_lists(void **state)
{
    struct fx *f = *state;
    static const struct pcase cases[] = {
        { 'n', { "abc", "abd" }, 0, "ami-19,ami-20", true },
        { 'n', { "abc*", "web1" }, 0, "ami-02,ami-19,ami-21", true },
        { 'n', { "abcd", "abc*" }, 0, "ami-19,ami-21", true },
        { 'n', { "abd*", "abc" }, 0, "ami-19,ami-20", true },
        { 'n', { "abc", "abc" }, 0, "ami-19", true },
        { 'n', { "web1", "Web1", "WEB1", "abd" }, 0, "ami-02,ami-10,ami-11,ami-20", true },
        { 'n', { "a\\*b", "a\\?b" }, 0, "ami-05,ami-07", true },
        { 'n', { "web[1]", "web1" }, 0, "ami-01,ami-02", true },
        { 'n', { "tilde~", "tildf" }, 0, "ami-12,ami-14", true },
        { 'n', { "z~", "z\x7f" }, 0, "ami-16,ami-17", true },
        { 'n', { "nothing", "none?" }, 0, "", true },
        { 'n', { NULL, "abc", NULL, "web?" }, 0, "ami-02,ami-19,ami-29", true },
        { 'n', { NULL, NULL, NULL, "abd" }, 0, "ami-20", true },
        { 'n',
          { "*", "abc" },
          0,
          "ami-01,ami-02,ami-03,ami-04,ami-05,ami-06,ami-07,ami-08,ami-09,ami-10,ami-11,ami-12,"
          "ami-13,ami-14,ami-15,ami-16,ami-17,ami-18,ami-19,ami-20,ami-21,ami-22,ami-23,ami-24,"
          "ami-25,ami-26,ami-27,ami-28,ami-29,ami-?1,ami-[x],ami-x",
          true },
        /* An all-NULL list narrows nothing. */
        { 'n',
          { NULL },
          0,
          "ami-01,ami-02,ami-03,ami-04,ami-05,ami-06,ami-07,ami-08,ami-09,ami-10,ami-11,ami-12,"
          "ami-13,ami-14,ami-15,ami-16,ami-17,ami-18,ami-19,ami-20,ami-21,ami-22,ami-23,ami-24,"
          "ami-25,ami-26,ami-27,ami-28,ami-29,ami-?1,ami-[x],ami-x",
          true },
        { 'i',
          { "ami-01", "ami-x", "ami-[x]", "ami-\\?1" },
          0,
          "ami-01,ami-?1,ami-[x],ami-x",
          true },
        { 'i',
          { "ami-0?", "ami-1?" },
          0,
          "ami-01,ami-02,ami-03,ami-04,ami-05,ami-06,ami-07,ami-08,ami-09,ami-10,ami-11,ami-12,"
          "ami-13,ami-14,ami-15,ami-16,ami-17,ami-18,ami-19",
          true },
    };
    add_catalogue(f->db);
    run_cases(f->db, cases, ARRAY_SIZE(cases));
}

/* Patterns past the pushdown limit (256 bytes) or not ASCII are left to the caller: the rows
 * returned still include every match, whatever else the list holds. */
static void test_long_and_non_ascii(void **state)
{
    struct fx *f = *state;
    static const struct pcase cases[] = {
        { 'n', { NULL }, 1, "ami-22", false },
        { 'n', { NULL }, 2, "ami-22", false },
        { 'n', { NULL }, 3, "", false },
        { 'n', { "web1" }, 1, "ami-02,ami-22", false },
        { 'n', { "abc", "abd", "web[1]" }, 1, "ami-01,ami-19,ami-20,ami-22", false },
        { 'n', { "abc*" }, 3, "ami-19,ami-21", false },
        { 'n', { NULL }, 6, "ami-25", false },
        { 'n', { NULL }, 7, "ami-24,ami-25", false },
        /* At the limit: pushed down, the GLOB form of 256 `[` filling its buffer exactly. */
        { 'n', { NULL }, 4, "ami-23", true },
        { 'n', { NULL }, 8, "ami-23", true },
        { 'n', { NULL }, 5, "ami-24", true },
        { 'n', { "web1" }, 5, "ami-02,ami-24", true },
        /* Not ASCII: not pushed down, and no name matches. */
        { 'n', { "web\xc3\xa9*" }, 0, "", false },
        { 'n', { "web1", "\xc3\xa9" }, 0, "ami-02", false },
        { 'n', { "*\xff" }, 0, "", false },
        { 'i',
          { "ami-0?", "ami-\xc3\xa9" },
          0,
          "ami-01,ami-02,ami-03,ami-04,ami-05,ami-06,ami-07,ami-08,ami-09",
          false },
        { 's',
          { "avail*", "\xc3\xa9" },
          0,
          "ami-01,ami-02,ami-03,ami-04,ami-05,ami-06,ami-07,ami-08,ami-09,ami-10,ami-11,ami-12,"
          "ami-13,ami-14,ami-15,ami-16,ami-17,ami-18,ami-19,ami-20,ami-21,ami-22,ami-23,ami-24,"
          "ami-25,ami-26,ami-27,ami-28,ami-29,ami-?1,ami-[x],ami-x",
          false },
    };
    add_catalogue(f->db);
    run_cases(f->db, cases, ARRAY_SIZE(cases));
}

/* Id, name and state lists together are AND'd; state patterns; owners, sharing and
 * deregistered images around the name index. */
static void test_lists_and_access(void **state)
{
    struct fx *f = *state;
    struct db *db = f->db;

    assert_int_equal(db_begin(db), 0);
    add_image(db, "ami-a1", REGION, OWNER, "web1", "available");
    add_image(db, "ami-a2", REGION, OWNER, "web1", "deregistered");
    add_image(db, "ami-a3", REGION, OWNER, "web2", "pending");
    add_image(db, "ami-a4", REGION, OWNER, "web[1]", "failed");
    add_image(db, "ami-b1", REGION, OTHER, "web1", "available");
    add_image(db, "ami-b2", REGION, OTHER, "web[1]", "available");
    add_image(db, "ami-b3", REGION, OTHER, "web1x", "disabled");
    add_image(db, "ami-w1", "us-west-2", OWNER, "web1", "available");
    assert_int_equal(db_commit(db), 0);
    assert_int_equal(db_image_perm_add(db, "ami-b1", "all"), 0);
    assert_int_equal(db_image_perm_add(db, "ami-b2", OWNER), 0);

    struct db_image_query q;

    memset(&q, 0, sizeof(q));
    q.region = REGION;
    q.names[0] = "web1";
    check(db, &q, "ami-a1,ami-a2,ami-b1", true, "region, web1");
    q.live = true;
    check(db, &q, "ami-a1,ami-b1", true, "region live, web1");
    q.owner = OWNER;
    check(db, &q, "ami-a1", true, "owner live, web1");
    q.limit = 10;
    check(db, &q, "ami-a1", true, "owner live limit (name index), web1");
    q.names[0] = "web*";
    check(db, &q, "ami-a1,ami-a3,ami-a4", true, "owner live limit (name index), web*");
    q.names[0] = "web[1]*";
    check(db, &q, "ami-a4", true, "owner live limit (name range), web[1]*");
    q.live = false;
    q.limit = 0;
    q.names[0] = "web1";
    check(db, &q, "ami-a1,ami-a2", true, "owner, web1");

    /* Visible to OWNER: its own, the public one, the one shared with it. */
    memset(&q, 0, sizeof(q));
    q.region = REGION;
    q.visible_to = OWNER;
    q.names[0] = "web[1]";
    check(db, &q, "ami-a4,ami-b2", true, "visible, web[1]");
    q.names[0] = "web1?";
    check(db, &q, "", true, "visible, web1?");
    q.visible_to = "333333333333";
    q.names[0] = "web*";
    check(db, &q, "ami-b1", true, "visible to a stranger, web*");
    q.visible_to = NULL;
    q.public_only = true;
    check(db, &q, "ami-b1", true, "public, web*");
    q.public_only = false;
    q.granted_to = OWNER;
    check(db, &q, "ami-b2", true, "granted, web*");

    /* States. */
    memset(&q, 0, sizeof(q));
    q.region = REGION;
    q.states[0] = "available";
    check(db, &q, "ami-a1,ami-b1,ami-b2", true, "state available");
    q.states[0] = "*ed";
    check(db, &q, "ami-a2,ami-a4,ami-b3", true, "state *ed");
    q.states[0] = "p?nding";
    q.states[1] = "deregistered";
    check(db, &q, "ami-a2,ami-a3", true, "state p?nding|deregistered");
    q.states[0] = NULL;
    q.states[1] = NULL;
    q.states[2] = "dis*";
    check(db, &q, "ami-b3", true, "state dis*");

    /* Lists AND'd together. */
    memset(&q, 0, sizeof(q));
    q.region = REGION;
    q.names[0] = "web1*";
    q.states[0] = "available";
    q.states[1] = "disabled";
    check(db, &q, "ami-a1,ami-b1,ami-b3", true, "web1* and available|disabled");
    q.ids[0] = "ami-b?";
    check(db, &q, "ami-b1,ami-b3", true, "ami-b? and web1* and available|disabled");
    q.ids[0] = "ami-a*";
    q.owner = OWNER;
    q.live = true;
    q.limit = 1;
    check(db, &q, "ami-a1", true, "ami-a* and web1* and available|disabled, owner live paged");
    /* A list left to the caller does not stop the others narrowing. */
    char longpat[300];
    memset(longpat, '*', 299);
    longpat[299] = '\0';
    q.ids[0] = longpat;
    q.limit = 0;
    check(db, &q, "ami-a1", true, "long id pattern and web1* and available|disabled, owner live");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_glob_metacharacters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_case_sensitive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pattern_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_and_non_ascii, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lists_and_access, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
