/*
 * cli_common.c - shared code of imfuse and imfusectl (see cli_common.h).
 */
#include "cli_common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "client/cl_json.h"

/* ---- command line ---------------------------------------------------- */

static const struct cli_optspec *
opt_find(const struct cli_optspec *specs, const char *arg, size_t n)
{
    for (; specs && specs->name; specs++)
        if (strlen(specs->name) == n && !memcmp(specs->name, arg, n))
            return specs;
    return NULL;
}

int
cli_args_parse(struct cli_args *a, int argc, char **argv, const struct cli_optspec *global,
               cli_cmdopts_fn *cmdopts, char *why, size_t whysz)
{
    const struct cli_optspec *cmd = NULL;
    bool opts_done = false;
    int rc = -ENOMEM;

    memset(a, 0, sizeof(*a));
    a->pos = calloc((size_t)(argc > 0 ? argc : 1), sizeof(*a->pos));
    a->opt = calloc((size_t)(argc > 0 ? argc : 1), sizeof(*a->opt));
    if (!a->pos || !a->opt)
        goto fail;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (opts_done || s[0] != '-' || s[1] == '\0') {
            a->pos[a->npos++] = s;
            if (a->npos == 1 && cmdopts)
                cmd = cmdopts(s);
            continue;
        }
        if (!strcmp(s, "--")) {
            opts_done = true;
            continue;
        }
        const char *eq = s[1] == '-' ? strchr(s, '=') : NULL;
        size_t n = eq ? (size_t)(eq - s) : strlen(s);
        const struct cli_optspec *spec = opt_find(cmd, s, n);
        if (!spec)
            spec = opt_find(global, s, n);
        if (!spec) {
            snprintf(why, whysz, "unknown option %.*s%s%s", (int)n, s,
                     a->npos ? " for " : "", a->npos ? a->pos[0] : "");
            rc = -IM_EINVAL;
            goto fail;
        }
        const char *val = "";
        if (spec->arg) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else {
                snprintf(why, whysz, "option %s needs a value", spec->name);
                rc = -IM_EINVAL;
                goto fail;
            }
        } else if (eq) {
            snprintf(why, whysz, "option %s takes no value", spec->name);
            rc = -IM_EINVAL;
            goto fail;
        }
        a->opt[a->nopt].name = spec->name;
        a->opt[a->nopt].val = val;
        a->nopt++;
    }
    return 0;
fail:
    if (rc == -ENOMEM)
        snprintf(why, whysz, "out of memory");
    cli_args_free(a);
    return rc;
}

void
cli_args_free(struct cli_args *a)
{
    free(a->pos);
    free(a->opt);
    memset(a, 0, sizeof(*a));
}

const char *
cli_opt(const struct cli_args *a, const char *name)
{
    const char *v = NULL;
    for (int i = 0; i < a->nopt; i++)
        if (!strcmp(a->opt[i].name, name))
            v = a->opt[i].val;
    return v;
}

const char *
cli_opt_next(const struct cli_args *a, const char *name, int *it)
{
    for (; *it < a->nopt; (*it)++)
        if (!strcmp(a->opt[*it].name, name))
            return a->opt[(*it)++].val;
    return NULL;
}

int
cli_parse_uint(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (!s || !*s)
        return -IM_EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -IM_EINVAL;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -IM_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int
cli_parse_seconds(const char *s, int *ms)
{
    uint64_t whole = 0, frac = 0, scale = 1000;
    const char *p = s;

    if (!s || *s < '0' || *s > '9')
        return -IM_EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        whole = whole * 10 + (uint64_t)(*p - '0');
        if (whole > 86400)
            return -IM_EINVAL;
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -IM_EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
            scale /= 10;
            frac += (uint64_t)(*p - '0') * scale;     /* digits past ms add 0 */
        }
    }
    if (*p)
        return -IM_EINVAL;
    uint64_t total = whole * 1000 + frac;
    if (total == 0 || total > 86400u * 1000u)
        return -IM_EINVAL;
    *ms = (int)total;
    return 0;
}

int
cli_parse_member(const char *s, uint64_t *account, const char **address)
{
    const char *colon = s ? strchr(s, ':') : NULL;
    char num[24];

    if (!colon || colon == s || (size_t)(colon - s) >= sizeof(num) || !colon[1])
        return -IM_EINVAL;
    memcpy(num, s, (size_t)(colon - s));
    num[colon - s] = '\0';
    if (cli_parse_uint(num, account))
        return -IM_EINVAL;
    *address = colon + 1;
    return 0;
}

int
cli_parse_kv(const char *s, size_t *keylen, const char **val)
{
    const char *eq = s ? strchr(s, '=') : NULL;

    if (!eq || eq == s)
        return -IM_EINVAL;
    *keylen = (size_t)(eq - s);
    *val = eq + 1;
    return 0;
}

int
cli_parse_target(const char *s, struct cli_target *t)
{
    uint64_t v;

    memset(t, 0, sizeof(*t));
    if (!s || !*s)
        return -IM_EINVAL;
    if (s[strspn(s, "0123456789")] == '\0') {
        if (cli_parse_uint(s, &v))
            return -IM_EINVAL;
        t->kind = CLI_TARGET_ID;
        t->id = v;
        return 0;
    }
    size_t digits = strspn(s, "0123456789");
    if (digits > 0 && s[digits] == ':') {
        if (cli_parse_member(s, &t->account, &t->text))
            return -IM_EINVAL;
        t->kind = CLI_TARGET_MEMBER;
        return 0;
    }
    t->kind = CLI_TARGET_NAME;
    t->text = s;
    return 0;
}

/* ---- connection ------------------------------------------------------ */

int64_t
cli_mono_ms(void)
{
    return (int64_t)im_mono_ms();
}

/* Milliseconds left until deadline (< 0 deadline: -1 = forever). */
static int
left_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t d = deadline - cli_mono_ms();
    return d < 0 ? 0 : d > INT_MAX ? INT_MAX : (int)d;
}

static int64_t
deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : cli_mono_ms() + timeout_ms;
}

void
cli_frame_free(struct cli_frame *f)
{
    if (!f)
        return;
    cl_msg_free(&f->msg);
    free(f);
}

void
cli_conn_init(struct cli_conn *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    im_buf_init(&c->rx, CL_FRAME_MAX + 4);
}

static int
set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

int
cli_connect_unix(struct cli_conn *c, const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd, rc;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    do
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    while (rc < 0 && errno == EINTR);
    if (rc < 0)
        rc = -errno;
    else
        rc = set_nonblock(fd);
    if (rc) {
        close(fd);
        return rc;
    }
    c->fd = fd;
    return 0;
}

/* Non-blocking connect to one address, finished within deadline. */
static int
connect_one(const struct addrinfo *ai, int64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    int rc;

    if (fd < 0)
        return -errno;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        rc = -errno;
        goto fail;
    }
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        int n = poll(&pfd, 1, left_ms(deadline));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            goto fail;
        }
        if (n == 0) {
            rc = -ETIMEDOUT;
            goto fail;
        }
        break;
    }
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err) {
        rc = -err;
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return rc;
}

int
cli_connect_tcp(struct cli_conn *c, const char *hostport, int timeout_ms, char *why, size_t whysz)
{
    char host[IM_HOST_MAX + 1], port[8];
    unsigned pn;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int64_t deadline = deadline_of(timeout_ms);
    int rc;

    if (im_parse_hostport(hostport, host, sizeof(host), &pn)) {
        snprintf(why, whysz, "bad server address %s (want HOST:PORT)", hostport);
        return -IM_EINVAL;
    }
    snprintf(port, sizeof(port), "%u", pn);
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc) {
        snprintf(why, whysz, "%s: %s", host, gai_strerror(rc));
        return -EHOSTUNREACH;
    }
    rc = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = connect_one(ai, deadline);
        if (fd >= 0) {
            c->fd = fd;
            rc = 0;
            break;
        }
        rc = fd;
    }
    freeaddrinfo(res);
    if (rc)
        snprintf(why, whysz, "%s", strerror(-rc));
    return rc;
}

void
cli_conn_close(struct cli_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    im_buf_free(&c->rx);
    while (c->ev_head) {
        struct cli_frame *f = c->ev_head;
        c->ev_head = f->next;
        cli_frame_free(f);
    }
    cli_conn_init(c);
}

uint64_t
cli_next_id(struct cli_conn *c)
{
    return ++c->last_id;
}

static int
write_all(struct cli_conn *c, const uint8_t *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
        int r = poll(&pfd, 1, left_ms(deadline));
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r == 0)
            return -ETIMEDOUT;
    }
    return 0;
}

int
cli_send(struct cli_conn *c, struct cl_enc *e, int timeout_ms)
{
    size_t len;
    const uint8_t *p = cl_enc_finish(e, &len);

    if (!p)
        return -IM_ETOOBIG;
    return write_all(c, p, len, deadline_of(timeout_ms));
}

/* Read the next frame from the socket into a new cli_frame. */
static int
recv_frame(struct cli_conn *c, struct cli_frame **out, int64_t deadline)
{
    for (;;) {
        const uint8_t *body;
        uint32_t blen;
        long n = cl_frame_split((const uint8_t *)im_buf_data(&c->rx), im_buf_len(&c->rx), &body, &blen);
        if (n > 0) {
            struct cli_frame *f = calloc(1, sizeof(*f));
            if (!f)
                return -ENOMEM;
            int rc = cl_msg_decode(&f->msg, body, blen);
            if (rc) {
                free(f);
                return rc;
            }
            im_buf_consume(&c->rx, (size_t)n);
            *out = f;
            return 0;
        }
        if (n != -EAGAIN)
            return (int)n;
        size_t room;
        char *at = im_buf_space(&c->rx, &room);
        if (!room) {
            /* Grow by what is read at once; never past a whole frame (split
             * refuses a longer one before the buffer is full). */
            int rc = im_buf_reserve(&c->rx, 4096);
            if (rc)
                return rc;
            at = im_buf_space(&c->rx, &room);
        }
        ssize_t r = read(c->fd, at, room);
        if (r > 0) {
            im_buf_added(&c->rx, (size_t)r);
            continue;
        }
        if (r == 0)
            return -ECONNRESET;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        int p = poll(&pfd, 1, left_ms(deadline));
        if (p < 0 && errno != EINTR)
            return -errno;
        if (p == 0)
            return -ETIMEDOUT;
    }
}

static void
queue_event(struct cli_conn *c, struct cli_frame *f)
{
    f->next = NULL;
    if (c->ev_tail)
        c->ev_tail->next = f;
    else
        c->ev_head = f;
    c->ev_tail = f;
}

/* An error frame without id: the server refused the connection's input. */
static bool
is_fatal_error(const struct cl_msg *m)
{
    return !m->has_id && cl_view_eq(m->op, "error");
}

int
cli_call(struct cli_conn *c, struct cl_enc *e, uint64_t id, struct cli_frame **reply,
         int timeout_ms)
{
    int64_t deadline = deadline_of(timeout_ms);
    size_t len;
    const uint8_t *p = cl_enc_finish(e, &len);
    int rc;

    if (!p)
        return -IM_ETOOBIG;
    rc = write_all(c, p, len, deadline);
    if (rc)
        return rc;
    for (;;) {
        struct cli_frame *f;
        rc = recv_frame(c, &f, deadline);
        if (rc)
            return rc;
        if ((f->msg.has_id && f->msg.id == id) || is_fatal_error(&f->msg)) {
            *reply = f;
            return 0;
        }
        if (!f->msg.has_id && !cli_map_get(&f->msg.root, "id"))
            queue_event(c, f);
        else
            cli_frame_free(f);
    }
}

int
cli_event(struct cli_conn *c, struct cli_frame **ev, int timeout_ms)
{
    int64_t deadline = deadline_of(timeout_ms);

    if (c->ev_head) {
        struct cli_frame *f = c->ev_head;
        c->ev_head = f->next;
        if (!c->ev_head)
            c->ev_tail = NULL;
        f->next = NULL;
        *ev = f;
        return 0;
    }
    for (;;) {
        struct cli_frame *f;
        int rc = recv_frame(c, &f, deadline);
        if (rc)
            return rc;
        if (!f->msg.has_id && !cli_map_get(&f->msg.root, "id")) {
            *ev = f;
            return 0;
        }
        cli_frame_free(f);
    }
}

const char *
cli_io_strerror(int rc)
{
    switch (rc) {
    case -ETIMEDOUT:    return "no answer from the server in time";
    case -ECONNRESET:   return "connection closed by the server";
    case -IM_ETOOBIG:   return "frame over 1 MiB";
    case -IM_EINVAL:    return "undecodable frame from the server";
    case -ENOMEM:       return "out of memory";
    default:            return strerror(rc < 0 ? -rc : rc);
    }
}

/* ---- replies and output ---------------------------------------------- */

const msgpack_object *
cli_map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (cl_str_eq(&map->via.map.ptr[i].key, key))
            return &map->via.map.ptr[i].val;
    return NULL;
}

bool
cli_is_ok(const struct cl_msg *m)
{
    return cl_view_eq(m->op, "ok");
}

void
cli_print_error(FILE *f, const char *prog, const struct cl_msg *m)
{
    const msgpack_object *code = cli_map_get(&m->root, "code");
    const msgpack_object *msg = cli_map_get(&m->root, "message");
    bool cs = code && code->type == MSGPACK_OBJECT_STR;
    bool ms = msg && msg->type == MSGPACK_OBJECT_STR;

    fprintf(f, "%s: %.*s: %.*s\n", prog,
            cs ? (int)code->via.str.size : 7, cs ? code->via.str.ptr : "unknown",
            ms ? (int)msg->via.str.size : 0, ms ? msg->via.str.ptr : "");
}

int
cli_print_json(FILE *f, const msgpack_object *o)
{
    char *out = NULL;
    size_t len = 0;
    int rc = cl_json_write(o, &out, &len);

    if (rc)
        return rc;
    fwrite(out, 1, len, f);
    fputc('\n', f);
    fflush(f);
    free(out);
    return 0;
}

int
cli_print_fields_json(FILE *f, const msgpack_object *map)
{
    msgpack_object o = { .type = MSGPACK_OBJECT_MAP };
    msgpack_object_kv *kv = NULL;
    uint32_t n = 0;
    int rc;

    if (map->type != MSGPACK_OBJECT_MAP)
        return -IM_EINVAL;
    if (map->via.map.size) {
        kv = calloc(map->via.map.size, sizeof(*kv));
        if (!kv)
            return -ENOMEM;
    }
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (cl_str_eq(k, "op") || cl_str_eq(k, "id"))
            continue;
        kv[n++] = map->via.map.ptr[i];
    }
    o.via.map.size = n;
    o.via.map.ptr = kv;
    rc = cli_print_json(f, &o);
    free(kv);
    return rc;
}

char *
cli_obj_text(const msgpack_object *o)
{
    char *out = NULL;
    size_t len = 0;

    if (!o)
        return strdup("");
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return strdup("");
    case MSGPACK_OBJECT_BOOLEAN:
        return strdup(o->via.boolean ? "true" : "false");
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return asprintf(&out, "%llu", (unsigned long long)o->via.u64) < 0 ? NULL : out;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return asprintf(&out, "%lld", (long long)o->via.i64) < 0 ? NULL : out;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return asprintf(&out, "%g", o->via.f64) < 0 ? NULL : out;
    case MSGPACK_OBJECT_STR:
        return strndup(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        FILE *m = open_memstream(&out, &len);
        if (!m)
            return NULL;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            char *t = cli_obj_text(&o->via.array.ptr[i]);
            if (!t) {
                fclose(m);
                free(out);
                return NULL;
            }
            fprintf(m, "%s%s", i ? "," : "", t);
            free(t);
        }
        if (fclose(m)) {
            free(out);
            return NULL;
        }
        return out;
    }
    default:
        if (cl_json_write(o, &out, &len))
            return NULL;
        return out;
    }
}

void
cli_time_text(uint64_t ms, char *buf, size_t sz)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (!localtime_r(&t, &tm) || !strftime(buf, sz, "%Y-%m-%d %H:%M:%S", &tm))
        snprintf(buf, sz, "%llu", (unsigned long long)ms);
}

/* "ACCOUNT:ADDRESS, ..." for a members array. */
static char *
members_text(const msgpack_object *o)
{
    char *out = NULL;
    size_t len = 0;
    FILE *m;

    if (!o || o->type != MSGPACK_OBJECT_ARRAY)
        return cli_obj_text(o);
    m = open_memstream(&out, &len);
    if (!m)
        return NULL;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *it = &o->via.array.ptr[i];
        char *acc = cli_obj_text(cli_map_get(it, "account"));
        char *addr = cli_obj_text(cli_map_get(it, "address"));
        if (acc && addr)
            fprintf(m, "%s%s:%s", i ? ", " : "", acc, addr);
        free(acc);
        free(addr);
    }
    if (fclose(m)) {
        free(out);
        return NULL;
    }
    return out;
}

static char *
cell_text(const msgpack_object *row, const struct cli_col *col)
{
    const msgpack_object *v = cli_map_get(row, col->key);

    switch (col->kind) {
    case CLI_COL_TIME_MS:
        if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            char buf[64];
            cli_time_text(v->via.u64, buf, sizeof(buf));
            return strdup(buf);
        }
        return cli_obj_text(v);
    case CLI_COL_MEMBERS:
        return members_text(v);
    default:
        return cli_obj_text(v);
    }
}

/* Display width: count UTF-8 lead bytes (no wide-character handling). */
static size_t
text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

/* Newlines and tabs in cells would break the table: show them as spaces. */
static void
flatten(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r' || *s == '\t')
            *s = ' ';
}

char *
cli_table_format(const msgpack_object *rows, const struct cli_col *cols, size_t ncols)
{
    char **cells = NULL;
    size_t *width = NULL, nrows, total;
    char *out = NULL;
    size_t len = 0;
    FILE *m = NULL;
    bool failed = false;

    if (!rows || rows->type != MSGPACK_OBJECT_ARRAY || ncols == 0)
        return NULL;
    nrows = rows->via.array.size + 1;           /* header first */
    total = nrows * ncols;
    cells = calloc(total, sizeof(*cells));
    width = calloc(ncols, sizeof(*width));
    if (!cells || !width)
        goto done;
    for (size_t r = 0; r < nrows; r++) {
        for (size_t k = 0; k < ncols; k++) {
            char *t = r == 0 ? strdup(cols[k].head)
                             : cell_text(&rows->via.array.ptr[r - 1], &cols[k]);
            if (!t) {
                failed = true;
                goto done;
            }
            flatten(t);
            cells[r * ncols + k] = t;
            size_t w = text_width(t);
            if (w > width[k])
                width[k] = w;
        }
    }
    m = open_memstream(&out, &len);
    if (!m)
        goto done;
    for (size_t r = 0; r < nrows; r++) {
        /* Trailing empty cells add no blanks: find the last non-empty one. */
        size_t last = 0;
        for (size_t k = 0; k < ncols; k++)
            if (*cells[r * ncols + k])
                last = k;
        for (size_t k = 0; k <= last; k++) {
            const char *t = cells[r * ncols + k];
            fputs(t, m);
            if (k < last)
                fprintf(m, "%*s", (int)(width[k] - text_width(t) + 2), "");
        }
        fputc('\n', m);
    }
    if (fclose(m))
        failed = true;
done:
    if (cells)
        for (size_t i = 0; i < total; i++)
            free(cells[i]);
    free(cells);
    free(width);
    if (failed || !m) {
        free(out);
        return NULL;
    }
    return out;
}

/* ---- passwords --------------------------------------------------------- */

int
cli_read_line(int fd, char *buf, size_t sz)
{
    size_t n = 0;

    for (;;) {
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0 || ch == '\n')
            break;
        if (n + 1 >= sz)
            return -IM_ETOOBIG;
        buf[n++] = ch;
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    return (int)n;
}

int
cli_tty_password(const char *prompt, char *buf, size_t sz)
{
    struct termios old, quiet;
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    int rc;
    bool echo_off = false;

    if (fd < 0)
        return -ENXIO;
    if (write(fd, prompt, strlen(prompt)) < 0) {
        rc = -errno;
        goto done;
    }
    if (tcgetattr(fd, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        quiet.c_lflag |= ICANON;
        echo_off = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    rc = cli_read_line(fd, buf, sz);
    if (echo_off)
        tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0) {
        /* the newline is cosmetic */
    }
done:
    close(fd);
    return rc;
}
