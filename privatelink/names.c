/*
 * names.c — the configuration checks of a [privatelink] section and the names and zones of
 * an endpoint: AZ IDs versus AZ names, the region and zonal names derived from the regional
 * name, and the ordering of resolved addresses (configured zones first).
 */
#include "privatelink/privatelink_internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_lower(char c)
{
    return c >= 'a' && c <= 'z';
}
static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* use1-az1, apne1-az4, usw2-lax1-az1: groups of letters+digits joined by '-', ending -azN. */
bool pl_az_id_valid(const char *s)
{
    const char *az = strstr(s, "-az");
    if (!az || az == s || !az[3])
        return false;
    for (const char *p = az + 3; *p; p++)
        if (!is_digit(*p))
            return false;
    const char *p = s;
    while (p < az) {
        if (!is_lower(*p))
            return false;
        while (p < az && is_lower(*p))
            p++;
        if (p >= az || !is_digit(*p))
            return false;
        while (p < az && is_digit(*p))
            p++;
        if (p < az) {
            if (*p != '-')
                return false;
            p++;
        }
    }
    return strlen(s) < 32;
}

/* us-east-1a, eu-west-2c, us-gov-west-1b, us-west-2-lax-1a: ends in digit + letter. */
bool pl_az_name_like(const char *s)
{
    size_t n = strlen(s);
    if (n < 4 || n >= 32 || !is_lower(s[n - 1]) || !is_digit(s[n - 2]) || !strchr(s, '-') ||
        strstr(s, "-az"))
        return false;
    for (const char *p = s; *p; p++)
        if (!is_lower(*p) && !is_digit(*p) && *p != '-')
            return false;
    return true;
}

int pl_az_split(const char *item, char *id, size_t idlen, char *name, size_t namelen)
{
    const char *eq = strchr(item, '=');
    size_t il = eq ? (size_t)(eq - item) : strlen(item);
    while (il > 0 && item[il - 1] == ' ')
        il--;
    if (il == 0 || il >= idlen)
        return -1;
    memcpy(id, item, il);
    id[il] = '\0';
    name[0] = '\0';
    if (eq) {
        const char *nm = eq + 1;
        while (*nm == ' ')
            nm++;
        if (strlen(nm) >= namelen)
            return -1;
        snprintf(name, namelen, "%s", nm);
    }
    return 0;
}

static const char SUFFIX[] = ".vpce.amazonaws.com";

int pl_region_from_endpoint(const char *endpoint, char *region, size_t len)
{
    size_t n = strlen(endpoint), sl = strlen(SUFFIX);
    if (n > 0 && endpoint[n - 1] == '.')
        n--; /* a fully qualified name */
    if (n <= sl || strncmp(endpoint + n - sl, SUFFIX, sl) != 0)
        return -1;
    size_t end = n - sl, start = end;
    while (start > 0 && endpoint[start - 1] != '.')
        start--;
    if (start == end || end - start >= len)
        return -1;
    memcpy(region, endpoint + start, end - start);
    region[end - start] = '\0';
    return 0;
}

int pl_zonal_name(const char *regional, const char *az_name, char *out, size_t len)
{
    const char *dot = strchr(regional, '.');
    if (!dot || !*az_name)
        return -1;
    int n = snprintf(out, len, "%.*s-%s%s", (int)(dot - regional), regional, az_name, dot);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

/* The vpce-svc-… label of a service or endpoint name, into buf ("" when none). */
static void svc_label(const char *s, char *buf, size_t len)
{
    buf[0] = '\0';
    const char *p = strstr(s, "vpce-svc-");
    if (!p)
        return;
    size_t n = strcspn(p, ".");
    if (n < len) {
        memcpy(buf, p, n);
        buf[n] = '\0';
    }
}

int pl_config_check(const pl_config *cfg, const char *where, wg_error *err)
{
    if (!cfg->endpoint && !cfg->endpoint_id)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "%s has neither endpoint nor endpoint_id; add endpoint = the "
                            "endpoint's regional DNS name (vpce-….vpce-svc-….REGION.vpce."
                            "amazonaws.com), or endpoint_id = vpce-… and region = REGION",
                            where);
    if (cfg->endpoint && cfg->endpoint_id)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "%s sets both endpoint and endpoint_id; keep one of them", where);
    char region[64];
    if (cfg->endpoint) {
        if (strncmp(cfg->endpoint, "vpce-", 5) != 0 || !strstr(cfg->endpoint, ".vpce-svc-") ||
            pl_region_from_endpoint(cfg->endpoint, region, sizeof(region)) != 0)
            return wg_error_set(err, WG_ERR_CONFIG,
                                "%s endpoint: \"%s\" is not a regional VPC endpoint DNS name; "
                                "use the first DNS name the console lists, e.g. "
                                "vpce-0123456789abcdef0-abcdefgh.vpce-svc-0123456789abcdef0."
                                "us-east-1.vpce.amazonaws.com",
                                where, cfg->endpoint);
        if (cfg->region && strcmp(cfg->region, region) != 0)
            return wg_error_set(err, WG_ERR_CONFIG,
                                "%s region = %s, but the endpoint name is in region %s", where,
                                cfg->region, region);
    } else {
        if (strncmp(cfg->endpoint_id, "vpce-", 5) != 0 || strchr(cfg->endpoint_id, '.'))
            return wg_error_set(err, WG_ERR_CONFIG,
                                "%s endpoint_id: \"%s\" is not a VPC endpoint id; use the id "
                                "shown by the console, e.g. vpce-0123456789abcdef0",
                                where, cfg->endpoint_id);
        if (!cfg->region)
            return wg_error_set(err, WG_ERR_CONFIG,
                                "%s endpoint_id needs region = REGION (e.g. us-east-1)", where);
    }
    if (cfg->service_name) {
        if (strncmp(cfg->service_name, "com.amazonaws.vpce.", 19) != 0 ||
            !strstr(cfg->service_name, ".vpce-svc-"))
            return wg_error_set(err, WG_ERR_CONFIG,
                                "%s service_name: \"%s\" is not an endpoint service name; use "
                                "com.amazonaws.vpce.REGION.vpce-svc-0123456789abcdef0",
                                where, cfg->service_name);
        char a[64], b[64];
        svc_label(cfg->service_name, a, sizeof(a));
        if (cfg->endpoint) {
            svc_label(cfg->endpoint, b, sizeof(b));
            if (strcmp(a, b) != 0)
                return wg_error_set(err, WG_ERR_CONFIG,
                                    "%s service_name names %s but the endpoint is one of %s; "
                                    "the two must belong together",
                                    where, a, b);
        }
    }
    for (char **z = cfg->availability_zones; z && *z; z++) {
        char id[64], name[64];
        if (pl_az_split(*z, id, sizeof(id), name, sizeof(name)) != 0)
            return wg_error_set(err, WG_ERR_CONFIG, "%s availability_zones: \"%s\" is not an AZ ID",
                                where, *z);
        if (pl_az_name_like(id))
            return wg_error_set(
                err, WG_ERR_CONFIG,
                "%s availability_zones: \"%s\" is an availability zone *name*; write AZ IDs "
                "such as use1-az1 instead. AZ names (us-east-1a) are mapped to physical zones "
                "differently in every AWS account, while an AZ ID names the same zone in all "
                "accounts, which is what must match the endpoint service's zones. Find the IDs "
                "with: aws ec2 describe-availability-zones --query "
                "'AvailabilityZones[].[ZoneName,ZoneId]'; you may add this account's name as "
                "use1-az1=%s",
                where, id, id);
        if (!pl_az_id_valid(id))
            return wg_error_set(err, WG_ERR_CONFIG,
                                "%s availability_zones: \"%s\" is not an AZ ID; AZ IDs look "
                                "like use1-az1 or euw2-az3",
                                where, id);
        if (name[0] && !pl_az_name_like(name))
            return wg_error_set(err, WG_ERR_CONFIG,
                                "%s availability_zones: in \"%s\", \"%s\" is not an AZ name "
                                "(like us-east-1a)",
                                where, *z, name);
    }
    if (cfg->dns_servers) {
        char *copy = strdup(cfg->dns_servers);
        if (!copy)
            return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        char *save = NULL;
        int rc = 0, n = 0;
        for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            size_t l = strlen(t);
            while (l && t[l - 1] == ' ')
                t[--l] = '\0';
            char host[128];
            int port;
            struct in6_addr a6;
            if (wg_parse_hostport(t, host, sizeof(host), &port, 53) != 0 || port <= 0 ||
                port > 65535 ||
                (inet_pton(AF_INET, host, &a6) != 1 && inet_pton(AF_INET6, host, &a6) != 1))
                rc = wg_error_set(err, WG_ERR_CONFIG,
                                  "%s dns_servers: \"%s\" is not IP:PORT; list name servers by "
                                  "address, e.g. 10.0.0.2:53, [fd00::2]:53",
                                  where, t);
            n++;
        }
        free(copy);
        if (rc)
            return rc;
        if (n == 0)
            return wg_error_set(err, WG_ERR_CONFIG, "%s dns_servers is empty", where);
    }
    return 0;
}

/* ---- Addresses ------------------------------------------------------------------------ */

static bool have_ip(const pl_addr *a, size_t n, const char *ip)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].ip, ip) == 0)
            return true;
    return false;
}

/* Append the addresses of one name's answer not taken yet, tagged with its zone. */
static size_t take_addrs(const pl_name_result *r, bool preferred, pl_addr *out, size_t n,
                         size_t max)
{
    for (size_t i = 0; i < r->n && n < max; i++) {
        if (have_ip(out, n, r->addrs[i].ip))
            continue;
        out[n] = r->addrs[i];
        snprintf(out[n].zone_id, sizeof(out[n].zone_id), "%s", r->zone_id);
        snprintf(out[n].zone_name, sizeof(out[n].zone_name), "%s", r->zone_name);
        out[n].preferred = preferred;
        n++;
    }
    return n;
}

size_t pl_merge_addrs(const pl_name_result *res, size_t nres, char *const *azs, pl_addr *out,
                      size_t max)
{
    size_t n = 0;
    /* 1. Configured zones, in configuration order. */
    for (char *const *z = azs; z && *z; z++) {
        char id[64], name[64];
        if (pl_az_split(*z, id, sizeof(id), name, sizeof(name)) != 0)
            continue;
        for (size_t r = 0; r < nres; r++)
            if (strcmp(res[r].zone_id, id) == 0)
                n = take_addrs(&res[r], true, out, n, max);
    }
    /* 2. Other zones' names, then 3. the regional name (zone from a zonal answer if any). */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t r = 0; r < nres; r++) {
            bool zonal = res[r].zone_id[0] || res[r].zone_name[0];
            if ((pass == 0) == zonal)
                n = take_addrs(&res[r], false, out, n, max);
        }
    }
    return n;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void pl_addr_set_string(const pl_addr *a, size_t n, char *buf, size_t len)
{
    const char *ips[PL_MAX_ADDRS];
    if (n > PL_MAX_ADDRS)
        n = PL_MAX_ADDRS;
    for (size_t i = 0; i < n; i++)
        ips[i] = a[i].ip;
    qsort(ips, n, sizeof(ips[0]), str_cmp);
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(buf + off, len - off, "%s%s", i ? "," : "", ips[i]);
        if (w < 0 || (size_t)w >= len - off)
            break;
        off += (size_t)w;
    }
}
