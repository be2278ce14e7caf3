/*
 * util.h — the bottom layer: bounded buffers, string codecs, time, random ids, the error
 * struct that carries a domain error to the API edge, and the daemon's log line writer.
 *
 * Nothing here knows about AWS, SQLite or HTTP.  Every function that grows memory on behalf of a
 * client takes a hard cap.
 */
#ifndef AMID_UTIL_H
#define AMID_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED        __attribute__((unused))
#define PRINTF(a, b)  __attribute__((format(printf, a, b)))

/* ---- bounded growable buffer (curl's dynbuf) ---- */

/* A byte buffer that never grows past `max`.  `data` is always NUL-terminated when non-NULL,
 * so text can be used as a C string.  Zero-initialised with buf_init(). */
struct buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
};

/* Initialises an empty buffer that refuses to hold more than `max` bytes. */
void buf_init(struct buf *b, size_t max);
/* Appends `n` bytes.  Returns 0, -E2BIG when the cap would be passed (the buffer is unchanged),
 * or -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Makes the buffer `n` bytes longer and sets *ret to where those bytes start, for the caller to
 * fill all of them (what is there is undefined until then); the NUL after them is written.  As
 * buf_append otherwise. */
int buf_extend(struct buf *b, size_t n, char **ret);
/* Appends a C string; as buf_append. */
int buf_puts(struct buf *b, const char *s);
/* Appends formatted text; as buf_append. */
int buf_printf(struct buf *b, const char *fmt, ...) PRINTF(2, 3);
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Keeps the first `len` bytes (all of them when it holds no more), keeping the memory. */
void buf_truncate(struct buf *b, size_t len);
/* Empties the buffer, keeping its memory. */
void buf_reset(struct buf *b);
/* Frees the memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);
/* Returns the data (caller frees with free()) and leaves the buffer empty.  Never NULL unless
 * out of memory: an empty buffer gives "". */
char *buf_steal(struct buf *b);

/* ---- strings ---- */

bool str_startswith(const char *s, const char *prefix);
bool str_endswith(const char *s, const char *suffix);
/* strdup that aborts on out-of-memory is deliberately absent: callers handle NULL. */

/* Matches `s` against `pattern` where `*` matches any run and `?` any one character (EC2's
 * filter wildcards); `\*`, `\?` and `\\` match literally.  Linear in practice, never exponential.
 */
bool str_wildcard_match(const char *pattern, const char *s);
/* The tokens of such a pattern, for code that translates it (SQL pushdown). */
enum str_wc {
    STR_WC_END,     /* the pattern is used up */
    STR_WC_LITERAL, /* one byte that matches itself (escaped or not) */
    STR_WC_ONE,     /* `?`: any one byte */
    STR_WC_ANY,     /* `*`: any run of bytes, empty included */
};
/* Reads the token at *p and moves *p past it; a literal's byte goes to *ret_byte. */
enum str_wc str_wildcard_token(const char **p, char *ret_byte);

/* Whether `s` (of `n` bytes) is well-formed UTF-8 without NUL bytes. */
bool str_utf8_valid(const char *s, size_t n);

/* Lower-case hex of `n` bytes into `out` (2n+1 bytes, NUL-terminated). */
void hex_encode(const void *in, size_t n, char *out);
/* Decodes exactly `n` bytes of hex (2n characters, either case).  Returns 0 or -EINVAL. */
int hex_decode(const char *in, void *out, size_t n);

/* Standard base64 with padding.  base64_encode writes base64_encoded_len(n) bytes plus a NUL. */
size_t base64_encoded_len(size_t n);
void base64_encode(const void *in, size_t n, char *out);
/* Decodes base64 (standard alphabet, or URL-safe when `url` is true; padding optional).
 * `out` must hold base64_decoded_max(len) bytes.  Sets *ret_n.  Returns 0 or -EINVAL. */
size_t base64_decoded_max(size_t len);
int base64_decode(const char *in, size_t len, bool url, void *out, size_t *ret_n);
/* URL-safe base64 without padding. */
void base64url_encode(const void *in, size_t n, char *out);

/* Percent-decodes `in` (of `n` bytes) into `b`; with `plus`, '+' means space (forms).  Returns
 * 0, -EINVAL for a bad escape, or buf_append's errors. */
int uri_decode(struct buf *b, const char *in, size_t n, bool plus);
/* Percent-encodes as SigV4 demands: unreserved A-Z a-z 0-9 - _ . ~ kept, everything else %XX
 * upper-case; '/' kept when `keep_slash`. */
int uri_encode(struct buf *b, const char *in, size_t n, bool keep_slash);

/* ---- time ---- */

/* Milliseconds since the Unix epoch, from CLOCK_REALTIME. */
int64_t time_now_ms(void);
/* Monotonic microseconds, for durations. */
int64_t time_mono_us(void);
/* Formats `ms` as ISO 8601 with milliseconds, "2026-12-04T20:28:58.000Z" (25 bytes with NUL). */
void time_format_iso(int64_t ms, char out[32]);
/* Parses ISO 8601 ("2026-12-04T20:28:58Z", with optional fraction, "+00:00" offsets, or a date
 * only) or SigV4's basic format "20261204T202858Z".  Returns 0 or -EINVAL. */
int time_parse_iso(const char *s, int64_t *ret_ms);

/* ---- random ---- */

/* Fills `buf` with `n` bytes from the kernel's CSPRNG.  Returns 0 or a negative errno. */
int rand_bytes(void *buf, size_t n);
/* Writes `prefix` followed by `nhex` random lower-case hex digits, as EC2 ids ("vol-" + 17). */
int rand_id(char *out, size_t outlen, const char *prefix, int nhex);
/* A random (version 4) UUID in lower-case text, 36 characters and a NUL. */
int rand_uuid(char out[37]);
/* Whether `s` is an AWS account id: exactly 12 decimal digits. */
bool account_id_valid(const char *s);

/* ---- files ---- */

/* Writes all `n` bytes of `buf` at offset `off` of `fd` (retrying short writes and EINTR).
 * Returns 0, or the -errno of the pwrite that failed (what was written before stays). */
int fd_pwrite_all(int fd, const void *buf, size_t n, uint64_t off);

/* ---- domain errors ---- */

/* A domain error on its way to the API edge: an AWS error code ("InvalidVolume.NotFound") and a
 * message for the user.  The API layer maps the code to an HTTP status through one table. */
struct err {
    const char *code;   /* static string; NULL when no error is set */
    const char *reason; /* optional static sub-code (EBS ValidationException's Reason) */
    char msg[512];
};

/* Sets `e` (when non-NULL) and returns `rc` (a negative errno), for `return err_set(...)`. */
int err_set(struct err *e, int rc, const char *code, const char *fmt, ...) PRINTF(4, 5);

/* ---- logging (for the layer that decides: daemon and cli) ---- */

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };
/* Writes one line to stderr with a timestamp and level; thread-safe, one write(2) per line. */
void log_msg(enum log_level lvl, const char *fmt, ...) PRINTF(2, 3);
/* Sets the most verbose level printed (default LOG_INFO). */
void log_set_level(enum log_level lvl);

#endif
