/*
 * api_int.h — what the files of src/api/ share: SigV4, the parameter list of Query requests,
 * the model-driven codecs, the error table, filters, pagination tokens and the operation table.
 * Not for use outside src/api/ (unit tests include it to test the pieces).
 */
#ifndef AMID_API_INT_H
#define AMID_API_INT_H

#include "api/api.h"
#include "api/api_model.h"

#include <jansson.h>
#include <stdatomic.h>

struct app;
struct db;

/* ---- SigV4 (api_sigv4.c) ---- */

enum sigv4_fail {
    SIGV4_OK,
    SIGV4_MISSING,      /* no Authorization header and no X-Amz-Signature */
    SIGV4_INCOMPLETE,   /* an auth element is missing or malformed */
    SIGV4_HOST,         /* host is not a signed header */
    SIGV4_NO_DATE,      /* neither X-Amz-Date nor Date */
    SIGV4_EXPIRED,      /* outside the time window, or past X-Amz-Expires */
    SIGV4_SCOPE_DATE,   /* credential date differs from the request date */
    SIGV4_UNKNOWN_KEY,  /* access key id not known */
    SIGV4_MISMATCH,     /* signature does not match */
    SIGV4_BAD_REGION,   /* scope names a region this deployment lacks */
    SIGV4_BAD_SERVICE,  /* scope names a service amid does not offer */
    SIGV4_PAYLOAD_HASH, /* x-amz-content-sha256 differs from the body's hash */
};

struct sigv4_auth {
    bool presigned;
    char key_id[32];
    char date[9]; /* credential scope date, YYYYMMDD */
    char region[32];
    char service[32];
    char terminator[16];
    char amz_date[17]; /* YYYYMMDDTHHMMSSZ */
    int64_t time_ms;
    int64_t expires_s; /* presigned only */
    char signed_headers[1024];
    char signature[65];
};

/* Parses the Authorization header or the presigned X-Amz-* query parameters into *ret.
 * Returns SIGV4_OK or a failure with a message for the user in *ret_msg (static text or
 * `msgbuf`). */
enum sigv4_fail sigv4_parse(const struct api_request *req, struct sigv4_auth *ret,
                            const char **ret_msg, char *msgbuf, size_t msglen);
/* Whether the request's time is within `window_s` of `now_ms` (and, presigned, not past its
 * expiry). */
enum sigv4_fail sigv4_check_time(const struct sigv4_auth *a, int64_t now_ms, int window_s,
                                 char *msgbuf, size_t msglen);
/* Computes the request's signature with `secret` into `out_hex`.  `allow_unsigned` lets the
 * x-amz-content-sha256 header say UNSIGNED-PAYLOAD; `payload_override`, when non-NULL,
 * replaces the payload hash (a presigned URL signed with UNSIGNED-PAYLOAD).  Returns SIGV4_OK
 * or SIGV4_PAYLOAD_HASH / SIGV4_INCOMPLETE. */
enum sigv4_fail sigv4_sign(const struct api_request *req, const struct sigv4_auth *a,
                           const char *secret, bool allow_unsigned, const char *payload_override,
                           char out_hex[65]);
/* The canonical request and string to sign, for tests and debugging; caller frees. */
int sigv4_canonical(const struct api_request *req, const struct sigv4_auth *a,
                    const char *payload_hash, struct buf *canon, struct buf *to_sign);
/* Case-insensitive header lookup: the first value, or NULL. */
const char *api_header_get(const struct api_request *req, const char *name);

/* ---- Query parameters (api_params.c) ---- */

struct api_param {
    char *name;
    char *value;
    size_t value_len;
};

struct api_params {
    struct api_param *v;
    size_t n, cap;
};

#define API_MAX_PARAMS 20000

/* Parses "a=b&c=d" (form encoding when `plus`), appending to `p`.  Returns 0, -EINVAL for a
 * malformed escape, -E2BIG past API_MAX_PARAMS, -ENOMEM. */
int api_params_parse(struct api_params *p, const char *s, size_t n, bool plus);
const char *api_params_get(const struct api_params *p, const char *name);
void api_params_free(struct api_params *p);

/* ---- the call an operation handler receives ---- */

struct api_service;

struct api_call {
    struct api *api;
    struct app *app;
    const struct api_service *svc;
    const struct model_op *mop;
    const struct api_request *req;
    struct api_response *resp;
    char account_id[16];
    char region[32];
    const char *request_id;
    bool dry_run;
    int64_t now_ms;
    struct err err;
    /* A list of the result the handler wrote as XML itself, item by item (api_out_xml), which
     * the response carries as the result's member `encoded_member` (absent from the tree): EC2
     * protocol only.  The handler initialises `encoded`; api_handle frees it. */
    const char *encoded_member;
    struct buf encoded;
    /* Set by a handler whose answer depends only on the database, the caller, the region, the
     * parameters and the time: the answer holds until this time (INT64_MAX: until the database
     * changes), so api_handle may keep it in the response cache (api_cache.c).  0: it may not. */
    int64_t cache_until_ms;
};

/* An operation: takes the decoded input (borrowed), sets *ret_out to a new tree (or leaves it
 * NULL for an empty result), returns 0 or a negative errno with call->err set. */
typedef int (*api_handler)(struct api_call *call, json_t *in, json_t **ret_out);

#define API_OP_MUTATING (1u << 0) /* handles DryRun itself, before changing anything */
#define API_OP_CACHED   (1u << 1) /* a read whose handler may set cache_until_ms */

struct api_op {
    const char *name;
    api_handler fn;
    unsigned flags;
};

enum api_proto { PROTO_EC2, PROTO_QUERY, PROTO_JSON, PROTO_REST_JSON };

struct api_service {
    const char *name; /* SigV4 service name */
    enum api_proto proto;
    const struct model_service *model;
    const struct api_op *ops;
    size_t nops;
};

/* The services amid offers (api_dispatch.c). */
const struct api_service *api_service_find(const char *name);

/* Fails a call with DryRunOperation (for mutating handlers, at the point of no return). */
int api_dry_run(struct api_call *call);

/* ---- codecs ---- */

/* Decodes Query parameters into a tree for `shape` (EC2 flavour when `ec2`).  Auth, Action and
 * Version parameters are skipped.  Returns 0 or -EINVAL with UnknownParameter,
 * InvalidParameterValue or MissingParameter in `e`. */
int api_query_decode(const struct model_shape *shape, const struct api_params *p, bool ec2,
                     json_t **ret, struct err *e);
/* Checks a tree against `shape` (required members, bounds, enums; string lengths only with
 * `lengths`).  The decoders call it. */
int api_validate(const struct model_shape *shape, json_t *v, const char *path, bool lengths,
                 struct err *e);

/* Writes <Action>Response for the EC2 protocol (`ec2`) or the Query protocol. */
int api_xml_response(struct buf *b, const struct model_service *svc, const struct model_op *op,
                     json_t *out, const char *request_id);
/* api_xml_response for an EC2 result whose list member `member` is already written: its items
 * are `items` (see api_out_xml), which go where the tree's member would (the tree lacks it).
 * -EINVAL when the result has no list member of that name. */
int api_xml_response_encoded(struct buf *b, const struct model_service *svc,
                             const struct model_op *op, json_t *out, const char *request_id,
                             const char *member, const struct buf *items);
/* Writes the EC2 error envelope or the Query protocol's <ErrorResponse>. */
int api_xml_error(struct buf *b, bool ec2, const char *code, const char *msg,
                  const char *request_id);
/* Escapes text for XML into `b`. */
int api_xml_escape(struct buf *b, const char *s, size_t n);

/* JSON protocols: decode a body (JSON 1.1) or REST request into a tree for `shape`, and encode a
 * tree as a JSON body. */
int api_json_decode(const struct model_shape *shape, const char *body, size_t n, json_t **ret,
                    struct err *e);
int api_json_encode(struct buf *b, const struct model_shape *shape, json_t *out);
/* REST-JSON: matches the request against the operation's URI template and fills the URI,
 * query-string and header members; the body members come from the JSON body or the payload. */
bool api_rest_match(const struct model_op *op, const char *method, const char *path);
int api_rest_decode(const struct model_op *op, const struct api_request *req, json_t **ret,
                    struct err *e);
/* Encodes a REST-JSON result: header members as response headers, the payload or the JSON body. */
int api_rest_encode(const struct model_op *op, json_t *out, struct api_response *resp);

/* ---- writing items member by member (api_xml.c) ---- */

/* A structure or list of an operation's output being written member by member, either into a
 * tree or straight into EC2 XML (the very elements api_xml_response would write for that tree),
 * so that a handler making many items (DescribeImages) writes each once, without building a tree
 * when it needs none.  Members are named as in the tree (the model's member names) and must come
 * in the shape's order: XML is written as they come.  Every function returns 0 or a negative
 * errno: -ENOMEM, -E2BIG past the buffer's cap, -EINVAL for a member the shape lacks after the
 * last one written (a bug in the caller).  The fields are the functions' own. */
struct api_out {
    json_t *tree;                    /* tree: the object or array filled (borrowed) */
    struct buf *xml;                 /* XML: where elements go (borrowed) */
    const struct model_shape *shape; /* the structure or list written */
    unsigned next;                   /* the index of the first member that may come next */
    const char *xname;               /* XML: its element, which api_out_end closes */
    size_t mark;                     /* XML: where its content starts */
};

/* Starts writing the members of `tree` (an object of structure `shape`) or its items (an array
 * of list `shape`). */
void api_out_tree(struct api_out *o, json_t *tree, const struct model_shape *shape);
/* Starts writing the items of a list of shape `list` (MT_LIST) as XML into `b`: the items'
 * elements only, for api_xml_response_encoded to wrap. */
void api_out_xml(struct api_out *o, struct buf *b, const struct model_shape *list);
/* A member of the structure: a string, a boolean, an integer. */
int api_out_string(struct api_out *o, const char *name, const char *s);
int api_out_bool(struct api_out *o, const char *name, bool v);
int api_out_int(struct api_out *o, const char *name, int64_t v);
/* A member given as a tree (borrowed; NULL writes nothing). */
int api_out_json(struct api_out *o, const char *name, json_t *v);
/* Opens the structure or list member `name` and sets *ret to write its members or items, until
 * api_out_end(ret); a list left without items is written empty. */
int api_out_open(struct api_out *o, const char *name, struct api_out *ret);
/* Opens a new structure item of the list `o` and sets *ret to write its members, until
 * api_out_end(ret). */
int api_out_item(struct api_out *o, struct api_out *ret);
/* Closes what api_out_open or api_out_item opened. */
int api_out_end(struct api_out *o);

/* ---- errors (api_errors.c) ---- */

/* The HTTP status for an AWS error code in a protocol (and service, when known). */
int api_error_status(enum api_proto proto, const struct model_service *svc, const char *code);
/* The code and status a SigV4 failure gets in a service's protocol. */
void api_auth_error(enum api_proto proto, const char *service, enum sigv4_fail f,
                    const char **ret_code, int *ret_status);

/* ---- filters (api_filter.c) ---- */

/* How a filter name finds its values in an output item: a dotted path of member names through
 * the item's tree ("Attachments.InstanceId" walks lists on the way), or a function. */
#define API_FILTER_TIME (1u << 0) /* integer values are timestamps: match as ISO 8601 */

struct api_filter_def {
    const char *name;
    const char *path;
    unsigned flags;
    /* Alternative to `path`: appends the item's values for this filter to the json array. */
    void (*values)(json_t *item, json_t *ret_values);
};

struct api_filters;

/* Parses the "Filters" member of an input tree against `defs` (NULL-name terminated); `tags`
 * enables tag:KEY, tag-key and tag-value over the item's "Tags" list.  An unknown name gets
 * InvalidParameterValue; more than 200 values in all FilterLimitExceeded.  *ret is NULL when
 * there are no filters.  Free with api_filters_free. */
int api_filters_parse(json_t *in, const struct api_filter_def *defs, bool tags,
                      struct api_filters **ret, struct err *e);
/* Whether `item` passes every filter (values OR'd, filters AND'd, * and ? wildcards). */
bool api_filters_match(const struct api_filters *f, json_t *item);
/* api_filters_match without the filters named in `checked` (NULL-terminated): those the caller
 * has applied with api_filters_check to exactly the values the item carries for them. */
bool api_filters_match_rest(const struct api_filters *f, json_t *item, const char *const *checked);
/* Whether every filter is among those named in `checked` (NULL-terminated): then
 * api_filters_match_rest decides without looking at the item, which need not be built. */
bool api_filters_within(const struct api_filters *f, const char *const *checked);
void api_filters_free(struct api_filters *f);
/* A quick check before an item is built: 0 when a filter named `name` exists and `value` matches
 * none of its values, 1 otherwise.  api_filters_match still decides. */
int api_filters_check(const struct api_filters *f, const char *name, const char *value);
/* For narrowing a walk before filtering (a query in SQL): the values of the first filter named
 * `name` that has 1 to `max` of them, into out[] (borrowed from the request), and their count;
 * 0 when there is none.  Any one filter will do: filters are AND'd. */
size_t api_filters_values(const struct api_filters *f, const char *name, const char **out,
                          size_t max);

/* ---- pagination (api_token.c) ---- */

/* Makes an opaque, tamper-evident NextToken that resumes after `position` for this caller and
 * operation.  Returns a new string (caller frees) or NULL. */
char *api_token_make(struct api_call *call, const char *position);
/* Checks a NextToken and copies its position out.  Fails with InvalidNextToken. */
int api_token_open(struct api_call *call, const char *token, char *position, size_t poslen);

/* Pages a sorted array of items by the string member `key` (unique, ascending): reads
 * MaxResults (below `min` is refused, above `max` means `max`) and NextToken from `in`, and returns
 * the page as a new array and the next token (or NULL).  Errors: InvalidParameterValue,
 * InvalidNextToken. */
int api_page(struct api_call *call, json_t *in, json_t *items, const char *key, int64_t min,
             int64_t max, json_t **ret_page, char **ret_next);
/* The common tail of a Describe call: pages `items` as api_page does and sets *ret to a new
 * {result_key: page, NextToken: token (when more)} result. */
int api_page_into(struct api_call *call, json_t *in, json_t *items, const char *key, int64_t min,
                  int64_t max, const char *result_key, json_t **ret);

/* ---- the front door ---- */

/* ---- the response cache (api_cache.c) ---- */

struct api_cache;
/* A cache holding at most `max_bytes` of keys and bodies.  -ENOMEM. */
int api_cache_new(size_t max_bytes, struct api_cache **ret);
void api_cache_free(struct api_cache *c); /* accepts NULL */
/* If an entry for `key` was made at data version `version` and holds at time `now`, appends its
 * body to `out` with `request_id` (36 characters) in place of the one it was made with, and
 * returns true.  Versions must only grow: an entry made at an older one, or whose time is past,
 * is dropped; one made at a newer one stays.  Thread-safe; `c` may be NULL. */
bool api_cache_get(struct api_cache *c, const struct buf *key, uint64_t version, int64_t now,
                   const char *request_id, struct buf *out);
/* Keeps `body` (which carries `request_id` within its first 512 bytes, or it is not kept) as the
 * answer for `key` at data version `version`, holding from time `from` until `until`, unless an
 * answer made at a newer version is there.  Bodies over a quarter of the cache are not kept;
 * least recently used entries make room. */
void api_cache_put(struct api_cache *c, const struct buf *key, uint64_t version, int64_t from,
                   int64_t until, const char *body, size_t len, const char *request_id);

struct api {
    struct app *app;
    struct api_config cfg;
    struct api_cache *cache; /* NULL when cfg.response_cache is 0 */
    char listen_copy[128];
    uint8_t token_key[32];
    void *mhd; /* struct MHD_Daemon */
    _Atomic uint64_t requests;
};

/* ---- handlers ---- */

int ec2_describe_regions(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_availability_zones(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_account_attributes(struct api_call *c, json_t *in, json_t **ret);
int ec2_create_tags(struct api_call *c, json_t *in, json_t **ret);
int ec2_delete_tags(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_tags(struct api_call *c, json_t *in, json_t **ret);
int sts_get_caller_identity(struct api_call *c, json_t *in, json_t **ret);

int ec2_create_volume(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_volumes(struct api_call *c, json_t *in, json_t **ret);
int ec2_delete_volume(struct api_call *c, json_t *in, json_t **ret);
int ec2_modify_volume(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_volumes_modifications(struct api_call *c, json_t *in, json_t **ret);
int ec2_create_snapshot(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_snapshots(struct api_call *c, json_t *in, json_t **ret);
int ec2_delete_snapshot(struct api_call *c, json_t *in, json_t **ret);
int ec2_copy_snapshot(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_snapshot_attribute(struct api_call *c, json_t *in, json_t **ret);
int ec2_modify_snapshot_attribute(struct api_call *c, json_t *in, json_t **ret);
int ec2_reset_snapshot_attribute(struct api_call *c, json_t *in, json_t **ret);
int ec2_register_image(struct api_call *c, json_t *in, json_t **ret);
int ec2_copy_image(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_images(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_image_attribute(struct api_call *c, json_t *in, json_t **ret);
int ec2_modify_image_attribute(struct api_call *c, json_t *in, json_t **ret);
int ec2_reset_image_attribute(struct api_call *c, json_t *in, json_t **ret);
int ec2_cancel_image_launch_permission(struct api_call *c, json_t *in, json_t **ret);
int ec2_enable_image_block_public_access(struct api_call *c, json_t *in, json_t **ret);
int ec2_disable_image_block_public_access(struct api_call *c, json_t *in, json_t **ret);
int ec2_get_image_block_public_access_state(struct api_call *c, json_t *in, json_t **ret);
int ec2_enable_image_deprecation(struct api_call *c, json_t *in, json_t **ret);
int ec2_disable_image_deprecation(struct api_call *c, json_t *in, json_t **ret);
int ec2_enable_image_deregistration_protection(struct api_call *c, json_t *in, json_t **ret);
int ec2_disable_image_deregistration_protection(struct api_call *c, json_t *in, json_t **ret);
int ec2_enable_image(struct api_call *c, json_t *in, json_t **ret);
int ec2_disable_image(struct api_call *c, json_t *in, json_t **ret);
int ec2_deregister_image(struct api_call *c, json_t *in, json_t **ret);
int ec2_create_key_pair(struct api_call *c, json_t *in, json_t **ret);
int ec2_import_key_pair(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_key_pairs(struct api_call *c, json_t *in, json_t **ret);
int ec2_delete_key_pair(struct api_call *c, json_t *in, json_t **ret);
int ec2_attach_volume(struct api_call *c, json_t *in, json_t **ret);
int ec2_create_image(struct api_call *c, json_t *in, json_t **ret);
int ec2_create_snapshots(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_instance_attribute(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_instance_status(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_instance_types(struct api_call *c, json_t *in, json_t **ret);
int ec2_describe_instances(struct api_call *c, json_t *in, json_t **ret);
int ec2_detach_volume(struct api_call *c, json_t *in, json_t **ret);
int ec2_get_console_output(struct api_call *c, json_t *in, json_t **ret);
int ec2_modify_instance_attribute(struct api_call *c, json_t *in, json_t **ret);
int ec2_modify_instance_metadata_options(struct api_call *c, json_t *in, json_t **ret);
int ec2_reboot_instances(struct api_call *c, json_t *in, json_t **ret);
int ec2_run_instances(struct api_call *c, json_t *in, json_t **ret);
int ec2_start_instances(struct api_call *c, json_t *in, json_t **ret);
int ec2_stop_instances(struct api_call *c, json_t *in, json_t **ret);
int ec2_terminate_instances(struct api_call *c, json_t *in, json_t **ret);
int ebs_start_snapshot(struct api_call *c, json_t *in, json_t **ret);
int ebs_put_snapshot_block(struct api_call *c, json_t *in, json_t **ret);
int ebs_complete_snapshot(struct api_call *c, json_t *in, json_t **ret);
int ebs_list_snapshot_blocks(struct api_call *c, json_t *in, json_t **ret);
int ebs_list_changed_blocks(struct api_call *c, json_t *in, json_t **ret);
int ebs_get_snapshot_block(struct api_call *c, json_t *in, json_t **ret);

/* The key service (api_kms.c) and EC2's EBS encryption defaults, which name its keys. */
int kms_create_key(struct api_call *c, json_t *in, json_t **ret);
int kms_describe_key(struct api_call *c, json_t *in, json_t **ret);
int kms_list_keys(struct api_call *c, json_t *in, json_t **ret);
int kms_enable_key(struct api_call *c, json_t *in, json_t **ret);
int kms_disable_key(struct api_call *c, json_t *in, json_t **ret);
int kms_schedule_key_deletion(struct api_call *c, json_t *in, json_t **ret);
int kms_cancel_key_deletion(struct api_call *c, json_t *in, json_t **ret);
int kms_encrypt(struct api_call *c, json_t *in, json_t **ret);
int kms_decrypt(struct api_call *c, json_t *in, json_t **ret);
int kms_re_encrypt(struct api_call *c, json_t *in, json_t **ret);
int kms_generate_data_key(struct api_call *c, json_t *in, json_t **ret);
int kms_generate_data_key_without_plaintext(struct api_call *c, json_t *in, json_t **ret);
int kms_create_alias(struct api_call *c, json_t *in, json_t **ret);
int kms_update_alias(struct api_call *c, json_t *in, json_t **ret);
int kms_delete_alias(struct api_call *c, json_t *in, json_t **ret);
int kms_list_aliases(struct api_call *c, json_t *in, json_t **ret);
int kms_create_grant(struct api_call *c, json_t *in, json_t **ret);
int kms_list_grants(struct api_call *c, json_t *in, json_t **ret);
int kms_revoke_grant(struct api_call *c, json_t *in, json_t **ret);
int kms_retire_grant(struct api_call *c, json_t *in, json_t **ret);
int kms_get_key_policy(struct api_call *c, json_t *in, json_t **ret);
int kms_put_key_policy(struct api_call *c, json_t *in, json_t **ret);
int kms_tag_resource(struct api_call *c, json_t *in, json_t **ret);
int kms_untag_resource(struct api_call *c, json_t *in, json_t **ret);
int kms_list_resource_tags(struct api_call *c, json_t *in, json_t **ret);
int ec2_enable_ebs_encryption_by_default(struct api_call *c, json_t *in, json_t **ret);
int ec2_disable_ebs_encryption_by_default(struct api_call *c, json_t *in, json_t **ret);
int ec2_get_ebs_encryption_by_default(struct api_call *c, json_t *in, json_t **ret);
int ec2_get_ebs_default_kms_key_id(struct api_call *c, json_t *in, json_t **ret);
int ec2_modify_ebs_default_kms_key_id(struct api_call *c, json_t *in, json_t **ret);
int ec2_reset_ebs_default_kms_key_id(struct api_call *c, json_t *in, json_t **ret);

/* Reads TagSpecifications for resources of `type` into a new array of tags borrowed from `in`
 * (caller frees the array).  A specification for another type is InvalidParameterValue. */
struct core_tag;
int api_tag_specs(struct api_call *c, json_t *in, const char *type, struct core_tag **ret,
                  size_t *ret_n);
/* The same for several resource types at once (RunInstances: instance and volume): ret[t] and
 * ret_n[t] receive the tags for types[t] (each array freed by the caller). */
int api_tag_specs_multi(struct api_call *c, json_t *in, const char *const *types, size_t ntypes,
                        struct core_tag **ret, size_t *ret_n);
/* Whether string `s` is in JSON array `list`; api_wanted is true as well for a NULL list (no
 * ids asked for: every item is wanted). */
bool api_in_list(json_t *list, const char *s);
bool api_wanted(json_t *list, const char *s);
/* Checks that every id asked for in a Describe call (`ids`) is well formed (`prefix`, else
 * `malformed`) and among `items` (by string member `key`); the first one missing gets
 * `notfound` ("The `noun` 'id' does not exist."). */
int api_ids_found(struct api_call *c, json_t *ids, json_t *items, const char *key,
                  const char *prefix, const char *malformed, const char *notfound,
                  const char *noun);
/* Sorts an array of objects by their string member `key`, ascending. */
void api_sort_items(json_t *items, const char *key);
/* Verifies a presigned EC2 URL carried as a parameter (CopySnapshot's PresignedUrl): signed by
 * a key of the caller's account, unexpired, for `action` with `param` = `value`. */
int api_presigned_check(struct api_call *c, const char *url, const char *action, const char *param,
                        const char *value);

/* Small helpers for handlers working on jansson trees. */
const char *jstr(json_t *obj, const char *key); /* string member or NULL */
bool jbool(json_t *obj, const char *key, bool dflt);
/* Appends a new {Key, Value} list of the tags the caller put on a resource to `item` as "Tags"
 * (omitted when empty): tags are per account. */
int api_add_tags(struct api_call *call, struct db *db, json_t *item, const char *resource_id);

#endif
