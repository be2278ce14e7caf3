/*
 * cli_cmds.c — init, serve, account and key.  Everything these print on stdout is meant for
 * scripts: `eval "$(amid init --data d)"` works, and --format json gives one JSON document.
 * Human notes go to stderr.
 */
#include "cli/cli.h"
#include "crypto/crypto.h"
#include "daemon/daemon.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_format_parse(const char *s)
{
    if (strcmp(s, "env") == 0)
        return FMT_ENV;
    if (strcmp(s, "json") == 0)
        return FMT_JSON;
    return -1;
}

void cli_print_creds(enum cli_format fmt, const struct core_creds *c, const char *endpoint,
                     const char *region)
{
    if (fmt == FMT_JSON) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "AccountId", c->account_id,
                              "AccountName", c->account_name, "AccessKeyId", c->key_id,
                              "SecretAccessKey", c->secret, "Endpoint", endpoint, "Region", region);
        char *s = json_dumps(o, JSON_INDENT(2));
        printf("%s\n", s);
        crypto_wipe(s, strlen(s));
        free(s);
        json_decref(o);
    } else {
        printf("export AWS_ENDPOINT_URL=%s AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s "
               "AWS_DEFAULT_REGION=%s\n",
               endpoint, c->key_id, c->secret, region);
    }
    fflush(stdout);
}

static const char *first_region(struct app *app)
{
    size_t n;
    const struct core_region *r = core_regions(app, &n);
    /* us-east-1 when the deployment has it, as AWS's default; the first otherwise. */
    for (size_t i = 0; i < n; i++)
        if (strcmp(r[i].name, "us-east-1") == 0)
            return r[i].name;
    return n ? r[0].name : "us-east-1";
}

static int bad_usage(const char *cmd, const char *usage)
{
    fprintf(stderr, "usage: amid %s %s\n", cmd, usage);
    return 2;
}

/* Opens the data directory or prints why not. */
static struct app *open_app(const char *cmd, const char *data)
{
    if (!data) {
        fprintf(stderr, "amid %s: --data DIR is required\n", cmd);
        return NULL;
    }
    struct err e = { 0 };
    struct app *app;
    if (core_open(data, &app, &e) < 0) {
        fprintf(stderr, "amid %s: %s\n", cmd, e.msg);
        return NULL;
    }
    return app;
}

int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' },   { "regions", required_argument, NULL, 'r' },
        { "listen", required_argument, NULL, 'l' }, { "format", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
    };
    const char *usage = "--data DIR [--regions us-east-1,us-west-2[=/STORE/DIR],...] "
                        "[--listen HOST:PORT] [--format env|json]";
    const char *data = NULL, *regions = CORE_DEFAULT_REGIONS, *listen = CORE_DEFAULT_LISTEN;
    int fmt = FMT_ENV, c;
    while ((c = getopt_long(argc, argv, "d:r:l:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'r':
            regions = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0)
                return bad_usage("init", usage);
            break;
        case 'h':
            printf("usage: amid init %s\n", usage);
            return 0;
        default:
            return bad_usage("init", usage);
        }
    }
    if (!data || optind != argc)
        return bad_usage("init", usage);
    struct core_creds creds;
    struct err e = { 0 };
    if (core_datadir_init(data, regions, listen, &creds, &e) < 0) {
        fprintf(stderr, "amid init: %s\n", e.msg);
        return 1;
    }
    struct app *app = open_app("init", data);
    if (!app) {
        core_creds_wipe(&creds);
        return 1;
    }
    char endpoint[160];
    core_endpoint(app, endpoint, sizeof(endpoint));
    fprintf(stderr, "amid: initialised %s; account %s (%s); this secret is shown only once\n", data,
            creds.account_id, creds.account_name);
    cli_print_creds((enum cli_format)fmt, &creds, endpoint, first_region(app));
    core_creds_wipe(&creds);
    core_close(app);
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' },
        { "listen", required_argument, NULL, 'l' },
        { "time-window", required_argument, NULL, 't' },
        { "threads", required_argument, NULL, 'T' },
        { "max-body", required_argument, NULL, 'b' },
        { "response-cache", required_argument, NULL, 'R' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *usage = "--data DIR [--listen HOST:PORT] [--time-window SECONDS] "
                        "[--threads N] [--max-body BYTES] [--response-cache MIB] [--quiet]";
    struct daemon_opts o = { 0 };
    api_config_default(&o.api);
    int c;
    while ((c = getopt_long(argc, argv, "d:l:t:T:b:R:qh", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'd':
            o.datadir = optarg;
            break;
        case 'l':
            o.api.listen = optarg;
            break;
        case 't':
            o.api.time_window_s = (int)strtol(optarg, &end, 10);
            if (*end || o.api.time_window_s < 1 || o.api.time_window_s > 7 * 86400)
                return bad_usage("serve", usage);
            break;
        case 'T':
            o.api.threads = (unsigned)strtoul(optarg, &end, 10);
            if (*end || o.api.threads < 1 || o.api.threads > 256)
                return bad_usage("serve", usage);
            break;
        case 'b':
            o.api.max_body = strtoull(optarg, &end, 10);
            if (*end || o.api.max_body < 4096)
                return bad_usage("serve", usage);
            break;
        case 'R': {
            unsigned long mib = strtoul(optarg, &end, 10);
            if (*end || !*optarg || mib > 65536)
                return bad_usage("serve", usage);
            o.api.response_cache = (size_t)mib << 20;
            break;
        }
        case 'q':
            o.api.access_log = false;
            break;
        case 'h':
            printf("usage: amid serve %s\n", usage);
            return 0;
        default:
            return bad_usage("serve", usage);
        }
    }
    if (!o.datadir || optind != argc)
        return bad_usage("serve", usage);
    return daemon_serve(&o) < 0 ? 1 : 0;
}

static int print_account(void *ctx, const struct core_account_info *a);

struct list_ctx {
    int fmt;
    json_t *arr;
};

int cmd_account(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' },
        { "format", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *usage = "create NAME --data DIR [--format env|json] | list --data DIR "
                        "[--format env|json]";
    const char *data = NULL;
    int fmt = FMT_ENV, c;
    while ((c = getopt_long(argc, argv, "d:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0)
                return bad_usage("account", usage);
            break;
        case 'h':
            printf("usage: amid account %s\n", usage);
            return 0;
        default:
            return bad_usage("account", usage);
        }
    }
    int nargs = argc - optind;
    char **args = argv + optind;
    if (nargs == 2 && strcmp(args[0], "create") == 0) {
        struct app *app = open_app("account create", data);
        if (!app)
            return 1;
        struct core_creds creds;
        struct err e = { 0 };
        int rc = core_account_create(app, args[1], &creds, &e);
        if (rc < 0) {
            fprintf(stderr, "amid account create: %s\n", e.msg);
            core_close(app);
            return 1;
        }
        char endpoint[160];
        core_endpoint(app, endpoint, sizeof(endpoint));
        fprintf(stderr, "amid: account %s (%s) created; this secret is shown only once\n",
                creds.account_id, creds.account_name);
        cli_print_creds((enum cli_format)fmt, &creds, endpoint, first_region(app));
        core_creds_wipe(&creds);
        core_close(app);
        return 0;
    }
    if (nargs == 1 && strcmp(args[0], "list") == 0) {
        struct app *app = open_app("account list", data);
        if (!app)
            return 1;
        struct list_ctx lc = { fmt, json_array() };
        int rc = core_account_each(app, print_account, &lc);
        if (fmt == FMT_JSON) {
            json_t *doc = json_pack("{s:O}", "Accounts", lc.arr);
            char *s = json_dumps(doc, JSON_INDENT(2));
            printf("%s\n", s);
            free(s);
            json_decref(doc);
        }
        json_decref(lc.arr);
        core_close(app);
        return rc < 0 ? 1 : 0;
    }
    return bad_usage("account", usage);
}

static int print_account(void *ctx, const struct core_account_info *a)
{
    struct list_ctx *lc = ctx;
    if (lc->fmt == FMT_JSON)
        json_array_append_new(lc->arr, json_pack("{s:s, s:s, s:s, s:b}", "AccountId", a->id, "Name",
                                                 a->name, "Alias", a->alias, "System", a->system));
    else
        printf("AMID_ACCOUNT_ID=%s AMID_ACCOUNT_NAME=%s AMID_ACCOUNT_SYSTEM=%s\n", a->id, a->name,
               a->system ? "true" : "false");
    return 0;
}

static int print_key(void *ctx, const struct core_key_info *k)
{
    struct list_ctx *lc = ctx;
    if (lc->fmt == FMT_JSON)
        json_array_append_new(lc->arr, json_pack("{s:s, s:s, s:s, s:I}", "AccessKeyId", k->id,
                                                 "AccountId", k->account_id, "Label", k->label,
                                                 "CreatedMs", (json_int_t)k->created_ms));
    else
        printf("AWS_ACCESS_KEY_ID=%s AMID_ACCOUNT_ID=%s AMID_KEY_LABEL=%s\n", k->id, k->account_id,
               k->label[0] ? k->label : "-");
    return 0;
}

int cmd_key(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' },  { "format", required_argument, NULL, 'f' },
        { "label", required_argument, NULL, 'L' }, { "replace", no_argument, NULL, 'R' },
        { "help", no_argument, NULL, 'h' },        { NULL, 0, NULL, 0 },
    };
    const char *usage = "create ACCOUNT [--label L [--replace]] | delete ACCESS_KEY_ID | "
                        "list [ACCOUNT]   (all with --data DIR [--format env|json])";
    const char *data = NULL, *label = NULL;
    bool replace = false;
    int fmt = FMT_ENV, c;
    while ((c = getopt_long(argc, argv, "d:f:L:Rh", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0)
                return bad_usage("key", usage);
            break;
        case 'L':
            label = optarg;
            break;
        case 'R':
            replace = true;
            break;
        case 'h':
            printf("usage: amid key %s\n", usage);
            return 0;
        default:
            return bad_usage("key", usage);
        }
    }
    int nargs = argc - optind;
    char **args = argv + optind;
    if (nargs < 1)
        return bad_usage("key", usage);
    struct err e = { 0 };
    if (nargs == 2 && strcmp(args[0], "create") == 0) {
        struct app *app = open_app("key create", data);
        if (!app)
            return 1;
        struct core_creds creds;
        if (core_key_create(app, args[1], label, replace, &creds, &e) < 0) {
            fprintf(stderr, "amid key create: %s\n", e.msg);
            core_close(app);
            return 1;
        }
        char endpoint[160];
        core_endpoint(app, endpoint, sizeof(endpoint));
        fprintf(stderr, "amid: new key for account %s (%s); this secret is shown only once\n",
                creds.account_id, creds.account_name);
        cli_print_creds((enum cli_format)fmt, &creds, endpoint, first_region(app));
        core_creds_wipe(&creds);
        core_close(app);
        return 0;
    }
    if (nargs == 2 && strcmp(args[0], "delete") == 0) {
        struct app *app = open_app("key delete", data);
        if (!app)
            return 1;
        int rc = core_key_delete(app, args[1], &e);
        if (rc < 0)
            fprintf(stderr, "amid key delete: %s\n", e.msg);
        else if (fmt == FMT_JSON)
            printf("{\"Deleted\": \"%s\"}\n", args[1]);
        else
            printf("AWS_ACCESS_KEY_ID=%s AMID_KEY_DELETED=true\n", args[1]);
        core_close(app);
        return rc < 0 ? 1 : 0;
    }
    if ((nargs == 1 || nargs == 2) && strcmp(args[0], "list") == 0) {
        struct app *app = open_app("key list", data);
        if (!app)
            return 1;
        struct list_ctx lc = { fmt, json_array() };
        int rc = core_key_each(app, nargs == 2 ? args[1] : NULL, print_key, &lc);
        if (rc < 0)
            fprintf(stderr, "amid key list: no such account '%s'\n", args[1]);
        else if (fmt == FMT_JSON) {
            json_t *doc = json_pack("{s:O}", "AccessKeys", lc.arr);
            char *s = json_dumps(doc, JSON_INDENT(2));
            printf("%s\n", s);
            free(s);
            json_decref(doc);
        }
        json_decref(lc.arr);
        core_close(app);
        return rc < 0 ? 1 : 0;
    }
    return bad_usage("key", usage);
}
