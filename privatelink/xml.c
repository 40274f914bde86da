/*
 * xml.c — the AWS query-API responses walgate reads, parsed with libexpat: EC2
 * DescribeVpcEndpoints and DescribeAvailabilityZones, STS GetCallerIdentity, and the error
 * documents of both (<Response><Errors><Error> and <ErrorResponse><Error>), which become one
 * clear message with the remedy when the code is a known one. Documents with a DTD are
 * refused; text is bounded; nothing is trusted to be well formed.
 */
#include "privatelink/privatelink_internal.h"

#include <expat.h>
#include <stdio.h>
#include <string.h>

#define XML_MAX_DEPTH 32
#define XML_TEXT_MAX 1024

typedef struct xml_walk xml_walk;
/* Called at every element end with its path ("a/b/c", local names) and its text. */
typedef void (*xml_end_fn)(xml_walk *w, const char *path, const char *text);

struct xml_walk {
    XML_Parser p;
    char path[XML_MAX_DEPTH * 64];
    size_t path_len[XML_MAX_DEPTH + 1];
    int depth;
    char text[XML_TEXT_MAX];
    size_t text_len;
    bool bad;
    char why[128];
    xml_end_fn on_end;
    void *user;
    /* Error documents. */
    char err_code[128];
    char err_msg[512];
    bool is_error;
};

static const char *local_name(const char *n)
{
    const char *c = strrchr(n, ':');
    return c ? c + 1 : n;
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    xml_walk *w = ud;
    (void)atts;
    const char *ln = local_name(name);
    size_t cur = w->path_len[w->depth];
    size_t ll = strlen(ln);
    if (w->depth >= XML_MAX_DEPTH || cur + ll + 2 >= sizeof(w->path)) {
        w->bad = true;
        snprintf(w->why, sizeof(w->why), "elements nested deeper than %d", XML_MAX_DEPTH);
        XML_StopParser(w->p, XML_FALSE);
        return;
    }
    if (w->depth > 0)
        w->path[cur++] = '/';
    memcpy(w->path + cur, ln, ll);
    cur += ll;
    w->path[cur] = '\0';
    w->depth++;
    w->path_len[w->depth] = cur;
    w->text_len = 0;
    w->text[0] = '\0';
    if (w->depth == 1 && (strcmp(ln, "Response") == 0 || strcmp(ln, "ErrorResponse") == 0))
        w->is_error = true;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    xml_walk *w = ud;
    size_t n = (size_t)len;
    if (w->text_len + n >= sizeof(w->text))
        n = sizeof(w->text) - 1 - w->text_len; /* longer text is cut; no field needs more */
    memcpy(w->text + w->text_len, s, n);
    w->text_len += n;
    w->text[w->text_len] = '\0';
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    xml_walk *w = ud;
    (void)name;
    if (w->depth <= 0)
        return;
    /* Trim surrounding white space of the text. */
    char *t = w->text;
    while (*t == ' ' || *t == '\n' || *t == '\r' || *t == '\t')
        t++;
    size_t n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == '\t'))
        t[--n] = '\0';
    const char *leaf = strrchr(w->path, '/');
    leaf = leaf ? leaf + 1 : w->path;
    if (w->is_error && strstr(w->path, "Error/")) {
        if (strcmp(leaf, "Code") == 0)
            snprintf(w->err_code, sizeof(w->err_code), "%s", t);
        else if (strcmp(leaf, "Message") == 0)
            snprintf(w->err_msg, sizeof(w->err_msg), "%s", t);
    }
    if (w->on_end)
        w->on_end(w, w->path, t);
    w->depth--;
    w->path[w->path_len[w->depth]] = '\0';
    w->text_len = 0;
    w->text[0] = '\0';
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal)
{
    xml_walk *w = ud;
    (void)name, (void)sysid, (void)pubid, (void)has_internal;
    w->bad = true;
    snprintf(w->why, sizeof(w->why), "a document type declaration (refused)");
    XML_StopParser(w->p, XML_FALSE);
}

/* Parse the whole body; returns 0 or WG_ERR_PROTO with a message in err. */
static int xml_run(xml_walk *w, const char *body, size_t len, const char *what, wg_error *err)
{
    if (!body || len == 0)
        return wg_error_set(err, WG_ERR_PROTO, "%s: the response body is empty", what);
    if (len > (64u << 20))
        return wg_error_set(err, WG_ERR_PROTO, "%s: the response is too large", what);
    w->p = XML_ParserCreate("UTF-8");
    if (!w->p)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    XML_SetUserData(w->p, w);
    XML_SetElementHandler(w->p, on_start, on_end);
    XML_SetCharacterDataHandler(w->p, on_text);
    XML_SetStartDoctypeDeclHandler(w->p, on_doctype);
    int rc = 0;
    if (XML_Parse(w->p, body, (int)len, XML_TRUE) == XML_STATUS_ERROR || w->bad) {
        if (w->bad)
            rc = wg_error_set(err, WG_ERR_PROTO, "%s: AWS sent a response walgate refuses: %s",
                              what, w->why);
        else
            rc = wg_error_set(err, WG_ERR_PROTO,
                              "%s: AWS sent a response that is not valid XML (line %lu: %s)", what,
                              (unsigned long)XML_GetCurrentLineNumber(w->p),
                              XML_ErrorString(XML_GetErrorCode(w->p)));
    }
    XML_ParserFree(w->p);
    w->p = NULL;
    return rc;
}

static const char *remedy_for(const char *code)
{
    static const struct {
        const char *code, *remedy;
    } known[] = {
        {"RequestExpired", "the request or the credentials expired: refresh the AWS credentials "
                           "and check that this host's clock is right (NTP)"},
        {"ExpiredToken", "the session token expired: refresh the AWS credentials (a new "
                         "AWS_SESSION_TOKEN, or let the instance role provide them)"},
        {"ExpiredTokenException", "the session token expired: refresh the AWS credentials"},
        {"RequestLimitExceeded", "AWS throttled the call; walgate tries again at the next "
                                 "interval (raise resolve_interval if this persists)"},
        {"Throttling", "AWS throttled the call; walgate tries again at the next interval"},
        {"ThrottlingException", "AWS throttled the call; walgate tries again at the next interval"},
        {"AuthFailure", "AWS did not accept the credentials: check the access key and secret "
                        "(environment, shared credentials profile or instance role)"},
        {"InvalidClientTokenId", "AWS does not know the access key: check the credentials"},
        {"SignatureDoesNotMatch", "the secret key does not match the access key: check the "
                                  "credentials"},
        {"UnauthorizedOperation", "the principal may not call this API: allow "
                                  "ec2:DescribeVpcEndpoints and ec2:DescribeAvailabilityZones"},
        {"AccessDenied", "the principal is not allowed to make this call: check its IAM policy"},
        {"InvalidVpcEndpointId.NotFound", "no such VPC endpoint in this region: check "
                                          "endpoint_id and region"},
        {"InvalidVpcEndpointId.Malformed", "endpoint_id must look like vpce-0123456789abcdef0"},
    };
    for (size_t i = 0; i < WG_ARRAY_LEN(known); i++)
        if (strcmp(code, known[i].code) == 0)
            return known[i].remedy;
    return NULL;
}

static int error_from_walk(const xml_walk *w, const char *what, long http_status, wg_error *err)
{
    const char *remedy = remedy_for(w->err_code);
    int code = WG_ERR_PROTO;
    if (strstr(w->err_code, "Expired") || strstr(w->err_code, "Auth") ||
        strstr(w->err_code, "Signature") || strstr(w->err_code, "ClientToken") ||
        strstr(w->err_code, "Denied") || strstr(w->err_code, "Unauthorized"))
        code = WG_ERR_AUTH;
    else if (strstr(w->err_code, "Throttl") || strstr(w->err_code, "LimitExceeded"))
        code = WG_ERR_AGAIN;
    else if (strstr(w->err_code, "NotFound"))
        code = WG_ERR_NOTFOUND;
    char status[32] = "";
    if (http_status > 0)
        snprintf(status, sizeof(status), "HTTP %ld, ", http_status);
    return wg_error_set(err, code, "%s%sAWS refused the call (%s%s): %s%s%s", what ? what : "",
                        what ? ": " : "", status, w->err_code[0] ? w->err_code : "no error code",
                        w->err_msg[0] ? w->err_msg : "no message", remedy ? "; " : "",
                        remedy ? remedy : "");
}

int pl_xml_error(const char *body, size_t len, long http_status, wg_error *err)
{
    xml_walk w = {0};
    int rc = xml_run(&w, body, len, "AWS error response", err);
    if (rc != 0) {
        char copy[WG_ERROR_MSG_MAX];
        snprintf(copy, sizeof(copy), "%s", err ? err->msg : "");
        return wg_error_set(err, WG_ERR_PROTO,
                            "AWS answered HTTP %ld with a body that is not an "
                            "AWS error document (%s)",
                            http_status, copy);
    }
    return error_from_walk(&w, NULL, http_status, err);
}

/* ---- DescribeVpcEndpoints ------------------------------------------------------------- */

typedef struct vpce_walk {
    pl_vpce_info *out;
    int items; /* vpcEndpointSet items seen */
} vpce_walk;

static void vpce_end(xml_walk *w, const char *path, const char *text)
{
    vpce_walk *v = w->user;
    const char *set = strstr(path, "vpcEndpointSet/item");
    if (!set)
        return;
    const char *rest = set + strlen("vpcEndpointSet/item");
    if (*rest == '\0') {
        v->items++;
        return;
    }
    if (v->items > 0)
        return; /* only the first endpoint (we ask for one id) */
    pl_vpce_info *o = v->out;
    if (strcmp(rest, "/vpcEndpointId") == 0)
        snprintf(o->id, sizeof(o->id), "%s", text);
    else if (strcmp(rest, "/state") == 0)
        snprintf(o->state, sizeof(o->state), "%s", text);
    else if (strcmp(rest, "/serviceName") == 0)
        snprintf(o->service_name, sizeof(o->service_name), "%s", text);
    else if (strcmp(rest, "/vpcId") == 0)
        snprintf(o->vpc_id, sizeof(o->vpc_id), "%s", text);
    else if (strcmp(rest, "/dnsEntrySet/item/dnsName") == 0 &&
             o->n_dns < WG_ARRAY_LEN(o->dns_names))
        snprintf(o->dns_names[o->n_dns++], sizeof(o->dns_names[0]), "%s", text);
}

int pl_xml_describe_endpoints(const char *body, size_t len, pl_vpce_info *out, wg_error *err)
{
    memset(out, 0, sizeof(*out));
    vpce_walk v = {.out = out};
    xml_walk w = {.on_end = vpce_end, .user = &v};
    int rc = xml_run(&w, body, len, "DescribeVpcEndpoints", err);
    if (rc != 0)
        return rc;
    if (w.is_error)
        return error_from_walk(&w, "DescribeVpcEndpoints", 0, err);
    if (v.items == 0)
        return wg_error_set(err, WG_ERR_NOTFOUND,
                            "DescribeVpcEndpoints: AWS lists no such VPC endpoint; check "
                            "endpoint_id and region");
    if (!out->id[0] || !out->state[0])
        return wg_error_set(err, WG_ERR_PROTO,
                            "DescribeVpcEndpoints: the answer has no vpcEndpointId or state");
    return 0;
}

/* ---- GetCallerIdentity ---------------------------------------------------------------- */

typedef struct ident_walk {
    char *arn;
    size_t len;
    bool found;
} ident_walk;

static void ident_end(xml_walk *w, const char *path, const char *text)
{
    ident_walk *iw = w->user;
    if (strcmp(path, "GetCallerIdentityResponse/GetCallerIdentityResult/Arn") == 0) {
        snprintf(iw->arn, iw->len, "%s", text);
        iw->found = text[0] != '\0';
    }
}

int pl_xml_caller_identity(const char *body, size_t len, char *arn, size_t arnlen, wg_error *err)
{
    if (arnlen)
        arn[0] = '\0';
    ident_walk iw = {.arn = arn, .len = arnlen};
    xml_walk w = {.on_end = ident_end, .user = &iw};
    int rc = xml_run(&w, body, len, "GetCallerIdentity", err);
    if (rc != 0)
        return rc;
    if (w.is_error)
        return error_from_walk(&w, "GetCallerIdentity", 0, err);
    if (!iw.found)
        return wg_error_set(err, WG_ERR_PROTO, "GetCallerIdentity: the answer has no Arn");
    return 0;
}

/* ---- DescribeAvailabilityZones -------------------------------------------------------- */

typedef struct az_walk {
    pl_az_pair *out;
    size_t max, n;
    pl_az_pair cur;
} az_walk;

static void az_end(xml_walk *w, const char *path, const char *text)
{
    az_walk *a = w->user;
    const char *set = strstr(path, "availabilityZoneInfo/item");
    if (!set)
        return;
    const char *rest = set + strlen("availabilityZoneInfo/item");
    if (strcmp(rest, "/zoneName") == 0)
        snprintf(a->cur.name, sizeof(a->cur.name), "%s", text);
    else if (strcmp(rest, "/zoneId") == 0)
        snprintf(a->cur.id, sizeof(a->cur.id), "%s", text);
    else if (*rest == '\0') {
        if (a->cur.name[0] && a->cur.id[0] && a->n < a->max)
            a->out[a->n++] = a->cur;
        memset(&a->cur, 0, sizeof(a->cur));
    }
}

int pl_xml_availability_zones(const char *body, size_t len, pl_az_pair *out, size_t max,
                              wg_error *err)
{
    az_walk a = {.out = out, .max = max};
    xml_walk w = {.on_end = az_end, .user = &a};
    int rc = xml_run(&w, body, len, "DescribeAvailabilityZones", err);
    if (rc != 0)
        return rc;
    if (w.is_error)
        return error_from_walk(&w, "DescribeAvailabilityZones", 0, err);
    return (int)a.n;
}
