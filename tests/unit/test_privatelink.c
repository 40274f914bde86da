/*
 * test_privatelink.c — the pieces of privatelink/ that need no network: AZ IDs versus names,
 * names derived from the regional name, configuration checks, AWS XML responses (success,
 * pendingAcceptance, throttling, expired credentials, malformed, DTD), DNS answers built by
 * hand (TTLs, garbage, truncation), address ordering and the status JSON.
 */
#include "cli/cli.h"
#include "privatelink/privatelink_internal.h"
#include "test.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#define REGIONAL                                                                                   \
    "vpce-0a1b2c3d4e5f60718-abcdefgh.vpce-svc-0123456789abcdef0.us-east-1.vpce.amazonaws.com"

static const char DESCRIBE_OK[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<DescribeVpcEndpointsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\n"
    "  <requestId>8f1a4c2e-0000-4000-8000-000000000001</requestId>\n"
    "  <vpcEndpointSet>\n"
    "    <item>\n"
    "      <vpcEndpointId>vpce-0a1b2c3d4e5f60718</vpcEndpointId>\n"
    "      <vpcEndpointType>Interface</vpcEndpointType>\n"
    "      <vpcId>vpc-0123abcd</vpcId>\n"
    "      <serviceName>com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0</serviceName>\n"
    "      <state>available</state>\n"
    "      <dnsEntrySet>\n"
    "        <item><dnsName>" REGIONAL
    "</dnsName><hostedZoneId>Z7HUB22UULQXV</hostedZoneId></item>\n"
    "        <item><dnsName>vpce-0a1b2c3d4e5f60718-abcdefgh-us-east-1a.vpce-svc-0123456789abcdef0"
    ".us-east-1.vpce.amazonaws.com</dnsName><hostedZoneId>Z7HUB22UULQXV</hostedZoneId></item>\n"
    "      </dnsEntrySet>\n"
    "      <tagSet><item><key>state</key><value>not-this-one</value></item></tagSet>\n"
    "    </item>\n"
    "  </vpcEndpointSet>\n"
    "</DescribeVpcEndpointsResponse>\n";

static const char EC2_ERROR_EXPIRED[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<Response><Errors><Error><Code>RequestExpired</Code><Message>Request has expired."
    "</Message></Error></Errors><RequestID>a1b2</RequestID></Response>";

static const char STS_OK[] =
    "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <GetCallerIdentityResult>\n"
    "    <Arn>arn:aws:iam::123456789012:role/walgate</Arn>\n"
    "    <UserId>AROAEXAMPLE:walgate</UserId>\n"
    "    <Account>123456789012</Account>\n"
    "  </GetCallerIdentityResult>\n"
    "</GetCallerIdentityResponse>\n";

static const char STS_EXPIRED[] =
    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender"
    "</Type><Code>ExpiredToken</Code><Message>The security token included in the request is "
    "expired</Message></Error><RequestId>x</RequestId></ErrorResponse>";

TEST(az_ids_and_names)
{
    CHECK(pl_az_id_valid("use1-az1"));
    CHECK(pl_az_id_valid("apne1-az4"));
    CHECK(pl_az_id_valid("usw2-lax1-az1"));
    CHECK(!pl_az_id_valid("us-east-1a"));
    CHECK(!pl_az_id_valid("use1-az"));
    CHECK(!pl_az_id_valid("-az1"));
    CHECK(!pl_az_id_valid("USE1-AZ1"));
    CHECK(pl_az_name_like("us-east-1a"));
    CHECK(pl_az_name_like("eu-west-2c"));
    CHECK(!pl_az_name_like("use1-az1"));
    char id[32], name[32];
    CHECK(pl_az_split("use1-az1=us-east-1a", id, sizeof(id), name, sizeof(name)) == 0);
    CHECK_EQ_STR(id, "use1-az1");
    CHECK_EQ_STR(name, "us-east-1a");
    CHECK(pl_az_split("use1-az2", id, sizeof(id), name, sizeof(name)) == 0);
    CHECK_EQ_STR(name, "");
}

TEST(names_from_the_regional_name)
{
    char region[64], zonal[300];
    CHECK(pl_region_from_endpoint(REGIONAL, region, sizeof(region)) == 0);
    CHECK_EQ_STR(region, "us-east-1");
    CHECK(pl_region_from_endpoint(REGIONAL ".", region, sizeof(region)) == 0);
    CHECK(pl_region_from_endpoint("db.example.com", region, sizeof(region)) != 0);
    CHECK(pl_zonal_name(REGIONAL, "us-east-1a", zonal, sizeof(zonal)) == 0);
    CHECK_EQ_STR(zonal, "vpce-0a1b2c3d4e5f60718-abcdefgh-us-east-1a.vpce-svc-0123456789abcdef0"
                        ".us-east-1.vpce.amazonaws.com");
}

static int check_cfg(const char *endpoint, const char *id, const char *region, char **azs,
                     const char *svc, const char *dns, wg_error *err)
{
    pl_config c = {.name = "pl1",
                   .endpoint = endpoint,
                   .endpoint_id = id,
                   .region = region,
                   .availability_zones = azs,
                   .service_name = svc,
                   .dns_servers = dns};
    wg_error_clear(err);
    return pl_config_check(&c, "w.ini:3: [privatelink pl1]", err);
}

TEST(configuration_checks)
{
    wg_error err = {0};
    char *good[] = {"use1-az1=us-east-1a", "use1-az2", NULL};
    char *names[] = {"us-east-1a", NULL};
    char *junk[] = {"zone-one", NULL};
    CHECK(check_cfg(REGIONAL, NULL, NULL, good,
                    "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0",
                    "127.0.0.1:5353, [::1]:53", &err) == 0);
    CHECK(check_cfg(REGIONAL, NULL, NULL, names, NULL, NULL, &err) == WG_ERR_CONFIG);
    CHECK_CONTAINS(err.msg, "us-east-1a\" is an availability zone *name*");
    CHECK_CONTAINS(err.msg, "AZ ID");
    CHECK_CONTAINS(err.msg, "w.ini:3: [privatelink pl1]");
    CHECK(check_cfg(REGIONAL, NULL, NULL, junk, NULL, NULL, &err) == WG_ERR_CONFIG);
    CHECK_CONTAINS(err.msg, "is not an AZ ID");
    CHECK(check_cfg(NULL, NULL, NULL, NULL, NULL, NULL, &err) == WG_ERR_CONFIG);
    CHECK_CONTAINS(err.msg, "neither endpoint nor endpoint_id");
    CHECK(check_cfg(NULL, "vpce-0a1b", NULL, NULL, NULL, NULL, &err) == WG_ERR_CONFIG);
    CHECK_CONTAINS(err.msg, "region");
    CHECK(check_cfg(NULL, "vpce-0a1b", "us-east-1", NULL, NULL, NULL, &err) == 0);
    CHECK(check_cfg("db.example.com", NULL, NULL, NULL, NULL, NULL, &err) == WG_ERR_CONFIG);
    CHECK_CONTAINS(err.msg, "not a regional VPC endpoint DNS name");
    CHECK(check_cfg(REGIONAL, NULL, "eu-west-1", NULL, NULL, NULL, &err) == WG_ERR_CONFIG);
    CHECK(check_cfg(REGIONAL, NULL, NULL, NULL, "com.amazonaws.vpce.us-east-1.vpce-svc-999", NULL,
                    &err) == WG_ERR_CONFIG);
    CHECK_CONTAINS(err.msg, "must belong together");
    CHECK(check_cfg(REGIONAL, NULL, NULL, NULL, "vpce-svc-0123456789abcdef0", NULL, &err) ==
          WG_ERR_CONFIG);
    CHECK(check_cfg(REGIONAL, NULL, NULL, NULL, NULL, "dns.example.com:53", &err) == WG_ERR_CONFIG);
    CHECK_CONTAINS(err.msg, "dns_servers");
}

TEST(describe_vpc_endpoints)
{
    pl_vpce_info v;
    wg_error err = {0};
    CHECK(pl_xml_describe_endpoints(DESCRIBE_OK, strlen(DESCRIBE_OK), &v, &err) == 0);
    CHECK_EQ_STR(v.id, "vpce-0a1b2c3d4e5f60718");
    CHECK_EQ_STR(v.state, "available");
    CHECK_EQ_STR(v.service_name, "com.amazonaws.vpce.us-east-1.vpce-svc-0123456789abcdef0");
    CHECK_EQ_INT(v.n_dns, 2);
    CHECK_EQ_STR(v.dns_names[0], REGIONAL);

    char pending[sizeof(DESCRIBE_OK) + 32];
    snprintf(pending, sizeof(pending), "%s", DESCRIBE_OK);
    char *s = strstr(pending, "<state>available");
    memmove(s + 7 + 17, s + 7 + 9, strlen(s + 7 + 9) + 1);
    memcpy(s + 7, "pendingAcceptance", 17);
    CHECK(pl_xml_describe_endpoints(pending, strlen(pending), &v, &err) == 0);
    CHECK_EQ_STR(v.state, "pendingAcceptance");

    const char *empty = "<DescribeVpcEndpointsResponse><vpcEndpointSet/>"
                        "</DescribeVpcEndpointsResponse>";
    CHECK(pl_xml_describe_endpoints(empty, strlen(empty), &v, &err) == WG_ERR_NOTFOUND);
    CHECK_CONTAINS(err.msg, "no such VPC endpoint");

    CHECK(pl_xml_describe_endpoints(EC2_ERROR_EXPIRED, strlen(EC2_ERROR_EXPIRED), &v, &err) ==
          WG_ERR_AUTH);
    CHECK_CONTAINS(err.msg, "RequestExpired");
    CHECK_CONTAINS(err.msg, "Request has expired.");
    CHECK_CONTAINS(err.msg, "clock");

    const char *thr = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request "
                      "limit exceeded.</Message></Error></Errors></Response>";
    CHECK(pl_xml_describe_endpoints(thr, strlen(thr), &v, &err) == WG_ERR_AGAIN);
    CHECK_CONTAINS(err.msg, "throttled");

    const char *bad = "<DescribeVpcEndpointsResponse><vpcEndpointSet><item><state>av";
    CHECK(pl_xml_describe_endpoints(bad, strlen(bad), &v, &err) == WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "not valid XML");
    CHECK(pl_xml_describe_endpoints("", 0, &v, &err) == WG_ERR_PROTO);

    const char *dtd = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]><x>&a;</x>";
    CHECK(pl_xml_describe_endpoints(dtd, strlen(dtd), &v, &err) == WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "document type");
}

TEST(caller_identity_and_errors)
{
    char arn[256];
    wg_error err = {0};
    CHECK(pl_xml_caller_identity(STS_OK, strlen(STS_OK), arn, sizeof(arn), &err) == 0);
    CHECK_EQ_STR(arn, "arn:aws:iam::123456789012:role/walgate");
    CHECK(pl_xml_caller_identity(STS_EXPIRED, strlen(STS_EXPIRED), arn, sizeof(arn), &err) ==
          WG_ERR_AUTH);
    CHECK_CONTAINS(err.msg, "ExpiredToken");
    CHECK_CONTAINS(err.msg, "refresh the AWS credentials");
    CHECK(pl_xml_error("<html>502</html>", 16, 502, &err) == WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "HTTP 502");
    const char *azs = "<DescribeAvailabilityZonesResponse><availabilityZoneInfo><item><zoneName>"
                      "us-east-1a</zoneName><zoneId>use1-az6</zoneId></item><item><zoneName>"
                      "us-east-1b</zoneName><zoneId>use1-az1</zoneId></item>"
                      "</availabilityZoneInfo></DescribeAvailabilityZonesResponse>";
    pl_az_pair pairs[8];
    CHECK_EQ_INT(pl_xml_availability_zones(azs, strlen(azs), pairs, 8, &err), 2);
    CHECK_EQ_STR(pairs[1].name, "us-east-1b");
    CHECK_EQ_STR(pairs[1].id, "use1-az1");
}

/* A DNS response for `name` with A records (ttl each). */
static size_t build_answer(unsigned char *buf, const char *name, const char *const *ips, int n,
                           unsigned ttl, int rcode)
{
    size_t o = 0;
    unsigned char hdr[12] = {
        0x12, 0x34, 0x81, (unsigned char)(0x80 | rcode), 0, 1, 0, (unsigned char)n, 0, 0, 0, 0};
    memcpy(buf, hdr, 12);
    o = 12;
    const char *p = name;
    while (*p) {
        size_t l = strcspn(p, ".");
        buf[o++] = (unsigned char)l;
        memcpy(buf + o, p, l);
        o += l;
        p += l + (p[l] == '.');
    }
    buf[o++] = 0;
    buf[o++] = 0, buf[o++] = 1, buf[o++] = 0, buf[o++] = 1; /* A IN */
    for (int i = 0; i < n; i++) {
        buf[o++] = 0xc0, buf[o++] = 12; /* pointer to the question name */
        buf[o++] = 0, buf[o++] = 1, buf[o++] = 0, buf[o++] = 1;
        buf[o++] = (unsigned char)(ttl >> 24), buf[o++] = (unsigned char)(ttl >> 16);
        buf[o++] = (unsigned char)(ttl >> 8), buf[o++] = (unsigned char)ttl;
        buf[o++] = 0, buf[o++] = 4;
        inet_pton(AF_INET, ips[i], buf + o);
        o += 4;
    }
    return o;
}

TEST(dns_answers)
{
    unsigned char buf[512];
    const char *ips[] = {"10.0.1.5", "10.0.2.7", "10.0.1.5"};
    size_t len = build_answer(buf, "vpce-1.example", ips, 3, 60, 0);
    pl_addr out[8];
    size_t n = 0;
    int ttl = -1;
    wg_error err = {0};
    CHECK(pl_dns_handle_answer(buf, (int)len, AF_INET, out, 8, &n, &ttl, &err) == 0);
    CHECK_EQ_INT(n, 2); /* the duplicate is dropped */
    CHECK_EQ_STR(out[0].ip, "10.0.1.5");
    CHECK_EQ_INT(ttl, 60);
    /* Truncated in the middle of a record. */
    n = 0;
    CHECK(pl_dns_handle_answer(buf, (int)len - 3, AF_INET, out, 8, &n, &ttl, &err) == WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "could not be parsed");
    /* Garbage. */
    unsigned char junk[40];
    memset(junk, 0xff, sizeof(junk));
    n = 0;
    CHECK(pl_dns_handle_answer(junk, sizeof(junk), AF_INET, out, 8, &n, &ttl, &err) != 0);
    /* No answers: not an error here (the caller reports an empty answer). */
    len = build_answer(buf, "vpce-1.example", ips, 0, 60, 0);
    n = 0;
    CHECK(pl_dns_handle_answer(buf, (int)len, AF_INET, out, 8, &n, &ttl, &err) == 0);
    CHECK_EQ_INT(n, 0);
}

static void put_addr(pl_name_result *r, const char *ip)
{
    pl_addr *a = &r->addrs[r->n++];
    memset(a, 0, sizeof(*a));
    a->family = AF_INET;
    snprintf(a->ip, sizeof(a->ip), "%s", ip);
}

TEST(configured_zones_come_first)
{
    pl_name_result res[3];
    memset(res, 0, sizeof(res));
    put_addr(&res[0], "10.0.1.5");
    put_addr(&res[0], "10.0.2.7");
    put_addr(&res[0], "10.0.3.9");
    snprintf(res[1].zone_id, sizeof(res[1].zone_id), "use1-az1");
    put_addr(&res[1], "10.0.1.5");
    snprintf(res[2].zone_id, sizeof(res[2].zone_id), "use1-az2");
    put_addr(&res[2], "10.0.2.7");
    char *azs[] = {"use1-az2", NULL};
    pl_addr out[8];
    size_t n = pl_merge_addrs(res, 3, azs, out, 8);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_STR(out[0].ip, "10.0.2.7");
    CHECK(out[0].preferred);
    CHECK_EQ_STR(out[1].ip, "10.0.1.5");
    CHECK_EQ_STR(out[1].zone_id, "use1-az1");
    CHECK(!out[1].preferred);
    CHECK_EQ_STR(out[2].ip, "10.0.3.9");
    CHECK_EQ_STR(out[2].zone_id, "");
    char set[128];
    pl_addr_set_string(out, n, set, sizeof(set));
    CHECK_EQ_STR(set, "10.0.1.5,10.0.2.7,10.0.3.9");
}

TEST(status_json)
{
    pl_status st;
    memset(&st, 0, sizeof(st));
    st.state = PL_STATE_STALE;
    snprintf(st.regional_name, sizeof(st.regional_name), "%s", REGIONAL);
    st.n_addrs = 1;
    snprintf(st.addrs[0].ip, sizeof(st.addrs[0].ip), "10.0.1.5");
    snprintf(st.addrs[0].zone_id, sizeof(st.addrs[0].zone_id), "use1-az1");
    st.n_history = 1;
    st.history[0].wall_ms = 1000;
    snprintf(st.history[0].old_set, sizeof(st.history[0].old_set), "10.0.0.1");
    snprintf(st.history[0].new_set, sizeof(st.history[0].new_set), "10.0.1.5");
    snprintf(st.history[0].zones, sizeof(st.history[0].zones), "use1-az1");
    snprintf(st.last_error, sizeof(st.last_error), "say \"why\"");
    wg_buf b = {0};
    pl_status_json("pl1", &st, &b);
    CHECK_CONTAINS(b.data, "\"state\":\"stale\"");
    CHECK_CONTAINS(b.data, "\"old\":\"10.0.0.1\",\"new\":\"10.0.1.5\",\"zones\":\"use1-az1\"");
    CHECK_CONTAINS(b.data, "\"error\":\"say \\\"why\\\"\"");
    wg_buf_free(&b);
}

TEST(config_file_section)
{
    wg_error err = {0};
    const char *text = "[walgate]\nstate_dir = /tmp/x\n"
                       "[privatelink pl]\nendpoint = " REGIONAL "\n"
                       "availability_zones = use1-az1=us-east-1a, use1-az2\n"
                       "resolve_interval = 10s\ndns_servers = 127.0.0.1:5353\n"
                       "[postgres main]\nhost = db.example\nuser = u\ndbname = d\n"
                       "via = privatelink pl\n";
    cli_config *cfg = cli_config_parse(text, "w.ini", &err);
    CHECK(cfg != NULL);
    if (cfg) {
        const cli_privatelink *l = cli_config_privatelink(cfg, "pl");
        CHECK(l != NULL);
        CHECK_EQ_INT(l->cfg.resolve_interval_ms, 10000);
        CHECK_EQ_STR(l->cfg.availability_zones[1], "use1-az2");
        CHECK_EQ_STR(l->cfg.dns_servers, "127.0.0.1:5353");
        CHECK_EQ_INT(cfg->postgres[0].cfg.route, INGEST_ROUTE_PRIVATELINK);
        cli_config_free(cfg);
    }
    /* Defaults, and an AZ name refused with the file and line. */
    cfg = cli_config_parse("[privatelink pl]\nendpoint = " REGIONAL "\n", "w.ini", &err);
    CHECK(cfg && cfg->privatelinks[0].cfg.resolve_interval_ms == 30000);
    cli_config_free(cfg);
    cfg = cli_config_parse("[privatelink pl]\nendpoint = " REGIONAL
                           "\navailability_zones = us-east-1a\n",
                           "w.ini", &err);
    CHECK(cfg == NULL);
    CHECK_CONTAINS(err.msg, "w.ini:1: [privatelink pl] availability_zones");
    CHECK_CONTAINS(err.msg, "*name*");
    cfg = cli_config_parse("[postgres main]\nhost = h\nuser = u\ndbname = d\n"
                           "via = privatelink nope\n",
                           "w.ini", &err);
    CHECK(cfg == NULL);
    CHECK_CONTAINS(err.msg, "no [privatelink nope] section");
    cfg = cli_config_parse("[privatelink pl]\nendpoint = " REGIONAL "\nresolve_every = 1s\n",
                           "w.ini", &err);
    CHECK(cfg == NULL);
    CHECK_CONTAINS(err.msg, "unknown key \"resolve_every\"");
}

TEST(connections_to_vanished_addresses_are_shut_down)
{
    wg_error err = {0};
    int port = 0;
    int lfd = wg_tcp_listen("127.0.0.1", 0, &port, &err);
    CHECK(lfd >= 0);
    if (lfd < 0)
        return;
    int c = wg_tcp_connect("127.0.0.1", port, 2000, &err);
    CHECK(c >= 0);
    int a = accept(lfd, NULL, NULL);
    CHECK(a >= 0);
    char *other[] = {"127.0.0.9"};
    CHECK_EQ_INT(pl_shutdown_connections_to(other, 1, 0), 0);
    char *gone[] = {"127.0.0.1"};
    CHECK_EQ_INT(pl_shutdown_connections_to(gone, 1, port + 1 > 65535 ? 1 : port + 1), 0);
    /* Both ends live in this process, so both are shut down; the client sees EOF. */
    CHECK(pl_shutdown_connections_to(gone, 1, port) >= 1);
    char b;
    CHECK_EQ_INT(recv(c, &b, 1, 0), 0);
    close(a);
    close(c);
    close(lfd);
}

TEST_MAIN()
