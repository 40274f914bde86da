/* test_known_hosts.c — OpenSSH known_hosts lookups (tunnel/known_hosts.c) and kh_add. */
#include "tunnel/known_hosts_internal.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * A known-good vector made with OpenSSH 9.2 (Debian 12) at development time:
 *   ssh-keygen -q -t ed25519 -N '' -C vec -f hk
 *   awk '{print "bastion.example.com " $1 " " $2}' hk.pub > kh
 *   awk '{print "[bastion.example.com]:2222 " $1 " " $2}' hk.pub >> kh
 *   ssh-keygen -H -f kh            # hashes both lines in place
 *   ssh-keygen -lf hk.pub          # prints VEC_FP
 * `ssh-keygen -F bastion.example.com -f kh` finds line 1 and
 * `ssh-keygen -F '[bastion.example.com]:2222' -f kh` finds line 2.
 */
#define VEC_KEY "AAAAC3NzaC1lZDI1NTE5AAAAIJH2rVq89X7LyFLNuqTboLWhl/HyXHOdOFkPRxsV3J0V"
#define VEC_FP "SHA256:stdT24fVpEkAwjpirKVNzslVQAb1VQQv3tfm+x7tF24"
#define VEC_LINE_22                                                                                \
    "|1|N/sD2/SCsKVb0y9gTyOCPzNDea4=|ThKtgvkGL/H7ZjqG+PVx9WcIgtQ= ssh-ed25519 " VEC_KEY "\n"
#define VEC_LINE_2222                                                                              \
    "|1|p2d32tA/aHZzntnI6oH4otsHPcQ=|KaRcapetmiNAGDiruEAYvl/Jf/U= ssh-ed25519 " VEC_KEY "\n"

/* A fake public key blob: string type, string 32 bytes of `fill`. */
static void make_blob(wg_buf *b, const char *type, uint8_t fill)
{
    uint8_t k[32];
    memset(k, fill, sizeof(k));
    wg_buf_reset(b);
    wg_buf_put_sshstr(b, type, strlen(type));
    wg_buf_put_sshstr(b, k, sizeof(k));
}

/* "TYPE BASE64" for a blob made by make_blob. */
static void key_text(wg_buf *out, const char *type, uint8_t fill)
{
    wg_buf blob = {0};
    make_blob(&blob, type, fill);
    wg_buf_reset(out);
    wg_buf_printf(out, "%s ", type);
    wg_base64_encode(out, (const uint8_t *)blob.data, blob.len, true);
    wg_buf_free(&blob);
}

/* Check `text` for host:port presenting the ed25519 key made with `fill`. */
static kh_result check(const char *text, const char *host, int port, uint8_t fill, wg_buf *fps)
{
    wg_buf blob = {0};
    wg_error err;
    kh_result res = (kh_result)-1;
    make_blob(&blob, "ssh-ed25519", fill);
    int rc = kh_check_text(text, strlen(text), "test", host, port, (const uint8_t *)blob.data,
                           blob.len, &res, fps, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0)
        fprintf(stderr, "%s\n", err.msg);
    wg_buf_free(&blob);
    return res;
}

/* A whole known_hosts text: "PREFIX TYPE BASE64\n" for the ed25519 key made with `fill`. */
static char *line_for(const char *prefix, uint8_t fill)
{
    wg_buf k = {0}, l = {0};
    key_text(&k, "ssh-ed25519", fill);
    wg_buf_printf(&l, "%s %s\n", prefix, k.data);
    wg_buf_free(&k);
    return l.data;
}

TEST(plain_host_matches)
{
    char *t = line_for("db.example.com", 1);
    CHECK_EQ_INT(check(t, "db.example.com", 22, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(check(t, "DB.Example.COM", 22, 1, NULL), KH_MATCH); /* case-insensitive */
    CHECK_EQ_INT(check(t, "other.example.com", 22, 1, NULL), KH_UNKNOWN);
    /* The port-22 form does not cover another port. */
    CHECK_EQ_INT(check(t, "db.example.com", 2222, 1, NULL), KH_UNKNOWN);
    free(t);

    t = line_for("[db.example.com]:2222", 1);
    CHECK_EQ_INT(check(t, "db.example.com", 2222, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(check(t, "db.example.com", 22, 1, NULL), KH_UNKNOWN);
    CHECK_EQ_INT(check(t, "db.example.com", 2223, 1, NULL), KH_UNKNOWN);
    free(t);

    /* A list, with a comment after the key and CRLF line ends. */
    wg_buf k = {0}, l = {0};
    key_text(&k, "ssh-ed25519", 1);
    wg_buf_printf(&l, "# comment\r\n\r\n   \t\r\nalpha,db.example.com,10.0.0.1 %s a comment\r\n",
                  k.data);
    CHECK_EQ_INT(check(l.data, "db.example.com", 22, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(check(l.data, "10.0.0.1", 22, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(check(l.data, "alph", 22, 1, NULL), KH_UNKNOWN);
    wg_buf_free(&k);
    wg_buf_free(&l);
}

TEST(wildcards_and_negation)
{
    char *t = line_for("*.example.com,!bad.example.com,db?.internal", 1);
    CHECK_EQ_INT(check(t, "a.example.com", 22, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(check(t, "x.y.example.com", 22, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(check(t, "bad.example.com", 22, 1, NULL), KH_UNKNOWN); /* negated */
    CHECK_EQ_INT(check(t, "example.com", 22, 1, NULL), KH_UNKNOWN);
    CHECK_EQ_INT(check(t, "db1.internal", 22, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(check(t, "db12.internal", 22, 1, NULL), KH_UNKNOWN);
    /* A wildcard line for port 22 does not match "[a.example.com]:2222". */
    CHECK_EQ_INT(check(t, "a.example.com", 2222, 1, NULL), KH_UNKNOWN);
    free(t);

    /* A negation alone matches nothing; a negated line is not "changed" either. */
    t = line_for("!bad.example.com", 2);
    CHECK_EQ_INT(check(t, "good.example.com", 22, 1, NULL), KH_UNKNOWN);
    CHECK_EQ_INT(check(t, "bad.example.com", 22, 1, NULL), KH_UNKNOWN);
    free(t);

    t = line_for("[*.example.com]:*", 1);
    CHECK_EQ_INT(check(t, "a.example.com", 2222, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(check(t, "a.example.com", 22, 1, NULL), KH_UNKNOWN);
    free(t);

    /* Pathological patterns finish quickly and match correctly. */
    t = line_for("***********************************************a*b*c*d*e*f*g*h*z", 1);
    CHECK_EQ_INT(check(t, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 22, 1, NULL),
                 KH_UNKNOWN);
    free(t);
}

/* A hashed entry computed here with OpenSSL, the way ssh-keygen -H does it. */
static char *hashed_line(const char *name, uint8_t fill)
{
    uint8_t salt[20], mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    for (size_t i = 0; i < sizeof(salt); i++)
        salt[i] = (uint8_t)(i * 37 + 5);
    HMAC(EVP_sha1(), salt, sizeof(salt), (const unsigned char *)name, strlen(name), mac, &mac_len);
    wg_buf h = {0};
    wg_buf_puts(&h, "|1|");
    wg_base64_encode(&h, salt, sizeof(salt), true);
    wg_buf_putc(&h, '|');
    wg_base64_encode(&h, mac, mac_len, true);
    char *t = line_for(h.data, fill);
    wg_buf_free(&h);
    return t;
}

TEST(hashed_entries)
{
    char *t = hashed_line("db.example.com", 1);
    CHECK_EQ_INT(check(t, "db.example.com", 22, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(check(t, "db.example.com", 2222, 1, NULL), KH_UNKNOWN);
    CHECK_EQ_INT(check(t, "db.example.org", 22, 1, NULL), KH_UNKNOWN);
    wg_buf fps = {0};
    CHECK_EQ_INT(check(t, "db.example.com", 22, 9, &fps), KH_CHANGED);
    CHECK_CONTAINS(fps.data, "SHA256:");
    wg_buf_free(&fps);
    free(t);

    t = hashed_line("[db.example.com]:2222", 1);
    CHECK_EQ_INT(check(t, "db.example.com", 2222, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(check(t, "db.example.com", 22, 1, NULL), KH_UNKNOWN);
    free(t);

    /* Broken hashed entries are skipped, not matched. */
    static const char *broken[] = {
        "|1|",          "|1||",         "|1|AAAA|",
        "|2|AAAA|AAAA", "|1|!!!!|AAAA", "|1|N/sD2/SCsKVb0y9gTyOCPzNDea4=|ThKtgvkGL/H7Zjq"};
    for (size_t i = 0; i < WG_ARRAY_LEN(broken); i++) {
        t = line_for(broken[i], 1);
        CHECK_EQ_INT(check(t, "bastion.example.com", 22, 1, NULL), KH_UNKNOWN);
        free(t);
    }
}

static void vec_blob(wg_buf *b)
{
    uint8_t raw[128];
    long n = wg_base64_decode(VEC_KEY, strlen(VEC_KEY), raw, sizeof(raw));
    CHECK_EQ_INT(n, 51);
    wg_buf_reset(b);
    wg_buf_append(b, raw, n > 0 ? (size_t)n : 0);
}

TEST(ssh_keygen_hashed_vector)
{
    const char *text = VEC_LINE_22 VEC_LINE_2222;
    wg_buf blob = {0}, fps = {0};
    wg_error err;
    kh_result res;
    vec_blob(&blob);
    const uint8_t *b = (const uint8_t *)blob.data;

    CHECK_EQ_INT(kh_check_text(text, strlen(text), "t", "bastion.example.com", 22, b, blob.len,
                               &res, NULL, &err),
                 0);
    CHECK_EQ_INT(res, KH_MATCH);
    CHECK_EQ_INT(kh_check_text(VEC_LINE_2222, strlen(VEC_LINE_2222), "t", "bastion.example.com",
                               2222, b, blob.len, &res, NULL, &err),
                 0);
    CHECK_EQ_INT(res, KH_MATCH);
    CHECK_EQ_INT(kh_check_text(VEC_LINE_22, strlen(VEC_LINE_22), "t", "bastion.example.com", 2222,
                               b, blob.len, &res, NULL, &err),
                 0);
    CHECK_EQ_INT(res, KH_UNKNOWN);

    /* Another ed25519 key for the same host: changed, and the recorded key's fingerprint is
     * exactly what ssh-keygen -l printed. */
    CHECK_EQ_INT(check(VEC_LINE_22, "bastion.example.com", 22, 7, &fps), KH_CHANGED);
    CHECK_EQ_STR(fps.data, VEC_FP);
    wg_buf_free(&fps);
    wg_buf_free(&blob);
}

TEST(changed_key_lists_fingerprints)
{
    wg_buf k1 = {0}, k2 = {0}, l = {0}, fps = {0};
    key_text(&k1, "ssh-ed25519", 1);
    key_text(&k2, "ssh-ed25519", 2);
    wg_buf_printf(&l, "db %s\nfoo,db %s\n*.other %s\ndb %s\n", k1.data, k2.data, k1.data, k2.data);
    CHECK_EQ_INT(check(l.data, "db", 22, 3, &fps), KH_CHANGED);
    /* Two distinct keys, each listed once; the fingerprint of key 1 is sha256 of its blob. */
    wg_buf blob = {0}, want = {0};
    make_blob(&blob, "ssh-ed25519", 1);
    uint8_t md[32];
    EVP_Digest(blob.data, blob.len, md, NULL, EVP_sha256(), NULL);
    wg_buf_puts(&want, "SHA256:");
    wg_base64_encode(&want, md, sizeof(md), false);
    CHECK(strncmp(fps.data, want.data, want.len) == 0);
    CHECK(fps.data && strstr(fps.data, ", SHA256:") != NULL);
    CHECK(fps.data && strstr(fps.data + 1, ", SHA256:") == strstr(fps.data, ", SHA256:"));
    CHECK(fps.data && strchr(fps.data, '=') == NULL); /* unpadded */

    /* When one of the host's lines has the presented key, it is a match. */
    wg_buf_reset(&fps);
    CHECK_EQ_INT(check(l.data, "db", 22, 2, &fps), KH_MATCH);
    CHECK_EQ_INT(fps.len, 0);
    /* A NULL fps is fine. */
    CHECK_EQ_INT(check(l.data, "db", 22, 3, NULL), KH_CHANGED);

    wg_buf_free(&blob);
    wg_buf_free(&want);
    wg_buf_free(&fps);
    wg_buf_free(&k1);
    wg_buf_free(&k2);
    wg_buf_free(&l);
}

TEST(other_key_type_only_is_unknown)
{
    wg_buf k = {0}, l = {0}, fps = {0};
    key_text(&k, "ecdsa-sha2-nistp256", 1);
    wg_buf_printf(&l, "db %s\n", k.data);
    CHECK_EQ_INT(check(l.data, "db", 22, 1, &fps), KH_UNKNOWN);
    CHECK_EQ_INT(fps.len, 0);

    /* With an ed25519 line too, only that one is "changed" and only its key is listed. */
    wg_buf k2 = {0}, want = {0}, blob = {0};
    key_text(&k2, "ssh-ed25519", 2);
    wg_buf_printf(&l, "db %s\n", k2.data);
    CHECK_EQ_INT(check(l.data, "db", 22, 1, &fps), KH_CHANGED);
    make_blob(&blob, "ssh-ed25519", 2);
    uint8_t md[32];
    EVP_Digest(blob.data, blob.len, md, NULL, EVP_sha256(), NULL);
    wg_buf_puts(&want, "SHA256:");
    wg_base64_encode(&want, md, sizeof(md), false);
    CHECK_EQ_STR(fps.data, want.data);
    wg_buf_free(&k2);
    wg_buf_free(&want);
    wg_buf_free(&blob);
    wg_buf_free(&k);
    wg_buf_free(&l);
    wg_buf_free(&fps);
}

TEST(revoked_wins_for_any_host)
{
    wg_buf k = {0}, l = {0};
    key_text(&k, "ssh-ed25519", 1);
    wg_buf_printf(&l, "db %s\n@revoked * %s\n", k.data, k.data);
    CHECK_EQ_INT(check(l.data, "db", 22, 1, NULL), KH_REVOKED);
    wg_buf_reset(&l);
    wg_buf_printf(&l, "db %s\n@revoked elsewhere.example %s\n", k.data, k.data);
    CHECK_EQ_INT(check(l.data, "db", 22, 1, NULL), KH_REVOKED);
    CHECK_EQ_INT(check(l.data, "unrelated", 2222, 1, NULL), KH_REVOKED);
    /* A revoked line is not a recorded key: it neither matches nor makes the host changed. */
    CHECK_EQ_INT(check(l.data, "elsewhere.example", 22, 4, NULL), KH_UNKNOWN);
    wg_buf fps = {0};
    CHECK_EQ_INT(check(l.data, "db", 22, 4, &fps), KH_CHANGED);
    CHECK(fps.data && strchr(fps.data, ',') == NULL);
    wg_buf_free(&fps);
    wg_buf_free(&k);
    wg_buf_free(&l);
}

TEST(cert_authority_and_malformed_lines_are_skipped)
{
    wg_buf k = {0}, k2 = {0}, l = {0};
    key_text(&k, "ssh-ed25519", 1);
    key_text(&k2, "ssh-ed25519", 2);
    wg_buf_printf(&l, "@cert-authority db %s\n", k2.data);
    CHECK_EQ_INT(check(l.data, "db", 22, 1, NULL), KH_UNKNOWN);
    CHECK_EQ_INT(check(l.data, "db", 22, 2, NULL), KH_UNKNOWN);

    wg_buf_reset(&l);
    wg_buf_printf(&l,
                  "db\n"
                  "db ssh-ed25519\n"
                  "db ssh-ed25519 !!!notbase64!!!\n"
                  "db ssh-ed25519 AAAA\n"
                  "db ssh-rsa %s\n" /* type field does not match the blob */
                  "@unknown db %s\n"
                  "@revoked\n"
                  "@cert-authority\n"
                  "db ssh-ed25519 %s=garbage\n"
                  "db ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n" /* truncated blob */
                  "db 2048 35 1234567890\n"               /* SSH1 RSA */
                  "\x01\xff\n"
                  "db %s\n",
                  k2.data + strlen("ssh-ed25519 "), k2.data, k2.data + strlen("ssh-ed25519 "),
                  k.data);
    CHECK_EQ_INT(check(l.data, "db", 22, 1, NULL), KH_MATCH);
    /* None of the broken lines counts as a recorded key. */
    CHECK_EQ_INT(check(l.data, "db", 22, 2, NULL), KH_CHANGED);
    wg_buf fps = {0};
    CHECK_EQ_INT(check(l.data, "db", 22, 3, &fps), KH_CHANGED);
    CHECK(fps.data && strchr(fps.data, ',') == NULL); /* only the one good line */
    wg_buf_free(&fps);

    /* Embedded NUL bytes, no final newline, and a very long line. */
    static const char nul_text[] = "db\0ssh-ed25519 AAAA\ndb";
    kh_result res;
    wg_error err;
    wg_buf blob = {0};
    make_blob(&blob, "ssh-ed25519", 1);
    CHECK_EQ_INT(kh_check_text(nul_text, sizeof(nul_text) - 1, "t", "db", 22,
                               (const uint8_t *)blob.data, blob.len, &res, NULL, &err),
                 0);
    CHECK_EQ_INT(res, KH_UNKNOWN);
    wg_buf big = {0};
    for (int i = 0; i < 100000; i++)
        wg_buf_puts(&big, "x,");
    wg_buf_printf(&big, "db %s", k.data); /* no newline at the end */
    CHECK_EQ_INT(check(big.data, "db", 22, 1, NULL), KH_MATCH);
    CHECK_EQ_INT(kh_check_text(NULL, 0, "t", "db", 22, (const uint8_t *)blob.data, blob.len, &res,
                               NULL, &err),
                 0);
    CHECK_EQ_INT(res, KH_UNKNOWN);

    /* A presented blob that is not a key is an error, not a verdict. */
    static const uint8_t junk[] = {0, 0, 0, 9, 's'};
    CHECK(kh_check_text(l.data, l.len, "t", "db", 22, junk, sizeof(junk), &res, NULL, &err) < 0);
    CHECK_CONTAINS(err.msg, "db port 22");

    wg_buf_free(&big);
    wg_buf_free(&blob);
    wg_buf_free(&k);
    wg_buf_free(&k2);
    wg_buf_free(&l);
}

/* A fresh temporary directory; the caller removes what it made. */
static void temp_dir(char *buf, size_t len)
{
    snprintf(buf, len, "/tmp/wg-kh-test-XXXXXX");
    CHECK(mkdtemp(buf) != NULL);
}

static char *read_all(const char *path)
{
    wg_buf b = {0};
    wg_error err;
    if (wg_read_file(path, 1 << 20, &b, &err) != 0)
        return NULL;
    return b.data;
}

TEST(missing_file_is_unknown_and_unreadable_is_error)
{
    char dir[64], path[128];
    temp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/nope/known_hosts", dir);
    wg_buf blob = {0};
    make_blob(&blob, "ssh-ed25519", 1);
    kh_result res = KH_MATCH;
    wg_error err;
    CHECK_EQ_INT(
        kh_check_file(path, "db", 22, (const uint8_t *)blob.data, blob.len, &res, NULL, &err), 0);
    CHECK_EQ_INT(res, KH_UNKNOWN);
    /* A directory where the file should be cannot be read: an error naming the path. */
    CHECK(kh_check_file(dir, "db", 22, (const uint8_t *)blob.data, blob.len, &res, NULL, &err) < 0);
    CHECK_CONTAINS(err.msg, dir);
    rmdir(dir);
    wg_buf_free(&blob);
}

TEST(add_then_check_matches)
{
    char dir[64], path[128], sub[128];
    temp_dir(dir, sizeof(dir));
    snprintf(sub, sizeof(sub), "%s/a/b", dir);
    snprintf(path, sizeof(path), "%s/known_hosts", sub);
    wg_buf blob = {0}, other = {0};
    make_blob(&blob, "ssh-ed25519", 1);
    make_blob(&other, "ssh-ed25519", 2);
    const uint8_t *b = (const uint8_t *)blob.data;
    wg_error err;
    kh_result res;

    CHECK_EQ_INT(kh_add(path, "Bastion.example.com", 22, b, blob.len, &err), 0);
    CHECK_EQ_INT(kh_add(path, "bastion.example.com", 2222, b, blob.len, &err), 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600);
    CHECK(stat(sub, &st) == 0 && (st.st_mode & 07777) == 0700);

    CHECK_EQ_INT(kh_check_file(path, "bastion.example.com", 22, b, blob.len, &res, NULL, &err), 0);
    CHECK_EQ_INT(res, KH_MATCH);
    CHECK_EQ_INT(kh_check_file(path, "bastion.example.com", 2222, b, blob.len, &res, NULL, &err),
                 0);
    CHECK_EQ_INT(res, KH_MATCH);
    CHECK_EQ_INT(kh_check_file(path, "bastion.example.com", 2222, (const uint8_t *)other.data,
                               other.len, &res, NULL, &err),
                 0);
    CHECK_EQ_INT(res, KH_CHANGED);
    CHECK_EQ_INT(kh_check_file(path, "bastion.example.com", 2200, b, blob.len, &res, NULL, &err),
                 0);
    CHECK_EQ_INT(res, KH_UNKNOWN);

    wg_buf want = {0};
    wg_buf_puts(&want, "Bastion.example.com ssh-ed25519 ");
    wg_base64_encode(&want, b, blob.len, true);
    wg_buf_puts(&want, "\n[bastion.example.com]:2222 ssh-ed25519 ");
    wg_base64_encode(&want, b, blob.len, true);
    wg_buf_puts(&want, "\n");
    char *got = read_all(path);
    CHECK_EQ_STR(got, want.data);
    free(got);

    /* Names that would corrupt the file or turn into patterns are refused. */
    CHECK(kh_add(path, "a b", 22, b, blob.len, &err) < 0);
    CHECK_CONTAINS(err.msg, path);
    CHECK(kh_add(path, "a,b", 22, b, blob.len, &err) < 0);
    CHECK(kh_add(path, "*.x", 22, b, blob.len, &err) < 0);
    CHECK(kh_add(path, "", 22, b, blob.len, &err) < 0);
    CHECK(kh_add(path, "h", 22, (const uint8_t *)"\0\0\0\x05", 4, &err) < 0);

    unlink(path);
    rmdir(sub);
    snprintf(sub, sizeof(sub), "%s/a", dir);
    rmdir(sub);
    rmdir(dir);
    wg_buf_free(&want);
    wg_buf_free(&blob);
    wg_buf_free(&other);
}

TEST(add_appends_missing_newline_and_refuses_symlink)
{
    char dir[64], path[128], link_path[128];
    temp_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/known_hosts", dir);
    snprintf(link_path, sizeof(link_path), "%s/link", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, "old ssh-ed25519 AAAA", 20) == 20); /* no final newline */
    close(fd);

    wg_buf blob = {0}, want = {0};
    make_blob(&blob, "ssh-ed25519", 1);
    wg_error err;
    CHECK_EQ_INT(kh_add(path, "db", 22, (const uint8_t *)blob.data, blob.len, &err), 0);
    wg_buf_puts(&want, "old ssh-ed25519 AAAA\ndb ssh-ed25519 ");
    wg_base64_encode(&want, (const uint8_t *)blob.data, blob.len, true);
    wg_buf_puts(&want, "\n");
    char *got = read_all(path);
    CHECK_EQ_STR(got, want.data);
    free(got);

    CHECK(symlink(path, link_path) == 0);
    CHECK(kh_add(link_path, "db2", 22, (const uint8_t *)blob.data, blob.len, &err) < 0);
    CHECK_CONTAINS(err.msg, link_path);
    CHECK_CONTAINS(err.msg, "symbolic link");

    unlink(link_path);
    unlink(path);
    rmdir(dir);
    wg_buf_free(&want);
    wg_buf_free(&blob);
}

TEST_MAIN()
