/*
 * irc_int.h - internals of the IRC adapter shared between its files and its
 * tests.  Not part of any contract.
 */
#ifndef IRC_INT_H
#define IRC_INT_H

#include <stddef.h>
#include <stdint.h>

#include "im_proto.h"

extern const struct im_proto_ops irc_ops;

/* Limits and defaults (documented in irc.c). */
#define IRC_MAX_IN_LINE         8192u           /* longest accepted line from the server */
#define IRC_LINE_MAX            512u            /* RFC 1459 line, CRLF included */
#define IRC_NICK_MAX            30              /* our limit on a nick (login, address) */
#define IRC_MAX_WATCH           5000u           /* watched nicks per account */
#define IRC_REG_TIMEOUT_MS      60000           /* TCP up -> 001 */
#define IRC_WATCH_DELAY_MS      3000            /* 001 -> presence tracking without an end of MOTD */
#define IRC_PING_IDLE_MS        90000           /* silence before our own PING */
#define IRC_PING_TIMEOUT_MS     60000           /* ... and before giving up after it */
#define IRC_ISON_DEFAULT_MS     20000           /* ISON poll period (option ison_interval, s) */
#define IRC_ISON_BUSY_MS        30000           /* ... while messages wait for the bucket */
#define IRC_FLOOD_BURST         5               /* lines sent back to back (option flood_burst) */
#define IRC_FLOOD_INTERVAL_MS   1000            /* then one line per this (option flood_interval_ms) */
#define IRC_MAX_ALT_NICKS       50              /* nick-in-use retries before giving up */
#define IRC_MAX_QUEUE           (128u << 20)    /* bytes of one send queue: the relay's 1024
                                                 * queued messages of 64 KiB, cut into lines */
#define IRC_MAX_CTCP_QUEUED     4               /* CTCP answers waiting in the queue */

/*
 * Fold an IRC nick to its canonical lower case (rfc1459: A-Z -> a-z and
 * []\~ -> {}|^) in place.
 */
void irc_fold(char *p, size_t n);

/*
 * Remove mIRC formatting (bold ^B, colour ^C with up to two digits and an
 * optional ",bg", hex colour ^D, reset ^O, monospace ^Q, reverse ^V, italics
 * ^], strike-through ^^, underline ^_) and every other C0 control but TAB
 * from p[0..n) in place.  Returns the new length.
 */
size_t irc_strip_format(char *p, size_t n);

/*
 * Write into out (outsz >= 2*n + 1) p[0..n) as UTF-8: unchanged when it is
 * valid UTF-8, else read as Latin-1.  Returns the length written.
 */
size_t irc_to_utf8(const char *p, size_t n, char *out, size_t outsz);

#endif
