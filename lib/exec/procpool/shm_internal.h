/* The process pool's shared-memory layout and the protocol between the
 * parent, the fork server and the workers.  PRIVATE to lib/exec/procpool/.
 *
 * One memfd mapping, created before the fork server, so that every process
 * of the pool sees it at the same address:
 *
 *   header | slots | submit ring | worker records | done rings | result areas | heap
 *
 * Ownership rules, which everything else relies on:
 * - A slot's state word is the only field two processes ever race on; every
 *   change of owner is one compare-and-swap on it.  The parent writes a
 *   slot's other fields only while the slot is FREE (it is not published),
 *   the worker writes its result fields only while it holds RUNNING.
 * - The submit ring has one producer (the parent, under its mutex) and
 *   advisory consumers: a worker claims the slot, not the ring entry, so an
 *   entry may be stale and is then skipped.  q_head is only a hint that
 *   anyone may advance past an entry whose slot is not QUEUED.
 * - A job submitted with async__procpool_call is finished by its worker
 *   straight to the thread waiting for it: RUNNING -> HANDED with one
 *   compare-and-swap, then a bump and wake of the slot's wseq; that thread
 *   delivers it and frees the slot.  It goes on no done ring, and the
 *   supervisor's only part is to wake the waiter when it fails the job (the
 *   worker died, a deadline, terminate) or when the worker died between the
 *   exchange and the wake.  A direct job whose result or message went to the
 *   worker's byte ring takes the ordinary way instead (DONE, the done ring),
 *   so that the byte ring is still released in completion order.
 * - The jobs of one async__procpool_call_n (a batch: a map's chunks) are
 *   direct jobs that share one wake-up: the calling thread waits on
 *   batch_seq until every slot of the batch is HANDED or failed, and a worker
 *   that hands a chunk over counts it down on batch_left (the batch's
 *   generation in the high half, so that a late count of an earlier batch is
 *   ignored) and wakes the caller only at zero.  The slot states are the
 *   truth; the count only decides who wakes.  The supervisor fails a chunk
 *   (a worker died, a deadline, terminate) without counting it: it sets
 *   batch_degraded and wakes, and from then on every hand-over of that batch
 *   wakes the caller, which re-reads the states.  One batch at a time.
 * - Each worker has a single-producer single-consumer ring of finished slot
 *   indices (the worker produces, the supervisor consumes) and a byte ring for
 *   results that outgrew their slot and for error messages (same direction;
 *   the supervisor releases bytes in completion order).  A dead worker's rings
 *   are drained by the supervisor and reset before a replacement starts.
 * - The rules above are what our code does; a work function can write
 *   anything anywhere in the region.  So no process reads the layout from
 *   the region (pp_view_t), and the parent checks every word it reads here
 *   before it acts on it: states against its own record of each slot
 *   (parent_internal.h's pp_job_t), ring entries and tails against the
 *   ring, result lengths and offsets against the job's result, waking
 *   words by bounded sleeps.  Garbage fails a job or kills a worker, with
 *   a message that says what was found (supervisor.c).  A worker checks
 *   the slot it takes in turn (bounds, and the check word pp_seal) before
 *   it runs the job, and the heap's bookkeeping is the parent's private
 *   memory (shm_heap.c): only data bytes are left to trust.
 * - Sleep and wake-up are futexes on 32-bit sequence words with a waiter flag
 *   (an eventcount): the waiter announces itself, re-checks, then sleeps on
 *   the sequence it read; the waker publishes, fences, and bumps and wakes
 *   only if a waiter announced itself. */
#ifndef ASYNC_PROCPOOL_SHM_INTERNAL_H
#define ASYNC_PROCPOOL_SHM_INTERNAL_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "procpool_internal.h"

/* A field of the region, read once: another process may change it
 * meanwhile, and what is checked must be what is used. */
#define READ_ONCE(x) (*(volatile __typeof__(x) *)&(x))

#define PP_MAGIC 0x61737970u /* "asyp" */
#define PP_IN_INLINE 96
#define PP_OUT_INLINE 64
#define PP_LINE 64

enum pp_state {
    PP_FREE = 0,
    PP_QUEUED,    /* published, waiting for a worker */
    PP_RUNNING,   /* a worker (in the high bits) holds it */
    PP_DONE,      /* the worker finished; its completion is (being) pushed */
    PP_REVOKED,   /* the parent took it back: cancelled, timed out, terminated */
    PP_HANDED,    /* finished, for the parent thread waiting in async__procpool_call:
                   * that thread delivers it, it is on no done ring */
};
#define PP_ST(kind, w) ((uint32_t)(kind) | ((uint32_t)(w) << 8))
#define PP_KIND(v) ((v) & 0xffu)
#define PP_WORKER(v) ((v) >> 8)

typedef struct pp_slot {
    _Atomic uint32_t state;
    uint32_t in_len;
    uint64_t fn, ctx;
    uint64_t in_off;      /* region offset of the input; 0: in_inline */
    uint64_t out_off;     /* region offset of the result; 0: out_inline */
    uint64_t out_cap;
    uint64_t out_len;     /* worker-written */
    int32_t err;          /* worker-written */
    uint32_t msg_len;     /* worker-written; message at msg_off */
    /* Two lives: from placing until a worker takes the job, the job's check
     * word (pp_seal), which the worker verifies before it runs the job; once
     * it runs, the offset of its error message, which the parent reads only
     * when msg_len says the worker wrote one. */
    union {
        uint64_t msg_off;
        uint64_t seal;
    };
    uint64_t res_end;     /* worker's byte-ring position to release, 0: none */
    _Atomic uint32_t wseq; /* bumped to wake the thread waiting in async__procpool_call */
    uint8_t direct;       /* a thread waits in async__procpool_call for this job */
    _Atomic uint8_t wsleep; /* that thread stopped spinning and sleeps on wseq */
    /* Where the calling thread placed the job and where its worker runs it
     * (CPU numbers, hints only): a spin for the other side pays only when
     * the two are on different CPUs. */
    _Atomic uint16_t caller_cpu;
    uint8_t in_inline[PP_IN_INLINE];   /* 8-aligned: work functions read it in place */
    uint8_t out_inline[PP_OUT_INLINE];
    _Atomic uint16_t worker_cpu;       /* in the tail padding: the slot stays 256 bytes */
    /* Nonzero: the job is a chunk of the batch with this generation
     * (async__procpool_call_n); its worker counts it on the batch word
     * instead of waking the slot's wseq. */
    uint32_t batch;
} __attribute__((aligned(PP_LINE))) pp_slot_t;
_Static_assert(offsetof(pp_slot_t, in_inline) % 8 == 0 && offsetof(pp_slot_t, out_inline) % 8 == 0,
               "inline input and output stay 8-aligned");
_Static_assert(sizeof(pp_slot_t) == 4 * PP_LINE, "a slot is four cache lines");

enum pp_wstate { PP_W_EMPTY = 0, PP_W_STARTING, PP_W_READY, PP_W_EXITING };

#define PP_INIT_EXIT 121 /* exit status of a worker whose initializer failed */

typedef struct pp_worker {
    _Atomic uint32_t state;
    _Atomic uint32_t retire;   /* set by the parent: finish the current job and exit */
    _Atomic int32_t pid;       /* written by the fork server */
    int32_t init_err;
    char init_msg[256];
    /* done ring, worker produces */
    _Atomic uint64_t done_tail __attribute__((aligned(PP_LINE)));
    _Atomic uint64_t res_tail;
    /* parent writes (its done ring's head is private to it) */
    _Atomic uint64_t res_head __attribute__((aligned(PP_LINE)));
    _Atomic uint32_t res_seq, res_waiting;
} __attribute__((aligned(PP_LINE))) pp_worker_t;

/* The region's shared words: the only part of the header any process reads
 * after the fork server starts.  Every one of them is advisory or owned by
 * one writer, and a process that finds one out of range treats it as
 * garbage (see pp_view_t): a work function can write anywhere in the
 * region, the header included. */
typedef struct pp_shm {
    uint32_t magic;
    _Atomic uint64_t q_head __attribute__((aligned(PP_LINE)));
    _Atomic uint64_t q_tail __attribute__((aligned(PP_LINE)));
    _Atomic uint32_t work_seq __attribute__((aligned(PP_LINE)));
    _Atomic uint32_t sleepers;
    _Atomic uint32_t spinner;  /* 1 + the index of the one worker spinning idle, 0: none */
    _Atomic uint32_t sup_seq __attribute__((aligned(PP_LINE)));
    _Atomic uint32_t sup_waiting;
    _Atomic uint32_t srv_seq;  /* bumped by the fork server after each message */
    /* The batch of async__procpool_call_n (see the top of this file). */
    _Atomic uint64_t batch_left __attribute__((aligned(PP_LINE)));
    _Atomic uint32_t batch_seq;
    _Atomic uint32_t batch_sleep;    /* the caller announced that it sleeps */
    _Atomic uint32_t batch_degraded; /* a chunk failed: wake at every hand-over */
} pp_shm_t;

/* The region's layout and the pool's settings, kept in each process's
 * private memory and never in the region: the parent fills it before it
 * forks the fork server, which inherits it, and so does every worker.  A
 * work function that overwrites the region therefore cannot move where any
 * process looks for slots, rings or results, nor the bounds it checks them
 * against. */
typedef struct pp_view {
    pp_shm_t *h;
    pp_slot_t *slots;
    _Atomic uint32_t *ring;      /* the submit ring, ring_cap entries */
    pp_worker_t *workers;
    _Atomic uint32_t *done;      /* nworkers done rings of nslots entries */
    char *res;                   /* nworkers result areas of result_area bytes */
    uint32_t nslots, ring_cap, nworkers;
    uint64_t heap_off, size, result_area;
    uint64_t call, init, init_arg;
    uint64_t seal_key;     /* random, per pool: the key of pp_seal */
    uint32_t max_tasks;
    int64_t idle_spin_ns;
    int64_t call_spin_ns;  /* after a direct hand-over, the worker spins this long */
} pp_view_t;

/* The check word of a queued job: what the parent placed in slot idx (the
 * fields a worker acts on, and the inline input), keyed by the pool's own
 * key, so that a worker can tell a slot that another worker's stray writes
 * changed before it ran the job.  Against mistakes, not malice: every
 * worker runs the parent's image and could compute it. */
static inline uint64_t pp_mix(uint64_t h, uint64_t w)
{
    h ^= w;
    h *= 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}
static inline uint64_t pp_seal(uint64_t key, uint32_t idx, uint64_t fn, uint64_t ctx,
                               uint64_t in_off, uint32_t in_len, uint64_t out_off,
                               uint64_t out_cap, uint32_t direct, uint32_t batch,
                               const uint8_t *in_inline)
{
    uint64_t h = pp_mix(key, idx);
    h = pp_mix(h, fn);
    h = pp_mix(h, ctx);
    h = pp_mix(h, in_off);
    h = pp_mix(h, (uint64_t)in_len << 32 | direct);
    h = pp_mix(h, batch);
    h = pp_mix(h, out_off);
    h = pp_mix(h, out_cap);
    if (!in_off) {
        for (uint32_t i = 0; i < in_len && i < PP_IN_INLINE; i += 8) {
            uint64_t w = 0;
            __builtin_memcpy(&w, in_inline + i, in_len - i < 8 ? in_len - i : 8);
            h = pp_mix(h, w);
        }
    }
    return h;
}

static inline _Atomic uint32_t *pp_done_ring(const pp_view_t *v, unsigned w)
{
    return v->done + (size_t)w * v->nslots;
}
static inline char *pp_res_area(const pp_view_t *v, unsigned w)
{
    return v->res + (size_t)w * v->result_area;
}

static inline void pp_futex_wait(_Atomic uint32_t *word, uint32_t seen, int64_t timeout_ns)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tp = &ts;
    }
    syscall(SYS_futex, word, FUTEX_WAIT, seen, tp, NULL, 0);
}

static inline void pp_futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* The full barrier of the eventcounts.  ThreadSanitizer rejects fences; a
 * sequentially consistent read-modify-write is a full barrier too. */
static inline void pp_fence(void)
{
#ifdef ASYNC_TSAN
    static _Atomic int tsan_fence;
    atomic_fetch_add_explicit(&tsan_fence, 0, memory_order_seq_cst);
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* Wakes the supervisor if it sleeps; callers publish first. */
static inline void pp_wake_supervisor(pp_shm_t *h)
{
    pp_fence();
    if (atomic_load_explicit(&h->sup_waiting, memory_order_relaxed)) {
        atomic_fetch_add(&h->sup_seq, 1);
        pp_futex_wake(&h->sup_seq, 1);
    }
}


/* After the supervisor failed or woke a batch's direct job: every later
 * hand-over of that batch wakes its caller, and the caller re-reads the
 * slots now (shm_internal.h's batch rule). */
static inline void pp_wake_batch(pp_shm_t *h)
{
    atomic_store(&h->batch_degraded, 1);
    pp_fence();
    atomic_fetch_add(&h->batch_seq, 1);
    pp_futex_wake(&h->batch_seq, INT32_MAX);
}

/* Fork-server messages, both directions, over a SOCK_SEQPACKET pair. */
enum pp_msg_type {
    PP_MSG_SPAWN = 1, /* parent: fork worker `w` */
    PP_MSG_KILL,      /* parent: kill worker `w` (pid `pid`) with signal `value` */
    PP_MSG_SPAWNED,   /* server: worker `w` is `pid`; value -errno if fork failed */
    PP_MSG_EXITED,    /* server: worker `w` (`pid`) was reaped, wait status `value` */
    PP_MSG_QUIT,      /* parent: kill what is left, reap it and exit */
    PP_MSG_PING,      /* parent: say PONG (the parent checks that the server answers) */
    PP_MSG_PONG,      /* server: the answer to a PING */
    PP_MSG_SPARE,     /* parent: make a spare server for the socket this carries (SCM_RIGHTS) */
    PP_MSG_SPARED,    /* server: the spare is `pid`; value -errno if it could not be made */
    PP_MSG_SELF,      /* spare: its first word on its own socket, `pid` its own (its server may die
                       * before its SPARED goes: the pool learns its spare's pid from this) */
};
typedef struct pp_msg {
    uint32_t type, w;
    int32_t pid, value;
} pp_msg_t;

/* worker.c: the fork server's main; never returns. */
/* v is the parent's private copy, which the fork server inherits. */
_Noreturn void async__pp_server_main(const pp_view_t *v, int sock, bool inherit_fds);

#endif
