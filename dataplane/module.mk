DP_SRCS += $(wildcard dataplane/dp_*.c)
