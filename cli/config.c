/*
 * config.c — the walgate configuration file: parsing (libinih), defaults and validation.
 *
 * Every key is declared once in `g_keys` below with its section kind, type, default, where it
 * is stored and what is allowed. Parsing, defaults and error messages all follow that table,
 * and docs/configuration.md documents the same keys. Errors name the file, the line, the
 * section and the key, and say what is allowed; unknown sections and keys are errors, and so
 * is a password written inline.
 */
#include "cli/cli.h"

#include <errno.h>
#include <ini.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* The key table                                                                               */
/* ------------------------------------------------------------------------------------------ */

typedef enum sect_kind {
    SECT_WALGATE,
    SECT_TUNNEL,
    SECT_POSTGRES,
    SECT_SOURCE,
    SECT_PRIVATELINK,
    SECT_SINK
} sect_kind;

static const char *const g_sect_names[] = {"walgate", "tunnel",      "postgres",
                                           "source",  "privatelink", "sink"};

typedef enum key_type {
    KT_STRING,   /* char * (owned) */
    KT_NAME,     /* char *, a section name: [A-Za-z0-9_.-] */
    KT_PATH,     /* char *, an absolute or relative file path */
    KT_PORT,     /* int 1..65535 */
    KT_COUNT,    /* int, min..max */
    KT_DURATION, /* int64_t milliseconds, min..max */
    KT_SIZE,     /* uint64_t bytes */
    KT_ENUM,     /* int, index into `choices` mapped through `values` */
    KT_LIST,     /* char ** (owned, NULL-terminated), comma-separated */
    KT_VIA,      /* "direct" | "tunnel NAME" | "privatelink NAME" */
    KT_LOGLEVEL, /* log_level */
    KT_MULTI,    /* char ** (owned, NULL-terminated): the key may repeat, one item per line */
} key_type;

typedef struct key_spec {
    sect_kind sect;
    const char *key;
    key_type type;
    const char *def; /* default as it would be written in the file; NULL = none */
    size_t off;      /* offset of the storage in the section's struct */
    long long min, max;
    const char *const *choices; /* KT_ENUM: NULL-terminated */
    const int *values;          /* KT_ENUM: the value stored for each choice */
} key_spec;

static const char *const g_hostkey_choices[] = {"strict", "accept-new", NULL};
static const int g_hostkey_values[] = {TUNNEL_HOSTKEY_STRICT, TUNNEL_HOSTKEY_ACCEPT_NEW};
static const char *const g_transport_choices[] = {"libssh2", "openssh", NULL};
static const int g_transport_values[] = {TUNNEL_TRANSPORT_LIBSSH2, TUNNEL_TRANSPORT_OPENSSH};
static const char *const g_sslmode_choices[] = {"disable",   "allow",       "prefer", "require",
                                                "verify-ca", "verify-full", NULL};

#define W(field) offsetof(cli_config, field)
#define T(field) offsetof(cli_tunnel, field)
#define P(field) offsetof(cli_postgres, field)
#define S(field) offsetof(cli_source, field)
#define L(field) offsetof(cli_privatelink, field)
#define K(field) offsetof(cli_sink, field)
static const char *const g_sink_types[] = {"webhook", "nats", NULL};
static const int g_sink_type_values[] = {CLI_SINK_WEBHOOK, CLI_SINK_NATS};
static const char *const g_session_attrs_choices[] = {
    "any", "read-write", "read-only", "primary", "standby", "prefer-standby", NULL};
static const char *const g_bool_choices[] = {"true", "false", "yes", "no", "on", "off", NULL};
static const int g_bool_values[] = {1, 0, 1, 0, 1, 0};
static const char *const g_signature_choices[] = {"walgate", "standard", NULL};
#define MS_DAY (86400LL * 1000)

static const key_spec g_keys[] = {
    {SECT_WALGATE, "state_dir", KT_PATH, WALGATE_DEFAULT_STATE_DIR, W(state_dir), 0, 0, 0, 0},
    {SECT_WALGATE, "log_level", KT_LOGLEVEL, "info", W(log_level), 0, 0, 0, 0},
    {SECT_WALGATE, "log_retention", KT_DURATION, "7d", W(log_retention_ms), 0, 3650 * MS_DAY, 0, 0},
    {SECT_WALGATE, "log_segment_bytes", KT_SIZE, "64MiB", W(log_segment_bytes), 64 * 1024, 0, 0, 0},
    {SECT_WALGATE, "log_max_disk", KT_SIZE, "0", W(log_max_disk), 0, 0, 0, 0},
    {SECT_WALGATE, "min_free_space", KT_SIZE, "0", W(min_free_space), 0, 0, 0, 0},
    {SECT_WALGATE, "allow_core_dumps", KT_ENUM, "false", W(allow_core_dumps), 0, 0, g_bool_choices,
     g_bool_values},

    {SECT_TUNNEL, "host", KT_STRING, NULL, T(host), 0, 0, 0, 0},
    {SECT_TUNNEL, "port", KT_PORT, "22", T(cfg.port), 1, 65535, 0, 0},
    {SECT_TUNNEL, "user", KT_STRING, NULL, T(user), 0, 0, 0, 0},
    {SECT_TUNNEL, "host_key_policy", KT_ENUM, "strict", T(cfg.host_key_policy), 0, 0,
     g_hostkey_choices, g_hostkey_values},
    {SECT_TUNNEL, "known_hosts", KT_PATH, NULL, T(known_hosts), 0, 0, 0, 0},
    {SECT_TUNNEL, "connect_timeout", KT_DURATION, "10s", T(cfg.connect_timeout_ms), 100, MS_DAY, 0,
     0},
    {SECT_TUNNEL, "keepalive_interval", KT_DURATION, "2s", T(cfg.keepalive_interval_ms), 100,
     MS_DAY, 0, 0},
    {SECT_TUNNEL, "sessions", KT_COUNT, "1", T(cfg.sessions), 1, TUNNEL_SESSIONS_MAX, 0, 0},
    {SECT_TUNNEL, "transport", KT_ENUM, "libssh2", T(cfg.transport), 0, 0, g_transport_choices,
     g_transport_values},
    {SECT_TUNNEL, "ssh_command", KT_PATH, NULL, T(ssh_command), 0, 0, 0, 0},
    {SECT_TUNNEL, "keepalives_idle", KT_DURATION, "5s", T(cfg.tcp.idle_ms), 1000, MS_DAY, 0, 0},
    {SECT_TUNNEL, "keepalives_interval", KT_DURATION, "1s", T(cfg.tcp.interval_ms), 1000, MS_DAY, 0,
     0},
    {SECT_TUNNEL, "keepalives_count", KT_COUNT, "4", T(cfg.tcp.count), 1, 100, 0, 0},
    {SECT_TUNNEL, "tcp_user_timeout", KT_DURATION, "8s", T(cfg.tcp.user_timeout_ms), 0, MS_DAY, 0,
     0},

    {SECT_POSTGRES, "host", KT_STRING, NULL, P(host), 0, 0, 0, 0},
    {SECT_POSTGRES, "port", KT_PORT, "5432", P(cfg.port), 1, 65535, 0, 0},
    {SECT_POSTGRES, "user", KT_STRING, NULL, P(user), 0, 0, 0, 0},
    {SECT_POSTGRES, "dbname", KT_STRING, NULL, P(dbname), 0, 0, 0, 0},
    {SECT_POSTGRES, "password_file", KT_PATH, NULL, P(password_file), 0, 0, 0, 0},
    {SECT_POSTGRES, "password_env", KT_STRING, NULL, P(password_env), 0, 0, 0, 0},
    {SECT_POSTGRES, "sslmode", KT_STRING, "prefer", P(sslmode), 0, 0, g_sslmode_choices, 0},
    {SECT_POSTGRES, "sslrootcert", KT_PATH, NULL, P(sslrootcert), 0, 0, 0, 0},
    {SECT_POSTGRES, "via", KT_VIA, "direct", 0, 0, 0, 0, 0},
    {SECT_POSTGRES, "target_session_attrs", KT_STRING, NULL, P(target_session_attrs), 0, 0,
     g_session_attrs_choices, 0},
    {SECT_POSTGRES, "standbys", KT_LIST, NULL, P(standbys), 0, 0, 0, 0},
    {SECT_POSTGRES, "connect_timeout", KT_DURATION, "10s", P(cfg.connect_timeout_ms), 1000, MS_DAY,
     0, 0},
    {SECT_POSTGRES, "keepalives_idle", KT_DURATION, "5s", P(cfg.tcp.idle_ms), 1000, MS_DAY, 0, 0},
    {SECT_POSTGRES, "keepalives_interval", KT_DURATION, "1s", P(cfg.tcp.interval_ms), 1000, MS_DAY,
     0, 0},
    {SECT_POSTGRES, "keepalives_count", KT_COUNT, "4", P(cfg.tcp.count), 1, 100, 0, 0},
    {SECT_POSTGRES, "tcp_user_timeout", KT_DURATION, "8s", P(cfg.tcp.user_timeout_ms), 0, MS_DAY, 0,
     0},

    {SECT_SOURCE, "connection", KT_NAME, NULL, S(connection), 0, 0, 0, 0},
    {SECT_SOURCE, "publication", KT_STRING, NULL, S(publication), 0, 0, 0, 0},
    {SECT_SOURCE, "slot", KT_STRING, NULL, S(slot), 0, 0, 0, 0},
    {SECT_SOURCE, "tables", KT_LIST, NULL, S(cfg.tables), 0, 0, 0, 0},
    {SECT_SOURCE, "text_columns", KT_LIST, NULL, S(cfg.text_columns), 0, 0, 0, 0},
    {SECT_SOURCE, "exclude_columns", KT_LIST, NULL, S(cfg.exclude_columns), 0, 0, 0, 0},
    {SECT_SOURCE, "snapshot_workers", KT_COUNT, "2", S(cfg.snapshot_workers), 1, 16, 0, 0},
    {SECT_SOURCE, "max_txn_memory", KT_SIZE, "64MiB", S(cfg.max_txn_memory), 1 << 20, 0, 0, 0},
    {SECT_SOURCE, "status_interval", KT_DURATION, "10s", S(cfg.status_interval_ms), 100,
     10 * 60 * 1000, 0, 0},
    {SECT_SOURCE, "catalog_interval", KT_DURATION, "10s", S(cfg.catalog_interval_ms), 100,
     10 * 60 * 1000, 0, 0},
    {SECT_SOURCE, "forward", KT_LIST, NULL, S(forward), 0, 0, 0, 0},
    {SECT_SOURCE, "failover", KT_ENUM, "true", S(cfg.failover), 0, 0, g_bool_choices,
     g_bool_values},

    {SECT_SINK, "type", KT_ENUM, NULL, K(type), 0, 0, g_sink_types, g_sink_type_values},
    {SECT_SINK, "url", KT_STRING, NULL, K(url), 0, 0, 0, 0},
    {SECT_SINK, "batch_max_bytes", KT_SIZE, "1MiB", K(batch_max_bytes), 1024, 0, 0, 0},
    {SECT_SINK, "batch_max_delay", KT_DURATION, "0ms", K(batch_max_delay_ms), 0, 60000, 0, 0},
    {SECT_SINK, "timeout", KT_DURATION, "30s", K(timeout_ms), 100, 10 * 60 * 1000, 0, 0},
    {SECT_SINK, "hmac_secret_file", KT_PATH, NULL, K(hmac_secret_file), 0, 0, 0, 0},
    {SECT_SINK, "signature", KT_STRING, "walgate", K(signature), 0, 0, g_signature_choices, 0},
    {SECT_SINK, "header", KT_MULTI, NULL, K(headers), 0, 0, 0, 0},
    {SECT_SINK, "header_file", KT_PATH, NULL, K(header_file), 0, 0, 0, 0},
    {SECT_SINK, "ca_file", KT_PATH, NULL, K(ca_file), 0, 0, 0, 0},
    {SECT_SINK, "client_cert", KT_PATH, NULL, K(client_cert), 0, 0, 0, 0},
    {SECT_SINK, "client_key", KT_PATH, NULL, K(client_key), 0, 0, 0, 0},
    {SECT_SINK, "insecure_skip_verify", KT_ENUM, "false", K(insecure_skip_verify), 0, 0,
     g_bool_choices, g_bool_values},
    {SECT_SINK, "servers", KT_LIST, NULL, K(servers), 0, 0, 0, 0},
    {SECT_SINK, "creds_file", KT_PATH, NULL, K(creds_file), 0, 0, 0, 0},
    {SECT_SINK, "user", KT_STRING, NULL, K(user), 0, 0, 0, 0},
    {SECT_SINK, "password_file", KT_PATH, NULL, K(password_file), 0, 0, 0, 0},
    {SECT_SINK, "token_file", KT_PATH, NULL, K(token_file), 0, 0, 0, 0},
    {SECT_SINK, "stream", KT_STRING, NULL, K(stream), 0, 0, 0, 0},
    {SECT_SINK, "create_stream", KT_ENUM, "false", K(create_stream), 0, 0, g_bool_choices,
     g_bool_values},
    {SECT_SINK, "replicas", KT_COUNT, "1", K(replicas), 1, 5, 0, 0},
    {SECT_SINK, "stream_max_age", KT_DURATION, "0", K(stream_max_age_ms), 0, 3650 * MS_DAY, 0, 0},
    {SECT_SINK, "stream_max_bytes", KT_SIZE, "0", K(stream_max_bytes), 0, 0, 0, 0},
    {SECT_SINK, "stream_duplicate_window", KT_DURATION, "2m", K(stream_duplicate_window_ms), 100,
     MS_DAY, 0, 0},
    {SECT_SINK, "subject_prefix", KT_STRING, "walgate", K(subject_prefix), 0, 0, 0, 0},
    {SECT_SINK, "max_pending", KT_COUNT, "4096", K(max_pending), 1, 1000000, 0, 0},

    {SECT_PRIVATELINK, "service_name", KT_STRING, NULL, L(service_name), 0, 0, 0, 0},
    {SECT_PRIVATELINK, "endpoint", KT_STRING, NULL, L(endpoint), 0, 0, 0, 0},
    {SECT_PRIVATELINK, "endpoint_id", KT_STRING, NULL, L(endpoint_id), 0, 0, 0, 0},
    {SECT_PRIVATELINK, "region", KT_STRING, NULL, L(region), 0, 0, 0, 0},
    {SECT_PRIVATELINK, "availability_zones", KT_LIST, NULL, L(availability_zones), 0, 0, 0, 0},
    {SECT_PRIVATELINK, "resolve_interval", KT_DURATION, "30s", L(cfg.resolve_interval_ms), 1000,
     MS_DAY, 0, 0},
    {SECT_PRIVATELINK, "api_interval", KT_DURATION, "5m", L(cfg.api_interval_ms), 5000, MS_DAY, 0,
     0},
    {SECT_PRIVATELINK, "dns_servers", KT_STRING, NULL, L(dns_servers), 0, 0, 0, 0},
    {SECT_PRIVATELINK, "dns_timeout", KT_DURATION, "2s", L(cfg.dns_timeout_ms), 100, 60000, 0, 0},
    {SECT_PRIVATELINK, "dns_tries", KT_COUNT, "3", L(cfg.dns_tries), 1, 10, 0, 0},
    {SECT_PRIVATELINK, "aws_profile", KT_STRING, NULL, L(aws_profile), 0, 0, 0, 0},
};

/* ------------------------------------------------------------------------------------------ */
/* Parse state                                                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct parse_state {
    cli_config *cfg;
    const char *path;
    wg_error *err;
    int failed;
    /* Line counting: our reader hands libinih one line at a time and counts them. */
    const char *text;
    size_t text_len, text_pos;
    int line;
    /* The section the current line belongs to, as we saw its header. */
    sect_kind cur_kind;
    void *cur;    /* cli_config, cli_tunnel, cli_postgres or cli_source */
    bool cur_bad; /* the section header itself was refused; skip its keys */
    /* Which keys were set in the current section (index into g_keys), to refuse duplicates. */
    int seen_line[WG_ARRAY_LEN(g_keys)];
    bool walgate_seen;
} parse_state;

static void apply_defaults(parse_state *ps, sect_kind kind, void *base);

/* Record the first error only; later ones are usually consequences of the first. */
__attribute__((format(printf, 3, 4))) static void fail(parse_state *ps, int line, const char *fmt,
                                                       ...)
{
    if (ps->failed++)
        return;
    char msg[WG_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (line > 0)
        wg_error_set(ps->err, WG_ERR_CONFIG, "%s:%d: %s", ps->path, line, msg);
    else
        wg_error_set(ps->err, WG_ERR_CONFIG, "%s: %s", ps->path, msg);
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* Grow an array of section structs by one zeroed element; returns it or NULL. */
static void *grow(void **arr, size_t *n, size_t elem)
{
    char *p = realloc(*arr, (*n + 1) * elem);
    if (!p)
        return NULL;
    memset(p + *n * elem, 0, elem);
    *arr = p;
    return p + (*n)++ * elem;
}

/* Where cli_config keeps the sections of each named kind: the array, its count, the size of
 * one section, and where a section keeps its name and the line it starts on. */
typedef struct sect_store {
    size_t array, count, size, name, line;
} sect_store;

#define STORE(arr, n, type)                                                                        \
    {                                                                                              \
        offsetof(cli_config, arr), offsetof(cli_config, n), sizeof(type), offsetof(type, name),    \
            offsetof(type, line)                                                                   \
    }
static const sect_store g_sect_store[] = {
    [SECT_TUNNEL] = STORE(tunnels, n_tunnels, cli_tunnel),
    [SECT_POSTGRES] = STORE(postgres, n_postgres, cli_postgres),
    [SECT_SOURCE] = STORE(sources, n_sources, cli_source),
    [SECT_PRIVATELINK] = STORE(privatelinks, n_privatelinks, cli_privatelink),
    [SECT_SINK] = STORE(sinks, n_sinks, cli_sink),
};
#undef STORE

static char **sect_name(const sect_store *st, void *sect)
{
    return (char **)((char *)sect + st->name);
}

static void *find_section(const cli_config *cfg, sect_kind kind, const char *name)
{
    if (kind == SECT_WALGATE)
        return (void *)cfg;
    const sect_store *st = &g_sect_store[kind];
    char *arr = *(char *const *)((const char *)cfg + st->array);
    size_t n = *(const size_t *)((const char *)cfg + st->count);
    for (size_t i = 0; i < n; i++)
        if (strcmp(*sect_name(st, arr + i * st->size), name) == 0)
            return arr + i * st->size;
    return NULL;
}

/*
 * A section header line "[kind NAME]" or "[walgate]". Sections are opened here rather than in
 * libinih's handler because libinih only reports sections that contain keys, and an empty
 * "[tunnel b1]" must still be reported as missing its host.
 */
static void open_section(parse_state *ps, char *header)
{
    ps->cur = NULL;
    ps->cur_bad = true;
    memset(ps->seen_line, 0, sizeof(ps->seen_line));
    char *s = trim(header);
    char *sp = strpbrk(s, " \t");
    char *name = NULL;
    if (sp) {
        *sp = '\0';
        name = trim(sp + 1);
    }
    int kind = -1;
    for (size_t k = 0; k < WG_ARRAY_LEN(g_sect_names); k++)
        if (strcmp(s, g_sect_names[k]) == 0)
            kind = (int)k;
    if (kind < 0) {
        fail(ps, ps->line,
             "unknown section [%s%s%s]; allowed: [walgate], [tunnel NAME], [postgres NAME], "
             "[source NAME], [privatelink NAME], [sink NAME]",
             s, name ? " " : "", name ? name : "");
        return;
    }
    if (kind == SECT_WALGATE) {
        if (name && *name) {
            fail(ps, ps->line, "[walgate] takes no name (found \"%s\")", name);
            return;
        }
        if (ps->walgate_seen) {
            fail(ps, ps->line, "[walgate] appears twice; merge the two sections");
            return;
        }
        ps->walgate_seen = true;
        ps->cur_kind = SECT_WALGATE;
        ps->cur = ps->cfg;
        ps->cur_bad = false;
        return;
    }
    if (!name || !*name) {
        fail(ps, ps->line, "[%s] needs a name, e.g. [%s main]", s, s);
        return;
    }
    if (!valid_name(name)) {
        fail(ps, ps->line,
             "[%s %s]: a name may use only letters, digits, '_', '-' and '.' (at most 64)", s,
             name);
        return;
    }
    if (find_section(ps->cfg, (sect_kind)kind, name)) {
        fail(ps, ps->line, "[%s %s] appears twice; section names must be unique", s, name);
        return;
    }
    const sect_store *st = &g_sect_store[kind];
    void *sect = grow((void **)((char *)ps->cfg + st->array),
                      (size_t *)((char *)ps->cfg + st->count), st->size);
    if (sect && kind == SECT_SINK)
        ((cli_sink *)sect)->type = -1;
    if (!sect || !(*sect_name(st, sect) = strdup(name))) {
        fail(ps, ps->line, "out of memory");
        return;
    }
    *(int *)((char *)sect + st->line) = ps->line;
    ps->cur_kind = (sect_kind)kind;
    ps->cur = sect;
    ps->cur_bad = false;
    apply_defaults(ps, (sect_kind)kind, sect);
}

/* libinih reader: one line per call, counting lines and noticing section headers. */
static char *reader(char *str, int num, void *stream)
{
    parse_state *ps = stream;
    if (ps->text_pos >= ps->text_len)
        return NULL;
    const char *start = ps->text + ps->text_pos;
    const char *nl = memchr(start, '\n', ps->text_len - ps->text_pos);
    size_t n = nl ? (size_t)(nl - start) + 1 : ps->text_len - ps->text_pos;
    ps->text_pos += n;
    ps->line++;
    if (n > (size_t)num - 1) {
        fail(ps, ps->line, "line is longer than %d characters", num - 2);
        n = 0;
    }
    memcpy(str, start, n);
    str[n] = '\0';
    if (memchr(str, '\0', n)) {
        fail(ps, ps->line, "line contains a NUL byte");
        str[0] = '\0';
    }
    /* Section headers are handled here, where the exact line is known. */
    char *s = str;
    if (ps->line == 1 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3; /* a UTF-8 byte-order mark, which libinih skips too */
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '[') {
        char *close = strchr(s, ']');
        const char *rest = close ? close + 1 : NULL;
        while (rest && (*rest == ' ' || *rest == '\t' || *rest == '\r' || *rest == '\n'))
            rest++;
        if (!close) {
            fail(ps, ps->line, "section header has no closing ']'");
            ps->cur = NULL;
            ps->cur_bad = true;
        } else if (*rest && *rest != '#' && *rest != ';') {
            fail(ps, ps->line, "unexpected text after the section header's ']'");
            ps->cur = NULL;
            ps->cur_bad = true;
        } else {
            char header[512];
            size_t hl = (size_t)(close - s - 1);
            if (hl >= sizeof(header))
                hl = sizeof(header) - 1;
            memcpy(header, s + 1, hl);
            header[hl] = '\0';
            open_section(ps, header);
        }
    }
    return str;
}

/* ------------------------------------------------------------------------------------------ */
/* Values                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static void free_list(char **list)
{
    if (!list)
        return;
    for (char **p = list; *p; p++)
        free(*p);
    free(list);
}

/* Split "a, b ,c" into a NULL-terminated list of trimmed, non-empty items. */
static char **split_list(const char *value)
{
    size_t cap = 1;
    for (const char *p = value; *p; p++)
        cap += *p == ',';
    char **list = calloc(cap + 1, sizeof(*list));
    char *copy = strdup(value);
    if (!list || !copy) {
        free(list);
        free(copy);
        return NULL;
    }
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *item = trim(tok);
        if (!*item)
            continue;
        if (!(list[n++] = strdup(item))) {
            free(copy);
            free_list(list);
            return NULL;
        }
    }
    free(copy);
    return list;
}

static const char *sect_label(parse_state *ps, char *buf, size_t len)
{
    const char *name = NULL;
    switch (ps->cur_kind) {
    case SECT_TUNNEL:
        name = ((cli_tunnel *)ps->cur)->name;
        break;
    case SECT_POSTGRES:
        name = ((cli_postgres *)ps->cur)->name;
        break;
    case SECT_SOURCE:
        name = ((cli_source *)ps->cur)->name;
        break;
    case SECT_PRIVATELINK:
        name = ((cli_privatelink *)ps->cur)->name;
        break;
    case SECT_SINK:
        name = ((cli_sink *)ps->cur)->name;
        break;
    case SECT_WALGATE:
        break;
    }
    if (name)
        snprintf(buf, len, "[%s %s]", g_sect_names[ps->cur_kind], name);
    else
        snprintf(buf, len, "[%s]", g_sect_names[ps->cur_kind]);
    return buf;
}

static void list_keys(sect_kind kind, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < WG_ARRAY_LEN(g_keys); i++) {
        if (g_keys[i].sect != kind)
            continue;
        int n = snprintf(buf + off, len - off, "%s%s", off ? ", " : "", g_keys[i].key);
        if (n < 0 || (size_t)n >= len - off)
            break;
        off += (size_t)n;
    }
}

/* "a, b, c" from a NULL-terminated list of choices, for messages. */
static void format_choices(const char *const *choices, char *buf, size_t len)
{
    buf[0] = '\0';
    for (const char *const *c = choices; *c; c++)
        snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", c == choices ? "" : ", ", *c);
}

/* fail() with `LABEL KEY: "VALUE" is not allowed; use ` followed by `fmt`: what is. */
__attribute__((format(printf, 6, 7))) static void not_allowed(parse_state *ps, int line,
                                                              const char *label, const key_spec *k,
                                                              const char *value, const char *fmt,
                                                              ...)
{
    char use[WG_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(use, sizeof(use), fmt, ap);
    va_end(ap);
    fail(ps, line, "%s %s: \"%s\" is not allowed; use %s", label, k->key, value, use);
}

/* The setters below store `value` for key `k` in `field`; `label` names the section. Each
 * returns 0, or -1 after fail() with a message naming the line, section, key and what is
 * allowed. */

/* KT_STRING, KT_NAME, KT_PATH: a non-empty string (a section name for KT_NAME, one of
 * k->choices when given), copied. */
static int set_string(parse_state *ps, const key_spec *k, const char *value, int line,
                      const char *label, char **field)
{
    if (!*value) {
        fail(ps, line, "%s %s is empty; remove the line to use the default", label, k->key);
        return -1;
    }
    if (k->type == KT_NAME && !valid_name(value)) {
        fail(ps, line, "%s %s: \"%s\" is not a section name (letters, digits, '_-.')", label,
             k->key, value);
        return -1;
    }
    if (k->choices) {
        bool ok = false;
        for (const char *const *c = k->choices; *c; c++)
            ok |= strcmp(*c, value) == 0;
        if (!ok) {
            char allowed[256];
            format_choices(k->choices, allowed, sizeof(allowed));
            not_allowed(ps, line, label, k, value, "one of: %s", allowed);
            return -1;
        }
    }
    char *copy = strdup(value);
    if (!copy) {
        fail(ps, line, "out of memory");
        return -1;
    }
    free(*field);
    *field = copy;
    return 0;
}

/* KT_PORT, KT_COUNT: a whole number from k->min to k->max. */
static int set_number(parse_state *ps, const key_spec *k, const char *value, int line,
                      const char *label, int *field)
{
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (!*value || *end || errno || v < k->min || v > k->max) {
        not_allowed(ps, line, label, k, value, "a whole number from %lld to %lld", k->min, k->max);
        return -1;
    }
    *field = (int)v;
    return 0;
}

/* KT_DURATION: a duration with a unit, from k->min to k->max milliseconds. */
static int set_duration(parse_state *ps, const key_spec *k, const char *value, int line,
                        const char *label, int64_t *field)
{
    int64_t ms;
    if (wg_parse_duration(value, &ms) != 0 || ms < k->min || ms > k->max) {
        char lo[32], hi[32];
        wg_format_duration(k->min, lo, sizeof(lo));
        wg_format_duration(k->max, hi, sizeof(hi));
        not_allowed(ps, line, label, k, value,
                    "a duration from %s to %s with a unit, e.g. 500ms, 10s, 5m", lo, hi);
        return -1;
    }
    *field = ms;
    return 0;
}

/* KT_SIZE: a size with a unit, at least k->min bytes. */
static int set_size(parse_state *ps, const key_spec *k, const char *value, int line,
                    const char *label, uint64_t *field)
{
    uint64_t bytes;
    if (wg_parse_size(value, &bytes) != 0 || bytes < (uint64_t)k->min) {
        char lo[32];
        wg_format_size((uint64_t)k->min, lo, sizeof(lo));
        not_allowed(ps, line, label, k, value, "a size of at least %s, e.g. 64MiB, 1GiB", lo);
        return -1;
    }
    *field = bytes;
    return 0;
}

/* KT_ENUM: one of k->choices, stored as the matching k->values entry. */
static int set_enum(parse_state *ps, const key_spec *k, const char *value, int line,
                    const char *label, int *field)
{
    for (int i = 0; k->choices[i]; i++) {
        if (strcmp(k->choices[i], value) == 0) {
            *field = k->values[i];
            return 0;
        }
    }
    char allowed[256];
    format_choices(k->choices, allowed, sizeof(allowed));
    not_allowed(ps, line, label, k, value, "one of: %s", allowed);
    return -1;
}

/* KT_LOGLEVEL: error, warn, info or debug. */
static int set_loglevel(parse_state *ps, const key_spec *k, const char *value, int line,
                        const char *label, log_level *field)
{
    log_level lv;
    if (log_level_parse(value, &lv) != 0) {
        not_allowed(ps, line, label, k, value, "one of: error, warn, info, debug");
        return -1;
    }
    *field = lv;
    return 0;
}

/* KT_LIST: a non-empty comma-separated list, replacing the previous one. */
static int set_list(parse_state *ps, const key_spec *k, const char *value, int line,
                    const char *label, char ***field)
{
    char **list = split_list(value);
    if (!list) {
        fail(ps, line, "out of memory");
        return -1;
    }
    if (!list[0]) {
        free_list(list);
        fail(ps, line, "%s %s is empty; remove the line to use the default", label, k->key);
        return -1;
    }
    free_list(*field);
    *field = list;
    return 0;
}

/* KT_MULTI: a key that may be given on several lines; each non-empty value is appended. */
static int set_multi(parse_state *ps, const key_spec *k, const char *value, int line,
                     const char *label, char ***lp)
{
    if (!*value) {
        fail(ps, line, "%s %s is empty; remove the line", label, k->key);
        return -1;
    }
    size_t n = 0;
    while (*lp && (*lp)[n])
        n++;
    char **grown = realloc(*lp, (n + 2) * sizeof(*grown));
    if (!grown || !(grown[n] = strdup(value))) {
        if (grown)
            *lp = grown;
        fail(ps, line, "out of memory");
        return -1;
    }
    grown[n + 1] = NULL;
    *lp = grown;
    return 0;
}

/* KT_VIA: "direct", "tunnel NAME" or "privatelink NAME", the route of a [postgres] section. */
static int set_via(parse_state *ps, const char *value, int line, const char *label, cli_postgres *p)
{
    char buf[200];
    snprintf(buf, sizeof(buf), "%s", value);
    char *kind = trim(buf);
    char *sp = strpbrk(kind, " \t");
    char *name = sp ? (*sp = '\0', trim(sp + 1)) : NULL;
    if (strcmp(kind, "direct") == 0 && !name) {
        p->cfg.route = INGEST_ROUTE_DIRECT;
        free(p->via);
        p->via = NULL;
        return 0;
    }
    if ((strcmp(kind, "tunnel") == 0 || strcmp(kind, "privatelink") == 0) && name &&
        valid_name(name)) {
        p->cfg.route = strcmp(kind, "tunnel") == 0 ? INGEST_ROUTE_TUNNEL : INGEST_ROUTE_PRIVATELINK;
        free(p->via);
        if (!(p->via = strdup(name))) {
            fail(ps, line, "out of memory");
            return -1;
        }
        return 0;
    }
    fail(ps, line,
         "%s via: \"%s\" is not allowed; use \"direct\", \"tunnel NAME\" or "
         "\"privatelink NAME\"",
         label, value);
    return -1;
}

/*
 * Store `value` for key `k` in section struct `base`. Returns 0, or -1 after fail() with a
 * message naming the line, section, key and what is allowed.
 */
static int set_value(parse_state *ps, void *base, const key_spec *k, const char *value, int line)
{
    char label[200];
    char *field = (char *)base + k->off;
    sect_label(ps, label, sizeof(label));
    switch (k->type) {
    case KT_STRING:
    case KT_NAME:
    case KT_PATH:
        return set_string(ps, k, value, line, label, (char **)field);
    case KT_PORT:
    case KT_COUNT:
        return set_number(ps, k, value, line, label, (int *)field);
    case KT_DURATION:
        return set_duration(ps, k, value, line, label, (int64_t *)field);
    case KT_SIZE:
        return set_size(ps, k, value, line, label, (uint64_t *)field);
    case KT_ENUM:
        return set_enum(ps, k, value, line, label, (int *)field);
    case KT_LOGLEVEL:
        return set_loglevel(ps, k, value, line, label, (log_level *)field);
    case KT_LIST:
        return set_list(ps, k, value, line, label, (char ***)field);
    case KT_MULTI:
        return set_multi(ps, k, value, line, label, (char ***)field);
    case KT_VIA:
        return set_via(ps, value, line, label, base);
    }
    return -1;
}

/* Keys that look like an inline secret; they are refused with a pointer to the safe way. */
static bool is_inline_secret(const char *key)
{
    static const char *const bad[] = {"password",    "passwd",      "pass",       "secret",
                                      "sslpassword", "hmac_secret", "private_key"};
    for (size_t i = 0; i < WG_ARRAY_LEN(bad); i++)
        if (strcmp(key, bad[i]) == 0)
            return true;
    return false;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    (void)section; /* we track sections ourselves, from the header lines */
    if (ps->cur_bad)
        return 1;
    if (!ps->cur) {
        fail(ps, ps->line,
             "\"%s\" is outside any section; put it under [walgate] or another "
             "section",
             name);
        return 1;
    }
    char label[200];
    sect_label(ps, label, sizeof(label));
    if (is_inline_secret(name)) {
        /* Never echo the value: it is a secret. */
        fail(ps, ps->line,
             "%s %s: secrets must not be written in the configuration file; put it in a file "
             "of mode 0600 and set %s_file = PATH, or set %s_env = VARIABLE",
             label, name, strcmp(name, "password") == 0 ? "password" : name,
             strcmp(name, "password") == 0 ? "password" : name);
        return 1;
    }
    for (size_t i = 0; i < WG_ARRAY_LEN(g_keys); i++) {
        const key_spec *k = &g_keys[i];
        if (k->sect != ps->cur_kind || strcmp(k->key, name) != 0)
            continue;
        if (ps->seen_line[i] && k->type != KT_MULTI) {
            fail(ps, ps->line, "%s %s is set twice (first on line %d)", label, name,
                 ps->seen_line[i]);
            return 1;
        }
        ps->seen_line[i] = ps->line;
        set_value(ps, ps->cur, k, value, ps->line);
        return 1;
    }
    char keys[600];
    list_keys(ps->cur_kind, keys, sizeof(keys));
    fail(ps, ps->line, "%s: unknown key \"%s\"; allowed: %s", label, name, keys);
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Defaults and cross-checks                                                                   */
/* ------------------------------------------------------------------------------------------ */

/*
 * Set every key of `kind` that has a default. Called when a section opens, before its keys
 * are read, so that an explicit value (even 0) always wins over the default.
 */
static void apply_defaults(parse_state *ps, sect_kind kind, void *base)
{
    for (size_t i = 0; i < WG_ARRAY_LEN(g_keys); i++) {
        if (g_keys[i].sect == kind && g_keys[i].def)
            set_value(ps, base, &g_keys[i], g_keys[i].def, 0);
    }
}

static int check_password_file(parse_state *ps, const cli_postgres *p)
{
    struct stat st;
    if (stat(p->password_file, &st) != 0) {
        fail(ps, p->line, "[postgres %s] password_file %s: %s", p->name, p->password_file,
             strerror(errno));
        return -1;
    }
    if (st.st_mode & 077) {
        fail(ps, p->line,
             "[postgres %s] password_file %s has mode %04o, which lets group or others read it; "
             "run: chmod 600 %s",
             p->name, p->password_file, (unsigned)(st.st_mode & 07777), p->password_file);
        return -1;
    }
    return 0;
}

/* A secret file a sink reads: it must exist and be readable by its owner only. */
static void check_secret_file(parse_state *ps, const cli_sink *k, const char *key, const char *path)
{
    struct stat st;
    if (!path)
        return;
    if (stat(path, &st) != 0)
        fail(ps, k->line, "[sink %s] %s %s: %s", k->name, key, path, strerror(errno));
    else if (st.st_mode & 077)
        fail(ps, k->line,
             "[sink %s] %s %s has mode %04o, which lets group or others read it; run: chmod "
             "600 %s",
             k->name, key, path, (unsigned)(st.st_mode & 07777), path);
}

static void finish_sink(parse_state *ps, cli_sink *k)
{
    if (k->type < 0) {
        fail(ps, k->line, "[sink %s] has no type; add type = webhook or type = nats", k->name);
        return;
    }
    /* Keys of the other type are mistakes worth naming. */
    const char *wrong = NULL;
    if (k->type == CLI_SINK_WEBHOOK)
        wrong = k->servers      ? "servers"
                : k->creds_file ? "creds_file"
                : k->stream     ? "stream"
                : k->user       ? "user"
                : k->token_file ? "token_file"
                                : NULL;
    else
        wrong = k->url                ? "url"
                : k->hmac_secret_file ? "hmac_secret_file"
                : k->headers          ? "header"
                : k->header_file      ? "header_file"
                                      : NULL;
    if (wrong) {
        fail(ps, k->line, "[sink %s] %s is not a key of %s sinks", k->name, wrong,
             g_sink_types[k->type]);
        return;
    }
    check_secret_file(ps, k, "hmac_secret_file", k->hmac_secret_file);
    check_secret_file(ps, k, "password_file", k->password_file);
    check_secret_file(ps, k, "token_file", k->token_file);
    check_secret_file(ps, k, "creds_file", k->creds_file);
    check_secret_file(ps, k, "header_file", k->header_file);
    /* A credential written into this file would be readable by whoever reads the config. */
    for (size_t i = 0; k->headers && k->headers[i]; i++) {
        static const char *const cred[] = {
            "authorization:", "proxy-authorization:", "cookie:", "x-api-key:"};
        for (size_t c = 0; c < WG_ARRAY_LEN(cred); c++)
            if (strncasecmp(k->headers[i], cred[c], strlen(cred[c])) == 0)
                fail(ps, k->line,
                     "[sink %s] header %.*s: credentials must not be written in the "
                     "configuration file; put the line in a file of mode 0600 and set "
                     "header_file = PATH",
                     k->name, (int)strlen(cred[c]) - 1, k->headers[i]);
    }
    if (k->type == CLI_SINK_WEBHOOK) {
        if (!k->url || (strncmp(k->url, "http://", 7) != 0 && strncmp(k->url, "https://", 8) != 0))
            fail(ps, k->line, "[sink %s] needs url = https://HOST/PATH (http:// or https://)",
                 k->name);
        fwd_webhook_config *w = &k->webhook;
        w->name = k->name;
        w->url = k->url;
        w->batch_max_bytes = k->batch_max_bytes;
        w->batch_max_delay_ms = k->batch_max_delay_ms;
        w->timeout_ms = k->timeout_ms;
        w->hmac_secret_file = k->hmac_secret_file;
        w->signature = k->signature;
        w->headers = k->headers;
        w->header_file = k->header_file;
        w->ca_file = k->ca_file;
        w->client_cert = k->client_cert;
        w->client_key = k->client_key;
        w->insecure_skip_verify = k->insecure_skip_verify != 0;
    } else {
        if (!k->servers)
            fail(ps, k->line, "[sink %s] needs servers = nats://HOST:4222, ...", k->name);
        if (!k->stream)
            fail(ps, k->line, "[sink %s] needs stream = NAME (the JetStream stream)", k->name);
        fwd_nats_config *n = &k->nats;
        n->name = k->name;
        n->servers = k->servers;
        n->creds_file = k->creds_file;
        n->user = k->user;
        n->password_file = k->password_file;
        n->token_file = k->token_file;
        n->ca_file = k->ca_file;
        n->client_cert = k->client_cert;
        n->client_key = k->client_key;
        n->stream = k->stream;
        n->create_stream = k->create_stream != 0;
        n->replicas = k->replicas;
        n->max_age_ms = k->stream_max_age_ms;
        n->max_bytes = k->stream_max_bytes;
        n->duplicate_window_ms = k->stream_duplicate_window_ms;
        n->subject_prefix = k->subject_prefix;
        n->max_pending = k->max_pending;
        n->timeout_ms = k->timeout_ms;
    }
}

static void finish(parse_state *ps)
{
    cli_config *cfg = ps->cfg;
    const char *login = NULL;
    struct passwd *pw = getpwuid(geteuid());
    if (pw)
        login = pw->pw_name;

    for (size_t i = 0; i < cfg->n_tunnels; i++) {
        cli_tunnel *t = &cfg->tunnels[i];
        if (!t->host)
            fail(ps, t->line, "[tunnel %s] has no host; add host = BASTION_HOST", t->name);
        if (!t->user && !(t->user = strdup(login ? login : "root")))
            fail(ps, t->line, "out of memory");
        if (!t->known_hosts) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/known_hosts", cfg->state_dir);
            if (!(t->known_hosts = strdup(path)))
                fail(ps, t->line, "out of memory");
        }
        t->cfg.name = t->name;
        t->cfg.host = t->host;
        t->cfg.user = t->user;
        t->cfg.known_hosts = t->known_hosts;
        t->cfg.state_dir = cfg->state_dir;
        t->cfg.ssh_command = t->ssh_command;
        if (t->ssh_command && t->cfg.transport != TUNNEL_TRANSPORT_OPENSSH)
            fail(ps, t->line,
                 "[tunnel %s] ssh_command is used only with transport = openssh; add transport = "
                 "openssh or remove ssh_command",
                 t->name);
        if (t->ssh_command && t->ssh_command[0] != '/')
            fail(ps, t->line,
                 "[tunnel %s] ssh_command = %s: give an absolute path (e.g. /usr/bin/ssh)", t->name,
                 t->ssh_command);
    }

    for (size_t i = 0; i < cfg->n_postgres; i++) {
        cli_postgres *p = &cfg->postgres[i];
        if (!p->host)
            fail(ps, p->line, "[postgres %s] has no host; add host = DATABASE_HOST", p->name);
        if (!p->user)
            fail(ps, p->line, "[postgres %s] has no user; add user = REPLICATION_ROLE", p->name);
        if (!p->dbname)
            fail(ps, p->line, "[postgres %s] has no dbname; add dbname = DATABASE", p->name);
        if (p->password_file && p->password_env)
            fail(ps, p->line,
                 "[postgres %s] sets both password_file and password_env; keep one of them",
                 p->name);
        if (p->password_file)
            check_password_file(ps, p);
        if (p->cfg.route == INGEST_ROUTE_TUNNEL && !find_section(cfg, SECT_TUNNEL, p->via))
            fail(ps, p->line, "[postgres %s] via = tunnel %s, but there is no [tunnel %s] section",
                 p->name, p->via, p->via);
        if (p->cfg.route == INGEST_ROUTE_PRIVATELINK &&
            !find_section(cfg, SECT_PRIVATELINK, p->via))
            fail(ps, p->line,
                 "[postgres %s] via = privatelink %s, but there is no [privatelink %s] section",
                 p->name, p->via, p->via);
        if (p->host && strchr(p->host, ',') && p->cfg.route != INGEST_ROUTE_DIRECT)
            fail(ps, p->line,
                 "[postgres %s] host = %s names several hosts, which works only without via "
                 "(a tunnel or an endpoint forwards to one host): give one host, or one "
                 "[postgres] section per host",
                 p->name, p->host);
        for (size_t k = 0; p->standbys && p->standbys[k]; k++)
            if (!find_section(cfg, SECT_POSTGRES, p->standbys[k]) ||
                strcmp(p->standbys[k], p->name) == 0)
                fail(ps, p->line,
                     "[postgres %s] standbys = %s, but there is no other [postgres %s] section",
                     p->name, p->standbys[k], p->standbys[k]);
        p->cfg.name = p->name;
        p->cfg.target_session_attrs = p->target_session_attrs;
        p->cfg.host = p->host;
        p->cfg.user = p->user;
        p->cfg.dbname = p->dbname;
        p->cfg.password_file = p->password_file;
        p->cfg.password_env = p->password_env;
        p->cfg.sslmode = p->sslmode;
        p->cfg.sslrootcert = p->sslrootcert;
        p->cfg.via = p->via;
    }

    for (size_t i = 0; i < cfg->n_privatelinks; i++) {
        cli_privatelink *l = &cfg->privatelinks[i];
        l->cfg.name = l->name;
        l->cfg.service_name = l->service_name;
        l->cfg.endpoint = l->endpoint;
        l->cfg.endpoint_id = l->endpoint_id;
        l->cfg.region = l->region;
        l->cfg.availability_zones = l->availability_zones;
        l->cfg.dns_servers = l->dns_servers;
        l->cfg.aws_profile = l->aws_profile;
        l->cfg.state_dir = cfg->state_dir;
        char where[300];
        snprintf(where, sizeof(where), "[privatelink %s]", l->name);
        wg_error perr = {0};
        if (pl_config_check(&l->cfg, where, &perr) != 0)
            fail(ps, l->line, "%s", perr.msg);
    }

    for (size_t i = 0; i < cfg->n_sinks; i++)
        finish_sink(ps, &cfg->sinks[i]);

    for (size_t i = 0; i < cfg->n_sources; i++) {
        cli_source *s = &cfg->sources[i];
        if (!s->connection)
            fail(ps, s->line, "[source %s] has no connection; add connection = POSTGRES_NAME",
                 s->name);
        else if (!find_section(cfg, SECT_POSTGRES, s->connection))
            fail(ps, s->line, "[source %s] connection = %s, but there is no [postgres %s] section",
                 s->name, s->connection, s->connection);
        if (!s->publication)
            fail(ps, s->line, "[source %s] has no publication; add publication = NAME", s->name);
        if (!s->slot) {
            char slot[80];
            snprintf(slot, sizeof(slot), "walgate_%s", s->name);
            /* Slot names allow only lower-case letters, digits and underscores. */
            for (char *c = slot; *c; c++) {
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c - 'A' + 'a');
                else if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
                    *c = '_';
            }
            if (!(s->slot = strdup(slot)))
                fail(ps, s->line, "out of memory");
        } else {
            bool ok = strlen(s->slot) <= 63;
            for (const char *c = s->slot; *c; c++)
                ok &= (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_';
            if (!ok)
                fail(ps, s->line,
                     "[source %s] slot \"%s\": a replication slot name may use only lower-case "
                     "letters, digits and '_' (at most 63)",
                     s->name, s->slot);
        }
        for (size_t k = 0; s->forward && s->forward[k]; k++)
            if (!find_section(cfg, SECT_SINK, s->forward[k]))
                fail(ps, s->line, "[source %s] forward = %s, but there is no [sink %s] section",
                     s->name, s->forward[k], s->forward[k]);
        s->cfg.name = s->name;
        s->cfg.log_segment_bytes = cfg->log_segment_bytes;
        s->cfg.connection = s->connection;
        s->cfg.publication = s->publication;
        s->cfg.slot = s->slot;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Public                                                                                      */
/* ------------------------------------------------------------------------------------------ */

cli_config *cli_config_parse(const char *text, const char *path, wg_error *err)
{
    parse_state ps = {0};
    ps.cfg = calloc(1, sizeof(*ps.cfg));
    if (!ps.cfg || !(ps.cfg->path = strdup(path))) {
        free(ps.cfg);
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    ps.cfg->log_level = LOG_LEVEL_INFO;
    ps.path = path;
    ps.err = err;
    ps.text = text;
    ps.text_len = strlen(text);
    ps.cur_kind = SECT_WALGATE;
    ps.cur = ps.cfg;
    apply_defaults(&ps, SECT_WALGATE, ps.cfg);
    ps.cur = NULL; /* keys before the first section header are refused */

    /* Debian's libinih makes these run-time settings: long lines (lists), no continuation
     * lines (an indented line is its own key, as people expect), ';' inline comments. */
    ini_use_stack = false;
    ini_allow_realloc = false;
    ini_max_line = 65536;
    ini_initial_alloc = 65536;
    ini_allow_multiline = false;
    ini_stop_on_first_error = false;

    int rc = ini_parse_stream(reader, &ps, handler, &ps);
    if (rc > 0 && !ps.failed)
        fail(&ps, rc, "not a valid line; expected [section], key = value, or a # comment");
    else if (rc < 0 && !ps.failed)
        fail(&ps, 0, "could not parse (out of memory)");
    if (!ps.failed)
        finish(&ps);
    if (ps.failed) {
        cli_config_free(ps.cfg);
        return NULL;
    }
    return ps.cfg;
}

cli_config *cli_config_load(const char *path, wg_error *err)
{
    wg_buf text = {0};
    if (wg_read_file(path, 4 << 20, &text, err) != 0) {
        if (err && err->code == WG_ERR_NOTFOUND)
            wg_error_set(err, WG_ERR_CONFIG,
                         "configuration file %s does not exist; pass -c FILE (see "
                         "docs/configuration.md)",
                         path);
        wg_buf_free(&text);
        return NULL;
    }
    const char *nul = memchr(text.data, '\0', text.len);
    if (nul) {
        int line = 1;
        for (const char *c = text.data; c < nul; c++)
            line += *c == '\n';
        wg_error_set(err, WG_ERR_CONFIG,
                     "%s:%d: line contains a NUL byte; the configuration must be a text file", path,
                     line);
        wg_buf_free(&text);
        return NULL;
    }
    cli_config *cfg = cli_config_parse(text.data, path, err);
    wg_buf_free(&text);
    if (cfg)
        log_set_level(cfg->log_level);
    return cfg;
}

void cli_config_free(cli_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_tunnels; i++) {
        cli_tunnel *t = &cfg->tunnels[i];
        free(t->name);
        free(t->host);
        free(t->user);
        free(t->known_hosts);
        free(t->ssh_command);
    }
    for (size_t i = 0; i < cfg->n_postgres; i++) {
        cli_postgres *p = &cfg->postgres[i];
        free(p->name);
        free(p->host);
        free(p->user);
        free(p->dbname);
        free(p->password_file);
        free(p->password_env);
        free(p->sslmode);
        free(p->sslrootcert);
        free(p->via);
        free(p->target_session_attrs);
        free_list(p->standbys);
    }
    for (size_t i = 0; i < cfg->n_sources; i++) {
        cli_source *s = &cfg->sources[i];
        free(s->name);
        free(s->connection);
        free(s->publication);
        free(s->slot);
        free_list(s->cfg.tables);
        free_list(s->cfg.text_columns);
        free_list(s->cfg.exclude_columns);
        free_list(s->forward);
    }
    for (size_t i = 0; i < cfg->n_sinks; i++) {
        cli_sink *k = &cfg->sinks[i];
        char *strs[] = {k->name,           k->url,           k->hmac_secret_file, k->signature,
                        k->ca_file,        k->client_cert,   k->client_key,       k->creds_file,
                        k->user,           k->password_file, k->token_file,       k->stream,
                        k->subject_prefix, k->header_file};
        for (size_t x = 0; x < WG_ARRAY_LEN(strs); x++)
            free(strs[x]);
        free_list(k->headers);
        free_list(k->servers);
    }
    free(cfg->sinks);
    for (size_t i = 0; i < cfg->n_privatelinks; i++) {
        cli_privatelink *l = &cfg->privatelinks[i];
        free(l->name);
        free(l->service_name);
        free(l->endpoint);
        free(l->endpoint_id);
        free(l->region);
        free(l->dns_servers);
        free(l->aws_profile);
        free_list(l->availability_zones);
    }
    free(cfg->privatelinks);
    free(cfg->tunnels);
    free(cfg->postgres);
    free(cfg->sources);
    free(cfg->state_dir);
    free(cfg->path);
    free(cfg);
}

const cli_tunnel *cli_config_tunnel(const cli_config *cfg, const char *name)
{
    return find_section(cfg, SECT_TUNNEL, name);
}

const cli_postgres *cli_config_postgres(const cli_config *cfg, const char *name)
{
    return find_section(cfg, SECT_POSTGRES, name);
}

const cli_source *cli_config_source(const cli_config *cfg, const char *name)
{
    return find_section(cfg, SECT_SOURCE, name);
}

const cli_sink *cli_config_sink(const cli_config *cfg, const char *name)
{
    return find_section(cfg, SECT_SINK, name);
}

const cli_privatelink *cli_config_privatelink(const cli_config *cfg, const char *name)
{
    return find_section(cfg, SECT_PRIVATELINK, name);
}

cli_config *cli_load_config_or_report(const cli_opts *opts)
{
    wg_error err = {0};
    cli_config *cfg = cli_config_load(opts->config_path, &err);
    if (!cfg)
        cli_report(&err);
    else /* before any secret is read: the configuration names them */
        cli_protect_core_dumps(cfg->allow_core_dumps);
    return cfg;
}

void cli_report(const wg_error *err)
{
    fprintf(stderr, "walgate: %s\n", err->msg[0] ? err->msg : wg_strerror(err->code));
}
