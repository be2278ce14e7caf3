/*
 * nbd_handshake.c — the fixed newstyle handshake: greeting, client flags and option haggling.
 *
 * Each option is read whole (capped at NBD_MAX_OPTION_LEN; up to NBD_MAX_OPTION_SKIP is skipped
 * and refused with NBD_REP_ERR_TOO_BIG, more drops the connection) and parsed with explicit
 * bounds before anything is done with it.  Options that name an export go to the resolver;
 * NBD_OPT_INFO and metadata-context queries open the export with NBD_OPEN_PROBE and release it
 * at once.  A successful NBD_OPT_GO or NBD_OPT_EXPORT_NAME leaves the export open in the
 * connection for the transmission phase.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strerrordesc_np */
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/nbd_int.h"
#include "nbd/nbd_proto.h"

enum {
    OPT_NEXT = 0,     /* wait for the next option */
    OPT_TRANSMIT = 1, /* enter transmission */
    OPT_END = 2,      /* the client aborted */
};

static int send_rep(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data, size_t len)
{
    uint8_t h[NBD_REP_HEADER_SIZE];
    struct iovec iov[2] = {
        { .iov_base = h, .iov_len = sizeof(h) },
        { .iov_base = (void *)data, .iov_len = len },
    };

    nbd_put64(h, NBD_REP_MAGIC);
    nbd_put32(h + 8, opt);
    nbd_put32(h + 12, type);
    nbd_put32(h + 16, (uint32_t)len);
    return nbd_conn_writev(c, iov, len ? 2 : 1);
}

static int send_err(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *msg)
{
    return send_rep(c, opt, type, msg, strlen(msg));
}

/* Sends one NBD_REP_INFO carrying `type` followed by `len` bytes. */
static int send_info(struct nbd_conn *c, uint32_t opt, uint16_t type, const void *data, size_t len)
{
    uint8_t h[NBD_REP_HEADER_SIZE + 2];
    struct iovec iov[2] = {
        { .iov_base = h, .iov_len = sizeof(h) },
        { .iov_base = (void *)data, .iov_len = len },
    };

    nbd_put64(h, NBD_REP_MAGIC);
    nbd_put32(h + 8, opt);
    nbd_put32(h + 12, NBD_REP_INFO);
    nbd_put32(h + 16, (uint32_t)(len + 2));
    nbd_put16(h + 20, type);
    return nbd_conn_writev(c, iov, len ? 2 : 1);
}

/* Maps the resolver's refusal to an option error reply and a message for the human. */
static int send_open_error(struct nbd_conn *c, uint32_t opt, int err)
{
    char msg[160];
    uint32_t type;

    switch (err) {
    case -ENOENT:
        type = NBD_REP_ERR_UNKNOWN;
        snprintf(msg, sizeof(msg), "no such export");
        break;
    case -EBUSY:
        type = NBD_REP_ERR_POLICY;
        snprintf(msg, sizeof(msg), "export is in use by another client");
        break;
    case -EACCES:
    case -EPERM:
        type = NBD_REP_ERR_POLICY;
        snprintf(msg, sizeof(msg), "access to export denied");
        break;
    case -ESHUTDOWN:
        type = NBD_REP_ERR_SHUTDOWN;
        snprintf(msg, sizeof(msg), "server is shutting down");
        break;
    case -EINVAL:
        type = NBD_REP_ERR_INVALID;
        snprintf(msg, sizeof(msg), "invalid export name");
        break;
    default: {
        const char *desc = err < 0 ? strerrordesc_np(-err) : NULL;

        type = NBD_REP_ERR_UNKNOWN;
        snprintf(msg, sizeof(msg), "cannot open export: %s", desc ? desc : "unknown error");
        break;
    }
    }
    return send_err(c, opt, type, msg);
}

static bool export_valid(const struct nbd_export *exp)
{
    return exp->bd && exp->bd->ops && exp->bd->ops->pread && exp->bd->ops->flush;
}

/* Opens `name` through the resolver; on success the caller owns one release. */
static int open_export(struct nbd_conn *c, const char *name, unsigned flags, struct nbd_export *ret)
{
    const struct nbd_server_config *cfg = nbd_server_cfg(c->srv);
    struct nbd_export exp = { 0 };
    int r;

    r = cfg->resolver->open(cfg->opaque, name, flags, &exp);
    if (r > 0)
        r = -EIO; /* a resolver bug; positive values are not errnos */
    if (r < 0)
        return r;
    if (!export_valid(&exp)) {
        cfg->resolver->release(cfg->opaque, &exp);
        return -ENODEV;
    }
    *ret = exp;
    return 0;
}

static void close_export(struct nbd_conn *c, struct nbd_export *exp)
{
    const struct nbd_server_config *cfg = nbd_server_cfg(c->srv);

    cfg->resolver->release(cfg->opaque, exp);
}

void nbd_conn_release_export(struct nbd_conn *c)
{
    if (c->exp_open) {
        close_export(c, &c->exp);
        c->exp_open = false;
    }
}

static bool export_readonly(const struct nbd_export *exp)
{
    return (exp->bd->flags & BLOCKDEV_READONLY) || (exp->flags & NBD_EXPORT_READONLY) ||
           !exp->bd->ops->pwrite;
}

static uint16_t transmission_flags(const struct nbd_conn *c, const struct nbd_export *exp)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE;

    if (export_readonly(exp)) {
        f |= NBD_FLAG_READ_ONLY;
    } else {
        f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_WRITE_ZEROES;
        if (exp->bd->ops->trim)
            f |= NBD_FLAG_SEND_TRIM;
    }
    if (c->structured)
        f |= NBD_FLAG_SEND_DF;
    if (exp->flags & NBD_EXPORT_MULTI_CONN)
        f |= NBD_FLAG_CAN_MULTI_CONN;
    return f;
}

static uint32_t preferred_block_size(const struct blockdev *bd)
{
    uint32_t b = bd->block_size;

    if (b < 512 || (b & (b - 1)) != 0)
        return 4096;
    if (b > NBD_MAX_PAYLOAD)
        return NBD_MAX_PAYLOAD;
    return b;
}

/* Enters transmission with the export the client chose. */
static void enter_transmission(struct nbd_conn *c, const struct nbd_export *exp, char *name)
{
    c->exp = *exp;
    c->exp_open = true;
    c->exp_name = name;
    c->size = exp->bd->size;
    c->tflags = transmission_flags(c, exp);
    c->readonly = export_readonly(exp);
    c->meta_allocation =
        c->structured && c->meta_requested && c->meta_export && strcmp(c->meta_export, name) == 0;
}

/* Copies a client string into a NUL-terminated heap string; NULL if it holds a NUL. */
static char *dup_name(const uint8_t *p, size_t len)
{
    char *s;

    if (memchr(p, '\0', len))
        return NULL;
    s = malloc(len + 1);
    if (!s)
        return NULL;
    memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

/* NBD_OPT_EXPORT_NAME: cannot report errors, so any failure ends the connection. */
static int opt_export_name(struct nbd_conn *c, const uint8_t *data, uint32_t len)
{
    struct nbd_export exp;
    uint8_t reply[8 + 2 + 124] = { 0 };
    char *name;
    int r;

    if (len > NBD_MAX_STRING)
        return -EPROTO;
    name = dup_name(data, len);
    if (!name)
        return memchr(data, '\0', len) ? -EPROTO : -ENOMEM;
    r = open_export(c, name, 0, &exp);
    if (r < 0) {
        free(name);
        return r;
    }
    enter_transmission(c, &exp, name);
    nbd_put64(reply, c->size);
    nbd_put16(reply + 8, c->tflags);
    r = nbd_conn_write(c, reply, c->no_zeroes ? 10 : sizeof(reply));
    return r < 0 ? r : OPT_TRANSMIT;
}

/* NBD_OPT_INFO and NBD_OPT_GO. */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
    bool want_name = false, want_desc = false, want_bs = false;
    struct nbd_export exp;
    uint32_t namelen;
    uint16_t nreq;
    uint8_t buf[14];
    const char *canon;
    char *name;
    int r;

    if (len < 6)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "option too short");
    namelen = nbd_get32(data);
    if (namelen > len - 6)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "export name length exceeds option");
    if (namelen > NBD_MAX_STRING)
        return send_err(c, opt, NBD_REP_ERR_TOO_BIG, "export name too long");
    nreq = nbd_get16(data + 4 + namelen);
    if ((uint64_t)4 + namelen + 2 + 2 * (uint64_t)nreq != len)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "information request list malformed");
    for (uint16_t i = 0; i < nreq; i++) {
        switch (nbd_get16(data + 4 + namelen + 2 + 2 * (size_t)i)) {
        case NBD_INFO_NAME:
            want_name = true;
            break;
        case NBD_INFO_DESCRIPTION:
            want_desc = true;
            break;
        case NBD_INFO_BLOCK_SIZE:
            want_bs = true;
            break;
        default:
            break; /* the spec says to ignore what we do not understand */
        }
    }
    if (memchr(data + 4, '\0', namelen))
        return send_err(c, opt, NBD_REP_ERR_INVALID, "export name contains NUL");
    name = dup_name(data + 4, namelen);
    if (!name)
        return -ENOMEM;

    r = open_export(c, name, opt == NBD_OPT_INFO ? NBD_OPEN_PROBE : 0, &exp);
    if (r < 0) {
        free(name);
        return send_open_error(c, opt, r);
    }

    nbd_put64(buf, exp.bd->size);
    nbd_put16(buf + 8, transmission_flags(c, &exp));
    r = send_info(c, opt, NBD_INFO_EXPORT, buf, 10);
    canon = exp.name ? exp.name : name;
    if (r == 0 && (want_name || strcmp(canon, name) != 0) && strlen(canon) <= NBD_MAX_STRING)
        r = send_info(c, opt, NBD_INFO_NAME, canon, strlen(canon));
    if (r == 0 && want_desc && exp.description) {
        size_t dlen = strnlen(exp.description, NBD_MAX_STRING);

        r = send_info(c, opt, NBD_INFO_DESCRIPTION, exp.description, dlen);
    }
    if (r == 0 && want_bs) {
        nbd_put32(buf, 1);
        nbd_put32(buf + 4, preferred_block_size(exp.bd));
        nbd_put32(buf + 8, NBD_MAX_PAYLOAD);
        r = send_info(c, opt, NBD_INFO_BLOCK_SIZE, buf, 12);
    }
    if (r < 0 || opt == NBD_OPT_INFO) {
        /* A probe is given back before the final reply, so the client never races it. */
        close_export(c, &exp);
        free(name);
        return r < 0 ? r : send_rep(c, opt, NBD_REP_ACK, NULL, 0);
    }
    r = send_rep(c, opt, NBD_REP_ACK, NULL, 0);
    if (r < 0) {
        close_export(c, &exp);
        free(name);
        return r;
    }
    enter_transmission(c, &exp, name);
    return OPT_TRANSMIT;
}

struct list_ctx {
    struct nbd_conn *c;
    int werr; /* the socket failed: the connection is over */
};

static int list_emit(void *ctx, const char *name, const char *description)
{
    struct list_ctx *lc = ctx;
    size_t nlen, dlen;
    uint8_t h[NBD_REP_HEADER_SIZE + 4];
    struct iovec iov[3];

    if (lc->werr)
        return lc->werr;
    if (!name)
        return 0;
    nlen = strlen(name);
    if (nlen > NBD_MAX_STRING)
        return 0; /* not reachable by any client: leave it out */
    dlen = description ? strnlen(description, NBD_MAX_STRING) : 0;
    nbd_put64(h, NBD_REP_MAGIC);
    nbd_put32(h + 8, NBD_OPT_LIST);
    nbd_put32(h + 12, NBD_REP_SERVER);
    nbd_put32(h + 16, (uint32_t)(4 + nlen + dlen));
    nbd_put32(h + 20, (uint32_t)nlen);
    iov[0] = (struct iovec){ .iov_base = h, .iov_len = sizeof(h) };
    iov[1] = (struct iovec){ .iov_base = (void *)name, .iov_len = nlen };
    iov[2] = (struct iovec){ .iov_base = (void *)description, .iov_len = dlen };
    lc->werr = nbd_conn_writev(lc->c, iov, dlen ? 3 : 2);
    return lc->werr;
}

static int opt_list(struct nbd_conn *c, uint32_t len)
{
    const struct nbd_server_config *cfg = nbd_server_cfg(c->srv);
    struct list_ctx lc = { .c = c };
    int r = 0;

    if (len != 0)
        return send_err(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
    if (cfg->resolver->list)
        r = cfg->resolver->list(cfg->opaque, list_emit, &lc);
    if (lc.werr)
        return lc.werr;
    if (r < 0)
        return send_open_error(c, NBD_OPT_LIST, r);
    return send_rep(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static bool str_eq(const uint8_t *p, uint32_t len, const char *s)
{
    return len == strlen(s) && memcmp(p, s, len) == 0;
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT; only base:allocation exists. */
static int opt_meta_context(struct nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
    bool set = opt == NBD_OPT_SET_META_CONTEXT, match = false;
    uint32_t namelen, nq, pos;
    struct nbd_export exp;
    uint8_t id[4];
    char *name;
    int r;

    if (set) {
        /* Replaces the earlier selection even when this request fails. */
        c->meta_requested = false;
        free(c->meta_export);
        c->meta_export = NULL;
        if (!c->structured)
            return send_err(c, opt, NBD_REP_ERR_INVALID, "structured replies not negotiated");
    }
    if (len < 8)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "option too short");
    namelen = nbd_get32(data);
    if (namelen > len - 8)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "export name length exceeds option");
    if (namelen > NBD_MAX_STRING)
        return send_err(c, opt, NBD_REP_ERR_TOO_BIG, "export name too long");
    pos = 4 + namelen;
    nq = nbd_get32(data + pos);
    pos += 4;
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t qlen;

        if (len - pos < 4)
            return send_err(c, opt, NBD_REP_ERR_INVALID, "query list exceeds option");
        qlen = nbd_get32(data + pos);
        pos += 4;
        if (qlen > len - pos)
            return send_err(c, opt, NBD_REP_ERR_INVALID, "query length exceeds option");
        if (qlen > NBD_MAX_STRING)
            return send_err(c, opt, NBD_REP_ERR_TOO_BIG, "query too long");
        if (str_eq(data + pos, qlen, NBD_META_BASE_ALLOCATION) ||
            (!set && str_eq(data + pos, qlen, "base:")))
            match = true;
        pos += qlen;
    }
    if (pos != len)
        return send_err(c, opt, NBD_REP_ERR_INVALID, "trailing data after queries");
    if (!set && nq == 0)
        match = true;
    if (memchr(data + 4, '\0', namelen))
        return send_err(c, opt, NBD_REP_ERR_INVALID, "export name contains NUL");
    name = dup_name(data + 4, namelen);
    if (!name)
        return -ENOMEM;

    r = open_export(c, name, NBD_OPEN_PROBE, &exp);
    if (r < 0) {
        free(name);
        return send_open_error(c, opt, r);
    }
    close_export(c, &exp);

    r = 0;
    if (match) {
        uint8_t h[NBD_REP_HEADER_SIZE];
        size_t mlen = strlen(NBD_META_BASE_ALLOCATION);
        struct iovec iov[3] = {
            { .iov_base = h, .iov_len = sizeof(h) },
            { .iov_base = id, .iov_len = sizeof(id) },
            { .iov_base = (void *)NBD_META_BASE_ALLOCATION, .iov_len = mlen },
        };

        /* Context ids are reserved (zero) when listing; when selecting, ours is 1. */
        nbd_put32(id, set ? 1 : 0);
        nbd_put64(h, NBD_REP_MAGIC);
        nbd_put32(h + 8, opt);
        nbd_put32(h + 12, NBD_REP_META_CONTEXT);
        nbd_put32(h + 16, (uint32_t)(sizeof(id) + mlen));
        r = nbd_conn_writev(c, iov, 3);
    }
    if (r == 0)
        r = send_rep(c, opt, NBD_REP_ACK, NULL, 0);
    if (r == 0 && set && match) {
        c->meta_requested = true;
        c->meta_export = name;
        name = NULL;
    }
    free(name);
    return r;
}

static int handle_option(struct nbd_conn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
    switch (opt) {
    case NBD_OPT_EXPORT_NAME:
        return opt_export_name(c, data, len);
    case NBD_OPT_ABORT:
        send_rep(c, opt, NBD_REP_ACK, NULL, 0); /* the client may already be gone */
        return OPT_END;
    case NBD_OPT_LIST:
        return opt_list(c, len);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info_go(c, opt, data, len);
    case NBD_OPT_STRUCTURED_REPLY:
        if (len != 0)
            return send_err(c, opt, NBD_REP_ERR_INVALID, "option takes no data");
        c->structured = true;
        return send_rep(c, opt, NBD_REP_ACK, NULL, 0);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return opt_meta_context(c, opt, data, len);
    default:
        return send_err(c, opt, NBD_REP_ERR_UNSUP, "option not supported");
    }
}

int nbd_handshake(struct nbd_conn *c)
{
    uint8_t hello[18], cflags[4];
    int r;

    nbd_put64(hello, NBD_MAGIC);
    nbd_put64(hello + 8, NBD_IHAVEOPT);
    nbd_put16(hello + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    r = nbd_conn_write(c, hello, sizeof(hello));
    if (r < 0)
        return r;
    r = nbd_conn_read(c, cflags, sizeof(cflags), true);
    if (r == NBD_EOF)
        return 0;
    if (r < 0)
        return r;
    if (nbd_get32(cflags) & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
        return -EPROTO;
    c->no_zeroes = nbd_get32(cflags) & NBD_FLAG_C_NO_ZEROES;

    for (;;) {
        uint8_t h[NBD_OPT_HEADER_SIZE];
        uint32_t opt, len;
        uint8_t *data = NULL;

        r = nbd_conn_read(c, h, sizeof(h), true);
        if (r == NBD_EOF)
            return 0;
        if (r < 0)
            return r;
        if (nbd_get64(h) != NBD_IHAVEOPT)
            return -EPROTO;
        opt = nbd_get32(h + 8);
        len = nbd_get32(h + 12);
        if (len > NBD_MAX_OPTION_LEN) {
            if (len > NBD_MAX_OPTION_SKIP || opt == NBD_OPT_EXPORT_NAME)
                return -EPROTO;
            r = nbd_conn_discard(c, len);
            if (r == 0)
                r = send_err(c, opt, NBD_REP_ERR_TOO_BIG, "option too long");
            if (r < 0)
                return r;
            continue;
        }
        if (len > 0) {
            data = malloc(len);
            if (!data)
                return -ENOMEM;
            r = nbd_conn_read(c, data, len, false);
            if (r < 0) {
                free(data);
                return r;
            }
        }
        /* Never hand a NULL buffer on: memchr and memcpy want a pointer even for 0 bytes. */
        r = handle_option(c, opt, data ? data : (const uint8_t *)"", len);
        free(data);
        if (r < 0)
            return r;
        if (r == OPT_TRANSMIT)
            return 1;
        if (r == OPT_END)
            return 0;
    }
}
