/*
 * xmpp_scram.h - SCRAM client (RFC 5802, RFC 7677) on mbedTLS.
 *
 * Generic and sans-I/O: it builds and checks the SCRAM messages themselves
 * (not their SASL framing or base64 transport encoding), so any protocol
 * adapter (XMPP, IRC SASL, ...) can use it.  Channel binding is never used:
 * the gs2 header is always "n,," (never pick a -PLUS mechanism with this).
 *
 * Usage:
 *   struct scram_ctx sc;
 *   scram_client_first(&sc, SCRAM_SHA256, "user", NULL, rnd, ud, out, sz, &n);
 *   scram_client_final(&sc, password, server_first, len, out, sz, &n);
 *   scram_verify_server_final(&sc, server_final, len);     0 = server proven
 *   scram_wipe(&sc);
 *
 * The user name is escaped ("=" -> "=3D", "," -> "=2C"); neither it nor the
 * password is SASLprep'ed: UTF-8 is used as given, which equals SASLprep for
 * the usual (NFKC-stable, ASCII) inputs.
 */
#ifndef XMPP_SCRAM_H
#define XMPP_SCRAM_H

#include <stddef.h>
#include <stdint.h>

enum scram_hash {
    SCRAM_SHA1 = 0,
    SCRAM_SHA256,
};

#define SCRAM_MAX_HASH      32          /* SHA-256 output */
#define SCRAM_NONCE_BYTES   18          /* random bytes -> 24 base64 chars */
#define SCRAM_MAX_NONCE     64          /* a client nonce given by the caller */
#define SCRAM_MAX_CFB       600         /* client-first-message-bare */
#define SCRAM_MAX_ITER      1000000u    /* refuse absurd iteration counts */
#define SCRAM_MIN_ITER      1u

/* Fill buf with n random bytes; 0 or negative. */
typedef int (*scram_rand_fn)(void *ud, uint8_t *buf, size_t n);

/* One SCRAM exchange.  Holds key material: scram_wipe() it when done. */
struct scram_ctx {
    enum scram_hash hash;
    int step;                           /* 0 fresh, 1 first sent, 2 final sent, 3 verified */
    char cfb[SCRAM_MAX_CFB];            /* client-first-message-bare, NUL terminated */
    size_t cfb_len;
    size_t nonce_off;                   /* offset of the client nonce in cfb */
    size_t nonce_len;
    uint8_t server_sig[SCRAM_MAX_HASH];
};

/* The SASL mechanism name of a hash ("SCRAM-SHA-1", "SCRAM-SHA-256"). */
const char *scram_mech_name(enum scram_hash h);

/*
 * Start an exchange: write the client-first-message ("n,,n=USER,r=NONCE",
 * not NUL terminated) into out and its length into *outlen.  The nonce is
 * cnonce when non-NULL (printable ASCII without ',', <= SCRAM_MAX_NONCE: for
 * tests), else base64 of SCRAM_NONCE_BYTES from rnd.  Returns 0, -IM_EINVAL
 * (bad user or nonce), -IM_ETOOBIG (out too small) or the rnd error.
 */
int scram_client_first(struct scram_ctx *sc, enum scram_hash h, const char *user,
                       const char *cnonce, scram_rand_fn rnd, void *rnd_ud,
                       char *out, size_t outsz, size_t *outlen);

/*
 * Answer the server-first-message (sf, sflen bytes): write the
 * client-final-message into out.  Checks that the server nonce extends ours,
 * the salt decodes and the iteration count is within [SCRAM_MIN_ITER,
 * SCRAM_MAX_ITER].  Returns 0, -IM_EPROTO (malformed or an "e=" error),
 * -IM_ETOOBIG, or -IM_EINVAL when called out of order.
 */
int scram_client_final(struct scram_ctx *sc, const char *password,
                       const char *sf, size_t sflen,
                       char *out, size_t outsz, size_t *outlen);

/*
 * Check the server-final-message ("v=..."): 0 when the server signature
 * matches, -IM_EAUTH when it differs or the server sent "e=...",
 * -IM_EPROTO when malformed or out of order.
 */
int scram_verify_server_final(struct scram_ctx *sc, const char *sfin, size_t len);

/* Wipe the context's secrets. */
void scram_wipe(struct scram_ctx *sc);

#endif
