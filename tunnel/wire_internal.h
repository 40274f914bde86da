/*
 * wire_internal.h — the few bytes of the SSH transport walgate reads itself, for tunnel/ only:
 * the server's identification line (RFC 4253 4.2) and its KEXINIT (RFC 4253 7.1). libssh2 does
 * the protocol; walgate watches these bytes go by to refuse a hostile or foreign server early
 * and to say what it offered when no algorithm matched.
 */
#ifndef WALGATE_TUNNEL_WIRE_INTERNAL_H
#define WALGATE_TUNNEL_WIRE_INTERNAL_H

#include "common/common.h"

/* RFC 4253 4.2: the identification line is at most 255 bytes with its CR LF. */
#define SSH_IDENT_MAX 255

typedef enum ssh_ident_state {
    SSH_IDENT_READING = 0,
    SSH_IDENT_OK,       /* a line starting "SSH-" ended within SSH_IDENT_MAX bytes */
    SSH_IDENT_TOO_LONG, /* SSH_IDENT_MAX bytes without a line end */
    SSH_IDENT_NOT_SSH,  /* the line ended but does not start with "SSH-" */
} ssh_ident_state;

typedef struct ssh_ident {
    ssh_ident_state state;
    size_t len;                   /* bytes of the line so far (line ends not counted) */
    char line[SSH_IDENT_MAX + 1]; /* the raw line so far, NUL-terminated (may hold NULs) */
} ssh_ident;

/*
 * Feed the next `n` bytes the server sent. Leading CR/LF are skipped (as libssh2 does). Returns
 * how many of them belong to the identification line, its line end included; the rest (when
 * the state is no longer SSH_IDENT_READING) follow it. Once the state has left READING, no
 * byte is consumed.
 */
size_t ssh_ident_feed(ssh_ident *id, const uint8_t *p, size_t n);

/* The name-lists of a KEXINIT that decide whether a key exchange can succeed. */
typedef struct ssh_kexinit {
    const char *kex, *hostkey, *enc_cs, *enc_sc, *mac_cs, *mac_sc;
    size_t kex_len, hostkey_len, enc_cs_len, enc_sc_len, mac_cs_len, mac_sc_len;
} ssh_kexinit;

/*
 * Parse the first binary packet of the server (uint32 packet_length, byte padding_length,
 * payload, padding; unencrypted) as a KEXINIT. The name-lists point into `p`. Returns 0, or -1
 * when the bytes are incomplete or are not a well-formed KEXINIT.
 */
int ssh_kexinit_parse(const uint8_t *p, size_t n, ssh_kexinit *out);

/* Whether the comma-separated lists `a` (alen bytes) and `b` (NUL-terminated) share a name. */
bool ssh_namelist_overlap(const char *a, size_t alen, const char *b);

#endif /* WALGATE_TUNNEL_WIRE_INTERNAL_H */
