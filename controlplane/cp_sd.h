/*
 * cp_sd.h - telling systemd how imfused is doing (sd_notify(3)): READY=1 once
 * the store, the control socket and the client listeners are up, STOPPING=1
 * when shutdown begins, and WATCHDOG=1 from the controlplane loop when the
 * unit sets WatchdogSec=.  Every call is a no-op when imfused was not started
 * by systemd (no $NOTIFY_SOCKET), so tests and `make run` are unaffected.
 *
 * Controlplane thread only; no allocation, nothing to free.
 */
#ifndef CP_SD_H
#define CP_SD_H

/* Announce readiness with a one-line STATUS= text (copied; may be NULL).
 * Also reads $WATCHDOG_USEC so that cp_sd_watchdog() knows its period. */
void cp_sd_ready(const char *status);

/* Announce that shutdown has begun. */
void cp_sd_stopping(void);

/* Call once per controlplane loop turn: sends WATCHDOG=1 when half the
 * watchdog period has passed since the last one.  Cheap otherwise (a clock
 * read).  The loop turns at least once a second, so WatchdogSec= must be
 * above 2 s. */
void cp_sd_watchdog(void);

#endif
