CP_SRCS += $(filter-out controlplane/cp_main.c,$(wildcard controlplane/cp_*.c))
IMFUSED_SRCS += controlplane/cp_main.c
# cp_sd.c: sd_notify(3) for the systemd unit (libsystemd-dev)
ALL_LDLIBS += -lsystemd
