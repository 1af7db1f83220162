/* The process pool's parent side: creating the region and the fork server,
 * submitting and cancelling jobs, shutdown and terminate.  The supervisor
 * thread lives in supervisor.c, the shared heap in shm_heap.c.
 *
 * Locking: pool->mu guards every parent-side field (free slots, the heap,
 * pending jobs, deadlines, modes, worker bookkeeping).  Callbacks (a job's
 * done) never run under it, so they may submit again.  Only the supervisor
 * thread talks to the fork server. */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "parent_internal.h"

/* A thread waiting for a hand-over re-checks this often even unwoken. */
#define SLEEP_CHECK_NS ASYNC_MSEC(100)
/* How long free waits for the fork server to obey QUIT before killing it. */
#define SERVER_QUIT_NS ASYNC_SEC(5)

static unsigned pow2_at_least(unsigned n)
{
    unsigned p = 1;
    while (p < n) p <<= 1;
    return p;
}

/* --- placing jobs in slots ------------------------------------------------------ */

static void deadline_sift_down(pp_deadline_t *dl, size_t n, size_t i)
{
    pp_deadline_t x = dl[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && dl[c + 1].t < dl[c].t) c++;
        if (dl[c].t >= x.t) break;
        dl[i] = dl[c];
        i = c;
    }
    dl[i] = x;
}

/* Removes entries of jobs that finished before their deadline; they are
 * otherwise dropped only when their time comes. */
static void deadline_compact(async__procpool_t *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->ndl; i++)
        if (p->jobs[p->dl[i].idx].seq == p->dl[i].seq) p->dl[n++] = p->dl[i];
    p->ndl = n;
    for (size_t i = n / 2; i-- > 0;) deadline_sift_down(p->dl, n, i);
}

void async__pp_deadline_pop(async__procpool_t *p)
{
    p->dl[0] = p->dl[--p->ndl];
    if (p->ndl) deadline_sift_down(p->dl, p->ndl, 0);
}

/* Under mu: room in the deadline heap for k more entries, before the jobs
 * that need them are placed; false when it cannot grow.  The room is made
 * first so that a job with a time limit is never published without its
 * deadline: one that failed to get in was never killed at its deadline and
 * ran on to its end. */
static bool deadline_room(async__procpool_t *p, size_t k)
{
    if (p->dl_cap - p->ndl >= k) return true;
    if (p->ndl >= 1024) deadline_compact(p);
    if (p->dl_cap - p->ndl >= k) return true;
    size_t cap = p->dl_cap ? p->dl_cap : 64;
    while (cap - p->ndl < k) {
        if (cap > SIZE_MAX / 2 / sizeof(pp_deadline_t)) return false;
        cap *= 2;
    }
    pp_deadline_t *d = async__realloc(p->dl, cap * sizeof *d);
    if (!d) return false;
    p->dl = d;
    p->dl_cap = cap;
    return true;
}

/* Under mu, after deadline_room: cannot fail. */
void async__pp_deadline_push(async__procpool_t *p, int64_t t, uint32_t idx, uint64_t seq)
{
    assert(p->ndl < p->dl_cap);
    size_t i = p->ndl++;
    while (i > 0 && p->dl[(i - 1) / 2].t > t) {
        p->dl[i] = p->dl[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    p->dl[i] = (pp_deadline_t){t, idx, seq};
}

/* Publishes a job in a free slot.  Under mu.  Returns 0, ASYNC_EAGAIN (no
 * slot or no ring space: keep it pending) or ASYNC_ENOMEM (shared heap full,
 * or no memory for the job's deadline).
 * waiter is async__procpool_call's flag, NULL for other jobs. */
int async__pp_place(async__procpool_t *p, const async__procjob_t *job, uint64_t seq,
                    _Atomic uint32_t *waiter, uint32_t *idx_out)
{
    pp_shm_t *h = p->h;
    if (!p->nfree) return ASYNC_EAGAIN;
    uint64_t tail = p->q_tail;
    if (tail - async__pp_q_head(p) >= p->v.ring_cap) return ASYNC_EAGAIN;
    if (job->deadline != ASYNC_FOREVER && !deadline_room(p, 1)) return ASYNC_ENOMEM;
    uint32_t idx = p->free_slots[p->nfree - 1];
    pp_slot_t *s = &p->v.slots[idx];
    pp_job_t *j = &p->jobs[idx];
    uint64_t in_blk = 0, out_blk = 0;
    size_t in_len = job->in_len + job->in2_len;
    char *in = (char *)s->in_inline;
    if (in_len > PP_IN_INLINE) {
        in_blk = async__pp_heap_alloc(p, in_len, false);
        if (!in_blk) return ASYNC_ENOMEM;
        in = (char *)h + in_blk;
    }
    if (job->in_len) memcpy(in, job->in, job->in_len);
    if (job->in2_len) memcpy(in + job->in_len, job->in2, job->in2_len);
    if (job->out_cap > PP_OUT_INLINE) {
        out_blk = async__pp_heap_alloc(p, job->out_cap, false);
        if (!out_blk) {
            async__pp_heap_free_class(p, in_blk, async__pp_heap_class(in_len));
            return ASYNC_ENOMEM;
        }
    }
    p->nfree--;
    s->fn = (uint64_t)(uintptr_t)job->fn;
    s->ctx = (uint64_t)(uintptr_t)job->ctx;
    s->in_off = in_blk;
    s->in_len = (uint32_t)in_len;
    s->out_off = out_blk;
    s->out_cap = job->out_cap;
    s->out_len = 0;
    s->err = 0;
    s->direct = waiter != NULL;
    s->batch = waiter ? p->placing_batch : 0;
    atomic_store_explicit(&s->wsleep, 0, memory_order_relaxed);
    if (waiter) {
        /* The CPU hints serve the spins of a single call; a batch has none. */
        uint16_t cpu = s->batch ? UINT16_MAX : (uint16_t)sched_getcpu();
        atomic_store_explicit(&s->caller_cpu, cpu, memory_order_relaxed);
        atomic_store_explicit(&s->worker_cpu, UINT16_MAX, memory_order_relaxed);
    }
    s->seal = pp_seal(p->v.seal_key, idx, s->fn, s->ctx, in_blk, (uint32_t)in_len, out_blk,
                      job->out_cap, s->direct, s->batch, s->in_inline);
    j->done = job->done;
    j->arg = job->arg;
    j->seq = seq;
    j->in_blk = in_blk;
    j->out_blk = out_blk;
    j->in_k = in_blk ? (uint8_t)async__pp_heap_class(in_len) : 0;
    j->out_k = out_blk ? (uint8_t)async__pp_heap_class(job->out_cap) : 0;
    j->out_cap = job->out_cap;
    j->batch = s->batch;
    j->zombie_of = -1;
    j->grace = false;
    j->waiter = waiter;
    atomic_store_explicit(&j->fin, 0, memory_order_relaxed);
    if (idx_out) *idx_out = idx;
    atomic_store_explicit(&s->state, PP_QUEUED, memory_order_release);
    atomic_store_explicit(&p->v.ring[tail & (p->v.ring_cap - 1)], idx, memory_order_relaxed);
    p->q_tail = tail + 1;
    atomic_store_explicit(&h->q_tail, tail + 1, memory_order_release);
    if (job->deadline != ASYNC_FOREVER) async__pp_deadline_push(p, job->deadline, idx, seq);
    return 0;
}

uint64_t async__pp_q_head(async__procpool_t *p)
{
    uint64_t tail = p->q_tail, cap = p->v.ring_cap;
    uint64_t head = atomic_load(&p->h->q_head);
    if (tail - head <= cap) return head;
    /* Every entry from here is stale or names a queued slot: rescanning
     * them costs the workers a compare each. */
    uint64_t fixed = tail < cap ? 0 : tail - cap;
    atomic_compare_exchange_strong(&p->h->q_head, &head, fixed);
    atomic_fetch_add(&p->h->work_seq, 1);
    pp_futex_wake(&p->h->work_seq, INT32_MAX);
    return fixed;
}

/* Wakes n sleeping workers, if any sleep; after publishing.  One job is
 * left to the spinning worker if there is one: it re-checks for work after
 * it stops spinning and before it sleeps. */
bool async__pp_wake_workers(pp_shm_t *h, int n)
{
    pp_fence();
    if (n == 1 && atomic_load_explicit(&h->spinner, memory_order_relaxed)) return true;
    if (atomic_load_explicit(&h->sleepers, memory_order_relaxed)) {
        atomic_fetch_add(&h->work_seq, 1);
        pp_futex_wake(&h->work_seq, n);
    }
    return false;
}

/* Wakes the supervisor whether or not it sleeps, so it re-reads the state. */
void async__pp_poke(async__procpool_t *p)
{
    atomic_fetch_add(&p->h->sup_seq, 1);
    pp_wake_supervisor(p->h);
}

int async__procpool_submit(async__procpool_t *p, const async__procjob_t *job, uint64_t *id)
{
    if (!p || !job || !job->fn || !job->done || (job->in_len && !job->in) ||
        (job->in2_len && !job->in2))
        return ASYNC_EINVAL;
    if (job->in_len + job->in2_len > UINT32_MAX) return ASYNC_EINVAL;
    pthread_mutex_lock(&p->mu);
    int rc = 0;
    if (p->mode != PP_OPEN) rc = ASYNC_ECLOSED;
    else if (p->broken) rc = p->broken;
    if (rc) goto out;
    uint64_t seq = ++p->next_seq;
    rc = p->pending_head ? ASYNC_EAGAIN : async__pp_place(p, job, seq, NULL, NULL);
    if (rc == ASYNC_EAGAIN) {
        pp_pending_t *pj = async__malloc(sizeof *pj + job->in_len + job->in2_len);
        if (!pj) {
            rc = ASYNC_ENOMEM;
            goto out;
        }
        pj->next = NULL;
        pj->job = *job;
        pj->seq = seq;
        if (job->in_len) memcpy(pj->in, job->in, job->in_len);
        if (job->in2_len) memcpy(pj->in + job->in_len, job->in2, job->in2_len);
        pj->job.in = pj->in;
        pj->job.in_len += job->in2_len;
        pj->job.in2 = NULL;
        pj->job.in2_len = 0;
        if (job->deadline != ASYNC_FOREVER) p->pending_dl++;
        if (p->pending_tail) p->pending_tail->next = pj;
        else p->pending_head = pj;
        p->pending_tail = pj;
        rc = 0;
    }
    if (rc) goto out;
    p->inflight++;
    if (id) *id = seq;
    pthread_mutex_unlock(&p->mu);
    async__pp_wake_workers(p->h, 1);
    if (job->deadline != ASYNC_FOREVER) async__pp_poke(p);
    return 0;
out:
    pthread_mutex_unlock(&p->mu);
    return rc;
}

#define SPINNER_LATE_NS 2000

/* Wakes one sleeping worker even though one spins (it may have lost its
 * CPU).  Returns true. */
static bool wake_one_worker(pp_shm_t *h)
{
    pp_fence();
    if (atomic_load_explicit(&h->sleepers, memory_order_relaxed)) {
        atomic_fetch_add(&h->work_seq, 1);
        pp_futex_wake(&h->work_seq, 1);
    }
    return true;
}

/* Waits for a short job's hand-over without a system call on either side
 * (the worker then skips its wake), but only when a worker was spinning for
 * the job, so that it runs on another CPU now: one woken from its sleep may
 * need this very CPU, and then the cheapest hand-over is to block at once.
 * Bounded, because a spin that fails burns a CPU the machine may need: it
 * stops when the worker turns out to run on this CPU, and it is tried only
 * while recent spinning calls waited less than the bound (the classic rule:
 * spin no longer than blocking would cost; a long job ends the spins).
 * Calls that skip the spin let that average fade, so that a spin is tried
 * again now and then.  Returns whether it spun. */
static bool spin_for_hand_over(async__procpool_t *p, pp_slot_t *s, _Atomic uint32_t *finished,
                               int64_t start, bool *woke)
{
    if (p->call_spin_ns <= 0) return false;
    int64_t avg = atomic_load_explicit(&p->call_wait_ns, memory_order_relaxed);
    if (avg >= p->call_spin_ns) {
        atomic_store_explicit(&p->call_wait_ns, avg - avg / 8, memory_order_relaxed);
        return false;
    }
    int64_t until = start + p->call_spin_ns;
    for (unsigned i = 1;; i++) {
        uint32_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (PP_KIND(st) == PP_HANDED || atomic_load_explicit(finished, memory_order_relaxed))
            return true;
        async__cpu_relax();
        if ((i & 31) == 0) {
            uint16_t cpu = (uint16_t)sched_getcpu();
            if (atomic_load_explicit(&s->worker_cpu, memory_order_relaxed) == cpu) return true;
            int64_t now = async_now();
            if (now >= until) return true;
            /* A spinning worker claims within a fraction of a microsecond;
             * still queued means it lost its CPU: another worker may not
             * wait for it. */
            if (!*woke && PP_KIND(st) == PP_QUEUED && now - start > SPINNER_LATE_NS)
                *woke = wake_one_worker(p->h);
        }
    }
}

/* Recent spinning calls' waits, an average kept without a lock: a lost
 * update among racing callers only delays the estimate. */
static void note_call_wait(async__procpool_t *p, int64_t waited)
{
    int64_t avg = atomic_load_explicit(&p->call_wait_ns, memory_order_relaxed);
    atomic_store_explicit(&p->call_wait_ns, avg + (waited - avg) / 8, memory_order_relaxed);
}

/* Waits until the job in slot idx, placed with the flag finished, has
 * ended, delivering it here when its worker handed it over; woke says
 * whether a worker was woken for it (else a spinner was left to claim it). */
static void wait_for_slot(async__procpool_t *p, uint32_t idx, _Atomic uint32_t *finished,
                          bool woke, bool spun, int64_t start)
{
    pp_slot_t *s = &p->v.slots[idx];
    bool lost = false; /* the supervisor took the job first: wait for its flag */
    for (;;) {
        uint32_t ws = atomic_load(&s->wseq);
        /* The state before the flag: the slot is freed (and may be reused)
         * only after the flag is set, so a state read before a clear flag
         * is this job's. */
        uint32_t st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (atomic_load(finished)) return; /* done ran on the supervisor */
        if (PP_KIND(st) == PP_HANDED && !lost) {
            /* The state word is the worker's to write, and a stray one may
             * say HANDED while the supervisor fails the job: the claim
             * decides who runs done. */
            if (!async__pp_claim(p, idx)) {
                lost = true;
                continue;
            }
            if (spun) note_call_wait(p, async_now() - start);
            async__pp_deliver(p, idx, PP_WORKER(st));
            pthread_mutex_lock(&p->mu);
            assert(p->jobs[idx].waiter == finished);
            async__pp_slot_free(p, idx);
            async__pp_job_finished(p);
            pthread_mutex_unlock(&p->mu);
            return;
        }
        /* Announced, then checked again: the worker fences after its
         * exchange and wakes only a waiter that announced itself. */
        atomic_store(&s->wsleep, 1);
        pp_fence();
        uint32_t now_st = atomic_load(&s->state);
        if ((PP_KIND(now_st) == PP_HANDED && !lost) || atomic_load(finished)) continue;
        /* Left to a spinner that has not claimed it: do not sleep on it. */
        if (!woke && PP_KIND(now_st) == PP_QUEUED) woke = wake_one_worker(p->h);
        /* Bounded: the worker skips the wake when wsleep, a word in the
         * region, says nobody sleeps, and a stray write may say so. */
        pp_futex_wait(&s->wseq, ws, SLEEP_CHECK_NS);
    }
}

static int check_call(async__procpool_t *p, const async__procjob_t *job)
{
    if (!p || !job || !job->fn || !job->done || (job->in_len && !job->in) ||
        (job->in2_len && !job->in2))
        return ASYNC_EINVAL;
    if (job->in_len + job->in2_len > UINT32_MAX) return ASYNC_EINVAL;
    return 0;
}

/* Why a call cannot be placed now (under mu), or 0. */
static int call_refused(const async__procpool_t *p)
{
    if (p->mode != PP_OPEN) return ASYNC_ECLOSED;
    if (p->broken) return p->broken;
    if (p->pending_head) return ASYNC_EAGAIN; /* would overtake them */
    return 0;
}

int async__procpool_call(async__procpool_t *p, const async__procjob_t *job)
{
    int rc = check_call(p, job);
    if (rc) return rc;
    if (async__procpool_on_supervisor(p)) return ASYNC_EDEADLK;
    _Atomic uint32_t finished = 0;
    uint32_t idx;
    pthread_mutex_lock(&p->mu);
    rc = call_refused(p);
    if (!rc) rc = async__pp_place(p, job, p->next_seq + 1, &finished, &idx);
    if (rc) {
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    p->next_seq++;
    p->inflight++;
    pthread_mutex_unlock(&p->mu);
    bool spinner = async__pp_wake_workers(p->h, 1);
    if (job->deadline != ASYNC_FOREVER) async__pp_poke(p);
    pp_slot_t *s = &p->v.slots[idx];
    int64_t start = async_now();
    bool woke = !spinner; /* a worker was woken, or none could be */
    bool spun = spinner && spin_for_hand_over(p, s, &finished, start, &woke);
    wait_for_slot(p, idx, &finished, woke, spun, start);
    return 0;
}

/* Whether every chunk of the batch has ended: HANDED (this thread delivers
 * it) or failed by the supervisor (its flag).  The state is read before the
 * flag, as in wait_for_slot: a slot is freed only after its flag is set. */
static bool batch_ended(pp_slot_t *slots, const uint32_t *idx, _Atomic uint32_t *finished,
                        size_t n)
{
    for (size_t k = 0; k < n; k++) {
        uint32_t st = atomic_load_explicit(&slots[idx[k]].state, memory_order_acquire);
        if (PP_KIND(st) != PP_HANDED && !atomic_load(&finished[k])) return false;
    }
    return true;
}

/* Waits for a batch, asleep at once: the workers need the CPUs (on two, a
 * spinning caller takes one from them), and the last hand-over wakes this
 * thread once (shm_internal.h).  Measured on 2 CPUs, 10,000-row maps back
 * to back: sleeping at once 31 us a map (median), a 5 us spin first 33-52. */
static void wait_batch(async__procpool_t *p, const uint32_t *idx, _Atomic uint32_t *finished,
                       size_t n)
{
    pp_shm_t *h = p->h;
    pp_slot_t *slots = p->v.slots;
    for (;;) {
        uint32_t seq = atomic_load(&h->batch_seq);
        if (batch_ended(slots, idx, finished, n)) break;
        atomic_store(&h->batch_sleep, 1);
        pp_fence();
        if (batch_ended(slots, idx, finished, n)) break;
        pp_futex_wait(&h->batch_seq, seq, SLEEP_CHECK_NS); /* as in wait_for_slot */
    }
    atomic_store(&h->batch_sleep, 0);
}

int async__procpool_call_n(async__procpool_t *p, const async__procjob_t *jobs, size_t n)
{
    if (!n || n > PP_CALL_MAX) return ASYNC_EINVAL;
    for (size_t k = 0; k < n; k++) {
        int rc = check_call(p, &jobs[k]);
        if (rc) return rc;
        /* Inline only, so that placing cannot fail half-way for memory. */
        if (jobs[k].in_len + jobs[k].in2_len > PP_IN_INLINE || jobs[k].out_cap > PP_OUT_INLINE)
            return ASYNC_EINVAL;
    }
    if (async__procpool_on_supervisor(p)) return ASYNC_EDEADLK;
    _Atomic uint32_t finished[PP_CALL_MAX];
    uint32_t idx[PP_CALL_MAX];
    bool timed = false;
    pp_shm_t *h = p->h;
    pthread_mutex_lock(&p->mu);
    int rc = call_refused(p);
    uint64_t tail = p->q_tail;
    if (!rc && (p->batch_busy || p->nfree < n || tail - async__pp_q_head(p) + n > p->v.ring_cap))
        rc = ASYNC_EAGAIN; /* all or none, one batch at a time */
    size_t ntimed = 0;
    for (size_t k = 0; k < n; k++) ntimed += jobs[k].deadline != ASYNC_FOREVER;
    if (!rc && ntimed && !deadline_room(p, ntimed)) rc = ASYNC_ENOMEM; /* before any is placed */
    if (!rc) {
        p->batch_busy = true;
        if (++p->batch_gen == 0) p->batch_gen = 1; /* 0 marks a slot of no batch */
        p->placing_batch = p->batch_gen;
        /* Before the first chunk is published: a worker counts down from n. */
        atomic_store(&h->batch_degraded, 0);
        atomic_store(&h->batch_left, (uint64_t)p->batch_gen << 32 | n);
    }
    for (size_t k = 0; !rc && k < n; k++) {
        atomic_init(&finished[k], 0);
        rc = async__pp_place(p, &jobs[k], p->next_seq + 1, &finished[k], &idx[k]);
        assert(rc == 0); /* room and inline sizes were checked */
        p->next_seq++;
        p->inflight++;
        timed |= jobs[k].deadline != ASYNC_FOREVER;
    }
    p->placing_batch = 0;
    pthread_mutex_unlock(&p->mu);
    if (rc) return rc;
    unsigned workers = p->v.nworkers;
    async__pp_wake_workers(h, n < workers ? (int)n : (int)workers);
    if (timed) async__pp_poke(p);
    wait_batch(p, idx, finished, n);
    /* Every chunk has ended: deliver those handed over, in placing order,
     * then free their slots under one lock. */
    bool handed[PP_CALL_MAX];
    for (size_t k = 0; k < n; k++) {
        uint32_t st = atomic_load_explicit(&p->v.slots[idx[k]].state, memory_order_acquire);
        handed[k] = !atomic_load(&finished[k]) && PP_KIND(st) == PP_HANDED &&
                    async__pp_claim(p, idx[k]);
        if (handed[k]) async__pp_deliver(p, idx[k], PP_WORKER(st));
        /* Claimed by the supervisor (a stray HANDED while it failed the
         * chunk): its flag comes once its done has run. */
        while (!handed[k] && !atomic_load(&finished[k])) usleep(100);
    }
    pthread_mutex_lock(&p->mu);
    for (size_t k = 0; k < n; k++) {
        if (!handed[k]) continue;
        assert(p->jobs[idx[k]].waiter == &finished[k]);
        async__pp_slot_free(p, idx[k]);
        async__pp_job_finished(p);
    }
    p->batch_busy = false;
    pthread_mutex_unlock(&p->mu);
    return 0;
}

int async__procpool_cancel(async__procpool_t *p, uint64_t id)
{
    pthread_mutex_lock(&p->mu);
    for (pp_pending_t **pp = &p->pending_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        pp_pending_t *pj = *pp;
        if (pj->seq != id) continue;
        *pp = pj->next;
        if (p->pending_tail == pj) p->pending_tail = prev;
        async__pp_unpend(p, pj);
        pthread_mutex_unlock(&p->mu);
        pj->job.done(p->user, pj->job.arg, ASYNC_ECANCELED, "the job was cancelled", NULL, 0);
        async__free(pj);
        pthread_mutex_lock(&p->mu);
        async__pp_job_finished(p);
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    pp_slot_t *slots = p->v.slots;
    for (uint32_t i = 0; i < p->v.nslots; i++) {
        if (p->jobs[i].seq != id) continue;
        uint32_t st = atomic_load(&slots[i].state);
        if (PP_KIND(st) == PP_QUEUED &&
            atomic_compare_exchange_strong(&slots[i].state, &st, PP_ST(PP_REVOKED, 0))) {
            if (!async__pp_claim(p, i)) break; /* a stray QUEUED: it is being delivered */
            pp_job_t j = p->jobs[i];
            p->jobs[i].seq = 0;
            pthread_mutex_unlock(&p->mu);
            j.done(p->user, j.arg, ASYNC_ECANCELED, "the job was cancelled", NULL, 0);
            pthread_mutex_lock(&p->mu);
            async__pp_slot_free(p, i);
            async__pp_job_finished(p);
            pthread_mutex_unlock(&p->mu);
            return 0;
        }
        pthread_mutex_unlock(&p->mu);
        return PP_KIND(st) == PP_RUNNING ? ASYNC_EBUSY : ASYNC_ESRCH;
    }
    pthread_mutex_unlock(&p->mu);
    return ASYNC_ESRCH;
}

/* Under mu: returns a slot (and its heap blocks) to the free list. */
void async__pp_slot_free(async__procpool_t *p, uint32_t idx)
{
    pp_job_t *j = &p->jobs[idx];
    async__pp_heap_free_class(p, j->in_blk, j->in_k);
    async__pp_heap_free_class(p, j->out_blk, j->out_k);
    j->in_blk = j->out_blk = 0;
    j->seq = 0;
    j->zombie_of = -1;
    j->waiter = NULL;
    atomic_store(&j->fin, 1);
    atomic_store_explicit(&p->v.slots[idx].state, PP_FREE, memory_order_release);
    p->free_slots[p->nfree++] = idx;
}

/* Under mu: one accepted job has had its done callback. */
void async__pp_job_finished(async__procpool_t *p)
{
    if (--p->inflight == 0) pthread_cond_broadcast(&p->cond);
}

/* --- lifecycle ---------------------------------------------------------------- */

/* The least a default heap shrinks to under the process's limits: below
 * it the pool fails with ASYNC_ENOMEM rather than start with a heap too
 * small for a map's rows. */
#define PP_HEAP_MIN ((size_t)16 << 20)

static int make_region(async__procpool_t *p, const async__procpool_opts_t *o, unsigned nworkers)
{
    unsigned nslots = pow2_at_least(o->slots ? o->slots : 4096);
    size_t pg = async__page_size();
    size_t result_area = pp_round_up(o->result_area ? o->result_area : (1u << 20), pg);
    size_t heap = o->heap_size ? o->heap_size : ((size_t)1 << 30);
    size_t off = pp_round_up(sizeof(pp_shm_t), pg);
    size_t slots_off = off;
    off = pp_round_up(off + (size_t)nslots * sizeof(pp_slot_t), pg);
    size_t ring_off = off;
    off = pp_round_up(off + (size_t)nslots * 2 * 4, pg);
    size_t workers_off = off;
    off = pp_round_up(off + (size_t)nworkers * sizeof(pp_worker_t), pg);
    size_t done_off = off;
    off = pp_round_up(off + (size_t)nworkers * nslots * 4, pg);
    size_t res_off = off;
    off += (size_t)nworkers * result_area;
    size_t heap_off = off;
    /* The default heap shrinks to fit the process's limits, down to
     * PP_HEAP_MIN: past RLIMIT_FSIZE, ftruncate raises SIGXFSZ (which
     * kills) or fails with EFBIG, no code of ours; past RLIMIT_AS the
     * mapping fails.  A heap the caller sized is that size or an error. */
    bool sized = o->heap_size != 0;
    struct rlimit fl;
    if (getrlimit(RLIMIT_FSIZE, &fl) == 0 && fl.rlim_cur != RLIM_INFINITY) {
        size_t room = fl.rlim_cur > off ? (size_t)(fl.rlim_cur - off) / pg * pg : 0;
        if (room < heap && (sized || room < PP_HEAP_MIN)) return ASYNC_ENOMEM;
        if (room < heap) heap = room;
    }
    size_t size;
    void *m;
    for (;;) {
        size = pp_round_up(off + heap, pg);
        int fd = memfd_create("async-procpool", MFD_CLOEXEC);
        if (fd < 0) return -errno;
        if (ftruncate(fd, (off_t)size) < 0) {
            int e = errno == EFBIG ? ASYNC_ENOMEM : -errno;
            close(fd);
            return e;
        }
        m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
        int e = -errno;
        close(fd); /* the mapping keeps the memory; no descriptor to leak */
        if (m != MAP_FAILED) break;
        if (e != ASYNC_ENOMEM || sized || heap / 2 < PP_HEAP_MIN) return e;
        heap = pp_round_up(heap / 2, pg);
    }
    pp_shm_t *h = m;
    *h = (pp_shm_t){.magic = PP_MAGIC};
    char *c = m;
    p->v = (pp_view_t){.h = h, .slots = (pp_slot_t *)(c + slots_off),
                       .ring = (_Atomic uint32_t *)(c + ring_off),
                       .workers = (pp_worker_t *)(c + workers_off),
                       .done = (_Atomic uint32_t *)(c + done_off), .res = c + res_off,
                       .nslots = nslots, .ring_cap = nslots * 2, .nworkers = nworkers,
                       .heap_off = heap_off, .size = size, .result_area = result_area,
                       .call = (uint64_t)(uintptr_t)o->call,
                       .init = (uint64_t)(uintptr_t)o->init,
                       .init_arg = (uint64_t)(uintptr_t)o->init_arg,
                       .max_tasks = o->max_tasks_per_worker,
                       .idle_spin_ns = o->idle_spin_ns, .call_spin_ns = p->call_spin_ns};
    /* No spinning by default: on a 2-CPU virtual machine a spinning worker
     * made the one-at-a-time round trip slower (24 against 18 us) and the
     * rest no faster; see docs/procs.md. */
    if (p->v.idle_spin_ns < 0) p->v.idle_spin_ns = 0;
    /* The check words' key: any value works against stray writes, so a
     * failed getrandom falls back on the clock and an address. */
    if (getrandom(&p->v.seal_key, sizeof p->v.seal_key, GRND_NONBLOCK) != sizeof p->v.seal_key)
        p->v.seal_key = (uint64_t)async_now() ^ (uint64_t)(uintptr_t)p;
    p->h = h;
    p->heap.top = heap_off;
    return 0;
}

int async__procpool_new(const async__procpool_opts_t *opts, async__procpool_t **out)
{
    static const async__procpool_opts_t defaults = {.idle_spin_ns = -1};
    if (!out) return ASYNC_EINVAL;
    const async__procpool_opts_t *o = opts ? opts : &defaults;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned nworkers = o->workers ? o->workers : (unsigned)(cpus > 0 ? cpus : 1);
    if (nworkers > 4096 || o->slots > (1u << 24)) return ASYNC_EINVAL;
    int rc = ASYNC_ENOMEM;
    async__procpool_t *p = async__calloc(1, sizeof *p);
    if (!p) return rc;
    p->nworkers = nworkers;
    p->sock = -1;
    p->server_pidfd = -1;
    p->spare_sock = p->spare_pidfd = p->spare_mute = -1;
    p->on_broken = o->on_broken;
    p->broken_arg = o->broken_arg;
    p->user = o->user;
    p->call_spin_ns = o->call_spin_ns ? o->call_spin_ns : PP_CALL_SPIN_NS;
    if (p->call_spin_ns < 0) p->call_spin_ns = 0;
    p->w = async__calloc(nworkers, sizeof *p->w);
    if (!p->w) goto fail;
    if ((rc = make_region(p, o, nworkers))) goto fail;
    rc = ASYNC_ENOMEM;
    p->jobs = async__calloc(p->v.nslots, sizeof *p->jobs);
    p->free_slots = async__malloc(p->v.nslots * sizeof *p->free_slots);
    if (!p->jobs || !p->free_slots) goto fail;
    for (uint32_t i = 0; i < p->v.nslots; i++) {
        p->free_slots[i] = p->v.nslots - 1 - i;
        p->jobs[i].zombie_of = -1;
        atomic_init(&p->jobs[i].fin, 1); /* free: nothing to claim */
    }
    p->nfree = p->v.nslots;
    pthread_mutex_init(&p->mu, NULL);
    async__cond_init_monotonic(&p->cond, false); /* timed waits run on deadlines */
    pthread_mutex_init(&p->join_mu, NULL);
    p->locks_ready = true;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        rc = -errno;
        goto fail;
    }
    /* Text the parent buffered must not be written again by a child. */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        async__pp_server_main(&p->v, sv[1], o->inherit_fds);
    }
    rc = pid < 0 ? -errno : 0; /* errno is stale after a fork that worked */
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        goto fail;
    }
    p->server = pid;
    p->sock = sv[0];
    /* Before anything can reap it (it cannot exit before it has read our
     * QUIT or lost our end of the socket, unless killed from outside). */
#ifdef SYS_pidfd_open
    p->server_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (p->server_pidfd >= 0) fcntl(p->server_pidfd, F_SETFD, FD_CLOEXEC);
#endif
    p->server_heard = async_now();
    if ((rc = async__pp_start_supervisor(p))) goto fail;
    *out = p;
    return 0;
fail:
    async__procpool_free_now(p);
    return rc;
}

/* Frees everything; the supervisor is stopped and workers are reaped. */
void async__procpool_free_now(async__procpool_t *p)
{
    if (p->sock >= 0) {
        /* Ask, rather than rely on the end of file: a child the application
         * forked meanwhile may hold a copy of our end of the socket.  Not
         * blocking: a stopped server's full socket must not hold us here. */
        pp_msg_t m = {PP_MSG_QUIT, 0, 0, 0};
        while (send(p->sock, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EINTR) {}
        /* Shut for sending (the server sees its end after QUIT, whoever
         * holds copies of it), closed once the server is reaped. */
        shutdown(p->sock, SHUT_WR);
    }
    /* A server that does not leave by itself (stopped, or wedged) is
     * killed, rather than waited for forever. */
    int status;
    if (p->server > 0) async__pp_reap_server(p, SERVER_QUIT_NS, &status, NULL);
    if (p->server_pidfd >= 0) close(p->server_pidfd);
    async__pp_free_spare(p); /* takes a spare made as the server left */
    if (p->sock >= 0) close(p->sock);
    for (pp_pending_t *pj = p->pending_head, *next; pj; pj = next) {
        next = pj->next;
        async__free(pj);
    }
    if (p->h) munmap(p->h, p->v.size);
    if (p->locks_ready) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->join_mu);
    }
    async__pp_heap_release(&p->heap);
    async__free(p->dl);
    async__free(p->jobs);
    async__free(p->free_slots);
    async__free(p->w);
    async__free(p);
}

int async__procpool_wait_ready(async__procpool_t *p, int64_t deadline)
{
    pthread_mutex_lock(&p->mu);
    int rc = 0;
    while (!rc && p->nready < p->nworkers) {
        if (p->broken) rc = p->broken;
        else if (p->mode != PP_OPEN) rc = ASYNC_ECLOSED;
        else if (async__cond_wait_dl(&p->cond, &p->mu, deadline) == ETIMEDOUT) rc = ASYNC_ETIMEDOUT;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void async__procpool_shutdown(async__procpool_t *p, bool wait)
{
    pthread_mutex_lock(&p->mu);
    if (p->mode == PP_OPEN) p->mode = PP_DRAIN;
    pthread_mutex_unlock(&p->mu);
    async__pp_poke(p);
    if (wait) async__pp_join_supervisor(p);
}

void async__procpool_terminate(async__procpool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->mode = PP_KILL;
    pthread_mutex_unlock(&p->mu);
    async__pp_poke(p);
    async__pp_join_supervisor(p);
}

void async__procpool_free(async__procpool_t *p)
{
    if (!p) return;
    async__procpool_terminate(p);
    async__procpool_free_now(p);
}

bool async__procpool_on_supervisor(const async__procpool_t *p)
{
    return p->sup_started && pthread_equal(pthread_self(), p->sup);
}

unsigned async__procpool_workers(const async__procpool_t *p) { return p->nworkers; }
pid_t async__procpool_server_pid(const async__procpool_t *p) { return p->server; }

pid_t async__procpool_worker_pid(const async__procpool_t *p, unsigned i)
{
    return i < p->nworkers ? atomic_load(&p->v.workers[i].pid) : 0;
}

uint64_t async__procpool_spawned(const async__procpool_t *p)
{
    return atomic_load(&((async__procpool_t *)p)->spawned);
}

int async__procpool_error(async__procpool_t *p, char *msg, size_t msg_cap)
{
    pthread_mutex_lock(&p->mu);
    int rc = p->broken;
    if (msg && msg_cap) snprintf(msg, msg_cap, "%s", rc ? p->broken_msg : "");
    pthread_mutex_unlock(&p->mu);
    return rc;
}
