/* The process-shared dictionary (multiprocessing's Manager().dict() without
 * its proxy server): string keys to byte values in one shared mapping, every
 * operation under one robust process-shared lock, and every change made so
 * that a writer killed at any instruction leaves the dictionary exactly as
 * it was before that change, or exactly as after it.
 *
 * Layout.  An open-addressing hash table (linear probing, FNV-1a) of
 * 2^k slots, at least twice the capacity so chains stay short.  Each slot
 * holds two versions; a version carries the generation that wrote it, a
 * state (free, live, deleted: a tombstone that keeps probe chains whole), the
 * key and the value.  The table's `committed` generation says which versions
 * count: a slot's current version is the one with the highest generation at
 * or below `committed`.
 *
 * Two-phase writes.  A change (one set, or a whole update of many keys)
 * writes generation P = committed + 1 into each touched slot's other version
 * (never the current one), and the live count into count[P & 1]; then one
 * store of committed = P publishes all of it at once.  Before that store
 * nobody sees P: readers and writers take the lock, and the writer itself
 * looks through P.
 *
 * The intent log.  Before a change first writes a slot's version, it
 * appends the slot's index to the log (the index, then the log's length),
 * so every version of generation P lies in a slot the log names.  A writer
 * killed before its commit leaves such versions: the next locker gets
 * EOWNERDEAD and drops the versions above `committed` in the logged slots
 * (their generation goes to 0), then empties the log.  A writer killed
 * after its commit leaves a log whose slots hold nothing above `committed`,
 * and one killed during that repair leaves the same repair to the next
 * locker: each step is idempotent.  An update that cannot complete (the
 * table is full) rolls back the same way.  The repair thus costs what the
 * dead writer wrote, never the table: until round 13 it scrubbed every
 * version of the table, which at capacity 2^18 with 1 KiB values brought
 * 1.1 GB of shared memory into the recovering process, under the lock, for
 * one killed set.  A change writes one log entry per slot it writes (a
 * later write of the same slot reuses its version), and each such slot holds
 * a live key at P, so the log never needs more than `capacity` entries.
 *
 * Order of stores.  Nobody reads the table without the lock, and a lock
 * taken from a dead holder comes through the kernel (a full barrier), which
 * makes every store the dead process executed visible; so what a death can
 * expose is only the order in which the compiler emitted them.  step()
 * pins that order where it matters. */
#include <string.h>
#include "ipc_internal.h"

void (*async__ipc_dict_hook)(int where);

enum { V_FREE = 0, V_LIVE = 1, V_DEAD = 2 };

typedef struct ver {
    uint64_t gen;   /* 0: never written, or dropped by a repair */
    uint32_t state;
    uint32_t klen;
    uint32_t vlen;
    uint32_t pad_;
    unsigned char bytes[]; /* key (klen, then NUL), then the value at max_key + 1 */
} ver_t;

struct async_shared_dict {
    /* The first page: set at creation, then read-only (see the top). */
    async__ipc_hdr_t hdr;
    size_t capacity, max_key, max_value;
    size_t nslots, vstride;
    size_t log_off;             /* the log: capacity slot indices, after the slots */
    /* The rest: written by every process, under mu. */
    _Alignas(ASYNC__IPC_PAGE) pthread_mutex_t mu;
    _Atomic uint64_t committed; /* written only under mu: the commit */
    uint64_t count[2];          /* live keys as of generation g: count[g & 1] */
    _Atomic uint32_t logged;    /* entries of the log in use: see the top */
    _Alignas(64) unsigned char slots[];
};

/* The compiler may not move a store across this (see the top). */
static inline void step(void) { atomic_signal_fence(memory_order_seq_cst); }

static uint32_t *log_of(async_shared_dict_t *d) { return (uint32_t *)(d->slots + d->log_off); }

static ver_t *ver(async_shared_dict_t *d, size_t slot, int i)
{
    return (ver_t *)(d->slots + (slot * 2 + (size_t)i) * d->vstride);
}

static unsigned char *value_of(async_shared_dict_t *d, ver_t *v) { return v->bytes + d->max_key + 1; }

/* The version of the slot as seen at generation `view`, which is either the
 * committed one or the pending one (P): versions above `committed` count only
 * if they are exactly `view`.  NULL: the slot is free. */
static ver_t *current(async_shared_dict_t *d, size_t slot, uint64_t view)
{
    uint64_t c = atomic_load_explicit(&d->committed, memory_order_relaxed);
    ver_t *best = NULL;
    for (int i = 0; i < 2; i++) {
        ver_t *v = ver(d, slot, i);
        if (v->gen == 0 || (v->gen > c && v->gen != view)) continue;
        if (!best || v->gen > best->gen) best = v;
    }
    return best && best->state != V_FREE ? best : NULL;
}

/* The version a change at generation p writes: the slot's version already of
 * generation p, or else the one that is not the committed current one. */
static ver_t *target(async_shared_dict_t *d, size_t slot, uint64_t p)
{
    ver_t *a = ver(d, slot, 0), *b = ver(d, slot, 1);
    if (a->gen == p) return a;
    if (b->gen == p) return b;
    uint64_t c = atomic_load_explicit(&d->committed, memory_order_relaxed);
    ver_t *cur = current(d, slot, c);
    return cur == a ? b : a;
}

static uint64_t hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h;
}

/* Finds key at generation view.  Returns its slot with *found set, or the slot
 * where it would be inserted (the first tombstone or free slot on its chain)
 * with *found clear; SIZE_MAX when it is absent and there is no room. */
static size_t find(async_shared_dict_t *d, const char *key, size_t klen, uint64_t view, bool *found)
{
    size_t mask = d->nslots - 1, insert = SIZE_MAX;
    *found = false;
    for (size_t i = hash(key, klen) & mask, n = 0; n < d->nslots; i = (i + 1) & mask, n++) {
        ver_t *v = current(d, i, view);
        if (!v) return insert != SIZE_MAX ? insert : i;
        if (v->state == V_DEAD) {
            if (insert == SIZE_MAX) insert = i;
        } else if (v->klen == klen && memcmp(v->bytes, key, klen) == 0) {
            *found = true;
            return i;
        }
    }
    return insert;
}

/* Drops the versions above the committed generation in the slots the log
 * names, then empties the log: a dead writer's unpublished change, or a
 * change being rolled back.  Touches the logged slots and nothing else. */
static void repair(async_shared_dict_t *d)
{
    uint64_t c = atomic_load_explicit(&d->committed, memory_order_relaxed);
    uint32_t n = atomic_load_explicit(&d->logged, memory_order_relaxed);
    const uint32_t *log = log_of(d);
    if (n > d->capacity) n = (uint32_t)d->capacity; /* never: the writer checks */
    for (uint32_t k = 0; k < n; k++) {
        size_t s = log[k];
        if (s >= d->nslots) continue; /* never: the writer logs its own slots */
        for (int i = 0; i < 2; i++) {
            ver_t *v = ver(d, s, i);
            if (v->gen > c) v->gen = 0;
        }
    }
    step(); /* killed before the log is emptied: the next locker repeats this */
    atomic_store_explicit(&d->logged, 0, memory_order_relaxed);
}

static int lock(async_shared_dict_t *d)
{
    int err = async__ipc_mutex_lock(&d->mu, ASYNC_FOREVER, false);
    if (err == ASYNC_EOWNERDEAD) {
        repair(d);
        err = 0;
    }
    return err; /* 0 or ASYNC_EALREADY: called from inside items' callback */
}

static void unlock(async_shared_dict_t *d) { pthread_mutex_unlock(&d->mu); }

int async_shared_dict_new(async_shared_dict_t **out, size_t capacity, size_t max_key,
                          size_t max_value)
{
    if (!out || capacity == 0 || capacity > ((size_t)1 << 28) || max_key == 0 ||
        max_key > 65535 || max_value > ((size_t)1 << 30))
        return ASYNC_EINVAL;
    size_t nslots = 2;
    while (nslots < capacity * 2) nslots *= 2;
    size_t vstride = (sizeof(ver_t) + max_key + 1 + max_value + 7) & ~(size_t)7;
    if (nslots * 2 > (SIZE_MAX / 4 - sizeof(async_shared_dict_t)) / vstride) return ASYNC_EINVAL;
    size_t log_off = nslots * 2 * vstride; /* a multiple of 8 */
    async_shared_dict_t *d;
    int err = async__ipc_map(sizeof *d + log_off + capacity * sizeof(uint32_t), IPC_KIND_DICT,
                             (void **)&d);
    if (err) return err;
    if ((err = async__ipc_mutex_init(&d->mu, PTHREAD_MUTEX_ERRORCHECK))) {
        async__ipc_unmap(d);
        return err;
    }
    d->capacity = capacity;
    d->max_key = max_key;
    d->max_value = max_value;
    d->nslots = nslots;
    d->vstride = vstride;
    d->log_off = log_off;
    if ((err = async__ipc_seal(d))) {
        pthread_mutex_destroy(&d->mu);
        async__ipc_unmap(d);
        return err;
    }
    *out = d;
    return 0;
}

void async_shared_dict_free(async_shared_dict_t *d)
{
    if (d) async__ipc_unmap(d);
}

/* --- changes ------------------------------------------------------------------------ */

/* One change in progress at generation p, under the lock. */
typedef struct change {
    async_shared_dict_t *d;
    uint64_t p;
    uint64_t count;
} change_t;

static change_t begin(async_shared_dict_t *d)
{
    uint64_t c = atomic_load_explicit(&d->committed, memory_order_relaxed);
    return (change_t){d, c + 1, d->count[c & 1]};
}

/* Logs slot s as written by the change in progress, before its first write
 * there (see the top).  False, with nothing logged, if the log is full,
 * which a change of at most capacity live keys never makes it. */
static bool intend(async_shared_dict_t *d, size_t s)
{
    uint32_t n = atomic_load_explicit(&d->logged, memory_order_relaxed);
    if (n >= d->capacity) return false;
    log_of(d)[n] = (uint32_t)s;
    step(); /* the entry, then the length that covers it */
    atomic_store_explicit(&d->logged, n + 1, memory_order_relaxed);
    step(); /* the length, then the version it covers */
    return true;
}

static int put(change_t *ch, const char *key, size_t klen, const void *val, size_t vlen)
{
    async_shared_dict_t *d = ch->d;
    bool found;
    size_t s = find(d, key, klen, ch->p, &found);
    if (s == SIZE_MAX || (!found && ch->count >= d->capacity)) return ASYNC_EFULL;
    ver_t *v = target(d, s, ch->p);
    if (v->gen != ch->p && !intend(d, s)) return ASYNC_EFULL;
    v->gen = ch->p;
    v->state = V_LIVE;
    v->klen = (uint32_t)klen;
    memcpy(v->bytes, key, klen);
    v->bytes[klen] = '\0';
    v->vlen = (uint32_t)vlen;
    if (vlen) memcpy(value_of(d, v), val, vlen);
    if (!found) ch->count++;
    return 0;
}

static void commit(change_t *ch)
{
    ch->d->count[ch->p & 1] = ch->count;
    /* Release: every write of the change is in memory before the commit is. */
    atomic_store_explicit(&ch->d->committed, ch->p, memory_order_release);
    step(); /* killed before the log is emptied: its slots hold nothing above committed */
    atomic_store_explicit(&ch->d->logged, 0, memory_order_relaxed);
}

static int check_key(async_shared_dict_t *d, const char *key, size_t *klen)
{
    if (!key) return ASYNC_EINVAL;
    *klen = strnlen(key, d->max_key + 1);
    return *klen > d->max_key ? ASYNC_EINVAL : 0;
}

int async_shared_dict_update(async_shared_dict_t *d, const async_shared_dict_item_t *items,
                             size_t n)
{
    if (!d || (n && !items)) return ASYNC_EINVAL;
    for (size_t i = 0; i < n; i++) {
        size_t klen;
        if (check_key(d, items[i].key, &klen) || items[i].len > d->max_value ||
            (items[i].len && !items[i].value))
            return ASYNC_EINVAL;
    }
    int err = lock(d);
    if (err) return err;
    change_t ch = begin(d);
    size_t done = 0;
    for (; done < n && !err; done++) {
        /* Measured again, bounded: a key in memory another process writes
         * may have grown since the check above, and a copy of its strlen
         * would run past the version. */
        size_t klen;
        err = check_key(d, items[done].key, &klen);
        if (!err) err = put(&ch, items[done].key, klen, items[done].value, items[done].len);
        void (*h)(int) = async__ipc_dict_hook;
        if (h && !err) h((int)done + 1);
    }
    /* A failed put writes nothing: roll back the ones before it (nothing
     * was published), which the log names. */
    if (err) repair(d);
    else commit(&ch);
    unlock(d);
    return err;
}

int async_shared_dict_set(async_shared_dict_t *d, const char *key, const void *value, size_t len)
{
    async_shared_dict_item_t it = {key, value, len};
    return async_shared_dict_update(d, &it, 1);
}

int async_shared_dict_increment(async_shared_dict_t *d, const char *key, int64_t delta,
                                int64_t *out)
{
    size_t klen;
    if (!d || check_key(d, key, &klen) || d->max_value < sizeof(int64_t)) return ASYNC_EINVAL;
    int err = lock(d);
    if (err) return err;
    change_t ch = begin(d);
    bool found;
    size_t s = find(d, key, klen, ch.p, &found);
    int64_t v = 0;
    if (found) {
        ver_t *cur = current(d, s, ch.p);
        if (cur->vlen > d->max_value) err = ASYNC_EIO;
        else if (cur->vlen != sizeof v) err = ASYNC_EINVAL;
        else memcpy(&v, value_of(d, cur), sizeof v);
    }
    if (!err && __builtin_add_overflow(v, delta, &v)) err = ASYNC_EINVAL;
    if (!err) err = put(&ch, key, klen, &v, sizeof v);
    if (!err) commit(&ch); /* a failed put wrote and logged nothing: nothing to roll back */
    unlock(d);
    if (!err && out) *out = v;
    return err;
}

int async_shared_dict_delete(async_shared_dict_t *d, const char *key)
{
    size_t klen;
    if (!d || check_key(d, key, &klen)) return ASYNC_EINVAL;
    int err = lock(d);
    if (err) return err;
    change_t ch = begin(d);
    bool found;
    size_t s = find(d, key, klen, ch.p, &found);
    if (!found) {
        err = ASYNC_ENOENT;
    } else {
        /* The tombstone keeps the key, so a dead writer's repair can never
         * expose a half-written one. */
        ver_t *cur = current(d, s, ch.p), *v = target(d, s, ch.p);
        if (!intend(d, s)) {
            unlock(d); /* never: the log is empty when a change starts */
            return ASYNC_EFULL;
        }
        v->gen = ch.p;
        v->state = V_DEAD;
        v->klen = cur->klen;
        memcpy(v->bytes, cur->bytes, cur->klen + 1);
        v->vlen = 0;
        ch.count--;
        commit(&ch);
    }
    unlock(d);
    return err;
}

/* --- reads -------------------------------------------------------------------------- */

/* Whether a version is one a call of ours could have written.  Every
 * process maps the table writable, so a stray write from one of them (an
 * overrun, a wild pointer) can leave lengths past the limits, a key without
 * its NUL or a state no call writes; handing those on would send the
 * reader, or its callback, past the version and the table.  Such a version
 * makes the call that meets it fail with ASYNC_EIO; a set of its key writes
 * the other version and mends it.  Lookups check only what they use: a key
 * is compared over the caller's length, at most max_key, and a value's
 * length is checked before it is copied. */
static bool sound(async_shared_dict_t *d, const ver_t *v)
{
    return (v->state == V_LIVE || v->state == V_DEAD) && v->klen <= d->max_key &&
           v->bytes[v->klen] == '\0' && v->vlen <= d->max_value;
}

int async_shared_dict_get(async_shared_dict_t *d, const char *key, void *buf, size_t cap,
                          size_t *len)
{
    size_t klen;
    if (!d || check_key(d, key, &klen) || (cap && !buf)) return ASYNC_EINVAL;
    int err = lock(d);
    if (err) return err;
    uint64_t c = atomic_load_explicit(&d->committed, memory_order_relaxed);
    bool found;
    size_t s = find(d, key, klen, c, &found);
    if (!found) {
        err = ASYNC_ENOENT;
    } else {
        ver_t *v = current(d, s, c);
        if (v->vlen > d->max_value) { /* overwritten: see sound() */
            err = ASYNC_EIO;
        } else {
            if (len) *len = v->vlen;
            if (v->vlen > cap) err = ASYNC_EINVAL;
            else if (v->vlen) memcpy(buf, value_of(d, v), v->vlen);
        }
    }
    unlock(d);
    return err;
}

int async_shared_dict_items(async_shared_dict_t *d, async_shared_dict_cb cb, void *arg)
{
    if (!d || !cb) return ASYNC_EINVAL;
    int err = lock(d);
    if (err) return err;
    uint64_t c = atomic_load_explicit(&d->committed, memory_order_relaxed);
    int rc = 0;
    bool overwritten = false;
    for (size_t s = 0; s < d->nslots && !rc; s++) {
        ver_t *v = current(d, s, c);
        if (!v) continue;
        if (!sound(d, v)) overwritten = true; /* skipped; the others are handed on */
        else if (v->state == V_LIVE) rc = cb((const char *)v->bytes, value_of(d, v), v->vlen, arg);
    }
    unlock(d);
    return rc ? rc : overwritten ? ASYNC_EIO : 0;
}

size_t async_shared_dict_len(async_shared_dict_t *d)
{
    if (lock(d)) return 0;
    size_t n = (size_t)d->count[atomic_load_explicit(&d->committed, memory_order_relaxed) & 1];
    unlock(d);
    return n;
}

size_t async_shared_dict_capacity(const async_shared_dict_t *d) { return d->capacity; }

int async__ipc_dict_spots(async_shared_dict_t *d, const char *key, async__ipc_spots_t *out)
{
    uint64_t c = atomic_load(&d->committed);
    bool found;
    size_t s = find(d, key, strlen(key), c, &found);
    if (!found) return ASYNC_ENOENT;
    ver_t *v = current(d, s, c);
    *out = (async__ipc_spots_t){.klen = &v->klen, .vlen = &v->vlen, .state = &v->state,
                                .key = v->bytes, .nslots = &d->nslots};
    return 0;
}
