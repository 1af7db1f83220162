/* The executor's job queue: submitters never take a lock, workers share one
 * mutex only among themselves, and a burst of submits costs at most one
 * wake-up system call per idle worker.
 *
 * Submitters push onto the inbox, a lock-free FIFO (one atomic exchange per
 * job or per batch).  A worker takes the queue lock and pops the inbox directly
 * while every queued job has priority 0; once other priorities are queued it
 * sorts the inbox into priority buckets and pops the highest.  Buckets are
 * FIFO lists sorted by priority, highest first; priority 0 has a permanent
 * bucket and every other bucket's header lives in the job at its head, so
 * nothing here allocates.
 *
 * A job is linked through `qnext` alone, wherever it is: in the inbox, in a
 * bucket (a job leaves the inbox before it joins a bucket, and no producer
 * writes the link of a job it did not push last), and in the list that a
 * drain returns.  Neither `next` nor `bucket` is ever touched for a job of
 * priority 0, so a small submit's allocation ends before them
 * (executor.c); only a job with a priority can head a bucket, and such a
 * job always has a whole job's memory.
 *
 * Waking: a worker that finds nothing spins for the spin budget, 2 to 50 us
 * (watching the word `kick` that a submitter sets for it), and then sleeps
 * on the futex word `seq`.  One worker at a time spins while the last
 * submit was a single job; after a batch (`wide`: a map's tickets) as many
 * as there are CPUs do, so that the next map, queued back to back with the
 * last, finds every worker awake: with one spinner the others slept between
 * maps and each map paid a futex wake and a wait per sleeper, and waited
 * for them to get a CPU back.  A kick brings one spinner back (the first to
 * see it clears it); a worker that takes a job and sees more behind it
 * hands a kick on, so a batch reaches every spinner in turn.  A submitter
 * wakes a sleeper only for jobs beyond the spinners and if no wake-up is
 * already on its way (`waking`); every worker clears `waking` when it
 * enters or leaves the idle state, so a stale flag cannot strand work.  No wake-up is lost:
 * a worker increments `idle` or `spinning` (sequentially consistent) before
 * its last look at the queue's links (async__q_busy: never `submitted`,
 * whose line would then bounce on every submit), and a submitter pushes its
 * job (a sequentially consistent exchange) before it reads `idle` and
 * `spinning`, so at least one of the two sees the other; the worker's futex
 * wait on the `seq` value it read earlier returns at once if a submitter
 * bumped it meanwhile.
 *
 * Closing: a submitter counts its job in `submitted` before it checks
 * `closed` (and uncounts it if closed), so after setting `closed`,
 * async__q_stop drains until every counted job has been taken: no job can
 * slip into a queue that has been stopped and drained. */
#include <limits.h>
#include <sched.h>
#include "executor_internal.h"
#include "future_internal.h"
#include "waiters_internal.h"


/* How long an idle worker spins before it sleeps: a budget between SPIN_MIN
 * and SPIN_MAX that adapts to the gaps between jobs.  Spinning pays while
 * the next job comes sooner than a futex sleep and wake-up would take (a
 * microsecond or two of CPU on each side, and on the submitter's path); a
 * worker that spins through its whole budget and then sleeps anyway has burnt
 * it for nothing, which a fixed 50 us spin did on every job of a loop that
 * submits one job now and then.  So a spin that runs out halves the budget;
 * a spin that catches a job (a live stream: let it ride out the submitter's
 * hiccups) and an idle spell (spin and sleep) that ended within twice the
 * budget, a near miss, double it.
 * A sleep that ended within SPIN_MAX of the spin's start (a spin that long
 * would have caught it) raises the budget to one and a half times that gap
 * at least: doubling from a budget far below the gap between a loop's maps
 * never got there, as each spin ran out first and halved it again.
 * KICK_POLL is how many pauses the spinner lets pass between looks at
 * `kick`.  Looking less often lets a burst of submits pile up a little, so
 * that the worker then takes several jobs while the submitter runs on
 * undisturbed, instead of fighting over the queue's cache lines job by job;
 * a lone job waits at most a microsecond or two. */
#define SPIN_MIN ASYNC_USEC(2)
#define SPIN_MAX ASYNC_USEC(50)
#define KICK_POLL 32
/* A spinner yields its CPU every SPIN_YIELD looks at `kick`: with more
 * threads than CPUs (the map's caller, other programs) a spinner would
 * otherwise hold the CPU of the thread that is about to give it work. */
#define SPIN_YIELD 4
/* How long a reserve worker naps between looks at the backlog. */
#define NAP_NS ASYNC_USEC(200)

void async__q_init(exec_priv_t *p)
{
    pthread_mutex_init(&p->mu, NULL);
    async__cond_init_monotonic(&p->room, false);
    async__twaiters_init(&p->task_room);
    p->zero = (async__bucket_t){0, NULL, NULL, NULL};
    p->buckets = &p->zero;
    atomic_init(&p->in_stub.qnext, NULL);
    atomic_init(&p->in_head, &p->in_stub);
    atomic_init(&p->in_tail, &p->in_stub);
    atomic_init(&p->spin_budget, SPIN_MIN);
    p->max_spinning = async_cpu_count();
    if (p->max_spinning < 1) p->max_spinning = 1;
    /* One CPU for the thread that submits, the rest for workers. */
    p->cap = p->max_spinning > 1 ? p->max_spinning - 1 : 1;
}

void async__q_destroy(exec_priv_t *p)
{
    pthread_cond_destroy(&p->room);
    pthread_mutex_destroy(&p->mu);
}

/* The functions of a worker's pop are inlined into it: on a trivial job's
 * path every call's saved registers cost about as much as its work. */
#define POP_INLINE static inline __attribute__((always_inline))

/* The queue's own lock, held only for a pop: a spin lock costs one atomic
 * exchange where a mutex costs two read-modify-writes; a holder that gets
 * preempted makes the others yield, not burn their slice. */
POP_INLINE void qlock(exec_priv_t *p)
{
    for (unsigned i = 0; atomic_exchange_explicit(&p->qlock, 1, memory_order_acquire); i++)
        while (atomic_load_explicit(&p->qlock, memory_order_relaxed)) {
            if (++i < 64) async__cpu_relax();
            else sched_yield();
        }
}

static void qunlock(exec_priv_t *p) { atomic_store_explicit(&p->qlock, 0, memory_order_release); }

/* Under p->mu: wakes one thread waiting for room (every one with all) and
 * every task waiting for room; each looks again. */
static void room_wake_locked(exec_priv_t *p, bool all)
{
    if (all) pthread_cond_broadcast(&p->room);
    else pthread_cond_signal(&p->room);
    async__twaiters_wake_locked(&p->task_room);
}

static void room_signal(exec_priv_t *p)
{
    pthread_mutex_lock(&p->mu);
    room_wake_locked(p, false);
    pthread_mutex_unlock(&p->mu);
}

/* --- buckets (under qlock) ------------------------------------------------- */

/* Under qlock the links are plain: a job in a bucket is out of the inbox,
 * where producers write them, and only the lock's holder reads them. */
static async__job_t *link_of(const async__job_t *job)
{
    return atomic_load_explicit(&job->qnext, memory_order_relaxed);
}

static void set_link(async__job_t *job, async__job_t *to)
{
    atomic_store_explicit(&job->qnext, to, memory_order_relaxed);
}

static void bucket_push(exec_priv_t *p, async__job_t *job)
{
    async__bucket_t **at = &p->buckets;
    while (*at && (*at)->prio > job->priority) at = &(*at)->next;
    async__bucket_t *b = *at;
    set_link(job, NULL);
    atomic_store_explicit(&p->bucketed, atomic_load_explicit(&p->bucketed, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (!b || b->prio != job->priority) {
        /* A new priority, never 0 (its bucket is permanent): the job carries
         * the header. */
        b = &job->bucket;
        *b = (async__bucket_t){job->priority, job, job, *at};
        *at = b;
        return;
    }
    if (b->tail) set_link(b->tail, job);
    else b->head = job;
    b->tail = job;
}

POP_INLINE async__job_t *bucket_pop(exec_priv_t *p)
{
    for (async__bucket_t **at = &p->buckets; *at; at = &(*at)->next) {
        async__bucket_t *b = *at;
        async__job_t *job = b->head;
        if (!job) continue; /* only the permanent bucket is ever empty */
        if (!(b->head = link_of(job))) b->tail = NULL;
        atomic_store_explicit(&p->bucketed,
                              atomic_load_explicit(&p->bucketed, memory_order_relaxed) - 1,
                              memory_order_relaxed);
        /* Only a job with a priority has a bucket header of its own: a small
         * priority-0 job's memory ends before the field (executor.c). */
        if (job->priority && b == &job->bucket) { /* the header leaves with its job */
            if (b->head) {
                async__bucket_t *nb = &b->head->bucket;
                *nb = *b;
                *at = nb;
            } else {
                *at = b->next;
            }
        }
        return job;
    }
    return NULL;
}

/* The inbox is Vyukov's intrusive multi-producer, single-consumer queue:
 * a producer swaps itself in as the head and then links the old head to
 * itself; the consumer (whoever holds qlock) pops from the tail.  A pop sees
 * nothing in the instant between a producer's two steps; the job is counted
 * in `queued` all along, so the worker just looks again. */
static void inbox_push(exec_priv_t *p, async__job_t *first, async__job_t *last)
{
    async__q_push(p, first, last); /* executor_internal.h: a lone submit inlines it */
}

/* Asks for the lines of the job a worker will most likely take next, while
 * it runs this one: its fields, its small input and output, and the line
 * before it, which is a submit's future (a map's job has its neighbour there;
 * a prefetch of it is harmless).  The submitter wrote them last, so each is a
 * transfer from its core that would otherwise stall the next pop. */
static void prefetch_job(const async__job_t *job)
{
    uintptr_t j = (uintptr_t)job;
    __builtin_prefetch((const void *)(j - sizeof(async_future_t)), 1, 3);
    __builtin_prefetch((const void *)(j + 64), 1, 3);
}

/* Under qlock the consumer's tail is plain: only the lock's holder writes
 * it (async__q_busy reads it outside the lock). */
static async__job_t *tail_of(exec_priv_t *p) { return atomic_load_explicit(&p->in_tail, memory_order_relaxed); }

static void set_tail(exec_priv_t *p, async__job_t *t)
{
    atomic_store_explicit(&p->in_tail, t, memory_order_relaxed);
}

POP_INLINE async__job_t *inbox_pop(exec_priv_t *p)
{
    async__job_t *tail = tail_of(p);
    async__job_t *next = atomic_load_explicit(&tail->qnext, memory_order_acquire);
    if (tail == &p->in_stub) {
        if (!next) return NULL;
        set_tail(p, tail = next);
        next = atomic_load_explicit(&next->qnext, memory_order_acquire);
    }
    if (next) {
        set_tail(p, next);
        prefetch_job(next);
        return tail;
    }
    if (tail != atomic_load_explicit(&p->in_head, memory_order_acquire)) return NULL; /* mid-push */
    inbox_push(p, &p->in_stub, &p->in_stub);
    next = atomic_load_explicit(&tail->qnext, memory_order_acquire);
    if (next) {
        set_tail(p, next);
        return tail;
    }
    return NULL;
}

/* Under qlock: whether another job is visibly queued. */
static bool more_locked(exec_priv_t *p)
{
    for (async__bucket_t *b = p->buckets; b; b = b->next)
        if (b->head) return true;
    async__job_t *tail = tail_of(p);
    async__job_t *next = atomic_load_explicit(&tail->qnext, memory_order_acquire);
    return tail != &p->in_stub || next != NULL;
}

/* Under qlock: the next job in priority order.  While only priority 0 is in use
 * the inbox is popped directly; otherwise it is first sorted into buckets. */
POP_INLINE async__job_t *pop_any(exec_priv_t *p)
{
    async__job_t *job;
    if (!atomic_load_explicit(&p->prio_jobs, memory_order_acquire)) {
        /* No priority queued, so no bucket but priority 0's: unless it still
         * holds jobs sorted earlier, the inbox is the queue. */
        if (!p->zero.head) return inbox_pop(p);
    } else {
        while ((job = inbox_pop(p))) bucket_push(p, job);
    }
    if (!(job = bucket_pop(p))) job = inbox_pop(p);
    if (job && job->priority) atomic_fetch_sub(&p->prio_jobs, 1);
    return job;
}

/* --- waking ------------------------------------------------------------------ */

/* Whether `cap` workers, not counting the caller if it is one (self), are
 * consuming single jobs already (neither idle nor spinning), so that no
 * other should join them: see the top of this file. */
static bool over_cap(exec_priv_t *p, unsigned idle, unsigned spin, unsigned self)
{
    if (atomic_load_explicit(&p->wide, memory_order_relaxed)) return false;
    unsigned resting = idle + spin + self;
    return resting < p->workers && p->workers - resting >= p->cap;
}

void async__q_wake_n(exec_priv_t *p, size_t jobs)
{
    unsigned spin = atomic_load(&p->spinning);
    if (spin) { /* spinners watch `kick` alone, so polling costs submitters nothing */
        if (!atomic_load_explicit(&p->kick, memory_order_relaxed)) atomic_store(&p->kick, 1);
        if (jobs <= spin) return;
    }
    unsigned idle = atomic_load(&p->idle);
    if (idle == 0) return;
    /* A single job while enough workers consume: a napper watches the
     * backlog and joins if it ages, so nobody else is woken. */
    if (jobs == 1 && atomic_load_explicit(&p->napping, memory_order_relaxed) &&
        over_cap(p, idle, spin, 0))
        return;
    if (jobs - spin == 1) {
        /* Look before the exchange: a failed one still takes the line from
         * the cores reading `idle` and `spinning` beside it, on every job
         * of a stream that keeps one wake-up on its way. */
        unsigned expect = 0;
        if (atomic_load_explicit(&p->waking, memory_order_relaxed) ||
            !atomic_compare_exchange_strong(&p->waking, &expect, 1))
            return;
    } else {
        /* Wake-ups on their way: a worker that takes one of these jobs and
         * hands on a wake-up need not make a system call while they land. */
        atomic_store(&p->waking, 1);
    }
    atomic_fetch_add(&p->seq, 1);
    async__futex_wake(&p->seq, jobs - spin > INT_MAX ? INT_MAX : (int)(jobs - spin));
}

int async__q_wake_single(exec_priv_t *p)
{
    async__q_wake_n(p, 1);
    return 0;
}

/* A submit's wake-up: also notes whether it queued a batch (a map's
 * tickets), which is when more than one idle worker may spin (see the top
 * of this file); a stream of single jobs keeps one spinner, as a second
 * would only burn its CPU through each gap.  The flag is written only when
 * it changes, so a stream of submits leaves its line shared. */
static void wake(exec_priv_t *p, size_t jobs)
{
    bool wide = jobs > 1;
    if (atomic_load_explicit(&p->wide, memory_order_relaxed) != wide)
        atomic_store_explicit(&p->wide, wide, memory_order_relaxed);
    async__q_wake_n(p, jobs);
}

static void wake_all(exec_priv_t *p)
{
    atomic_fetch_add(&p->seq, 1);
    async__futex_wake(&p->seq, INT_MAX);
}

/* --- submitting -------------------------------------------------------------- */

static int stopped(exec_priv_t *p) { return async__q_stopped(p); }

static void unreserve(exec_priv_t *p, size_t n)
{
    atomic_fetch_sub(&p->submitted, n);
    if (atomic_load(&p->room_waiters)) {
        pthread_mutex_lock(&p->mu);
        room_wake_locked(p, true);
        pthread_mutex_unlock(&p->mu);
    }
}

/* A task's wait for room, until deadline: 0 (look again), ASYNC_ETIMEDOUT,
 * ASYNC_ECANCELED or ASYNC_ENOMEM.  The same protocol as a thread's wait:
 * room_waiters is raised and the queue looked at under p->mu, so a worker
 * that makes room either is seen here or sees the waiter. */
static int task_wait_room(exec_priv_t *p, size_t max, int64_t deadline)
{
    int r = 0;
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->room_waiters, 1);
    if (async__q_len(p) >= max && !stopped(p))
        r = async__twait_locked(&p->task_room, &p->mu, deadline);
    atomic_fetch_sub(&p->room_waiters, 1);
    pthread_mutex_unlock(&p->mu);
    return r;
}

/* One wait for room while the queue is full (at max), until deadline: a
 * task through its loop, a thread on p->room.  0 (look again),
 * ASYNC_ETIMEDOUT, ASYNC_ECANCELED or ASYNC_ENOMEM (a task's). */
static int wait_room(async_executor_t *ex, exec_priv_t *p, size_t max, int64_t deadline)
{
    /* Room comes from the pool's own threads: a thread the process
     * backend runs callbacks on (its feeder takes the jobs, its supervisor
     * frees the slots the feeder waits for) would wait for itself, and so
     * would the last worker of the thread backend to wait for room while
     * every other one waits too: nobody would take a job again. */
    bool own = ex->ops->on_own_thread && ex->ops->on_own_thread(ex);
    bool worker = async__exec_on_worker(ex);
    if (!own && async__in_task()) return task_wait_room(p, max, deadline);
    pthread_mutex_lock(&p->mu);
    int w = 0;
    if ((own || (worker && p->worker_room_waiters + 1 >= p->workers)) && async__q_len(p) >= max &&
        !stopped(p)) {
        pthread_mutex_unlock(&p->mu);
        return ASYNC_EDEADLK;
    }
    atomic_fetch_add(&p->room_waiters, 1);
    p->worker_room_waiters += worker;
    while (async__q_len(p) >= max && !stopped(p) && w != ETIMEDOUT)
        w = async__cond_wait_dl(&p->room, &p->mu, deadline);
    p->worker_room_waiters -= worker;
    atomic_fetch_sub(&p->room_waiters, 1);
    pthread_mutex_unlock(&p->mu);
    return w == ETIMEDOUT ? ASYNC_ETIMEDOUT : 0;
}

/* Whether a wait for room that returned w ends the caller's wait: an error,
 * or a timeout while the queue is still full and serving. */
static bool room_wait_ends(exec_priv_t *p, size_t max, int w)
{
    if (w == ASYNC_ENOMEM || w == ASYNC_ECANCELED || w == ASYNC_EDEADLK) return true;
    return w == ASYNC_ETIMEDOUT && async__q_len(p) >= max && !stopped(p);
}

/* Counts n more jobs as submitted in a queue bounded at max, waiting for
 * room for the first.  Out of line, so that an unbounded submit does not pay
 * for the registers this needs. */
static __attribute__((noinline)) int reserve_bounded(async_executor_t *ex, exec_priv_t *p,
                                                     size_t max, size_t n, bool try_only,
                                                     int64_t deadline)
{
    size_t s = atomic_load(&p->submitted);
    for (;;) {
        int r = stopped(p);
        if (r) return r;
        if (s - atomic_load(&p->taken) < max) {
            if (atomic_compare_exchange_weak(&p->submitted, &s, s + n)) return 0;
            continue;
        }
        if (try_only) return ASYNC_EAGAIN;
        int w = wait_room(ex, p, max, deadline);
        if (room_wait_ends(p, max, w)) return w;
        s = atomic_load(&p->submitted);
    }
}

int async__q_wait_room(async_executor_t *ex, int64_t deadline)
{
    exec_priv_t *p = ex->priv;
    size_t max = ex->opts.max_queued;
    while (max && async__q_len(p) >= max && !stopped(p)) {
        int w = wait_room(ex, p, max, deadline);
        if (room_wait_ends(p, max, w)) return w;
    }
    return 0;
}

int async__q_enqueue_linked(async_executor_t *ex, async__job_t *first, async__job_t *last,
                            size_t n, size_t prio, bool try_only, int64_t deadline)
{
    exec_priv_t *p = ex->priv;
    if (!n) return 0;
    size_t max = ex->opts.max_queued;
    int r = 0;
    if (max) r = reserve_bounded(ex, p, max, n, try_only, deadline);
    else atomic_fetch_add(&p->submitted, n);
    if (r) return r;
    if ((r = stopped(p)) != 0) {
        unreserve(p, n);
        return r;
    }
    if (prio) atomic_fetch_add(&p->prio_jobs, prio);
    inbox_push(p, first, last);
    wake(p, n);
    return 0;
}

int async__q_enqueue(async_executor_t *ex, async__job_t *jobs, size_t n, bool try_only,
                     int64_t deadline)
{
    if (!n) return 0;
    async__job_t *last = jobs;
    size_t prio = jobs->priority != 0;
    for (size_t i = 1; i < n; i++) {
        set_link(last, last->next);
        last = last->next;
        prio += last->priority != 0;
    }
    return async__q_enqueue_linked(ex, jobs, last, n, prio, try_only, deadline);
}

/* The lone submit's answer to a stop that raced with its push: cancel the
 * job's future unless a worker or a drain got to it first (then the submit
 * stands). */
__attribute__((noinline)) int async__q_lone_closed(async__job_t *job, int code, bool *kept)
{
    if (async_future_cancel(async__job_owner(job)) != 0) return 0;
    *kept = true;
    return code;
}

int async__q_enqueue_one(async_executor_t *ex, async__job_t *job, bool try_only, int64_t deadline,
                         bool *kept)
{
    exec_priv_t *p = ex->priv;
    *kept = false;
    if (p->bounded) return async__q_enqueue(ex, job, 1, try_only, deadline);
    int r = stopped(p);
    if (r) return r;
    job->kind |= JOB_LONE;
    if (job->priority) atomic_fetch_add(&p->prio_jobs, 1);
    return async__q_push_lone(p, job, kept);
}

size_t async__q_count(exec_priv_t *p)
{
    size_t n = 0;
    qlock(p);
    for (async__bucket_t *b = p->buckets; b; b = b->next)
        for (async__job_t *j = b->head; j; j = link_of(j)) n += (j->kind & JOB_LONE) != 0;
    /* The inbox from the consumer's end: every link up to a push under way
     * is set, and no job leaves it but under qlock. */
    for (async__job_t *j = tail_of(p); j; j = atomic_load_explicit(&j->qnext, memory_order_acquire))
        n += j != &p->in_stub && (j->kind & JOB_LONE) != 0;
    qunlock(p);
    return async__q_len(p) + n;
}

/* --- taking ---------------------------------------------------------------- */

static int64_t budget(exec_priv_t *p) { return atomic_load_explicit(&p->spin_budget, memory_order_relaxed); }

static void set_budget(exec_priv_t *p, int64_t ns)
{
    ns = ns < SPIN_MIN ? SPIN_MIN : ns > SPIN_MAX ? SPIN_MAX : ns;
    if (ns != budget(p)) atomic_store_explicit(&p->spin_budget, ns, memory_order_relaxed);
}

/* A spinner's wait for `kick`, for the spin budget: true when work may
 * have come (look again), false when it ran out (sleep).  *from is when the
 * spin began, read only after `spinning` is raised: until then a submitter
 * that finds nobody spinning wakes a sleeping worker, a system call on its
 * path, and the clock costs 80 ns on this VM.
 * This and sleep_for_work stay out of line so that a pop that finds a job
 * does not pay for their registers. */
static __attribute__((noinline)) bool spin_for_work(exec_priv_t *p, int64_t *from)
{
    atomic_fetch_add(&p->spinning, 1);
    bool found = async__q_busy(p) || stopped(p); /* raced with a submit? */
    *from = async_now();
    int64_t spin = budget(p), until = *from + spin;
    for (unsigned i = 1; !found; i++) {
        async__cpu_relax();
        if (i % KICK_POLL) continue;
        if (atomic_load_explicit(&p->kick, memory_order_relaxed)) {
            atomic_store_explicit(&p->kick, 0, memory_order_relaxed);
            found = true;
        } else if (async_now() >= until) {
            break;
        } else if (i % (KICK_POLL * SPIN_YIELD) == 0) {
            sched_yield();
        }
    }
    atomic_fetch_sub(&p->spinning, 1);
    set_budget(p, found ? 2 * spin : spin / 2);
    return found;
}

/* Sleeps on `seq` until a submit or a stop wakes this worker.  After a spin
 * that began at spun_from (-1: none), an idle spell short enough that a
 * longer spin would have caught it doubles the spin budget. */
static __attribute__((noinline)) void sleep_for_work(exec_priv_t *p, int64_t spun_from)
{
    unsigned seen = atomic_load(&p->seq);
    atomic_store(&p->waking, 0);
    atomic_fetch_add(&p->idle, 1);
    if (!async__q_busy(p) && !stopped(p)) async__futex_wait(&p->seq, seen, ASYNC_FOREVER);
    atomic_fetch_sub(&p->idle, 1);
    atomic_store(&p->waking, 0);
    if (spun_from < 0) return;
    int64_t spin = budget(p), gap = async_now() - spun_from;
    if (gap <= SPIN_MAX) set_budget(p, gap + gap / 2 > 2 * spin ? gap + gap / 2 : 2 * spin);
}

/* A reserve worker's watch while `cap` others consume single jobs: it
 * sleeps on `seq` for NAP_NS at a time, and returns (to take jobs) when the
 * cap no longer binds (a batch, a consumer gone idle), the pool stops, or
 * the backlog has aged: jobs are queued and the consumer's end of the inbox
 * has not moved for a whole nap, so the consumers are busy with long jobs
 * (a sample of the queue every nap, not a clock read per job).  Counted in
 * `idle`, so submitters see it as the sleeper it is. */
static __attribute__((noinline)) void nap(exec_priv_t *p)
{
    atomic_fetch_add(&p->napping, 1);
    for (;;) {
        async__job_t *mark = atomic_load(&p->in_tail);
        unsigned seen = atomic_load(&p->seq);
        atomic_store(&p->waking, 0);
        atomic_fetch_add(&p->idle, 1);
        bool ready = async__q_busy(p) || stopped(p);
        if (!ready || atomic_load(&p->in_tail) == mark)
            async__futex_wait(&p->seq, seen, async_now() + NAP_NS);
        atomic_fetch_sub(&p->idle, 1);
        atomic_store(&p->waking, 0);
        if (stopped(p) ||
            !over_cap(p, atomic_load(&p->idle), atomic_load(&p->spinning), 1))
            break;
        if (async__q_busy(p) && atomic_load(&p->in_tail) == mark) break; /* aged */
    }
    atomic_fetch_sub(&p->napping, 1);
}

int async__q_take(exec_priv_t *p, async__job_t **out)
{
    for (;;) {
        qlock(p);
        async__job_t *job = pop_any(p);
        if (job) {
            /* Only qlock's holder writes taken: no read-modify-write needed.
             * A lone submit was never counted. */
            if (!(job->kind & JOB_LONE))
                atomic_store_explicit(&p->taken,
                                      atomic_load_explicit(&p->taken, memory_order_relaxed) + 1,
                                      memory_order_release);
            /* More work than this worker?  Look at the queue's own links
             * rather than `submitted`, whose line submitters keep writing. */
            bool more = more_locked(p);
            qunlock(p);
            if (p->bounded) {
                /* Order the store to taken before the look at room_waiters
                 * (a submitter waiting for room does the opposite). */
                atomic_thread_fence(memory_order_seq_cst);
                if (atomic_load(&p->room_waiters)) room_signal(p);
            }
            if (more) async__q_hand_on(p); /* hand on a wake-up */
            *out = job;
            return 0;
        }
        /* Stopped: leave once no counted job is on its way and no lone one
         * is mid-push (that one's submitter may have seen the pool open). */
        bool stop = stopped(p) && !async__q_len(p) && !async__q_busy(p);
        qunlock(p);
        if (stop) return ASYNC_ECLOSED;

        /* While others consume single jobs up to the cap, one idle worker
         * naps in reserve and the rest sleep; a sleeper woken meanwhile
         * joins the reserve rather than the consumers. */
        if (over_cap(p, atomic_load(&p->idle), atomic_load(&p->spinning), 1)) {
            if (atomic_load(&p->napping)) {
                sleep_for_work(p, -1);
                if (!over_cap(p, atomic_load(&p->idle), atomic_load(&p->spinning), 1)) continue;
            }
            nap(p);
            continue;
        }
        int64_t spun_from = -1; /* only the spinner's spells teach the budget */
        unsigned spinners = atomic_load_explicit(&p->wide, memory_order_relaxed) ? p->max_spinning : 1;
        if (atomic_load(&p->spinning) < spinners && spin_for_work(p, &spun_from)) continue;
        sleep_for_work(p, spun_from);
    }
}

/* --- stopping ---------------------------------------------------------------- */

bool async__q_stop(exec_priv_t *p, int code, bool drain, async__job_t **drained)
{
    bool first = true;
    if (code != ASYNC_ECLOSED) {
        int expect = 0;
        first = atomic_compare_exchange_strong(&p->broken, &expect, code);
    } else {
        atomic_store(&p->closed, true);
    }
    /* With drain, also wait out submitters that counted their job before
     * they saw `closed`: each either pushes it (and it is drained here) or
     * uncounts it. */
    async__job_t *head = NULL, *last = NULL;
    for (;;) {
        qlock(p);
        if (drain) {
            async__job_t *job;
            size_t n = 0;
            while ((job = pop_any(p))) {
                set_link(job, NULL);
                if (last) set_link(last, job);
                else head = job;
                last = job;
                n += !(job->kind & JOB_LONE);
            }
            atomic_store(&p->taken, atomic_load_explicit(&p->taken, memory_order_relaxed) + n);
        }
        qunlock(p);
        pthread_mutex_lock(&p->mu);
        room_wake_locked(p, true);
        pthread_mutex_unlock(&p->mu);
        if (!drain || (!async__q_len(p) && !async__q_busy(p))) break;
        sched_yield();
    }
    wake_all(p);
    if (drained) *drained = head;
    return first;
}
