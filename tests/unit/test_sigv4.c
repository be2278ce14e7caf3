/*
 * test_sigv4.c — SigV4 verification against requests signed by botocore itself
 * (tests/vectors/sigv4/vectors.json, made by make_vectors.py), and the failures each kind of
 * tampering must cause.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <strings.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "crypto/crypto.h"

static const char *vectors_path;

struct vec {
    struct api_request req;
    struct api_header headers[32];
    char *body;
    size_t body_len;
    const char *secret;
    int64_t now_ms;
    json_t *doc;
};

static void load(json_t *v, struct vec *out)
{
    memset(out, 0, sizeof(*out));
    out->req.method = json_string_value(json_object_get(v, "method"));
    out->req.path = json_string_value(json_object_get(v, "path"));
    out->req.query = json_string_value(json_object_get(v, "query"));
    json_t *h = json_object_get(v, "headers");
    for (size_t i = 0; i < json_array_size(h) && i < 32; i++) {
        out->headers[i].name = json_string_value(json_array_get(json_array_get(h, i), 0));
        out->headers[i].value = json_string_value(json_array_get(json_array_get(h, i), 1));
        out->req.nheaders++;
    }
    out->req.headers = out->headers;
    const char *b64 = json_string_value(json_object_get(v, "body_b64"));
    out->body = malloc(base64_decoded_max(strlen(b64)) + 1);
    assert_int_equal(base64_decode(b64, strlen(b64), false, out->body, &out->body_len), 0);
    out->req.body = out->body;
    out->req.body_len = out->body_len;
    out->secret = json_string_value(json_object_get(v, "secret"));
    assert_int_equal(time_parse_iso(json_string_value(json_object_get(v, "now")), &out->now_ms), 0);
}

/* Verifies a request as the dispatcher does; returns the failure kind. */
static enum sigv4_fail verify(const struct api_request *req, const char *secret, int64_t now)
{
    struct sigv4_auth a;
    const char *msg;
    char buf[256];
    enum sigv4_fail f = sigv4_parse(req, &a, &msg, buf, sizeof(buf));
    if (f != SIGV4_OK)
        return f;
    f = sigv4_check_time(&a, now, 900, buf, sizeof(buf));
    if (f != SIGV4_OK)
        return f;
    char mine[65];
    f = sigv4_sign(req, &a, secret, strcmp(a.service, "ebs") == 0, NULL, mine);
    if (f == SIGV4_OK && !crypto_memeq(mine, a.signature, 64) && a.presigned)
        f = sigv4_sign(req, &a, secret, false, "UNSIGNED-PAYLOAD", mine);
    if (f != SIGV4_OK)
        return f;
    return crypto_memeq(mine, a.signature, 64) ? SIGV4_OK : SIGV4_MISMATCH;
}

static void test_botocore_vectors(void **state)
{
    (void)state;
    json_error_t je;
    json_t *all = json_load_file(vectors_path, 0, &je);
    assert_non_null(all);
    assert_true(json_array_size(all) >= 10);
    for (size_t i = 0; i < json_array_size(all); i++) {
        json_t *v = json_array_get(all, i);
        struct vec x;
        load(v, &x);
        const char *name = json_string_value(json_object_get(v, "name"));
        enum sigv4_fail f = verify(&x.req, x.secret, x.now_ms);
        if (f != SIGV4_OK)
            fail_msg("vector %s: failure %d", name, f);

        /* The wrong secret fails. */
        assert_int_equal(verify(&x.req, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEZ", x.now_ms),
                         SIGV4_MISMATCH);
        /* Sixteen minutes later the request has expired; sixteen earlier it is not yet
         * valid (presigned URLs live 300 s). */
        assert_int_equal(verify(&x.req, x.secret, x.now_ms + 16 * 60000), SIGV4_EXPIRED);
        assert_int_equal(verify(&x.req, x.secret, x.now_ms - 16 * 60000), SIGV4_EXPIRED);
        /* A changed body fails (a presigned URL does not sign the body). */
        if (x.body_len > 0 && !json_is_true(json_object_get(v, "presigned"))) {
            x.body[0] ^= 0x20;
            enum sigv4_fail g = verify(&x.req, x.secret, x.now_ms);
            assert_true(g == SIGV4_MISMATCH || g == SIGV4_PAYLOAD_HASH);
            x.body[0] ^= 0x20;
        }
        /* A changed method or path fails. */
        const char *m = x.req.method;
        x.req.method = strcmp(m, "GET") ? "GET" : "POST";
        assert_int_equal(verify(&x.req, x.secret, x.now_ms), SIGV4_MISMATCH);
        x.req.method = m;
        const char *p = x.req.path;
        x.req.path = "/other";
        assert_int_equal(verify(&x.req, x.secret, x.now_ms), SIGV4_MISMATCH);
        x.req.path = p;
        /* A changed signed header (the host) fails. */
        for (size_t k = 0; k < x.req.nheaders; k++) {
            if (strcasecmp(x.headers[k].name, "Host") == 0) {
                const char *old = x.headers[k].value;
                x.headers[k].value = "example.com";
                assert_int_equal(verify(&x.req, x.secret, x.now_ms), SIGV4_MISMATCH);
                x.headers[k].value = old;
            }
        }
        assert_int_equal(verify(&x.req, x.secret, x.now_ms), SIGV4_OK);
        free(x.body);
    }
    json_decref(all);
}

static void test_parse_failures(void **state)
{
    (void)state;
    struct api_header h[3] = { { "Host", "x" }, { "X-Amz-Date", "20261204T202858Z" } };
    struct api_request req = { .method = "POST",
                               .path = "/",
                               .query = "",
                               .headers = h,
                               .nheaders = 2,
                               .body = "",
                               .body_len = 0 };
    struct sigv4_auth a;
    const char *msg;
    char buf[256];
    assert_int_equal(sigv4_parse(&req, &a, &msg, buf, sizeof(buf)), SIGV4_MISSING);
    static const struct {
        const char *auth;
        enum sigv4_fail want;
    } cases[] = {
        { "AWS4-HMAC-SHA1 Credential=a/20261204/r/s/aws4_request", SIGV4_INCOMPLETE },
        { "AWS4-HMAC-SHA256 Credential=AKIA/20261204/us-east-1/ec2/aws4_request, "
          "SignedHeaders=host;x-amz-date",
          SIGV4_INCOMPLETE },
        { "AWS4-HMAC-SHA256 Credential=AKIA/20261204/us-east-1/ec2/aws4_request, "
          "SignedHeaders=x-amz-date, Signature="
          "0000000000000000000000000000000000000000000000000000000000000000",
          SIGV4_HOST },
        { "AWS4-HMAC-SHA256 Credential=AKIA/20261205/us-east-1/ec2/aws4_request, "
          "SignedHeaders=host;x-amz-date, Signature="
          "0000000000000000000000000000000000000000000000000000000000000000",
          SIGV4_SCOPE_DATE },
        { "AWS4-HMAC-SHA256 Credential=AKIA/20261204/us-east-1/ec2/aws5_request, "
          "SignedHeaders=host;x-amz-date, Signature="
          "0000000000000000000000000000000000000000000000000000000000000000",
          SIGV4_INCOMPLETE },
        { "AWS4-HMAC-SHA256 Credential=AKIA/20261204/us-east-1/ec2/aws4_request, "
          "SignedHeaders=host;x-amz-date, Signature=XYZ",
          SIGV4_INCOMPLETE },
        { "AWS4-HMAC-SHA256 Credential=AKIA/20261204/us-east-1/ec2/aws4_request, "
          "SignedHeaders=Host;X-Amz-Date, Signature="
          "0000000000000000000000000000000000000000000000000000000000000000",
          SIGV4_INCOMPLETE },
        { "AWS4-HMAC-SHA256 Credential=AKIA/20261204/us-east-1/ec2/aws4_request, "
          "SignedHeaders=host;x-amz-date, Signature="
          "0000000000000000000000000000000000000000000000000000000000000000",
          SIGV4_OK },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        h[2].name = "Authorization";
        h[2].value = cases[i].auth;
        req.nheaders = 3;
        enum sigv4_fail f = sigv4_parse(&req, &a, &msg, buf, sizeof(buf));
        if (f != cases[i].want)
            fail_msg("case %zu: got %d want %d (%s)", i, f, cases[i].want, msg);
    }
    /* Neither X-Amz-Date nor Date. */
    h[1].name = "X-Other";
    assert_int_equal(sigv4_parse(&req, &a, &msg, buf, sizeof(buf)), SIGV4_NO_DATE);
    /* An RFC 7231 Date header is accepted instead. */
    h[1].name = "Date";
    h[1].value = "Fri, 04 Dec 2026 20:28:58 GMT";
    assert_int_equal(sigv4_parse(&req, &a, &msg, buf, sizeof(buf)), SIGV4_OK);
    assert_string_equal(a.amz_date, "20261204T202858Z");
}

int main(int argc, char **argv)
{
    vectors_path = argc > 1 ? argv[1] : "tests/vectors/sigv4/vectors.json";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_botocore_vectors),
        cmocka_unit_test(test_parse_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
