# The kit shared by both planes, the adapters, the codec and the tools:
# return codes, UTF-8, logging, the host:port parser (im_common), the
# growable buffer (im_buf), random sources (im_rng), clocks (im_clock) and
# key derivation (im_kdf).  Built into $(BUILD)/libimcommon.a, linked last.
COMMON_SRCS += $(wildcard common/im_*.c)
