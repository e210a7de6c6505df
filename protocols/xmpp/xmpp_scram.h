/*
 * xmpp_scram.h - SCRAM client (RFC 5802, RFC 7677) on mbedTLS.
 *
 * Generic and sans-I/O: it builds and checks the SCRAM messages themselves
 * (not their SASL framing or base64 transport encoding), so any protocol
 * adapter (XMPP, IRC SASL, ...) can use it.  Channel binding is never used:
 * the gs2 header is always "n,," (never pick a -PLUS mechanism with this).
 *
 * Usage, deriving the key inline:
 *   struct scram_ctx sc;
 *   scram_client_first(&sc, SCRAM_SHA256, "user", NULL, rng, out, sz, &n);
 *   scram_client_final(&sc, password, server_first, len, out, sz, &n);
 *   scram_verify_server_final(&sc, server_final, len);     0 = server proven
 *   scram_wipe(&sc);
 * or with the PBKDF2 done elsewhere (im_io.kdf), scram_client_final() split
 * in its two halves around the derivation:
 *   scram_server_first(&sc, server_first, len);            checks, keeps it
 *   scram_kdf_params(&sc, password, &params);  ... key = PBKDF2(params) ...
 *   scram_client_final_key(&sc, key, keylen, out, sz, &n);
 *
 * The user name is escaped ("=" -> "=3D", "," -> "=2C"); neither it nor the
 * password is SASLprep'ed: UTF-8 is used as given, which equals SASLprep for
 * the usual (NFKC-stable, ASCII) inputs.
 */
#ifndef XMPP_SCRAM_H
#define XMPP_SCRAM_H

#include <stddef.h>
#include <stdint.h>

#include "im_kdf.h"
#include "im_rng.h"

enum scram_hash {
    SCRAM_SHA1 = 0,
    SCRAM_SHA256,
};

#define SCRAM_MAX_HASH      32          /* SHA-256 output */
#define SCRAM_NONCE_BYTES   18          /* random bytes -> 24 base64 chars */
#define SCRAM_MAX_NONCE     64          /* a client nonce given by the caller */
#define SCRAM_MAX_CFB       600         /* client-first-message-bare */
#define SCRAM_MAX_SF        2048        /* server-first-message */
#define SCRAM_MAX_SALT      128         /* decoded salt */
#define SCRAM_MAX_ITER      100000u     /* PBKDF2 iterations a server may ask for (the
                                         * server chooses the work: more is refused) */
#define SCRAM_MIN_ITER      1u

enum scram_step {
    SCRAM_STEP_FRESH = 0,
    SCRAM_STEP_FIRST,                   /* client-first written */
    SCRAM_STEP_KEY,                     /* server-first checked, waiting for SaltedPassword */
    SCRAM_STEP_FINAL,                   /* client-final written */
    SCRAM_STEP_DONE,                    /* server signature verified */
};

/* One SCRAM exchange.  Holds key material: scram_wipe() it when done. */
struct scram_ctx {
    enum scram_hash hash;
    enum scram_step step;
    char cfb[SCRAM_MAX_CFB];            /* client-first-message-bare, NUL terminated */
    size_t cfb_len;
    size_t nonce_off;                   /* offset of the client nonce in cfb */
    size_t nonce_len;
    char sf[SCRAM_MAX_SF];              /* server-first-message as received */
    size_t sf_len;
    size_t rnonce_off, rnonce_len;      /* the combined nonce within sf */
    uint8_t salt[SCRAM_MAX_SALT];
    size_t salt_len;
    uint32_t iter;
    uint8_t server_sig[SCRAM_MAX_HASH];
};

/* The SASL mechanism name of a hash ("SCRAM-SHA-1", "SCRAM-SHA-256"). */
const char *scram_mech_name(enum scram_hash h);

/*
 * Start an exchange: write the client-first-message ("n,,n=USER,r=NONCE",
 * not NUL terminated) into out and its length into *outlen.  The nonce is
 * cnonce when non-NULL (printable ASCII without ',', <= SCRAM_MAX_NONCE: for
 * tests), else base64 of SCRAM_NONCE_BYTES from rng (NULL: the default).
 * Returns 0, -IM_EINVAL (bad user or nonce), -IM_ETOOBIG (out too small) or
 * the rng's error.
 */
int scram_client_first(struct scram_ctx *sc, enum scram_hash h, const char *user,
                       const char *cnonce, const struct im_rng *rng,
                       char *out, size_t outsz, size_t *outlen);

/*
 * Check the server-first-message (sf, sflen bytes) and keep it: the server
 * nonce must extend ours, the salt decode (at most SCRAM_MAX_SALT bytes) and
 * the iteration count be within [SCRAM_MIN_ITER, SCRAM_MAX_ITER].  Returns
 * 0 (step KEY), -IM_EPROTO (malformed or an "e=" error), -IM_ELIMIT (a count
 * over SCRAM_MAX_ITER: sc->iter holds it, saturated at UINT32_MAX),
 * -IM_ETOOBIG (over SCRAM_MAX_SF bytes), or -IM_EINVAL when called out of
 * order.
 */
int scram_server_first(struct scram_ctx *sc, const char *sf, size_t sflen);

/*
 * The derivation the exchange needs after scram_server_first(): PBKDF2 of
 * password (NUL-terminated) with the server's salt and iteration count.
 * p points into sc and at password: valid while both are.
 */
void scram_kdf_params(const struct scram_ctx *sc, const char *password, struct im_kdf_params *p);

/*
 * Write the client-final-message into out from SaltedPassword (saltedlen
 * bytes, the hash's output size).  Returns 0 (step FINAL), -IM_ETOOBIG,
 * -IM_EINVAL (out of order, or a key of the wrong length).  Intermediate
 * keys are wiped; salted is the caller's to wipe.
 */
int scram_client_final_key(struct scram_ctx *sc, const uint8_t *salted, size_t saltedlen,
                           char *out, size_t outsz, size_t *outlen);

/*
 * Both halves with the derivation inline: answer the server-first-message
 * with the client-final-message.  Returns as scram_server_first() and
 * scram_client_final_key(), or -ENOMEM.
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
