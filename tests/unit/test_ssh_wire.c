/* test_ssh_wire.c — the SSH identification line and KEXINIT watchers of tunnel/wire.c. */
#include "test.h"
#include "tunnel/wire_internal.h"

static ssh_ident feed_all(const char *s, size_t n, size_t chunk, size_t *used_total)
{
    ssh_ident id = {0};
    size_t off = 0;
    while (off < n && id.state == SSH_IDENT_READING) {
        size_t k = n - off < chunk ? n - off : chunk;
        off += ssh_ident_feed(&id, (const uint8_t *)s + off, k);
    }
    *used_total = off;
    return id;
}

TEST(identification_line)
{
    size_t used;
    ssh_ident id = feed_all("\r\nSSH-2.0-OpenSSH_9.2\r\nXYZ", 26, 1, &used);
    CHECK_EQ_INT(id.state, SSH_IDENT_OK);
    CHECK_EQ_STR(id.line, "SSH-2.0-OpenSSH_9.2");
    CHECK_EQ_INT(used, 23); /* the KEXINIT bytes after the line are not consumed */
    id = feed_all("SSH-2.0-x\r\nXYZ", 14, 64, &used);
    CHECK_EQ_INT(id.state, SSH_IDENT_OK);
    CHECK_EQ_INT(used, 11);
    id = feed_all("HTTP/1.1 400 Bad Request\r\n", 26, 3, &used);
    CHECK_EQ_INT(id.state, SSH_IDENT_NOT_SSH);
    char flood[1000];
    memset(flood, 'A', sizeof(flood));
    id = feed_all(flood, sizeof(flood), 1, &used);
    CHECK_EQ_INT(id.state, SSH_IDENT_TOO_LONG);
    CHECK(used <= SSH_IDENT_MAX);
    id = feed_all("SSH-2.0-\0x\n", 11, 1, &used); /* NUL inside the line */
    CHECK_EQ_INT(id.state, SSH_IDENT_NOT_SSH);
    id = feed_all("SSH-2.0-slow", 12, 1, &used);
    CHECK_EQ_INT(id.state, SSH_IDENT_READING);
}

static void put_list(wg_buf *b, const char *s)
{
    wg_buf_put_sshstr(b, s, strlen(s));
}

TEST(kexinit_lists)
{
    wg_buf pay = {0};
    wg_buf_putc(&pay, 20);
    wg_buf_append(&pay, "0123456789abcdef", 16);
    put_list(&pay, "curve25519-sha256");
    put_list(&pay, "rsa-sha2-512,rsa-sha2-256");
    put_list(&pay, "aes128-ctr");
    put_list(&pay, "aes128-ctr");
    put_list(&pay, "hmac-sha2-256");
    put_list(&pay, "hmac-sha2-256");
    for (int i = 0; i < 4; i++)
        put_list(&pay, "");
    wg_buf_append(&pay, "\0\0\0\0\0", 5);
    wg_buf pkt = {0};
    wg_buf_put_u32(&pkt, (uint32_t)(1 + pay.len + 4));
    wg_buf_putc(&pkt, 4);
    wg_buf_append(&pkt, pay.data, pay.len);
    wg_buf_append(&pkt, "\0\0\0\0", 4);
    ssh_kexinit k;
    CHECK_EQ_INT(ssh_kexinit_parse((const uint8_t *)pkt.data, pkt.len, &k), 0);
    CHECK_EQ_INT(k.hostkey_len, 25);
    CHECK(!ssh_namelist_overlap(k.hostkey, k.hostkey_len, "ssh-ed25519,ssh-rsa"));
    CHECK(ssh_namelist_overlap(k.hostkey, k.hostkey_len, "ssh-ed25519,rsa-sha2-256"));
    CHECK(!ssh_namelist_overlap(k.hostkey, k.hostkey_len, "rsa-sha2"));
    /* Short input and a wrong message type are refused. */
    for (size_t n = 0; n < pkt.len - 5; n++)
        CHECK(ssh_kexinit_parse((const uint8_t *)pkt.data, n, &k) != 0 || n >= pkt.len - 4);
    pkt.data[5] = 21;
    CHECK(ssh_kexinit_parse((const uint8_t *)pkt.data, pkt.len, &k) != 0);
    wg_buf_free(&pay);
    wg_buf_free(&pkt);
}

TEST_MAIN()
