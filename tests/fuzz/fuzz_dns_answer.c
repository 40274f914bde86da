/*
 * fuzz_dns_answer.c — libFuzzer target: arbitrary bytes as a DNS answer to an A and to an
 * AAAA query, handled the way privatelink handles what its resolver receives, then merged
 * into an ordered address list. Must never crash, leak, read outside the input or return more
 * addresses than asked for; every failure must come with a message.
 */
#include "privatelink/privatelink_internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65535)
        return 0;
    unsigned char *abuf = malloc(size ? size : 1);
    if (!abuf)
        return 0;
    if (size)
        memcpy(abuf, data, size);

    pl_name_result res[2];
    memset(res, 0, sizeof(res));
    snprintf(res[1].zone_id, sizeof(res[1].zone_id), "use1-az1");
    int ttl = -1;
    for (int r = 0; r < 2; r++) {
        for (int f = 0; f < 2; f++) {
            wg_error err = {0};
            int rc = pl_dns_handle_answer(abuf, (int)size, f ? AF_INET6 : AF_INET, res[r].addrs,
                                          r ? 3 : PL_MAX_ADDRS, &res[r].n, &ttl, &err);
            if (rc != 0 && !err.msg[0])
                abort();
        }
        if (res[r].n > PL_MAX_ADDRS || (r == 1 && res[r].n > 3))
            abort();
        for (size_t i = 0; i < res[r].n; i++) {
            unsigned char tmp[16];
            int fam = res[r].addrs[i].family;
            if ((fam != AF_INET && fam != AF_INET6) || inet_pton(fam, res[r].addrs[i].ip, tmp) != 1)
                abort();
        }
    }
    char *azs[] = {"use1-az1", NULL};
    pl_addr out[PL_MAX_ADDRS];
    size_t n = pl_merge_addrs(res, 2, azs, out, PL_MAX_ADDRS);
    if (n > res[0].n + res[1].n)
        abort();
    char set[512];
    pl_addr_set_string(out, n, set, sizeof(set));
    free(abuf);
    return 0;
}
