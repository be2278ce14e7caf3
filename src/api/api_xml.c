/*
 * api_xml.c — XML responses for the EC2 and Query protocols, written by walking the output
 * shape: element names are the model's locationNames, EC2 lists are <xSet><item/></xSet>,
 * Query lists <x><member/></x>, timestamps ISO 8601 with milliseconds.  Members absent from the
 * tree are omitted, as AWS omits them.
 */
#include "api/api_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int api_xml_escape(struct buf *b, const char *s, size_t n)
{
    size_t run = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *rep = NULL;
        char num[8];
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '\r':
            rep = "&#xD;";
            break;
        default:
            if (c < 0x20 && c != '\t' && c != '\n') {
                snprintf(num, sizeof(num), "&#x%X;", c);
                rep = num;
            }
        }
        if (!rep)
            continue;
        rc = buf_append(b, s + run, i - run);
        if (rc == 0)
            rc = buf_puts(b, rep);
        run = i + 1;
    }
    if (rc == 0)
        rc = buf_append(b, s + run, n - run);
    return rc;
}

static int value(struct buf *b, const struct model_shape *s, json_t *v, bool ec2);

static int element(struct buf *b, const char *name, const struct model_shape *s, json_t *v,
                   bool ec2)
{
    if (s->type == MT_LIST && (ec2 || !s->flattened) && json_array_size(v) == 0)
        return buf_printf(b, "<%s/>", name);
    if (s->type == MT_LIST && !ec2 && s->flattened) {
        /* Flattened: the list's items repeat under the member's own name. */
        for (size_t i = 0; i < json_array_size(v); i++) {
            int rc = element(b, name, s->member->shape, json_array_get(v, i), ec2);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    int rc = buf_printf(b, "<%s>", name);
    if (rc == 0)
        rc = value(b, s, v, ec2);
    if (rc == 0)
        rc = buf_printf(b, "</%s>", name);
    return rc;
}

static int members(struct buf *b, const struct model_shape *s, json_t *v, bool ec2)
{
    for (unsigned i = 0; i < s->nmembers; i++) {
        const struct model_member *m = &s->members[i];
        json_t *c = json_object_get(v, m->name);
        if (!c || json_is_null(c))
            continue;
        int rc = element(b, m->xname, m->shape, c, ec2);
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
            int rc = buf_printf(b, "<entry><%s>", s->key->xname);
            if (rc == 0)
                rc = api_xml_escape(b, k, strlen(k));
            if (rc == 0)
                rc = buf_printf(b, "</%s>", s->key->xname);
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
    case MT_LONG:
        return buf_printf(b, "%lld", (long long)json_integer_value(v));
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

int api_xml_response(struct buf *b, const struct model_service *svc, const struct model_op *op,
                     json_t *out, const char *request_id)
{
    char ns[160];
    namespace_of(svc, ns, sizeof(ns));
    bool ec2 = strcmp(svc->protocol, "ec2") == 0;
    int rc = buf_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<%sResponse xmlns=\"%s\">",
                        op->name, ns);
    if (rc < 0)
        return rc;
    if (ec2) {
        rc = buf_printf(b, "<requestId>%s</requestId>", request_id);
        if (rc == 0 && op->output && op->output->nmembers && out)
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
