PROTO_SRCS += $(wildcard protocols/xmpp/*.c)
