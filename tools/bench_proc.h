/*
 * bench_proc.h - what imfuse-bench reads about the relay daemon from outside:
 * its CPU time, memory and storage writes from /proc, and imfused's counters
 * from its control socket (the `stats` command of imfusectl).
 *
 * Functions return 0 or a negative code (-errno, -IM_EINVAL for a file that
 * does not parse) and never print.
 */
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* A snapshot of one process. */
struct bench_proc_snap {
    uint64_t cpu_ticks;         /* utime + stime, all threads (/proc/PID/stat), in clock ticks */
    uint64_t sched_ns;          /* sum of the threads' on-CPU ns (/proc/PID/task/N/schedstat); 0 if unknown */
    uint64_t write_bytes;       /* bytes sent to storage (/proc/PID/io write_bytes); 0 if unreadable */
    bool have_io;
};

/* One thread of a process (the dataplane's, found by name). */
struct bench_thread_snap {
    uint64_t run_ns;            /* on-CPU ns (/proc/PID/task/TID/schedstat, first field) */
    uint64_t utime, stime;      /* user and kernel time, clock ticks (/proc/PID/task/TID/stat) */
    uint64_t preempted;         /* nonvoluntary_ctxt_switches (/proc/PID/task/TID/status) */
};

/* Clock ticks per second (sysconf(_SC_CLK_TCK)). */
long bench_proc_hz(void);

/* Read the snapshot of pid. */
int bench_proc_read(pid_t pid, struct bench_proc_snap *s);

/* Read the snapshot of pid's thread whose name (/proc/PID/task/TID/comm) is
 * name; -IM_ENOTFOUND when it has none. */
int bench_proc_thread(pid_t pid, const char *name, struct bench_thread_snap *s);

/* A "Name:  N kB" line of /proc/PID/status, in KiB (VmHWM, VmRSS). */
int bench_proc_status_kib(pid_t pid, const char *name, uint64_t *kib);

/* Reset the peak resident set size (VmHWM) of pid: "5" into /proc/PID/clear_refs. */
int bench_proc_reset_peak(pid_t pid);

/* The command name of pid (/proc/PID/comm) into buf. */
int bench_proc_comm(pid_t pid, char *buf, size_t sz);

/* ---- imfused's control socket --------------------------------------------- */

/* The counters imfuse-bench uses from `stats`. */
struct bench_ctl_stats {
    uint64_t store_commits;
    uint64_t store_commit_cpu_us;   /* CPU time imfused spent committing */
    uint64_t msgs_committed;
    uint64_t store_page_size;
    uint64_t store_bytes_written;   /* what the committing thread passed to write calls */
    uint64_t io_busy_cycles;    /* --io dpdk: TSC cycles of the loop turns that did work */
    uint64_t io_busy_turns;     /* ... those turns (0 with the kernel backend) */
};

/* The PID of the process serving the UNIX socket at path (SO_PEERCRED). */
int bench_ctl_pid(const char *path, pid_t *pid);

/* Send `stats` on the control socket at path; fills *st. */
int bench_ctl_stats(const char *path, struct bench_ctl_stats *st);

/*
 * Create user `name` with `password` (`user_add`); an existing user is fine.
 * On another error reply, why[] holds the daemon's words.
 */
int bench_ctl_user_add(const char *path, const char *name, const char *password,
                       char *why, size_t whysz);

#endif
