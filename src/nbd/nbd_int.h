/*
 * nbd_int.h — internals shared by the NBD server's files (not part of the module's interface).
 *
 * nbd_server.c owns the server and connection lifecycle (listeners, accept, threads, stop),
 * nbd_io.c the socket I/O of one connection (buffered reads with a handshake deadline, whole
 * writes), nbd_handshake.c the option haggling, nbd_transmit.c the transmission phase.
 */
#ifndef AMID_NBD_INT_H
#define AMID_NBD_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "nbd/nbd.h"

/* Caps on what a client can make the server hold or do. */
#define NBD_MAX_OPTION_LEN  (64u * 1024)        /* option data held in memory */
#define NBD_MAX_OPTION_SKIP (1024u * 1024)      /* larger options: drop the connection */
#define NBD_MAX_PAYLOAD     (32u * 1024 * 1024) /* READ/WRITE length */
#define NBD_CONN_BUDGET     (64u * 1024 * 1024) /* payload memory in flight per connection */
#define NBD_KEEP_BUF        (1024u * 1024)      /* worker buffers up to this are kept */
#define NBD_RBUF_SIZE       (64u * 1024)        /* input buffer per connection */
#define NBD_SNDBUF_SIZE     (2u * 1024 * 1024)  /* SO_SNDBUF asked for in transmission */
#define NBD_MAX_EXTENTS     1024u               /* descriptors in one BLOCK_STATUS reply */
#define NBD_READ_EXTENTS    64u                 /* extents looked at to sparsify a READ */
#define NBD_SPARSE_READ_MIN (64u * 1024)        /* READs from this size may send holes */
#define NBD_MIN_HOLE        4096u               /* smaller zero extents are sent as data */
#define NBD_ZERO_BUF_SIZE   (256u * 1024)       /* emulated WRITE_ZEROES step */

#define NBD_DEFAULT_WORKERS      16u
#define NBD_MAX_WORKERS          64u
#define NBD_DEFAULT_MAX_CONNS    256u
#define NBD_DEFAULT_HANDSHAKE_MS 30000u
#define NBD_DEFAULT_GRACE_MS     2000u

/* nbd_conn_read result when the peer closed before the first byte of a message. */
#define NBD_EOF 1

struct nbd_server;

struct nbd_conn {
    struct nbd_server *srv;
    int fd;
    pthread_t thread;
    bool own_thread; /* started by the server (joined by it) rather than nbd_server_handle_fd */
    bool joinable;   /* under srv->lock: `thread` is valid (set once pthread_create returned) */
    bool finished;   /* under srv->lock: fd closed, export released, no more use of srv */
    struct nbd_conn *next;

    /* Input: in transmission, whoever holds read_lock reads the next request. */
    pthread_mutex_t read_lock;
    uint8_t *rbuf;
    size_t rpos, rlen;
    int64_t deadline_ns; /* CLOCK_MONOTONIC deadline while negotiating; 0: none */

    /* Output: each reply is written whole under write_lock. */
    pthread_mutex_t write_lock;

    /* Negotiated during the handshake; read-only in transmission. */
    bool structured;
    bool no_zeroes;
    bool meta_requested;  /* SET_META_CONTEXT selected base:allocation ... */
    char *meta_export;    /* ... for this export name */
    bool meta_allocation; /* base:allocation usable in transmission */
    bool exp_open;
    struct nbd_export exp; /* as the resolver's open filled it */
    char *exp_name;        /* name the client opened */
    uint64_t size;
    uint16_t tflags;
    bool readonly;

    /* Transmission state. */
    int quit;   /* __atomic: stop reading requests */
    int reason; /* __atomic: first reason the connection ended (0: clean) */
    pthread_mutex_t budget_lock;
    pthread_cond_t budget_cond;
    uint64_t budget_used;
};

/* nbd_io.c */
int nbd_conn_read(struct nbd_conn *c, void *buf, size_t len, bool msg_start);
int nbd_conn_discard(struct nbd_conn *c, uint64_t len);
int nbd_conn_write(struct nbd_conn *c, const void *buf, size_t len);
int nbd_conn_writev(struct nbd_conn *c, struct iovec *iov, int iovcnt);
int64_t nbd_now_ns(void);
void nbd_conn_fail(struct nbd_conn *c, int reason);

/* nbd_handshake.c: 1 when transmission is to start, 0 for a clean end, or a negative errno. */
int nbd_handshake(struct nbd_conn *c);
void nbd_conn_release_export(struct nbd_conn *c);

/* nbd_transmit.c: serves requests until the connection ends; returns its reason. */
int nbd_transmit(struct nbd_conn *c);
uint32_t nbd_errno_to_wire(int err);

/* nbd_server.c */
const struct nbd_server_config *nbd_server_cfg(const struct nbd_server *s);
const void *nbd_server_zero_buf(const struct nbd_server *s);
void nbd_server_count(struct nbd_server *s, size_t field_offset, uint64_t n);

#define NBD_COUNT(srv, field, n) \
    nbd_server_count((srv), offsetof(struct nbd_stats, field), (uint64_t)(n))

#endif
