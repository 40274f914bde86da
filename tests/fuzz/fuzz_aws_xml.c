/*
 * fuzz_aws_xml.c — libFuzzer target: arbitrary bytes as an AWS API response body, handed to
 * every parser privatelink uses (DescribeVpcEndpoints, DescribeAvailabilityZones,
 * GetCallerIdentity, error documents). Must never crash, leak or read outside the input, and
 * every failure must come with a message.
 */
#include "privatelink/privatelink_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy (no NUL), so ASan catches any read past the end. */
    char *body = malloc(size ? size : 1);
    if (!body)
        return 0;
    if (size)
        memcpy(body, data, size);

    wg_error err = {0};
    pl_vpce_info info;
    int rc = pl_xml_describe_endpoints(body, size, &info, &err);
    if (rc != 0 && !err.msg[0])
        abort();
    if (rc == 0 && (!info.id[0] || !info.state[0] || info.n_dns > WG_ARRAY_LEN(info.dns_names)))
        abort();

    char arn[256];
    wg_error_clear(&err);
    rc = pl_xml_caller_identity(body, size, arn, sizeof(arn), &err);
    if (rc != 0 && !err.msg[0])
        abort();
    if (rc == 0 && strlen(arn) >= sizeof(arn))
        abort();

    pl_az_pair pairs[4];
    wg_error_clear(&err);
    int n = pl_xml_availability_zones(body, size, pairs, 4, &err);
    if (n > 4 || (n < 0 && !err.msg[0]))
        abort();

    wg_error_clear(&err);
    if (pl_xml_error(body, size, 400, &err) == 0 || !err.msg[0])
        abort();
    free(body);
    return 0;
}
