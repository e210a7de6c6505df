PROTO_SRCS += $(wildcard protocols/sip/*.c)
