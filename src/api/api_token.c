/*
 * api_token.c — NextToken: opaque, tamper-evident pagination tokens.
 *
 * A token is base64url(version || position || mac), where mac is the first 16 bytes of
 * HMAC-SHA256 under a subkey of the master key over the version, the operation, the account,
 * the region and the position.  A token is therefore only good for the caller, operation and
 * region that received it, and any change to it is detected.  The position is the sort key of
 * the last item returned (keyset pagination: items created or deleted between pages never
 * shift the rest).
 */
#include "api/api_int.h"
#include "crypto/crypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_VERSION 1
#define TOKEN_MAC     16
#define TOKEN_POS_MAX 512

static void token_mac(struct api_call *call, const uint8_t *pos, size_t n, uint8_t out[SHA256_LEN])
{
    struct buf m;
    buf_init(&m, TOKEN_POS_MAX + 256);
    uint8_t v = TOKEN_VERSION;
    buf_append(&m, &v, 1);
    buf_printf(&m, "%s%c%s%c%s%c", call->mop ? call->mop->name : "", 0, call->account_id, 0,
               call->region, 0);
    buf_append(&m, pos, n);
    crypto_hmac_sha256(call->api->token_key, sizeof(call->api->token_key), m.data, m.len, out);
    buf_free(&m);
}

char *api_token_make(struct api_call *call, const char *position)
{
    size_t n = strlen(position);
    if (n > TOKEN_POS_MAX)
        return NULL;
    uint8_t raw[1 + TOKEN_POS_MAX + TOKEN_MAC], mac[SHA256_LEN];
    raw[0] = TOKEN_VERSION;
    memcpy(raw + 1, position, n);
    token_mac(call, (const uint8_t *)position, n, mac);
    memcpy(raw + 1 + n, mac, TOKEN_MAC);
    char *out = malloc(base64_encoded_len(1 + n + TOKEN_MAC) + 1);
    if (out)
        base64url_encode(raw, 1 + n + TOKEN_MAC, out);
    return out;
}

int api_token_open(struct api_call *call, const char *token, char *position, size_t poslen)
{
    size_t tl = strlen(token), n;
    uint8_t raw[1 + TOKEN_POS_MAX + TOKEN_MAC + 4], mac[SHA256_LEN];
    if (tl == 0 || base64_decoded_max(tl) > sizeof(raw) ||
        base64_decode(token, tl, true, raw, &n) < 0 || n < 1 + TOKEN_MAC || raw[0] != TOKEN_VERSION)
        goto invalid;
    size_t pn = n - 1 - TOKEN_MAC;
    token_mac(call, raw + 1, pn, mac);
    if (!crypto_memeq(mac, raw + 1 + pn, TOKEN_MAC) || pn >= poslen)
        goto invalid;
    memcpy(position, raw + 1, pn);
    position[pn] = '\0';
    return 0;
invalid:
    return err_set(&call->err, -EINVAL, "InvalidNextToken",
                   "The specified token '%.80s' is invalid",
                   str_utf8_valid(token, strlen(token)) ? token : "");
}

int api_page(struct api_call *call, json_t *in, json_t *items, const char *key, int64_t min,
             int64_t max, json_t **ret_page, char **ret_next)
{
    json_t *mr = json_object_get(in, "MaxResults");
    int64_t limit = -1;
    if (mr) {
        limit = json_integer_value(mr);
        if (limit < min)
            return err_set(&call->err, -EINVAL, "InvalidParameterValue",
                           "Value ( %lld ) for parameter maxResults is invalid. Expecting a value "
                           "greater than or equal to %lld.",
                           (long long)limit, (long long)min);
        /* Above the largest page EC2 returns its largest page (the AWS CLI asks for 1000). */
        if (limit > max)
            limit = max;
    }
    char after[TOKEN_POS_MAX + 1] = "";
    const char *tok = jstr(in, "NextToken");
    bool resume = tok && *tok;
    if (resume) {
        int rc = api_token_open(call, tok, after, sizeof(after));
        if (rc < 0)
            return rc;
    }
    json_t *page = json_array();
    size_t i = 0, n = json_array_size(items);
    if (resume)
        while (i < n && strcmp(jstr(json_array_get(items, i), key) ?: "", after) <= 0)
            i++;
    for (; i < n && (limit < 0 || (int64_t)json_array_size(page) < limit); i++)
        json_array_append(page, json_array_get(items, i));
    *ret_next = NULL;
    if (i < n && json_array_size(page) > 0) {
        *ret_next =
            api_token_make(call, jstr(json_array_get(page, json_array_size(page) - 1), key));
        if (!*ret_next) {
            json_decref(page);
            return err_set(&call->err, -ENOMEM, "InternalError", "cannot make a token");
        }
    }
    *ret_page = page;
    return 0;
}

int api_page_into(struct api_call *call, json_t *in, json_t *items, const char *key, int64_t min,
                  int64_t max, const char *result_key, json_t **ret)
{
    json_t *page;
    char *next = NULL;
    int rc = api_page(call, in, items, key, min, max, &page, &next);
    if (rc < 0)
        return rc;
    *ret = json_pack("{s:o}", result_key, page);
    if (next)
        json_object_set_new(*ret, "NextToken", json_string(next));
    free(next);
    return 0;
}
