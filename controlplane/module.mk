CP_SRCS += $(filter-out controlplane/cp_main.c,$(wildcard controlplane/cp_*.c))
IMFUSED_SRCS += controlplane/cp_main.c
# cp_sd.c: sd_notify(3) for the systemd unit (libsystemd-dev)
ALL_LDLIBS += -lsystemd
# cp_snmp.c: the AgentX subagent, net-snmp's agent library (libsnmp-dev);
# not pkg-config's netsnmp-agent, which adds the MIB modules of snmpd itself
ALL_LDLIBS += -lnetsnmpagent -lnetsnmp
