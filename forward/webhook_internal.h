/*
 * webhook_internal.h — the pure pieces of the webhook sink (forward/webhook.c), exposed for
 * the unit tests and the Retry-After fuzz target: the body, the idempotency key, signatures,
 * Retry-After parsing and the status classification. None of them does I/O.
 */
#ifndef WALGATE_WEBHOOK_INTERNAL_H
#define WALGATE_WEBHOOK_INTERNAL_H

#include "forward/forward.h"

/* Room for "sha256=" + 64 hex digits + NUL. */
#define WH_SIG_WALGATE_MAX 72
/* Secrets an hmac_secret_file may hold at once (a rotation needs two). */
#define WH_KEYS_MAX 4
/* Room for an Idempotency-Key: two batch keys joined by "..". */
#define WH_IDEM_KEY_MAX 200
/* Room for a Standard Webhooks webhook-id: "msg_" + 32 hex digits + NUL. */
#define WH_MSG_ID_MAX 40

/* Format an LSN the PostgreSQL way, "16/B374D848"; buf >= 20 bytes. */

/*
 * The request body (docs/forward.md, "Webhook"):
 *   {"source":"S","batches":[{"key":"K","lsn":"X/Y","records":[REC,REC]}, ...]}
 * Each record is one JSON Lines line of the change log, spliced in as it is (not re-parsed).
 * Appends to `out`; returns 0 or -1 when out of memory.
 */
int wh_build_body(wg_buf *out, const fwd_batch *b);

/*
 * The Idempotency-Key of a request: the key of its only batch, or "FIRST..LAST-PART" where
 * LAST-PART is the last batch's key after its '/' ("orders/00..78-0..00..90-0"). The engine
 * re-sends exactly the same batch boundaries after a failure, so a retry carries the same
 * key. Returns 0, or -1 when b has no items or the result does not fit.
 */
int wh_idempotency_key(const fwd_batch *b, char *out, size_t len);

/* Standard Webhooks webhook-id for an idempotency key: "msg_" + 32 hex digits of its SHA-256
 * (the spec wants no '.' in ids; source names may contain dots). */
void wh_message_id(const char *idem_key, char out[WH_MSG_ID_MAX]);

/* "sha256=" + lower-case hex HMAC-SHA256(key, body). Returns 0 or -1. */
int wh_sign_walgate(const uint8_t *key, size_t keylen, const char *body, size_t bodylen,
                    char out[WH_SIG_WALGATE_MAX]);

/* Standard Webhooks: "v1," + base64(HMAC-SHA256(key, id "." ts "." body)) appended to out. */
int wh_sign_standard(const uint8_t *key, size_t keylen, const char *msg_id, int64_t ts_seconds,
                     const char *body, size_t bodylen, wg_buf *out);

/*
 * Decode a Standard Webhooks secret "whsec_BASE64" into `out`; returns the key length, or -1
 * when the prefix is missing, the base64 is bad or the key does not fit.
 */
long wh_decode_whsec(const char *s, size_t len, uint8_t *out, size_t cap);

/*
 * Parse a Retry-After value: delta-seconds ("120") or an HTTP-date
 * ("Wed, 21 Oct 2015 07:28:00 GMT", also the obsolete RFC 850 and asctime forms), relative to
 * `now_wall_ms`. Sets *ms (a date in the past gives 0; capped at one day) and returns 0, or
 * returns -1 when the value is neither.
 */
int wh_parse_retry_after(const char *v, size_t len, int64_t now_wall_ms, int64_t *ms);

/* What an HTTP status means for delivery: 2xx ok; 408, 429, 5xx retry; anything else fatal. */
fwd_result wh_classify_status(long status);

/*
 * Copy at most `max` bytes of a response body into `out` as one printable line: control
 * characters become spaces, runs of blanks collapse, invalid UTF-8 becomes '?', and "..." marks
 * a cut. Every occurrence of each NULL-terminated `secrets` string is replaced by "[redacted]".
 */
void wh_snippet(const char *body, size_t len, size_t max, const char *const *secrets, char *out,
                size_t outlen);

#endif /* WALGATE_WEBHOOK_INTERNAL_H */
