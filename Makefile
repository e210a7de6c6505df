# imfuse - non-recursive Makefile.  Each directory adds its sources in module.mk.
#
#   make            build/imfused, build/imfusectl, build/imfuse, build/imfuse-bench (release, -O2 -g)
#   make run        deps + build, then the appliance in the foreground (kernel sockets, ./var)
#   make test       deps + ASan/UBSan, fuzz and TSan builds + the whole suite (tests/run)
#   make unit       the unit test binaries and the integration tests' helper programs
#   make asan       the ASan/UBSan variant in build/asan
#   make tsan       the ThreadSanitizer variant in build/tsan
#   make fuzz       libFuzzer targets in build/fuzz
#   make demo       a local prosody with two demo users beside the appliance
#   make bench      imfuse vs BitlBee 3.6 on the same prosody: docs/BENCHMARKS.md
#   make deps       install the Debian packages the project needs (root; quiet when present)
#
# On a fresh machine pkg-config and the libraries exist only once `make deps`
# has run, inside the same `make deps all` or `make run`.  So nothing here asks
# pkg-config or the compiler while this file is parsed: those flags are read
# when a recipe first uses them, and when deps is among the goals (deps, run,
# test, demo) every build step waits for it, also under -j.

BUILD    ?= build
SAN      ?=
OPT      ?= -O2
DEPS_SCRIPT ?= ./tools/deps.sh
RUN_DIR  ?= ./var

# System libraries.  mbedTLS 2.28 ships no pkg-config file.
PKGS      := lmdb msgpack expat libargon2
TOOL_PKGS := msgpack
TLS_LIBS  := -lmbedtls -lmbedx509 -lmbedcrypto

# $(call pkg-config,ARGS): what pkg-config prints; a failure stops make with a
# clear error instead of leaving the flags empty.
pkg-config = $(shell pkg-config $(1))$(if $(filter 0,$(.SHELLSTATUS)),,$(error \
    pkg-config $(1) failed: `make deps` installs pkg-config and the libraries))

# Computed at first use (in a recipe), then kept: VAR = $(eval VAR := ...)$(VAR).
PKG_CFLAGS = $(eval PKG_CFLAGS := $(call pkg-config,--cflags $(PKGS)))$(PKG_CFLAGS)
# Expat's reparse deferral (2.6.0; Debian backports it to 2.5.0 without
# changing the version macros) is found by looking at the header itself.
EXPAT_FEATURES = $(eval EXPAT_FEATURES := $(shell printf '\043include <expat.h>\n' | \
    $(CC) $(PKG_CFLAGS) -E - 2>/dev/null | grep -q XML_SetReparseDeferralEnabled && \
    echo -DIM_HAVE_XML_REPARSE_DEFERRAL))$(EXPAT_FEATURES)

# What each kind of program links besides its own objects and archives
# (dataplane/dpdk.mk adds DPDK and libnl to ALL_LDLIBS).
BASE_LDLIBS = $(call pkg-config,--libs $(PKGS)) $(TLS_LIBS) -lpthread
ALL_LDLIBS  = $(BASE_LDLIBS)
TOOL_LDLIBS = $(call pkg-config,--libs $(TOOL_PKGS))

WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2 -Wvla
CPPFLAGS += -D_GNU_SOURCE -Icommon -Iprotocols -Idataplane -Icontrolplane $(EXPAT_FEATURES)
CFLAGS   += -std=c11 $(OPT) -g -fno-omit-frame-pointer $(WARN) $(PKG_CFLAGS) $(SAN) -MMD -MP
LDFLAGS  += $(SAN)

COMMON_SRCS :=
PROTO_SRCS :=
DP_SRCS    :=
CP_SRCS    :=
IMFUSED_SRCS :=
IMFUSECTL_SRCS :=
IMFUSE_SRCS :=
IMFUSE_BENCH_SRCS :=
UNIT_TESTS :=
UNIT_SUPPORT :=
FUZZ_TARGETS :=

include common/module.mk
include protocols/module.mk
include dataplane/module.mk
include controlplane/module.mk
include tools/module.mk
include tests/module.mk

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

COMMON_LIB := $(BUILD)/libimcommon.a
PROTO_LIB := $(BUILD)/libimproto.a
DP_LIB    := $(BUILD)/libimdp.a
CP_LIB    := $(BUILD)/libimcp.a
LIBS      := $(CP_LIB) $(DP_LIB) $(PROTO_LIB) $(COMMON_LIB)

# Build steps wait for deps when it is among the goals (see the top).
AFTER_DEPS := $(if $(filter deps run test demo demo-dpdk bench,$(MAKECMDGOALS)),deps)

include dataplane/dpdk.mk

BINS := $(BUILD)/imfused $(BUILD)/imfusectl $(BUILD)/imfuse $(BUILD)/imfuse-bench
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_TESTS))
# Helper programs of the integration tests: tests/integration/<area>/<name>.c
INTEG_PROGS := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/integration/*/*.c))

.PHONY: all deps run test asan tsan fuzz demo bench clean unit FORCE
all: $(BINS)
unit: $(UNIT_BINS) $(INTEG_PROGS)

# $(BUILD)/flags records the compiler and flags the objects were built with;
# it is rewritten only when they change, and a change rebuilds everything
# (make CC=clang unit after make).
$(BUILD)/flags: FORCE | $(AFTER_DEPS)
	@mkdir -p $(dir $@)
	@echo '$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS)' | cmp -s - $@ || \
	    echo '$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS)' >$@

$(BUILD)/obj/%.o: %.c $(BUILD)/flags | $(AFTER_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<
$(BUILD)/obj/tests/unit/%.o: tests/unit/%.c $(BUILD)/flags | $(AFTER_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests/unit $(CFLAGS) -c -o $@ $<

$(COMMON_LIB): $(call obj,$(COMMON_SRCS))
	rm -f $@ && ar rcs $@ $^
$(PROTO_LIB): $(call obj,$(PROTO_SRCS))
	rm -f $@ && ar rcs $@ $^
$(DP_LIB): $(call obj,$(DP_SRCS))
	rm -f $@ && ar rcs $@ $^
$(CP_LIB): $(call obj,$(CP_SRCS))
	rm -f $@ && ar rcs $@ $^

# Each program links what it uses: the daemon every layer, the CLI tools only
# the protocol library (the client codec), the common kit and msgpack.
$(BUILD)/imfused: $(call obj,$(IMFUSED_SRCS)) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(ALL_LDLIBS) $(LDLIBS)
$(BUILD)/imfusectl: $(call obj,$(IMFUSECTL_SRCS)) $(PROTO_LIB) $(COMMON_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(TOOL_LDLIBS) $(LDLIBS)
$(BUILD)/imfuse: $(call obj,$(IMFUSE_SRCS)) $(PROTO_LIB) $(COMMON_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(TOOL_LDLIBS) $(LDLIBS)
# The load generator drives its XMPP peers with the dataplane's connections.
$(BUILD)/imfuse-bench: $(call obj,$(IMFUSE_BENCH_SRCS)) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(ALL_LDLIBS) $(LDLIBS) -lm

$(UNIT_BINS): $(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(call obj,$(UNIT_SUPPORT)) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(ALL_LDLIBS) $(LDLIBS)
$(INTEG_PROGS): $(BUILD)/%: $(BUILD)/obj/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(ALL_LDLIBS) $(LDLIBS)

# ---- variants -----------------------------------------------------------
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
ASAN_BUILD ?= build/asan
asan: | $(AFTER_DEPS)
	$(MAKE) BUILD=$(ASAN_BUILD) SAN="$(ASAN_FLAGS)" OPT=-O1 all unit

TSAN_FLAGS := -fsanitize=thread
TSAN_BUILD ?= build/tsan
tsan: | $(AFTER_DEPS)
	$(MAKE) BUILD=$(TSAN_BUILD) SAN="$(TSAN_FLAGS)" OPT=-O1 all unit

fuzz: | $(AFTER_DEPS)
	$(MAKE) BUILD=build/fuzz CC=clang SAN="-fsanitize=fuzzer-no-link,address,undefined" OPT=-O1 \
	    build/fuzz/libimproto.a build/fuzz/libimcommon.a
	@set -e; for t in $(FUZZ_TARGETS); do \
	    out=build/fuzz/$$(basename $$t .c); \
	    echo "clang $$t -> $$out"; \
	    clang $(CPPFLAGS) -std=c11 -O1 -g $(PKG_CFLAGS) -fsanitize=fuzzer,address,undefined \
	        -o $$out $$t build/fuzz/libimproto.a build/fuzz/libimcommon.a $(BASE_LDLIBS); \
	done

# ---- the two commands ---------------------------------------------------
deps:
	@$(DEPS_SCRIPT)

run: deps all
	exec $(BUILD)/imfused --data $(RUN_DIR) --listen 127.0.0.1:7700 --control $(RUN_DIR)/imfused.sock

test: deps
	$(MAKE) asan
	$(MAKE) fuzz
	$(MAKE) tsan
	./tests/run

demo: deps all
	./tools/demo.sh

# imfuse side by side with BitlBee 3.6; writes docs/BENCHMARKS.md (root, < 10 min)
bench: deps all
	./tests/bench/run.sh

clean:
	rm -rf build

# ---- installing, the Debian package, the appliance image ----------------
#   make install  binaries, unit, sysusers entry, default config (kept when
#                 present), man pages; honours DESTDIR and PREFIX
#   make deb      build/deb/imfuse_*.deb from this tree (tools/deb.sh)
#   make image    build/image/: root.img, vmlinuz, initrd.img (images/build.sh; root)
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
MIBDIR      ?= $(PREFIX)/share/snmp/mibs
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
# the unit names /etc/imfuse (ConfigurationDirectory=), whatever the PREFIX
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
INSTALL     ?= install

.PHONY: install deb image
install: all
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/imfuse $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	$(INSTALL) -m 0755 $(BUILD)/imfused $(BUILD)/imfusectl $(DESTDIR)$(SBINDIR)/
	$(INSTALL) -m 0755 $(BUILD)/imfuse $(DESTDIR)$(BINDIR)/
	sed 's|^ExecStart=/usr/sbin/|ExecStart=$(SBINDIR)/|' images/imfused.service >$(DESTDIR)$(UNITDIR)/imfused.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/imfused.service
	$(INSTALL) -m 0644 images/imfuse.sysusers $(DESTDIR)$(SYSUSERSDIR)/imfuse.conf
	[ -e $(DESTDIR)$(SYSCONFDIR)/imfuse/imfused.conf ] || \
	    $(INSTALL) -m 0644 images/imfused.conf $(DESTDIR)$(SYSCONFDIR)/imfuse/imfused.conf
	$(INSTALL) -m 0644 docs/man/imfuse.1 $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 0644 docs/man/imfused.conf.5 $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -m 0644 docs/man/imfused.8 docs/man/imfusectl.8 $(DESTDIR)$(MANDIR)/man8/
	set -e; for m in $(wildcard mibs/*.txt); do \
	    $(INSTALL) -D -m 0644 $$m $(DESTDIR)$(MIBDIR)/$$(basename $$m); done

deb:
	./tools/deb.sh

image:
	./images/build.sh

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
