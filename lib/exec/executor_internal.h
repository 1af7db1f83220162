/* Executor internals shared by executor.c, job_queue.c, map.c and imap.c only
 * (backends use backend_internal.h).  PRIVATE: never installed. */
#ifndef ASYNC_EXEC_INTERNAL_H
#define ASYNC_EXEC_INTERNAL_H

#include "backend_internal.h"
#include "waiters_internal.h"
#include "future_internal.h"

/* A job's kind, and a flag: JOB_LONE marks a single submit to an unbounded
 * pool, which is never counted in `submitted` nor `taken` (job_queue.c
 * explains how it is closed out instead). */
enum { JOB_SUBMIT = 1, JOB_MAP, JOB_IMAP, JOB_KIND = 3, JOB_LONE = 4, JOB_LEAN = 8 };
/* Where a lean job's input is (its in_how). */
enum { LEAN_COPIED, LEAN_BORROWED, LEAN_NONE };
#define async__job_kind(job) ((job)->kind & JOB_KIND)

/* A small submit's job on a pool whose backend takes lean jobs (its
 * lean_jobs): one cache line after its future, so that a submit writes two
 * lines in all and a worker reads two.  It shares the full job's queue
 * fields (qnext, priority, kind) at their offsets, and kind carries
 * JOB_LEAN, so the queue holds both alike; a worker never sees one:
 * async__exec_take hands it over as a full job in the worker's slot
 * (exec_priv_t's `slots`), its rows pointing into `data`.  Input and
 * output live in `data`: the copied input (in_size bytes, rounded up to 8),
 * then out_size bytes; an input not copied (LEAN_BORROWED: borrowed, or
 * empty with a pointer) is its pointer and its size there instead, 16
 * bytes, and no input (LEAN_NONE) nothing.  No priority, no deadline, row 0 of 1,
 * var_ok; its future is the block's, just before it. */
typedef struct async__lean_job {
    _Atomic(struct async__job *) qnext;
    int priority;            /* always 0 */
    unsigned char kind;      /* JOB_SUBMIT | JOB_LEAN, and JOB_LONE for a single submit */
    unsigned char in_size;   /* a copied input's size */
    unsigned char out_size;
    unsigned char in_how;    /* LEAN_COPIED, LEAN_BORROWED or LEAN_NONE */
    async_work_fn fn;
    void *ctx;
    _Alignas(16) unsigned char data[32];
} async__lean_job_t;
_Static_assert(sizeof(async__lean_job_t) == 64 &&
               offsetof(async__lean_job_t, qnext) == offsetof(async__job_t, qnext) &&
               offsetof(async__lean_job_t, priority) == offsetof(async__job_t, priority) &&
               offsetof(async__lean_job_t, kind) == offsetof(async__job_t, kind),
               "a lean job is one line with the full job's queue fields");

_Static_assert(offsetof(async_future_t, extra) == sizeof(async_future_t),
               "a submit's job starts where its future ends");

/* A submit's future: a lean job's is the block's, just before it; a full
 * job's is its owner. */
static inline async_future_t *async__job_owner(const async__job_t *job)
{
    if (job->kind & JOB_LEAN) return (async_future_t *)((char *)job - sizeof(async_future_t));
    return job->owner;
}

/* The fields are grouped by who writes them, each group on cache lines of
 * its own, so that submitters and workers do not slow each other down by
 * writing to the same line. */
typedef struct async__exec_priv {
    /* Written by submitters (job_queue.c explains the protocol). */
    _Atomic size_t submitted;        /* jobs ever reserved, but JOB_LONE (queued = submitted - taken) */
    char pad0[64];
    /* Read by every pop, written only for jobs with a priority: a line of its
     * own, or each pop would pull `submitted`'s line from the submitter. */
    _Atomic size_t prio_jobs;        /* queued jobs with a priority other than 0 */
    char pad0b[64];
    _Atomic(async__job_t *) in_head; /* the inbox, an MPSC queue: producers swap the head */
    char pad1[64];
    /* Written by workers, under qlock. */
    _Atomic unsigned char qlock;
    _Atomic size_t taken;            /* jobs ever popped or drained, but JOB_LONE */
    /* The consumer pops the inbox's tail; atomic only so that a worker
     * outside qlock may look whether the queue is empty (async__q_busy). */
    _Atomic(async__job_t *) in_tail;
    _Atomic size_t bucketed;         /* jobs sorted into buckets (a priority is in use) */
    async__bucket_t zero;            /* priority 0, always in the list */
    async__bucket_t *buckets;        /* highest priority first */
    async__job_t in_stub;            /* keeps the inbox never empty */
    char pad2[64];
    /* The sleep protocol: written by workers, read by submitters. */
    _Atomic unsigned idle;           /* workers about to sleep or asleep on seq */
    _Atomic unsigned spinning;       /* workers spinning for work */
    _Atomic unsigned waking;         /* a wake-up is on its way to an idle worker */
    _Atomic unsigned seq;            /* futex word idle workers sleep on */
    _Atomic int64_t spin_budget;     /* ns an idle worker spins before it sleeps */
    unsigned max_spinning;           /* workers that may spin at once after a batch */
    _Atomic unsigned napping;        /* idle workers on a timed nap, watching the backlog */
    unsigned workers;                /* the pool's workers (set before they start) */
    unsigned cap;                    /* workers that consume a stream of single jobs (UINT_MAX: no cap) */
    char pad3[64];
    _Atomic unsigned kick;           /* set by a submitter for the spinning worker */
    _Atomic bool wide;               /* the last submit queued a batch: several may spin */
    char pad4[64];
    /* Rarely written. */
    _Atomic bool closed;
    _Atomic int broken;              /* the code that broke the pool, or 0 */
    _Atomic unsigned room_waiters;
    unsigned worker_room_waiters;    /* of them, the pool's own workers; under mu */
    /* opts.max_queued != 0, copied here: async__q_take has only this
     * struct, and the submit path reads it from the line that `closed` and
     * `broken` (which it reads anyway) share, instead of the executor's. */
    bool bounded;
    /* Whether a small submit queues a lean job: the backend's lean_jobs and
     * no bound (set before the workers start, then only read). */
    bool lean;
    pthread_mutex_t mu;              /* for `room` */
    pthread_cond_t room;             /* submitters wait here while full */
    async__twaiters_t task_room;     /* tasks waiting for room (job_queue.c) */
    char broken_msg[ASYNC_FUTURE_MSG_MAX + 64];
    pthread_mutex_t join_mu;
    /* Guards broken_msg and the turn to broken.  Never join_mu: the thread
     * that frees the pool holds join_mu while it joins the workers, and a
     * worker whose initializer failed reports it on its way out. */
    pthread_mutex_t broken_mu;
    bool joined;
    struct async__fpool *futures;    /* submit's allocations, reused */
    /* With `lean`: a full job per worker, in which async__exec_take hands a
     * lean job over (only that worker writes its slot). */
    async__job_t *slots;
} exec_priv_t;

static inline size_t async__q_len(exec_priv_t *p)
{
    size_t t = atomic_load(&p->taken);
    return atomic_load(&p->submitted) - t;
}

/* Whether a job is queued, or being pushed, as a worker outside qlock can
 * tell from the queue's own links, without reading `submitted`, whose line
 * the submitters write on every submit: a look at it from a worker about to
 * spin or sleep made each next submit's locked increment wait for the line
 * to come back (20% of a stream's wall time on this VM).  Sequentially
 * consistent: a submitter pushes (an exchange of in_head) before it reads
 * `idle` and `spinning`, and a worker raises one of those before it looks
 * here, so at least one of the two sees the other (job_queue.c).  An inbox
 * whose consumer and head are both at the stub is empty; a job that
 * another worker is popping at the moment leaves in_tail off the stub, and
 * that worker looks for more under qlock. */
static inline bool async__q_busy(exec_priv_t *p)
{
    return atomic_load(&p->in_head) != &p->in_stub || atomic_load(&p->in_tail) != &p->in_stub ||
           atomic_load_explicit(&p->bucketed, memory_order_relaxed) != 0;
}

/* Whether a call may take a backend's direct path (its run or map op) now,
 * as far as the executor can tell: from a plain thread (a task awaits
 * instead), the pool open and not broken, and no queued job it would
 * overtake. */
static inline bool async__exec_direct_ok(exec_priv_t *p)
{
    return !async__in_task() && !atomic_load(&p->closed) && !atomic_load(&p->broken) &&
           async__q_len(p) == 0 && !async__q_busy(p);
}

/* The absolute deadline of a job or map whose time limit is timeout_ns,
 * counted from now (the submit): ASYNC_FOREVER for 0 (no limit), a time
 * already past for a negative limit (the job fails without running). */
static inline int64_t async__limit_deadline(int64_t timeout_ns)
{
    if (timeout_ns == 0) return ASYNC_FOREVER;
    if (timeout_ns < 0) return -1;
    return async_deadline_after(timeout_ns);
}

/* job_queue.c */

/* The queue's state as a submit sees it: ASYNC_ECLOSED, the broken code, or
 * 0 while it serves. */
static inline int async__q_stopped(exec_priv_t *p)
{
    if (atomic_load(&p->closed)) return ASYNC_ECLOSED;
    return atomic_load(&p->broken);
}

/* Pushes first..last (linked through qnext; last's link need not be set)
 * onto the inbox: job_queue.c describes the queue.  Sequentially
 * consistent: the exchange orders the push before the submitter's look at
 * `idle` and `spinning`, and before a lone submit's second look at the
 * queue's state. */
static inline void async__q_push(exec_priv_t *p, async__job_t *first, async__job_t *last)
{
    atomic_store_explicit(&last->qnext, NULL, memory_order_relaxed);
    async__job_t *prev = atomic_exchange(&p->in_head, last);
    atomic_store_explicit(&prev->qnext, first, memory_order_release);
}

/* The wake-up for jobs just pushed (job_queue.c's protocol). */
void async__q_wake_n(exec_priv_t *p, size_t jobs);
/* A lone submit that found the pool stopped after its push: cancels the
 * job's future unless something took the job first (then 0: the submit
 * stands), else returns code with *kept (OUT) true. */
int async__q_lone_closed(async__job_t *job, int code, bool *kept);

/* The wake-up for one job just pushed (async__q_wake_n(p, 1)); returns 0. */
int async__q_wake_single(exec_priv_t *p);

/* A submit's wake-up for one job, its usual cases inlined: while a worker
 * spins, its `kick` is set here; while `cap` workers consume a stream of
 * single jobs (none spins, so the resting are the idle ones), the reserve's
 * napper watches the backlog and nobody is woken; only a sleeper's wake-up
 * takes the call (a tail call, so that a submit that inlines this saves no
 * registers for it).  The flag `wide` (the last submit queued a batch) is
 * written only when it changes, so that a stream of single submits leaves
 * its line shared.  Returns 0. */
static inline __attribute__((always_inline)) int async__q_hand_on(exec_priv_t *p);

static inline __attribute__((always_inline)) int async__q_wake_one(exec_priv_t *p)
{
    if (__builtin_expect(atomic_load_explicit(&p->wide, memory_order_relaxed), 0))
        atomic_store_explicit(&p->wide, false, memory_order_relaxed);
    return async__q_hand_on(p);
}

/* async__q_wake_n(p, 1) with its usual cases inlined, as above, but without
 * the note of a single submit: a worker that took a job and sees more
 * behind it hands a wake-up on with this.  Returns 0. */
static inline __attribute__((always_inline)) int async__q_hand_on(exec_priv_t *p)
{
    if (atomic_load(&p->spinning)) {
        /* A spinner watches `kick` alone, so this look costs nothing more. */
        if (!atomic_load_explicit(&p->kick, memory_order_relaxed)) atomic_store(&p->kick, 1);
        return 0;
    }
    unsigned idle = atomic_load(&p->idle);
    if (!idle) return 0;
    if (atomic_load_explicit(&p->napping, memory_order_relaxed) &&
        !atomic_load_explicit(&p->wide, memory_order_relaxed) && idle < p->workers &&
        p->workers - idle >= p->cap)
        return 0;
    return async__q_wake_single(p);
}

/* The rest of async__q_enqueue_one for a JOB_LONE job whose submitter saw
 * the pool serving (and counted a priority in prio_jobs): the push, the
 * second look at the pool's state, and the wake-up. */
static inline __attribute__((always_inline)) int async__q_push_lone(exec_priv_t *p, async__job_t *job,
                                                                    bool *kept)
{
    async__q_push(p, job, job);
    /* Sequentially consistent after the push's exchange, against the stop's
     * store to `closed` or `broken` before it looks at the queue: either
     * the stop sees this job (and drains it or lets the workers run it), or
     * this sees the stop. */
    int r = async__q_stopped(p);
    if (__builtin_expect(r != 0, 0)) return async__q_lone_closed(job, r, kept);
    return async__q_wake_one(p);
}

void async__q_init(exec_priv_t *p);
void async__q_destroy(exec_priv_t *p);
/* Queues n jobs, first to last, already linked through qnext (last's link
 * need not be set), prio of them with a priority other than 0, as one batch
 * (one atomic exchange, one wake-up round): waits (unless try_only) for room
 * for the first; a batch may overfill the bound.
 * Errors: ASYNC_ECLOSED, the broken code, ASYNC_EAGAIN (try_only and
 * full), ASYNC_ETIMEDOUT.  Nothing is queued on error. */
int async__q_enqueue_linked(async_executor_t *ex, async__job_t *first, async__job_t *last,
                            size_t n, size_t prio, bool try_only, int64_t deadline);
/* async__q_enqueue_linked of jobs[0..n), a list linked through next (a
 * map's tickets, an imap's chunk), which it links through qnext. */
int async__q_enqueue(async_executor_t *ex, async__job_t *jobs, size_t n, bool try_only,
                     int64_t deadline);
/* async__q_enqueue of one job, without the batch's loop: a single submit's
 * path, a submit's job only.  On an unbounded pool the job is JOB_LONE: it
 * is pushed first and the pool's state looked at after, and a submit that
 * then finds the pool stopped cancels the job's future if nothing took the
 * job yet (ASYNC_ECLOSED or the broken code, with *kept, OUT, true: the job
 * stays queued, with the executor's reference, until a worker or a drain
 * drops it); if something took it, the submit succeeded.  *kept is false
 * whenever nothing was queued. */
int async__q_enqueue_one(async_executor_t *ex, async__job_t *job, bool try_only, int64_t deadline,
                         bool *kept);
/* Waits, as a submit would, until the queue has room for one job or is
 * stopped, without reserving it (a racing submit may take it): 0,
 * ASYNC_ETIMEDOUT, ASYNC_ECANCELED (a cancelled task) or ASYNC_ENOMEM.  0
 * at once without a bound. */
int async__q_wait_room(async_executor_t *ex, int64_t deadline);
/* The jobs queued and not yet taken (async_executor_queued): the counted
 * ones, and the JOB_LONE ones in the queue, counted under qlock. */
size_t async__q_count(exec_priv_t *p);
/* Blocks for the next job in priority order; ASYNC_ECLOSED when the queue is
 * stopped and empty. */
int async__q_take(exec_priv_t *p, async__job_t **out);
/* Stops the queue (closed when code is ASYNC_ECLOSED, else broken with code:
 * false if it was broken already), wakes everyone, and with drain returns
 * (*drained, OUT) every queued job as a list linked through qnext, highest
 * priority first. */
bool async__q_stop(exec_priv_t *p, int code, bool drain, async__job_t **drained);

size_t async__default_chunksize(const async_executor_t *ex, size_t n);

/* Whether the calling thread is one of ex's workers. */
bool async__exec_on_worker(const async_executor_t *ex);

/* map.c: a chunk taken by a worker (false: do not run it; it has been
 * finished, cancelled or past its deadline), a chunk drained without
 * running (finished with err and msg unless it ran elsewhere), a chunk
 * that ran. */
bool async__map_chunk_take(async__job_t *job);
void async__map_chunk_skip(async__job_t *job, int err, const char *msg);
void async__map_chunk_done(async__job_t *job, int err, size_t row, const char *msg);

/* imap.c: called when a chunk is taken (false: skip it, already finished)
 * and when it is finished. */
bool async__imap_chunk_start(async__job_t *job);
void async__imap_chunk_done(async__job_t *job, int err, size_t row, const char *msg);

#endif
