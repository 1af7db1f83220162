/* The MPI backend's registries: work and chunk functions and ctx data by name, the
 * same on every rank, so that a job names its function and its ctx by index
 * instead of by pointer.  Registration happens before async_mpi_init
 * (constructors, or main before init), single-threaded; init sorts both
 * tables by name and freezes them, and every rank checks the hash of the
 * names.  After that only replicated data (async_mpi_bcast) is appended,
 * under `mu`, which the lookups take too.  Every lookup is a hash index
 * (by name while registering, by pointer for a job's fn and ctx), so that
 * 65,536 names cost O(1) each, not a scan of all those before. */
#include <pthread.h>
#include <string.h>
#include <stdlib.h>
#include "mpi_internal.h"

#define NAME_MAX_ 64

typedef struct fn_ent {
    char name[NAME_MAX_];
    async_work_fn fn;     /* one of the two is set */
    async_chunk_fn chunk;
} fn_ent_t;

typedef struct data_ent {
    char name[NAME_MAX_]; /* "" for replicated data */
    void *data;
    bool owned;
} data_ent_t;

/* An open-addressing hash index over one table's entries: each slot holds
 * an entry's index + 1 (0: empty), probed linearly, at most half full.
 * Entries are never removed one by one (an index is rebuilt or freed
 * whole), so a probe ends at the first empty slot. */
typedef struct index {
    uint32_t *slot;
    size_t cap; /* 0 or a power of two */
    size_t n;
} index_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static fn_ent_t *fns;
static size_t nfns, capfns;
static data_ent_t *datas;
static size_t ndatas, capdatas;
static bool frozen;
/* By name until the freeze (the duplicate checks of registration), then
 * freed: the sort moves every entry and no name is registered after it. */
static index_t fn_names, data_names;
/* Built at the freeze: a job's fn or chunk function -> its first entry, and
 * rank 0's ctx pointers -> the newest entry holding that pointer (a
 * registered name's, or its latest replica), kept up to date by
 * async__mpi_data_add.  A serving rank never looks a ctx up by pointer, and
 * async__mpi_data_put does not maintain it. */
static index_t fn_ptrs, data_ptrs;

static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 16;
    void *p = async__malloc(nc * size);
    if (!p) return ASYNC_ENOMEM;
    if (*arr) memcpy(p, *arr, n * size);
    async__free(*arr);
    *arr = p;
    *cap = nc;
    return 0;
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (h ^ 0xff) * 1099511628211ull; /* a separator: "ab","c" != "a","bc" */
}

#define FNV_BASIS 14695981039346656037ull

static uint64_t hash_name(const char *name) { return fnv(FNV_BASIS, name); }

static uint64_t hash_ptr(const void *a, const void *b)
{
    uint64_t h = (uint64_t)(uintptr_t)a ^ ((uint64_t)(uintptr_t)b * 0xff51afd7ed558ccdull);
    h *= 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

static uint64_t fn_name_hash(size_t i) { return hash_name(fns[i].name); }
static uint64_t data_name_hash(size_t i) { return hash_name(datas[i].name); }
static uint64_t fn_ptr_hash(size_t i) { return hash_ptr((void *)fns[i].fn, (void *)fns[i].chunk); }
static uint64_t data_ptr_hash(size_t i) { return hash_ptr(datas[i].data, NULL); }

/* The slot of the entry for which is(entry, key) holds, or the empty slot
 * where it would go; NULL while the index has no slots. */
static uint32_t *index_find(const index_t *ix, uint64_t h, bool (*is)(size_t, const void *), const void *key)
{
    if (!ix->cap) return NULL;
    for (size_t i = h & (ix->cap - 1);; i = (i + 1) & (ix->cap - 1))
        if (!ix->slot[i] || is(ix->slot[i] - 1, key)) return &ix->slot[i];
}

/* Room for one more entry, so that the insertion that follows cannot fail:
 * at half full the index doubles and every entry is placed again (hash_of
 * gives an entry's hash).  On ASYNC_ENOMEM the index is unchanged. */
static int index_reserve(index_t *ix, uint64_t (*hash_of)(size_t))
{
    if (2 * (ix->n + 1) <= ix->cap) return 0;
    size_t nc = ix->cap ? ix->cap * 2 : 64;
    uint32_t *s = async__calloc(nc, sizeof *s);
    if (!s) return ASYNC_ENOMEM;
    for (size_t i = 0; i < ix->cap; i++) {
        if (!ix->slot[i]) continue;
        size_t j = hash_of(ix->slot[i] - 1) & (nc - 1);
        while (s[j]) j = (j + 1) & (nc - 1);
        s[j] = ix->slot[i];
    }
    async__free(ix->slot);
    ix->slot = s;
    ix->cap = nc;
    return 0;
}

/* Fills the empty slot that index_find returned with entry i. */
static void index_put(index_t *ix, uint32_t *slot, size_t i)
{
    *slot = (uint32_t)i + 1;
    ix->n++;
}

static void index_free(index_t *ix)
{
    async__free(ix->slot);
    *ix = (index_t){0};
}

static bool fn_named(size_t i, const void *name) { return !strcmp(fns[i].name, name); }
static bool data_named(size_t i, const void *name) { return !strcmp(datas[i].name, name); }

static int check_name(const char *name)
{
    if (!name || !*name || strlen(name) >= NAME_MAX_) return ASYNC_EINVAL;
    return 0;
}

/* A work function (fn) or a chunk function (chunk) under name. */
static int register_fn(const char *name, async_work_fn fn, async_chunk_fn chunk)
{
    if (check_name(name) || (!fn && !chunk)) return ASYNC_EINVAL;
    pthread_mutex_lock(&mu);
    int r = frozen ? ASYNC_EBUSY : 0;
    uint64_t h = hash_name(name);
    uint32_t *at = r ? NULL : index_find(&fn_names, h, fn_named, name);
    if (at && *at) {
        const fn_ent_t *e = &fns[*at - 1];
        r = e->fn == fn && e->chunk == chunk ? 0 : ASYNC_EINVAL;
        pthread_mutex_unlock(&mu);
        return r;
    }
    /* Both reservations before anything is added: a failure leaves no trace. */
    if (!r) r = index_reserve(&fn_names, fn_name_hash);
    if (!r) r = grow((void **)&fns, &capfns, nfns, sizeof *fns);
    if (!r) {
        strcpy(fns[nfns].name, name);
        fns[nfns].fn = fn;
        fns[nfns].chunk = chunk;
        index_put(&fn_names, index_find(&fn_names, h, fn_named, name), nfns++);
    }
    pthread_mutex_unlock(&mu);
    return r;
}

int async_mpi_register(const char *name, async_work_fn fn)
{
    return fn ? register_fn(name, fn, NULL) : ASYNC_EINVAL;
}

int async_mpi_register_chunk(const char *name, async_chunk_fn fn)
{
    return fn ? register_fn(name, NULL, fn) : ASYNC_EINVAL;
}

int async_mpi_register_data(const char *name, void *data)
{
    if (check_name(name)) return ASYNC_EINVAL;
    pthread_mutex_lock(&mu);
    int r = frozen ? ASYNC_EBUSY : 0;
    uint64_t h = hash_name(name);
    uint32_t *at = r ? NULL : index_find(&data_names, h, data_named, name);
    if (at && *at) {
        r = datas[*at - 1].data == data ? 0 : ASYNC_EINVAL;
        pthread_mutex_unlock(&mu);
        return r;
    }
    if (!r && ndatas >= ASYNC_MPI_DATA_MAX) r = ASYNC_EFULL;
    if (!r) r = index_reserve(&data_names, data_name_hash);
    if (!r) r = grow((void **)&datas, &capdatas, ndatas, sizeof *datas);
    if (!r) {
        strcpy(datas[ndatas].name, name);
        datas[ndatas].data = data;
        datas[ndatas].owned = false;
        index_put(&data_names, index_find(&data_names, h, data_named, name), ndatas++);
    }
    pthread_mutex_unlock(&mu);
    return r;
}

static int cmp_fn(const void *a, const void *b)
{
    return strcmp(((const fn_ent_t *)a)->name, ((const fn_ent_t *)b)->name);
}

static int cmp_data(const void *a, const void *b)
{
    return strcmp(((const data_ent_t *)a)->name, ((const data_ent_t *)b)->name);
}

static bool fn_is(size_t i, const void *key)
{
    const fn_ent_t *k = key;
    return fns[i].fn == k->fn && fns[i].chunk == k->chunk;
}

static bool data_is(size_t i, const void *ptr) { return datas[i].data == ptr; }

/* Whether fn_ptrs and data_ptrs index every entry: false without memory
 * for them at the freeze (which cannot fail: every rank must go on to
 * compare its hash), and then the lookups scan the table.  fn_ptrs_ok is
 * set at the freeze only, so fn_find may read it and fn_ptrs without the
 * lock; data_ptrs_ok is read and set under mu, and the next replication
 * builds data_ptrs (it cannot do without). */
static bool fn_ptrs_ok, data_ptrs_ok;

static bool build_fn_ptrs(void)
{
    for (size_t i = 0; i < nfns; i++) {
        if (index_reserve(&fn_ptrs, fn_ptr_hash)) {
            index_free(&fn_ptrs);
            return false;
        }
        uint32_t *at = index_find(&fn_ptrs, fn_ptr_hash(i), fn_is, &fns[i]);
        if (!*at) index_put(&fn_ptrs, at, i); /* the first entry wins, as a scan finds it */
    }
    return true;
}

static bool build_data_ptrs(void)
{
    for (size_t i = 0; i < ndatas; i++) {
        if (index_reserve(&data_ptrs, data_ptr_hash)) {
            index_free(&data_ptrs);
            return false;
        }
        uint32_t *at = index_find(&data_ptrs, data_ptr_hash(i), data_is, datas[i].data);
        if (*at) *at = (uint32_t)i + 1; /* the newest entry wins */
        else index_put(&data_ptrs, at, i);
    }
    return true;
}

uint64_t async__mpi_registry_freeze(void)
{
    pthread_mutex_lock(&mu);
    frozen = true;
    index_free(&fn_names);
    index_free(&data_names);
    if (nfns) qsort(fns, nfns, sizeof *fns, cmp_fn);
    if (ndatas) qsort(datas, ndatas, sizeof *datas, cmp_data);
    fn_ptrs_ok = build_fn_ptrs();
    data_ptrs_ok = build_data_ptrs();
    uint64_t h = FNV_BASIS;
    for (size_t i = 0; i < nfns; i++) h = fnv(fnv(h, fns[i].chunk ? "\x02" : "\x03"), fns[i].name);
    h = fnv(h, "\x01 data");
    for (size_t i = 0; i < ndatas; i++) h = fnv(h, datas[i].name);
    pthread_mutex_unlock(&mu);
    return h;
}

/* The index of the first entry that is exactly (fn, chunk), one of them
 * NULL. */
static int fn_find(async_work_fn fn, async_chunk_fn chunk, uint32_t *index)
{
    /* Frozen: the table and its index no longer change, no lock needed. */
    fn_ent_t key = {.fn = fn, .chunk = chunk};
    if (fn_ptrs_ok) {
        const uint32_t *at = index_find(&fn_ptrs, hash_ptr((void *)fn, (void *)chunk), fn_is, &key);
        if (!at || !*at) return ASYNC_EINVAL;
        *index = *at - 1;
        return 0;
    }
    for (size_t i = 0; i < nfns; i++)
        if (fn_is(i, &key)) {
            *index = (uint32_t)i;
            return 0;
        }
    return ASYNC_EINVAL;
}

int async__mpi_fn_index(async_work_fn fn, uint32_t *index)
{
    return fn ? fn_find(fn, NULL, index) : ASYNC_EINVAL;
}

async_work_fn async__mpi_fn_at(uint32_t index)
{
    return index < nfns ? fns[index].fn : NULL;
}

int async__mpi_chunk_index(async_chunk_fn fn, uint32_t *index)
{
    return fn ? fn_find(NULL, fn, index) : ASYNC_EINVAL;
}

async_chunk_fn async__mpi_chunk_at(uint32_t index)
{
    return index < nfns ? fns[index].chunk : NULL;
}

int async__mpi_ctx_index(const void *ctx, uint32_t *index)
{
    if (!ctx) {
        *index = 0;
        return 0;
    }
    int r = ASYNC_EINVAL;
    pthread_mutex_lock(&mu);
    /* Newest first: registered data replicated with async_mpi_bcast (its
     * bytes rewritten on rank 0) names the replica, which the ranks hold
     * in place of their own static copy; the registered entry, part of
     * the hash, cannot be forgotten as async__mpi_data_add forgets older
     * replicas.  data_ptrs holds that newest entry. */
    if (data_ptrs_ok) {
        const uint32_t *at = index_find(&data_ptrs, hash_ptr(ctx, NULL), data_is, ctx);
        if (at && *at) {
            *index = *at;
            r = 0;
        }
    } else {
        for (size_t i = ndatas; i-- > 0;)
            if (datas[i].data == ctx) {
                *index = (uint32_t)i + 1;
                r = 0;
                break;
            }
    }
    pthread_mutex_unlock(&mu);
    return r;
}

void *async__mpi_ctx_at(uint32_t index)
{
    pthread_mutex_lock(&mu);
    void *d = index && index <= ndatas ? datas[index - 1].data : NULL;
    pthread_mutex_unlock(&mu);
    return d;
}

int async__mpi_data_add(void *data, bool owned)
{
    pthread_mutex_lock(&mu);
    int r = ndatas >= ASYNC_MPI_DATA_MAX ? ASYNC_EFULL : 0;
    /* Room first: a replication refused (full, or no memory) changes
     * nothing, and the copy that jobs name stays the one they name.  An
     * index the freeze had no memory for is built now. */
    if (!r && !data_ptrs_ok) r = (data_ptrs_ok = build_data_ptrs()) ? 0 : ASYNC_ENOMEM;
    if (!r) r = index_reserve(&data_ptrs, data_ptr_hash);
    if (!r) r = grow((void **)&datas, &capdatas, ndatas, sizeof *datas);
    if (!r) {
        /* The same pointer replicated again (its memory freed and reused,
         * or its bytes changed) names the new copy from now on: the old
         * replica is forgotten on rank 0, or jobs would still name the old
         * bytes.  Only the newest entry of a pointer can be a live replica
         * (each replication forgets the one before), the one data_ptrs
         * holds. */
        uint32_t *at = index_find(&data_ptrs, hash_ptr(data, NULL), data_is, data);
        if (*at && !datas[*at - 1].name[0]) datas[*at - 1].data = NULL;
        if (*at) *at = (uint32_t)ndatas + 1;
        else index_put(&data_ptrs, at, ndatas);
        datas[ndatas] = (data_ent_t){.data = data, .owned = owned};
        r = (int)ndatas++;
    }
    pthread_mutex_unlock(&mu);
    return r;
}

int async__mpi_data_put(uint32_t id, void *data)
{
    /* Rank 0 never sends an id past the bound: a forged one would grow the
     * table to 4 G entries (320 GB) before anything failed. */
    if (id >= ASYNC_MPI_DATA_MAX) return ASYNC_EINVAL;
    pthread_mutex_lock(&mu);
    int r = 0;
    while (!r && ndatas <= id) {
        r = grow((void **)&datas, &capdatas, ndatas, sizeof *datas);
        if (!r) datas[ndatas++] = (data_ent_t){.data = NULL};
    }
    if (!r) {
        if (datas[id].owned) async__free(datas[id].data);
        datas[id] = (data_ent_t){.data = data, .owned = true};
    }
    pthread_mutex_unlock(&mu);
    return r;
}

void async__mpi_registry_free(void)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < ndatas; i++)
        if (datas[i].owned) async__free(datas[i].data);
    async__free(datas);
    async__free(fns);
    datas = NULL;
    fns = NULL;
    ndatas = capdatas = nfns = capfns = 0;
    index_free(&fn_names);
    index_free(&data_names);
    index_free(&fn_ptrs);
    index_free(&data_ptrs);
    fn_ptrs_ok = data_ptrs_ok = false;
    pthread_mutex_unlock(&mu);
}
