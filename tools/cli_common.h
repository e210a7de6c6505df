/*
 * cli_common.h - code shared by the two command-line tools, imfuse (the
 * user's client) and imfusectl (the operator's CLI): argument parsing, one
 * blocking request/reply connection speaking the client protocol framing
 * (DESIGN.md §4), JSON and table output, password input.
 *
 * Nothing here prints on its own except the cli_print_* functions, which
 * write to the FILE they are given.  Functions return 0 or a negative code
 * (-errno or -IM_E*) unless stated.
 */
#ifndef CLI_COMMON_H
#define CLI_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <msgpack.h>

#include "im_buf.h"
#include "im_clock.h"
#include "client/cl_frame.h"

/* Exit codes shared by both tools (docs/OPERATIONS.md, "## Tools"). */
#define CLI_EXIT_OK     0       /* done */
#define CLI_EXIT_ERROR  1       /* the server answered with an error, or bad local input */
#define CLI_EXIT_CONN   2       /* cannot connect, connection lost, no reply in time */
#define CLI_EXIT_WAIT   3       /* a wait ran out (listen --count, link --wait) */
#define CLI_EXIT_USAGE  64      /* bad command line (EX_USAGE) */

/* ---- command line ---------------------------------------------------- */

/* One option a tool accepts: "-u", "--tls".  Long options with an argument
 * also accept "--tls=VALUE".  A table of them ends with { NULL }. */
struct cli_optspec {
    const char *name;
    bool arg;                   /* takes a value */
};

/* One option as given; val is "" for an option without argument. */
struct cli_optval {
    const char *name;           /* the spec's name (static) */
    const char *val;            /* points into argv */
};

/* A parsed command line: positionals in order (pos[0] is the command) and
 * options in order.  Owns its two arrays; the strings belong to argv. */
struct cli_args {
    int npos;
    const char **pos;
    int nopt;
    struct cli_optval *opt;
};

/* Options of one command (by pos[0]); NULL when the command has none. */
typedef const struct cli_optspec *cli_cmdopts_fn(const char *cmd);

/*
 * Parse argv[1..argc).  Options from `global` are accepted anywhere; those
 * returned by cmdopts(command) only after the command word.  "--" ends the
 * options.  Returns 0, -IM_EINVAL with a sentence in why[] (unknown option,
 * missing value) or -ENOMEM.  On success the caller frees with cli_args_free().
 */
int cli_args_parse(struct cli_args *a, int argc, char **argv, const struct cli_optspec *global,
                   cli_cmdopts_fn *cmdopts, char *why, size_t whysz);
void cli_args_free(struct cli_args *a);

/* Last value given for option `name` ("" for a flag), or NULL when absent. */
const char *cli_opt(const struct cli_args *a, const char *name);
/* Iterate every value of `name`: start with *it = 0; returns NULL at the end. */
const char *cli_opt_next(const struct cli_args *a, const char *name, int *it);

/* Decimal digits only, no sign, no overflow: 0 or -IM_EINVAL. */
int cli_parse_uint(const char *s, uint64_t *out);
/* Seconds as "N" or "N.M" (> 0 and <= 1 day) into milliseconds. */
int cli_parse_seconds(const char *s, int *ms);
/* "ACCOUNT:ADDRESS" (ACCOUNT decimal, ADDRESS non-empty, may hold ':').
 * *address points into s. */
int cli_parse_member(const char *s, uint64_t *account, const char **address);
/* "KEY=VALUE" with a non-empty KEY; *val points into s, *keylen is KEY's length. */
int cli_parse_kv(const char *s, size_t *keylen, const char **val);

/* What a `send` TARGET names. */
enum cli_target_kind {
    CLI_TARGET_ID = 0,          /* all digits: a unified contact id */
    CLI_TARGET_MEMBER,          /* DIGITS:ADDRESS: an (account, address) */
    CLI_TARGET_NAME,            /* anything else: a unified contact name */
};

struct cli_target {
    enum cli_target_kind kind;
    uint64_t id;                /* CLI_TARGET_ID */
    uint64_t account;           /* CLI_TARGET_MEMBER */
    const char *text;           /* MEMBER: the address; NAME: the name (points into s) */
};

/* Classify a send TARGET; -IM_EINVAL when empty or out of range. */
int cli_parse_target(const char *s, struct cli_target *t);

/* ---- connection ------------------------------------------------------ */

/* One received frame.  The decoded message's views stay valid until
 * cli_frame_free(); frames are chained only while queued as events. */
struct cli_frame {
    struct cli_frame *next;
    struct cl_msg msg;
};

void cli_frame_free(struct cli_frame *f);

/* A connected client (or control) socket with its receive buffer and the
 * events that arrived while waiting for a reply. */
struct cli_conn {
    int fd;
    struct im_buf rx;           /* bytes read, at most one frame and its length */
    uint64_t last_id;
    struct cli_frame *ev_head, *ev_tail;
};

void cli_conn_init(struct cli_conn *c);
/* Connect to a UNIX stream socket.  Returns 0 or -errno. */
int cli_connect_unix(struct cli_conn *c, const char *path);
/* Connect to "host:port" within timeout_ms.  -IM_EINVAL (bad address, with
 * why[] set), -EHOSTUNREACH when the name does not resolve, -ETIMEDOUT or -errno. */
int cli_connect_tcp(struct cli_conn *c, const char *hostport, int timeout_ms,
                    char *why, size_t whysz);
/* Close the socket, free the buffer and every queued event. */
void cli_conn_close(struct cli_conn *c);

/* A monotonic clock in milliseconds. */
int64_t cli_mono_ms(void);

/* A fresh request id (1, 2, ...). */
uint64_t cli_next_id(struct cli_conn *c);

/* Finish e's frame and write it within timeout_ms.  e is not freed.
 * -IM_ETOOBIG when the frame exceeds 1 MiB, -ETIMEDOUT, -EPIPE or -errno. */
int cli_send(struct cli_conn *c, struct cl_enc *e, int timeout_ms);

/*
 * Send e (finishing it) and wait up to timeout_ms for the reply with this
 * id, or for an error frame without id (the server then closes).  Events
 * that arrive meanwhile are queued for cli_event(); other frames are dropped.
 * On 0 the caller owns *reply.  Errors: -ETIMEDOUT, -ECONNRESET (closed),
 * -IM_ETOOBIG / -IM_EINVAL (bad frame from the server), -errno.
 */
int cli_call(struct cli_conn *c, struct cl_enc *e, uint64_t id, struct cli_frame **reply,
             int timeout_ms);

/*
 * The next event (a frame without id): queued ones first, then from the
 * socket, waiting at most timeout_ms (< 0: forever).  Frames with an id
 * (late replies) are dropped.  Errors as cli_call().  The caller owns *ev.
 */
int cli_event(struct cli_conn *c, struct cli_frame **ev, int timeout_ms);

/* Words for a cli_call()/cli_event() failure ("connection closed by the server"...). */
const char *cli_io_strerror(int rc);

/* ---- replies and output ---------------------------------------------- */

/* The value of `key` in a map object, or NULL. */
const msgpack_object *cli_map_get(const msgpack_object *map, const char *key);
/* The op of a reply is "ok". */
bool cli_is_ok(const struct cl_msg *m);
/* Print "PROG: CODE: MESSAGE\n" for an error reply (anything not ok). */
void cli_print_error(FILE *f, const char *prog, const struct cl_msg *m);

/* Print o as one line of compact JSON and flush.  0, -ENOMEM or -IM_EINVAL. */
int cli_print_json(FILE *f, const msgpack_object *o);
/* Print a reply's map minus "op" and "id" as one JSON object line. */
int cli_print_fields_json(FILE *f, const msgpack_object *map);

/* A value as table text: str as is, integers in decimal, bool true/false,
 * nil "", arrays joined with ",", maps as JSON.  malloc'd, NULL on OOM. */
char *cli_obj_text(const msgpack_object *o);
/* Milliseconds since the epoch as local "YYYY-MM-DD HH:MM:SS" (buf >= 20). */
void cli_time_text(uint64_t ms, char *buf, size_t sz);

enum cli_col_kind {
    CLI_COL_TEXT = 0,
    CLI_COL_TIME_MS,            /* a uint of ms since the epoch */
    CLI_COL_MEMBERS,            /* [{account, address}] as "ACCOUNT:ADDRESS, ..." */
};

/* One column of a table: the map key of each row and the header. */
struct cli_col {
    const char *key;
    const char *head;
    enum cli_col_kind kind;
};

/*
 * Format an array of maps as an aligned table: a header row, then one row per
 * element (missing keys and non-map rows give empty cells), columns two spaces
 * apart, no trailing blanks.  ncols columns.  Returns the malloc'd text
 * (the caller frees) or NULL on OOM or when rows is not an array.
 */
char *cli_table_format(const msgpack_object *rows, const struct cli_col *cols, size_t ncols);

/* ---- passwords --------------------------------------------------------- */

/*
 * Prompt on /dev/tty with echo off and read one line (without its newline)
 * into buf.  Returns the length, -ENXIO when there is no terminal,
 * -IM_ETOOBIG when the line does not fit, or -errno.
 */
int cli_tty_password(const char *prompt, char *buf, size_t sz);
/* Read the first line of fd (without "\n" or "\r\n") into buf; length or -errno,
 * -IM_ETOOBIG when longer than sz - 1. */
int cli_read_line(int fd, char *buf, size_t sz);

#endif
