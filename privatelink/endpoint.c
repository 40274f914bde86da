/*
 * endpoint.c — one watched VPC endpoint: its names and zones, the resolution rounds, the
 * current ordered address set with its generation, drift events (history, rate-limited log,
 * shutting down connections to vanished addresses), the watcher thread, the dialer that the
 * ingest route asks where to connect, and the status file STATE_DIR/endpoints/NAME/status.json.
 */
#include "privatelink/privatelink_internal.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define PL_MAX_ZONES 16
#define DRIFT_LOG_EVERY_MS 10000

typedef struct pl_zone {
    char id[32];
    char name[32];
    char zonal[256]; /* "" when the AZ name is unknown */
} pl_zone;

struct pl_endpoint {
    pl_config cfg; /* strings point into the copies below */
    char *name, *service_name, *endpoint_id, *region, *dns_servers, *aws_profile, *state_dir;
    char **azs;
    char regional[256];
    pl_zone zones[PL_MAX_ZONES];
    size_t n_zones;
    char setup_note[512]; /* why a configured zone has no zonal name, if so */

    pl_cancel cancel;   /* ends AWS calls and DNS waits early: pl_endpoint_free, or cfg.stop */
    pthread_mutex_t mu; /* guards st, stop, kick, cb */
    pthread_cond_t cv;
    pthread_mutex_t resolve_mu; /* one resolution round at a time */
    pl_status st;
    bool have_set;
    bool running, stop, kick;
    pthread_t thread;
    pl_drift_fn cb;
    void *cb_arg;
    int64_t last_drift_log_ms;
    int drift_log_suppressed;
    int64_t next_api_ms; /* when the watcher asks the AWS API for the endpoint's state */
    char api_error[256]; /* the last refresh's failure, logged once */
};

const char *pl_state_name(pl_state s)
{
    static const char *const n[] = {"starting", "ok", "degraded", "stale", "failed"};
    return (unsigned)s < WG_ARRAY_LEN(n) ? n[s] : "?";
}

/* The AZ name in a zonal DNS name, given the regional name's first label. */
static bool zonal_az_name(const char *regional, const char *name, char *az, size_t len)
{
    size_t rl = strcspn(regional, "."), nl = strcspn(name, ".");
    if (nl <= rl + 1 || strncmp(name, regional, rl) != 0 || name[rl] != '-' ||
        strcmp(name + nl, regional + rl) != 0 || nl - rl - 1 >= len)
        return false;
    memcpy(az, name + rl + 1, nl - rl - 1);
    az[nl - rl - 1] = '\0';
    return true;
}

static int setup_names(pl_endpoint_t *ep, wg_error *err)
{
    pl_vpce_info info;
    bool api = ep->cfg.endpoint_id != NULL;
    if (api) {
        if (pl_aws_describe(ep->region, ep->aws_profile, ep->endpoint_id, &ep->cancel, &info,
                            err) != 0)
            return wg_error_prefix(err, "privatelink %s", ep->name), err->code;
        snprintf(ep->st.aws_state, sizeof(ep->st.aws_state), "%s", info.state);
        /* The regional name: the shortest first label among *.vpce.amazonaws.com names. */
        size_t best = (size_t)-1;
        for (size_t i = 0; i < info.n_dns; i++) {
            char r[64];
            if (pl_region_from_endpoint(info.dns_names[i], r, sizeof(r)) != 0)
                continue;
            size_t l = strcspn(info.dns_names[i], ".");
            if (l < best) {
                best = l;
                snprintf(ep->regional, sizeof(ep->regional), "%s", info.dns_names[i]);
            }
        }
        if (!ep->regional[0])
            return wg_error_set(err, WG_ERR_NOTFOUND,
                                "privatelink %s: endpoint %s (state %s) has no DNS names yet; "
                                "wait until it is available",
                                ep->name, ep->endpoint_id, info.state);
    }
    /* Configured zones, with the names written in the configuration. */
    for (char **z = ep->azs; z && *z && ep->n_zones < PL_MAX_ZONES; z++) {
        pl_zone *zz = &ep->zones[ep->n_zones++];
        pl_az_split(*z, zz->id, sizeof(zz->id), zz->name, sizeof(zz->name));
    }
    /* The zonal names AWS lists (API only). */
    if (api) {
        for (size_t i = 0; i < info.n_dns; i++) {
            char az[32];
            if (!zonal_az_name(ep->regional, info.dns_names[i], az, sizeof(az)))
                continue;
            bool known = false;
            for (size_t k = 0; k < ep->n_zones; k++)
                known |= strcmp(ep->zones[k].name, az) == 0;
            if (!known && ep->n_zones < PL_MAX_ZONES)
                snprintf(ep->zones[ep->n_zones++].name, sizeof(ep->zones[0].name), "%s", az);
        }
    }
    /* AZ name <-> ID for whatever is missing, from DescribeAvailabilityZones (best effort). */
    bool missing = false;
    for (size_t k = 0; k < ep->n_zones; k++)
        missing |= !ep->zones[k].name[0] || !ep->zones[k].id[0];
    if (missing) {
        pl_az_pair pairs[64];
        wg_error e = {0};
        char region[64];
        const char *reg = ep->region;
        if (!reg && pl_region_from_endpoint(ep->regional, region, sizeof(region)) == 0)
            reg = region;
        int n =
            reg ? pl_aws_availability_zones(reg, ep->aws_profile, &ep->cancel, pairs, 64, &e) : -1;
        if (n == WG_ERR_CANCELLED)
            return wg_error_set(err, WG_ERR_CANCELLED, "privatelink %s: %s", ep->name, e.msg);
        for (size_t k = 0; k < ep->n_zones && n > 0; k++) {
            for (int i = 0; i < n; i++) {
                if (!ep->zones[k].name[0] && strcmp(ep->zones[k].id, pairs[i].id) == 0)
                    snprintf(ep->zones[k].name, sizeof(ep->zones[k].name), "%s", pairs[i].name);
                if (!ep->zones[k].id[0] && strcmp(ep->zones[k].name, pairs[i].name) == 0)
                    snprintf(ep->zones[k].id, sizeof(ep->zones[k].id), "%s", pairs[i].id);
            }
        }
        for (size_t k = 0; k < ep->n_zones; k++) {
            if (!ep->zones[k].name[0]) {
                snprintf(ep->setup_note, sizeof(ep->setup_note),
                         "the AZ name of zone %s is unknown (%s); write it as %s=us-east-1a "
                         "(this account's AZ name) in availability_zones",
                         ep->zones[k].id, n < 0 ? e.msg : "DescribeAvailabilityZones lacks it",
                         ep->zones[k].id);
                break;
            }
        }
    }
    /* A zone AWS lists by name that was configured by ID is one zone: keep the first (the
     * configured order is the preference), so that no name is resolved twice. */
    for (size_t k = 1; k < ep->n_zones;) {
        bool dup = false;
        for (size_t i = 0; i < k && !dup; i++)
            dup = (ep->zones[k].name[0] && strcmp(ep->zones[k].name, ep->zones[i].name) == 0) ||
                  (ep->zones[k].id[0] && strcmp(ep->zones[k].id, ep->zones[i].id) == 0);
        if (!dup) {
            k++;
            continue;
        }
        memmove(&ep->zones[k], &ep->zones[k + 1], (ep->n_zones - k - 1) * sizeof(ep->zones[0]));
        ep->n_zones--;
    }
    for (size_t k = 0; k < ep->n_zones; k++)
        if (ep->zones[k].name[0])
            pl_zonal_name(ep->regional, ep->zones[k].name, ep->zones[k].zonal,
                          sizeof(ep->zones[k].zonal));
    snprintf(ep->st.regional_name, sizeof(ep->st.regional_name), "%s", ep->regional);
    return 0;
}

pl_endpoint_t *pl_endpoint_new(const pl_config *cfg, wg_error *err)
{
    if (pl_config_check(cfg, cfg->name ? cfg->name : "[privatelink]", err) != 0)
        return NULL;
    pl_endpoint_t *ep = calloc(1, sizeof(*ep));
    if (!ep) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    bool oom = false;
    ep->cfg = *cfg;
    ep->name = wg_dup_or_null(cfg->name ? cfg->name : "?", &oom);
    ep->service_name = wg_dup_or_null(cfg->service_name, &oom);
    ep->endpoint_id = wg_dup_or_null(cfg->endpoint_id, &oom);
    ep->region = wg_dup_or_null(cfg->region, &oom);
    ep->dns_servers = wg_dup_or_null(cfg->dns_servers, &oom);
    ep->aws_profile = wg_dup_or_null(cfg->aws_profile, &oom);
    ep->state_dir = wg_dup_or_null(cfg->state_dir, &oom);
    size_t nz = 0;
    for (char **z = cfg->availability_zones; z && *z; z++)
        nz++;
    ep->azs = calloc(nz + 1, sizeof(char *));
    oom |= !ep->azs;
    for (size_t i = 0; ep->azs && i < nz; i++)
        ep->azs[i] = wg_dup_or_null(cfg->availability_zones[i], &oom);
    ep->cfg.name = ep->name;
    ep->cfg.service_name = ep->service_name;
    ep->cfg.endpoint_id = ep->endpoint_id;
    ep->cfg.region = ep->region;
    ep->cfg.dns_servers = ep->dns_servers;
    ep->cfg.aws_profile = ep->aws_profile;
    ep->cfg.state_dir = ep->state_dir;
    ep->cfg.availability_zones = ep->azs;
    ep->cfg.endpoint = NULL;
    if (ep->cfg.resolve_interval_ms <= 0)
        ep->cfg.resolve_interval_ms = 30000;
    if (ep->cfg.api_interval_ms <= 0)
        ep->cfg.api_interval_ms = 5 * 60 * 1000;
    ep->next_api_ms = wg_now_ms() + ep->cfg.api_interval_ms;
    if (ep->cfg.dns_timeout_ms <= 0)
        ep->cfg.dns_timeout_ms = 2000;
    if (ep->cfg.dns_tries <= 0)
        ep->cfg.dns_tries = 3;
    if (ep->cfg.port <= 0)
        ep->cfg.port = 5432;
    atomic_init(&ep->cancel.own, false);
    ep->cancel.outer = cfg->stop;
    pthread_mutex_init(&ep->mu, NULL);
    pthread_mutex_init(&ep->resolve_mu, NULL);
    pthread_cond_init(&ep->cv, NULL);
    if (oom) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        pl_endpoint_free(ep);
        return NULL;
    }
    if (cfg->endpoint) {
        snprintf(ep->regional, sizeof(ep->regional), "%s", cfg->endpoint);
        size_t l = strlen(ep->regional);
        if (l && ep->regional[l - 1] == '.')
            ep->regional[l - 1] = '\0';
    }
    if (setup_names(ep, err) != 0) {
        pl_endpoint_free(ep);
        return NULL;
    }
    ep->cfg.endpoint = ep->regional;
    return ep;
}

/* ---- Shutting down connections to vanished addresses ---------------------------------- */

int pl_shutdown_connections_to(char *const *ips, size_t n, int port)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        if (*end || fd < 0 || fd == dirfd(d))
            continue;
        struct stat sb;
        if (fstat((int)fd, &sb) != 0 || !S_ISSOCK(sb.st_mode))
            continue;
        int type = 0;
        socklen_t tl = sizeof(type);
        if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM)
            continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getpeername((int)fd, (struct sockaddr *)&ss, &sl) != 0)
            continue;
        char ip[INET6_ADDRSTRLEN] = "";
        int pport = 0;
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
            pport = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
            pport = ntohs(a->sin6_port);
        } else {
            continue;
        }
        if (port > 0 && pport != port)
            continue;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(ips[i], ip) == 0) {
                /* shutdown, not close: the owner still holds the fd and sees the failure. */
                if (shutdown((int)fd, SHUT_RDWR) == 0)
                    count++;
                break;
            }
        }
    }
    closedir(d);
    return count;
}

/* ---- Status ---------------------------------------------------------------------------- */

void pl_status_json(const char *name, const pl_status *st, wg_buf *out)
{
    wg_json j;
    wg_json_init(&j, out);
    wg_json_object_begin(&j);
    wg_json_key(&j, "endpoint");
    wg_json_string(&j, name);
    wg_json_key(&j, "state");
    wg_json_string(&j, pl_state_name(st->state));
    wg_json_key(&j, "regional_name");
    wg_json_string(&j, st->regional_name);
    wg_json_key(&j, "aws_state");
    if (st->aws_state[0])
        wg_json_string(&j, st->aws_state);
    else
        wg_json_null(&j);
    wg_json_key(&j, "generation");
    wg_json_uint(&j, st->generation);
    wg_json_key(&j, "resolutions");
    wg_json_uint(&j, st->resolutions);
    wg_json_key(&j, "failures");
    wg_json_uint(&j, st->failures);
    wg_json_key(&j, "last_ok");
    wg_json_int(&j, st->last_ok_wall_ms);
    wg_json_key(&j, "ttl");
    wg_json_int(&j, st->ttl_s);
    wg_json_key(&j, "error");
    if (st->last_error[0])
        wg_json_string(&j, st->last_error);
    else
        wg_json_null(&j);
    wg_json_key(&j, "addresses");
    wg_json_array_begin(&j);
    for (size_t i = 0; i < st->n_addrs; i++) {
        const pl_addr *a = &st->addrs[i];
        wg_json_object_begin(&j);
        wg_json_key(&j, "ip");
        wg_json_string(&j, a->ip);
        wg_json_key(&j, "zone_id");
        wg_json_string(&j, a->zone_id);
        wg_json_key(&j, "zone_name");
        wg_json_string(&j, a->zone_name);
        wg_json_key(&j, "preferred");
        wg_json_bool(&j, a->preferred);
        wg_json_object_end(&j);
    }
    wg_json_array_end(&j);
    wg_json_key(&j, "names");
    wg_json_array_begin(&j);
    for (size_t i = 0; i < st->n_names; i++) {
        const pl_name *n = &st->names[i];
        wg_json_object_begin(&j);
        wg_json_key(&j, "name");
        wg_json_string(&j, n->name);
        wg_json_key(&j, "zone_id");
        wg_json_string(&j, n->zone_id);
        wg_json_key(&j, "zone_name");
        wg_json_string(&j, n->zone_name);
        wg_json_key(&j, "addresses");
        wg_json_int(&j, n->n_addrs);
        wg_json_key(&j, "error");
        if (n->error[0])
            wg_json_string(&j, n->error);
        else
            wg_json_null(&j);
        wg_json_object_end(&j);
    }
    wg_json_array_end(&j);
    wg_json_key(&j, "drifts");
    wg_json_uint(&j, st->drifts);
    wg_json_key(&j, "history");
    wg_json_array_begin(&j);
    for (size_t i = 0; i < st->n_history; i++) {
        const pl_drift *d = &st->history[i];
        wg_json_object_begin(&j);
        wg_json_key(&j, "time");
        wg_json_int(&j, d->wall_ms);
        wg_json_key(&j, "old");
        wg_json_string(&j, d->old_set);
        wg_json_key(&j, "new");
        wg_json_string(&j, d->new_set);
        wg_json_key(&j, "zones");
        wg_json_string(&j, d->zones);
        wg_json_object_end(&j);
    }
    wg_json_array_end(&j);
    wg_json_key(&j, "updated");
    wg_json_int(&j, wg_wall_ms());
    wg_json_key(&j, "pid");
    wg_json_int(&j, (int64_t)getpid());
    wg_json_object_end(&j);
}

static void write_status(pl_endpoint_t *ep, const pl_status *st)
{
    if (!ep->state_dir)
        return;
    char dir[4096], path[4200];
    snprintf(dir, sizeof(dir), "%s/endpoints/%s", ep->state_dir, ep->name);
    snprintf(path, sizeof(path), "%s/status.json", dir);
    wg_error e = {0};
    wg_buf b = {0};
    pl_status_json(ep->name, st, &b);
    wg_buf_putc(&b, '\n');
    if (wg_mkdir_p(dir, 0700, &e) != 0 || wg_write_file_atomic(path, b.data, b.len, 0644, &e) != 0)
        log_warn(ep->name, "could not write the endpoint status: %s", e.msg);
    wg_buf_free(&b);
}

/* ---- Resolution ------------------------------------------------------------------------- */

const char *pl_zone_label(const pl_addr *a)
{
    return a->zone_id[0] ? a->zone_id : a->zone_name[0] ? a->zone_name : "?";
}

static void add_zone(char *buf, size_t len, const char *z)
{
    /* Add z to the comma list in buf unless present. */
    size_t zl = strlen(z);
    for (const char *p = buf; *p;) {
        size_t l = strcspn(p, ",");
        if (l == zl && strncmp(p, z, l) == 0)
            return;
        p += l + (p[l] == ',');
    }
    size_t bl = strlen(buf);
    snprintf(buf + bl, len - bl, "%s%s", bl ? "," : "", z);
}

int pl_endpoint_resolve(pl_endpoint_t *ep, wg_error *err)
{
    pthread_mutex_lock(&ep->resolve_mu);
    size_t nres = 1 + ep->n_zones;
    pl_name_result *res = calloc(nres, sizeof(*res));
    if (!res) {
        pthread_mutex_unlock(&ep->resolve_mu);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    snprintf(res[0].name, sizeof(res[0].name), "%s", ep->regional);
    size_t k = 1;
    for (size_t z = 0; z < ep->n_zones; z++) {
        if (!ep->zones[z].zonal[0])
            continue;
        snprintf(res[k].name, sizeof(res[k].name), "%s", ep->zones[z].zonal);
        snprintf(res[k].zone_id, sizeof(res[k].zone_id), "%s", ep->zones[z].id);
        snprintf(res[k].zone_name, sizeof(res[k].zone_name), "%s", ep->zones[z].name);
        k++;
    }
    nres = k;
    int ttl = -1;
    wg_error e = {0};
    int rc = pl_dns_resolve(ep->dns_servers, ep->cfg.dns_timeout_ms, ep->cfg.dns_tries, &ep->cancel,
                            res, nres, &ttl, &e);
    if (rc == WG_ERR_CANCELLED) { /* a stop: nothing learnt, nothing to report in status */
        free(res);
        pthread_mutex_unlock(&ep->resolve_mu);
        return wg_error_set(err, WG_ERR_CANCELLED, "privatelink %s: %s", ep->name, e.msg);
    }
    pl_addr merged[PL_MAX_ADDRS];
    size_t nm = rc == 0 ? pl_merge_addrs(res, nres, ep->azs, merged, PL_MAX_ADDRS) : 0;
    if (rc == 0 && nm == 0) {
        rc = wg_error_set(&e, res[0].status ? res[0].status : WG_ERR_DNS, "no address: %s",
                          res[0].error[0] ? res[0].error : "the answer is empty");
    }
    /* A configured zone without an address. */
    char degraded[700] = "";
    for (size_t z = 0; rc == 0 && z < ep->n_zones && !degraded[0]; z++) {
        if (!ep->zones[z].id[0])
            continue;
        bool found = false;
        for (size_t i = 0; i < nm; i++)
            found |= strcmp(merged[i].zone_id, ep->zones[z].id) == 0;
        if (found)
            continue;
        const char *why = ep->setup_note[0] ? ep->setup_note : "";
        for (size_t r = 1; r < nres && !why[0]; r++)
            if (strcmp(res[r].zone_id, ep->zones[z].id) == 0)
                why = res[r].error;
        snprintf(degraded, sizeof(degraded), "zone %s has no address: %s", ep->zones[z].id,
                 why[0] ? why : "no answer");
    }

    pl_drift ev = {0};
    bool drift = false;
    char *gone[PL_MAX_ADDRS];
    size_t ngone = 0;
    pl_status snap;
    pthread_mutex_lock(&ep->mu);
    pl_status *st = &ep->st;
    st->n_names = 0;
    for (size_t r = 0; r < nres && st->n_names < WG_ARRAY_LEN(st->names); r++) {
        pl_name *nm_ = &st->names[st->n_names++];
        snprintf(nm_->name, sizeof(nm_->name), "%s", res[r].name);
        snprintf(nm_->zone_id, sizeof(nm_->zone_id), "%s", res[r].zone_id);
        snprintf(nm_->zone_name, sizeof(nm_->zone_name), "%s", res[r].zone_name);
        nm_->n_addrs = (int)res[r].n;
        /* The error without the "NAME: " it starts with (the name is right there). */
        const char *e_ = res[r].error;
        size_t nl_ = strlen(res[r].name);
        if (strncmp(e_, res[r].name, nl_) == 0 && e_[nl_] == ':')
            e_ += nl_ + 2 <= strlen(e_) ? nl_ + 2 : strlen(e_);
        snprintf(nm_->error, sizeof(nm_->error), "%s", res[r].n ? "" : e_);
    }
    if (rc != 0) {
        st->failures++;
        snprintf(st->last_error, sizeof(st->last_error), "%s%s", e.msg,
                 ep->have_set ? " (keeping the last good addresses)" : "");
        st->state = ep->have_set ? PL_STATE_STALE : PL_STATE_FAILED;
    } else {
        char old_s[512], new_s[512];
        pl_addr_set_string(st->addrs, st->n_addrs, old_s, sizeof(old_s));
        pl_addr_set_string(merged, nm, new_s, sizeof(new_s));
        if (!ep->have_set || strcmp(old_s, new_s) != 0) {
            if (ep->have_set) {
                drift = true;
                ev.wall_ms = wg_wall_ms();
                snprintf(ev.old_set, sizeof(ev.old_set), "%s", old_s);
                snprintf(ev.new_set, sizeof(ev.new_set), "%s", new_s);
                for (size_t i = 0; i < st->n_addrs; i++) {
                    bool still = false;
                    for (size_t j = 0; j < nm; j++)
                        still |= strcmp(st->addrs[i].ip, merged[j].ip) == 0;
                    if (!still) {
                        add_zone(ev.zones, sizeof(ev.zones), pl_zone_label(&st->addrs[i]));
                        gone[ngone++] = strdup(st->addrs[i].ip);
                        if (!gone[ngone - 1])
                            ngone--;
                    }
                }
                for (size_t j = 0; j < nm; j++) {
                    bool had = false;
                    for (size_t i = 0; i < st->n_addrs; i++)
                        had |= strcmp(st->addrs[i].ip, merged[j].ip) == 0;
                    if (!had)
                        add_zone(ev.zones, sizeof(ev.zones), pl_zone_label(&merged[j]));
                }
                if (st->n_history == PL_HISTORY_MAX) {
                    memmove(&st->history[0], &st->history[1],
                            (PL_HISTORY_MAX - 1) * sizeof(st->history[0]));
                    st->n_history--;
                }
                st->history[st->n_history++] = ev;
                st->drifts++;
            }
            st->generation++;
            ep->have_set = true;
        }
        memcpy(st->addrs, merged, nm * sizeof(merged[0]));
        st->n_addrs = nm;
        st->resolutions++;
        st->last_ok_wall_ms = wg_wall_ms();
        st->ttl_s = ttl;
        st->state = degraded[0] ? PL_STATE_DEGRADED : PL_STATE_OK;
        snprintf(st->last_error, sizeof(st->last_error), "%s", degraded);
    }
    snap = *st;
    pl_drift_fn cb = ep->cb;
    void *cb_arg = ep->cb_arg;
    bool log_now = false;
    int suppressed = 0;
    if (drift) {
        int64_t now = wg_now_ms();
        if (ep->last_drift_log_ms == 0 || now - ep->last_drift_log_ms >= DRIFT_LOG_EVERY_MS) {
            log_now = true;
            suppressed = ep->drift_log_suppressed;
            ep->drift_log_suppressed = 0;
            ep->last_drift_log_ms = now;
        } else {
            ep->drift_log_suppressed++;
        }
    }
    pthread_mutex_unlock(&ep->mu);

    if (rc != 0)
        log_warn(ep->name, "resolution failed: %s", snap.last_error);
    if (drift) {
        /* Any port: the endpoint's addresses serve nothing but the endpoint. */
        int closed = pl_shutdown_connections_to(gone, ngone, 0);
        if (log_now)
            log_warn(ep->name,
                     "addresses changed in zone %s: [%s] -> [%s]; closed %d connection%s to "
                     "vanished addresses%s",
                     ev.zones[0] ? ev.zones : "?", ev.old_set, ev.new_set, closed,
                     closed == 1 ? "" : "s",
                     suppressed ? " (more changes happened since the last message)" : "");
        if (cb)
            cb(cb_arg, &ev);
    }
    for (size_t i = 0; i < ngone; i++)
        free(gone[i]);
    write_status(ep, &snap);
    free(res);
    pthread_mutex_unlock(&ep->resolve_mu);
    if (rc != 0)
        return wg_error_set(err, e.code ? e.code : WG_ERR_DNS, "privatelink %s: %s", ep->name,
                            e.msg);
    return 0;
}

/* ---- Watcher thread --------------------------------------------------------------------- */

/*
 * With endpoint_id: ask DescribeVpcEndpoints for the endpoint's state again, so that status
 * shows an endpoint rejected, expired or being deleted while walgate runs. A failed lookup
 * keeps the state last known and is logged once.
 */
static void refresh_aws_state(pl_endpoint_t *ep)
{
    ep->next_api_ms = wg_now_ms() + ep->cfg.api_interval_ms;
    pl_vpce_info info;
    wg_error e = {0};
    if (pl_aws_describe(ep->region, ep->aws_profile, ep->endpoint_id, &ep->cancel, &info, &e) !=
        0) {
        if (e.code == WG_ERR_CANCELLED)
            return; /* a stop, not an AWS failure */
        if (strcmp(ep->api_error, e.msg) != 0)
            log_warn(ep->name,
                     "looking endpoint %s up in the AWS API: %s (state last known: "
                     "%s)",
                     ep->endpoint_id, e.msg, ep->st.aws_state[0] ? ep->st.aws_state : "?");
        snprintf(ep->api_error, sizeof(ep->api_error), "%s", e.msg);
        return;
    }
    ep->api_error[0] = '\0';
    pthread_mutex_lock(&ep->mu);
    char was[sizeof(ep->st.aws_state)];
    snprintf(was, sizeof(was), "%s", ep->st.aws_state);
    snprintf(ep->st.aws_state, sizeof(ep->st.aws_state), "%s", info.state);
    pthread_mutex_unlock(&ep->mu);
    if (strcmp(was, info.state) == 0)
        return;
    if (strcmp(info.state, "available") == 0)
        log_info(ep->name, "endpoint %s is available again (was %s)", ep->endpoint_id, was);
    else
        log_warn(ep->name,
                 "endpoint %s is now %s (was %s): new connections through it will fail; see "
                 "the endpoint in the AWS console or `aws ec2 describe-vpc-endpoints "
                 "--vpc-endpoint-ids %s`",
                 ep->endpoint_id, info.state, was[0] ? was : "unknown", ep->endpoint_id);
}

static void *watch_thread(void *arg)
{
    pl_endpoint_t *ep = arg;
    for (;;) {
        if (ep->endpoint_id && wg_now_ms() >= ep->next_api_ms)
            refresh_aws_state(ep);
        wg_error e = {0};
        int rc = pl_endpoint_resolve(ep, &e);
        pthread_mutex_lock(&ep->mu);
        int64_t wait = ep->cfg.resolve_interval_ms;
        if (ep->endpoint_id && ep->next_api_ms - wg_now_ms() < wait)
            wait = ep->next_api_ms - wg_now_ms() > 0 ? ep->next_api_ms - wg_now_ms() : 0;
        if (rc != 0 && wait > 5000)
            wait = 5000; /* come back soon after a failure, so a fix is seen quickly */
        if (ep->st.ttl_s >= 0 && rc == 0 && (int64_t)ep->st.ttl_s * 1000 < wait)
            wait = ep->st.ttl_s < 1 ? 1000 : (int64_t)ep->st.ttl_s * 1000;
        int64_t until = wg_now_ms() + wait;
        while (!ep->stop && !ep->kick) {
            int64_t left = until - wg_now_ms();
            ep->st.next_ms = left > 0 ? left : 0;
            if (left <= 0)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t step = left > 200 ? 200 : left;
            ts.tv_nsec += (long)(step % 1000) * 1000000L;
            ts.tv_sec += (time_t)(step / 1000) + ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&ep->cv, &ep->mu, &ts);
        }
        ep->kick = false;
        bool stop = ep->stop;
        pthread_mutex_unlock(&ep->mu);
        if (stop)
            break;
    }
    return NULL;
}

int pl_endpoint_start(pl_endpoint_t *ep, wg_error *err)
{
    pthread_mutex_lock(&ep->mu);
    if (ep->running) {
        pthread_mutex_unlock(&ep->mu);
        return 0;
    }
    ep->stop = false;
    int rc = pthread_create(&ep->thread, NULL, watch_thread, ep);
    ep->running = rc == 0;
    pthread_mutex_unlock(&ep->mu);
    if (rc != 0)
        return wg_error_set(err, WG_ERR_INTERNAL, "privatelink %s: cannot start a thread: %s",
                            ep->name, strerror(rc));
    return 0;
}

void pl_endpoint_kick(pl_endpoint_t *ep)
{
    pthread_mutex_lock(&ep->mu);
    ep->kick = true;
    pthread_cond_broadcast(&ep->cv);
    pthread_mutex_unlock(&ep->mu);
}

void pl_endpoint_status(pl_endpoint_t *ep, pl_status *out)
{
    pthread_mutex_lock(&ep->mu);
    *out = ep->st;
    pthread_mutex_unlock(&ep->mu);
}

uint64_t pl_endpoint_generation(pl_endpoint_t *ep)
{
    pthread_mutex_lock(&ep->mu);
    uint64_t g = ep->st.generation;
    pthread_mutex_unlock(&ep->mu);
    return g;
}

size_t pl_endpoint_hostaddr(pl_endpoint_t *ep, char *buf, size_t len)
{
    pthread_mutex_lock(&ep->mu);
    size_t off = 0, n = 0;
    if (len)
        buf[0] = '\0';
    for (size_t i = 0; i < ep->st.n_addrs; i++) {
        int w = snprintf(buf + off, len - off, "%s%s", off ? "," : "", ep->st.addrs[i].ip);
        if (w < 0 || (size_t)w >= len - off)
            break;
        off += (size_t)w;
        n++;
    }
    pthread_mutex_unlock(&ep->mu);
    return n;
}

void pl_endpoint_on_drift(pl_endpoint_t *ep, pl_drift_fn fn, void *arg)
{
    pthread_mutex_lock(&ep->mu);
    ep->cb = fn;
    ep->cb_arg = arg;
    pthread_mutex_unlock(&ep->mu);
}

bool pl_tcp_probe(const char *ip, int port, int timeout_ms)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl;
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1)
            return false;
        sl = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, ip, &a->sin_addr) != 1)
            return false;
        sl = sizeof(*a);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&ss, sl) == 0) {
        ok = true;
    } else if (errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, timeout_ms) == 1) {
            int so = 0;
            socklen_t l = sizeof(so);
            ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &l) == 0 && so == 0;
        }
    }
    close(fd);
    return ok;
}

int pl_endpoint_dialer(void *arg, bool after_failure, char *addr, size_t len, int *port)
{
    pl_endpoint_t *ep = arg;
    int p = port && *port > 0 ? *port : ep->cfg.port;
    if (after_failure) {
        wg_error e = {0};
        pl_endpoint_resolve(ep, &e); /* failures are in the status; the last good set stays */
    }
    pl_status st;
    pl_endpoint_status(ep, &st);
    if (st.n_addrs == 0)
        return -1;
    size_t pick = 0;
    if (after_failure) {
        for (size_t i = 0; i < st.n_addrs && !pl_cancelled(&ep->cancel); i++) {
            if (pl_tcp_probe(st.addrs[i].ip, p, 1000)) {
                pick = i;
                break;
            }
            log_warn(ep->name, "address %s (zone %s) refuses connections on port %d",
                     st.addrs[i].ip, pl_zone_label(&st.addrs[i]), p);
        }
    }
    snprintf(addr, len, "%s", st.addrs[pick].ip);
    if (port)
        *port = p;
    return 0;
}

void pl_endpoint_free(pl_endpoint_t *ep)
{
    if (!ep)
        return;
    atomic_store(&ep->cancel.own, true); /* an AWS call or DNS wait in progress gives up */
    pthread_mutex_lock(&ep->mu);
    bool running = ep->running;
    ep->stop = true;
    pthread_cond_broadcast(&ep->cv);
    pthread_mutex_unlock(&ep->mu);
    if (running)
        pthread_join(ep->thread, NULL);
    pthread_mutex_destroy(&ep->mu);
    pthread_mutex_destroy(&ep->resolve_mu);
    pthread_cond_destroy(&ep->cv);
    free(ep->name);
    free(ep->service_name);
    free(ep->endpoint_id);
    free(ep->region);
    free(ep->dns_servers);
    free(ep->aws_profile);
    free(ep->state_dir);
    for (char **z = ep->azs; z && *z; z++)
        free(*z);
    free(ep->azs);
    free(ep);
}
