/*
 * bench_proc.c - the daemon seen from outside: /proc and the control socket
 * (bench_proc.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_proc.h"
#include "cli_common.h"

#define CTL_TIMEOUT_MS 10000

/* Read a small /proc file into buf (NUL-terminated).  Length or -errno. */
static ssize_t
read_small(const char *path, char *buf, size_t sz)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t n = 0;
    while (n < sz - 1) {
        ssize_t r = read(fd, buf + n, sz - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = -errno;
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return (ssize_t)n;
}

long
bench_proc_hz(void)
{
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? hz : 100;
}

/* utime and stime: fields 14 and 15 of a stat file (/proc/PID/stat,
 * /proc/PID/task/TID/stat), counted after the command name's closing
 * parenthesis (the name may hold spaces). */
static int
read_stat_file(const char *path, uint64_t *utime, uint64_t *stime)
{
    char buf[2048];
    ssize_t n = read_small(path, buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    char *p = strrchr(buf, ')');
    if (!p)
        return -IM_EINVAL;
    p++;
    /* p now at " S ppid ..." : field 3 is the state */
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14)
            *utime = strtoull(tok, NULL, 10);
        else if (field == 15) {
            *stime = strtoull(tok, NULL, 10);
            return 0;
        }
    }
    return -IM_EINVAL;
}

static int
read_stat_ticks(pid_t pid, uint64_t *ticks)
{
    char path[64];
    uint64_t ut = 0, st = 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int rc = read_stat_file(path, &ut, &st);
    if (rc == 0)
        *ticks = ut + st;
    return rc;
}

static uint64_t
read_sched_ns(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    uint64_t sum = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        char p2[300], buf[256];
        snprintf(p2, sizeof(p2), "/proc/%d/task/%s/schedstat", (int)pid, de->d_name);
        if (read_small(p2, buf, sizeof(buf)) > 0)
            sum += strtoull(buf, NULL, 10);
    }
    closedir(d);
    return sum;
}

int
bench_proc_read(pid_t pid, struct bench_proc_snap *s)
{
    memset(s, 0, sizeof(*s));
    int rc = read_stat_ticks(pid, &s->cpu_ticks);
    if (rc < 0)
        return rc;
    s->sched_ns = read_sched_ns(pid);
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/io", (int)pid);
    if (read_small(path, buf, sizeof(buf)) > 0) {
        const char *w = strstr(buf, "\nwrite_bytes:");
        if (w) {
            s->write_bytes = strtoull(w + 13, NULL, 10);
            s->have_io = true;
        }
    }
    return 0;
}

int
bench_proc_thread(pid_t pid, const char *name, struct bench_thread_snap *s)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int rc = -IM_ENOTFOUND;
    struct dirent *de;
    while (rc == -IM_ENOTFOUND && (de = readdir(d))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        char p2[300], buf[4096];
        snprintf(p2, sizeof(p2), "/proc/%d/task/%s/comm", (int)pid, de->d_name);
        if (read_small(p2, buf, sizeof(buf)) <= 0)
            continue;
        buf[strcspn(buf, "\n")] = '\0';
        if (strcmp(buf, name))
            continue;
        memset(s, 0, sizeof(*s));
        snprintf(p2, sizeof(p2), "/proc/%d/task/%s/schedstat", (int)pid, de->d_name);
        if (read_small(p2, buf, sizeof(buf)) <= 0) {
            rc = -IM_EINVAL;
            break;
        }
        s->run_ns = strtoull(buf, NULL, 10);
        snprintf(p2, sizeof(p2), "/proc/%d/task/%s/stat", (int)pid, de->d_name);
        if (read_stat_file(p2, &s->utime, &s->stime) < 0) {
            rc = -IM_EINVAL;
            break;
        }
        snprintf(p2, sizeof(p2), "/proc/%d/task/%s/status", (int)pid, de->d_name);
        const char *v;
        if (read_small(p2, buf, sizeof(buf)) > 0 && (v = strstr(buf, "nonvoluntary_ctxt_switches:")))
            s->preempted = strtoull(v + 27, NULL, 10);
        rc = 0;
    }
    closedir(d);
    return rc;
}

int
bench_proc_status_kib(pid_t pid, const char *name, uint64_t *kib)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    ssize_t n = read_small(path, buf, sizeof(buf));
    if (n < 0)
        return (int)n;
    size_t nl = strlen(name);
    for (char *line = buf; line && *line;) {
        if (!strncmp(line, name, nl) && line[nl] == ':') {
            *kib = strtoull(line + nl + 1, NULL, 10);
            return 0;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -IM_ENOTFOUND;
}

int
bench_proc_reset_peak(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)pid);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = write(fd, "5", 1) == 1 ? 0 : -errno;
    close(fd);
    return rc;
}

int
bench_proc_comm(pid_t pid, char *buf, size_t sz)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    ssize_t n = read_small(path, buf, sz);
    if (n < 0)
        return (int)n;
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

/* ---- control socket ------------------------------------------------------- */

int
bench_ctl_pid(const char *path, pid_t *pid)
{
    struct cli_conn c;
    cli_conn_init(&c);
    int rc = cli_connect_unix(&c, path);
    if (rc == 0) {
        struct ucred cr;
        socklen_t len = sizeof(cr);
        if (getsockopt(c.fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
            rc = -errno;
        else if (cr.pid <= 0)
            rc = -ESRCH;
        else
            *pid = cr.pid;
    }
    cli_conn_close(&c);
    return rc;
}

static uint64_t
map_uint(const msgpack_object *map, const char *key)
{
    const msgpack_object *o = cli_map_get(map, key);
    return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 0;
}

/* One request on a fresh control connection; on 0 the caller owns *reply. */
static int
ctl_call(const char *path, struct cl_enc *e, uint64_t id, struct cli_frame **reply)
{
    struct cli_conn c;
    cli_conn_init(&c);
    int rc = cli_connect_unix(&c, path);
    if (rc == 0)
        rc = cli_call(&c, e, id, reply, CTL_TIMEOUT_MS);
    cli_conn_close(&c);
    return rc;
}

int
bench_ctl_stats(const char *path, struct bench_ctl_stats *st)
{
    struct cl_enc e;
    struct cli_frame *r = NULL;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 2);
    cl_pack_kstr(&e, "op", "stats");
    cl_pack_kuint(&e, "id", 1);
    int rc = ctl_call(path, &e, 1, &r);
    cl_enc_free(&e);
    if (rc)
        return rc;
    const msgpack_object *s = cli_map_get(&r->msg.root, "stats");
    if (!cli_is_ok(&r->msg) || !s || s->type != MSGPACK_OBJECT_MAP) {
        cli_frame_free(r);
        return -IM_EPROTO;
    }
    st->store_commits = map_uint(s, "store_commits");
    st->store_commit_cpu_us = map_uint(s, "store_commit_cpu_us");
    st->msgs_committed = map_uint(s, "msgs_committed");
    st->store_page_size = map_uint(s, "store_page_size");
    st->store_bytes_written = map_uint(s, "store_bytes_written");
    st->io_busy_cycles = map_uint(s, "io_busy_cycles");
    st->io_busy_turns = map_uint(s, "io_busy_turns");
    cli_frame_free(r);
    return 0;
}

int
bench_ctl_user_add(const char *path, const char *name, const char *password,
                   char *why, size_t whysz)
{
    struct cl_enc e;
    struct cli_frame *r = NULL;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 4);
    cl_pack_kstr(&e, "op", "user_add");
    cl_pack_kuint(&e, "id", 1);
    cl_pack_kstr(&e, "name", name);
    cl_pack_kstr(&e, "password", password);
    int rc = ctl_call(path, &e, 1, &r);
    cl_enc_free(&e);
    if (rc) {
        snprintf(why, whysz, "%s", cli_io_strerror(rc));
        return rc;
    }
    const msgpack_object *code = cli_map_get(&r->msg.root, "code");
    const msgpack_object *msg = cli_map_get(&r->msg.root, "message");
    if (!cli_is_ok(&r->msg) && !(code && cl_str_eq(code, "exists"))) {
        snprintf(why, whysz, "%.*s", msg && msg->type == MSGPACK_OBJECT_STR ? (int)msg->via.str.size : 0,
                 msg && msg->type == MSGPACK_OBJECT_STR ? msg->via.str.ptr : "");
        rc = -IM_EINVAL;
    }
    cli_frame_free(r);
    return rc;
}
