/*
 * test_registry.c - the table of adapters: the built-in networks satisfy the
 * hook contract of im_proto.h, and a test can plug a network in (as the
 * relay's tests will) with clear refusals.
 */
#include "t.h"
#include "im_proto.h"

extern const struct im_proto_ops xmpp_ops, irc_ops, sip_ops;

/* A fake network: the smallest adapter the contract allows. */
static int
f_norm(const char *in, char *out, size_t outsz, const char **why)
{
    return im_strlcpy(out, in, outsz) < outsz ? 0 : -IM_EINVAL;
}

static struct im_sess *
f_create(const struct im_account_cfg *cfg, const struct im_io *io)
{
    return NULL;
}

static void f_destroy(struct im_sess *s) { }
static int f_start(struct im_sess *s, struct im_time now) { return 0; }
static int f_input(struct im_sess *s, const uint8_t *p, size_t n, struct im_time now) { return 0; }
static int f_tick(struct im_sess *s, struct im_time now) { return 0; }
static int f_send(struct im_sess *s, const struct im_msg *m) { return 0; }
static int f_remove(struct im_sess *s, uint64_t req, struct im_str address) { return 0; }

#define FAKE_OPS(nm) { .name = (nm), .normalize_login = f_norm, .normalize_address = f_norm, \
                       .create = f_create, .destroy = f_destroy, .start = f_start, .input = f_input, \
                       .tick = f_tick, .send_msg = f_send }

static const struct im_proto_ops fake_ops = FAKE_OPS("fake");

T_TEST(builtins_keep_the_contract)
{
    const char *why = "unset";

    for (size_t i = 0; im_proto_builtin[i]; i++) {
        if (im_proto_ops_check(im_proto_builtin[i], &why))
            T_FAIL("%s: %s", im_proto_builtin[i]->name, why);
        T_ASSERT(im_proto_find(im_proto_builtin[i]->name) == im_proto_builtin[i]);
    }
    T_ASSERT(why == NULL);
    T_ASSERT(im_proto_find("xmpp") == &xmpp_ops);
    T_ASSERT(im_proto_find("irc") == &irc_ops);
    T_ASSERT(im_proto_find("sip") == &sip_ops);
    T_ASSERT(im_proto_find("fake") == NULL);
    /* what the relay relies on: the list kept by the server or by imfuse */
    T_ASSERT(xmpp_ops.add_contact && !xmpp_ops.set_watch && xmpp_ops.kdf_done);
    T_ASSERT(!irc_ops.add_contact && irc_ops.set_watch && !irc_ops.kdf_done);
    T_ASSERT(!sip_ops.add_contact && sip_ops.set_watch && sip_ops.committed);
}

T_TEST(plug_in_and_out)
{
    const char *why = NULL;

    T_EQ_INT(im_proto_register(&fake_ops, &why), 0);
    T_ASSERT(im_proto_find("fake") == &fake_ops);
    T_EQ_INT(im_proto_register(&fake_ops, &why), -IM_EEXIST);
    T_EQ_STR(why, "a network of that name exists");
    static const struct im_proto_ops xmpp_again = FAKE_OPS("xmpp");
    T_EQ_INT(im_proto_register(&xmpp_again, &why), -IM_EEXIST);     /* built-in names too */
    T_ASSERT(im_proto_find("xmpp") == &xmpp_ops);
    T_EQ_INT(im_proto_unregister(&fake_ops), 0);
    T_ASSERT(im_proto_find("fake") == NULL);
    T_EQ_INT(im_proto_unregister(&fake_ops), -IM_ENOTFOUND);
    T_EQ_INT(im_proto_unregister(&xmpp_ops), -IM_ENOTFOUND);        /* built-ins stay */
}

T_TEST(table_full)
{
    static const struct im_proto_ops many[IM_PROTO_MAX_PLUGGED + 1] = {
        FAKE_OPS("n0"), FAKE_OPS("n1"), FAKE_OPS("n2"), FAKE_OPS("n3"), FAKE_OPS("n4"),
        FAKE_OPS("n5"), FAKE_OPS("n6"), FAKE_OPS("n7"), FAKE_OPS("n8"),
    };
    const char *why = NULL;

    for (int i = 0; i < IM_PROTO_MAX_PLUGGED; i++)
        T_EQ_INT(im_proto_register(&many[i], NULL), 0);
    T_EQ_INT(im_proto_register(&many[IM_PROTO_MAX_PLUGGED], &why), -IM_ELIMIT);
    T_EQ_STR(why, "too many plugged networks (IM_PROTO_MAX_PLUGGED)");
    T_EQ_INT(im_proto_unregister(&many[3]), 0);                     /* a slot frees up */
    T_EQ_INT(im_proto_register(&many[IM_PROTO_MAX_PLUGGED], NULL), 0);
    T_ASSERT(im_proto_find("n8") == &many[IM_PROTO_MAX_PLUGGED]);
    T_ASSERT(im_proto_find("n3") == NULL);
    for (int i = 0; i <= IM_PROTO_MAX_PLUGGED; i++)
        im_proto_unregister(&many[i]);
}

T_TEST(incomplete_adapters_refused)
{
    const char *why = NULL;
    struct im_proto_ops o = FAKE_OPS("half");

    o.tick = NULL;
    T_EQ_INT(im_proto_register(&o, &why), -IM_EINVAL);
    T_EQ_STR(why, "create, destroy, start, input, tick and send_msg are mandatory");
    o = (struct im_proto_ops)FAKE_OPS("");
    T_EQ_INT(im_proto_register(&o, &why), -IM_EINVAL);
    T_EQ_STR(why, "no name");
    o = (struct im_proto_ops)FAKE_OPS("half");
    o.normalize_address = NULL;
    T_EQ_INT(im_proto_ops_check(&o, &why), -IM_EINVAL);
    o = (struct im_proto_ops)FAKE_OPS("half");
    o.has_starttls = true;
    T_EQ_INT(im_proto_ops_check(&o, &why), -IM_EINVAL);
    T_EQ_STR(why, "has_starttls needs tls_ready");
    o = (struct im_proto_ops)FAKE_OPS("half");
    o.remove_contact = f_remove;
    T_EQ_INT(im_proto_ops_check(&o, &why), -IM_EINVAL);
    T_EQ_STR(why, "add_contact and remove_contact go together");
    T_EQ_INT(im_proto_ops_check(NULL, NULL), -IM_EINVAL);
    T_ASSERT(im_proto_find("half") == NULL);
}

T_MAIN(T_RUN(builtins_keep_the_contract), T_RUN(plug_in_and_out), T_RUN(table_full),
       T_RUN(incomplete_adapters_refused))
