/* The parent's side of a finished job: the fields a worker wrote for it,
 * each checked before it is believed, its done callback, and the wake-up of
 * whoever waits for it.  Called by the supervisor thread (supervisor.c) and
 * by a thread that takes its own result in a direct call (procpool.c). */
#include <limits.h>
#include <stdio.h>
#include "parent_internal.h"

void async__pp_wake_waiter(async__procpool_t *p, uint32_t idx, _Atomic uint32_t *waiter)
{
    if (!waiter) return;
    pp_slot_t *s = &p->v.slots[idx];
    /* Read before the flag: once it is set the waiter may free the slot.
     * Ours, not the slot's: a worker that rewrote the slot's batch word
     * would have us wake the wrong sleeper, and the right one never. */
    bool batch = p->jobs[idx].batch != 0;
    atomic_store(waiter, 1);
    if (batch) {
        pp_wake_batch(p->h);
        return;
    }
    atomic_fetch_add(&s->wseq, 1);
    pp_futex_wake(&s->wseq, INT_MAX);
}

void async__pp_wake_handed(async__procpool_t *p, uint32_t idx)
{
    pp_slot_t *s = &p->v.slots[idx];
    /* A chunk of a batch: whether the worker counted it is unknown. */
    if (p->jobs[idx].batch) pp_wake_batch(p->h);
    atomic_fetch_add(&s->wseq, 1);
    pp_futex_wake(&s->wseq, INT_MAX);
}

/* Whether [off, off + len) lies in worker w's result area (the byte ring a
 * grown result or an error message goes to). */
static bool in_res_area(const async__procpool_t *p, unsigned w, uint64_t off, uint64_t len)
{
    if (w >= p->v.nworkers) return false;
    uint64_t start = (uint64_t)(pp_res_area(&p->v, w) - (char *)p->h), area = p->v.result_area;
    return off >= start && off - start <= area && len <= area - (off - start);
}

/* Where the result a worker announced for the job in slot idx lies: inline
 * in the slot, in the job's output block, or in worker w's result area, and
 * never longer than what it names; NULL when it is none of them. */
static const char *result_at(const async__procpool_t *p, uint32_t idx, unsigned w, uint64_t off,
                             uint64_t len)
{
    const pp_job_t *j = &p->jobs[idx];
    if (off == 0)
        return len <= j->out_cap && len <= PP_OUT_INLINE ? (const char *)p->v.slots[idx].out_inline
                                                          : NULL;
    if (off == j->out_blk) return len <= j->out_cap ? (const char *)p->h + off : NULL;
    return in_res_area(p, w, off, len) ? (const char *)p->h + off : NULL;
}

/* Every field the worker wrote is checked before it is believed: a work
 * function can write anywhere in the region, its own slot or a
 * neighbour's included, and a length or an offset out of bounds would have
 * the parent read outside its result.  Such a job fails with ASYNC_EIO and a
 * message that says what was wrong. */
void async__pp_deliver(async__procpool_t *p, uint32_t idx, unsigned w)
{
    pp_slot_t *s = &p->v.slots[idx];
    pp_job_t *j = &p->jobs[idx];
    char msg[600];
    int32_t err = READ_ONCE(s->err);
    if (err > 0 || err < -100000) {
        snprintf(msg, sizeof msg,
                 "the worker left an invalid error code (%d) for the job: the pool's shared memory "
                 "was overwritten",
                 (int)err);
        j->done(p->user, j->arg, ASYNC_EIO, msg, NULL, 0);
    } else if (err) {
        uint32_t mlen = READ_ONCE(s->msg_len);
        uint64_t moff = READ_ONCE(s->msg_off);
        if (!mlen) snprintf(msg, sizeof msg, "%s", async_strerror(err));
        else if (mlen < 512 && in_res_area(p, w, moff, mlen))
            snprintf(msg, sizeof msg, "%.*s", (int)mlen, (const char *)p->h + moff);
        else
            snprintf(msg, sizeof msg,
                     "%s (the worker's message for it is invalid: %u bytes at offset %llu, outside "
                     "its result area: the pool's shared memory was overwritten)",
                     async_strerror(err), mlen, (unsigned long long)moff);
        j->done(p->user, j->arg, err, msg, NULL, 0);
    } else {
        uint64_t off = READ_ONCE(s->out_off), len = READ_ONCE(s->out_len);
        const char *out = result_at(p, idx, w, off, len);
        if (out) {
            j->done(p->user, j->arg, 0, NULL, out, len);
            return;
        }
        snprintf(msg, sizeof msg,
                 "the worker's result for the job is invalid: %llu bytes at offset %llu, where the "
                 "job's capacity is %llu bytes and a grown result stays in the worker's %llu-byte "
                 "area (the pool's shared memory was overwritten)",
                 (unsigned long long)len, (unsigned long long)off, (unsigned long long)j->out_cap,
                 (unsigned long long)p->v.result_area);
        j->done(p->user, j->arg, ASYNC_EIO, msg, NULL, 0);
    }
}

void async__pp_release_results(async__procpool_t *p, unsigned w, uint64_t res_end)
{
    pp_worker_t *wr = &p->v.workers[w];
    if (!res_end) return;
    atomic_store_explicit(&wr->res_head, res_end, memory_order_release);
    pp_fence();
    if (atomic_load(&wr->res_waiting)) {
        atomic_fetch_add(&wr->res_seq, 1);
        pp_futex_wake(&wr->res_seq, 1);
    }
}
