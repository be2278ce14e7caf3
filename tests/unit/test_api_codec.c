/*
 * test_api_codec.c — the model-driven codecs: EC2 and Query decoding with AWS's errors, the XML
 * writer, JSON and REST-JSON, filters and pagination tokens.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

static int decode(const char *op, const char *form, json_t **ret, struct err *e)
{
    struct api_params p = { 0 };
    assert_int_equal(api_params_parse(&p, form, strlen(form), true), 0);
    const struct model_op *mop = model_op_find(&model_ec2, op);
    assert_non_null(mop);
    memset(e, 0, sizeof(*e));
    int rc = api_query_decode(mop->input, &p, true, ret, e);
    api_params_free(&p);
    return rc;
}

static void test_ec2_decode_lists_in_index_order(void **state)
{
    (void)state;
    json_t *in;
    struct err e;
    assert_int_equal(
        decode("DescribeRegions",
               "Action=DescribeRegions&Version=2016-11-15&RegionName.2=b&"
               "RegionName.10=c&RegionName.1=a&Filter.2.Name=f2&Filter.1.Name=f1&"
               "Filter.1.Value.1=x+y&Filter.1.Value.2=%2A&dryRun=TRUE&AllRegions=false",
               &in, &e),
        0);
    json_t *names = json_object_get(in, "RegionNames");
    assert_int_equal(json_array_size(names), 3);
    assert_string_equal(json_string_value(json_array_get(names, 0)), "a");
    assert_string_equal(json_string_value(json_array_get(names, 1)), "b");
    assert_string_equal(json_string_value(json_array_get(names, 2)), "c");
    json_t *f = json_object_get(in, "Filters");
    assert_string_equal(jstr(json_array_get(f, 0), "Name"), "f1");
    assert_string_equal(jstr(json_array_get(f, 1), "Name"), "f2");
    json_t *v = json_object_get(json_array_get(f, 0), "Values");
    assert_string_equal(json_string_value(json_array_get(v, 0)), "x y");
    assert_string_equal(json_string_value(json_array_get(v, 1)), "*");
    assert_true(json_is_true(json_object_get(in, "DryRun")));
    assert_true(json_is_false(json_object_get(in, "AllRegions")));
    json_decref(in);
}

static void test_ec2_decode_errors(void **state)
{
    (void)state;
    json_t *in = NULL;
    struct err e;
    assert_int_equal(decode("DescribeRegions", "Colour=blue", &in, &e), -EINVAL);
    assert_string_equal(e.code, "UnknownParameter");
    assert_non_null(strstr(e.msg, "Colour"));
    assert_int_equal(decode("DescribeRegions", "RegionName.0=a", &in, &e), -EINVAL);
    assert_string_equal(e.code, "UnknownParameter");
    assert_int_equal(decode("DescribeRegions", "RegionName.01=a", &in, &e), -EINVAL);
    assert_int_equal(decode("DescribeRegions", "RegionName=a", &in, &e), -EINVAL);
    assert_int_equal(decode("DescribeRegions", "RegionName.1.x=a", &in, &e), -EINVAL);
    assert_int_equal(decode("DescribeRegions", "Filter.1=a", &in, &e), -EINVAL);
    assert_int_equal(decode("DescribeRegions", "Filter..Name=a", &in, &e), -EINVAL);
    assert_int_equal(decode("DescribeRegions", "AllRegions=yes", &in, &e), -EINVAL);
    assert_string_equal(e.code, "InvalidParameterValue");
    assert_int_equal(decode("DescribeTags", "MaxResults=12x", &in, &e), -EINVAL);
    assert_string_equal(e.code, "InvalidParameterValue");
    assert_int_equal(decode("DescribeTags", "MaxResults=2147483648", &in, &e), -EINVAL);
    assert_int_equal(decode("DescribeAccountAttributes", "AttributeName.1=nope", &in, &e), -EINVAL);
    assert_string_equal(e.code, "InvalidParameterValue");
    assert_int_equal(decode("DescribeRegions", "RegionName.1=%FF", &in, &e), -EINVAL);
    assert_string_equal(e.code, "InvalidParameterValue");
    /* CreateTags requires Resources: MissingParameter names the wire name. */
    assert_int_equal(decode("CreateTags", "Tag.1.Key=a", &in, &e), -EINVAL);
    assert_string_equal(e.code, "MissingParameter");
    assert_non_null(strstr(e.msg, "ResourceId"));
    assert_int_equal(decode("CreateTags", "ResourceId.1=vol-1&Tag.1.Key=a&Tag.1.Value=b", &in, &e),
                     0);
    json_decref(in);
}

static void test_query_protocol_members(void **state)
{
    (void)state;
    /* STS GetCallerIdentity takes nothing: anything else is unknown. */
    struct api_params p = { 0 };
    const char *form = "Action=GetCallerIdentity&Version=2011-06-15&Extra=1";
    assert_int_equal(api_params_parse(&p, form, strlen(form), true), 0);
    json_t *in;
    struct err e = { 0 };
    const struct model_op *mop = model_op_find(&model_sts, "GetCallerIdentity");
    assert_int_equal(api_query_decode(mop->input, &p, false, &in, &e), -EINVAL);
    assert_string_equal(e.code, "UnknownParameter");
    api_params_free(&p);
}

static void test_xml_response(void **state)
{
    (void)state;
    const struct model_op *op = model_op_find(&model_ec2, "DescribeRegions");
    json_t *out = json_pack("{s:[{s:s, s:s, s:s}]}", "Regions", "RegionName", "a<&>\"'", "Endpoint",
                            "h", "OptInStatus", "x");
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(api_xml_response(&b, &model_ec2, op, out, "rid-1"), 0);
    assert_non_null(strstr(b.data, "<DescribeRegionsResponse "
                                   "xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
                                   "<requestId>rid-1</requestId><regionInfo><item>"));
    assert_non_null(strstr(b.data, "<regionName>a&lt;&amp;&gt;\"'</regionName>"));
    assert_non_null(strstr(b.data, "<regionEndpoint>h</regionEndpoint>"));
    json_decref(out);
    buf_reset(&b);
    out = json_pack("{s:[]}", "Regions");
    assert_int_equal(api_xml_response(&b, &model_ec2, op, out, "r"), 0);
    assert_non_null(strstr(b.data, "<regionInfo/>"));
    json_decref(out);
    /* No output shape: EC2 answers <return>true</return>. */
    buf_reset(&b);
    assert_int_equal(
        api_xml_response(&b, &model_ec2, model_op_find(&model_ec2, "CreateTags"), NULL, "r"), 0);
    assert_non_null(strstr(b.data, "<return>true</return></CreateTagsResponse>"));
    /* Query protocol: a result wrapper and response metadata. */
    buf_reset(&b);
    out = json_pack("{s:s, s:s, s:s}", "UserId", "1", "Account", "1", "Arn", "arn");
    assert_int_equal(
        api_xml_response(&b, &model_sts, model_op_find(&model_sts, "GetCallerIdentity"), out, "r9"),
        0);
    assert_non_null(strstr(b.data, "<GetCallerIdentityResult><UserId>1</UserId>"));
    assert_non_null(strstr(b.data, "<ResponseMetadata><RequestId>r9</RequestId>"));
    json_decref(out);
    buf_reset(&b);
    assert_int_equal(api_xml_error(&b, true, "AuthFailure", "bad <key>", "r1"), 0);
    assert_non_null(strstr(b.data, "<Response><Errors><Error><Code>AuthFailure</Code><Message>"
                                   "bad &lt;key&gt;</Message></Error></Errors>"
                                   "<RequestID>r1</RequestID></Response>"));
    buf_free(&b);
}

/* A small hand-made REST-JSON model: PUT /things/{Id}/parts/{N}?mode=M with a header, a blob
 * payload and a timestamp in the output. */
static const struct model_shape s_str = { .name = "S", .type = MT_STRING };
static const struct model_shape s_int = { .name = "I", .type = MT_INTEGER, .has_min = 1, .min = 0 };
static const struct model_shape s_blob = { .name = "B", .type = MT_BLOB };
static const struct model_shape s_ts = { .name = "T", .type = MT_TIMESTAMP };
static const struct model_member m_in[] = {
    { "Id", "Id", "Id", &s_str, MF_REQUIRED, ML_URI },
    { "N", "N", "N", &s_int, MF_REQUIRED, ML_URI },
    { "Mode", "mode", "mode", &s_str, 0, ML_QUERY },
    { "Len", "x-len", "x-len", &s_int, MF_REQUIRED, ML_HEADER },
    { "Data", "Data", "Data", &s_blob, MF_PAYLOAD, ML_BODY },
};
static const struct model_shape s_in = {
    .name = "In", .type = MT_STRUCT, .members = m_in, .nmembers = 5
};
static const struct model_member m_out[] = {
    { "When", "When", "When", &s_ts, 0, ML_BODY },
    { "Id", "Id", "x-id", &s_str, 0, ML_HEADER },
};
static const struct model_shape s_out = {
    .name = "Out", .type = MT_STRUCT, .members = m_out, .nmembers = 2
};
static const struct model_op op_put = { "PutPart", "PUT", "/things/{Id}/parts/{N}", &s_in, &s_out,
                                        NULL,      201 };

static void test_rest_json(void **state)
{
    (void)state;
    assert_true(api_rest_match(&op_put, "PUT", "/things/t-1/parts/7"));
    assert_true(api_rest_match(&op_put, "PUT", "/things/t-1/parts/7/"));
    assert_false(api_rest_match(&op_put, "GET", "/things/t-1/parts/7"));
    assert_false(api_rest_match(&op_put, "PUT", "/things/t-1/parts"));
    assert_false(api_rest_match(&op_put, "PUT", "/things/t-1/parts/7/more"));
    struct api_header h[] = { { "X-Len", "3" } };
    struct api_request req = { .method = "PUT",
                               .path = "/things/t%2D1/parts/7",
                               .query = "mode=fast",
                               .headers = h,
                               .nheaders = 1,
                               .body = "a\0b",
                               .body_len = 3 };
    json_t *in;
    struct err e = { 0 };
    assert_int_equal(api_rest_decode(&op_put, &req, &in, &e), 0);
    assert_string_equal(jstr(in, "Id"), "t-1");
    assert_int_equal(json_integer_value(json_object_get(in, "N")), 7);
    assert_string_equal(jstr(in, "Mode"), "fast");
    assert_int_equal(json_integer_value(json_object_get(in, "Len")), 3);
    assert_int_equal(json_string_length(json_object_get(in, "Data")), 3);
    assert_memory_equal(json_string_value(json_object_get(in, "Data")), "a\0b", 3);
    json_decref(in);
    req.path = "/things/t-1/parts/x";
    assert_int_equal(api_rest_decode(&op_put, &req, &in, &e), -EINVAL);
    req.path = "/things/t-1/parts/-1";
    assert_int_equal(api_rest_decode(&op_put, &req, &in, &e), -EINVAL);
    req.path = "/things/t-1/parts/1";
    req.nheaders = 0;
    assert_int_equal(api_rest_decode(&op_put, &req, &in, &e), -EINVAL);
    assert_string_equal(e.code, "MissingParameter");

    struct api_response resp;
    memset(&resp, 0, sizeof(resp));
    buf_init(&resp.body, 1 << 20);
    json_t *out = json_pack("{s:I, s:s}", "When", (json_int_t)1796416138500LL, "Id", "t-1");
    assert_int_equal(api_rest_encode(&op_put, out, &resp), 0);
    assert_int_equal(resp.status, 201);
    assert_string_equal(resp.body.data, "{\"When\":1796416138.5}");
    assert_int_equal(resp.nheaders, 1);
    assert_string_equal(resp.headers[0].name, "x-id");
    assert_string_equal(resp.headers[0].value, "t-1");
    json_decref(out);
    buf_free(&resp.body);
}

static void test_json_decode(void **state)
{
    (void)state;
    static const struct model_member m[] = {
        { "Name", "Name", "Name", &s_str, MF_REQUIRED, ML_BODY },
        { "Blob", "Blob", "Blob", &s_blob, 0, ML_BODY },
        { "At", "At", "At", &s_ts, 0, ML_BODY },
    };
    static const struct model_shape s = {
        .name = "X", .type = MT_STRUCT, .members = m, .nmembers = 3
    };
    json_t *in;
    struct err e = { 0 };
    const char *body = "{\"Name\":\"n\",\"Blob\":\"aGk=\",\"At\":1796416138.25}";
    assert_int_equal(api_json_decode(&s, body, strlen(body), &in, &e), 0);
    assert_string_equal(json_string_value(json_object_get(in, "Blob")), "hi");
    assert_int_equal(json_integer_value(json_object_get(in, "At")), 1796416138250LL);
    json_decref(in);
    const char *bad[] = {
        "{\"Name\":1}", "{\"Blob\":\"***\",\"Name\":\"n\"}", "[",
        "{}",           "{\"Name\":\"n\",\"Other\":1}",      "{\"Name\":\"a\",\"Name\":\"b\"}"
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&e, 0, sizeof(e));
        assert_int_equal(api_json_decode(&s, bad[i], strlen(bad[i]), &in, &e), -EINVAL);
        assert_non_null(e.code);
    }
}

static void test_filters(void **state)
{
    (void)state;
    static const struct api_filter_def defs[] = {
        { "name", "Name", 0, NULL }, { "attachment.id", "Attachments.Id", 0, NULL },
        { "flag", "Flag", 0, NULL }, { "created", "Created", API_FILTER_TIME, NULL },
        { NULL, NULL, 0, NULL },
    };
    json_t *item = json_pack("{s:s, s:[{s:s},{s:s}], s:b, s:I, s:[{s:s, s:s}]}", "Name", "web-01",
                             "Attachments", "Id", "i-1", "Id", "i-2", "Flag", 1, "Created",
                             (json_int_t)1796416138000LL, "Tags", "Key", "env", "Value", "prod");
    struct {
        const char *json;
        bool match;
    } cases[] = {
        { "{\"Filters\":[{\"Name\":\"name\",\"Values\":[\"web-*\"]}]}", true },
        { "{\"Filters\":[{\"Name\":\"name\",\"Values\":[\"db-*\",\"web-0?\"]}]}", true },
        { "{\"Filters\":[{\"Name\":\"name\",\"Values\":[\"web\"]}]}", false },
        { "{\"Filters\":[{\"Name\":\"attachment.id\",\"Values\":[\"i-2\"]}]}", true },
        { "{\"Filters\":[{\"Name\":\"flag\",\"Values\":[\"true\"]}]}", true },
        { "{\"Filters\":[{\"Name\":\"flag\",\"Values\":[\"false\"]}]}", false },
        { "{\"Filters\":[{\"Name\":\"created\",\"Values\":[\"2026-12-04T*\"]}]}", true },
        { "{\"Filters\":[{\"Name\":\"tag:env\",\"Values\":[\"prod\"]}]}", true },
        { "{\"Filters\":[{\"Name\":\"tag:env\",\"Values\":[\"dev\"]}]}", false },
        { "{\"Filters\":[{\"Name\":\"tag-key\",\"Values\":[\"e*\"]}]}", true },
        { "{\"Filters\":[{\"Name\":\"tag-value\",\"Values\":[\"pro?\"]}]}", true },
        { "{\"Filters\":[{\"Name\":\"name\",\"Values\":[\"web-*\"]},"
          "{\"Name\":\"tag:env\",\"Values\":[\"dev\"]}]}",
          false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *in = json_loads(cases[i].json, 0, NULL);
        struct api_filters *f;
        struct err e = { 0 };
        assert_int_equal(api_filters_parse(in, defs, true, &f, &e), 0);
        if (api_filters_match(f, item) != cases[i].match)
            fail_msg("filter case %zu", i);
        api_filters_free(f);
        json_decref(in);
    }
    json_t *in = json_loads("{\"Filters\":[{\"Name\":\"size\",\"Values\":[\"1\"]}]}", 0, NULL);
    struct api_filters *f;
    struct err e = { 0 };
    assert_int_equal(api_filters_parse(in, defs, true, &f, &e), -EINVAL);
    assert_string_equal(e.code, "InvalidParameterValue");
    json_decref(in);
    json_decref(item);
}

static void test_tokens_and_paging(void **state)
{
    (void)state;
    struct api api;
    memset(&api, 0, sizeof(api));
    memset(api.token_key, 7, sizeof(api.token_key));
    const struct model_op *op = model_op_find(&model_ec2, "DescribeTags");
    struct api_call call = { .api = &api, .mop = op };
    strcpy(call.account_id, "111111111111");
    strcpy(call.region, "us-east-1");
    json_t *items = json_array();
    char id[16];
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof(id), "k%02d", i);
        json_array_append_new(items, json_pack("{s:s}", "Id", id));
    }
    json_t *in = json_pack("{s:i}", "MaxResults", 5);
    json_t *page;
    char *next;
    int seen = 0;
    for (int round = 0; round < 5; round++) {
        assert_int_equal(api_page(&call, in, items, "Id", 5, 1000, &page, &next), 0);
        for (size_t k = 0; k < json_array_size(page); k++) {
            snprintf(id, sizeof(id), "k%02d", seen++);
            assert_string_equal(jstr(json_array_get(page, k), "Id"), id);
        }
        json_decref(page);
        if (!next)
            break;
        json_object_set_new(in, "NextToken", json_string(next));
        free(next);
    }
    assert_int_equal(seen, 12);
    /* Another account, operation or region cannot use the token; a changed token fails. */
    json_object_set_new(in, "MaxResults", json_integer(5));
    json_object_del(in, "NextToken");
    assert_int_equal(api_page(&call, in, items, "Id", 5, 1000, &page, &next), 0);
    json_decref(page);
    assert_non_null(next);
    char pos[64];
    assert_int_equal(api_token_open(&call, next, pos, sizeof(pos)), 0);
    assert_string_equal(pos, "k04");
    strcpy(call.account_id, "222222222222");
    assert_int_equal(api_token_open(&call, next, pos, sizeof(pos)), -EINVAL);
    assert_string_equal(call.err.code, "InvalidNextToken");
    strcpy(call.account_id, "111111111111");
    next[3] = next[3] == 'A' ? 'B' : 'A';
    assert_int_equal(api_token_open(&call, next, pos, sizeof(pos)), -EINVAL);
    free(next);
    json_object_set_new(in, "MaxResults", json_integer(4));
    assert_int_equal(api_page(&call, in, items, "Id", 5, 1000, &page, &next), -EINVAL);
    assert_string_equal(call.err.code, "InvalidParameterValue");
    json_decref(in);
    json_decref(items);
}

/* The response cache: an entry answers only its key, at its data version and within its time
 * window, with the asker's request id; the least recently used go first when it is full. */
static void test_response_cache(void **state)
{
    (void)state;
    struct api_cache *c;
    assert_int_equal(api_cache_new(64 * 1024, &c), 0);
    const char *rid1 = "11111111-1111-4111-8111-111111111111";
    const char *rid2 = "22222222-2222-4222-8222-222222222222";
    char body[600];
    snprintf(body, sizeof(body), "<R><requestId>%s</requestId><x>%0500d</x></R>", rid1, 7);
    struct buf k1, k2, out;
    buf_init(&k1, 1024);
    buf_init(&k2, 1024);
    buf_init(&out, 1 << 20);
    buf_append(&k1, "acct\0us-east-1\0A", 16);
    buf_append(&k2, "acct\0us-east-1\0B", 16);

    assert_false(api_cache_get(c, &k1, 5, 1000, rid2, &out)); /* empty */
    api_cache_put(c, &k1, 5, 1000, 2000, body, strlen(body), rid1);
    assert_false(api_cache_get(c, &k2, 5, 1000, rid2, &out)); /* another key */
    assert_true(api_cache_get(c, &k1, 5, 1500, rid2, &out));
    assert_int_equal(out.len, strlen(body));
    char want[600];
    snprintf(want, sizeof(want), "<R><requestId>%s</requestId><x>%0500d</x></R>", rid2, 7);
    assert_memory_equal(out.data, want, out.len);
    /* Before its time: no answer, kept; at its end or a later version: no answer, dropped. */
    buf_reset(&out);
    assert_false(api_cache_get(c, &k1, 5, 999, rid2, &out));
    assert_true(api_cache_get(c, &k1, 5, 1999, rid2, &out));
    buf_reset(&out);
    assert_false(api_cache_get(c, &k1, 5, 2000, rid2, &out));
    assert_false(api_cache_get(c, &k1, 5, 1500, rid2, &out));
    api_cache_put(c, &k1, 5, 1000, 2000, body, strlen(body), rid1);
    assert_false(api_cache_get(c, &k1, 6, 1500, rid2, &out));
    assert_false(api_cache_get(c, &k1, 5, 1500, rid2, &out)); /* dropped by the miss */
    assert_int_equal(out.len, 0);
    /* An asker with an older version (it raced a commit) misses and leaves the newer answer;
     * a put at an older version does not replace it. */
    api_cache_put(c, &k1, 7, 1000, 2000, body, strlen(body), rid1);
    assert_false(api_cache_get(c, &k1, 6, 1500, rid2, &out));
    api_cache_put(c, &k1, 6, 1000, 2000, body, strlen(body), rid1);
    assert_true(api_cache_get(c, &k1, 7, 1500, rid2, &out));
    assert_false(api_cache_get(c, &k1, 6, 1500, rid2, &out));
    buf_reset(&out);
    assert_false(api_cache_get(c, &k1, 8, 1500, rid2, &out)); /* a later state: dropped */
    assert_false(api_cache_get(c, &k1, 7, 1500, rid2, &out));
    /* Not kept: a body without the request id near its start, a body over a quarter of the
     * cache. */
    api_cache_put(c, &k1, 5, 1000, 2000, body, strlen(body), rid2);
    assert_false(api_cache_get(c, &k1, 5, 1500, rid2, &out));
    char *big = malloc(20000);
    memset(big, 'x', 20000);
    memcpy(big, body, 60);
    api_cache_put(c, &k1, 5, 1000, 2000, big, 20000, rid1);
    assert_false(api_cache_get(c, &k1, 5, 1500, rid2, &out));
    free(big);
    /* Full: the least recently used entry goes first. */
    struct buf keys[200];
    for (int i = 0; i < 200; i++) {
        buf_init(&keys[i], 64);
        buf_printf(&keys[i], "key-%d", i);
        api_cache_put(c, &keys[i], 5, 0, INT64_MAX, body, strlen(body), rid1);
        if (i >= 1) /* keep key-0 in use */
            assert_true(api_cache_get(c, &keys[0], 5, 10, rid2, &out));
    }
    assert_true(api_cache_get(c, &keys[0], 5, 10, rid2, &out));
    assert_true(api_cache_get(c, &keys[199], 5, 10, rid2, &out));
    assert_false(api_cache_get(c, &keys[1], 5, 10, rid2, &out));
    int kept = 0;
    for (int i = 0; i < 200; i++) {
        kept += api_cache_get(c, &keys[i], 5, 10, rid2, &out);
        buf_free(&keys[i]);
    }
    assert_true(kept > 10 && kept < 200);
    assert_false(api_cache_get(NULL, &k1, 5, 10, rid2, &out));
    api_cache_free(c);
    buf_free(&k1);
    buf_free(&k2);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ec2_decode_lists_in_index_order),
        cmocka_unit_test(test_ec2_decode_errors),
        cmocka_unit_test(test_query_protocol_members),
        cmocka_unit_test(test_xml_response),
        cmocka_unit_test(test_rest_json),
        cmocka_unit_test(test_json_decode),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_tokens_and_paging),
        cmocka_unit_test(test_response_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
