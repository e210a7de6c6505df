PROTO_SRCS += protocols/im_common.c protocols/im_registry.c
include protocols/client/module.mk
include protocols/xmpp/module.mk
