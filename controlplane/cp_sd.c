/*
 * cp_sd.c - sd_notify(3) for imfused (see cp_sd.h).  libsystemd does the
 * protocol; this file decides when.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "im_clock.h"
#include "im_common.h"
#include "cp_sd.h"

#define LOG(lvl, ...) IM_LOG(lvl, "cp", __VA_ARGS__)

static uint64_t wd_period_ms;       /* half of WATCHDOG_USEC; 0 = no watchdog */
static uint64_t wd_last_ms;

void
cp_sd_ready(const char *status)
{
    uint64_t usec = 0;
    char msg[512];

    /* 0 unset env: the watchdog settings are read once, here */
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        wd_period_ms = usec / 2000;
        if (wd_period_ms == 0)
            wd_period_ms = 1;
        if (usec < 2500000)
            LOG(IM_LOG_WARN, "WatchdogSec of %llu ms is too short: the loop may wait 1 s between pings",
                (unsigned long long)(usec / 1000));
    }
    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status ? status : "running");
    int rc = sd_notify(0, msg);
    if (rc < 0)
        LOG(IM_LOG_WARN, "sd_notify READY: %s", strerror(-rc));
    else if (rc > 0)
        LOG(IM_LOG_INFO, "told systemd: ready%s", wd_period_ms ? ", watchdog on" : "");
    wd_last_ms = im_mono_ms();
}

void
cp_sd_stopping(void)
{
    wd_period_ms = 0;
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

void
cp_sd_watchdog(void)
{
    if (!wd_period_ms)
        return;
    uint64_t now = im_mono_ms();
    if (now - wd_last_ms < wd_period_ms)
        return;
    wd_last_ms = now;
    sd_notify(0, "WATCHDOG=1");
}
