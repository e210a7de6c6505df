PROTO_SRCS += protocols/im_proto.c protocols/im_registry.c
include protocols/client/module.mk
include protocols/xmpp/module.mk
include protocols/irc/module.mk
include protocols/sip/module.mk
