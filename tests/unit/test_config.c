/* test_config.c — the configuration file: defaults, every kind of error, refusals. */
#include "cli/cli.h"
#include "test.h"

#include <sys/stat.h>
#include <unistd.h>

static cli_config *parse(const char *text, wg_error *err)
{
    wg_error_clear(err);
    return cli_config_parse(text, "test.ini", err);
}

TEST(defaults_are_applied)
{
    wg_error err;
    cli_config *c = parse("[walgate]\nstate_dir = /tmp/wg\n"
                          "[tunnel b1]\nhost = bastion.example.com\n"
                          "[postgres main]\nhost = db.internal\nuser = repl\ndbname = app\n"
                          "via = tunnel b1\n"
                          "[source orders]\nconnection = main\npublication = pub\n",
                          &err);
    CHECK(c != NULL);
    if (!c) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    CHECK_EQ_STR(c->state_dir, "/tmp/wg");
    CHECK_EQ_INT(c->n_tunnels, 1);
    const cli_tunnel *t = cli_config_tunnel(c, "b1");
    CHECK(t != NULL);
    CHECK_EQ_INT(t->cfg.port, 22);
    CHECK_EQ_INT(t->cfg.host_key_policy, TUNNEL_HOSTKEY_STRICT);
    CHECK_EQ_INT(t->cfg.connect_timeout_ms, 10000);
    /* defaults that find a silent drop within 10 s (issue 11 item 11) */
    CHECK_EQ_INT(t->cfg.tcp.user_timeout_ms, 8000);
    CHECK_EQ_INT(t->cfg.keepalive_interval_ms, 2000);
    CHECK_EQ_INT(t->cfg.sessions, TUNNEL_SESSIONS_DEFAULT);
    CHECK(t->cfg.tcp.idle_ms + t->cfg.tcp.interval_ms * t->cfg.tcp.count <= 10000);
    CHECK_EQ_STR(t->cfg.known_hosts, "/tmp/wg/known_hosts");
    CHECK_EQ_STR(t->cfg.state_dir, "/tmp/wg");
    const cli_postgres *p = cli_config_postgres(c, "main");
    CHECK_EQ_INT(p->cfg.port, 5432);
    CHECK_EQ_STR(p->cfg.sslmode, "prefer");
    CHECK_EQ_INT(p->cfg.route, INGEST_ROUTE_TUNNEL);
    CHECK_EQ_STR(p->cfg.via, "b1");
    CHECK_EQ_INT(p->cfg.tcp.idle_ms, 5000);
    CHECK_EQ_INT(p->cfg.tcp.interval_ms, 1000);
    CHECK_EQ_INT(p->cfg.tcp.count, 4);
    CHECK_EQ_INT(p->cfg.tcp.user_timeout_ms, 8000);
    CHECK(p->cfg.tcp.idle_ms + p->cfg.tcp.interval_ms * p->cfg.tcp.count <= 10000);
    const cli_source *s = cli_config_source(c, "orders");
    CHECK_EQ_STR(s->cfg.slot, "walgate_orders");
    CHECK_EQ_INT(s->cfg.snapshot_workers, 2);
    CHECK_EQ_INT(s->cfg.max_txn_memory, 64 << 20);
    CHECK_EQ_INT(s->cfg.status_interval_ms, 10000);
    CHECK(s->cfg.tables == NULL);
    CHECK_EQ_INT(s->cfg.failover, 1); /* failover slots where the server has them (17+) */
    CHECK(p->cfg.target_session_attrs == NULL);
    CHECK(p->standbys == NULL);
    cli_config_free(c);
}

/* host = a,b with target_session_attrs; standbys naming [postgres] sections; failover off. */
TEST(multi_host_standbys_failover)
{
    wg_error err;
    cli_config *c = parse("[postgres main]\nhost = 10.0.0.1,10.0.0.2\nuser = u\ndbname = d\n"
                          "target_session_attrs = read-write\nstandbys = replica\n"
                          "[postgres replica]\nhost = 10.0.0.2\nuser = u\ndbname = d\n"
                          "[source s]\nconnection = main\npublication = p\nfailover = false\n",
                          &err);
    CHECK(c != NULL);
    if (!c) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    const cli_postgres *p = cli_config_postgres(c, "main");
    CHECK_EQ_STR(p->cfg.host, "10.0.0.1,10.0.0.2");
    CHECK_EQ_STR(p->cfg.target_session_attrs, "read-write");
    CHECK(p->standbys && p->standbys[0] && !p->standbys[1]);
    if (p->standbys)
        CHECK_EQ_STR(p->standbys[0], "replica");
    CHECK_EQ_INT(cli_config_source(c, "s")->cfg.failover, 0);
    cli_config_free(c);
}

TEST(explicit_values_win_even_zero)
{
    wg_error err;
    cli_config *c = parse("[tunnel b1]\nhost = h\ntcp_user_timeout = 0\nport = 2222\n"
                          "keepalive_interval = 500ms\nhost_key_policy = accept-new\nsessions = 1\n"
                          "[postgres p]\nhost=h\nuser=u\ndbname=d\nkeepalives_idle = 5m\n"
                          "[source s]\nconnection = p\npublication = pub\n"
                          "tables = public.a, public.b ,x.c\nmax_txn_memory = 1GiB\n",
                          &err);
    CHECK(c != NULL);
    if (!c)
        return;
    const cli_tunnel *t = cli_config_tunnel(c, "b1");
    CHECK_EQ_INT(t->cfg.tcp.user_timeout_ms, 0);
    CHECK_EQ_INT(t->cfg.port, 2222);
    CHECK_EQ_INT(t->cfg.keepalive_interval_ms, 500);
    CHECK_EQ_INT(t->cfg.host_key_policy, TUNNEL_HOSTKEY_ACCEPT_NEW);
    CHECK_EQ_INT(t->cfg.sessions, 1);
    CHECK_EQ_INT(cli_config_postgres(c, "p")->cfg.tcp.idle_ms, 300000);
    const cli_source *s = cli_config_source(c, "s");
    CHECK_EQ_STR(s->cfg.tables[0], "public.a");
    CHECK_EQ_STR(s->cfg.tables[1], "public.b");
    CHECK_EQ_STR(s->cfg.tables[2], "x.c");
    CHECK(s->cfg.tables[3] == NULL);
    CHECK_EQ_INT(s->cfg.max_txn_memory, 1ULL << 30);
    cli_config_free(c);
}

/* Each bad input must fail with a message naming the line and saying what is allowed. */
TEST(errors_name_file_line_key_and_fix)
{
    static const struct {
        const char *text;
        const char *want[3];
    } cases[] = {
        {"[tunnel b1]\nhost = h\nport = abc\n", {"test.ini:3:", "[tunnel b1] port", "1 to 65535"}},
        {"[tunnel b1]\nhost = h\nconnect_timeout = 10\n",
         {"test.ini:3:", "connect_timeout", "500ms, 10s, 5m"}},
        {"[tunnel b1]\nhost = h\nhost_key_policy = yolo\n",
         {"test.ini:3:", "strict, accept-new", "yolo"}},
        {"[tunnel b1]\nhost = h\nbogus = 1\n", {"test.ini:3:", "unknown key \"bogus\"", "host"}},
        {"[walgate]\n[tunnels b1]\n", {"test.ini:2:", "unknown section [tunnels b1]", "[tunnel"}},
        {"[tunnel b1]\nport = 22\n", {"test.ini:1:", "no host", "host ="}},
        {"[tunnel b1]\nhost = a\n\n[tunnel b1]\nhost = b\n", {"test.ini:4:", "appears twice", ""}},
        {"[tunnel b1]\nhost = a\nhost = b\n", {"test.ini:3:", "set twice", "line 2"}},
        {"[postgres p]\nhost=h\nuser=u\ndbname=d\npassword = hunter2\n",
         {"test.ini:5:", "password_file", "password_env"}},
        {"[postgres p]\nhost=h\nuser=u\ndbname=d\nvia = tunnel nope\n",
         {"test.ini:1:", "no [tunnel nope] section", ""}},
        {"[postgres p]\nhost=h\nuser=u\ndbname=d\nvia = carrier pigeon\n",
         {"test.ini:5:", "tunnel NAME", "direct"}},
        {"[postgres p]\nhost=h\nuser=u\ndbname=d\nsslmode = maybe\n",
         {"test.ini:5:", "verify-full", "maybe"}},
        {"[source s]\nconnection = nope\npublication = p\n",
         {"test.ini:1:", "no [postgres nope] section", ""}},
        {"[source s]\nconnection = p\n[postgres p]\nhost=h\nuser=u\ndbname=d\n",
         {"test.ini:1:", "no publication", ""}},
        {"[source s]\nsnapshot_workers = 0\n", {"test.ini:2:", "1 to 16", ""}},
        {"state_dir = /x\n", {"test.ini:1:", "outside any section", ""}},
        {"[walgate]\nthis line is wrong\n", {"test.ini:2:", "not a valid line", ""}},
        {"[walgate]\nlog_level = loud\n", {"test.ini:2:", "error, warn, info, debug", ""}},
        {"[tunnel bad/name]\nhost=h\n", {"test.ini:1:", "letters, digits", ""}},
        {"[postgres p]\nhost=h\nuser=u\ndbname=d\ntarget_session_attrs = writable\n",
         {"test.ini:5:", "read-write", "writable"}},
        {"[tunnel b]\nhost=b\n[postgres p]\nhost=h1,h2\nuser=u\ndbname=d\nvia = tunnel b\n",
         {"test.ini:3:", "several hosts", "without via"}},
        {"[postgres p]\nhost=h\nuser=u\ndbname=d\nstandbys = nope\n",
         {"test.ini:1:", "standbys = nope", "no other [postgres nope]"}},
        {"[postgres p]\nhost=h\nuser=u\ndbname=d\nstandbys = p\n",
         {"test.ini:1:", "standbys = p", ""}},
        {"[source s]\nfailover = maybe\n", {"test.ini:2:", "true, false", "maybe"}},
    };
    for (size_t i = 0; i < WG_ARRAY_LEN(cases); i++) {
        wg_error err;
        cli_config *c = parse(cases[i].text, &err);
        CHECK(c == NULL);
        cli_config_free(c);
        CHECK_EQ_INT(err.code, WG_ERR_CONFIG);
        for (int w = 0; w < 3; w++)
            CHECK_CONTAINS(err.msg, cases[i].want[w]);
    }
}

TEST(inline_password_value_is_never_echoed)
{
    wg_error err;
    cli_config *c =
        parse("[postgres p]\nhost=h\nuser=u\ndbname=d\npassword = s3cr3t-value\n", &err);
    CHECK(c == NULL);
    CHECK(strstr(err.msg, "s3cr3t-value") == NULL);
}

TEST(password_file_mode_is_checked)
{
    char path[] = "/tmp/walgate-test-pwXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "pw\n", 3) == 3);
    close(fd);
    chmod(path, 0644);
    char text[512];
    snprintf(text, sizeof(text), "[postgres p]\nhost=h\nuser=u\ndbname=d\npassword_file = %s\n",
             path);
    wg_error err;
    cli_config *c = parse(text, &err);
    CHECK(c == NULL);
    CHECK_CONTAINS(err.msg, "chmod 600");
    CHECK_CONTAINS(err.msg, path);
    chmod(path, 0600);
    c = parse(text, &err);
    CHECK(c != NULL);
    cli_config_free(c);
    unlink(path);
}

TEST(missing_file_says_pass_c)
{
    wg_error err;
    cli_config *c = cli_config_load("/nonexistent/walgate.ini", &err);
    CHECK(c == NULL);
    CHECK_CONTAINS(err.msg, "-c FILE");
}

TEST(long_lists_and_comments)
{
    wg_buf b = {0};
    wg_buf_puts(&b, "# comment\n; another\n[postgres p]\nhost=h ; inline\nuser=u\ndbname=d\n"
                    "[source s]\nconnection=p\npublication=pub\ntext_columns = ");
    for (int i = 0; i < 300; i++)
        wg_buf_printf(&b, "%spublic.t%d.col", i ? ", " : "", i);
    wg_buf_puts(&b, "\n");
    wg_error err;
    cli_config *c = parse(b.data, &err);
    CHECK(c != NULL);
    if (c) {
        CHECK_EQ_STR(cli_config_postgres(c, "p")->cfg.host, "h");
        CHECK_EQ_STR(cli_config_source(c, "s")->cfg.text_columns[299], "public.t299.col");
    }
    cli_config_free(c);
    wg_buf_free(&b);
}

TEST(bom_unclosed_header_and_nul)
{
    wg_error err;
    cli_config *c = parse("\xEF\xBB\xBF[tunnel b]\nhost = h\n", &err);
    CHECK(c != NULL);
    cli_config_free(c);

    c = parse("[tunnel b1\nhost = h\n", &err);
    CHECK(c == NULL);
    CHECK_CONTAINS(err.msg, ":1:");
    CHECK_CONTAINS(err.msg, "no closing ']'");

    c = parse("[tunnel b1]x\nhost = h\n", &err);
    CHECK(c == NULL);
    CHECK_CONTAINS(err.msg, "after the section header");

    char path[] = "/tmp/walgate-test-nul-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    static const char text[] = "[tunnel b]\nhost = h\n\0port = 99999\n";
    CHECK(write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1));
    close(fd);
    c = cli_config_load(path, &err);
    CHECK(c == NULL);
    CHECK_CONTAINS(err.msg, ":3: line contains a NUL byte");
    unlink(path);
}

TEST_MAIN()
