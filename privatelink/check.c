/*
 * check.c — the PrivateLink checks of `walgate validate`: endpoint state and service name
 * (DescribeVpcEndpoints, when credentials exist), DNS answers of the regional and zonal names,
 * every configured zone covered, TCP reachability of each address, and the principal to
 * allow-list on the endpoint service (STS GetCallerIdentity).
 */
#include "privatelink/privatelink_internal.h"

#include <stdio.h>
#include <string.h>

/* "vpce-0abc-xyz.vpce-svc-…" → "vpce-0abc". */
static bool endpoint_id_from_name(const char *regional, char *id, size_t len)
{
    const char *d1 = strchr(regional + 5, '-');
    size_t dot = strcspn(regional, ".");
    if (strncmp(regional, "vpce-", 5) != 0 || !d1 || (size_t)(d1 - regional) > dot ||
        (size_t)(d1 - regional) >= len)
        return false;
    memcpy(id, regional, (size_t)(d1 - regional));
    id[d1 - regional] = '\0';
    return true;
}

static const char *state_remedy(const char *state, const char *id)
{
    static char buf[512];
    if (strcmp(state, "pendingAcceptance") == 0)
        snprintf(buf, sizeof(buf),
                 "the endpoint service owner must accept the connection: aws ec2 "
                 "accept-vpc-endpoint-connections --service-id vpce-svc-… --vpc-endpoint-ids %s",
                 id);
    else if (strcmp(state, "pending") == 0)
        snprintf(buf, sizeof(buf), "the endpoint is still being created; wait a few minutes");
    else if (strcmp(state, "rejected") == 0)
        snprintf(buf, sizeof(buf),
                 "the service owner rejected the endpoint; ask them to allow-list this account "
                 "and create a new endpoint");
    else if (strcmp(state, "expired") == 0)
        snprintf(buf, sizeof(buf),
                 "the connection request expired before it was accepted; create the endpoint "
                 "again and have the service owner accept it");
    else if (strcmp(state, "failed") == 0)
        snprintf(buf, sizeof(buf), "the endpoint failed; delete it and create it again");
    else
        snprintf(buf, sizeof(buf),
                 "the endpoint is %s; create a new endpoint and update the configuration", state);
    return buf;
}

int pl_check(const pl_config *cfg, wg_checks *out)
{
    char target[200];
    snprintf(target, sizeof(target), "privatelink %s", cfg->name ? cfg->name : "?");
    wg_error err = {0};
    int port = cfg->port > 0 ? cfg->port : 5432;

    /* AWS endpoint state, when an id is known and credentials exist. */
    char id[64] = "", region[64] = "";
    if (cfg->endpoint_id)
        snprintf(id, sizeof(id), "%s", cfg->endpoint_id);
    else if (cfg->endpoint)
        endpoint_id_from_name(cfg->endpoint, id, sizeof(id));
    if (cfg->region)
        snprintf(region, sizeof(region), "%s", cfg->region);
    else if (cfg->endpoint)
        pl_region_from_endpoint(cfg->endpoint, region, sizeof(region));
    pl_aws_creds creds;
    wg_error cerr = {0};
    bool have_creds = pl_aws_load_creds(cfg->aws_profile, NULL, &creds, &cerr) == 0;
    if (have_creds)
        pl_aws_creds_clear(&creds);
    if (!have_creds) {
        wg_checks_add(out, target, "endpoint state",
                      cfg->endpoint_id ? WG_CHECK_FAIL : WG_CHECK_SKIP,
                      "provide AWS credentials (environment, ~/.aws/credentials profile, or an "
                      "instance role) allowed to call ec2:DescribeVpcEndpoints",
                      "not checked: %s", cerr.msg);
    } else if (id[0] && region[0]) {
        pl_vpce_info info;
        if (pl_aws_describe_endpoint(region, cfg->aws_profile, id, &info, &err) != 0) {
            wg_checks_add(out, target, "endpoint state", WG_CHECK_FAIL,
                          "see the message; the endpoint id and region come from the "
                          "configuration",
                          "%s", err.msg);
        } else {
            bool ok = strcmp(info.state, "available") == 0;
            wg_checks_add(out, target, "endpoint state", ok ? WG_CHECK_OK : WG_CHECK_FAIL,
                          ok ? NULL : state_remedy(info.state, info.id), "%s is %s (service %s)",
                          info.id, info.state, info.service_name);
            if (cfg->service_name && strcmp(cfg->service_name, info.service_name) != 0)
                wg_checks_add(out, target, "service name", WG_CHECK_FAIL,
                              "fix service_name, or point endpoint at the right VPC endpoint",
                              "the endpoint connects to %s, the configuration says %s",
                              info.service_name, cfg->service_name);
        }
    }

    /* DNS. */
    wg_error_clear(&err);
    pl_endpoint_t *ep = pl_endpoint_new(cfg, &err);
    pl_status st;
    memset(&st, 0, sizeof(st));
    int rc = ep ? pl_endpoint_resolve(ep, &err) : err.code;
    if (ep)
        pl_endpoint_status(ep, &st);
    if (!ep || rc != 0) {
        wg_checks_add(out, target, "dns", WG_CHECK_FAIL,
                      "check endpoint (or endpoint_id/region), dns_servers, and that this host "
                      "uses the VPC resolver (the .2 address of the VPC) or a forwarder to it",
                      "%s", err.msg);
        wg_checks_add(out, target, "zones", WG_CHECK_SKIP, NULL, "not checked");
        wg_checks_add(out, target, "tcp", WG_CHECK_SKIP, NULL, "not checked");
    } else {
        char set[512];
        pl_addr_set_string(st.addrs, st.n_addrs, set, sizeof(set));
        wg_checks_add(out, target, "dns", WG_CHECK_OK, NULL, "%s -> %s (ttl %ds)", st.regional_name,
                      set, st.ttl_s);
        /* Zones. */
        int nz = 0;
        for (char **z = cfg->availability_zones; z && *z; z++, nz++) {
            char zid[64], zname[64];
            pl_az_split(*z, zid, sizeof(zid), zname, sizeof(zname));
            wg_buf ips = {0};
            for (size_t i = 0; i < st.n_addrs; i++)
                if (strcmp(st.addrs[i].zone_id, zid) == 0)
                    wg_buf_printf(&ips, "%s%s", ips.len ? "," : "", st.addrs[i].ip);
            char name[80];
            snprintf(name, sizeof(name), "zone %s", zid);
            if (ips.len)
                wg_checks_add(out, target, name, WG_CHECK_OK, NULL, "%s", ips.data);
            else {
                const char *why = "no zonal name is known for it (see availability_zones)";
                for (size_t k = 1; k < st.n_names; k++)
                    if (strcmp(st.names[k].zone_id, zid) == 0)
                        why = st.names[k].error[0] ? st.names[k].error : "no address";
                wg_checks_add(out, target, name, WG_CHECK_FAIL,
                              "add a subnet in this zone to the endpoint (aws ec2 "
                              "modify-vpc-endpoint --add-subnet-ids), and make sure the endpoint "
                              "service is offered in it; or remove the zone from "
                              "availability_zones",
                              "no address in this zone: %s", why);
            }
            wg_buf_free(&ips);
        }
        if (nz == 0)
            wg_checks_add(out, target, "zones", WG_CHECK_WARN,
                          "list the AZ IDs walgate should prefer in availability_zones "
                          "(e.g. use1-az1, use1-az2)",
                          "no availability_zones configured; addresses are used in DNS order");
        /* TCP. */
        for (size_t i = 0; i < st.n_addrs; i++) {
            char name[80];
            snprintf(name, sizeof(name), "tcp %s", st.addrs[i].ip);
            if (pl_tcp_probe(st.addrs[i].ip, port, 3000))
                wg_checks_add(out, target, name, WG_CHECK_OK, NULL, "port %d reachable (zone %s)",
                              port, pl_zone_label(&st.addrs[i]));
            else
                wg_checks_add(out, target, name, WG_CHECK_FAIL,
                              "allow this host in the endpoint's security group on that port, "
                              "and check that the service's load balancer has a healthy target "
                              "in the zone",
                              "port %d refused or timed out (zone %s)", port,
                              pl_zone_label(&st.addrs[i]));
        }
    }
    pl_endpoint_free(ep);

    /* Principal. */
    if (!have_creds) {
        wg_checks_add(out, target, "principal", WG_CHECK_SKIP, NULL, "no AWS credentials");
    } else {
        char arn[512];
        wg_error_clear(&err);
        if (pl_aws_caller_identity(region[0] ? region : "us-east-1", cfg->aws_profile, arn,
                                   sizeof(arn), &err) != 0) {
            wg_checks_add(out, target, "principal", WG_CHECK_FAIL,
                          "fix the AWS credentials (see the message)", "%s", err.msg);
        } else {
            const char *svc = cfg->service_name && strstr(cfg->service_name, "vpce-svc-")
                                  ? strstr(cfg->service_name, "vpce-svc-")
                                  : "vpce-svc-...";
            wg_checks_add(out, target, "principal", WG_CHECK_OK, NULL,
                          "%s; the service owner allow-lists it with: aws ec2 "
                          "modify-vpc-endpoint-service-permissions --service-id %s "
                          "--add-allowed-principals %s",
                          arn, svc, arn);
        }
    }
    return wg_checks_count(out, WG_CHECK_FAIL) ? -1 : 0;
}
