/*
 * aws.c — the AWS API calls of privatelink over libcurl: credentials (environment, shared
 * credentials file profile, IMDSv2), SigV4-signed query-API POSTs to EC2 and STS, and the
 * three calls walgate makes: DescribeVpcEndpoints, DescribeAvailabilityZones and
 * GetCallerIdentity. Secrets stay in wg_secret and go only into the signature.
 */
#include "privatelink/privatelink_internal.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void pl_aws_creds_clear(pl_aws_creds *c)
{
    wg_secret_free(c->secret);
    wg_secret_free(c->token);
    memset(c, 0, sizeof(*c));
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    wg_buf *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > (16u << 20))
        return 0; /* no AWS answer we read is this large */
    return wg_buf_append(b, ptr, n) == 0 ? n : 0;
}

/* libcurl calls this about once a second during a transfer (more often while bytes move): a
 * stop ends a request to an API that accepted it and went quiet, instead of waiting out the
 * request timeout. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return pl_cancelled(ud) ? 1 : 0;
}

static void watch_cancel(CURL *c, const pl_cancel *cancel)
{
    if (!cancel)
        return;
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)cancel);
}

/* ---- Credentials ---------------------------------------------------------------------- */

static int creds_from_env(pl_aws_creds *out)
{
    const char *ak = getenv("AWS_ACCESS_KEY_ID");
    const char *sk = getenv("AWS_SECRET_ACCESS_KEY");
    if (!ak || !*ak || !sk || !*sk)
        return 1;
    snprintf(out->access_key, sizeof(out->access_key), "%s", ak);
    out->secret = wg_secret_new(sk, strlen(sk));
    const char *tok = getenv("AWS_SESSION_TOKEN");
    if (tok && *tok)
        out->token = wg_secret_new(tok, strlen(tok));
    snprintf(out->source, sizeof(out->source), "environment");
    return out->secret ? 0 : -1;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static int creds_from_file(const char *profile, pl_aws_creds *out, wg_error *err)
{
    char path[4096];
    const char *f = getenv("AWS_SHARED_CREDENTIALS_FILE");
    if (f && *f)
        snprintf(path, sizeof(path), "%s", f);
    else if (getenv("HOME"))
        snprintf(path, sizeof(path), "%s/.aws/credentials", getenv("HOME"));
    else
        return 1;
    wg_buf text = {0};
    wg_error e = {0};
    if (wg_read_file(path, 1 << 20, &text, &e) != 0) {
        wg_buf_free(&text);
        return 1; /* no file: try the next source */
    }
    bool in = false;
    char ak[128] = "";
    wg_secret *sk = NULL, *tok = NULL;
    char *save = NULL;
    for (char *line = strtok_r(text.data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *l = trim(line);
        if (*l == '#' || *l == ';' || !*l)
            continue;
        if (*l == '[') {
            char *close = strchr(l, ']');
            if (close)
                *close = '\0';
            char *name = trim(l + 1);
            if (strncmp(name, "profile ", 8) == 0)
                name = trim(name + 8);
            in = strcmp(name, profile) == 0;
            continue;
        }
        char *eq = strchr(l, '=');
        if (!in || !eq)
            continue;
        *eq = '\0';
        char *k = trim(l), *v = trim(eq + 1);
        if (strcmp(k, "aws_access_key_id") == 0)
            snprintf(ak, sizeof(ak), "%s", v);
        else if (strcmp(k, "aws_secret_access_key") == 0) {
            wg_secret_free(sk);
            sk = wg_secret_new(v, strlen(v));
        } else if (strcmp(k, "aws_session_token") == 0) {
            wg_secret_free(tok);
            tok = wg_secret_new(v, strlen(v));
        }
    }
    if (text.data)
        explicit_bzero(text.data, text.len);
    wg_buf_free(&text);
    if (!ak[0] || !sk) {
        wg_secret_free(sk);
        wg_secret_free(tok);
        if (ak[0] || sk)
            return wg_error_set(err, WG_ERR_CONFIG,
                                "AWS shared credentials file %s: profile %s lacks "
                                "aws_access_key_id or aws_secret_access_key",
                                path, profile);
        return 1;
    }
    snprintf(out->access_key, sizeof(out->access_key), "%s", ak);
    out->secret = sk;
    out->token = tok;
    snprintf(out->source, sizeof(out->source), "profile %s", profile);
    return 0;
}

/* The string value of "key" in a flat JSON object (no nested escapes beyond \" and \\). */
static int json_str(const char *json, const char *key, char *buf, size_t len)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *p = strstr(json, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p++ != ':')
        return -1;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p++ != '"')
        return -1;
    size_t n = 0;
    for (; *p && *p != '"'; p++) {
        if (*p == '\\' && p[1])
            p++;
        if (n + 1 >= len)
            return -1;
        buf[n++] = *p;
    }
    buf[n] = '\0';
    return *p == '"' ? 0 : -1;
}

/* Wipe and free a header list: its lines carry the IMDS token or the session token. */
static void free_headers(struct curl_slist *h)
{
    for (struct curl_slist *l = h; l; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(h);
}

/* 0, -1 (no answer: not on EC2, or no role), or WG_ERR_CANCELLED. */
static int imds_get(CURL *c, const char *url, const char *token, bool put, wg_buf *out)
{
    struct curl_slist *h = NULL;
    char hdr[1200];
    if (put) {
        h = curl_slist_append(h, "X-aws-ec2-metadata-token-ttl-seconds: 300");
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
    } else {
        snprintf(hdr, sizeof(hdr), "X-aws-ec2-metadata-token: %s", token);
        h = curl_slist_append(h, hdr);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    wg_buf_reset(out);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    free_headers(h);
    explicit_bzero(hdr, sizeof(hdr));
    if (rc == CURLE_ABORTED_BY_CALLBACK)
        return WG_ERR_CANCELLED;
    return rc == CURLE_OK && status == 200 && out->len > 0 ? 0 : -1;
}

static int creds_from_imds(const pl_cancel *cancel, pl_aws_creds *out, wg_error *err)
{
    const char *dis = getenv("AWS_EC2_METADATA_DISABLED");
    if (dis && strcmp(dis, "true") == 0)
        return 1;
    const char *base = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (!base || !*base)
        base = "http://169.254.169.254";
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    CURL *c = curl_easy_init();
    if (!c)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    watch_cancel(c, cancel);
    wg_buf b = {0};
    char url[1024], token[1024] = "", role[256], ak[128];
    int rc = 1, g = 0;
    snprintf(url, sizeof(url), "%.*s/latest/api/token", (int)bl, base);
    if ((g = imds_get(c, url, NULL, true, &b)) != 0 || b.len >= sizeof(token))
        goto out;
    snprintf(token, sizeof(token), "%s", trim(b.data));
    snprintf(url, sizeof(url), "%.*s/latest/meta-data/iam/security-credentials/", (int)bl, base);
    if ((g = imds_get(c, url, token, false, &b)) != 0)
        goto out;
    char *nl = strchr(b.data, '\n');
    if (nl)
        *nl = '\0';
    snprintf(role, sizeof(role), "%s", trim(b.data));
    if (!role[0] || strchr(role, '/'))
        goto out;
    snprintf(url, sizeof(url), "%.*s/latest/meta-data/iam/security-credentials/%s", (int)bl, base,
             role);
    if ((g = imds_get(c, url, token, false, &b)) != 0)
        goto out;
    char *sk = calloc(1, 4096), *tok = calloc(1, 8192);
    if (sk && tok && json_str(b.data, "AccessKeyId", ak, sizeof(ak)) == 0 &&
        json_str(b.data, "SecretAccessKey", sk, 4096) == 0) {
        snprintf(out->access_key, sizeof(out->access_key), "%s", ak);
        out->secret = wg_secret_new(sk, strlen(sk));
        if (json_str(b.data, "Token", tok, 8192) == 0 && tok[0])
            out->token = wg_secret_new(tok, strlen(tok));
        snprintf(out->source, sizeof(out->source), "instance metadata (role %.40s)", role);
        rc = 0;
    } else {
        rc = wg_error_set(err, WG_ERR_PROTO,
                          "instance metadata: the credentials of role %s are not in the expected "
                          "form",
                          role);
    }
    if (sk)
        explicit_bzero(sk, 4096);
    if (tok)
        explicit_bzero(tok, 8192);
    free(sk);
    free(tok);
out:
    if (rc == 1 && g == WG_ERR_CANCELLED)
        rc = wg_error_set(err, WG_ERR_CANCELLED, "instance metadata: cancelled (stopping)");
    if (b.data)
        explicit_bzero(b.data, b.len);
    wg_buf_free(&b);
    curl_easy_cleanup(c);
    explicit_bzero(token, sizeof(token));
    return rc;
}

int pl_aws_load_creds(const char *profile, const pl_cancel *cancel, pl_aws_creds *out,
                      wg_error *err)
{
    pthread_once(&g_curl_once, curl_init_once);
    memset(out, 0, sizeof(*out));
    if (!profile || !*profile)
        profile = getenv("AWS_PROFILE");
    if (!profile || !*profile)
        profile = "default";
    int rc = creds_from_env(out);
    if (rc <= 0)
        return rc == 0 ? 0 : wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    rc = creds_from_file(profile, out, err);
    if (rc <= 0)
        return rc;
    rc = creds_from_imds(cancel, out, err);
    if (rc <= 0)
        return rc;
    return wg_error_set(err, WG_ERR_AUTH,
                        "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY, add profile %s to ~/.aws/credentials "
                        "(or AWS_SHARED_CREDENTIALS_FILE), or run on an instance with a role",
                        profile);
}

/* ---- Signed calls --------------------------------------------------------------------- */

static void endpoint_url(const char *service, const char *region, char *buf, size_t len)
{
    const char *u =
        getenv(strcmp(service, "ec2") == 0 ? "AWS_ENDPOINT_URL_EC2" : "AWS_ENDPOINT_URL_STS");
    if (!u || !*u)
        u = getenv("AWS_ENDPOINT_URL");
    if (u && *u)
        snprintf(buf, len, "%s", u);
    else
        snprintf(buf, len, "https://%s.%s.amazonaws.com/", service, region);
}

int pl_aws_call(const char *service, const char *region, const pl_aws_creds *creds,
                const char *params, const pl_cancel *cancel, wg_buf *resp, long *http_status,
                wg_error *err)
{
    pthread_once(&g_curl_once, curl_init_once);
    char url[1024];
    endpoint_url(service, region, url, sizeof(url));
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *path = NULL;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        curl_url_cleanup(u);
        return wg_error_set(err, WG_ERR_CONFIG, "AWS %s endpoint URL %s is not a valid URL",
                            service, url);
    }
    curl_url_get(u, CURLUPART_PORT, &port, 0);
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        path = NULL;
    char hosthdr[600];
    snprintf(hosthdr, sizeof(hosthdr), "%s%s%s", host, port ? ":" : "", port ? port : "");
    char amz_date[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);
    const char *ctype = "application/x-www-form-urlencoded; charset=utf-8";
    pl_http_header hs[4] = {{"Content-Type", ctype}, {"Host", hosthdr}, {"X-Amz-Date", amz_date}};
    size_t nh = 3;
    if (creds->token)
        hs[nh++] = (pl_http_header){"X-Amz-Security-Token", wg_secret_reveal(creds->token)};
    pl_sigv4_req req = {.method = "POST",
                        .path = path ? path : "/",
                        .headers = hs,
                        .n_headers = nh,
                        .body = params,
                        .body_len = strlen(params)};
    wg_buf authz = {0}, line = {0};
    struct curl_slist *list = NULL;
    CURL *c = NULL;
    int rc = 0;
    if (pl_sigv4_sign(&req, creds->access_key, wg_secret_reveal(creds->secret), region, service,
                      amz_date, &authz, NULL, NULL) != 0) {
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory while signing");
        goto out;
    }
    for (size_t i = 0; i < nh; i++) {
        wg_buf_reset(&line);
        wg_buf_printf(&line, "%s: %s", hs[i].name, hs[i].value);
        list = curl_slist_append(list, line.data);
    }
    wg_buf_reset(&line);
    wg_buf_printf(&line, "Authorization: %s", authz.data);
    list = curl_slist_append(list, line.data);
    list = curl_slist_append(list, "Expect:");
    c = curl_easy_init();
    if (!c || !list) {
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, params);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(params));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "walgate/" WALGATE_VERSION);
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    watch_cancel(c, cancel);
    CURLcode cr = curl_easy_perform(c);
    if (cr == CURLE_ABORTED_BY_CALLBACK) {
        rc = wg_error_set(err, WG_ERR_CANCELLED, "AWS %s call cancelled (stopping)", service);
        goto out;
    }
    if (cr != CURLE_OK) {
        rc = wg_error_set(err, WG_ERR_NET, "could not reach AWS %s at %s: %s", service, url,
                          ebuf[0] ? ebuf : curl_easy_strerror(cr));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, http_status);
out:
    if (line.data)
        explicit_bzero(line.data, line.len);
    wg_buf_free(&line);
    wg_buf_free(&authz);
    free_headers(list);
    curl_easy_cleanup(c);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return rc;
}

/* Call, then turn a non-200 answer into the AWS error it carries. */
static int call_checked(const char *service, const char *region, const char *profile,
                        const char *params, const char *what, const pl_cancel *cancel, wg_buf *resp,
                        wg_error *err)
{
    pl_aws_creds creds;
    if (pl_aws_load_creds(profile, cancel, &creds, err) != 0)
        return wg_error_prefix(err, "%s", what), err->code;
    long status = 0;
    int rc = pl_aws_call(service, region, &creds, params, cancel, resp, &status, err);
    pl_aws_creds_clear(&creds);
    if (rc != 0)
        return wg_error_prefix(err, "%s", what), err->code;
    if (status != 200) {
        pl_xml_error(resp->data, resp->len, status, err);
        return wg_error_prefix(err, "%s", what), err->code;
    }
    return 0;
}

int pl_aws_describe(const char *region, const char *profile, const char *endpoint_id,
                    const pl_cancel *cancel, pl_vpce_info *out, wg_error *err)
{
    char params[256];
    snprintf(params, sizeof(params),
             "Action=DescribeVpcEndpoints&Version=2016-11-15&VpcEndpointId.1=%s", endpoint_id);
    wg_buf resp = {0};
    int rc =
        call_checked("ec2", region, profile, params, "DescribeVpcEndpoints", cancel, &resp, err);
    if (rc == 0)
        rc = pl_xml_describe_endpoints(resp.data, resp.len, out, err);
    wg_buf_free(&resp);
    return rc;
}

int pl_aws_describe_endpoint(const char *region, const char *profile, const char *endpoint_id,
                             pl_vpce_info *out, wg_error *err)
{
    return pl_aws_describe(region, profile, endpoint_id, NULL, out, err);
}

int pl_aws_caller_identity(const char *region, const char *profile, char *arn, size_t len,
                           wg_error *err)
{
    wg_buf resp = {0};
    int rc = call_checked("sts", region, profile, "Action=GetCallerIdentity&Version=2011-06-15",
                          "GetCallerIdentity", NULL, &resp, err);
    if (rc == 0)
        rc = pl_xml_caller_identity(resp.data, resp.len, arn, len, err);
    wg_buf_free(&resp);
    return rc;
}

int pl_aws_availability_zones(const char *region, const char *profile, const pl_cancel *cancel,
                              pl_az_pair *out, size_t max, wg_error *err)
{
    wg_buf resp = {0};
    int rc =
        call_checked("ec2", region, profile, "Action=DescribeAvailabilityZones&Version=2016-11-15",
                     "DescribeAvailabilityZones", cancel, &resp, err);
    if (rc == 0)
        rc = pl_xml_availability_zones(resp.data, resp.len, out, max, err);
    wg_buf_free(&resp);
    return rc;
}
