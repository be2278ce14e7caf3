/*
 * api_json.c — the JSON protocols: JSON 1.1 (KMS: one POST per call, X-Amz-Target names the
 * operation) and REST-JSON (EBS direct, DLM: the method and URI template name the operation,
 * members travel in the URI, query string, headers, a raw payload or a JSON body).
 *
 * On the wire timestamps are epoch seconds (numbers) and blobs base64; inside amid they are
 * milliseconds and raw bytes (api_model.h), so both directions convert while walking the shape.
 */
#include "api/api_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int bad(struct err *e, const char *path, const char *what)
{
    return err_set(e, -EINVAL, "SerializationException", "%s: %s", path ? path : "body", what);
}

/* Converts a wire value into amid's typed tree for `s`.  New reference in *ret. */
static int from_wire(const struct model_shape *s, json_t *v, const char *path, json_t **ret,
                     struct err *e)
{
    char sub[512];
    switch (s->type) {
    case MT_STRUCT: {
        if (!json_is_object(v))
            return bad(e, path, "expected an object");
        json_t *o = json_object();
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c)
        {
            const struct model_member *m = NULL;
            for (unsigned i = 0; i < s->nmembers && !m; i++)
                if (s->members[i].location == ML_BODY && strcmp(s->members[i].xname, k) == 0)
                    m = &s->members[i];
            snprintf(sub, sizeof(sub), "%s%s%s", path ? path : "", path ? "." : "", k);
            if (!m) {
                json_decref(o);
                return err_set(e, -EINVAL, "ValidationException", "Unknown parameter: %s", sub);
            }
            if (json_is_null(c))
                continue;
            json_t *t;
            int rc = from_wire(m->shape, c, sub, &t, e);
            if (rc < 0) {
                json_decref(o);
                return rc;
            }
            json_object_set_new(o, m->name, t);
        }
        *ret = o;
        return 0;
    }
    case MT_LIST: {
        if (!json_is_array(v))
            return bad(e, path, "expected a list");
        json_t *a = json_array();
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *t;
            snprintf(sub, sizeof(sub), "%s[%zu]", path ? path : "", i);
            int rc = from_wire(s->member->shape, json_array_get(v, i), sub, &t, e);
            if (rc < 0) {
                json_decref(a);
                return rc;
            }
            json_array_append_new(a, t);
        }
        *ret = a;
        return 0;
    }
    case MT_MAP: {
        if (!json_is_object(v))
            return bad(e, path, "expected a map");
        json_t *o = json_object();
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c)
        {
            json_t *t;
            snprintf(sub, sizeof(sub), "%s.%s", path ? path : "", k);
            int rc = from_wire(s->member->shape, c, sub, &t, e);
            if (rc < 0) {
                json_decref(o);
                return rc;
            }
            json_object_set_new(o, k, t);
        }
        *ret = o;
        return 0;
    }
    case MT_STRING:
        if (!json_is_string(v))
            return bad(e, path, "expected a string");
        *ret = json_incref(v);
        return 0;
    case MT_INTEGER:
    case MT_LONG:
        if (!json_is_integer(v))
            return bad(e, path, "expected an integer");
        if (s->type == MT_INTEGER &&
            (json_integer_value(v) < -2147483648LL || json_integer_value(v) > 2147483647LL))
            return bad(e, path, "integer out of range");
        *ret = json_incref(v);
        return 0;
    case MT_BOOLEAN:
        if (!json_is_boolean(v))
            return bad(e, path, "expected a boolean");
        *ret = json_incref(v);
        return 0;
    case MT_DOUBLE:
        if (!json_is_number(v))
            return bad(e, path, "expected a number");
        *ret = json_real(json_number_value(v));
        return 0;
    case MT_TIMESTAMP: {
        int64_t ms;
        if (json_is_number(v))
            ms = (int64_t)llround(json_number_value(v) * 1000.0);
        else if (!json_is_string(v) || time_parse_iso(json_string_value(v), &ms) < 0)
            return bad(e, path, "expected a timestamp");
        *ret = json_integer(ms);
        return 0;
    }
    case MT_BLOB: {
        if (!json_is_string(v))
            return bad(e, path, "expected base64 data");
        size_t n = json_string_length(v), rn;
        char *raw = malloc(base64_decoded_max(n) + 1);
        if (!raw)
            return err_set(e, -ENOMEM, "InternalFailure", "out of memory");
        if (base64_decode(json_string_value(v), n, false, raw, &rn) < 0) {
            free(raw);
            return bad(e, path, "invalid base64");
        }
        *ret = json_stringn_nocheck(raw, rn);
        free(raw);
        return 0;
    }
    }
    return bad(e, path, "unsupported type");
}

/* Converts amid's tree into wire JSON for `s`. */
static json_t *to_wire(const struct model_shape *s, json_t *v)
{
    switch (s->type) {
    case MT_STRUCT: {
        json_t *o = json_object();
        for (unsigned i = 0; i < s->nmembers; i++) {
            const struct model_member *m = &s->members[i];
            if (m->location != ML_BODY)
                continue;
            json_t *c = json_object_get(v, m->name);
            if (c && !json_is_null(c))
                json_object_set_new(o, m->xname, to_wire(m->shape, c));
        }
        return o;
    }
    case MT_LIST: {
        json_t *a = json_array();
        for (size_t i = 0; i < json_array_size(v); i++)
            json_array_append_new(a, to_wire(s->member->shape, json_array_get(v, i)));
        return a;
    }
    case MT_MAP: {
        json_t *o = json_object();
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c) json_object_set_new(o, k, to_wire(s->member->shape, c));
        return o;
    }
    case MT_TIMESTAMP: {
        int64_t ms = json_integer_value(v);
        if (ms % 1000 == 0)
            return json_integer(ms / 1000);
        return json_real((double)ms / 1000.0);
    }
    case MT_BLOB: {
        size_t n = json_string_length(v);
        char *enc = malloc(base64_encoded_len(n) + 1);
        if (!enc)
            return json_null();
        base64_encode(json_string_value(v), n, enc);
        json_t *r = json_string(enc);
        free(enc);
        return r;
    }
    default:
        return json_incref(v);
    }
}

/* Parses a JSON body and converts it for `shape`, without validating. */
static int json_body(const struct model_shape *shape, const char *body, size_t n, json_t **ret,
                     struct err *e)
{
    json_t *wire;
    if (n == 0) {
        wire = json_object();
    } else {
        json_error_t je;
        wire = json_loadb(body, n, JSON_REJECT_DUPLICATES, &je);
        if (!wire)
            return err_set(e, -EINVAL, "SerializationException", "Malformed JSON: %s", je.text);
    }
    json_t *tree = NULL;
    int rc = shape ? from_wire(shape, wire, NULL, &tree, e) : 0;
    json_decref(wire);
    if (rc == 0 && !tree)
        tree = json_object();
    if (rc == 0)
        *ret = tree;
    return rc;
}

int api_json_decode(const struct model_shape *shape, const char *body, size_t n, json_t **ret,
                    struct err *e)
{
    json_t *tree = NULL;
    int rc = json_body(shape, body, n, &tree, e);
    if (rc == 0 && shape)
        rc = api_validate(shape, tree, NULL, true, e);
    if (rc < 0) {
        json_decref(tree);
        return rc;
    }
    *ret = tree;
    return 0;
}

int api_json_encode(struct buf *b, const struct model_shape *shape, json_t *out)
{
    json_t *wire = shape && out ? to_wire(shape, out) : json_object();
    char *s = json_dumps(wire, JSON_COMPACT);
    json_decref(wire);
    if (!s)
        return -ENOMEM;
    int rc = buf_puts(b, s);
    free(s);
    return rc;
}

/* ---- REST ---- */

/* Splits the template and path into segments and compares them; labels capture. */
static bool rest_walk(const char *tmpl, const char *path, json_t *labels)
{
    const char *q = strchr(tmpl, '?');
    size_t tlen = q ? (size_t)(q - tmpl) : strlen(tmpl);
    const char *t = tmpl, *tend = tmpl + tlen, *p = path;
    const char *pend = path + strlen(path);
    /* A trailing slash is optional on either side. */
    if (tend > t + 1 && tend[-1] == '/')
        tend--;
    if (pend > p + 1 && pend[-1] == '/')
        pend--;
    while (t < tend && p < pend) {
        if (*t != '/' || *p != '/')
            return false;
        t++;
        p++;
        const char *ts = t, *ps = p;
        while (t < tend && *t != '/')
            t++;
        bool greedy = t - ts > 3 && ts[0] == '{' && t[-1] == '}' && t[-2] == '+';
        while (p < pend && (greedy || *p != '/'))
            p++;
        size_t tl = (size_t)(t - ts), pl = (size_t)(p - ps);
        if (tl >= 2 && ts[0] == '{' && ts[tl - 1] == '}') {
            if (pl == 0)
                return false;
            if (labels) {
                char name[128];
                size_t nl = tl - 2 - (greedy ? 1 : 0);
                if (nl >= sizeof(name))
                    return false;
                memcpy(name, ts + 1, nl);
                name[nl] = '\0';
                struct buf d;
                buf_init(&d, 8192);
                if (uri_decode(&d, ps, pl, false) < 0 ||
                    !str_utf8_valid(d.data ? d.data : "", d.len)) {
                    buf_free(&d);
                    return false;
                }
                json_object_set_new(labels, name, json_string(d.data ? d.data : ""));
                buf_free(&d);
            }
        } else if (tl != pl || strncmp(ts, ps, tl) != 0) {
            return false;
        }
    }
    return t >= tend && p >= pend;
}

bool api_rest_match(const struct model_op *op, const char *method, const char *path)
{
    return strcmp(op->method, method) == 0 && rest_walk(op->uri, path, NULL);
}

/* Converts a string from the URI, query string or a header into the member's type. */
static int rest_scalar(const struct model_member *m, const char *v, json_t **ret, struct err *e)
{
    char *end;
    switch (m->shape->type) {
    case MT_STRING:
        *ret = json_string(v);
        break;
    case MT_INTEGER:
    case MT_LONG: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno)
            return err_set(e, -EINVAL, "ValidationException", "%s must be an integer", m->xname);
        *ret = json_integer(x);
        break;
    }
    case MT_BOOLEAN:
        if (strcasecmp(v, "true") && strcasecmp(v, "false"))
            return err_set(e, -EINVAL, "ValidationException", "%s must be true or false", m->xname);
        *ret = json_boolean(strcasecmp(v, "true") == 0);
        break;
    case MT_TIMESTAMP: {
        int64_t ms;
        double d = strtod(v, &end);
        if (*v && !*end)
            ms = (int64_t)llround(d * 1000);
        else if (time_parse_iso(v, &ms) < 0) {
            struct tm tm = { 0 };
            const char *r = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
            if (!r || *r)
                return err_set(e, -EINVAL, "ValidationException", "%s must be a timestamp",
                               m->xname);
            ms = (int64_t)timegm(&tm) * 1000;
        }
        *ret = json_integer(ms);
        break;
    }
    default:
        return err_set(e, -EINVAL, "ValidationException", "%s has an unsupported type", m->xname);
    }
    return *ret ? 0 : err_set(e, -ENOMEM, "InternalFailure", "out of memory");
}

int api_rest_decode(const struct model_op *op, const struct api_request *req, json_t **ret,
                    struct err *e)
{
    const struct model_shape *s = op->input;
    json_t *labels = json_object();
    rest_walk(op->uri, req->path, labels);
    struct api_params qp = { 0 };
    int rc = api_params_parse(&qp, req->query, strlen(req->query), false);
    if (rc < 0) {
        json_decref(labels);
        api_params_free(&qp);
        return err_set(e, -EINVAL, "ValidationException", "Malformed query string");
    }
    json_t *tree = NULL;
    const struct model_member *payload = NULL;
    bool has_body_members = false;
    for (unsigned i = 0; s && i < s->nmembers; i++) {
        if (s->members[i].flags & MF_PAYLOAD)
            payload = &s->members[i];
        else if (s->members[i].location == ML_BODY)
            has_body_members = true;
    }
    if (payload && payload->shape->type == MT_BLOB) {
        tree = json_object();
        if (req->body_len)
            json_object_set_new(tree, payload->name,
                                json_stringn_nocheck(req->body, req->body_len));
    } else if (payload || has_body_members) {
        json_t *body = NULL;
        const struct model_shape *bs = payload ? payload->shape : s;
        rc = json_body(bs, req->body, req->body_len, &body, e);
        if (rc < 0) {
            json_decref(labels);
            api_params_free(&qp);
            return rc;
        }
        if (payload) {
            tree = json_object();
            json_object_set_new(tree, payload->name, body);
        } else {
            tree = body;
        }
    } else {
        tree = json_object();
    }
    for (unsigned i = 0; s && i < s->nmembers && rc == 0; i++) {
        const struct model_member *m = &s->members[i];
        const char *v = NULL;
        if (m->location == ML_URI)
            v = json_string_value(json_object_get(labels, m->xname));
        else if (m->location == ML_QUERY && m->shape->type != MT_LIST)
            v = api_params_get(&qp, m->xname);
        else if (m->location == ML_HEADER)
            v = api_header_get(req, m->xname);
        if (m->location == ML_QUERY && m->shape->type == MT_LIST) {
            json_t *a = json_array();
            for (size_t k = 0; k < qp.n; k++)
                if (strcmp(qp.v[k].name, m->xname) == 0)
                    json_array_append_new(a, json_string(qp.v[k].value));
            if (json_array_size(a))
                json_object_set_new(tree, m->name, a);
            else
                json_decref(a);
            continue;
        }
        if (!v)
            continue;
        json_t *t = NULL;
        rc = rest_scalar(m, v, &t, e);
        if (rc == 0)
            json_object_set_new(tree, m->name, t);
    }
    json_decref(labels);
    api_params_free(&qp);
    if (rc == 0 && s)
        rc = api_validate(s, tree, NULL, true, e);
    if (rc < 0) {
        json_decref(tree);
        return rc;
    }
    *ret = tree;
    return 0;
}

int api_rest_encode(const struct model_op *op, json_t *out, struct api_response *resp)
{
    const struct model_shape *s = op->output;
    const struct model_member *payload = NULL;
    resp->status = op->status;
    for (unsigned i = 0; s && i < s->nmembers; i++) {
        const struct model_member *m = &s->members[i];
        json_t *v = json_object_get(out, m->name);
        if (m->flags & MF_PAYLOAD)
            payload = m;
        if (!v || m->location != ML_HEADER)
            continue;
        char tmp[64];
        switch (m->shape->type) {
        case MT_STRING:
            api_response_header(resp, m->xname, "%s", json_string_value(v));
            break;
        case MT_INTEGER:
        case MT_LONG:
            api_response_header(resp, m->xname, "%lld", (long long)json_integer_value(v));
            break;
        case MT_BOOLEAN:
            api_response_header(resp, m->xname, "%s", json_is_true(v) ? "true" : "false");
            break;
        case MT_TIMESTAMP:
            time_format_iso(json_integer_value(v), tmp);
            api_response_header(resp, m->xname, "%s", tmp);
            break;
        default:
            break;
        }
    }
    if (payload && payload->shape->type == MT_BLOB) {
        json_t *v = json_object_get(out, payload->name);
        resp->content_type = "application/octet-stream";
        return v ? buf_append(&resp->body, json_string_value(v), json_string_length(v)) : 0;
    }
    resp->content_type = "application/json";
    if (payload)
        return api_json_encode(&resp->body, payload->shape, json_object_get(out, payload->name));
    return api_json_encode(&resp->body, s, out);
}
