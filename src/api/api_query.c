/*
 * api_query.c — decoding EC2 and Query protocol parameters into typed trees, driven by the
 * model, and validating any tree against its shape.
 *
 * EC2 names members by queryName or the capitalised locationName and flattens every list
 * ("Filter.1.Value.2"); the Query protocol uses locationName or the member name and writes lists
 * as "Name.member.N" and maps as "Name.entry.N.key".  While decoding, a list is an object keyed
 * by its index; finish() turns those into arrays in index order once every parameter is in.
 */
#include "api/api_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_INDEX 1000000

static bool is_scalar(const struct model_shape *s)
{
    return s->type != MT_STRUCT && s->type != MT_LIST && s->type != MT_MAP;
}

static const struct model_member *find_wire(const struct model_shape *s, const char *tok, bool ec2)
{
    for (unsigned i = 0; i < s->nmembers; i++)
        if (strcmp(ec2 ? s->members[i].qname : s->members[i].xname, tok) == 0)
            return &s->members[i];
    /* EC2 accepts a member whatever the case of its name's first letter (dryRun, DryRun). */
    for (unsigned i = 0; i < s->nmembers; i++)
        if (strcasecmp(ec2 ? s->members[i].qname : s->members[i].xname, tok) == 0)
            return &s->members[i];
    return NULL;
}

static bool parse_index(const char *tok, long *ret)
{
    if (!*tok || *tok == '0' || strlen(tok) > 7)
        return false;
    long v = 0;
    for (const char *p = tok; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    if (v > MAX_INDEX)
        return false;
    *ret = v;
    return true;
}

static int invalid_value(struct err *e, const char *param, const char *value, const char *why)
{
    char shown[80];
    snprintf(shown, sizeof(shown), "%.64s%s", value, strlen(value) > 64 ? "..." : "");
    if (!str_utf8_valid(shown, strlen(shown)))
        snprintf(shown, sizeof(shown), "(invalid UTF-8)");
    return err_set(e, -EINVAL, "InvalidParameterValue",
                   "Value (%s) for parameter %s is invalid. %s", shown, param, why);
}

/* Converts one parameter value to the type of `s`. */
static int scalar(const struct model_shape *s, const char *param, const char *v, size_t n,
                  json_t **ret, struct err *e)
{
    char *end;
    switch (s->type) {
    case MT_STRING:
        if (!str_utf8_valid(v, n))
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s is not valid UTF-8 or contains NUL", param);
        *ret = json_stringn(v, n);
        break;
    case MT_INTEGER:
    case MT_LONG: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (n == 0 || *end || errno ||
            (s->type == MT_INTEGER && (x < -2147483648LL || x > 2147483647LL)))
            return invalid_value(e, param, v, "Expecting an integer.");
        *ret = json_integer(x);
        break;
    }
    case MT_DOUBLE: {
        double d = strtod(v, &end);
        if (n == 0 || *end || !isfinite(d))
            return invalid_value(e, param, v, "Expecting a number.");
        *ret = json_real(d);
        break;
    }
    case MT_BOOLEAN:
        if (strcasecmp(v, "true") == 0)
            *ret = json_true();
        else if (strcasecmp(v, "false") == 0)
            *ret = json_false();
        else
            return invalid_value(e, param, v, "Expecting true or false.");
        break;
    case MT_TIMESTAMP: {
        int64_t ms;
        double secs = strtod(v, &end);
        if (n > 0 && !*end && isfinite(secs) && v[0] >= '0' && v[0] <= '9' &&
            strchr(v, '-') == NULL)
            ms = (int64_t)llround(secs * 1000.0);
        else if (time_parse_iso(v, &ms) < 0)
            return invalid_value(e, param, v, "Expecting an ISO 8601 timestamp.");
        *ret = json_integer(ms);
        break;
    }
    case MT_BLOB: {
        char *raw = malloc(base64_decoded_max(n) + 1);
        size_t rn;
        if (!raw)
            return err_set(e, -ENOMEM, "InternalError", "out of memory");
        if (base64_decode(v, n, false, raw, &rn) < 0) {
            free(raw);
            return invalid_value(e, param, v, "Expecting base64.");
        }
        *ret = json_stringn_nocheck(raw, rn);
        free(raw);
        break;
    }
    default:
        return err_set(e, -EINVAL, "UnknownParameter", "The parameter %s is not recognized", param);
    }
    if (!*ret)
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    return 0;
}

/* Gets or creates the container child `key` of `obj`. */
static json_t *child(json_t *obj, const char *key)
{
    json_t *c = json_object_get(obj, key);
    if (!c) {
        c = json_object();
        if (!c || json_object_set_new(obj, key, c) < 0)
            return NULL;
    }
    return json_is_object(c) ? c : NULL;
}

static int place(const struct model_shape *shape, json_t *node, char **toks, int ntok,
                 const struct api_param *p, bool ec2, struct err *e)
{
    const struct model_shape *s = shape;
    char idx[16];
    for (int i = 0; i < ntok; i++) {
        const char *tok = toks[i];
        bool last = i == ntok - 1;
        const struct model_shape *next;
        const char *key;
        if (s->type == MT_STRUCT) {
            const struct model_member *m = find_wire(s, tok, ec2);
            if (!m)
                goto unknown;
            next = m->shape;
            key = m->name;
        } else if (s->type == MT_LIST) {
            long ix;
            if (!ec2 && !s->flattened) {
                if (strcmp(tok, "member") != 0 || last)
                    goto unknown;
                tok = toks[++i];
                last = i == ntok - 1;
            }
            if (!parse_index(tok, &ix))
                goto unknown;
            snprintf(idx, sizeof(idx), "%ld", ix);
            next = s->member->shape;
            key = idx;
        } else if (s->type == MT_MAP) {
            long ix;
            if (!s->flattened) {
                if (strcmp(tok, "entry") != 0 || last)
                    goto unknown;
                tok = toks[++i];
                last = i == ntok - 1;
            }
            if (!parse_index(tok, &ix) || last)
                goto unknown;
            snprintf(idx, sizeof(idx), "%ld", ix);
            json_t *entry = child(node, idx);
            if (!entry)
                goto unknown;
            tok = toks[++i];
            last = i == ntok - 1;
            bool is_key = strcmp(tok, s->key->xname) == 0;
            if (!is_key && strcmp(tok, s->member->xname) != 0)
                goto unknown;
            node = entry;
            next = is_key ? s->key->shape : s->member->shape;
            key = is_key ? "key" : "value";
        } else {
            goto unknown;
        }
        if (last) {
            if (!is_scalar(next))
                goto unknown;
            json_t *v = NULL;
            int rc = scalar(next, p->name, p->value, p->value_len, &v, e);
            if (rc < 0)
                return rc;
            json_object_set_new(node, key, v);
            return 0;
        }
        if (is_scalar(next))
            goto unknown;
        node = child(node, key);
        if (!node)
            goto unknown;
        s = next;
    }
unknown:
    return err_set(e, -EINVAL, "UnknownParameter", "The parameter %s is not recognized", p->name);
}

struct ixent {
    long ix;
    json_t *v;
};

static int ixcmp(const void *a, const void *b)
{
    const struct ixent *x = a, *y = b;
    return (x->ix > y->ix) - (x->ix < y->ix);
}

/* Turns index-keyed objects into arrays (lists) and key/value entries into objects (maps). */
static json_t *finish(const struct model_shape *s, json_t *v)
{
    if (s->type == MT_STRUCT) {
        for (unsigned i = 0; i < s->nmembers; i++) {
            json_t *c = json_object_get(v, s->members[i].name);
            if (c && !is_scalar(s->members[i].shape)) {
                json_t *f = finish(s->members[i].shape, c);
                if (!f)
                    return NULL;
                json_object_set_new(v, s->members[i].name, f);
            }
        }
        return json_incref(v);
    }
    size_t n = json_object_size(v);
    struct ixent *ents = calloc(n ? n : 1, sizeof(*ents));
    if (!ents)
        return NULL;
    size_t k = 0;
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        ents[k].ix = strtol(key, NULL, 10);
        ents[k++].v = val;
    }
    qsort(ents, k, sizeof(*ents), ixcmp);
    json_t *out = s->type == MT_LIST ? json_array() : json_object();
    for (size_t i = 0; out && i < k; i++) {
        if (s->type == MT_LIST) {
            json_t *el = is_scalar(s->member->shape) ? json_incref(ents[i].v)
                                                     : finish(s->member->shape, ents[i].v);
            if (!el || json_array_append_new(out, el) < 0) {
                json_decref(out);
                out = NULL;
            }
        } else {
            json_t *mk = json_object_get(ents[i].v, "key");
            json_t *mv = json_object_get(ents[i].v, "value");
            if (!json_is_string(mk) || !mv)
                continue;
            json_t *fv =
                is_scalar(s->member->shape) ? json_incref(mv) : finish(s->member->shape, mv);
            if (!fv)
                continue;
            json_object_set_new(out, json_string_value(mk), fv);
        }
    }
    free(ents);
    return out;
}

static bool skip_param(const char *name)
{
    return strcmp(name, "Action") == 0 || strcmp(name, "Version") == 0 ||
           strncmp(name, "X-Amz-", 6) == 0;
}

int api_query_decode(const struct model_shape *shape, const struct api_params *p, bool ec2,
                     json_t **ret, struct err *e)
{
    json_t *root = json_object();
    if (!root)
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    int rc = 0;
    for (size_t i = 0; i < p->n && rc == 0; i++) {
        if (skip_param(p->v[i].name))
            continue;
        char tmp[512];
        if (strlen(p->v[i].name) >= sizeof(tmp) ||
            !str_utf8_valid(p->v[i].name, strlen(p->v[i].name))) {
            rc = err_set(e, -EINVAL, "UnknownParameter", "The parameter %.64s is not recognized",
                         str_utf8_valid(p->v[i].name, strlen(p->v[i].name)) ? p->v[i].name
                                                                            : "(invalid UTF-8)");
            break;
        }
        strcpy(tmp, p->v[i].name);
        char *toks[32];
        int nt = 0;
        char *save = NULL;
        for (char *t = strtok_r(tmp, ".", &save); t; t = strtok_r(NULL, ".", &save)) {
            if (nt == 32) {
                nt = 0;
                break;
            }
            toks[nt++] = t;
        }
        if (nt == 0 || (p->v[i].name[0] == '.' || str_endswith(p->v[i].name, ".") ||
                        strstr(p->v[i].name, ".."))) {
            rc = err_set(e, -EINVAL, "UnknownParameter", "The parameter %s is not recognized",
                         p->v[i].name);
            break;
        }
        rc = place(shape, root, toks, nt, &p->v[i], ec2, e);
    }
    if (rc == 0) {
        json_t *done = finish(shape, root);
        if (!done)
            rc = err_set(e, -ENOMEM, "InternalError", "out of memory");
        json_decref(root);
        root = done;
    }
    /* EC2 enforces string lengths per operation with its own codes (InvalidAMIName.Malformed
     * and the like), so the model's bounds are checked by the handlers, not here. */
    if (rc == 0)
        rc = api_validate(shape, root, NULL, !ec2, e);
    if (rc < 0) {
        json_decref(root);
        return rc;
    }
    *ret = root;
    return 0;
}

static int bound_error(struct err *e, const char *path, const char *what, long long v,
                       const char *rel, long long bound)
{
    return err_set(e, -EINVAL, "InvalidParameterValue",
                   "Value (%lld) for parameter %s is invalid. Expecting %s %s %lld.", v, path, what,
                   rel, bound);
}

int api_validate(const struct model_shape *s, json_t *v, const char *path, bool lengths,
                 struct err *e)
{
    char sub[512];
    switch (s->type) {
    case MT_STRUCT:
        if (!json_is_object(v))
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s must be a structure", path ? path : "input");
        for (unsigned i = 0; i < s->nmembers; i++) {
            const struct model_member *m = &s->members[i];
            json_t *c = json_object_get(v, m->name);
            snprintf(sub, sizeof(sub), "%s%s%s", path ? path : "", path ? "." : "", m->qname);
            if (!c) {
                if (m->flags & MF_REQUIRED)
                    return err_set(e, -EINVAL, "MissingParameter",
                                   "The request must contain the parameter %s", sub);
                continue;
            }
            int rc = api_validate(m->shape, c, sub, lengths, e);
            if (rc < 0)
                return rc;
        }
        return 0;
    case MT_LIST: {
        size_t n = json_array_size(v);
        if (s->has_min && (long long)n < s->min)
            return bound_error(e, path, "a list of length", (long long)n, "at least", s->min);
        if (s->has_max && (long long)n > s->max)
            return bound_error(e, path, "a list of length", (long long)n, "at most", s->max);
        for (size_t i = 0; i < n; i++) {
            snprintf(sub, sizeof(sub), "%s.%zu", path, i + 1);
            int rc = api_validate(s->member->shape, json_array_get(v, i), sub, lengths, e);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    case MT_MAP: {
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c)
        {
            snprintf(sub, sizeof(sub), "%s.%s", path, k);
            int rc = api_validate(s->member->shape, c, sub, lengths, e);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    case MT_STRING: {
        if (!json_is_string(v))
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s must be a string", path);
        const char *str = json_string_value(v);
        /* Instance types are checked by the operations, which answer with their own codes
         * (InvalidInstanceType in DescribeInstanceTypes). */
        if (s->nenums && strcmp(s->name, "InstanceType") != 0) {
            bool ok = false;
            for (unsigned i = 0; i < s->nenums && !ok; i++)
                ok = strcmp(s->enums[i], str) == 0;
            if (!ok)
                return invalid_value(e, path, str, "Not a valid value for this parameter.");
        }
        /* Bounds count characters, not bytes. */
        long long chars = 0;
        for (const char *q = str; *q; q++)
            chars += ((unsigned char)*q & 0xc0) != 0x80;
        if (lengths && s->has_min && chars < s->min)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s is too short (minimum length %lld)", path,
                           (long long)s->min);
        if (lengths && s->has_max && chars > s->max)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s is too long (maximum length %lld)", path,
                           (long long)s->max);
        return 0;
    }
    case MT_INTEGER:
    case MT_LONG: {
        if (!json_is_integer(v))
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s must be an integer", path);
        long long x = json_integer_value(v);
        if (s->has_min && x < s->min)
            return bound_error(e, path, "a value", x, "greater than or equal to", s->min);
        if (s->has_max && x > s->max)
            return bound_error(e, path, "a value", x, "less than or equal to", s->max);
        return 0;
    }
    case MT_BOOLEAN:
        if (!json_is_boolean(v))
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s must be a boolean", path);
        return 0;
    case MT_TIMESTAMP:
        if (!json_is_integer(v))
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s must be a timestamp", path);
        return 0;
    case MT_DOUBLE:
        if (!json_is_number(v))
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s must be a number", path);
        return 0;
    case MT_BLOB:
        if (!json_is_string(v))
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s must be binary data", path);
        if (s->has_max && (long long)json_string_length(v) > s->max)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Value for parameter %s is too long", path);
        return 0;
    }
    return 0;
}
