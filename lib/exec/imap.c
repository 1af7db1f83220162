/* Lazy maps (imap, imap_unordered): the input is pulled, on the caller's
 * thread, only as far as a bounded window of items in flight allows, and
 * results are handed out in input order or in completion order.  Memory is
 * bounded by the window whatever the input's length.
 *
 * Each chunk is one job of the executor's queue (kind JOB_IMAP) with its own
 * input copy (when the input comes from a source) and output rows.  The
 * iterator's mutex guards the chunk lists and each chunk's done fields;
 * workers take it only to record a finished chunk.  async_imap_free never
 * touches the executor (which may be gone): it marks the iterator stopping,
 * so that queued chunks are skipped when taken, and waits for every chunk
 * to have finished. */
#include <stdio.h>
#include <string.h>
#include "executor_internal.h"

typedef struct chunk {
    async__job_t job;
    struct async_imap_iter *it;
    size_t base, count, yielded;
    bool done;
    int err;
    size_t failed_row;
    char msg[ASYNC_FUTURE_MSG_MAX];
    struct chunk *next;      /* submission order (ordered mode) */
    struct chunk *next_done; /* completion order (unordered mode) */
    max_align_t buf[];       /* input copy, then output rows */
} chunk_t;

struct async_imap_iter {
    async_executor_t *ex;
    async_imap_t m;
    size_t chunk, window;
    pthread_mutex_t mu;
    pthread_cond_t cond;            /* threads waiting for a chunk to finish */
    async__twaiters_t tasks;        /* tasks waiting for the same, under mu */
    chunk_t *head, *tail;           /* ordered: every live chunk, oldest first */
    chunk_t *done_head, *done_tail; /* unordered: finished chunks with rows left */
    size_t live_items;              /* items in chunks not yet fully yielded */
    size_t unfinished;              /* chunks queued or running */
    size_t next_input;
    bool src_done;
    int src_err;
    _Atomic bool stopping;
    /* A chunk built (its input pulled from the source) whose queueing gave
     * up at a deadline: queued first by the next refill, so no input is lost
     * and the order stays. */
    chunk_t *pending;
    bool cut; /* src_err is the pool's: it stopped taking work (refill) */
    char msg[ASYNC_FUTURE_MSG_MAX];
};

bool async__imap_chunk_start(async__job_t *job)
{
    chunk_t *c = container_of(job, chunk_t, job);
    if (!atomic_load_explicit(&c->it->stopping, memory_order_acquire)) return true;
    async__imap_chunk_done(job, ASYNC_ECANCELED, 0, "the lazy map was freed");
    return false;
}

void async__imap_chunk_done(async__job_t *job, int err, size_t row, const char *msg)
{
    chunk_t *c = container_of(job, chunk_t, job);
    async_imap_iter_t *it = c->it;
    pthread_mutex_lock(&it->mu);
    c->done = true;
    c->err = err;
    c->failed_row = row;
    snprintf(c->msg, sizeof c->msg, "%s", err && msg ? msg : "");
    if (it->m.unordered) {
        c->next_done = NULL;
        if (it->done_tail) it->done_tail->next_done = c;
        else it->done_head = c;
        it->done_tail = c;
    }
    it->unfinished--;
    pthread_cond_broadcast(&it->cond);
    async__twaiters_wake_locked(&it->tasks);
    pthread_mutex_unlock(&it->mu); /* the iterator may be freed from here on */
}

/* Builds the next chunk (*built, OUT) from the input; 0, ASYNC_EEOF (no input
 * left) or ASYNC_ENOMEM. */
static int build_chunk(async_imap_iter_t *it, chunk_t **built)
{
    const async_imap_t *m = &it->m;
    chunk_t *c;
    size_t want = it->chunk;
    if (!m->source) {
        if (it->next_input >= m->n) return ASYNC_EEOF;
        if (m->n - it->next_input < want) want = m->n - it->next_input;
    }
    size_t in_bytes = m->source ? want * m->in_size : 0;
    c = async__malloc(sizeof *c + in_bytes + want * m->out_size);
    if (!c) return ASYNC_ENOMEM;
    char *in = (char *)c->buf, *out = in + in_bytes;
    size_t got = want;
    if (m->source) {
        for (got = 0; got < want; got++) {
            int r = m->source(m->source_arg, in + got * m->in_size);
            if (r) {
                it->src_done = true;
                if (r != ASYNC_EEOF) it->src_err = r;
                break;
            }
        }
        if (!got) {
            async__free(c);
            return ASYNC_EEOF;
        }
    } else {
        in = m->in_size ? (char *)m->in + it->next_input * m->in_size : NULL;
    }
    c->it = it;
    c->base = it->next_input;
    c->count = got;
    c->yielded = 0;
    c->done = false;
    c->err = 0;
    c->next = c->next_done = NULL;
    c->job.rows = (async__rows_t){m->fn, m->ctx, in, m->in_size, m->out_size ? out : NULL,
                                  m->out_size, got};
    c->job.first = c->base;
    c->job.priority = m->priority;
    c->job.deadline = ASYNC_FOREVER;
    c->job.var_ok = false;
    c->job.kind = JOB_IMAP;
    c->job.owner = c;
    c->job.next = NULL;
    *built = c;
    return 0;
}

/* Queues one chunk (the pending one first, else a new one), waiting for
 * queue room until deadline; 0, ASYNC_EEOF (no input left) or an error; on
 * any error a chunk already built (another submit took the room it waited
 * for, or the pool stopped meanwhile) is kept as it->pending.
 * Called on the caller's thread without the mutex. */
static int add_chunk(async_imap_iter_t *it, int64_t deadline)
{
    const async_imap_t *m = &it->m;
    chunk_t *c = it->pending;
    it->pending = NULL;
    if (!c) {
        /* Wait for room before pulling the chunk's items from the source,
         * so that a deadline passing here leaves the input untouched. */
        int r = async__q_wait_room(it->ex, deadline);
        if (r) return r;
        /* A stopped pool would refuse the chunk: its items, pulled, would
         * be lost (each call pulled and dropped another chunk's worth). */
        if ((r = async__q_stopped(it->ex->priv)) != 0) return r;
        if ((r = build_chunk(it, &c)) != 0) return r;
    }
    pthread_mutex_lock(&it->mu);
    if (!m->unordered) {
        if (it->tail) it->tail->next = c;
        else it->head = c;
        it->tail = c;
    }
    it->unfinished++;
    it->live_items += c->count;
    pthread_mutex_unlock(&it->mu);

    int r = async__q_enqueue(it->ex, &c->job, 1, false, deadline);
    if (r) {
        pthread_mutex_lock(&it->mu);
        if (!m->unordered) { /* it is the tail: unlink it */
            chunk_t **at = &it->head, *prev = NULL;
            while (*at != c) prev = *at, at = &(*at)->next;
            *at = NULL;
            it->tail = prev;
        }
        it->unfinished--;
        it->live_items -= c->count;
        pthread_mutex_unlock(&it->mu);
        /* Whatever the error (a deadline, a cancel, a task's ENOMEM, an
         * EDEADLK after another submit took the room), its items are
         * pulled already: kept, they go first next time, or refill drops
         * them with the input's end if the pool has stopped. */
        it->pending = c;
        return r;
    }
    it->next_input += c->count;
    return 0;
}

/* Tops the window up; gives up at deadline with ASYNC_ETIMEDOUT (a chunk
 * then pending).  The source may be done while a chunk is still pending.
 *
 * A pool that stopped taking work (shut down, or broken) ends the input
 * once the map has started, as a source's error does: the chunks already
 * queued are yielded with their outcomes, then the pool's code once (with
 * a message saying where the input was cut), then ASYNC_EEOF.  Returning
 * the code from every call instead hid those chunks' outcomes and never
 * reached the end. */
static int refill(async_imap_iter_t *it, int64_t deadline)
{
    while (it->pending ||
           (!it->src_done && (it->live_items == 0 || it->chunk <= it->window - it->live_items))) {
        int r = add_chunk(it, deadline);
        if (r == ASYNC_EEOF) {
            it->src_done = true;
            break;
        }
        if (r && r == async__q_stopped(it->ex->priv) &&
            (it->next_input || it->live_items || it->pending)) {
            async__free(it->pending);
            it->pending = NULL;
            it->src_done = true;
            it->src_err = r;
            it->cut = true;
            break;
        }
        if (r) return r;
    }
    return 0;
}

int async_executor_imap_dl(async_imap_iter_t **out, async_executor_t *ex, const async_imap_t *m,
                           int64_t deadline)
{
    if (!ex || !m || async__size_bad(m) || !m->fn || !out) return ASYNC_EINVAL;
    if (m->source ? !m->in_size : (m->n && m->in_size && !m->in)) return ASYNC_EINVAL;
    if (!m->source && m->in_size && m->n > SIZE_MAX / m->in_size) return ASYNC_EINVAL; /* wraps */
    /* A chunk's memory, its input copy (from a source) and its output rows,
     * must fit a size_t: a product that wraps would allocate a few bytes
     * and have the source and the workers write chunksize rows into them. */
    size_t chunk = m->chunksize ? m->chunksize : 1;
    size_t rows = m->source || chunk < m->n ? chunk : m->n;
    size_t row_bytes = (m->source ? m->in_size : 0) + m->out_size;
    if (row_bytes < m->out_size || (row_bytes && rows > (SIZE_MAX - sizeof(chunk_t)) / row_bytes))
        return ASYNC_EINVAL;
    async_imap_iter_t *it = async__calloc(1, sizeof *it);
    if (!it) return ASYNC_ENOMEM;
    it->ex = ex;
    it->m = *m;
    it->chunk = chunk;
    size_t per_window = 2 * (size_t)ex->workers; /* the default window, saturated */
    it->window = m->window ? m->window
                 : per_window && chunk > SIZE_MAX / per_window ? SIZE_MAX : per_window * chunk;
    if (it->window < it->chunk) it->window = it->chunk;
    pthread_mutex_init(&it->mu, NULL);
    async__cond_init_monotonic(&it->cond, false);
    async__twaiters_init(&it->tasks);
    /* Once input was taken (a chunk queued, or built and pending), the map
     * has started: the iterator is handed out and the next call goes on
     * (and reports a lasting error, such as ECLOSED), so no item is lost. */
    int r = refill(it, deadline);
    if (r && it->live_items == 0 && !it->pending) {
        async_imap_free(it);
        return r;
    }
    *out = it;
    return 0;
}

int async_executor_imap(async_imap_iter_t **out, async_executor_t *ex, const async_imap_t *m)
{
    return async_executor_imap_dl(out, ex, m, ASYNC_FOREVER);
}

static void release(async_imap_iter_t *it, chunk_t *c)
{
    if (!it->m.unordered) {
        it->head = c->next;
        if (!it->head) it->tail = NULL;
    } else {
        it->done_head = c->next_done;
        if (!it->done_head) it->done_tail = NULL;
    }
    it->live_items -= c->count;
    async__free(c);
}

/* Under it->mu: one wait for a chunk to finish, until deadline; a task
 * waits through its loop.  0 (look again), ASYNC_ETIMEDOUT, ASYNC_ECANCELED
 * or ASYNC_ENOMEM. */
static int wait_chunk(async_imap_iter_t *it, int64_t deadline)
{
    if (async__in_task()) return async__twait_locked(&it->tasks, &it->mu, deadline);
    return async__cond_wait_dl(&it->cond, &it->mu, deadline) == ETIMEDOUT ? ASYNC_ETIMEDOUT : 0;
}

int async_imap_next_dl(async_imap_iter_t *it, void *out, size_t *index, int64_t deadline)
{
    /* A refill that gives up (deadline, cancelled task) still lets a result
     * that is ready be taken; the code is returned when none is. */
    int gave_up = 0, r = refill(it, deadline);
    if (r == ASYNC_ETIMEDOUT || r == ASYNC_ECANCELED) gave_up = r, r = 0;
    pthread_mutex_lock(&it->mu);
    it->msg[0] = '\0';
    if (r) goto out;
    chunk_t *c;
    for (;;) {
        c = it->m.unordered ? it->done_head : it->head;
        if (c && c->done) break;
        if (!c && (it->m.unordered ? it->unfinished == 0 : true)) {
            if (it->pending || !it->src_done) { /* input left: the refill gave up */
                r = gave_up ? gave_up : ASYNC_ETIMEDOUT;
                goto out;
            }
            if (it->src_err) {
                r = it->src_err;
                it->src_err = 0;
                if (it->cut)
                    snprintf(it->msg, sizeof it->msg,
                             "the pool stopped taking work: the input from item %zu on was not queued",
                             it->next_input);
                else
                    snprintf(it->msg, sizeof it->msg, "the input source failed");
            } else {
                r = ASYNC_EEOF;
            }
            goto out;
        }
        int w = wait_chunk(it, deadline);
        if (w) {
            c = it->m.unordered ? it->done_head : it->head;
            if (c && c->done) break;
            r = w;
            goto out;
        }
    }
    size_t row = c->yielded++;
    if (index) *index = c->base + row;
    if (c->err && row >= c->failed_row) {
        r = row == c->failed_row ? c->err : ASYNC_ECANCELED;
        if (row == c->failed_row) snprintf(it->msg, sizeof it->msg, "%s", c->msg);
        else snprintf(it->msg, sizeof it->msg, "not run: item %zu of its chunk failed first",
                      c->base + c->failed_row);
    } else if (out && it->m.out_size) {
        memcpy(out, (char *)c->job.rows.out + row * it->m.out_size, it->m.out_size);
    }
    if (c->yielded == c->count) release(it, c);
out:
    pthread_mutex_unlock(&it->mu);
    return r;
}

int async_imap_next(async_imap_iter_t *it, void *out, size_t *index)
{
    return async_imap_next_dl(it, out, index, ASYNC_FOREVER);
}

const char *async_imap_message(const async_imap_iter_t *it) { return it->msg; }

void async_imap_free(async_imap_iter_t *it)
{
    if (!it) return;
    atomic_store_explicit(&it->stopping, true, memory_order_release);
    /* Running chunks write into the chunks' memory: wait for every one,
     * in a task through the loop and whatever its cancellation. */
    bool task = async__in_task();
    pthread_mutex_lock(&it->mu);
    while (it->unfinished) {
        if (task) async__twait_shielded_locked(&it->tasks, &it->mu);
        else pthread_cond_wait(&it->cond, &it->mu);
    }
    pthread_mutex_unlock(&it->mu);
    for (chunk_t *c = it->head, *next; c; c = next) {
        next = c->next;
        async__free(c);
    }
    for (chunk_t *c = it->done_head, *next; c; c = next) {
        next = c->next_done;
        async__free(c);
    }
    async__free(it->pending);
    pthread_cond_destroy(&it->cond);
    pthread_mutex_destroy(&it->mu);
    async__free(it);
}
