/*
 * keys.c — ed25519 key pairs in OpenSSH's private-key format, and a tunnel's primary and
 * secondary pair with crash-safe rotation.
 *
 * On disk, STATE_DIR/keys/NAME/ (mode 0700) holds generations of keys, `key-G` (private,
 * 0600) and `key-G.pub` (its authorized_keys line), and a small index file `pair` naming the
 * generations of the primary and the secondary:
 *
 *     walgate-keys 1
 *     primary 3
 *     secondary 4
 *
 * A change (generate --force, rotate) first writes and fsyncs the new key files under fresh
 * generation numbers, then atomically replaces `pair` (rename + directory fsync), and only
 * then deletes the generations `pair` no longer names. Whatever the moment of a crash, `pair`
 * names either the old pair or the new one, and both files it names exist.
 */
#include "keys/keys.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ED25519_LEN 32
#define ED25519_SIG_LEN 64
#define KEY_TYPE "ssh-ed25519"
#define AUTH_MAGIC "openssh-key-v1"
#define PEM_BEGIN "-----BEGIN OPENSSH PRIVATE KEY-----"
#define PEM_END "-----END OPENSSH PRIVATE KEY-----"
#define KEY_FILE_MAX (64 * 1024)
#define PAIR_FILE "pair"
#define PAIR_MAGIC "walgate-keys 1"

struct keys_key {
    uint8_t pub[ED25519_LEN];
    uint8_t seed[ED25519_LEN]; /* the private key; valid when has_private */
    bool has_private;
    char *comment;
};

/* ---- One key ----------------------------------------------------------------------------- */

/* A key lives in its own anonymous mapping, marked MADV_DONTDUMP like a wg_secret: the seed
 * stays out of a core file (allow_core_dumps) and is wiped before the mapping goes. */
static keys_key *key_alloc(const char *comment, size_t comment_len)
{
    keys_key *k =
        mmap(NULL, sizeof(*k), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (k == MAP_FAILED)
        return NULL;
    (void)madvise(k, sizeof(*k), MADV_DONTDUMP); /* best effort: old kernels lack it */
    k->comment = malloc(comment_len + 1);
    if (!k->comment) {
        munmap(k, sizeof(*k));
        return NULL;
    }
    memcpy(k->comment, comment, comment_len);
    k->comment[comment_len] = '\0';
    return k;
}

void keys_key_free(keys_key *key)
{
    if (!key)
        return;
    OPENSSL_cleanse(key->seed, sizeof(key->seed));
    free(key->comment);
    munmap(key, sizeof(*key));
}

const char *keys_key_comment(const keys_key *key)
{
    return key->comment;
}

static EVP_PKEY *key_evp_private(const keys_key *key)
{
    return EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, key->seed, ED25519_LEN);
}

keys_key *keys_key_generate(const char *comment, wg_error *err)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    keys_key *k = key_alloc(comment, strlen(comment));
    size_t publen = ED25519_LEN, privlen = ED25519_LEN;

    if (!ctx || !k || EVP_PKEY_keygen_init(ctx) <= 0 || EVP_PKEY_keygen(ctx, &pkey) <= 0 ||
        EVP_PKEY_get_raw_public_key(pkey, k->pub, &publen) <= 0 ||
        EVP_PKEY_get_raw_private_key(pkey, k->seed, &privlen) <= 0 || publen != ED25519_LEN ||
        privlen != ED25519_LEN) {
        wg_error_set(err, WG_ERR_INTERNAL, "OpenSSL could not generate an ed25519 key");
        keys_key_free(k);
        k = NULL;
    } else {
        k->has_private = true;
    }
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    return k;
}

int keys_key_public_blob(const keys_key *key, wg_buf *out)
{
    if (wg_buf_put_sshstr(out, KEY_TYPE, strlen(KEY_TYPE)) != 0 ||
        wg_buf_put_sshstr(out, key->pub, ED25519_LEN) != 0)
        return -1;
    return 0;
}

int keys_key_authorized_line(const keys_key *key, wg_buf *out)
{
    wg_buf blob = {0};
    int rc = -1;
    if (keys_key_public_blob(key, &blob) == 0 && wg_buf_puts(out, KEY_TYPE " ") == 0 &&
        wg_base64_encode(out, (const uint8_t *)blob.data, blob.len, true) == 0 &&
        (key->comment[0] == '\0' || wg_buf_printf(out, " %s", key->comment) == 0))
        rc = 0;
    wg_buf_free(&blob);
    return rc;
}

int keys_fingerprint_blob(const uint8_t *blob, size_t len, char *buf, size_t buflen)
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    wg_buf b64 = {0};
    int rc = -1;
    if (SHA256(blob, len, md) && wg_base64_encode(&b64, md, sizeof(md), false) == 0) {
        int n = snprintf(buf, buflen, "SHA256:%s", b64.data);
        rc = (n > 0 && (size_t)n < buflen) ? 0 : -1;
    }
    wg_buf_free(&b64);
    return rc;
}

int keys_key_fingerprint(const keys_key *key, char *buf, size_t len)
{
    wg_buf blob = {0};
    int rc = -1;
    if (keys_key_public_blob(key, &blob) == 0)
        rc = keys_fingerprint_blob((const uint8_t *)blob.data, blob.len, buf, len);
    wg_buf_free(&blob);
    return rc;
}

int keys_key_sign(const keys_key *key, const uint8_t *data, size_t len, wg_buf *sig_blob,
                  wg_error *err)
{
    if (!key->has_private)
        return wg_error_set(err, WG_ERR_INTERNAL, "cannot sign with a public key");
    uint8_t sig[ED25519_SIG_LEN];
    size_t siglen = sizeof(sig);
    EVP_PKEY *pkey = key_evp_private(key);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int rc = 0;
    if (!pkey || !md || EVP_DigestSignInit(md, NULL, NULL, NULL, pkey) <= 0 ||
        EVP_DigestSign(md, sig, &siglen, data, len) <= 0 || siglen != ED25519_SIG_LEN)
        rc = wg_error_set(err, WG_ERR_INTERNAL, "OpenSSL could not sign with key %s", key->comment);
    else if (wg_buf_put_sshstr(sig_blob, KEY_TYPE, strlen(KEY_TYPE)) != 0 ||
             wg_buf_put_sshstr(sig_blob, sig, siglen) != 0)
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);
    return rc;
}

/* ---- OpenSSH private-key format ------------------------------------------------------------ */

/* The binary "openssh-key-v1" structure of an unencrypted single ed25519 key. */
static int encode_private(const keys_key *key, wg_buf *out)
{
    wg_buf pubblob = {0}, priv = {0};
    uint32_t check;
    uint8_t both[2 * ED25519_LEN];
    int rc = -1;

    if (RAND_bytes((unsigned char *)&check, sizeof(check)) != 1)
        goto out;
    memcpy(both, key->seed, ED25519_LEN);
    memcpy(both + ED25519_LEN, key->pub, ED25519_LEN);
    if (keys_key_public_blob(key, &pubblob) != 0 || wg_buf_put_u32(&priv, check) != 0 ||
        wg_buf_put_u32(&priv, check) != 0 ||
        wg_buf_put_sshstr(&priv, KEY_TYPE, strlen(KEY_TYPE)) != 0 ||
        wg_buf_put_sshstr(&priv, key->pub, ED25519_LEN) != 0 ||
        wg_buf_put_sshstr(&priv, both, sizeof(both)) != 0 ||
        wg_buf_put_sshstr(&priv, key->comment, strlen(key->comment)) != 0)
        goto out;
    for (uint8_t pad = 1; priv.len % 8 != 0; pad++)
        if (wg_buf_append(&priv, &pad, 1) != 0)
            goto out;
    if (wg_buf_append(out, AUTH_MAGIC, sizeof(AUTH_MAGIC)) != 0 || /* with its NUL */
        wg_buf_put_sshstr(out, "none", 4) != 0 || wg_buf_put_sshstr(out, "none", 4) != 0 ||
        wg_buf_put_sshstr(out, "", 0) != 0 || wg_buf_put_u32(out, 1) != 0 ||
        wg_buf_put_sshstr(out, pubblob.data, pubblob.len) != 0 ||
        wg_buf_put_sshstr(out, priv.data, priv.len) != 0)
        goto out;
    rc = 0;
out:
    OPENSSL_cleanse(both, sizeof(both));
    if (priv.data)
        OPENSSL_cleanse(priv.data, priv.cap);
    wg_buf_free(&priv);
    wg_buf_free(&pubblob);
    return rc;
}

/* The PEM-style text of the private key, base64 wrapped at 70 columns as ssh-keygen does. */
static int format_private(const keys_key *key, wg_buf *out)
{
    wg_buf bin = {0}, b64 = {0};
    int rc = -1;
    if (encode_private(key, &bin) == 0 &&
        wg_base64_encode(&b64, (const uint8_t *)bin.data, bin.len, true) == 0 &&
        wg_buf_puts(out, PEM_BEGIN "\n") == 0) {
        rc = 0;
        for (size_t i = 0; i < b64.len && rc == 0; i += 70) {
            size_t n = b64.len - i < 70 ? b64.len - i : 70;
            if (wg_buf_append(out, b64.data + i, n) != 0 || wg_buf_putc(out, '\n') != 0)
                rc = -1;
        }
        if (rc == 0 && wg_buf_puts(out, PEM_END "\n") != 0)
            rc = -1;
    }
    if (bin.data)
        OPENSSL_cleanse(bin.data, bin.cap);
    if (b64.data)
        OPENSSL_cleanse(b64.data, b64.cap);
    wg_buf_free(&bin);
    wg_buf_free(&b64);
    return rc;
}

static bool sshstr_is(const uint8_t *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* Find the base64 body between the BEGIN and END lines; NULL when they are missing. */
static const char *pem_body(const char *text, size_t len, size_t *body_len)
{
    const char *begin = memmem(text, len, PEM_BEGIN, strlen(PEM_BEGIN));
    if (!begin)
        return NULL;
    const char *body = begin + strlen(PEM_BEGIN);
    size_t rest = len - (size_t)(body - text);
    const char *end = memmem(body, rest, PEM_END, strlen(PEM_END));
    if (!end)
        return NULL;
    *body_len = (size_t)(end - body);
    return body;
}

keys_key *keys_key_parse_openssh(const char *text, size_t len, const char *what, wg_error *err)
{
    size_t body_len = 0;
    const char *body = pem_body(text, len, &body_len);
    uint8_t *bin = NULL;
    size_t bin_cap = 0;
    keys_key *key = NULL;
    const char *why = NULL;

    if (!body) {
        if (memmem(text, len, "BEGIN RSA PRIVATE KEY", 21) ||
            memmem(text, len, "BEGIN EC PRIVATE KEY", 20) ||
            memmem(text, len, "BEGIN PRIVATE KEY", 17))
            why = "it is a PEM/PKCS#8 key; walgate uses ed25519 keys in OpenSSH format "
                  "(make them with `walgate keys generate`)";
        else
            why = "it is not an OpenSSH private key (no BEGIN/END OPENSSH PRIVATE KEY lines)";
        goto fail;
    }
    /* Strip the whitespace inside the body; anything else is left for base64 to refuse. */
    char *clean = malloc(body_len + 1);
    size_t cl = 0;
    if (!clean) {
        why = "out of memory";
        goto fail;
    }
    for (size_t i = 0; i < body_len; i++)
        if (body[i] != '\n' && body[i] != '\r' && body[i] != ' ' && body[i] != '\t')
            clean[cl++] = body[i];
    bin_cap = cl / 4 * 3 + 3;
    bin = malloc(bin_cap);
    long binlen = bin ? wg_base64_decode(clean, cl, bin, bin_cap) : -1;
    free(clean);
    if (binlen < 0) {
        why = "its base64 body is damaged";
        goto fail;
    }

    wg_rd r;
    const uint8_t *p, *cipher, *kdf, *pubblob, *priv;
    size_t n, cipher_n, kdf_n, pubblob_n, priv_n;
    uint32_t nkeys;
    wg_rd_init(&r, bin, (size_t)binlen);
    if (wg_rd_bytes(&r, sizeof(AUTH_MAGIC), &p) != 0 || memcmp(p, AUTH_MAGIC, sizeof(AUTH_MAGIC))) {
        why = "it does not start with the openssh-key-v1 magic";
        goto fail;
    }
    if (wg_rd_sshstr(&r, &cipher, &cipher_n) != 0 || wg_rd_sshstr(&r, &kdf, &kdf_n) != 0) {
        why = "its header is truncated";
        goto fail;
    }
    if (!sshstr_is(cipher, cipher_n, "none") || !sshstr_is(kdf, kdf_n, "none")) {
        why = "encrypted keys are not supported; the daemon must start unattended, so use "
              "`walgate keys generate`, or remove the passphrase with ssh-keygen -p";
        goto fail;
    }
    if (wg_rd_sshstr(&r, &p, &n) != 0 || wg_rd_u32(&r, &nkeys) != 0) {
        why = "its header is truncated";
        goto fail;
    }
    if (nkeys != 1) {
        why = "it holds more than one key";
        goto fail;
    }
    if (wg_rd_sshstr(&r, &pubblob, &pubblob_n) != 0 || wg_rd_sshstr(&r, &priv, &priv_n) != 0) {
        why = "it is truncated";
        goto fail;
    }
    if (wg_rd_left(&r) != 0) {
        why = "there are bytes after the private section";
        goto fail;
    }

    /* The public key blob. */
    wg_rd pr;
    const uint8_t *type, *pub;
    size_t type_n, pub_n;
    wg_rd_init(&pr, pubblob, pubblob_n);
    if (wg_rd_sshstr(&pr, &type, &type_n) != 0) {
        why = "its public key is truncated";
        goto fail;
    }
    if (!sshstr_is(type, type_n, KEY_TYPE)) {
        why = "it is not an ed25519 key (walgate uses ssh-ed25519 keys only)";
        goto fail;
    }
    if (wg_rd_sshstr(&pr, &pub, &pub_n) != 0 || pub_n != ED25519_LEN || wg_rd_left(&pr) != 0) {
        why = "its public key has the wrong length";
        goto fail;
    }

    /* The private section. */
    uint32_t c1, c2;
    const uint8_t *ptype, *ppub, *pboth, *comment;
    size_t ptype_n, ppub_n, pboth_n, comment_n;
    wg_rd_init(&pr, priv, priv_n);
    if (priv_n % 8 != 0 || wg_rd_u32(&pr, &c1) != 0 || wg_rd_u32(&pr, &c2) != 0 ||
        wg_rd_sshstr(&pr, &ptype, &ptype_n) != 0 || wg_rd_sshstr(&pr, &ppub, &ppub_n) != 0 ||
        wg_rd_sshstr(&pr, &pboth, &pboth_n) != 0 || wg_rd_sshstr(&pr, &comment, &comment_n) != 0) {
        why = "its private section is truncated";
        goto fail;
    }
    if (c1 != c2) {
        why = "its check numbers differ (a damaged file, or an encrypted one)";
        goto fail;
    }
    if (!sshstr_is(ptype, ptype_n, KEY_TYPE) || ppub_n != ED25519_LEN ||
        memcmp(ppub, pub, ED25519_LEN) != 0 || pboth_n != 2 * ED25519_LEN ||
        memcmp(pboth + ED25519_LEN, pub, ED25519_LEN) != 0) {
        why = "its private part does not match its public key";
        goto fail;
    }
    for (uint8_t i = 1; wg_rd_left(&pr) > 0; i++) {
        uint8_t pad;
        wg_rd_u8(&pr, &pad);
        if (pad != i) {
            why = "its padding is wrong";
            goto fail;
        }
    }
    for (size_t i = 0; i < comment_n; i++)
        if (comment[i] < 0x20 || comment[i] == 0x7f) {
            why = "its comment contains control characters";
            goto fail;
        }

    key = key_alloc((const char *)comment, comment_n);
    if (!key) {
        why = "out of memory";
        goto fail;
    }
    memcpy(key->pub, pub, ED25519_LEN);
    memcpy(key->seed, pboth, ED25519_LEN);
    key->has_private = true;

    /* The seed must really produce this public key. */
    EVP_PKEY *pk = key_evp_private(key);
    uint8_t derived[ED25519_LEN];
    size_t dl = sizeof(derived);
    bool ok = pk && EVP_PKEY_get_raw_public_key(pk, derived, &dl) > 0 && dl == ED25519_LEN &&
              memcmp(derived, key->pub, ED25519_LEN) == 0;
    EVP_PKEY_free(pk);
    if (!ok) {
        why = "its private key does not produce its public key";
        keys_key_free(key);
        key = NULL;
        goto fail;
    }
    OPENSSL_cleanse(bin, bin_cap);
    free(bin);
    return key;

fail:
    if (bin) {
        OPENSSL_cleanse(bin, bin_cap);
        free(bin);
    }
    wg_error_set(err, WG_ERR_PROTO, "%s: cannot use this key: %s", what, why);
    return NULL;
}

keys_key *keys_key_load(const char *path, wg_error *err)
{
    /* O_NONBLOCK: opening a FIFO planted at the path must not hang; fstat then refuses it. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ELOOP)
            wg_error_set(err, WG_ERR_PERM,
                         "%s: is a symbolic link; walgate reads private keys only from regular "
                         "files (replace the link with the file itself)",
                         path);
        else if (errno == ENOENT)
            wg_error_set(err, WG_ERR_NOTFOUND, "%s: no such key file", path);
        else
            wg_error_set(err, WG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    keys_key *key = NULL;
    char *text = NULL;
    if (fstat(fd, &st) != 0) {
        wg_error_set(err, WG_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        wg_error_set(err, WG_ERR_PERM, "%s: is not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        wg_error_set(err, WG_ERR_PERM,
                     "%s: private key is readable by group or others (mode %04o); walgate "
                     "refuses to use it. Run: chmod 600 %s",
                     path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    if (st.st_size > KEY_FILE_MAX) {
        wg_error_set(err, WG_ERR_PROTO, "%s: too large for a private key (%lld bytes)", path,
                     (long long)st.st_size);
        goto out;
    }
    text = malloc((size_t)st.st_size + 1);
    if (!text) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, text + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            wg_error_set(err, WG_ERR_IO, "%s: cannot read: %s", path,
                         r < 0 ? strerror(errno) : "unexpected end of file");
            goto out;
        }
        got += (size_t)r;
    }
    key = keys_key_parse_openssh(text, got, path, err);
out:
    if (text) {
        OPENSSL_cleanse(text, (size_t)st.st_size);
        free(text);
    }
    close(fd);
    return key;
}

int keys_key_save(const keys_key *key, const char *path, wg_error *err)
{
    if (!key->has_private)
        return wg_error_set(err, WG_ERR_INTERNAL, "%s: no private key to save", path);
    wg_buf text = {0}, line = {0};
    char pubpath[4096];
    int rc;
    if (snprintf(pubpath, sizeof(pubpath), "%s.pub", path) >= (int)sizeof(pubpath))
        return wg_error_set(err, WG_ERR_CONFIG, "%s: path too long", path);
    if (format_private(key, &text) != 0 || keys_key_authorized_line(key, &line) != 0 ||
        wg_buf_putc(&line, '\n') != 0) {
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    } else if ((rc = wg_write_file_atomic(path, text.data, text.len, 0600, err)) == 0) {
        rc = wg_write_file_atomic(pubpath, line.data, line.len, 0644, err);
    }
    if (text.data)
        OPENSSL_cleanse(text.data, text.cap);
    wg_buf_free(&text);
    wg_buf_free(&line);
    return rc;
}

/* ---- A tunnel's pair ----------------------------------------------------------------------- */

void keys_pair_free(keys_pair *pair)
{
    if (!pair)
        return;
    keys_key_free(pair->primary);
    keys_key_free(pair->secondary);
    pair->primary = pair->secondary = NULL;
}

static int check_name(const char *name, wg_error *err)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
        goto bad;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            goto bad;
    }
    return 0;
bad:
    return wg_error_set(err, WG_ERR_CONFIG,
                        "tunnel name \"%s\" is not allowed: use 1-64 letters, digits, '-', '_' "
                        "or '.', not starting with '.' or '-'",
                        name);
}

int keys_dir(const char *state_dir, const char *name, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/keys/%s", state_dir, name);
    return (n > 0 && (size_t)n < len) ? 0 : -1;
}

static int gen_path(const char *dir, unsigned gen, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/key-%u", dir, gen);
    return (n > 0 && (size_t)n < len) ? 0 : -1;
}

/* Read the pair index. Returns 0, WG_ERR_NOTFOUND when there is none, or another error. */
static int read_pair(const char *dir, unsigned *primary, unsigned *secondary, wg_error *err)
{
    char path[4096];
    wg_buf b = {0};
    snprintf(path, sizeof(path), "%s/" PAIR_FILE, dir);
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return WG_ERR_NOTFOUND;
    int rc = wg_read_file(path, 4096, &b, err);
    if (rc != 0)
        return rc;
    unsigned p = 0, s = 0;
    char magic[32] = {0};
    int consumed = 0;
    if (sscanf(b.data, "%31[^\n]\nprimary %u\nsecondary %u\n%n", magic, &p, &s, &consumed) != 3 ||
        strcmp(magic, PAIR_MAGIC) != 0 || consumed != (int)b.len || p == 0 || s == 0 || p == s)
        rc = wg_error_set(err, WG_ERR_PROTO,
                          "%s: not a walgate key index (damaged?); regenerate the keys with "
                          "`walgate keys generate NAME --force` and install the new lines",
                          path);
    wg_buf_free(&b);
    *primary = p;
    *secondary = s;
    return rc;
}

static int write_pair(const char *dir, unsigned primary, unsigned secondary, wg_error *err)
{
    char path[4096], text[128];
    snprintf(path, sizeof(path), "%s/" PAIR_FILE, dir);
    int n =
        snprintf(text, sizeof(text), PAIR_MAGIC "\nprimary %u\nsecondary %u\n", primary, secondary);
    return wg_write_file_atomic(path, text, (size_t)n, 0600, err);
}

/* The highest key generation present in dir (0 when none). */
static unsigned max_generation(const char *dir)
{
    unsigned max = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        unsigned g;
        if (sscanf(e->d_name, "key-%u", &g) == 1 && g > max)
            max = g;
    }
    closedir(d);
    return max;
}

/* Delete every key generation other than keep1 and keep2 (after the index stopped naming
 * them), and index temporaries a crash left behind. Failures are ignored: a stale file is
 * harmless. */
static void remove_stale(const char *dir, unsigned keep1, unsigned keep2)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        unsigned g;
        bool stale = (sscanf(e->d_name, "key-%u", &g) == 1 && g != keep1 && g != keep2) ||
                     strncmp(e->d_name, PAIR_FILE ".tmp.", strlen(PAIR_FILE ".tmp.")) == 0;
        if (stale) {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

static int make_key(const char *dir, const char *name, const char *role, unsigned gen,
                    keys_key **out, wg_error *err)
{
    char comment[128], path[4096];
    snprintf(comment, sizeof(comment), "walgate-%s-%s", name, role);
    if (gen_path(dir, gen, path, sizeof(path)) != 0)
        return wg_error_set(err, WG_ERR_CONFIG, "%s: path too long", dir);
    keys_key *k = keys_key_generate(comment, err);
    if (!k)
        return err->code;
    int rc = keys_key_save(k, path, err);
    if (rc != 0) {
        keys_key_free(k);
        return rc;
    }
    *out = k;
    return 0;
}

/* Make sure the directory exists with mode 0700 (and refuse one others can enter). */
static int prepare_dir(const char *dir, wg_error *err)
{
    int rc = wg_mkdir_p(dir, 0700, err);
    if (rc != 0)
        return rc;
    struct stat st;
    if (lstat(dir, &st) != 0)
        return wg_error_set(err, WG_ERR_IO, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return wg_error_set(err, WG_ERR_PERM, "%s: is not a directory", dir);
    if ((st.st_mode & 077) && chmod(dir, 0700) != 0)
        return wg_error_set(err, WG_ERR_PERM, "%s: mode %04o and cannot chmod it to 0700: %s", dir,
                            (unsigned)(st.st_mode & 07777), strerror(errno));
    return 0;
}

/* The directory of tunnel `name`'s key pair, once the name is known to be allowed. */
static int pair_dir(const char *state_dir, const char *name, char *dir, size_t len, wg_error *err)
{
    int rc = check_name(name, err);
    if (rc != 0)
        return rc;
    if (keys_dir(state_dir, name, dir, len) != 0)
        return wg_error_set(err, WG_ERR_CONFIG, "state_dir %s: path too long", state_dir);
    return 0;
}

int keys_generate(const char *state_dir, const char *name, bool force, keys_pair *out,
                  wg_error *err)
{
    char dir[4096];
    unsigned p, s;
    int rc;
    out->primary = out->secondary = NULL;
    if ((rc = pair_dir(state_dir, name, dir, sizeof(dir), err)) != 0)
        return rc;
    if ((rc = prepare_dir(dir, err)) != 0)
        return rc;
    rc = read_pair(dir, &p, &s, err);
    if (rc == 0 && !force)
        return wg_error_set(err, WG_ERR_EXISTS,
                            "tunnel %s already has keys in %s; `walgate keys show %s` prints "
                            "them, `walgate keys rotate %s` replaces them without downtime, "
                            "--force makes a new pair (the bastion must then get the new lines)",
                            name, dir, name, name);
    if (rc != 0 && rc != WG_ERR_NOTFOUND && !force)
        return rc;
    wg_error_clear(err);
    unsigned g = max_generation(dir);
    if ((rc = make_key(dir, name, "primary", g + 1, &out->primary, err)) != 0 ||
        (rc = make_key(dir, name, "secondary", g + 2, &out->secondary, err)) != 0 ||
        (rc = write_pair(dir, g + 1, g + 2, err)) != 0) {
        keys_pair_free(out);
        return rc;
    }
    remove_stale(dir, g + 1, g + 2);
    return 0;
}

static int load_gen(const char *dir, unsigned gen, keys_key **out, wg_error *err)
{
    char path[4096];
    if (gen_path(dir, gen, path, sizeof(path)) != 0)
        return wg_error_set(err, WG_ERR_CONFIG, "%s: path too long", dir);
    *out = keys_key_load(path, err);
    return *out ? 0 : err->code;
}

int keys_load(const char *state_dir, const char *name, keys_pair *out, wg_error *err)
{
    char dir[4096];
    unsigned p, s;
    int rc;
    out->primary = out->secondary = NULL;
    if ((rc = pair_dir(state_dir, name, dir, sizeof(dir), err)) != 0)
        return rc;
    rc = read_pair(dir, &p, &s, err);
    if (rc == WG_ERR_NOTFOUND)
        return wg_error_set(err, WG_ERR_NOTFOUND,
                            "tunnel %s has no keys in %s; run: walgate keys generate %s (and "
                            "add the printed lines to the bastion's authorized_keys)",
                            name, dir, name);
    if (rc != 0)
        return rc;
    if ((rc = load_gen(dir, p, &out->primary, err)) != 0 ||
        (rc = load_gen(dir, s, &out->secondary, err)) != 0) {
        keys_pair_free(out);
        return rc;
    }
    return 0;
}

int keys_paths(const char *state_dir, const char *name, char *primary, char *secondary, size_t len,
               wg_error *err)
{
    char dir[4096];
    unsigned p, s;
    int rc;
    if ((rc = pair_dir(state_dir, name, dir, sizeof(dir), err)) != 0)
        return rc;
    rc = read_pair(dir, &p, &s, err);
    if (rc == WG_ERR_NOTFOUND)
        return wg_error_set(err, WG_ERR_NOTFOUND,
                            "tunnel %s has no keys in %s; run: walgate keys generate %s", name, dir,
                            name);
    if (rc != 0)
        return rc;
    if (gen_path(dir, p, primary, len) != 0 || gen_path(dir, s, secondary, len) != 0)
        return wg_error_set(err, WG_ERR_CONFIG, "%s: path too long", dir);
    return 0;
}

int keys_rotate(const char *state_dir, const char *name, keys_pair *out, wg_error *err)
{
    char dir[4096], path[4096];
    keys_pair old = {0};
    unsigned p, s;
    int rc;
    out->primary = out->secondary = NULL;
    if ((rc = keys_load(state_dir, name, &old, err)) != 0)
        return rc;
    keys_dir(state_dir, name, dir, sizeof(dir));
    if ((rc = read_pair(dir, &p, &s, err)) != 0)
        goto out;
    unsigned g = max_generation(dir);

    /* The old secondary becomes the primary: the same key, saved under a new generation with
     * the comment of its new role. */
    char comment[128];
    snprintf(comment, sizeof(comment), "walgate-%s-primary", name);
    out->primary = old.secondary;
    old.secondary = NULL;
    free(out->primary->comment);
    out->primary->comment = strdup(comment);
    if (!out->primary->comment) {
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        goto out;
    }
    gen_path(dir, g + 1, path, sizeof(path));
    if ((rc = keys_key_save(out->primary, path, err)) != 0 ||
        (rc = make_key(dir, name, "secondary", g + 2, &out->secondary, err)) != 0 ||
        (rc = write_pair(dir, g + 1, g + 2, err)) != 0)
        goto out;
    remove_stale(dir, g + 1, g + 2);
out:
    keys_pair_free(&old);
    if (rc != 0)
        keys_pair_free(out);
    return rc;
}
