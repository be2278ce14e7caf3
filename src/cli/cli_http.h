/*
 * cli_http.h — the command line's client for the EBS direct APIs (and the one EC2 call an
 * import needs to clean up after itself), on libcurl.
 *
 * It talks to whatever AWS_ENDPOINT_URL names — an amid daemon, local or remote, or AWS
 * itself — with the credentials of the environment, signing every request with SigV4 through
 * curl's signer (CURLOPT_AWS_SIGV4).  Curl 7.88 (Debian 12) signs the query string as given and
 * hashes no streamed body, so this client always hands it a canonical query (sorted,
 * percent-encoded as SigV4 demands) and an x-amz-content-sha256 header with the payload's hash;
 * for a block that hash is the block's SHA-256, computed once and also sent, base64, as
 * x-amz-Checksum.
 *
 * Throttling, 5xx answers and transport failures are retried with exponential backoff and
 * jitter (StartSnapshot with a client token, so a retry never makes a second snapshot).  Every
 * response body is capped.  Errors come back as the service's code and message.
 *
 * Threads: a `struct cli_ebs` is read-only once made and shared; each thread uses its own
 * `struct cli_ebs_conn` (one keep-alive connection).
 */
#ifndef AMID_CLI_HTTP_H
#define AMID_CLI_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cli_ebs;
struct cli_ebs_conn;

/* What went wrong: the service's error code and message, or a transport failure
 * (code "RequestError"). */
struct cli_ebs_err {
    long status;   /* HTTP status; 0 when no answer came */
    char code[96]; /* "ValidationException", "UnrecognizedClientException"... */
    char reason[64];
    char msg[512];
};

/* Formats `e` as one line: "CODE: message (HTTP status)". */
void cli_ebs_err_format(const struct cli_ebs_err *e, char *out, size_t outlen);

/*
 * Makes a client from the environment: the endpoint from AWS_ENDPOINT_URL_EBS or
 * AWS_ENDPOINT_URL (else AWS's regional endpoint), credentials from AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN, and the region from `region` when
 * non-NULL, else AWS_REGION, AWS_DEFAULT_REGION, else us-east-1.  Initialises libcurl; call it
 * before starting threads.  Returns 0 and *ret (free with cli_ebs_free, which wipes the
 * secret), or -EINVAL with `e` saying what is missing.
 */
int cli_ebs_new(const char *region, struct cli_ebs **ret, struct cli_ebs_err *e);
void cli_ebs_free(struct cli_ebs *c);
const char *cli_ebs_region(const struct cli_ebs *c);
const char *cli_ebs_endpoint(const struct cli_ebs *c);

/* One connection for one thread at a time.  Returns 0 or -ENOMEM.  Free with
 * cli_ebs_conn_free (accepts NULL). */
int cli_ebs_conn_new(struct cli_ebs *c, struct cli_ebs_conn **ret);
void cli_ebs_conn_free(struct cli_ebs_conn *k);

/*
 * The calls.  Each returns 0, or a negative errno with `e` set: -EACCES (authentication or
 * authorisation), -ENOENT (no such snapshot), -EINVAL (the service refused the request),
 * -EBADMSG (a reply that does not verify or parse), -EIO (the service or the network kept
 * failing after the retries).
 */

/* StartSnapshot (encrypted under `kms_key`, or the account's default key, when `encrypted`):
 * writes the new snapshot's id (at most 63 characters) to ret_id. */
int cli_ebs_start(struct cli_ebs_conn *k, int64_t size_gib, const char *description,
                  int timeout_min, bool encrypted, const char *kms_key, char ret_id[64],
                  struct cli_ebs_err *e);
/* PutSnapshotBlock of one 512 KiB block whose SHA-256 is `sha256`. */
int cli_ebs_put(struct cli_ebs_conn *k, const char *id, int64_t idx, const void *data,
                const uint8_t sha256[32], struct cli_ebs_err *e);
/* CompleteSnapshot with the number of blocks put and their LINEAR checksum.  Writes the
 * snapshot's status ("completed", or "pending" while the service finishes) to ret_status. */
int cli_ebs_complete(struct cli_ebs_conn *k, const char *id, int64_t changed_blocks,
                     const uint8_t linear[32], char ret_status[32], struct cli_ebs_err *e);
/*
 * One page of ListSnapshotBlocks from `page_token` (NULL: the first page): calls fn once per
 * block (the token is valid during the call only) and sets *ret_size_gib.  *ret_next is a new
 * string with the next page's token (caller frees), or NULL on the last page.  A negative
 * return from fn stops the listing and is returned.
 */
int cli_ebs_list(struct cli_ebs_conn *k, const char *id, const char *page_token,
                 int (*fn)(void *ctx, int64_t idx, const char *token), void *ctx,
                 int64_t *ret_size_gib, char **ret_next, struct cli_ebs_err *e);
/* GetSnapshotBlock into `buf` (512 KiB), verified against the x-amz-Checksum SHA-256 the
 * service sends (a block that does not verify is fetched again, then -EBADMSG). */
int cli_ebs_get(struct cli_ebs_conn *k, const char *id, int64_t idx, const char *token, void *buf,
                struct cli_ebs_err *e);
/* EC2 DeleteSnapshot (to AWS_ENDPOINT_URL_EC2 or AWS_ENDPOINT_URL), for cleaning up an
 * upload that failed. */
int cli_ec2_delete_snapshot(struct cli_ebs_conn *k, const char *id, struct cli_ebs_err *e);

#endif
