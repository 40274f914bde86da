/*
 * known_hosts_internal.h — OpenSSH known_hosts files, for tunnel/ only.
 *
 * Lines are "[marker] hostpatterns keytype base64key [comment]", where hostpatterns is a
 * comma-separated list of names ("host", "[host]:port" for a port other than 22, wildcards
 * '*' and '?', negation '!') or a single hashed entry "|1|base64(salt)|base64(HMAC-SHA1(salt,
 * name))". Markers: "@revoked" (the key is refused everywhere) and "@cert-authority" (ignored:
 * walgate does not use host certificates). Comments and blank lines are skipped.
 */
#ifndef WALGATE_TUNNEL_KNOWN_HOSTS_INTERNAL_H
#define WALGATE_TUNNEL_KNOWN_HOSTS_INTERNAL_H

#include "common/common.h"

typedef enum kh_result {
    KH_MATCH = 0, /* a line for this host has exactly this key */
    KH_UNKNOWN,   /* no line for this host (or only lines of other key types) */
    KH_CHANGED,   /* lines for this host and key type exist, none with this key */
    KH_REVOKED,   /* the key is marked @revoked */
} kh_result;

/*
 * Look `host`:`port` and the server's public key blob (SSH wire format) up in the file at
 * `path`. A missing file is KH_UNKNOWN. When the result is KH_CHANGED, the fingerprints
 * ("SHA256:...") of the keys recorded for that host are appended to `known_fps` (comma
 * separated) when it is not NULL. Returns 0 with *res set, or a negative error (unreadable
 * file) with `err` filled naming the file.
 */
int kh_check_file(const char *path, const char *host, int port, const uint8_t *blob,
                  size_t blob_len, kh_result *res, wg_buf *known_fps, wg_error *err);

/* The same over text in memory; `what` names it in messages. Never reads past text+len. */
int kh_check_text(const char *text, size_t len, const char *what, const char *host, int port,
                  const uint8_t *blob, size_t blob_len, kh_result *res, wg_buf *known_fps,
                  wg_error *err);

/*
 * Append a line for host:port with this key to `path` (created mode 0600, parent directories
 * 0700), as "[host]:port" when port != 22, plain (not hashed) so people can read it. Appends
 * under an exclusive lock with O_APPEND and fsyncs.
 */
int kh_add(const char *path, const char *host, int port, const uint8_t *blob, size_t blob_len,
           wg_error *err);

#endif /* WALGATE_TUNNEL_KNOWN_HOSTS_INTERNAL_H */
