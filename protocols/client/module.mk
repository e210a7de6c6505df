PROTO_SRCS += protocols/client/cl_frame.c
PROTO_SRCS += protocols/client/cl_json.c
