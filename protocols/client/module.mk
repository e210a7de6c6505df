PROTO_SRCS += $(wildcard protocols/client/cl_*.c)
