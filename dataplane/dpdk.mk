# dataplane/dpdk.mk - the DPDK + lwIP dataplane's build: lwIP compiled from
# Debian's source package with dataplane/lwip/lwipopts.h, DPDK and libnl
# flags for the translation units that need them.  Included by the Makefile
# right after LIBS is defined.
#
# lwIP's source is fetched once by tools/lwip-src.sh (run by `make deps`, or
# here when missing) into LWIP_DIR, shared by every build variant; its
# objects are built per variant (so the ASan build checks lwIP too).

# Included before the Makefile's own rules: keep `make` meaning `make all`.
.DEFAULT_GOAL := all

LWIP_DIR  ?= build/deps/lwip
LWIP_STAMP := $(LWIP_DIR)/.imfuse-ok
LWIP_CORE := core/init.c core/def.c core/inet_chksum.c core/ip.c core/mem.c core/memp.c \
             core/netif.c core/pbuf.c core/stats.c core/sys.c core/tcp.c core/tcp_in.c \
             core/tcp_out.c core/timeouts.c core/ipv4/etharp.c core/ipv4/icmp.c core/ipv4/ip4.c \
             core/ipv4/ip4_addr.c core/ipv4/ip4_frag.c netif/ethernet.c
# The platform port (clock, randomness, ISN hook) goes into the same archive.
LWIP_OBJS := $(patsubst %.c,$(BUILD)/lwip/%.o,$(LWIP_CORE)) $(BUILD)/obj/dataplane/lwip/dp_lwip_port.o
LWIP_LIB  := $(BUILD)/liblwip.a
LWIP_CPPFLAGS := -Idataplane/lwip -isystem $(LWIP_DIR)/src/include

# DPDK's and libnl's headers as system headers (their own warnings are not
# ours).  Read when a recipe first needs them, like the Makefile's own flags:
# on a fresh machine they exist only once `make deps` has run.
DPDK_CFLAGS = $(eval DPDK_CFLAGS := $(patsubst -I%,-isystem %,$(call pkg-config,--cflags libdpdk)))$(DPDK_CFLAGS)
DPDK_LIBS   = $(eval DPDK_LIBS := $(call pkg-config,--libs libdpdk))$(DPDK_LIBS)
NL_CFLAGS   = $(eval NL_CFLAGS := $(patsubst -I%,-isystem %,$(call pkg-config,--cflags libnl-3.0 libnl-route-3.0)))$(NL_CFLAGS)
NL_LIBS     = $(eval NL_LIBS := $(call pkg-config,--libs libnl-3.0 libnl-route-3.0))$(NL_LIBS)

LIBS       += $(LWIP_LIB)
ALL_LDLIBS += $(DPDK_LIBS) $(NL_LIBS)

$(LWIP_STAMP): | $(AFTER_DEPS)
	./tools/lwip-src.sh $(LWIP_DIR)
$(LWIP_DIR)/src/%.c: | $(LWIP_STAMP) ;
# Made by that rule, so make would call them intermediate and delete them
# after a build that extracted them (then the next build cannot find them).
.PRECIOUS: $(LWIP_DIR)/src/%.c

# lwIP's own code: its options, not our warning set (it is not our code).
$(BUILD)/lwip/%.o: $(LWIP_DIR)/src/%.c dataplane/lwip/lwipopts.h dataplane/lwip/arch/cc.h \
                   dataplane/lwip/dp_lwip_hooks.h
	@mkdir -p $(dir $@)
	$(CC) -D_GNU_SOURCE $(LWIP_CPPFLAGS) -std=c11 $(OPT) -g -fno-omit-frame-pointer $(SAN) \
	    -Wall -Wno-address $(filter -D%,$(CFLAGS)) -c -o $@ $<
$(BUILD)/lwip/core/tcp.o: CFLAGS += -DDP_LWIP_IN_TCP_C
$(LWIP_LIB): $(LWIP_OBJS)
	rm -f $@ && ar rcs $@ $^

# Our translation units on either side of the DPDK / lwIP header clash.
LWIP_TUS := $(BUILD)/obj/dataplane/dp_lwip.o $(BUILD)/obj/dataplane/lwip/dp_lwip_port.o \
            $(BUILD)/obj/tests/unit/dataplane/test_lwip.o
$(LWIP_TUS): CPPFLAGS += $(LWIP_CPPFLAGS)
$(LWIP_TUS): | $(LWIP_STAMP)
$(BUILD)/obj/dataplane/dp_io_dpdk.o: CFLAGS += $(DPDK_CFLAGS)
$(BUILD)/obj/controlplane/cp_netlink.o: CFLAGS += $(NL_CFLAGS)
$(BUILD)/obj/tests/unit/dataplane/test_dpdk.o: CFLAGS += $(NL_CFLAGS)

# The demo with the appliance on a DPDK port (net_tap), as root: tools/demo.sh --dpdk.
.PHONY: demo-dpdk
demo-dpdk: deps all
	./tools/demo.sh --dpdk
