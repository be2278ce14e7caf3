/*
 * api_filter.c — EC2's Describe filters, applied to output items: each filter name maps to a
 * path through the item's tree (or a function); an item passes when, for every filter, one of
 * its values matches one of the filter's values (with * and ? wildcards).  tag:KEY, tag-key and
 * tag-value read the item's Tags list.
 */
#include "api/api_int.h"
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILTER_VALUES_MAX 200

enum fkind { F_DEF, F_TAG_KEYED, F_TAG_KEY, F_TAG_VALUE };

struct filter {
    enum fkind kind;
    const struct api_filter_def *def;
    const char *tag_key; /* tag:KEY */
    json_t *values;      /* borrowed from the input tree */
};

struct api_filters {
    struct filter *v;
    size_t n;
};

int api_filters_parse(json_t *in, const struct api_filter_def *defs, bool tags,
                      struct api_filters **ret, struct err *e)
{
    json_t *fl = json_object_get(in, "Filters");
    *ret = NULL;
    if (!fl || json_array_size(fl) == 0)
        return 0;
    struct api_filters *f = calloc(1, sizeof(*f));
    if (!f)
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    f->v = calloc(json_array_size(fl), sizeof(*f->v));
    if (!f->v) {
        free(f);
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    }
    size_t total = 0;
    for (size_t i = 0; i < json_array_size(fl); i++) {
        json_t *one = json_array_get(fl, i);
        const char *name = jstr(one, "Name");
        json_t *values = json_object_get(one, "Values");
        struct filter *x = &f->v[f->n];
        if (!name) {
            api_filters_free(f);
            return err_set(e, -EINVAL, "InvalidParameterValue", "The filter 'null' is invalid");
        }
        x->values = values;
        total += json_array_size(values);
        if (tags && str_startswith(name, "tag:") && name[4]) {
            x->kind = F_TAG_KEYED;
            x->tag_key = name + 4;
        } else if (tags && strcmp(name, "tag-key") == 0) {
            x->kind = F_TAG_KEY;
        } else if (tags && strcmp(name, "tag-value") == 0) {
            x->kind = F_TAG_VALUE;
        } else {
            for (const struct api_filter_def *d = defs; d && d->name; d++)
                if (strcmp(d->name, name) == 0)
                    x->def = d;
            if (!x->def) {
                api_filters_free(f);
                return err_set(e, -EINVAL, "InvalidParameterValue", "The filter '%s' is invalid",
                               name);
            }
            x->kind = F_DEF;
        }
        f->n++;
    }
    if (total > FILTER_VALUES_MAX) {
        api_filters_free(f);
        return err_set(e, -EINVAL, "FilterLimitExceeded",
                       "The maximum number of filter values specified on a single call is %d",
                       FILTER_VALUES_MAX);
    }
    *ret = f;
    return 0;
}

void api_filters_free(struct api_filters *f)
{
    if (!f)
        return;
    free(f->v);
    free(f);
}

/* Appends the scalar values found along `path` (dotted member names; lists are walked). */
static void collect(json_t *node, const char *path, json_t *out)
{
    if (json_is_array(node)) {
        for (size_t i = 0; i < json_array_size(node); i++)
            collect(json_array_get(node, i), path, out);
        return;
    }
    if (!*path) {
        if (!json_is_object(node) && node)
            json_array_append(out, node);
        return;
    }
    const char *dot = strchr(path, '.');
    size_t n = dot ? (size_t)(dot - path) : strlen(path);
    char key[128];
    if (n >= sizeof(key))
        return;
    memcpy(key, path, n);
    key[n] = '\0';
    json_t *c = json_object_get(node, key);
    if (c)
        collect(c, dot ? dot + 1 : "", out);
}

static bool match_value(json_t *fvals, json_t *v, bool time)
{
    char tmp[64];
    const char *s;
    if (json_is_string(v))
        s = json_string_value(v);
    else if (json_is_boolean(v))
        s = json_is_true(v) ? "true" : "false";
    else if (json_is_integer(v) && time) {
        time_format_iso(json_integer_value(v), tmp);
        s = tmp;
    } else if (json_is_integer(v)) {
        snprintf(tmp, sizeof(tmp), "%lld", (long long)json_integer_value(v));
        s = tmp;
    } else if (json_is_real(v)) {
        snprintf(tmp, sizeof(tmp), "%g", json_real_value(v));
        s = tmp;
    } else {
        return false;
    }
    for (size_t i = 0; i < json_array_size(fvals); i++) {
        const char *p = json_string_value(json_array_get(fvals, i));
        if (p && str_wildcard_match(p, s))
            return true;
    }
    return false;
}

static bool match_one(const struct filter *x, json_t *item)
{
    json_t *tags = json_object_get(item, "Tags");
    switch (x->kind) {
    case F_TAG_KEYED:
        for (size_t i = 0; i < json_array_size(tags); i++) {
            json_t *t = json_array_get(tags, i);
            const char *k = jstr(t, "Key");
            if (k && strcmp(k, x->tag_key) == 0 &&
                match_value(x->values, json_object_get(t, "Value"), false))
                return true;
        }
        return false;
    case F_TAG_KEY:
    case F_TAG_VALUE:
        for (size_t i = 0; i < json_array_size(tags); i++) {
            json_t *t = json_array_get(tags, i);
            if (match_value(x->values, json_object_get(t, x->kind == F_TAG_KEY ? "Key" : "Value"),
                            false))
                return true;
        }
        return false;
    case F_DEF: {
        json_t *vals = json_array();
        if (x->def->values)
            x->def->values(item, vals);
        else
            collect(item, x->def->path, vals);
        bool ok = false;
        for (size_t i = 0; i < json_array_size(vals) && !ok; i++)
            ok = match_value(x->values, json_array_get(vals, i),
                             (x->def->flags & API_FILTER_TIME) != 0);
        json_decref(vals);
        return ok;
    }
    }
    return false;
}

bool api_filters_match(const struct api_filters *f, json_t *item)
{
    return api_filters_match_rest(f, item, NULL);
}

/* Whether filter `x` is one of those named in `checked` (NULL-terminated, or NULL for none). */
static bool among(const struct filter *x, const char *const *checked)
{
    for (size_t k = 0; x->kind == F_DEF && checked && checked[k]; k++)
        if (strcmp(x->def->name, checked[k]) == 0)
            return true;
    return false;
}

bool api_filters_match_rest(const struct api_filters *f, json_t *item, const char *const *checked)
{
    for (size_t i = 0; f && i < f->n; i++)
        if (!among(&f->v[i], checked) && !match_one(&f->v[i], item))
            return false;
    return true;
}

bool api_filters_within(const struct api_filters *f, const char *const *checked)
{
    for (size_t i = 0; f && i < f->n; i++)
        if (!among(&f->v[i], checked))
            return false;
    return true;
}

int api_filters_check(const struct api_filters *f, const char *name, const char *value)
{
    if (!f)
        return 1;
    for (size_t i = 0; i < f->n; i++) {
        const struct filter *x = &f->v[i];
        if (x->kind != F_DEF || strcmp(x->def->name, name) != 0)
            continue;
        bool ok = false;
        for (size_t k = 0; k < json_array_size(x->values) && !ok; k++) {
            const char *p = json_string_value(json_array_get(x->values, k));
            ok = p && str_wildcard_match(p, value);
        }
        if (!ok)
            return 0;
    }
    return 1;
}

size_t api_filters_values(const struct api_filters *f, const char *name, const char **out,
                          size_t max)
{
    for (size_t i = 0; f && i < f->n; i++) {
        const struct filter *x = &f->v[i];
        size_t n = json_array_size(x->values);
        if (x->kind != F_DEF || strcmp(x->def->name, name) != 0 || n == 0 || n > max)
            continue;
        size_t k = 0;
        while (k < n && (out[k] = json_string_value(json_array_get(x->values, k))))
            k++;
        if (k == n)
            return n;
    }
    return 0;
}

/* Checks that every id asked for is well formed and answered; the first one missing gets the
 * NotFound code. */
int api_ids_found(struct api_call *c, json_t *ids, json_t *items, const char *key,
                  const char *prefix, const char *malformed, const char *notfound, const char *noun)
{
    for (size_t i = 0; i < json_array_size(ids); i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        if (!core_id_valid(id, prefix))
            return err_set(&c->err, -EINVAL, malformed,
                           "Invalid id: \"%.64s\" (expecting \"%s...\")", id, prefix);
        bool found = false;
        for (size_t k = 0; k < json_array_size(items) && !found; k++)
            found = strcmp(jstr(json_array_get(items, k), key), id) == 0;
        if (!found)
            return err_set(&c->err, -ENOENT, notfound, "The %s '%s' does not exist.", noun, id);
    }
    return 0;
}

bool api_in_list(json_t *list, const char *s)
{
    for (size_t i = 0; i < json_array_size(list); i++)
        if (strcmp(json_string_value(json_array_get(list, i)), s) == 0)
            return true;
    return false;
}

bool api_wanted(json_t *list, const char *s)
{
    return !list || api_in_list(list, s);
}
