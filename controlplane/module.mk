CP_SRCS += $(filter-out controlplane/cp_main.c,$(wildcard controlplane/cp_*.c))
IMFUSED_SRCS += controlplane/cp_main.c
