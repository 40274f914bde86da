/*
 * fuzz_ssh_wire.c — libFuzzer target: arbitrary bytes as what an SSH server sends first (its
 * identification line, then its KEXINIT), fed to the watchers in tunnel/wire.c in chunks whose
 * sizes come from the input. Must never crash, leak or read outside the input.
 */
#include "tunnel/wire_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] % 7 + 1; /* libssh2 reads the line 1 byte at a time */
    data++;
    size--;
    /* An exact-size heap copy, so ASan catches any read past the end. */
    uint8_t *p = malloc(size ? size : 1);
    if (!p)
        return 0;
    if (size)
        memcpy(p, data, size);
    ssh_ident id = {0};
    size_t off = 0;
    while (off < size && id.state == SSH_IDENT_READING) {
        size_t n = size - off < chunk ? size - off : chunk;
        size_t used = ssh_ident_feed(&id, p + off, n);
        if (used > n || id.len > SSH_IDENT_MAX)
            abort();
        off += used;
        if (used < n)
            break;
    }
    ssh_kexinit k;
    if (ssh_kexinit_parse(p + off, size - off, &k) == 0) {
        const char *lists[] = {k.kex, k.hostkey, k.enc_cs, k.enc_sc, k.mac_cs, k.mac_sc};
        const size_t lens[] = {k.kex_len,    k.hostkey_len, k.enc_cs_len,
                               k.enc_sc_len, k.mac_cs_len,  k.mac_sc_len};
        for (size_t i = 0; i < 6; i++) {
            if (lists[i] < (const char *)p || lists[i] + lens[i] > (const char *)p + size)
                abort();
            (void)ssh_namelist_overlap(lists[i], lens[i], "ssh-ed25519,aes128-ctr,hmac-sha2-256");
        }
    }
    free(p);
    return 0;
}
