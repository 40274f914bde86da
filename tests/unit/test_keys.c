/* test_keys.c — ed25519 keys in OpenSSH format, signatures, file modes, pair rotation. */
#include "keys/keys.h"
#include "test.h"

#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

/* A key made with `ssh-keygen -t ed25519 -N '' -C vec` (OpenSSH 9.2) during development. */
static const char vec_key[] =
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACCZZBI946H3u6FyMI6/v3x/hh373qPjMhmlF/t+NO0ZvwAAAIjdiW463Ylu\n"
    "OgAAAAtzc2gtZWQyNTUxOQAAACCZZBI946H3u6FyMI6/v3x/hh373qPjMhmlF/t+NO0Zvw\n"
    "AAAEADhD2pepBq/WzdpWqhWgTA+AxX+zAkJzK57Ga4A41I+plkEj3jofe7oXIwjr+/fH+G\n"
    "Hfveo+MyGaUX+3407Rm/AAAAA3ZlYwEC\n"
    "-----END OPENSSH PRIVATE KEY-----\n";
static const char vec_pub[] =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJlkEj3jofe7oXIwjr+/fH+GHfveo+MyGaUX+3407Rm/ vec";

static char *tmpdir(void)
{
    static char buf[64];
    snprintf(buf, sizeof(buf), "/tmp/walgate-keys-XXXXXX");
    return mkdtemp(buf);
}

static void rmrf(const char *d)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", d);
}

TEST(parses_ssh_keygen_vector)
{
    wg_error err = {0};
    keys_key *k = keys_key_parse_openssh(vec_key, strlen(vec_key), "vec", &err);
    CHECK(k != NULL);
    if (!k) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    wg_buf line = {0};
    CHECK_EQ_INT(keys_key_authorized_line(k, &line), 0);
    CHECK(strcmp(line.data, vec_pub) == 0);
    CHECK(strcmp(keys_key_comment(k), "vec") == 0);
    wg_buf_free(&line);
    keys_key_free(k);
}

TEST(generate_save_load_roundtrip_and_sign)
{
    char *d = tmpdir();
    char path[128];
    wg_error err = {0};
    snprintf(path, sizeof(path), "%s/k", d);
    keys_key *k = keys_key_generate("c1", &err);
    CHECK(k != NULL);
    CHECK_EQ_INT(keys_key_save(k, path, &err), 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    keys_key *l = keys_key_load(path, &err);
    CHECK(l != NULL);
    wg_buf a = {0}, b = {0}, sig = {0};
    keys_key_public_blob(k, &a);
    keys_key_public_blob(l, &b);
    CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);

    /* The signature verifies with OpenSSL against the raw public key. */
    const uint8_t msg[] = "session id and userauth request";
    CHECK_EQ_INT(keys_key_sign(l, msg, sizeof(msg), &sig, &err), 0);
    wg_rd r;
    const uint8_t *t, *s, *pub;
    size_t tn, sn, pn;
    wg_rd_init(&r, sig.data, sig.len);
    CHECK(wg_rd_sshstr(&r, &t, &tn) == 0 && tn == 11 && memcmp(t, "ssh-ed25519", 11) == 0);
    CHECK(wg_rd_sshstr(&r, &s, &sn) == 0 && sn == 64);
    wg_rd_init(&r, a.data, a.len);
    wg_rd_sshstr(&r, &t, &tn);
    CHECK(wg_rd_sshstr(&r, &pub, &pn) == 0 && pn == 32);
    EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, pn);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    CHECK(EVP_DigestVerifyInit(md, NULL, NULL, NULL, pk) == 1);
    CHECK(EVP_DigestVerify(md, s, sn, msg, sizeof(msg)) == 1);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);

    char fp[96];
    CHECK_EQ_INT(keys_key_fingerprint(l, fp, sizeof(fp)), 0);
    CHECK(strncmp(fp, "SHA256:", 7) == 0 && strlen(fp) == 7 + 43);
    wg_buf_free(&a);
    wg_buf_free(&b);
    wg_buf_free(&sig);
    keys_key_free(k);
    keys_key_free(l);
    rmrf(d);
}

TEST(refuses_bad_modes_and_links)
{
    char *d = tmpdir();
    char path[128], link[128];
    wg_error err = {0};
    snprintf(path, sizeof(path), "%s/k", d);
    snprintf(link, sizeof(link), "%s/l", d);
    keys_key *k = keys_key_generate("c", &err);
    keys_key_save(k, path, &err);
    chmod(path, 0640);
    keys_key *l = keys_key_load(path, &err);
    CHECK(l == NULL && err.code == WG_ERR_PERM && strstr(err.msg, "chmod 600") != NULL);
    chmod(path, 0644);
    l = keys_key_load(path, &err);
    CHECK(l == NULL && strstr(err.msg, "readable by group or others (mode 0644)") != NULL);
    chmod(path, 0600);
    CHECK(symlink(path, link) == 0);
    l = keys_key_load(link, &err);
    CHECK(l == NULL && strstr(err.msg, "symbolic link") != NULL);
    /* Not a regular file: a directory and a FIFO (opening must not block on it). */
    char fifo[128];
    snprintf(fifo, sizeof(fifo), "%s/f", d);
    l = keys_key_load(d, &err);
    CHECK(l == NULL && err.msg[0] != '\0');
    CHECK(mkfifo(fifo, 0600) == 0);
    l = keys_key_load(fifo, &err);
    CHECK(l == NULL && strstr(err.msg, "not a regular file") != NULL);
    l = keys_key_load(path, &err);
    CHECK(l != NULL);
    keys_key_free(l);
    keys_key_free(k);
    rmrf(d);
}

TEST(refuses_damaged_encrypted_and_foreign_keys)
{
    wg_error err = {0};
    /* Every truncation of the vector is refused, never crashes. */
    for (size_t n = 0; n < strlen(vec_key) - 40; n += 7) {
        keys_key *k = keys_key_parse_openssh(vec_key, n, "t", &err);
        CHECK(k == NULL);
        keys_key_free(k);
    }
    /* A flipped base64 character in the private section. */
    char *bad = strdup(vec_key);
    bad[strlen(bad) - 60] = bad[strlen(bad) - 60] == 'A' ? 'B' : 'A';
    keys_key *k = keys_key_parse_openssh(bad, strlen(bad), "t", &err);
    CHECK(k == NULL);
    free(bad);
    /* Encrypted: ciphername aes256-ctr (the header of an ssh-keygen -N secret key). */
    static const char enc[] = "-----BEGIN OPENSSH PRIVATE KEY-----\n"
                              "b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABA=\n"
                              "-----END OPENSSH PRIVATE KEY-----\n";
    k = keys_key_parse_openssh(enc, strlen(enc), "enc", &err);
    CHECK(k == NULL && strstr(err.msg, "encrypted keys are not supported") != NULL &&
          strstr(err.msg, "passphrase") != NULL);
    static const char rsa[] =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n";
    k = keys_key_parse_openssh(rsa, strlen(rsa), "rsa", &err);
    CHECK(k == NULL && strstr(err.msg, "ed25519") != NULL);
}

TEST(pair_generate_rotate_and_crash_between_steps)
{
    char *d = tmpdir();
    wg_error err = {0};
    keys_pair p = {0}, q = {0};
    CHECK_EQ_INT(keys_generate(d, "b", false, &p, &err), 0);
    CHECK(keys_generate(d, "b", false, &q, &err) == WG_ERR_EXISTS);
    wg_buf s1 = {0}, s2 = {0};
    keys_key_public_blob(p.secondary, &s1);
    CHECK_EQ_INT(keys_rotate(d, "b", &q, &err), 0);
    keys_key_public_blob(q.primary, &s2);
    CHECK(s1.len == s2.len && memcmp(s1.data, s2.data, s1.len) == 0);
    CHECK(strcmp(keys_key_comment(q.primary), "walgate-b-primary") == 0);

    /* A crash after the new key files were written but before the index moved: stray
     * generations are ignored and the old pair loads. */
    char stray[256];
    snprintf(stray, sizeof(stray), "%s/keys/b/key-99", d);
    keys_key *x = keys_key_generate("x", &err);
    keys_key_save(x, stray, &err);
    keys_key_free(x);
    keys_pair r = {0};
    CHECK_EQ_INT(keys_load(d, "b", &r, &err), 0);
    wg_buf s3 = {0};
    keys_key_public_blob(r.primary, &s3);
    CHECK(s3.len == s2.len && memcmp(s3.data, s2.data, s2.len) == 0);
    /* The next rotation goes past the stray generation and removes it. */
    keys_pair t = {0};
    CHECK_EQ_INT(keys_rotate(d, "b", &t, &err), 0);
    CHECK(access(stray, F_OK) != 0);

    /* A crash after the index moved but before the stale generations were deleted (and with
     * an index temporary left over): the new pair loads; the next change cleans up. */
    wg_buf s4 = {0}, s5 = {0};
    keys_key_public_blob(t.primary, &s4);
    char old1[256], tmpidx[256];
    snprintf(old1, sizeof(old1), "%s/keys/b/key-1", d);
    snprintf(tmpidx, sizeof(tmpidx), "%s/keys/b/pair.tmp.12345", d);
    x = keys_key_generate("old", &err);
    keys_key_save(x, old1, &err);
    keys_key_free(x);
    FILE *f = fopen(tmpidx, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("walgate-keys 1\nprim", f);
        fclose(f);
    }
    keys_pair u = {0};
    CHECK_EQ_INT(keys_load(d, "b", &u, &err), 0);
    keys_key_public_blob(u.primary, &s5);
    CHECK(s4.len == s5.len && memcmp(s4.data, s5.data, s4.len) == 0);
    keys_pair_free(&u);
    CHECK_EQ_INT(keys_rotate(d, "b", &u, &err), 0);
    CHECK(access(old1, F_OK) != 0 && access(tmpidx, F_OK) != 0);
    keys_pair_free(&u);
    wg_buf_free(&s4);
    wg_buf_free(&s5);

    /* A damaged index is refused with the fix, not guessed at; --force recovers. */
    char idx[256];
    snprintf(idx, sizeof(idx), "%s/keys/b/pair", d);
    f = fopen(idx, "w");
    if (f) {
        fputs("walgate-keys 1\nprimary 3\n", f);
        fclose(f);
    }
    CHECK(keys_load(d, "b", &u, &err) == WG_ERR_PROTO && strstr(err.msg, "--force") != NULL);
    CHECK_EQ_INT(keys_generate(d, "b", true, &u, &err), 0);
    keys_pair_free(&u);
    CHECK_EQ_INT(keys_load(d, "b", &u, &err), 0);
    keys_pair_free(&u);

    keys_pair_free(&p);
    keys_pair_free(&q);
    keys_pair_free(&r);
    keys_pair_free(&t);
    wg_buf_free(&s1);
    wg_buf_free(&s2);
    wg_buf_free(&s3);
    CHECK(keys_load(d, "nope", &r, &err) == WG_ERR_NOTFOUND &&
          strstr(err.msg, "walgate keys generate nope") != NULL);
    CHECK(keys_generate(d, "a/b", false, &r, &err) == WG_ERR_CONFIG);
    rmrf(d);
}

TEST_MAIN()
