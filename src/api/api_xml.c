/*
 * api_xml.c — XML responses for the EC2 and Query protocols, written by walking the output
 * shape: element names are the model's locationNames, EC2 lists are <xSet><item/></xSet>,
 * Query lists <x><member/></x>, timestamps ISO 8601 with milliseconds.  Members absent from the
 * tree are omitted, as AWS omits them.
 *
 * Also api_out: items written member by member either into a tree or straight into EC2 XML, the
 * same elements the walk would write for their tree, for handlers that list many items.
 */
#include "api/api_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes XML text cannot carry as they are: & < > and control characters other than tab and
 * newline (carriage return included, so that it survives parsing). */
static const bool needs_escape[256] = {
    [0x00] = true, [0x01] = true, [0x02] = true, [0x03] = true, [0x04] = true, [0x05] = true,
    [0x06] = true, [0x07] = true, [0x08] = true, [0x0b] = true, [0x0c] = true, [0x0d] = true,
    [0x0e] = true, [0x0f] = true, [0x10] = true, [0x11] = true, [0x12] = true, [0x13] = true,
    [0x14] = true, [0x15] = true, [0x16] = true, [0x17] = true, [0x18] = true, [0x19] = true,
    [0x1a] = true, [0x1b] = true, [0x1c] = true, [0x1d] = true, [0x1e] = true, [0x1f] = true,
    ['&'] = true,  ['<'] = true,  ['>'] = true,
};

int api_xml_escape(struct buf *b, const char *s, size_t n)
{
    size_t run = 0, i = 0;
    int rc = 0;
    for (;;) {
        while (i < n && !needs_escape[(unsigned char)s[i]])
            i++;
        if (i == n)
            break;
        unsigned char c = (unsigned char)s[i];
        char num[8];
        const char *rep = c == '&'    ? "&amp;"
                          : c == '<'  ? "&lt;"
                          : c == '>'  ? "&gt;"
                          : c == '\r' ? "&#xD;"
                                      : NULL;
        if (!rep) {
            snprintf(num, sizeof(num), "&#x%X;", c);
            rep = num;
        }
        rc = buf_append(b, s + run, i - run);
        if (rc == 0)
            rc = buf_puts(b, rep);
        if (rc < 0)
            return rc;
        run = ++i;
    }
    return buf_append(b, s + run, n - run);
}

/* Appends <name>, </name> (`end`) or <name/> (`empty`), written in place: tags are most of what
 * a response is made of. */
static int tag(struct buf *b, const char *name, bool end, bool empty)
{
    size_t n = strlen(name);
    char *t;
    int rc = buf_extend(b, n + 2 + end + empty, &t);
    if (rc < 0)
        return rc;
    *t++ = '<';
    if (end)
        *t++ = '/';
    memcpy(t, name, n);
    t += n;
    if (empty)
        *t++ = '/';
    *t = '>';
    return 0;
}

/* Writes a decimal integer as "%lld" does, ending at t[24]; returns where it starts. */
static char *integer_text(char t[24], long long v)
{
    char *p = t + 24;
    unsigned long long u = v < 0 ? 0 - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return p;
}

/* The text of a scalar `v` of shape `s` when it goes into the document as it is (no escaping):
 * strings without a byte to escape, booleans, integers and timestamps.  False otherwise. */
static bool plain_text(const struct model_shape *s, json_t *v, char tmp[32], const char **ret,
                       size_t *ret_n)
{
    switch (s->type) {
    case MT_STRING:
        *ret = json_string_value(v);
        *ret_n = json_string_length(v);
        for (size_t i = 0; *ret && i < *ret_n; i++)
            if (needs_escape[(unsigned char)(*ret)[i]])
                return false;
        return *ret != NULL;
    case MT_BOOLEAN:
        *ret = json_is_true(v) ? "true" : "false";
        *ret_n = strlen(*ret);
        return true;
    case MT_INTEGER:
    case MT_LONG:
        *ret = integer_text(tmp, (long long)json_integer_value(v));
        *ret_n = (size_t)(tmp + 24 - *ret);
        return true;
    case MT_TIMESTAMP:
        time_format_iso(json_integer_value(v), tmp);
        *ret = tmp;
        *ret_n = strlen(tmp);
        return true;
    default:
        return false;
    }
}

/* Appends <name>text</name> in one piece (most elements are such leaves); `text` needs no
 * escaping. */
static int leaf(struct buf *b, const char *name, const char *text, size_t len)
{
    size_t n = strlen(name);
    char *t;
    int rc = buf_extend(b, 2 * n + 5 + len, &t);
    if (rc < 0)
        return rc;
    *t++ = '<';
    memcpy(t, name, n);
    t += n;
    *t++ = '>';
    memcpy(t, text, len);
    t += len;
    *t++ = '<';
    *t++ = '/';
    memcpy(t, name, n);
    t[n] = '>';
    return 0;
}

/* Appends <name>text</name>, escaping `text` when it needs it. */
static int text_element(struct buf *b, const char *name, const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (needs_escape[(unsigned char)text[i]]) {
            int rc = tag(b, name, false, false);
            if (rc == 0)
                rc = api_xml_escape(b, text, len);
            return rc < 0 ? rc : tag(b, name, true, false);
        }
    }
    return leaf(b, name, text, len);
}

static int value(struct buf *b, const struct model_shape *s, json_t *v, bool ec2);

static int element(struct buf *b, const char *name, const struct model_shape *s, json_t *v,
                   bool ec2)
{
    char tmp[32];
    const char *text;
    size_t len;
    if (plain_text(s, v, tmp, &text, &len))
        return leaf(b, name, text, len);
    if (s->type == MT_LIST && (ec2 || !s->flattened) && json_array_size(v) == 0)
        return tag(b, name, false, true);
    if (s->type == MT_LIST && !ec2 && s->flattened) {
        /* Flattened: the list's items repeat under the member's own name. */
        for (size_t i = 0; i < json_array_size(v); i++) {
            int rc = element(b, name, s->member->shape, json_array_get(v, i), ec2);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    int rc = tag(b, name, false, false);
    if (rc == 0)
        rc = value(b, s, v, ec2);
    if (rc == 0)
        rc = tag(b, name, true, false);
    return rc;
}

/* Member names are literals, which the linker often merges: the same pointer is the same name. */
static bool same_name(const char *a, const char *b)
{
    return a == b || (a[0] == b[0] && strcmp(a, b) == 0);
}

static int member(struct buf *b, const struct model_member *m, json_t *c, bool ec2)
{
    return !c || json_is_null(c) ? 0 : element(b, m->xname, m->shape, c, ec2);
}

static int members(struct buf *b, const struct model_shape *s, json_t *v, bool ec2)
{
    /* An object built in the shape's order (jansson iterates keys in the order they were added)
     * is walked alongside the shape, without a hash lookup for each of its members.  Should a key
     * turn out to be unknown or out of that order, what the walk wrote is taken back and every
     * member looked up instead: the same elements either way. */
    size_t mark = b->len;
    void *it = json_object_iter(v);
    for (unsigned i = 0; i < s->nmembers && it; i++) {
        const struct model_member *m = &s->members[i];
        if (!same_name(json_object_iter_key(it), m->name))
            continue;
        int rc = member(b, m, json_object_iter_value(it), ec2);
        if (rc < 0)
            return rc;
        it = json_object_iter_next(v, it);
    }
    if (!it)
        return 0;
    buf_truncate(b, mark);
    for (unsigned i = 0; i < s->nmembers; i++) {
        const struct model_member *m = &s->members[i];
        int rc = member(b, m, json_object_get(v, m->name), ec2);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int value(struct buf *b, const struct model_shape *s, json_t *v, bool ec2)
{
    char tmp[64];
    switch (s->type) {
    case MT_STRUCT:
        return members(b, s, v, ec2);
    case MT_LIST:
        for (size_t i = 0; i < json_array_size(v); i++) {
            int rc = element(b, s->member->xname, s->member->shape, json_array_get(v, i), ec2);
            if (rc < 0)
                return rc;
        }
        return 0;
    case MT_MAP: {
        const char *k;
        json_t *c;
        json_object_foreach(v, k, c)
        {
            int rc = buf_puts(b, "<entry>");
            if (rc == 0)
                rc = tag(b, s->key->xname, false, false);
            if (rc == 0)
                rc = api_xml_escape(b, k, strlen(k));
            if (rc == 0)
                rc = tag(b, s->key->xname, true, false);
            if (rc == 0)
                rc = element(b, s->member->xname, s->member->shape, c, ec2);
            if (rc == 0)
                rc = buf_puts(b, "</entry>");
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    case MT_STRING:
        return api_xml_escape(b, json_string_value(v) ? json_string_value(v) : "",
                              json_string_length(v));
    case MT_INTEGER:
    case MT_LONG: {
        char t[24];
        const char *p = integer_text(t, (long long)json_integer_value(v));
        return buf_append(b, p, (size_t)(t + 24 - p));
    }
    case MT_BOOLEAN:
        return buf_puts(b, json_is_true(v) ? "true" : "false");
    case MT_DOUBLE:
        return buf_printf(b, "%.15g", json_number_value(v));
    case MT_TIMESTAMP:
        time_format_iso(json_integer_value(v), tmp);
        return buf_puts(b, tmp);
    case MT_BLOB: {
        size_t n = json_string_length(v);
        char *enc = malloc(base64_encoded_len(n) + 1);
        if (!enc)
            return -ENOMEM;
        base64_encode(json_string_value(v), n, enc);
        int rc = buf_puts(b, enc);
        free(enc);
        return rc;
    }
    }
    return 0;
}

static void namespace_of(const struct model_service *svc, char *out, size_t outlen)
{
    const char *ns = svc->xml_namespace ? svc->xml_namespace : "";
    snprintf(out, outlen, "%s%s", ns, *ns && !str_endswith(ns, "/") ? "/" : "");
}

/* The members of an EC2 result, the list member `part` written from `items`. */
static int members_with_part(struct buf *b, const struct model_shape *s, json_t *out,
                             const char *part, const struct buf *items)
{
    bool found = false;
    for (unsigned i = 0; i < s->nmembers; i++) {
        const struct model_member *m = &s->members[i];
        int rc;
        if (m->shape->type == MT_LIST && same_name(m->name, part)) {
            /* As element() writes a list: <x/> when it has no items. */
            found = true;
            rc = tag(b, m->xname, false, items->len == 0);
            if (rc == 0 && items->len)
                rc = buf_append(b, items->data, items->len);
            if (rc == 0 && items->len)
                rc = tag(b, m->xname, true, false);
        } else {
            rc = member(b, m, json_object_get(out, m->name), true);
        }
        if (rc < 0)
            return rc;
    }
    return found ? 0 : -EINVAL;
}

static int response(struct buf *b, const struct model_service *svc, const struct model_op *op,
                    json_t *out, const char *request_id, const char *part, const struct buf *items)
{
    char ns[160];
    namespace_of(svc, ns, sizeof(ns));
    bool ec2 = strcmp(svc->protocol, "ec2") == 0;
    if (part && (!ec2 || !op->output))
        return -EINVAL;
    int rc = buf_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<%sResponse xmlns=\"%s\">",
                        op->name, ns);
    if (rc < 0)
        return rc;
    if (ec2) {
        rc = buf_printf(b, "<requestId>%s</requestId>", request_id);
        if (rc == 0 && part)
            rc = members_with_part(b, op->output, out, part, items);
        else if (rc == 0 && op->output && op->output->nmembers && out)
            rc = members(b, op->output, out, true);
        else if (rc == 0 && !op->output)
            rc = buf_puts(b, "<return>true</return>");
    } else {
        const char *wrap = op->result_wrapper;
        if (wrap)
            rc = buf_printf(b, "<%s>", wrap);
        if (rc == 0 && op->output && out)
            rc = members(b, op->output, out, false);
        if (rc == 0 && wrap)
            rc = buf_printf(b, "</%s>", wrap);
        if (rc == 0)
            rc = buf_printf(b, "<ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata>",
                            request_id);
    }
    if (rc == 0)
        rc = buf_printf(b, "</%sResponse>", op->name);
    return rc;
}

int api_xml_response(struct buf *b, const struct model_service *svc, const struct model_op *op,
                     json_t *out, const char *request_id)
{
    return response(b, svc, op, out, request_id, NULL, NULL);
}

int api_xml_response_encoded(struct buf *b, const struct model_service *svc,
                             const struct model_op *op, json_t *out, const char *request_id,
                             const char *member, const struct buf *items)
{
    return response(b, svc, op, out, request_id, member, items);
}

int api_xml_error(struct buf *b, bool ec2, const char *code, const char *msg,
                  const char *request_id)
{
    int rc;
    if (ec2) {
        rc = buf_printf(b,
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors>"
                        "<Error><Code>%s</Code><Message>",
                        code);
        if (rc == 0)
            rc = api_xml_escape(b, msg, strlen(msg));
        if (rc == 0)
            rc = buf_printf(b, "</Message></Error></Errors><RequestID>%s</RequestID></Response>",
                            request_id);
        return rc;
    }
    rc = buf_printf(b,
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error>"
                    "<Type>Sender</Type><Code>%s</Code><Message>",
                    code);
    if (rc == 0)
        rc = api_xml_escape(b, msg, strlen(msg));
    if (rc == 0)
        rc = buf_printf(b, "</Message></Error><RequestId>%s</RequestId></ErrorResponse>",
                        request_id);
    return rc;
}

/* ---- api_out ---- */

void api_out_tree(struct api_out *o, json_t *tree, const struct model_shape *shape)
{
    *o = (struct api_out){ .tree = tree, .shape = shape };
}

void api_out_xml(struct api_out *o, struct buf *b, const struct model_shape *list)
{
    *o = (struct api_out){ .xml = b, .shape = list, .mark = b->len };
}

/* The structure's member `name`, at or after the last one written; NULL when there is none. */
static const struct model_member *out_member(struct api_out *o, const char *name)
{
    const struct model_shape *s = o->shape;
    for (unsigned i = o->next; s->type == MT_STRUCT && i < s->nmembers; i++) {
        if (same_name(s->members[i].name, name)) {
            o->next = i + 1;
            return &s->members[i];
        }
    }
    return NULL;
}

/* Sets the tree's member `name` to `v` (a new reference; NULL when out of memory). */
static int out_set(struct api_out *o, const char *name, json_t *v)
{
    return json_object_set_new_nocheck(o->tree, name, v) < 0 ? -ENOMEM : 0;
}

int api_out_string(struct api_out *o, const char *name, const char *s)
{
    const struct model_member *m = out_member(o, name);
    if (!m)
        return -EINVAL;
    return o->xml ? text_element(o->xml, m->xname, s, strlen(s)) : out_set(o, name, json_string(s));
}

int api_out_bool(struct api_out *o, const char *name, bool v)
{
    const struct model_member *m = out_member(o, name);
    if (!m)
        return -EINVAL;
    if (!o->xml)
        return out_set(o, name, json_boolean(v));
    return v ? leaf(o->xml, m->xname, "true", 4) : leaf(o->xml, m->xname, "false", 5);
}

int api_out_int(struct api_out *o, const char *name, int64_t v)
{
    const struct model_member *m = out_member(o, name);
    if (!m)
        return -EINVAL;
    if (!o->xml)
        return out_set(o, name, json_integer(v));
    char t[24];
    const char *p = integer_text(t, (long long)v);
    return leaf(o->xml, m->xname, p, (size_t)(t + 24 - p));
}

int api_out_json(struct api_out *o, const char *name, json_t *v)
{
    if (!v)
        return 0;
    const struct model_member *m = out_member(o, name);
    if (!m)
        return -EINVAL;
    return o->xml ? member(o->xml, m, v, true) : out_set(o, name, json_incref(v));
}

/* Opens a structure or list of shape `s` in element `xname` (XML) or as tree `t`. */
static int out_open(struct api_out *o, const struct model_shape *s, const char *xname, json_t *t,
                    struct api_out *ret)
{
    if (!o->xml) {
        api_out_tree(ret, t, s);
        return t ? 0 : -ENOMEM;
    }
    api_out_xml(ret, o->xml, s);
    ret->xname = xname;
    int rc = tag(o->xml, xname, false, false);
    ret->mark = o->xml->len;
    return rc;
}

int api_out_open(struct api_out *o, const char *name, struct api_out *ret)
{
    const struct model_member *m = out_member(o, name);
    if (!m || (m->shape->type != MT_STRUCT && m->shape->type != MT_LIST))
        return -EINVAL;
    json_t *t = NULL;
    if (!o->xml) {
        t = m->shape->type == MT_LIST ? json_array() : json_object();
        if (out_set(o, name, t) < 0)
            return -ENOMEM;
    }
    return out_open(o, m->shape, m->xname, t, ret);
}

int api_out_item(struct api_out *o, struct api_out *ret)
{
    if (o->shape->type != MT_LIST || o->shape->member->shape->type != MT_STRUCT)
        return -EINVAL;
    json_t *t = NULL;
    if (!o->xml && json_array_append_new(o->tree, t = json_object()) < 0)
        return -ENOMEM;
    return out_open(o, o->shape->member->shape, o->shape->member->xname, t, ret);
}

int api_out_end(struct api_out *o)
{
    if (!o->xml || !o->xname)
        return 0;
    if (o->shape->type == MT_LIST && o->xml->len == o->mark) {
        /* No items: <x/>, as the walk writes an empty list. */
        buf_truncate(o->xml, o->mark - strlen(o->xname) - 2);
        return tag(o->xml, o->xname, false, true);
    }
    return tag(o->xml, o->xname, true, false);
}
