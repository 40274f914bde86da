/*
 * privatelink.h — AWS PrivateLink VPC endpoints, resolved and watched by walgate itself.
 *
 * An endpoint has a regional DNS name (vpce-….vpce-svc-….REGION.vpce.amazonaws.com) and one
 * zonal name per availability zone (vpce-…-us-east-1a.vpce-svc-…). walgate resolves them with
 * c-ares (A and AAAA, TTLs honoured, timeouts and retries), maps every address to its zone by
 * AZ ID, and hands the ingest route the addresses ordered with the configured zones first.
 * PostgreSQL's `host` stays the real server name, so TLS verify-full still works.
 *
 * A started endpoint re-resolves every resolve_interval (and when asked to after a failed
 * connect). When the address set changes it records a drift event (time, old set, new set,
 * zones) in a status history, logs it (rate-limited), and shuts down this process's TCP
 * connections to addresses that disappeared, so whoever owned them reconnects to a current
 * address. A failed resolution keeps the last good set and is reported, never fatal.
 *
 * The AWS API (EC2 DescribeVpcEndpoints and DescribeAvailabilityZones, STS GetCallerIdentity)
 * is called over HTTPS with libcurl and SigV4 signing; credentials come from the environment,
 * a shared credentials file profile, or the instance metadata service (IMDSv2). The standard
 * AWS_ENDPOINT_URL_EC2 / AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL and
 * AWS_EC2_METADATA_SERVICE_ENDPOINT variables redirect the calls (tests, FIPS, proxies).
 *
 * Threads: a started endpoint runs its own thread; every pl_endpoint_* getter may be called
 * from any thread.
 */
#ifndef WALGATE_PRIVATELINK_H
#define WALGATE_PRIVATELINK_H

#include "common/common.h"

#include <netinet/in.h>

/* The configuration of one `[privatelink NAME]` section. Strings are owned by the filler. */
typedef struct pl_config {
    const char *name;
    const char *service_name; /* com.amazonaws.vpce.REGION.vpce-svc-… (optional) */
    const char *endpoint;     /* the regional DNS name; or NULL with endpoint_id + region */
    const char *endpoint_id;  /* vpce-…: names and state come from DescribeVpcEndpoints */
    const char *region;       /* us-east-1; derived from endpoint when not set */
    /*
     * AZ IDs (use1-az1), NULL-terminated; each may carry the account's AZ name for that ID as
     * "use1-az1=us-east-1a" so that the zonal name is known without the AWS API.
     */
    char **availability_zones;
    int64_t resolve_interval_ms; /* default 30s */
    int64_t api_interval_ms;     /* with endpoint_id: DescribeVpcEndpoints again; default 5m */
    const char *dns_servers;     /* "host:port, …"; NULL = /etc/resolv.conf */
    int64_t dns_timeout_ms;      /* per try; default 2s */
    int dns_tries;               /* default 3 */
    const char *aws_profile;     /* shared credentials profile; default $AWS_PROFILE or default */
    const char *state_dir;       /* status goes to STATE_DIR/endpoints/NAME/status.json */
    int port;                    /* the PostgreSQL port dialled through it (TCP checks); 5432 */
    /*
     * Optional (NULL: none): the process's stop request. Once it is non-zero, an AWS call or
     * DNS resolution of this endpoint in progress, in any thread, gives up within about a
     * second; pl_endpoint_free does the same for its own watcher. Not copied: must outlive
     * the endpoint.
     */
    const wg_stop_flag *stop;
} pl_config;

/*
 * Check a configuration: AZ IDs (an AZ *name* such as us-east-1a is refused with a message
 * explaining the difference), the service and endpoint name forms, dns_servers. `where` (e.g.
 * "walgate.ini:12: [privatelink pl1]") prefixes messages. Returns 0 or WG_ERR_CONFIG.
 */
int pl_config_check(const pl_config *cfg, const char *where, wg_error *err);

/* One resolved address and the zone it belongs to. */
typedef struct pl_addr {
    int family; /* AF_INET or AF_INET6 */
    char ip[INET6_ADDRSTRLEN];
    char zone_id[32];   /* AZ ID, e.g. use1-az1; "" when no zonal name returned it */
    char zone_name[32]; /* AZ name, e.g. us-east-1a; "" when unknown */
    bool preferred;     /* in a configured zone */
} pl_addr;

#define PL_MAX_ADDRS 32
#define PL_HISTORY_MAX 32

/* A drift event: the address set changed. */
typedef struct pl_drift {
    int64_t wall_ms;
    char old_set[512]; /* "ip1,ip2" sorted */
    char new_set[512];
    char zones[128]; /* the zones whose addresses changed, "use1-az1,use1-az2" or "?" */
} pl_drift;

typedef enum pl_state {
    PL_STATE_STARTING = 0, /* no successful resolution yet */
    PL_STATE_OK,           /* resolved; every configured zone has an address */
    PL_STATE_DEGRADED,     /* resolved, but a configured zone has no address */
    PL_STATE_STALE,        /* the last resolution failed; the last good set is kept */
    PL_STATE_FAILED,       /* never resolved */
} pl_state;

const char *pl_state_name(pl_state s); /* "starting", "ok", "degraded", "stale", "failed" */

/* One DNS name of the endpoint and its last answer. */
typedef struct pl_name {
    char name[256];
    char zone_id[32]; /* "" for the regional name */
    char zone_name[32];
    int n_addrs;
    char error[256]; /* why it gave no address last time; "" when it did */
} pl_name;

typedef struct pl_status {
    pl_state state;
    char regional_name[256];
    pl_name names[17]; /* regional first, then one per zone whose name is known */
    size_t n_names;
    pl_addr addrs[PL_MAX_ADDRS]; /* ordered: configured zones first (in config order) */
    size_t n_addrs;
    uint64_t generation;     /* +1 at every change of the address set */
    uint64_t resolutions;    /* successful ones */
    uint64_t failures;       /* failed ones */
    int64_t last_ok_wall_ms; /* last successful resolution */
    int64_t next_ms;         /* ms until the next resolution */
    int ttl_s;               /* smallest TTL of the last answers */
    char last_error[WG_ERROR_MSG_MAX];
    char aws_state[32]; /* endpoint state from DescribeVpcEndpoints; "" when not asked */
    pl_drift history[PL_HISTORY_MAX]; /* oldest first */
    size_t n_history;
    uint64_t drifts; /* total drift events, including those shifted out of history */
} pl_status;

typedef struct pl_endpoint pl_endpoint_t;

/*
 * Make an endpoint from `cfg` (copied). When the regional name is not configured (endpoint_id
 * + region), it is looked up with DescribeVpcEndpoints here. Nothing is resolved yet. Returns
 * a new endpoint owned by the caller, or NULL with `err` filled.
 */
pl_endpoint_t *pl_endpoint_new(const pl_config *cfg, wg_error *err);

/* Resolve every name once, now, in the caller's thread (also records drift). */
int pl_endpoint_resolve(pl_endpoint_t *ep, wg_error *err);

/* Start the watcher thread (resolve now, then every resolve_interval). */
int pl_endpoint_start(pl_endpoint_t *ep, wg_error *err);

/* Ask the watcher to re-resolve at once (after a failed connect); does not wait. */
void pl_endpoint_kick(pl_endpoint_t *ep);

/* Copy the current status (addresses, history) into *out. */
void pl_endpoint_status(pl_endpoint_t *ep, pl_status *out);

/* The current generation: changes whenever the address set does. */
uint64_t pl_endpoint_generation(pl_endpoint_t *ep);

/*
 * The current addresses as a libpq hostaddr list, "10.0.1.5,10.0.2.7", configured zones
 * first. Returns the number of addresses (0 when none is known: buf is then "").
 */
size_t pl_endpoint_hostaddr(pl_endpoint_t *ep, char *buf, size_t len);

/*
 * Where to dial next: the first current address (configured zones first) that accepts a TCP
 * connection on `*port` within a short probe; when `after_failure` the names are re-resolved
 * first (waiting at most one DNS timeout). When no address answers, the first one is given
 * so the connect fails with a clear error. Returns 0 with addr/port filled, -1 when no
 * address is known at all. Signature kept free of module types so any caller can take it as
 * a callback: `arg` is the pl_endpoint_t.
 */
int pl_endpoint_dialer(void *arg, bool after_failure, char *addr, size_t len, int *port);

/*
 * Called (from the watcher thread) after every drift event; `gone` lists the addresses that
 * disappeared. Optional; the default action (shutting down this process's TCP connections
 * to those addresses) happens either way.
 */
typedef void (*pl_drift_fn)(void *arg, const pl_drift *ev);
void pl_endpoint_on_drift(pl_endpoint_t *ep, pl_drift_fn fn, void *arg);

/* Write the status as JSON (the shape of status.json) into `out`. */
void pl_status_json(const char *name, const pl_status *st, wg_buf *out);

/* Stop the thread if running, free everything. NULL-safe. */
void pl_endpoint_free(pl_endpoint_t *ep);

/*
 * The checks of `walgate validate` for one endpoint: the AWS endpoint state (available) and
 * service name when credentials are available, DNS answers for the regional and zonal names,
 * every configured zone covered, TCP reachability of every address on cfg->port, and the
 * principal (STS GetCallerIdentity) to allow-list on the endpoint service. One line each.
 * Returns 0 when nothing FAILed.
 */
int pl_check(const pl_config *cfg, wg_checks *out);

/* ---- AWS API -------------------------------------------------------------------------- */

typedef struct pl_vpce_info {
    char id[64];
    char state[32]; /* pendingAcceptance, available, rejected, expired, failed, deleting, … */
    char service_name[256];
    char vpc_id[64];
    char dns_names[16][256]; /* DnsEntries, regional first as AWS lists them */
    size_t n_dns;
} pl_vpce_info;

/* DescribeVpcEndpoints for one endpoint id in `region`. */
int pl_aws_describe_endpoint(const char *region, const char *profile, const char *endpoint_id,
                             pl_vpce_info *out, wg_error *err);
/* STS GetCallerIdentity: the ARN to allow-list on the endpoint service. */
int pl_aws_caller_identity(const char *region, const char *profile, char *arn, size_t len,
                           wg_error *err);

#endif /* WALGATE_PRIVATELINK_H */
