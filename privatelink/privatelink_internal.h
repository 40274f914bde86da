/*
 * privatelink_internal.h — pieces of privatelink/ shared between its files and its tests:
 * SigV4 signing, AWS XML response parsing, AWS credentials, DNS answer handling, and the
 * derivation of names and zones.
 */
#ifndef WALGATE_PRIVATELINK_INTERNAL_H
#define WALGATE_PRIVATELINK_INTERNAL_H

#include "privatelink/privatelink.h"

/* ---- Cancelling waits ---------------------------------------------------------------- */

/*
 * What ends an endpoint's network waits early: its own flag (raised by pl_endpoint_free) or
 * the process's stop request (pl_config.stop). A NULL pl_cancel (the one-shot CLI commands)
 * never cancels. A cancelled call returns WG_ERR_CANCELLED: a stop, not an AWS or DNS failure.
 */
typedef struct pl_cancel {
    atomic_bool own;
    const wg_stop_flag *outer; /* or NULL */
} pl_cancel;

static inline bool pl_cancelled(const pl_cancel *c)
{
    return c && (atomic_load(&c->own) || (c->outer && atomic_load(c->outer)));
}

/* ---- SigV4 (sigv4.c) ------------------------------------------------------------------ */

typedef struct pl_aws_creds {
    char access_key[128];
    wg_secret *secret; /* never logged */
    wg_secret *token;  /* session token, or NULL */
    char source[64];   /* "environment", "profile default", "instance metadata" */
} pl_aws_creds;

void pl_aws_creds_clear(pl_aws_creds *c);

typedef struct pl_http_header {
    const char *name;
    const char *value;
} pl_http_header;

typedef struct pl_sigv4_req {
    const char *method;
    const char *path;  /* absolute path, already URI-encoded, e.g. "/" */
    const char *query; /* already encoded "a=1&b=2", or NULL */
    const pl_http_header *headers;
    size_t n_headers; /* must include host and x-amz-date */
    const void *body;
    size_t body_len;
} pl_sigv4_req;

/*
 * Sign `req`: fills `authz` with the Authorization header value. `creq` and `sts` (may be
 * NULL) get the canonical request and the string to sign, for tests. `amz_date` is
 * YYYYMMDDTHHMMSSZ. When creds->token is set, the caller must have added the
 * x-amz-security-token header to req (it is signed like any other). Returns 0 or -1.
 */
int pl_sigv4_sign(const pl_sigv4_req *req, const char *access_key, const char *secret,
                  const char *region, const char *service, const char *amz_date, wg_buf *authz,
                  wg_buf *creq, wg_buf *sts);
void pl_hex_sha256(const void *data, size_t len, char out[65]);

/* ---- XML responses (xml.c) ------------------------------------------------------------ */

/*
 * Parse a DescribeVpcEndpoints response body. An AWS error response (<Response><Errors>…)
 * becomes `err` with the code and message and the remedy when known (expired credentials,
 * throttling, unknown endpoint id). Returns 0, WG_ERR_NOTFOUND when the set is empty, or an
 * error.
 */
int pl_xml_describe_endpoints(const char *body, size_t len, pl_vpce_info *out, wg_error *err);
/* GetCallerIdentity: the Arn (and the Account). */
int pl_xml_caller_identity(const char *body, size_t len, char *arn, size_t arnlen, wg_error *err);
/* DescribeAvailabilityZones: pairs of (name, id). Returns the count or a negative error. */
typedef struct pl_az_pair {
    char name[32];
    char id[32];
} pl_az_pair;
int pl_xml_availability_zones(const char *body, size_t len, pl_az_pair *out, size_t max,
                              wg_error *err);
/* Fill err from an AWS error body (code, message, remedy); returns its code. */
int pl_xml_error(const char *body, size_t len, long http_status, wg_error *err);

/* ---- AWS calls (aws.c) ---------------------------------------------------------------- */

/*
 * Every AWS call below gives up within about a second once `cancel` (may be NULL) is
 * cancelled, with WG_ERR_CANCELLED.
 */

/* Credentials from the environment, then the shared credentials file, then IMDSv2. */
int pl_aws_load_creds(const char *profile, const pl_cancel *cancel, pl_aws_creds *out,
                      wg_error *err);
/* POST a query-API request (Action=…&Version=…) to service ec2|sts in region; body → resp. */
int pl_aws_call(const char *service, const char *region, const pl_aws_creds *creds,
                const char *params, const pl_cancel *cancel, wg_buf *resp, long *http_status,
                wg_error *err);
/* pl_aws_describe_endpoint with a cancel. */
int pl_aws_describe(const char *region, const char *profile, const char *endpoint_id,
                    const pl_cancel *cancel, pl_vpce_info *out, wg_error *err);
int pl_aws_availability_zones(const char *region, const char *profile, const pl_cancel *cancel,
                              pl_az_pair *out, size_t max, wg_error *err);

/* ---- DNS (dns.c) ---------------------------------------------------------------------- */

/*
 * Handle one raw DNS answer for `name` and type A (family AF_INET) or AAAA (AF_INET6):
 * append the addresses to out (at most max in all; *n counts), lower *min_ttl to the smallest
 * TTL seen. NXDOMAIN and an empty answer are not errors here (the caller decides); garbage
 * is WG_ERR_PROTO with a message. Returns 0 or an error.
 */
int pl_dns_handle_answer(const unsigned char *abuf, int alen, int family, pl_addr *out, size_t max,
                         size_t *n, int *min_ttl, wg_error *err);

/* One name's answer after a resolution. */
typedef struct pl_name_result {
    char name[256];
    char zone_id[32];
    char zone_name[32];
    pl_addr addrs[PL_MAX_ADDRS];
    size_t n;
    int status;      /* 0, or the wg_err of the failure */
    char error[512]; /* why it failed, one sentence */
} pl_name_result;

/*
 * Resolve every name (A and AAAA) with one c-ares channel, in parallel, waiting at most
 * tries * timeout, or until `cancel` (may be NULL) is cancelled (checked every 100 ms; then
 * WG_ERR_CANCELLED and results[] mean nothing). `servers` is "host:port,…" or NULL. Fills
 * results[i]. Returns 0 when the channel worked (individual names may still have failed), or
 * an error.
 */
int pl_dns_resolve(const char *servers, int64_t timeout_ms, int tries, const pl_cancel *cancel,
                   pl_name_result *results, size_t n, int *min_ttl, wg_error *err);

/* ---- Names and zones (config.c) ------------------------------------------------------- */

bool pl_az_id_valid(const char *s);
bool pl_az_name_like(const char *s);
/* Split "use1-az1=us-east-1a" into id and (possibly empty) name. Returns 0 or -1. */
int pl_az_split(const char *item, char *id, size_t idlen, char *name, size_t namelen);
/* The region in a regional endpoint name ("….REGION.vpce.amazonaws.com"); 0 or -1. */
int pl_region_from_endpoint(const char *endpoint, char *region, size_t len);
/* The zonal name for AZ name az_name: first label + "-" + az_name + the rest. 0 or -1. */
int pl_zonal_name(const char *regional, const char *az_name, char *out, size_t len);

/*
 * Merge name results into an ordered address list: zone of each address from the zonal names,
 * configured zones (azs, AZ IDs in order) first, then the rest; duplicates removed.
 */
size_t pl_merge_addrs(const pl_name_result *res, size_t nres, char *const *azs, pl_addr *out,
                      size_t max);
/* The sorted, comma-joined set of IPs of `a` into buf. */
void pl_addr_set_string(const pl_addr *a, size_t n, char *buf, size_t len);

/*
 * Shut down (not close) every TCP socket of this process whose peer is one of `ips` (port
 * `port`, 0 = any). The owner sees the connection fail and reconnects. Returns how many.
 */
int pl_shutdown_connections_to(char *const *ips, size_t n, int port);

/* A TCP connect to ip:port within timeout_ms; true when it was accepted (endpoint.c). */
bool pl_tcp_probe(const char *ip, int port, int timeout_ms);
/* The zone of an address for messages: AZ ID, else AZ name, else "?". */
const char *pl_zone_label(const pl_addr *a);

#endif /* WALGATE_PRIVATELINK_INTERNAL_H */
