/*
 * cp_store.h - the appliance's durable state in one LMDB environment
 * (DESIGN 5).  Owned by the controlplane thread: one writer, and everything a
 * loop turn changes goes into one write transaction (group commit, one fsync).
 *
 * Named databases, keys fixed-width big-endian (uid, account, seq, id are
 * uint64) so cursor order is numeric order:
 *   users      name                    -> struct cp_user (encoded)
 *   uids       uid                     -> name
 *   accounts   uid.account             -> struct cp_account (encoded)
 *   contacts   uid.account             -> opaque blob (the account's list)
 *   unified    uid.id                  -> opaque blob (one unified contact)
 *   queue      uid.seq                 -> opaque blob (one inbound message)
 *   outbox     msg                     -> uid + opaque blob (one accepted outbound message)
 *   meta       name                    -> value (schema, counters; uint64 big-endian)
 *
 * Records are versioned (a leading version byte) and bounds-checked on
 * decode: a record that does not decode is -IM_ECORRUPT, never a crash.
 *
 * Durability: the environment is opened with full sync (no MDB_NOSYNC), so a
 * committed transaction survives kill -9 and power loss.
 *
 * Return codes: 0, or negative -errno / -IM_E*.  Store-specific meanings:
 *   -ENOSPC        the map is full (mapsize reached) or the disk is full; the
 *                  write transaction is dead and nothing of it is written.
 *   -IM_ECORRUPT   a record or the environment does not decode.
 *   -IM_ENOTFOUND / -IM_EEXIST   as the function says.
 *   -ENOTSUP       the data directory has a newer schema (cp_store_open).
 * cp_store_strerror() gives an operator-facing sentence for any of them.
 *
 * After a write operation in a write transaction fails with anything but
 * -IM_ENOTFOUND / -IM_EEXIST, the transaction is dead: cp_txn_commit() then
 * aborts it and returns that first error.
 *
 * Values handed to callbacks point into the map: copy them before the
 * transaction ends.  Callbacks return 0 to continue; a non-zero return stops
 * the walk and the *_each function returns that value.
 */
#ifndef CP_STORE_H
#define CP_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define CP_NAME_MAX     64      /* user names: 1-64 bytes of [a-z0-9._-] */
#define CP_HASH_MAX     128     /* encoded Argon2id hash */
#define CP_SCHEMA       1       /* meta "schema" this code reads and writes */

struct cp_store;
struct cp_txn;

struct cp_user {
    uint64_t uid;
    char name[CP_NAME_MAX + 1];
    char hash[CP_HASH_MAX + 1];     /* Argon2id encoded string */
    uint32_t flags;
    uint64_t next_seq;              /* next inbound message seq (starts at 1) */
    uint64_t max_pushed;            /* highest seq ever committed (ack bound) */
    uint64_t next_unified;          /* next unified contact id (starts at 1) */
    uint64_t created_ms;
};

struct cp_account {
    uint64_t uid;
    uint64_t account;
    char network[16];
    char login[256];
    char server[262];               /* host:port */
    char tls[16];                   /* starttls | tls | none */
    char name[256];
    uint8_t *options;               /* msgpack map (opaque), malloc'd, may be NULL */
    size_t options_len;
    uint8_t *sealed;                /* sealed password, malloc'd, may be NULL */
    size_t sealed_len;
};

/*
 * Open (creating if needed) the environment in dir (data.mdb and lock.mdb;
 * the caller has created dir, 0700).  mapsize 0 picks the default (1 GiB).
 * Creates every named database and writes meta "schema" = CP_SCHEMA on a new
 * environment; refuses a newer schema (-ENOTSUP).  Returns 0 or negative
 * with an operator-facing reason in why (NUL-terminated when whysz > 0).
 */
int cp_store_open(struct cp_store **out, const char *dir, size_t mapsize, char *why, size_t whysz);
/* Close the environment.  Every transaction must be ended first.  NULL is fine. */
void cp_store_close(struct cp_store *s);

/* A short operator-facing sentence for a code returned by this module. */
const char *cp_store_strerror(int rc);

/*
 * Transactions.  Only one write transaction at a time (controlplane thread):
 * a second cp_txn_begin(write) waits for the first to end (in the same thread
 * it deadlocks).  Read transactions may be opened beside it.  Every read function accepts a
 * write transaction too (it sees the transaction's own changes).
 */
int cp_txn_begin(struct cp_store *s, bool write, struct cp_txn **out);
int cp_txn_commit(struct cp_txn *t);       /* frees t even on failure */
void cp_txn_abort(struct cp_txn *t);       /* frees t; NULL is fine */

/* Counters in meta: returns the current value (1 for a new counter) and stores value+1. */
int cp_meta_next(struct cp_txn *t, const char *name, uint64_t *out);
/* A meta value: 0, -IM_ENOTFOUND, -IM_ECORRUPT (not 8 bytes). */
int cp_meta_get(struct cp_txn *t, const char *name, uint64_t *out);
/* Store a meta value. */
int cp_meta_set(struct cp_txn *t, const char *name, uint64_t value);

/* Users.  -IM_EEXIST / -IM_ENOTFOUND as appropriate; -IM_EINVAL for a bad name. */
/* Assigns u->uid from meta "uid" (first is 1); sets next_seq / next_unified to 1
 * and created_ms to now when they are zero. */
int cp_user_add(struct cp_txn *t, struct cp_user *u);
int cp_user_get(struct cp_txn *t, const char *name, struct cp_user *out);
int cp_user_get_uid(struct cp_txn *t, uint64_t uid, struct cp_user *out);
int cp_user_put(struct cp_txn *t, const struct cp_user *u);    /* update existing (same name and uid) */
/* Delete the user and all its data: accounts, contacts, unified, queue, outbox. */
int cp_user_del(struct cp_txn *t, const char *name);
typedef int cp_user_fn(void *ud, const struct cp_user *u);      /* non-zero stops */
int cp_user_each(struct cp_txn *t, cp_user_fn *fn, void *ud);  /* in name order */

/*
 * Accounts.  cp_account_get / cp_account_each fill options and sealed with
 * malloc'd copies: the caller frees a record it got with cp_account_free()
 * (callback records are freed by cp_account_each after the callback returns).
 */
int cp_account_put(struct cp_txn *t, const struct cp_account *a);
int cp_account_get(struct cp_txn *t, uint64_t uid, uint64_t account, struct cp_account *out);
int cp_account_del(struct cp_txn *t, uint64_t uid, uint64_t account);
typedef int cp_account_fn(void *ud, const struct cp_account *a);
/* uid 0: every user's accounts.  In (uid, account) order. */
int cp_account_each(struct cp_txn *t, uint64_t uid, cp_account_fn *fn, void *ud);
/* Accounts of every user (the transaction's own changes included). */
int cp_account_count(struct cp_txn *t, uint64_t *n);
/* Free options and sealed and zero them; the struct itself is the caller's. */
void cp_account_free(struct cp_account *a);

/* Opaque blobs keyed by (uid, k): contacts, unified, queue.  uid 0 is invalid for put/del. */
enum cp_blob_db { CP_DB_CONTACTS, CP_DB_UNIFIED, CP_DB_QUEUE };
int cp_blob_put(struct cp_txn *t, enum cp_blob_db db, uint64_t uid, uint64_t k, const void *v, size_t n);
int cp_blob_del(struct cp_txn *t, enum cp_blob_db db, uint64_t uid, uint64_t k);
/* Delete every key of uid with k <= upto (upto UINT64_MAX: all); *n (may be NULL) gets the count. */
int cp_blob_del_upto(struct cp_txn *t, enum cp_blob_db db, uint64_t uid, uint64_t upto, uint64_t *n);
/* cp_blob_del_upto() of the queue that also sums the deleted values' bytes. */
int cp_queue_del_upto(struct cp_txn *t, uint64_t uid, uint64_t upto, uint64_t *n, uint64_t *bytes);
typedef int cp_blob_fn(void *ud, uint64_t uid, uint64_t k, const void *v, size_t n);
/* Keys of uid with k >= from, in order.  uid 0: all users, every key from the start (from ignored). */
int cp_blob_each(struct cp_txn *t, enum cp_blob_db db, uint64_t uid, uint64_t from, cp_blob_fn *fn, void *ud);
/* Number of keys of uid (uid 0: of the whole database). */
int cp_blob_count(struct cp_txn *t, enum cp_blob_db db, uint64_t uid, uint64_t *n);

/* Outbox: accepted outbound messages of every user, keyed by msg id (cursor
 * order = acceptance order); each entry remembers its uid. */
int cp_outbox_put(struct cp_txn *t, uint64_t msg, uint64_t uid, const void *v, size_t n);
int cp_outbox_del(struct cp_txn *t, uint64_t msg);             /* -IM_ENOTFOUND when absent */
/* Delete every entry of uid; *n (may be NULL) gets the count.  cp_user_del calls it. */
int cp_outbox_del_uid(struct cp_txn *t, uint64_t uid, uint64_t *n);
typedef int cp_outbox_fn(void *ud, uint64_t msg, uint64_t uid, const void *v, size_t n);
int cp_outbox_each(struct cp_txn *t, cp_outbox_fn *fn, void *ud);

/* Environment statistics for `imfusectl stats` (opens its own read transaction). */
struct cp_store_stats {
    uint64_t map_size, last_pgno, page_size, users, accounts, queued;
    uint64_t commit_cpu_us;     /* CPU time (user + system) spent in commits, since start */
};
int cp_store_stats(struct cp_store *s, struct cp_store_stats *st);

/*
 * Write a compacted copy of the store's data file to fd (LMDB's
 * mdb_env_copyfd2 with MDB_CP_COMPACT: free pages left out) from a read
 * snapshot, while the store serves.  Any thread may call it (the
 * environment has MDB_NOTLS); it takes as long as the copy.  fd stays the
 * caller's.  0 or negative.
 */
int cp_store_copy_fd(struct cp_store *s, int fd);

#endif
