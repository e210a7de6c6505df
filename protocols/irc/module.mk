PROTO_SRCS += $(wildcard protocols/irc/*.c)
