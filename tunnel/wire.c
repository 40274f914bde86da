/*
 * wire.c — the server's identification line and KEXINIT, read as they pass to libssh2 (see
 * wire_internal.h). Every length from the network goes through the bounds-checked reader.
 */
#include "tunnel/wire_internal.h"

#include <string.h>

size_t ssh_ident_feed(ssh_ident *id, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && id->state == SSH_IDENT_READING) {
        uint8_t c = p[i++];
        if (c == '\n') {
            if (id->len == 0)
                continue; /* blank lines before the identification */
            id->state = strncmp(id->line, "SSH-", 4) == 0 && memchr(id->line, '\0', id->len) == NULL
                            ? SSH_IDENT_OK
                            : SSH_IDENT_NOT_SSH;
            break;
        }
        if (c == '\r')
            continue; /* the CR of CR LF; a lone CR inside the line is dropped too */
        id->line[id->len++] = (char)c;
        id->line[id->len] = '\0';
        /* With the CR LF still to come, a line this long is already over the limit. */
        if (id->len > SSH_IDENT_MAX - 2)
            id->state = SSH_IDENT_TOO_LONG;
    }
    return i;
}

/* One SSH name-list: uint32 length, then that many bytes of comma-separated ASCII names. */
static int rd_namelist(wg_rd *r, const char **s, size_t *n)
{
    const uint8_t *p;
    if (wg_rd_sshstr(r, &p, n) != 0)
        return -1;
    *s = (const char *)p;
    return 0;
}

int ssh_kexinit_parse(const uint8_t *p, size_t n, ssh_kexinit *out)
{
    memset(out, 0, sizeof(*out));
    wg_rd r;
    wg_rd_init(&r, p, n);
    uint32_t plen;
    uint8_t pad;
    if (wg_rd_u32(&r, &plen) != 0 || wg_rd_u8(&r, &pad) != 0)
        return -1;
    /* RFC 4253 6.1: packets up to 35000 bytes must be accepted; padding is 4..255 bytes. */
    if (plen < 1 + (uint32_t)pad + 1 || plen > 35000)
        return -1;
    const uint8_t *payload;
    size_t paylen = plen - 1 - pad;
    if (wg_rd_bytes(&r, paylen, &payload) != 0)
        return -1;
    wg_rd k;
    wg_rd_init(&k, payload, paylen);
    uint8_t type;
    const uint8_t *cookie;
    if (wg_rd_u8(&k, &type) != 0 || type != 20 /* SSH_MSG_KEXINIT */ ||
        wg_rd_bytes(&k, 16, &cookie) != 0)
        return -1;
    if (rd_namelist(&k, &out->kex, &out->kex_len) != 0 ||
        rd_namelist(&k, &out->hostkey, &out->hostkey_len) != 0 ||
        rd_namelist(&k, &out->enc_cs, &out->enc_cs_len) != 0 ||
        rd_namelist(&k, &out->enc_sc, &out->enc_sc_len) != 0 ||
        rd_namelist(&k, &out->mac_cs, &out->mac_cs_len) != 0 ||
        rd_namelist(&k, &out->mac_sc, &out->mac_sc_len) != 0)
        return -1;
    return 0;
}

bool ssh_namelist_overlap(const char *a, size_t alen, const char *b)
{
    size_t i = 0;
    while (i < alen) {
        size_t j = i;
        while (j < alen && a[j] != ',')
            j++;
        size_t wl = j - i;
        if (wl > 0) {
            for (const char *q = b; *q;) {
                const char *e = strchr(q, ',');
                size_t ql = e ? (size_t)(e - q) : strlen(q);
                if (ql == wl && memcmp(q, a + i, wl) == 0)
                    return true;
                q += ql + (e ? 1 : 0);
            }
        }
        i = j + 1;
    }
    return false;
}
