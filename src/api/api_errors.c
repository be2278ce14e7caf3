/*
 * api_errors.c — the one table from AWS error codes to HTTP statuses, and the codes each
 * protocol family gives for an authentication failure.  Anything not listed is a client error
 * (400), as AWS answers most validation failures.
 */
#include "api/api_int.h"

#include <string.h>

struct code_status {
    const char *code;
    int status;
};

static const struct code_status query_table[] = {
    { "AuthFailure", 401 },           { "MissingAuthenticationToken", 401 },
    { "UnauthorizedOperation", 403 }, { "Blocked", 403 },
    { "OptInRequired", 403 },         { "PendingVerification", 403 },
    { "InvalidClientTokenId", 403 },  { "SignatureDoesNotMatch", 403 },
    { "AccessDenied", 403 },          { "DryRunOperation", 412 },
    { "RequestEntityTooLarge", 413 }, { "InternalError", 500 },
    { "InternalFailure", 500 },       { "InsufficientInstanceCapacity", 500 },
    { "RequestLimitExceeded", 503 },  { "ServiceUnavailable", 503 },
    { "Unavailable", 503 },
};

static const struct code_status json_table[] = {
    { "KMSInternalException", 500 },     { "InternalFailure", 500 },
    { "InternalServerException", 500 },  { "DependencyTimeoutException", 503 },
    { "ServiceUnavailable", 503 },       { "RequestEntityTooLarge", 413 },
    { "DryRunOperationException", 412 },
};

static const struct code_status rest_table[] = {
    { "AccessDeniedException", 403 },
    { "UnrecognizedClientException", 403 },
    { "InvalidSignatureException", 403 },
    { "MissingAuthenticationTokenException", 403 },
    { "IncompleteSignatureException", 403 },
    { "ResourceNotFoundException", 404 },
    { "UnknownOperationException", 404 },
    { "ConflictException", 409 },
    { "ServiceQuotaExceededException", 402 },
    { "RequestThrottledException", 400 },
    { "LimitExceededException", 429 },
    { "InternalServerException", 500 },
    { "InternalFailure", 500 },
    { "RequestEntityTooLarge", 413 },
};

static int lookup(const struct code_status *t, size_t n, const char *code)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].code, code) == 0)
            return t[i].status;
    return 400;
}

int api_error_status(enum api_proto proto, const struct model_service *svc, const char *code)
{
    /* The model's own word first: exceptions of REST and JSON services carry their status. */
    for (const struct model_shape *const *e = svc ? svc->errors : NULL; e && *e; e++)
        if ((*e)->status && strcmp((*e)->name, code) == 0)
            return (*e)->status;
    switch (proto) {
    case PROTO_EC2:
    case PROTO_QUERY:
        return lookup(query_table, ARRAY_SIZE(query_table), code);
    case PROTO_JSON:
        return lookup(json_table, ARRAY_SIZE(json_table), code);
    case PROTO_REST_JSON:
        return lookup(rest_table, ARRAY_SIZE(rest_table), code);
    }
    return 400;
}

void api_auth_error(enum api_proto proto, const char *service, enum sigv4_fail f,
                    const char **ret_code, int *ret_status)
{
    const char *code;
    (void)service;
    if (proto == PROTO_EC2) {
        switch (f) {
        case SIGV4_MISSING:
            code = "MissingAuthenticationToken";
            break;
        case SIGV4_INCOMPLETE:
        case SIGV4_HOST:
        case SIGV4_NO_DATE:
            code = "IncompleteSignature";
            break;
        case SIGV4_EXPIRED:
            code = "RequestExpired";
            break;
        default:
            code = "AuthFailure";
        }
    } else if (proto == PROTO_QUERY) {
        switch (f) {
        case SIGV4_MISSING:
            code = "MissingAuthenticationToken";
            break;
        case SIGV4_INCOMPLETE:
        case SIGV4_HOST:
        case SIGV4_NO_DATE:
            code = "IncompleteSignature";
            break;
        case SIGV4_UNKNOWN_KEY:
            code = "InvalidClientTokenId";
            break;
        default:
            code = "SignatureDoesNotMatch";
        }
    } else {
        switch (f) {
        case SIGV4_MISSING:
            code = "MissingAuthenticationTokenException";
            break;
        case SIGV4_INCOMPLETE:
        case SIGV4_HOST:
        case SIGV4_NO_DATE:
            code = "IncompleteSignatureException";
            break;
        case SIGV4_UNKNOWN_KEY:
            code = "UnrecognizedClientException";
            break;
        default:
            code = "InvalidSignatureException";
        }
    }
    *ret_code = code;
    *ret_status = proto == PROTO_QUERY && strcmp(code, "IncompleteSignature") != 0
                      ? 403
                      : api_error_status(proto, NULL, code);
}
