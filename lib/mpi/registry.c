/* The MPI backend's registries: work and chunk functions and ctx data by name, the
 * same on every rank, so that a job names its function and its ctx by index
 * instead of by pointer.  Registration happens before async_mpi_init
 * (constructors, or main before init), single-threaded; init sorts both
 * tables by name and freezes them, and every rank checks the hash of the
 * names.  After that only replicated data (async_mpi_bcast) is appended,
 * under `mu`, which the lookups take too. */
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

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static fn_ent_t *fns;
static size_t nfns, capfns;
static data_ent_t *datas;
static size_t ndatas, capdatas;
static bool frozen;

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
    for (size_t i = 0; !r && i < nfns; i++)
        if (!strcmp(fns[i].name, name)) {
            pthread_mutex_unlock(&mu);
            return fns[i].fn == fn && fns[i].chunk == chunk ? 0 : ASYNC_EINVAL;
        }
    if (!r) r = grow((void **)&fns, &capfns, nfns, sizeof *fns);
    if (!r) {
        strcpy(fns[nfns].name, name);
        fns[nfns].fn = fn;
        fns[nfns++].chunk = chunk;
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
    for (size_t i = 0; !r && i < ndatas; i++)
        if (!strcmp(datas[i].name, name)) {
            pthread_mutex_unlock(&mu);
            return datas[i].data == data ? 0 : ASYNC_EINVAL;
        }
    if (!r && ndatas >= ASYNC_MPI_DATA_MAX) r = ASYNC_EFULL;
    if (!r) r = grow((void **)&datas, &capdatas, ndatas, sizeof *datas);
    if (!r) {
        strcpy(datas[ndatas].name, name);
        datas[ndatas].data = data;
        datas[ndatas++].owned = false;
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

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (h ^ 0xff) * 1099511628211ull; /* a separator: "ab","c" != "a","bc" */
}

uint64_t async__mpi_registry_freeze(void)
{
    pthread_mutex_lock(&mu);
    frozen = true;
    if (nfns) qsort(fns, nfns, sizeof *fns, cmp_fn);
    if (ndatas) qsort(datas, ndatas, sizeof *datas, cmp_data);
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < nfns; i++) h = fnv(fnv(h, fns[i].chunk ? "\x02" : "\x03"), fns[i].name);
    h = fnv(h, "\x01 data");
    for (size_t i = 0; i < ndatas; i++) h = fnv(h, datas[i].name);
    pthread_mutex_unlock(&mu);
    return h;
}

/* The index of the entry that is exactly (fn, chunk), one of them NULL. */
static int fn_find(async_work_fn fn, async_chunk_fn chunk, uint32_t *index)
{
    /* Frozen: the table no longer changes, no lock needed. */
    for (size_t i = 0; i < nfns; i++)
        if (fns[i].fn == fn && fns[i].chunk == chunk) {
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
     * replicas. */
    for (size_t i = ndatas; i-- > 0;)
        if (datas[i].data == ctx) {
            *index = (uint32_t)i + 1;
            r = 0;
            break;
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
    /* The same pointer replicated again (its memory freed and reused, or
     * its bytes changed) names the new copy from now on: the old entry is
     * forgotten on rank 0, or jobs would still name the old bytes. */
    for (size_t i = 0; i < ndatas; i++)
        if (!datas[i].name[0] && datas[i].data == data) datas[i].data = NULL;
    int r = ndatas >= ASYNC_MPI_DATA_MAX ? ASYNC_EFULL : 0;
    if (!r) r = grow((void **)&datas, &capdatas, ndatas, sizeof *datas);
    if (!r) {
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
    pthread_mutex_unlock(&mu);
}
