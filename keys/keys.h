/*
 * keys.h — ed25519 key pairs for SSH tunnels.
 *
 * Every tunnel NAME has two key pairs under STATE_DIR/keys/NAME/: a primary and a secondary.
 * The tunnel authenticates with the primary and falls back to the secondary, so a bastion
 * whose authorized_keys holds either keeps working across a rotation. Private keys are stored
 * in the OpenSSH private-key format (unencrypted "openssh-key-v1"), mode 0600, in a directory
 * of mode 0700, so `ssh` and `ssh-keygen` can read them too. Keys are made with OpenSSL.
 */
#ifndef WALGATE_KEYS_H
#define WALGATE_KEYS_H

#include "common/common.h"

/* One ed25519 key pair (or a public key alone, when parsed from a public-key line). */
typedef struct keys_key keys_key;

/* A tunnel's two key pairs. Either pointer may be NULL only while being built. */
typedef struct keys_pair {
    keys_key *primary;
    keys_key *secondary;
} keys_pair;

/* Generate a new ed25519 key pair with the given comment (copied). NULL + err on failure. */
keys_key *keys_key_generate(const char *comment, wg_error *err);

/*
 * Parse an OpenSSH private key file's text ("-----BEGIN OPENSSH PRIVATE KEY-----" ...). Only
 * unencrypted ed25519 keys are accepted; anything else is refused with a message naming
 * `what` (usually the file path). Never reads outside [text, text+len). Returns a new key.
 */
keys_key *keys_key_parse_openssh(const char *text, size_t len, const char *what, wg_error *err);

/*
 * Load a private key from `path`. Refuses a file that group or others can read (the message
 * says so and gives the chmod), a symlink, or a file that is not an ed25519 OpenSSH key.
 */
keys_key *keys_key_load(const char *path, wg_error *err);

/* Write the private key to `path` (mode 0600, atomically) and "PATH.pub" (mode 0644). */
int keys_key_save(const keys_key *key, const char *path, wg_error *err);

/* The public key in SSH wire format (string "ssh-ed25519", string key[32]) appended to out. */
int keys_key_public_blob(const keys_key *key, wg_buf *out);

/* "ssh-ed25519 AAAA... COMMENT" (no newline) appended to out. */
int keys_key_authorized_line(const keys_key *key, wg_buf *out);

/* "SHA256:<unpadded base64 of sha256(blob)>", as ssh-keygen -l prints it. */
int keys_key_fingerprint(const keys_key *key, char *buf, size_t len);
/* The same fingerprint for any public key blob (used for host keys). */
int keys_fingerprint_blob(const uint8_t *blob, size_t len, char *buf, size_t buflen);

/*
 * Sign `data` as an SSH "ssh-ed25519" signature blob (string "ssh-ed25519", string sig[64])
 * appended to `sig_blob`. Fails for a key without its private half.
 */
int keys_key_sign(const keys_key *key, const uint8_t *data, size_t len, wg_buf *sig_blob,
                  wg_error *err);

const char *keys_key_comment(const keys_key *key);
void keys_key_free(keys_key *key);

/*
 * Generate both pairs for tunnel `name` under state_dir/keys/name/ (comments
 * "walgate-NAME-primary" and "walgate-NAME-secondary"). Refuses to overwrite existing keys
 * unless `force`. On success `out` owns both keys.
 */
int keys_generate(const char *state_dir, const char *name, bool force, keys_pair *out,
                  wg_error *err);

/* Load both pairs of tunnel `name`; the error says to run `walgate keys generate NAME`. */
int keys_load(const char *state_dir, const char *name, keys_pair *out, wg_error *err);

/*
 * Rotate: the secondary becomes the primary and a new secondary is generated. Crash-safe:
 * after a crash at any point, keys_load returns either the old pair or the new one.
 */
int keys_rotate(const char *state_dir, const char *name, keys_pair *out, wg_error *err);

/*
 * The paths of tunnel `name`'s current primary and secondary private key files (OpenSSH format,
 * mode 0600), for `ssh -o IdentityFile=...` (transport = openssh). The files are not read.
 */
int keys_paths(const char *state_dir, const char *name, char *primary, char *secondary, size_t len,
               wg_error *err);

/* The directory holding tunnel `name`'s keys, written into buf. */
int keys_dir(const char *state_dir, const char *name, char *buf, size_t len);

void keys_pair_free(keys_pair *pair);

#endif /* WALGATE_KEYS_H */
