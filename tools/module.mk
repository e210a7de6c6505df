# The command-line tools: imfusectl (operator) and imfuse (user client),
# sharing tools/cli_common.c.
IMFUSECTL_SRCS += tools/imfusectl.c tools/cli_common.c
IMFUSE_SRCS += tools/imfuse.c tools/cli_common.c
