/* The process pool's child side: the fork server and the worker loop.
 *
 * The fork server is a single-threaded copy of the parent made when the pool
 * is created.  It forks workers when the supervisor asks, kills them when it
 * asks (only processes it has not reaped yet, so a pid is never reused under
 * it), reaps them and reports each exit status.  It uses no allocator, no
 * stdio and no locks after the fork, so a parent that ran threads when it
 * created the pool cannot leave it a lock held forever.  When the parent's
 * end of the socket closes (the parent freed the pool or died) it kills the
 * remaining workers, reaps them and exits.  It answers the parent's PING
 * (the parent's check that it is not stopped or wedged), and makes a spare
 * of itself when asked (SPARE): a clone made the parent's child, with this
 * process's clean memory, idle on its own socket until the parent turns to
 * it because this one stopped answering.
 *
 * A worker asks the kernel to SIGKILL it if the fork server dies, runs the
 * initializer, then claims, runs and completes jobs through shared memory
 * (see shm_internal.h) until it is retired or reaches max_tasks_per_worker.
 * Workers leave with _exit: the parent's atexit handlers and stdio buffers
 * are the parent's business. */
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "shm_internal.h"

struct async__procout {
    pp_shm_t *h;
    pp_worker_t *wr;
    pp_slot_t *slot;
    char *data;
    size_t cap, len;
    uint64_t job_res_start; /* the worker's byte-ring tail when the job began */
    bool moved;
};

int64_t async__pp_test_hold_ready_ns;

static int self_index = -1;
static pp_shm_t *self_shm; /* in a worker: its pool's region */
/* In the fork server and its workers: the pool's layout, copied from the
 * parent's private memory when the server starts, never read from the
 * region (a work function may have overwritten it there). */
static pp_view_t V;
/* In the fork server: the pid of each worker it forked and has not reaped,
 * kept here rather than in the region, whose copy (for
 * async__procpool_worker_pid) any worker can overwrite. */
static pid_t srv_pid[4096];
static sigset_t saved_mask;
static struct sigaction saved_int, saved_chld;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* --- results ------------------------------------------------------------ */

/* Bytes from the worker's result ring; waits while earlier jobs' results are
 * still being delivered, fails if this job alone would not fit. */
static char *res_alloc(async__procout_t *o, size_t n)
{
    uint64_t area = V.result_area;
    n = (n + 7) & ~(size_t)7;
    if (n == 0 || n > area) return NULL;
    uint64_t tail = atomic_load_explicit(&o->wr->res_tail, memory_order_relaxed);
    uint64_t off = tail % area;
    uint64_t pad = off + n > area ? area - off : 0;
    uint64_t need = pad + n;
    for (;;) {
        uint64_t head = atomic_load_explicit(&o->wr->res_head, memory_order_acquire);
        /* Everything released: the whole area is free, wherever the block
         * lands (the window test below would count the skipped tail). */
        if (head == tail || tail + need - head <= area) break;
        if (head >= o->job_res_start) return NULL; /* only this job's bytes are left */
        uint32_t seq = atomic_load(&o->wr->res_seq);
        atomic_store(&o->wr->res_waiting, 1);
        pp_fence();
        if (tail + need - atomic_load(&o->wr->res_head) > area)
            pp_futex_wait(&o->wr->res_seq, seq, 10000000);
        atomic_store(&o->wr->res_waiting, 0);
    }
    atomic_store_explicit(&o->wr->res_tail, tail + need, memory_order_relaxed);
    o->slot->res_end = tail + need;
    return pp_res_area(&V, (unsigned)(o->wr - V.workers)) + (tail + pad) % area;
}

int async__procpool_self(void) { return self_index; }
void *async__procout_data(async__procout_t *out) { return out->data; }
size_t async__procout_cap(const async__procout_t *out) { return out->cap; }

int async__procout_set_size(async__procout_t *out, size_t size)
{
    if (size <= out->cap) {
        out->len = size;
        return 0;
    }
    char *p = res_alloc(out, size);
    if (!p) return ASYNC_ENOMEM;
    memcpy(p, out->data, out->len < size ? out->len : size);
    out->data = p;
    out->cap = out->len = size;
    out->moved = true;
    return 0;
}

void async__procout_error(async__procout_t *out, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
    char *p = res_alloc(out, (size_t)n + 1);
    if (!p) return;
    memcpy(p, buf, (size_t)n + 1);
    out->slot->msg_off = (uint64_t)(p - (char *)out->h);
    out->slot->msg_len = (uint32_t)n;
}

/* --- first touch of shared memory ----------------------------------------
 *
 * A worker's first touch of a page of the shared heap is a page fault: the
 * parent writes rows there after the fork, and fork copies no page table
 * entries of a shared mapping anyway.  A fault costs about 5 us on the 2-CPU
 * virtual machine we measure on (one a 4 KiB page written, one per 16 pages
 * read), so a worker's first map of 1,000,000 rows of 20 bytes, its half
 * of 1,287 faults, cost it ~3 ms, longer than the map.  MADV_POPULATE_READ
 * and _WRITE map the same pages from one system call for about a third of
 * that.  Each worker remembers, in its private memory, a bit per heap page
 * it has populated, so a map over rows it has seen makes no system call.  A
 * bit goes stale only when the parent gives a big block's pages back
 * (MADV_REMOVE in async__pp_heap_free_class): that page then faults as before. */

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

static struct {
    uint64_t *bits[2]; /* read, write: a bit per heap page */
    bool off;          /* no populating: no memory for the bits, or an old kernel */
} populated;

static bool page_done(const uint64_t *bits, size_t p) { return bits[p / 64] >> (p % 64) & 1; }

void async__procpool_prefault(const void *ptr, size_t len, bool write)
{
    pp_shm_t *h = self_shm;
    if (!h || populated.off || !len) return;
    size_t pg = async__page_size();
    uintptr_t base = (uintptr_t)h + V.heap_off, top = (uintptr_t)h + V.size;
    uintptr_t from = (uintptr_t)ptr, to = from + len;
    if (from < base || to > top || to < from) return;
    if (!populated.bits[0]) {
        size_t words = ((V.size - V.heap_off) / pg + 63) / 64;
        /* Anonymous and private: the allocator seam is the parent's, and
         * untouched parts of the map cost no memory. */
        void *m = mmap(NULL, 2 * words * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            populated.off = true;
            return;
        }
        populated.bits[0] = m;
        populated.bits[1] = (uint64_t *)m + words;
    }
    uint64_t *bits = populated.bits[write];
    /* Rounded out to whole pages: a page that holds any byte of the range
     * is an allocated block's, so populating it allocates nothing new. */
    size_t p = (from - base) / pg, end = (to - base + pg - 1) / pg;
    while (p < end) {
        if (p % 64 == 0 && p + 64 <= end && bits[p / 64] == UINT64_MAX) {
            p += 64;
            continue;
        }
        if (page_done(bits, p)) {
            p++;
            continue;
        }
        size_t q = p;
        for (; q < end && !page_done(bits, q); q++) bits[q / 64] |= (uint64_t)1 << (q % 64);
        if (madvise((void *)(base + p * pg), (q - p) * pg,
                    write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) != 0 && errno == EINVAL) {
            populated.off = true; /* before Linux 5.14: the faults stay */
            return;
        }
        p = q;
    }
}

/* --- the worker ----------------------------------------------------------- */

/* Claims one queued slot, or returns false if none is queued. */
static bool claim(pp_shm_t *h, unsigned w, uint32_t *idx_out)
{
    _Atomic uint32_t *ring = V.ring;
    pp_slot_t *slots = V.slots;
    for (;;) {
        uint64_t head = atomic_load_explicit(&h->q_head, memory_order_acquire);
        uint64_t tail = atomic_load_explicit(&h->q_tail, memory_order_acquire);
        if (head >= tail) return false;
        uint32_t idx = atomic_load_explicit(&ring[head & (V.ring_cap - 1)], memory_order_relaxed);
        pp_slot_t *s = &slots[idx % V.nslots];
        uint32_t st = atomic_load_explicit(&s->state, memory_order_acquire);
        bool mine = PP_KIND(st) == PP_QUEUED &&
                    atomic_compare_exchange_strong_explicit(&s->state, &st, PP_ST(PP_RUNNING, w),
                                                            memory_order_acq_rel,
                                                            memory_order_relaxed);
        /* Whether we won it, lost it or found it stale, this entry is spent. */
        atomic_compare_exchange_strong(&h->q_head, &head, head + 1);
        if (mine) {
            *idx_out = idx % V.nslots;
            return true;
        }
    }
}

enum handed { NOT_HANDED, HANDED_TO_SLEEPER, HANDED_TO_SPINNER };

/* A chunk of batch gen was handed over: counts it down and wakes the
 * caller if it was the last, or after a failure in the batch
 * (shm_internal.h); a count from a batch that has ended is dropped. */
static void count_batch(pp_shm_t *h, uint32_t gen)
{
    uint64_t v = atomic_load_explicit(&h->batch_left, memory_order_relaxed);
    bool last = false;
    while ((uint32_t)(v >> 32) == gen && (uint32_t)v > 0) {
        if (atomic_compare_exchange_weak(&h->batch_left, &v, v - 1)) {
            last = (uint32_t)v == 1;
            break;
        }
    }
    pp_fence();
    if (!atomic_load_explicit(&h->batch_sleep, memory_order_relaxed)) return;
    if (!last && !atomic_load_explicit(&h->batch_degraded, memory_order_relaxed)) return;
    atomic_fetch_add(&h->batch_seq, 1);
    pp_futex_wake(&h->batch_seq, 1);
}

/* What is wrong with the job in slot idx as the worker found it (written
 * into why), or NULL when its fields are what the parent placed: inside
 * their bounds and matching the job's check word.  Another worker's stray
 * write may have changed a queued slot (the parent checks what workers
 * write, but workers read slots too): a wild offset or length would crash
 * this worker, a changed function or input would run garbage or compute a
 * wrong answer.  The fields are read once here, and the job runs on these
 * copies (*f, OUT). */
typedef struct job_fields {
    uint64_t fn, ctx, in_off, out_off, out_cap;
    uint32_t in_len, batch;
    uint8_t direct;
} job_fields_t;

static const char *slot_unsound(pp_slot_t *s, uint32_t idx, job_fields_t *f, char *why, size_t cap)
{
    f->fn = READ_ONCE(s->fn);
    f->ctx = READ_ONCE(s->ctx);
    f->in_off = READ_ONCE(s->in_off);
    f->in_len = READ_ONCE(s->in_len);
    f->out_off = READ_ONCE(s->out_off);
    f->out_cap = READ_ONCE(s->out_cap);
    f->direct = READ_ONCE(s->direct);
    f->batch = READ_ONCE(s->batch);
    uint64_t seal = READ_ONCE(s->seal);
    uint64_t lo = V.heap_off, hi = V.size;
    if (f->in_off ? f->in_off < lo || f->in_off > hi || f->in_len > hi - f->in_off
                  : f->in_len > PP_IN_INLINE)
        snprintf(why, cap, "its input (%u bytes at offset %llu) lies outside its slot and the shared "
                           "heap", f->in_len, (unsigned long long)f->in_off);
    else if (f->out_off ? f->out_off < lo || f->out_off > hi || f->out_cap > hi - f->out_off
                        : f->out_cap > PP_OUT_INLINE)
        snprintf(why, cap, "its output (%llu bytes at offset %llu) lies outside its slot and the "
                           "shared heap", (unsigned long long)f->out_cap, (unsigned long long)f->out_off);
    else if (f->direct > 1 ||
             seal != pp_seal(V.seal_key, idx, f->fn, f->ctx, f->in_off, f->in_len, f->out_off,
                             f->out_cap, f->direct, f->batch, s->in_inline))
        snprintf(why, cap, "its function, context, sizes or inline input differ from what the "
                           "parent placed (its check word does not match)");
    else
        return NULL;
    return why;
}

/* Runs the job in slot idx and publishes it; says whether it was handed
 * straight to a thread waiting in async__procpool_call, and whether that
 * thread was still spinning (running on another CPU) or asleep.  A job whose
 * slot is unsound is not run: it fails with ASYNC_EIO and says why. */
static enum handed run(pp_shm_t *h, unsigned w, pp_worker_t *wr, uint32_t idx)
{
    pp_slot_t *s = &V.slots[idx];
    job_fields_t f;
    char why[200];
    const char *bad = slot_unsound(s, idx, &f, why, sizeof why);
    async__procout_t out = {
        .h = h, .wr = wr, .slot = s,
        .data = f.out_off ? (char *)h + f.out_off : (char *)s->out_inline,
        .cap = f.out_cap, .len = f.out_cap,
        .job_res_start = atomic_load_explicit(&wr->res_tail, memory_order_relaxed),
    };
    s->msg_len = 0;
    s->res_end = 0;
    int rc;
    if (bad) {
        f.direct = 0; /* its hand-over words are not to be believed either */
        out.data = (char *)s->out_inline;
        out.cap = out.len = 0;
        async__procout_error(&out, "the job in slot %u was overwritten in the pool's shared memory "
                                   "before it ran, and was not run: %s", idx, bad);
        rc = ASYNC_EIO;
    } else {
        const void *in = f.in_off ? (char *)h + f.in_off : (char *)s->in_inline;
        if (f.in_off) async__procpool_prefault(in, f.in_len, false);
        if (f.out_off) async__procpool_prefault(out.data, f.out_cap, true);
        if (f.direct && !f.batch)
            atomic_store_explicit(&s->worker_cpu, (uint16_t)sched_getcpu(), memory_order_relaxed);
        if (V.call)
            rc = ((async__procpool_call_fn)(uintptr_t)V.call)((async__anyfn_t)(uintptr_t)f.fn,
                                                              (void *)(uintptr_t)f.ctx, in,
                                                              f.in_len, &out);
        else
            rc = ((async__procpool_fn)(uintptr_t)f.fn)((void *)(uintptr_t)f.ctx, in, f.in_len, &out);
    }
    s->err = rc > 0 ? ASYNC_EWORK : rc;
    s->out_len = out.len;
    if (out.moved) s->out_off = (uint64_t)(out.data - (char *)h);
    uint32_t st = PP_ST(PP_RUNNING, w);
    /* A thread waits for this job in async__procpool_call: hand it over
     * directly, unless it used the byte ring (released in ring order). */
    bool direct = f.direct && !s->res_end;
    /* Taken before the exchange: the waiter may reuse the slot after it. */
    uint32_t batch = f.batch;
    /* Losing this exchange means the parent revoked the job (deadline or
     * terminate) and is about to kill us: nothing to publish. */
    if (direct) {
        if (!atomic_compare_exchange_strong_explicit(&s->state, &st, PP_ST(PP_HANDED, w),
                                                     memory_order_acq_rel, memory_order_relaxed))
            return NOT_HANDED;
        if (batch) {
            /* Not a hand-over that asks for a spin: the next job of a map's
             * caller is the next map, and spinning for it on two CPUs takes
             * one from the caller (10,000-row maps back to back: 31 us a map
             * sleeping, 59-84 spinning, median). */
            count_batch(h, batch);
            return NOT_HANDED;
        }
        /* The eventcount: a waiter still spinning sees HANDED by itself, and
         * one that announced its sleep is woken.  The waiter may free and
         * reuse the slot at once: reading or bumping a reused slot's words
         * is only a spurious wake-up. */
        pp_fence();
        if (!atomic_load_explicit(&s->wsleep, memory_order_relaxed)) return HANDED_TO_SPINNER;
        atomic_fetch_add(&s->wseq, 1);
        pp_futex_wake(&s->wseq, 1);
        return HANDED_TO_SLEEPER;
    }
    if (atomic_compare_exchange_strong_explicit(&s->state, &st, PP_ST(PP_DONE, w),
                                                memory_order_acq_rel, memory_order_relaxed)) {
        uint64_t t = atomic_load_explicit(&wr->done_tail, memory_order_relaxed);
        atomic_store_explicit(&pp_done_ring(&V, w)[t & (V.nslots - 1)], idx, memory_order_relaxed);
        atomic_store_explicit(&wr->done_tail, t + 1, memory_order_release);
        pp_wake_supervisor(h);
    }
    return NOT_HANDED;
}

static bool has_work(pp_shm_t *h)
{
    return atomic_load_explicit(&h->q_head, memory_order_relaxed) <
           atomic_load_explicit(&h->q_tail, memory_order_acquire);
}

/* Spins a little (a burst of submissions usually follows), then sleeps on
 * work_seq until the parent publishes or retires us.  Returns whether work
 * came while it spun. */
static bool idle(pp_shm_t *h, unsigned w, pp_worker_t *wr, int64_t spin_ns)
{
    /* One idle worker at a time spins: it takes the next job without a
     * wake-up, and the others leave the CPUs to the threads feeding them. */
    uint32_t none = 0;
    if (spin_ns > 0 && atomic_compare_exchange_strong(&h->spinner, &none, w + 1)) {
        int64_t until = now_ns() + spin_ns;
        for (unsigned i = 1;; i++) {
            if (has_work(h) || atomic_load_explicit(&wr->retire, memory_order_relaxed)) {
                atomic_store(&h->spinner, 0);
                return true;
            }
            async__cpu_relax();
            if ((i & 63) == 0 && now_ns() >= until) break;
        }
        atomic_store(&h->spinner, 0);
    }
    uint32_t seq = atomic_load(&h->work_seq);
    atomic_fetch_add(&h->sleepers, 1);
    pp_fence();
    if (!has_work(h) && !atomic_load(&wr->retire)) pp_futex_wait(&h->work_seq, seq, -1);
    atomic_fetch_sub(&h->sleepers, 1);
    return false;
}

/* A probe for a caller that shares this worker's CPU.  Once the two sleep
 * and wake each other on one CPU they stay there: the kernel places a task
 * woken by a futex beside its waker or on its previous CPU, so nothing moves
 * either to a second CPU that has come free, and neither may spin (it would
 * only delay the other).  The worker therefore steps off the caller's CPU
 * itself, by narrowing its affinity to its other allowed CPUs, which
 * migrates it now, and restoring the inherited mask at once (which does not
 * move it back); the probe's spin then tells whether that CPU was free.  A
 * probe that gets no job doubles the interval to the next, as for any
 * probe.  Returns whether it moved. */
static bool move_off(uint16_t cpu, const cpu_set_t *allowed, int nallowed)
{
    if (nallowed < 2 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, allowed)) return false;
    cpu_set_t away = *allowed;
    CPU_CLR(cpu, &away);
    if (sched_setaffinity(0, sizeof away, &away) != 0) return false;
    sched_setaffinity(0, sizeof *allowed, allowed);
    return sched_getcpu() != cpu;
}

static _Noreturn void worker_main(pp_shm_t *h, unsigned w, pid_t server)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != server) async__child_exit(1);
    prctl(PR_SET_NAME, "async-worker");
    self_index = (int)w;
    self_shm = h;
    sigaction(SIGINT, &saved_int, NULL);
    sigaction(SIGCHLD, &saved_chld, NULL);
    sigprocmask(SIG_SETMASK, &saved_mask, NULL);
    pp_worker_t *wr = &V.workers[w];
    if (V.init) {
        char msg[sizeof wr->init_msg] = "";
        int rc = ((async__procpool_init_fn)(uintptr_t)V.init)((void *)(uintptr_t)V.init_arg,
                                                               msg, sizeof msg);
        if (rc) {
            memcpy(wr->init_msg, msg, sizeof msg);
            wr->init_msg[sizeof wr->init_msg - 1] = '\0';
            wr->init_err = rc < 0 ? rc : ASYNC_EINIT;
            async__child_exit(PP_INIT_EXIT);
        }
    }
    if (async__pp_test_hold_ready_ns > 0) {
        struct timespec ts = {(time_t)(async__pp_test_hold_ready_ns / 1000000000),
                              (long)(async__pp_test_hold_ready_ns % 1000000000)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
    }
    atomic_store(&wr->state, PP_W_READY);
    atomic_fetch_add(&h->sup_seq, 1);
    pp_wake_supervisor(h);
    uint64_t done = 0;
    /* A thread that calls one job at a time usually calls the next at once:
     * after handing it its result, wait for that call spinning, but not
     * beside the caller on its own CPU (the spin would only delay it), and
     * only while the caller spins too (then both have a CPU: it spins only
     * when a worker does) and the last such spin got a job.  Otherwise a
     * hand-over spins now and then anyway (a probe), to find out whether a
     * second CPU has come free or the caller calls faster again (beside the
 * caller, a probe first steps off its CPU: move_off): after
     * PROBE_MIN hand-overs, twice as many after each spin that got no job,
     * at most PROBE_MAX, so that on a busy machine, or for a caller that
     * thinks between calls, the probes' cost fades away. */
    enum { PROBE_MIN = 8, PROBE_MAX = 1024 };
    int64_t spin_ns = V.idle_spin_ns;
    unsigned since_probe = 0, probe_every = PROBE_MIN;
    bool spin_paid = true, after_hand_over = false;
    /* The CPUs this worker may use, as inherited; move_off never leaves them. */
    cpu_set_t allowed;
    int nallowed = sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed) : 0;
    for (;;) {
        if (atomic_load_explicit(&wr->retire, memory_order_relaxed)) break;
        uint32_t idx;
        if (claim(h, w, &idx)) {
            uint16_t caller_cpu =
                atomic_load_explicit(&V.slots[idx].caller_cpu, memory_order_relaxed);
            enum handed handed = run(h, w, wr, idx);
            spin_ns = V.idle_spin_ns;
            after_hand_over = false;
            if (handed != NOT_HANDED && V.call_spin_ns > spin_ns) {
                bool beside = caller_cpu == (uint16_t)sched_getcpu();
                bool want = !beside && handed == HANDED_TO_SPINNER && spin_paid;
                if (!want && ++since_probe >= probe_every)
                    want = !beside || move_off(caller_cpu, &allowed, nallowed);
                if (want) {
                    spin_ns = V.call_spin_ns;
                    since_probe = 0;
                    after_hand_over = true;
                }
            }
            if (V.max_tasks && ++done >= V.max_tasks) break;
            continue;
        }
        bool got = idle(h, w, wr, spin_ns);
        if (after_hand_over) {
            spin_paid = got;
            probe_every = got ? PROBE_MIN : probe_every < PROBE_MAX ? probe_every * 2 : PROBE_MAX;
            after_hand_over = false;
        }
        spin_ns = V.idle_spin_ns;
    }
    atomic_store(&wr->state, PP_W_EXITING);
    async__child_exit(0);
}

/* --- the fork server -------------------------------------------------------- */

static void tell(pp_shm_t *h, int sock, uint32_t type, uint32_t w, int32_t pid, int32_t value)
{
    pp_msg_t m = {type, w, pid, value};
    while (send(sock, &m, sizeof m, MSG_NOSIGNAL) < 0 && errno == EINTR) {}
    atomic_fetch_add(&h->srv_seq, 1);
    /* Unconditional bump, so that a supervisor about to sleep sees it. */
    atomic_fetch_add(&h->sup_seq, 1);
    pp_wake_supervisor(h);
}

static void close_others(int keep)
{
    /* Everything but stdio and our socket: a worker must not hold the
     * parent's pipes and sockets open behind its back. */
    if (keep > 3) syscall(SYS_close_range, 3u, (unsigned)keep - 1, 0u);
    syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u);
}

/* Receives one message, and the descriptor that came with it (*fd, OUT, -1
 * if none; only a SPARE carries one).  Returns what recvmsg does. */
static ssize_t recv_msg(int sock, pp_msg_t *m, int *fd)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {m, sizeof *m};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                        .msg_controllen = sizeof cbuf};
    *fd = -1;
    ssize_t n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int got;
        memcpy(&got, CMSG_DATA(c), sizeof got);
        if (*fd >= 0) {
            close(got);
            continue;
        }
        /* Moved above the server's own socket, so that a tool (or a test)
         * that looks for the server's socket among its descriptors, lowest
         * first, finds that one even while it holds this one (needed with
         * inherit_fds only: otherwise the socket is fd 3 and this one lands
         * above it anyway). */
        int high = fcntl(got, F_DUPFD_CLOEXEC, sock + 1);
        if (high >= 0) {
            close(got);
            got = high;
        }
        *fd = got;
    }
    return n;
}

/* Serves the parent on sock until it says QUIT or closes its end: returns
 * -1 then.  A spare server (PP_MSG_SPARE) is a clone of this process made
 * the parent's own child (CLONE_PARENT), so that it has this process's
 * memory, a copy of the parent as of the pool's creation, and not the
 * parent's memory of now, in which another thread may hold a lock: in the
 * clone this returns the spare's socket, and the caller serves that one. */
static int serve(pp_shm_t *h, int sock)
{
    unsigned nworkers = V.nworkers;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    pid_t self = getpid();
    pp_worker_t *ws = V.workers;
    bool quit = sfd < 0;
    while (!quit) {
        struct pollfd fds[2] = {{sock, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) continue;
        if (fds[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0) {}
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                for (unsigned w = 0; w < nworkers; w++) {
                    if (srv_pid[w] != pid) continue;
                    srv_pid[w] = 0;
                    atomic_store(&ws[w].pid, 0);
                    tell(h, sock, PP_MSG_EXITED, w, pid, status);
                    break;
                }
            }
        }
        if (!fds[0].revents) continue;
        pp_msg_t m;
        ssize_t n = 1;
        int fd;
        while (!quit && (n = recv_msg(sock, &m, &fd)) == sizeof m) {
            if (m.type == PP_MSG_SPARE && fd >= 0) {
                pid_t pid = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
                if (pid == 0) {
                    /* The spare: none of the server's workers is its child. */
                    memset(srv_pid, 0, sizeof srv_pid);
                    close(sock);
                    close(sfd);
                    /* Says who it is on its own socket: the server may be
                     * killed before its SPARED goes, and the pool must
                     * still reap this child of its own. */
                    pp_msg_t me = {PP_MSG_SELF, 0, getpid(), 0};
                    while (send(fd, &me, sizeof me, MSG_NOSIGNAL) < 0 && errno == EINTR) {}
                    return fd;
                }
                close(fd);
                tell(h, sock, PP_MSG_SPARED, 0, pid > 0 ? pid : 0, pid > 0 ? 0 : -errno);
                continue;
            }
            if (fd >= 0) close(fd);
            if (m.type == PP_MSG_PING) {
                tell(h, sock, PP_MSG_PONG, 0, 0, 0);
                continue;
            }
            if (m.w >= nworkers) continue;
            if (m.type == PP_MSG_SPAWN) {
                if (srv_pid[m.w]) { /* still ours: one worker an index */
                    tell(h, sock, PP_MSG_SPAWNED, m.w, 0, -EBUSY);
                    continue;
                }
                pid_t pid = fork();
                if (pid == 0) {
                    close(sock);
                    close(sfd);
                    worker_main(h, m.w, self);
                }
                if (pid > 0) {
                    srv_pid[m.w] = pid;
                    atomic_store(&ws[m.w].pid, pid);
                }
                tell(h, sock, PP_MSG_SPAWNED, m.w, pid > 0 ? pid : 0, pid > 0 ? 0 : -errno);
            } else if (m.type == PP_MSG_KILL) {
                if (m.pid > 0 && srv_pid[m.w] == m.pid) kill(m.pid, m.value);
            } else if (m.type == PP_MSG_QUIT) {
                quit = true;
            }
        }
        if (!quit && (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))) quit = true;
    }
    return -1;
}

_Noreturn void async__pp_server_main(const pp_view_t *v, int sock, bool inherit_fds)
{
    V = *v;
    pp_shm_t *h = V.h;
    unsigned nworkers = V.nworkers;
    prctl(PR_SET_NAME, "async-forksrv");
    if (!inherit_fds) {
        close_others(sock);
        /* Our socket as our lowest descriptor above stdio, before any other
         * opens: every descriptor we take later (the signalfd, a spare's
         * socket as it arrives) lands above it, so that whoever looks for
         * the server's socket among its descriptors, lowest first, finds
         * this one at any instant.  Held at 10 with 3 free, a spare's socket
         * arrived at 4 and was moved up only afterwards: a test that looked
         * in between shut the spare's down instead (ci16). */
        int low = sock > 3 ? fcntl(sock, F_DUPFD_CLOEXEC, 3) : -1;
        if (low >= 0 && low < sock) {
            close(sock);
            sock = low;
        }
    }
    /* Ctrl-C reaches the whole process group; the parent decides. */
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(SIGINT, &ign, &saved_int);
    /* An inherited SIG_IGN (or SA_NOCLDWAIT) would have the kernel reap
     * workers before we learn how they died. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGCHLD, &dfl, &saved_chld);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &saved_mask);
    /* A spare returns from serve with its own socket, and serves it. */
    while ((sock = serve(h, sock)) >= 0) {}
    for (unsigned w = 0; w < nworkers; w++)
        if (srv_pid[w] > 0) kill(srv_pid[w], SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {}
    async__child_exit(0);
}
