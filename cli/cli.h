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
#include "forward/forward.h"
#include "ingest/ingest.h"
#include "privatelink/privatelink.h"
#include "tunnel/tunnel.h"

#include <signal.h>

#define WALGATE_DEFAULT_CONFIG "/etc/walgate/walgate.ini"
#define WALGATE_DEFAULT_STATE_DIR "/var/lib/walgate"

typedef struct cli_tunnel {
    tunnel_config cfg; /* strings point into the owned copies below */
    char *name, *host, *user, *known_hosts, *ssh_command;
    int line; /* where the section starts, for messages */
} cli_tunnel;

typedef struct cli_postgres {
    ingest_pg_config cfg;
    char *name, *host, *user, *dbname, *password_file, *password_env, *sslmode, *sslrootcert, *via;
    char *target_session_attrs;
    char **standbys; /* [postgres] sections that are standbys of this one (validate checks them) */
    int line;
} cli_postgres;

typedef struct cli_privatelink {
    pl_config cfg; /* strings point into the owned copies below */
    char *name, *service_name, *endpoint, *endpoint_id, *region, *dns_servers, *aws_profile;
    char **availability_zones;
    int line;
} cli_privatelink;

typedef struct cli_source {
    ingest_source_config cfg;
    char *name, *connection, *publication, *slot;
    char **forward; /* [sink] names its change log is forwarded to */
    int line;
} cli_source;

typedef enum cli_sink_type { CLI_SINK_WEBHOOK = 0, CLI_SINK_NATS = 1 } cli_sink_type;

/* One `[sink NAME]`: the config of its type points into the owned copies below. */
typedef struct cli_sink {
    int type; /* cli_sink_type */
    fwd_webhook_config webhook;
    fwd_nats_config nats;
    char *name, *url, *hmac_secret_file, *signature, *ca_file, *client_cert, *client_key;
    char *creds_file, *user, *password_file, *token_file, *stream, *subject_prefix, *header_file;
    char **headers, **servers;
    uint64_t batch_max_bytes;
    int64_t batch_max_delay_ms, timeout_ms;
    int create_stream, replicas, max_pending, insecure_skip_verify;
    int64_t stream_max_age_ms, stream_duplicate_window_ms;
    uint64_t stream_max_bytes;
    int line;
} cli_sink;

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
    cli_privatelink *privatelinks;
    size_t n_privatelinks;
    cli_sink *sinks;
    size_t n_sinks;
    int64_t log_retention_ms;   /* [walgate] log_retention: keep forwarded segments this long */
    uint64_t log_max_disk;      /* [walgate] log_max_disk: 0 = no limit but the disk's */
    uint64_t min_free_space;    /* [walgate] min_free_space: 0 = min(256 MiB, 5 % of the disk) */
    uint64_t log_segment_bytes; /* [walgate] log_segment_bytes: change-log segment size */
    int allow_core_dumps;       /* [walgate] allow_core_dumps: 0 = non-dumpable (default) */
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
const cli_privatelink *cli_config_privatelink(const cli_config *cfg, const char *name);
const cli_sink *cli_config_sink(const cli_config *cfg, const char *name);
/* The sink a [sink] section describes (webhook or NATS), or NULL with `err`. */
fwd_sink *cli_sink_new(const cli_sink *k, wg_error *err);

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
int cmd_endpoints(int argc, char **argv, const cli_opts *opts);
/*
 * `walgate status`, endpoint part: each [privatelink]'s state and drift history from the
 * daemon's STATE_DIR/endpoints/NAME/status.json. With `json`, objects for the status array
 * (`comma_first`: a comma before the first one).
 */
void cli_endpoints_status(const cli_config *cfg, bool json, bool comma_first);

/*
 * The route to a [postgres] section: nothing to do for a direct one; for `via = tunnel NAME`
 * a started tunnel with a forward on 127.0.0.1:port (the session may still be coming up;
 * connections made before it is up wait for it); for `via = privatelink NAME` the endpoint,
 * resolved once and watched by its thread (shared by every route to it), with addr = the
 * best current address and port = the server's port; pl_endpoint_dialer(route.endpoint, …)
 * says where to dial on each later connect. Free with cli_route_close().
 */
typedef struct cli_route {
    tunnel_t *tunnel;
    pl_endpoint_t *endpoint; /* via = privatelink: the watched endpoint (shared, refcounted) */
    char addr_buf[64];       /* privatelink: the address chosen when the route opened */
    const char *addr;        /* NULL for direct */
    int port;
} cli_route;
int cli_route_open(const cli_config *cfg, const cli_postgres *p, cli_route *out, wg_error *err);
/*
 * The same for `walgate run`, which waits rather than fails: a PrivateLink endpoint whose
 * names do not resolve yet is opened anyway (addr NULL) and keeps resolving; its dialer tells
 * the source when there is an address.
 */
int cli_route_open_patient(const cli_config *cfg, const cli_postgres *p, cli_route *out,
                           wg_error *err);
void cli_route_close(cli_route *r);

/*
 * Load the configuration named by opts (or the default path). On failure prints the error
 * to stderr and returns NULL.
 */
cli_config *cli_load_config_or_report(const cli_opts *opts);

/* SIGINT and SIGTERM set cli_stop_requested (which commands poll) instead of killing. */
extern wg_stop_flag cli_stop_requested;
void cli_stop_on_signals(void);
/* An eventfd that becomes readable when a stop signal arrived (after cli_stop_on_signals), for
 * poll(); -1 when it could not be made. It stays readable. */
int cli_stop_fd(void);
/*
 * `walgate run`: SIGHUP sets cli_hup_received instead of killing the process. Call with true
 * before starting threads (they inherit SIGHUP blocked) and with false once they run, so only
 * the main thread takes it.
 */
extern volatile sig_atomic_t cli_hup_received;
void cli_hup_catch(bool block_in_new_threads);
/*
 * Unless `allow` ([walgate] allow_core_dumps), mark the process non-dumpable: no core file, and
 * no ptrace or /proc/PID/mem access by other processes of the same user. Logs a warning when
 * the kernel refuses.
 */
void cli_protect_core_dumps(bool allow);

/*
 * The top-level member `key` of a JSON object walgate wrote (a status file; NUL-terminated),
 * string decoded or other value as written, into buf (empty when absent); record.c's reader.
 */
void cli_json_field(const char *json, const char *key, char *buf, size_t len);

int cmd_source(int argc, char **argv, const cli_opts *opts);

/* Print "walgate: <message>" to stderr. */
void cli_report(const wg_error *err);

#endif /* WALGATE_CLI_H */
