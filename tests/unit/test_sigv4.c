/*
 * test_sigv4.c — SigV4 against the public AWS signature test suite (tests/data/sigv4/, see
 * SOURCE.md there): for every NAME.req, the canonical request, the string to sign and the
 * Authorization header must equal NAME.creq, NAME.sts and NAME.authz byte for byte.
 */
#include "privatelink/privatelink_internal.h"
#include "test.h"

#include <dirent.h>

#define SUITE_KEY "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_TOKEN "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"
#define SUITE_DATE "20150830T123600Z"

static const char *data_dir(void)
{
    const char *d = getenv("WALGATE_TEST_DATA");
    return d ? d : "tests/data";
}

static int read_text(const char *dir, const char *name, const char *ext, wg_buf *out)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/sigv4/%s.%s", dir, name, ext);
    wg_error err = {0};
    return wg_read_file(path, 1 << 20, out, &err);
}

/* Sign one vector; returns the number of mismatches. */
static int run_vector(const char *name)
{
    wg_buf req = {0}, creq = {0}, sts = {0}, authz = {0}, got_creq = {0}, got_sts = {0},
           got_authz = {0};
    int bad = 0;
    if (read_text(data_dir(), name, "req", &req) != 0 ||
        read_text(data_dir(), name, "creq", &creq) != 0 ||
        read_text(data_dir(), name, "sts", &sts) != 0 ||
        read_text(data_dir(), name, "authz", &authz) != 0) {
        fprintf(stderr, "%s: missing vector files\n", name);
        return 1;
    }
    /* Request line. */
    char *text = req.data;
    char *eol = strchr(text, '\n');
    CHECK(eol != NULL);
    if (!eol)
        return 1;
    *eol = '\0';
    char method[16], target[1024];
    CHECK(sscanf(text, "%15s %1023s", method, target) == 2);
    char *q = strchr(target, '?');
    if (q)
        *q++ = '\0';
    /* Headers until an empty line; then the body. */
    pl_http_header hs[32];
    size_t nh = 0;
    char *p = eol + 1, *body = NULL;
    while (p && *p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        if (*p == '\0') {
            body = nl ? nl + 1 : NULL;
            break;
        }
        char *colon = strchr(p, ':');
        if (colon && nh < 31) {
            *colon = '\0';
            hs[nh].name = p;
            hs[nh].value = colon + 1;
            nh++;
        }
        p = nl ? nl + 1 : NULL;
    }
    if (strcmp(name, "get-vanilla-with-session-token") == 0)
        hs[nh++] = (pl_http_header){"X-Amz-Security-Token", SUITE_TOKEN};
    pl_sigv4_req r = {.method = method,
                      .path = target,
                      .query = q,
                      .headers = hs,
                      .n_headers = nh,
                      .body = body,
                      .body_len = body ? strlen(body) : 0};
    CHECK(pl_sigv4_sign(&r, SUITE_KEY, SUITE_SECRET, "us-east-1", "service", SUITE_DATE, &got_authz,
                        &got_creq, &got_sts) == 0);
    if (!got_creq.data || strcmp(got_creq.data, creq.data) != 0) {
        fprintf(stderr, "%s: canonical request\n--- got\n%s\n--- want\n%s\n", name,
                got_creq.data ? got_creq.data : "", creq.data);
        bad++;
    }
    if (!got_sts.data || strcmp(got_sts.data, sts.data) != 0) {
        fprintf(stderr, "%s: string to sign differs\n", name);
        bad++;
    }
    if (!got_authz.data || strcmp(got_authz.data, authz.data) != 0) {
        fprintf(stderr, "%s: authorization\n--- got\n%s\n--- want\n%s\n", name,
                got_authz.data ? got_authz.data : "", authz.data);
        bad++;
    }
    wg_buf_free(&req);
    wg_buf_free(&creq);
    wg_buf_free(&sts);
    wg_buf_free(&authz);
    wg_buf_free(&got_creq);
    wg_buf_free(&got_sts);
    wg_buf_free(&got_authz);
    return bad;
}

TEST(aws_test_suite_vectors)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/sigv4", data_dir());
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    if (!d)
        return;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".req") != 0)
            continue;
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(l - 4), de->d_name);
        int bad = run_vector(name);
        if (bad)
            fprintf(stderr, "vector %s: %d mismatch(es)\n", name, bad);
        g_failures += bad;
        n++;
    }
    closedir(d);
    printf("%d vectors\n", n);
    CHECK(n >= 20);
}

TEST(signing_is_deterministic_and_depends_on_every_input)
{
    pl_http_header hs[] = {{"Host", "ec2.us-east-1.amazonaws.com"}, {"X-Amz-Date", SUITE_DATE}};
    pl_sigv4_req r = {.method = "POST",
                      .path = "/",
                      .headers = hs,
                      .n_headers = 2,
                      .body = "Action=X",
                      .body_len = 8};
    wg_buf a = {0}, b = {0}, c = {0};
    CHECK(pl_sigv4_sign(&r, "AK", "SECRET", "us-east-1", "ec2", SUITE_DATE, &a, NULL, NULL) == 0);
    CHECK(pl_sigv4_sign(&r, "AK", "SECRET", "us-east-1", "ec2", SUITE_DATE, &b, NULL, NULL) == 0);
    CHECK_EQ_STR(a.data, b.data);
    r.body = "Action=Y";
    CHECK(pl_sigv4_sign(&r, "AK", "SECRET", "us-east-1", "ec2", SUITE_DATE, &c, NULL, NULL) == 0);
    CHECK(strcmp(a.data, c.data) != 0);
    CHECK(strstr(a.data, "SECRET") == NULL);
    wg_buf_free(&a);
    wg_buf_free(&b);
    wg_buf_free(&c);
}

TEST_MAIN()
