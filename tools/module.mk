# The command-line tools: imfusectl (operator) and imfuse (user client),
# sharing tools/cli_common.c, and imfuse-bench (the load generator of
# `make bench`, docs/BENCHMARKS.md).
IMFUSECTL_SRCS += tools/imfusectl.c tools/cli_common.c
IMFUSE_SRCS += tools/imfuse.c tools/cli_common.c
IMFUSE_BENCH_SRCS += tools/imfuse-bench.c tools/bench_imfuse.c tools/bench_irc.c \
                     tools/bench_direct.c tools/bench_xmpp.c tools/bench_proc.c \
                     tools/bench_hist.c tools/cli_common.c
