/*
 * cli.h — internal header of cli/: the parsed configuration and the sub-commands.
 *
 * The configuration is an INI file (libinih). Every key is declared once in the table in
 * config.c with its type, default and validator; parsing, defaults and the documentation in
 * docs/configuration.md follow that table.
 */
#ifndef WALGATE_CLI_H
#define WALGATE_CLI_H

#include "common/common.h"
#include "ingest/ingest.h"
#include "tunnel/tunnel.h"

#define WALGATE_DEFAULT_CONFIG "/etc/walgate/walgate.ini"
#define WALGATE_DEFAULT_STATE_DIR "/var/lib/walgate"

typedef struct cli_tunnel {
    tunnel_config cfg; /* strings point into the owned copies below */
    char *name, *host, *user, *known_hosts;
    int line; /* where the section starts, for messages */
} cli_tunnel;

typedef struct cli_postgres {
    ingest_pg_config cfg;
    char *name, *host, *user, *dbname, *password_file, *password_env, *sslmode, *sslrootcert, *via;
    int line;
} cli_postgres;

typedef struct cli_source {
    ingest_source_config cfg;
    char *name, *connection, *publication, *slot;
    int line;
} cli_source;

typedef struct cli_config {
    char *path; /* the file it came from */
    char *state_dir;
    log_level log_level;
    cli_tunnel *tunnels;
    size_t n_tunnels;
    cli_postgres *postgres;
    size_t n_postgres;
    cli_source *sources;
    size_t n_sources;
} cli_config;

/*
 * Load and validate `path`. Every error names the file, the line, the section and key, and
 * what is allowed. Unknown sections and keys are errors; an inline password is refused.
 * Returns a new config owned by the caller, or NULL with `err` filled.
 */
cli_config *cli_config_load(const char *path, wg_error *err);
/* Parse configuration text (for tests and fuzzing); `path` is only used in messages. */
cli_config *cli_config_parse(const char *text, const char *path, wg_error *err);
void cli_config_free(cli_config *cfg);

const cli_tunnel *cli_config_tunnel(const cli_config *cfg, const char *name);
const cli_postgres *cli_config_postgres(const cli_config *cfg, const char *name);
const cli_source *cli_config_source(const cli_config *cfg, const char *name);

/* Options common to every sub-command, parsed by main.c. */
typedef struct cli_opts {
    const char *config_path; /* -c FILE */
    bool config_given;       /* -c was on the command line */
} cli_opts;

/*
 * Sub-commands. argv[0] is the sub-command name. Each returns the process exit status and
 * prints its own errors; `opts` carries the global options.
 */
int cmd_keys(int argc, char **argv, const cli_opts *opts);
int cmd_tunnel(int argc, char **argv, const cli_opts *opts);
int cmd_validate(int argc, char **argv, const cli_opts *opts);
int cmd_log(int argc, char **argv, const cli_opts *opts);
int cmd_run(int argc, char **argv, const cli_opts *opts);
int cmd_status(int argc, char **argv, const cli_opts *opts);
int cmd_slots(int argc, char **argv, const cli_opts *opts);

/*
 * The route to a [postgres] section: nothing to do for a direct one; for `via = tunnel NAME`
 * a started tunnel with a forward on 127.0.0.1:port (the session may still be coming up;
 * connections made before it is up wait for it). Free with cli_route_close().
 */
typedef struct cli_route {
    tunnel_t *tunnel;
    const char *addr; /* NULL for direct */
    int port;
} cli_route;
int cli_route_open(const cli_config *cfg, const cli_postgres *p, cli_route *out, wg_error *err);
void cli_route_close(cli_route *r);

/*
 * Load the configuration named by opts (or the default path). On failure prints the error
 * to stderr and returns NULL.
 */
cli_config *cli_load_config_or_report(const cli_opts *opts);

/* SIGINT and SIGTERM set cli_stop_requested (which commands poll) instead of killing. */
extern volatile int cli_stop_requested;
void cli_stop_on_signals(void);

/*
 * The value of the first "key" in JSON written by walgate (a status file), string unescaped
 * or scalar as written, into buf (empty when absent).
 */
void cli_json_field(const char *json, const char *key, char *buf, size_t len);

int cmd_source(int argc, char **argv, const cli_opts *opts);

/* Print "walgate: <message>" to stderr. */
void cli_report(const wg_error *err);

#endif /* WALGATE_CLI_H */
