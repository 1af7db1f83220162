/* Shared values and arrays (multiprocessing.Value and Array): plain bytes in
 * a shared mapping, optionally guarded by a robust process-shared lock that
 * get/set take and users can take around compound updates.  Since a user may
 * hold that lock for as long as they like, every call that takes it has a
 * _dl form.  The data starts on a 64-byte boundary so any element type is
 * aligned. */
#include <string.h>
#include "ipc_internal.h"

#define DATA_ALIGN 64

typedef struct shared {
    /* The first page: set at creation, then read-only, so that no stray
     * write can move get and set past the data (ipc_internal.h). */
    async__ipc_hdr_t hdr;
    bool with_lock;
    size_t elem_size, n;
    /* The rest: the lock and the data, written by every process. */
    _Alignas(ASYNC__IPC_PAGE) pthread_mutex_t m;
    _Alignas(DATA_ALIGN) unsigned char data[];
} shared_t;

struct async_shared_value { shared_t s; };
struct async_shared_array { shared_t s; };

static int shared_new(shared_t **out, uint32_t kind, size_t elem_size, size_t n, bool with_lock)
{
    if (!out || elem_size == 0 || n == 0 || n > (SIZE_MAX - sizeof(shared_t)) / elem_size)
        return ASYNC_EINVAL;
    shared_t *s;
    int err = async__ipc_map(sizeof *s + elem_size * n, kind, (void **)&s);
    if (err) return err;
    if (with_lock && (err = async__ipc_mutex_init(&s->m, PTHREAD_MUTEX_ERRORCHECK))) {
        async__ipc_unmap(s);
        return err;
    }
    s->with_lock = with_lock;
    s->elem_size = elem_size;
    s->n = n;
    if ((err = async__ipc_seal(s))) {
        if (with_lock) pthread_mutex_destroy(&s->m);
        async__ipc_unmap(s);
        return err;
    }
    *out = s;
    return 0;
}

static int shared_lock(shared_t *s, int64_t deadline)
{
    return s->with_lock ? async__ipc_mutex_lock(&s->m, deadline, false) : ASYNC_ENOTSUP;
}

static int shared_unlock(shared_t *s)
{
    return s->with_lock ? -pthread_mutex_unlock(&s->m) : ASYNC_ENOTSUP;
}

/* Copies under the lock if there is one, waiting for it until the deadline;
 * returns 0 or ASYNC_EOWNERDEAD (the copy happened regardless), or the lock's
 * refusal (ASYNC_ETIMEDOUT, ASYNC_EALREADY) with nothing copied. */
static int shared_copy(shared_t *s, size_t index, void *user, bool get, int64_t deadline)
{
    if (index >= s->n || !user) return ASYNC_EINVAL;
    int err = 0;
    if (s->with_lock) {
        err = async__ipc_mutex_lock(&s->m, deadline, false);
        if (err && err != ASYNC_EOWNERDEAD) return err;
    }
    unsigned char *p = s->data + index * s->elem_size;
    if (get) memcpy(user, p, s->elem_size);
    else memcpy(p, user, s->elem_size);
    if (s->with_lock) pthread_mutex_unlock(&s->m);
    return err;
}

int async_shared_value_new(async_shared_value_t **out, size_t size, bool with_lock)
{
    return shared_new((shared_t **)out, IPC_KIND_VALUE, size, 1, with_lock);
}
void async_shared_value_free(async_shared_value_t *v) { if (v) async__ipc_unmap(v); }
void *async_shared_value_ptr(async_shared_value_t *v) { return v->s.data; }
size_t async_shared_value_size(const async_shared_value_t *v) { return v->s.elem_size; }
int async_shared_value_get_dl(async_shared_value_t *v, void *out, int64_t deadline)
{
    return shared_copy(&v->s, 0, out, true, deadline);
}
int async_shared_value_set_dl(async_shared_value_t *v, const void *in, int64_t deadline)
{
    return shared_copy(&v->s, 0, (void *)in, false, deadline);
}
int async_shared_value_get(async_shared_value_t *v, void *out) { return async_shared_value_get_dl(v, out, ASYNC_FOREVER); }
int async_shared_value_set(async_shared_value_t *v, const void *in) { return async_shared_value_set_dl(v, in, ASYNC_FOREVER); }
int async_shared_value_lock_dl(async_shared_value_t *v, int64_t deadline) { return shared_lock(&v->s, deadline); }
int async_shared_value_lock(async_shared_value_t *v) { return shared_lock(&v->s, ASYNC_FOREVER); }
int async_shared_value_unlock(async_shared_value_t *v) { return shared_unlock(&v->s); }

int async_shared_array_new(async_shared_array_t **out, size_t elem_size, size_t n, bool with_lock)
{
    return shared_new((shared_t **)out, IPC_KIND_ARRAY, elem_size, n, with_lock);
}
void async_shared_array_free(async_shared_array_t *a) { if (a) async__ipc_unmap(a); }
void *async_shared_array_ptr(async_shared_array_t *a) { return a->s.data; }
size_t async_shared_array_len(const async_shared_array_t *a) { return a->s.n; }
int async_shared_array_get_dl(async_shared_array_t *a, size_t i, void *out, int64_t deadline)
{
    return shared_copy(&a->s, i, out, true, deadline);
}
int async_shared_array_set_dl(async_shared_array_t *a, size_t i, const void *in, int64_t deadline)
{
    return shared_copy(&a->s, i, (void *)in, false, deadline);
}
int async_shared_array_get(async_shared_array_t *a, size_t i, void *out) { return async_shared_array_get_dl(a, i, out, ASYNC_FOREVER); }
int async_shared_array_set(async_shared_array_t *a, size_t i, const void *in) { return async_shared_array_set_dl(a, i, in, ASYNC_FOREVER); }
int async_shared_array_lock_dl(async_shared_array_t *a, int64_t deadline) { return shared_lock(&a->s, deadline); }
int async_shared_array_lock(async_shared_array_t *a) { return shared_lock(&a->s, ASYNC_FOREVER); }
int async_shared_array_unlock(async_shared_array_t *a) { return shared_unlock(&a->s); }

void async__ipc_array_spots(async_shared_array_t *a, async__ipc_spots_t *out)
{
    *out = (async__ipc_spots_t){.n = &a->s.n};
}
