/*
 * api_params.c — the name=value list of a Query protocol request (query string or form body),
 * and model lookups.
 */
#include "api/api_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int api_params_parse(struct api_params *p, const char *s, size_t n, bool plus)
{
    size_t i = 0;
    while (i < n) {
        const char *seg = s + i;
        const char *amp = memchr(seg, '&', n - i);
        size_t len = amp ? (size_t)(amp - seg) : n - i;
        i += len + 1;
        if (len == 0)
            continue;
        if (p->n >= API_MAX_PARAMS)
            return -E2BIG;
        const char *eq = memchr(seg, '=', len);
        size_t kl = eq ? (size_t)(eq - seg) : len;
        struct buf k, v;
        buf_init(&k, 4096);
        buf_init(&v, len);
        int rc = uri_decode(&k, seg, kl, plus);
        if (rc == 0 && eq)
            rc = uri_decode(&v, eq + 1, len - kl - 1, plus);
        if (rc < 0) {
            buf_free(&k);
            buf_free(&v);
            return rc == -E2BIG ? -EINVAL : rc;
        }
        if (p->n == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 32;
            struct api_param *nv = realloc(p->v, cap * sizeof(*nv));
            if (!nv) {
                buf_free(&k);
                buf_free(&v);
                return -ENOMEM;
            }
            p->v = nv;
            p->cap = cap;
        }
        p->v[p->n].value_len = v.len;
        p->v[p->n].name = buf_steal(&k);
        p->v[p->n].value = buf_steal(&v);
        if (!p->v[p->n].name || !p->v[p->n].value) {
            free(p->v[p->n].name);
            free(p->v[p->n].value);
            return -ENOMEM;
        }
        p->n++;
    }
    return 0;
}

const char *api_params_get(const struct api_params *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->v[i].name, name) == 0)
            return p->v[i].value;
    return NULL;
}

void api_params_free(struct api_params *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].name);
        free(p->v[i].value);
    }
    free(p->v);
    p->v = NULL;
    p->n = p->cap = 0;
}

const struct model_op *model_op_find(const struct model_service *svc, const char *name)
{
    unsigned lo = 0, hi = svc->nops;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        int c = strcmp(svc->ops[mid].name, name);
        if (c == 0)
            return &svc->ops[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const struct model_member *model_member_find(const struct model_shape *s, const char *name)
{
    for (unsigned i = 0; i < s->nmembers; i++)
        if (strcmp(s->members[i].name, name) == 0)
            return &s->members[i];
    return NULL;
}
