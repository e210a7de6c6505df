# imfuse - non-recursive Makefile.  Each directory adds its sources in module.mk.
#
#   make            build/imfused, build/imfusectl, build/imfuse, build/imfuse-bench (release, -O2 -g)
#   make run        deps + build, then the appliance in the foreground (kernel sockets, ./var)
#   make test       deps + ASan/UBSan build + the whole suite (tests/run)
#   make asan       the ASan/UBSan variant in build/asan
#   make fuzz       libFuzzer targets in build/fuzz
#   make demo       a local prosody with two demo users beside the appliance
#   make bench      imfuse vs BitlBee 3.6 on the same prosody: docs/BENCHMARKS.md
#   make deps       install the Debian packages the project needs (root; quiet when present)

BUILD    ?= build
CC       ?= cc
SAN      ?=
OPT      ?= -O2

PKGS     := lmdb msgpack expat libargon2
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# Expat's reparse deferral (2.6.0; Debian backports it to 2.5.0 without
# changing the version macros) is found by looking at the header itself.
EXPAT_FEATURES := $(shell printf '\043include <expat.h>\n' | $(CC) $(PKG_CFLAGS) -E - 2>/dev/null | \
                    grep -q XML_SetReparseDeferralEnabled && echo -DIM_HAVE_XML_REPARSE_DEFERRAL)
# mbedTLS 2.28 ships no pkg-config file.
TLS_LIBS := -lmbedtls -lmbedx509 -lmbedcrypto

WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2 -Wvla
CPPFLAGS += -D_GNU_SOURCE -Iprotocols -Idataplane -Icontrolplane $(EXPAT_FEATURES)
CFLAGS   += -std=c11 $(OPT) -g -fno-omit-frame-pointer $(WARN) $(PKG_CFLAGS) $(SAN) -MMD -MP
LDFLAGS  += $(SAN)
LDLIBS   += $(PKG_LIBS) $(TLS_LIBS) -lpthread

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

include protocols/module.mk
include dataplane/module.mk
include controlplane/module.mk
include tools/module.mk
include tests/module.mk

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

PROTO_LIB := $(BUILD)/libimproto.a
DP_LIB    := $(BUILD)/libimdp.a
CP_LIB    := $(BUILD)/libimcp.a
LIBS      := $(CP_LIB) $(DP_LIB) $(PROTO_LIB)

BINS := $(BUILD)/imfused $(BUILD)/imfusectl $(BUILD)/imfuse $(BUILD)/imfuse-bench
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_TESTS))

.PHONY: all deps run test asan fuzz fuzz-run demo bench clean unit
all: $(BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(PROTO_LIB): $(call obj,$(PROTO_SRCS))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(DP_LIB): $(call obj,$(DP_SRCS))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
$(CP_LIB): $(call obj,$(CP_SRCS))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/imfused: $(call obj,$(IMFUSED_SRCS)) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/imfusectl: $(call obj,$(IMFUSECTL_SRCS)) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/imfuse: $(call obj,$(IMFUSE_SRCS)) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/imfuse-bench: $(call obj,$(IMFUSE_BENCH_SRCS)) $(LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(call obj,$(UNIT_SUPPORT)) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests/unit $(CFLAGS) $(LDFLAGS) -o $@ $< $(call obj,$(UNIT_SUPPORT)) $(LIBS) $(LDLIBS)

# Helper programs of the integration tests: tests/integration/<area>/<name>.c
INTEG_PROGS := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/integration/*/*.c))
$(BUILD)/tests/integration/%: tests/integration/%.c $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBS) $(LDLIBS)

unit: $(UNIT_BINS) $(INTEG_PROGS)

# ---- variants -----------------------------------------------------------
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
ASAN_BUILD ?= build/asan
asan:
	$(MAKE) BUILD=$(ASAN_BUILD) SAN="$(ASAN_FLAGS)" OPT=-O1 all unit

FUZZ_BINS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_TARGETS))
fuzz:
	$(MAKE) BUILD=build/fuzz CC=clang SAN="-fsanitize=fuzzer-no-link,address,undefined" OPT=-O1 \
	    build/fuzz/libimproto.a
	@mkdir -p build/fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
	    out=build/fuzz/$$(basename $$t .c); \
	    echo "clang $$t -> $$out"; \
	    clang $(CPPFLAGS) -std=c11 -O1 -g $(PKG_CFLAGS) -fsanitize=fuzzer,address,undefined \
	        -o $$out $$t build/fuzz/libimproto.a $(LDLIBS); \
	done

# ---- the two commands ---------------------------------------------------
deps:
	@./tools/deps.sh

run: deps all
	exec $(BUILD)/imfused --data ./var --listen 127.0.0.1:7700 --control ./var/imfused.sock

test: deps
	$(MAKE) asan
	$(MAKE) fuzz
	./tests/run

demo: deps all
	./tools/demo.sh

# imfuse side by side with BitlBee 3.6; writes docs/BENCHMARKS.md (root, < 10 min)
bench: deps all
	./tests/bench/run.sh

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
