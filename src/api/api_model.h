/*
 * api_model.h — the botocore service models as static C tables.
 *
 * tools/gen-model.py writes src/api/model_<service>.c from botocore's JSON models; the wire
 * codecs (api_query.c, api_xml.c, api_json.c) walk these tables, so member names, wire names,
 * types, enums and bounds come from the specification instead of being typed by hand.
 *
 * Inside amid an operation's input and output are jansson trees keyed by the model's member
 * names, typed as the model says: integers and longs as json integers, booleans as json
 * booleans, doubles as reals, strings as strings, blobs as strings holding the raw bytes
 * (json_stringn_nocheck), timestamps as json integers of milliseconds since the epoch.
 */
#ifndef AMID_API_MODEL_H
#define AMID_API_MODEL_H

#include <stddef.h>
#include <stdint.h>

enum model_type {
    MT_STRUCT,
    MT_LIST,
    MT_MAP,
    MT_STRING,
    MT_INTEGER,
    MT_LONG,
    MT_BOOLEAN,
    MT_TIMESTAMP,
    MT_BLOB,
    MT_DOUBLE,
};

/* Where a member travels in REST protocols. */
enum model_location { ML_BODY, ML_URI, ML_QUERY, ML_HEADER, ML_HEADERS, ML_STATUS };

#define MF_REQUIRED    (1u << 0)
#define MF_IDEMPOTENCY (1u << 1)
#define MF_STREAMING   (1u << 2)
#define MF_PAYLOAD     (1u << 3)
#define MF_SENSITIVE   (1u << 4)

struct model_shape;

struct model_member {
    const char *name;  /* member name: the key in amid's json trees */
    const char *qname; /* query-string name (EC2: queryName or capitalised locationName) */
    const char *xname; /* XML element / header / URI label / querystring key (locationName) */
    const struct model_shape *shape;
    unsigned flags; /* MF_* */
    enum model_location location;
};

struct model_shape {
    const char *name;
    enum model_type type;
    const struct model_member *members; /* MT_STRUCT, in model order */
    unsigned nmembers;
    const struct model_member *member; /* MT_LIST element, MT_MAP value */
    const struct model_member *key;    /* MT_MAP key */
    unsigned flattened : 1, has_min : 1, has_max : 1, exception : 1;
    const char *const *enums;
    unsigned nenums;
    int64_t min, max; /* string length, list length or numeric value bounds */
    const char *timestamp_format;
    int status; /* exceptions: the HTTP status the model gives them, 0 when it gives none */
};

struct model_op {
    const char *name;
    const char *method;
    const char *uri; /* request URI template, REST protocols */
    const struct model_shape *input, *output;
    const char *result_wrapper; /* query protocol: <NameResult> */
    int status;                 /* HTTP status on success */
};

struct model_service {
    const char *name;
    const char *protocol; /* "ec2", "query", "json", "rest-json" */
    const char *api_version;
    const char *xml_namespace;
    const char *target_prefix;
    const char *json_version;
    const struct model_op *ops; /* sorted by name */
    unsigned nops;
    const struct model_shape *const *errors; /* the operations' exception shapes, NULL-ended */
};

extern const struct model_service model_ec2;
extern const struct model_service model_sts;
extern const struct model_service model_ebs;
extern const struct model_service model_kms;

/* Finds an operation by name (binary search); NULL when the service has none by that name. */
const struct model_op *model_op_find(const struct model_service *svc, const char *name);
/* Finds a struct member by member name; NULL when absent. */
const struct model_member *model_member_find(const struct model_shape *s, const char *name);

#endif
