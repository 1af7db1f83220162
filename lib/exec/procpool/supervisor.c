/* The process pool's supervisor: one thread in the parent that delivers
 * completions, reads the fork server's reports, replaces dead workers,
 * enforces deadlines and carries out shutdown and terminate.
 *
 * It is the only thread that consumes the workers' done rings and the only
 * one that talks to the fork server.  It sleeps on the shared sup_seq futex;
 * workers wake it when it announced it sleeps, the fork server and parent
 * threads bump the sequence unconditionally (see shm_internal.h).  It never
 * holds pool->mu while it runs a job's done callback. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "parent_internal.h"

/* The supervisor does not spin before it sleeps.  Measured on a 2-CPU
 * virtual machine, polling for 20 us after each delivery made every figure
 * worse: a hand-over is cheapest when the waker blocks right after waking
 * (the woken thread then runs on the same CPU, as in a pipe ping-pong), and
 * a spinning supervisor kept the CPU that the thread it had just woken (the
 * one waiting for the future) or a worker needed. */
#define RETRY_NS ASYNC_MSEC(100)
#define IDLE_CHECK_NS ASYNC_MSEC(250)

/* A worker that dies before it reports ready, without its initializer
 * reporting a failure, was killed from outside or crashed: it is replaced.
 * The second restart in a row of one worker waits EARLY_BACKOFF_NS, each
 * later one twice as long up to EARLY_BACKOFF_MAX_NS, and the
 * EARLY_DEATHS_MAX-th death in a row breaks the pool, so that a crash loop
 * ends in a reported error after about a second instead of spinning. */
#define EARLY_DEATHS_MAX 10
#define EARLY_BACKOFF_NS ASYNC_MSEC(5)
#define EARLY_BACKOFF_MAX_NS ASYNC_MSEC(200)

static void send_msg(async__procpool_t *p, uint32_t type, unsigned w, pid_t pid, int value)
{
    pp_msg_t m = {type, w, pid, value};
    if (p->server_gone) return;
    while (send(p->sock, &m, sizeof m, MSG_NOSIGNAL) < 0 && errno == EINTR) {}
}

/* Calls a job's done without mu, then frees its slot unless the worker that
 * held it may still write to it.  Called and returns with mu held. */
static void fail_slot(async__procpool_t *p, uint32_t idx, int err, const char *msg, bool free_it)
{
    pp_job_t j = p->jobs[idx];
    pthread_mutex_unlock(&p->mu);
    j.done(p->user, j.arg, err, msg, NULL, 0);
    async__pp_wake_waiter(p, idx, j.waiter);
    pthread_mutex_lock(&p->mu);
    if (free_it) async__pp_slot_free(p, idx);
    else {
        p->jobs[idx].seq = 0; /* no longer cancellable or expirable */
        p->jobs[idx].waiter = NULL; /* told: it may be gone */
    }
    async__pp_job_finished(p);
}

static void fail_pending(async__procpool_t *p, pp_pending_t *pj, int err, const char *msg)
{
    pthread_mutex_unlock(&p->mu);
    pj->job.done(p->user, pj->job.arg, err, msg, NULL, 0);
    async__free(pj);
    pthread_mutex_lock(&p->mu);
    async__pp_job_finished(p);
}

static void fail_all_pending(async__procpool_t *p, int err, const char *msg)
{
    pp_pending_t *pj;
    while ((pj = p->pending_head)) {
        p->pending_head = pj->next;
        if (!p->pending_head) p->pending_tail = NULL;
        async__pp_unpend(p, pj);
        fail_pending(p, pj, err, msg);
    }
}

/* Revokes every job no worker has started.  Under mu. */
static void fail_all_queued(async__procpool_t *p, int err, const char *msg)
{
    fail_all_pending(p, err, msg);
    pp_slot_t *slots = pp_slots(p->h);
    for (uint32_t i = 0; i < p->h->nslots; i++) {
        uint32_t st = atomic_load(&slots[i].state);
        if (PP_KIND(st) == PP_QUEUED &&
            atomic_compare_exchange_strong(&slots[i].state, &st, PP_ST(PP_REVOKED, 0)))
            fail_slot(p, i, err, msg, true);
    }
}

static void retire_all(async__procpool_t *p)
{
    for (unsigned w = 0; w < p->nworkers; w++) atomic_store(&pp_workers(p->h)[w].retire, 1);
    atomic_fetch_add(&p->h->work_seq, 1);
    pp_futex_wake(&p->h->work_seq, INT_MAX);
}

/* Under mu: no job will be accepted or started any more.  The message is
 * written once, before on_broken is told, and never changes after. */
static void break_pool(async__procpool_t *p, int err, const char *msg)
{
    if (p->broken) return;
    p->broken = err;
    p->notify_broken = p->on_broken != NULL;
    snprintf(p->broken_msg, sizeof p->broken_msg, "%s", msg);
    pthread_cond_broadcast(&p->cond);
    fail_all_queued(p, err, p->broken_msg);
    retire_all(p);
}

static void spawn(async__procpool_t *p, unsigned w)
{
    pp_worker_t *wr = &pp_workers(p->h)[w];
    wr->init_err = 0;
    wr->init_msg[0] = '\0';
    atomic_store(&wr->retire, 0);
    atomic_store(&wr->done_head, 0);
    atomic_store(&wr->done_tail, 0);
    atomic_store(&wr->res_head, 0);
    atomic_store(&wr->res_tail, 0);
    atomic_store(&wr->res_waiting, 0);
    atomic_store(&wr->state, PP_W_STARTING);
    p->w[w].spawning = true;
    p->w[w].retry_at = 0;
    p->nalive++;
    send_msg(p, PP_MSG_SPAWN, w, 0, 0);
}

static bool want_workers(async__procpool_t *p)
{
    return !p->broken && !p->server_gone &&
           (p->mode == PP_OPEN || (p->mode == PP_DRAIN && p->inflight > 0));
}

/* --- completions ------------------------------------------------------------ */

void async__pp_wake_waiter(async__procpool_t *p, uint32_t idx, _Atomic uint32_t *waiter)
{
    if (!waiter) return;
    pp_slot_t *s = &pp_slots(p->h)[idx];
    /* Read before the flag: once it is set the waiter may free the slot. */
    bool batch = s->batch != 0;
    atomic_store(waiter, 1);
    if (batch) {
        pp_wake_batch(p->h);
        return;
    }
    atomic_fetch_add(&s->wseq, 1);
    pp_futex_wake(&s->wseq, INT_MAX);
}

/* Worker w died: a waiter whose job it handed over but did not wake yet
 * would sleep for ever. */
static void wake_handed(async__procpool_t *p, pp_slot_t *s)
{
    /* A chunk of a batch: whether the worker counted it is unknown. */
    if (s->batch) pp_wake_batch(p->h);
    atomic_fetch_add(&s->wseq, 1);
    pp_futex_wake(&s->wseq, INT_MAX);
}

void async__pp_deliver(async__procpool_t *p, uint32_t idx)
{
    pp_slot_t *s = &pp_slots(p->h)[idx];
    pp_job_t *j = &p->jobs[idx];
    char *base = (char *)p->h;
    if (s->err) {
        char msg[600];
        if (s->msg_len) snprintf(msg, sizeof msg, "%.*s", (int)s->msg_len, base + s->msg_off);
        else snprintf(msg, sizeof msg, "%s", async_strerror(s->err));
        j->done(p->user, j->arg, s->err, msg, NULL, 0);
    } else {
        const void *out = s->out_off ? base + s->out_off : (const void *)s->out_inline;
        j->done(p->user, j->arg, 0, NULL, out, s->out_len);
    }
}

static void release_results(async__procpool_t *p, unsigned w, uint64_t res_end)
{
    pp_worker_t *wr = &pp_workers(p->h)[w];
    if (!res_end) return;
    atomic_store_explicit(&wr->res_head, res_end, memory_order_release);
    pp_fence();
    if (atomic_load(&wr->res_waiting)) {
        atomic_fetch_add(&wr->res_seq, 1);
        pp_futex_wake(&wr->res_seq, 1);
    }
}

/* Delivers what worker w has finished; returns whether there was any. */
static bool reap_worker(async__procpool_t *p, unsigned w)
{
    pp_shm_t *h = p->h;
    pp_worker_t *wr = &pp_workers(h)[w];
    uint64_t head = atomic_load_explicit(&wr->done_head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&wr->done_tail, memory_order_acquire);
    if (head == tail) return false;
    _Atomic uint32_t *ring = pp_done_ring(h, w);
    uint32_t batch[256];
    while (head != tail) {
        unsigned n = 0;
        uint64_t res_end = 0;
        for (; head != tail && n < 256; head++) {
            uint32_t idx = atomic_load_explicit(&ring[head & (h->nslots - 1)],
                                                memory_order_relaxed);
            async__pp_deliver(p, idx);
            async__pp_wake_waiter(p, idx, p->jobs[idx].waiter);
            if (pp_slots(h)[idx].res_end) res_end = pp_slots(h)[idx].res_end;
            batch[n++] = idx;
        }
        atomic_store_explicit(&wr->done_head, head, memory_order_release);
        pthread_mutex_lock(&p->mu);
        for (unsigned i = 0; i < n; i++) {
            async__pp_slot_free(p, batch[i]);
            async__pp_job_finished(p);
        }
        pthread_mutex_unlock(&p->mu);
        release_results(p, w, res_end);
        tail = atomic_load_explicit(&wr->done_tail, memory_order_acquire);
    }
    return true;
}

static bool rings_pending(async__procpool_t *p)
{
    for (unsigned w = 0; w < p->nworkers; w++) {
        pp_worker_t *wr = &pp_workers(p->h)[w];
        if (atomic_load_explicit(&wr->done_head, memory_order_relaxed) !=
            atomic_load_explicit(&wr->done_tail, memory_order_relaxed))
            return true;
    }
    return false;
}

/* --- deaths ------------------------------------------------------------------- */

static void describe(char *buf, size_t n, pid_t pid, int status)
{
    if (WIFSIGNALED(status))
        snprintf(buf, n, "worker process %d was killed by signal %d (%s)", (int)pid,
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, n, "worker process %d exited with status %d", (int)pid,
                 WIFEXITED(status) ? WEXITSTATUS(status) : status);
}

/* Worker w died before it reported ready, and not because we killed it.
 * Under mu.  Returns whether to restart it now. */
static bool early_death(async__procpool_t *p, unsigned w, int status, const char *why)
{
    pp_worker_t *wr = &pp_workers(p->h)[w];
    pp_pworker_t *pw = &p->w[w];
    char msg[400];
    if (WIFEXITED(status) && WEXITSTATUS(status) == PP_INIT_EXIT && wr->init_err) {
        /* The initializer itself reported the failure: it would fail again. */
        snprintf(msg, sizeof msg, "worker %u initializer failed: %s%s%s", w,
                 async_strerror(wr->init_err), wr->init_msg[0] ? ": " : "", wr->init_msg);
        break_pool(p, ASYNC_EINIT, msg);
        return false;
    }
    if (++pw->early_deaths >= EARLY_DEATHS_MAX) {
        if (p->h->init)
            snprintf(msg, sizeof msg,
                     "worker %u initializer failed: the worker died %u times in a row before it "
                     "was ready (last: %s); the pool stopped restarting it",
                     w, pw->early_deaths, why);
        else
            snprintf(msg, sizeof msg,
                     "worker %u died %u times in a row before it was ready (last: %s); the pool "
                     "stopped restarting it",
                     w, pw->early_deaths, why);
        break_pool(p, p->h->init ? ASYNC_EINIT : ASYNC_EWORKERDIED, msg);
        return false;
    }
    if (pw->early_deaths < 2) return true;
    int64_t delay = EARLY_BACKOFF_NS << (pw->early_deaths - 2 < 10 ? pw->early_deaths - 2 : 10);
    pw->retry_at = async_now() + (delay < EARLY_BACKOFF_MAX_NS ? delay : EARLY_BACKOFF_MAX_NS);
    return false;
}

/* Worker w was reaped.  Its finished jobs are delivered, the one it was
 * running fails with ASYNC_EWORKERDIED (ASYNC_ECHILD when it died with the
 * fork server), and a replacement is forked. */
static void on_exit_report(async__procpool_t *p, unsigned w, pid_t pid, int status)
{
    pp_shm_t *h = p->h;
    pp_worker_t *wr = &pp_workers(h)[w];
    reap_worker(p, w);
    char why[200], msg[sizeof p->broken_msg + 64];
    describe(why, sizeof why, pid, status);
    pthread_mutex_lock(&p->mu);
    pp_pworker_t *pw = &p->w[w];
    pw->alive = false;
    pw->pid = 0;
    p->nalive--;
    if (pw->ready) {
        pw->ready = false;
        p->nready--;
    }
    uint32_t wst = atomic_load(&wr->state);
    pp_slot_t *slots = pp_slots(h);
    for (uint32_t i = 0; i < h->nslots; i++) {
        uint32_t st = atomic_load(&slots[i].state);
        if (PP_KIND(st) == PP_RUNNING && PP_WORKER(st) == w) {
            if (p->server_gone) {
                /* Nobody reaped it: it was killed because the fork server
                 * died (PR_SET_PDEATHSIG), so the worker is not to blame. */
                snprintf(msg, sizeof msg, "%s; the worker running the job (pid %d) died with it",
                         p->broken_msg, (int)pid);
                fail_slot(p, i, ASYNC_ECHILD, msg, true);
            } else {
                snprintf(msg, sizeof msg, "%s while running the job", why);
                fail_slot(p, i, ASYNC_EWORKERDIED, msg, true);
            }
        } else if (PP_KIND(st) == PP_DONE && PP_WORKER(st) == w) {
            /* Finished but not yet on the done ring when the worker died. */
            _Atomic uint32_t *waiter = p->jobs[i].waiter;
            pthread_mutex_unlock(&p->mu);
            async__pp_deliver(p, i);
            async__pp_wake_waiter(p, i, waiter);
            pthread_mutex_lock(&p->mu);
            async__pp_slot_free(p, i);
            async__pp_job_finished(p);
        } else if (PP_KIND(st) == PP_HANDED && PP_WORKER(st) == w) {
            wake_handed(p, &slots[i]); /* its waiter delivers it */
        } else if (PP_KIND(st) == PP_REVOKED && p->jobs[i].zombie_of == (int)w) {
            async__pp_slot_free(p, i);
        }
    }
    atomic_store(&wr->state, PP_W_EMPTY);
    uint32_t spinning = w + 1;
    atomic_compare_exchange_strong(&h->spinner, &spinning, 0); /* died spinning */
    bool now = true;
    if (wst != PP_W_STARTING && wst != PP_W_EMPTY) pw->early_deaths = 0;
    else if (!p->killing && !p->broken) now = early_death(p, w, status, why);
    if (now && want_workers(p)) spawn(p, w);
    pthread_mutex_unlock(&p->mu);
}

static void on_spawned(async__procpool_t *p, unsigned w, pid_t pid, int err)
{
    pthread_mutex_lock(&p->mu);
    pp_pworker_t *pw = &p->w[w];
    pw->spawning = false;
    if (err) {
        p->nalive--;
        atomic_store(&pp_workers(p->h)[w].state, PP_W_EMPTY);
        if (p->nalive == 0 && want_workers(p)) {
            char msg[200];
            snprintf(msg, sizeof msg, "could not fork a worker: %s", strerror(-err));
            break_pool(p, ASYNC_EWORKERDIED, msg);
        } else {
            pw->retry_at = async_now() + RETRY_NS;
        }
    } else {
        pw->alive = true;
        pw->pid = pid;
        atomic_fetch_add(&p->spawned, 1);
        if (p->killing) send_msg(p, PP_MSG_KILL, w, pid, SIGKILL);
    }
    pthread_mutex_unlock(&p->mu);
}

/* The fork server is gone (someone killed it): its workers die with it
 * (PR_SET_PDEATHSIG) and no new one can start, so the pool is broken with
 * ASYNC_ECHILD, and the jobs the workers held fail with that code too. */
static void on_server_gone(async__procpool_t *p)
{
    char how[160] = "";
    int status;
    /* Its socket closes as it exits; the exit status follows at once. */
    for (int i = 0; i < 100 && !p->server_reaped; i++) {
        pid_t r = waitpid(p->server, &status, WNOHANG);
        if (r == p->server) p->server_reaped = true;
        else if (r < 0 && errno != EINTR) break;
        else usleep(1000);
    }
    if (p->server_reaped && WIFSIGNALED(status))
        snprintf(how, sizeof how, ", killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else if (p->server_reaped && WIFEXITED(status))
        snprintf(how, sizeof how, ", exit status %d", WEXITSTATUS(status));
    char msg[300];
    snprintf(msg, sizeof msg,
             "the process pool's fork server (pid %d) died%s; the pool cannot start workers "
             "and is broken",
             (int)p->server, how);
    pthread_mutex_lock(&p->mu);
    p->server_gone = true;
    break_pool(p, ASYNC_ECHILD, msg);
    pthread_mutex_unlock(&p->mu);
    for (unsigned w = 0; w < p->nworkers; w++) {
        if (p->w[w].alive || p->w[w].spawning)
            on_exit_report(p, w, p->w[w].pid, SIGKILL); /* a wait status: killed by SIGKILL */
    }
}

static bool read_server(async__procpool_t *p)
{
    bool any = false;
    pp_msg_t m;
    ssize_t n;
    if (p->server_gone) return false;
    while ((n = recv(p->sock, &m, sizeof m, MSG_DONTWAIT)) == sizeof m) {
        any = true;
        if (m.w >= p->nworkers) continue;
        if (m.type == PP_MSG_SPAWNED) on_spawned(p, m.w, m.pid, m.value);
        else if (m.type == PP_MSG_EXITED) on_exit_report(p, m.w, m.pid, m.value);
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        on_server_gone(p);
        any = true;
    }
    return any;
}

/* --- deadlines, pending jobs, modes ------------------------------------------- */

/* Under mu. */
static bool expire(async__procpool_t *p, int64_t now)
{
    bool any = false;
    pp_slot_t *slots = pp_slots(p->h);
    while (p->ndl && p->dl[0].t <= now) {
        pp_deadline_t d = p->dl[0];
        async__pp_deadline_pop(p);
        if (p->jobs[d.idx].seq != d.seq) continue;
        any = true;
        uint32_t st = atomic_load(&slots[d.idx].state);
        if (PP_KIND(st) == PP_QUEUED &&
            atomic_compare_exchange_strong(&slots[d.idx].state, &st, PP_ST(PP_REVOKED, 0))) {
            fail_slot(p, d.idx, ASYNC_ETIMEDOUT,
                      "the job's deadline passed before a worker started it", true);
        } else if (PP_KIND(st) == PP_RUNNING) {
            unsigned w = PP_WORKER(st);
            pp_worker_t *wr = &pp_workers(p->h)[w];
            atomic_store(&wr->retire, 1); /* take nothing else before the kill lands */
            if (atomic_compare_exchange_strong(&slots[d.idx].state, &st,
                                               PP_ST(PP_REVOKED, w))) {
                char msg[200];
                pid_t pid = p->w[w].pid;
                snprintf(msg, sizeof msg,
                         "the job ran past its deadline; its worker process %d was killed",
                         (int)pid);
                p->jobs[d.idx].zombie_of = (int)w;
                send_msg(p, PP_MSG_KILL, w, pid, SIGKILL);
                fail_slot(p, d.idx, ASYNC_ETIMEDOUT, msg, false);
            } else {
                atomic_store(&wr->retire, 0);
            }
        }
    }
    if (!p->pending_dl) return any;
    pp_pending_t *expired = NULL, **last = &expired, *prev = NULL;
    for (pp_pending_t **pp = &p->pending_head; *pp;) {
        pp_pending_t *pj = *pp;
        if (pj->job.deadline > now) {
            prev = pj;
            pp = &pj->next;
            continue;
        }
        *pp = pj->next;
        async__pp_unpend(p, pj);
        pj->next = NULL;
        *last = pj;
        last = &pj->next;
    }
    p->pending_tail = prev;
    while (expired) {
        pp_pending_t *pj = expired;
        expired = pj->next;
        fail_pending(p, pj, ASYNC_ETIMEDOUT, "the job's deadline passed before a worker started it");
        any = true;
    }
    return any;
}

static int64_t next_wake(async__procpool_t *p)
{
    int64_t t = p->ndl ? p->dl[0].t : ASYNC_FOREVER;
    if (p->pending_dl) {
        for (pp_pending_t *pj = p->pending_head; pj; pj = pj->next)
            if (pj->job.deadline < t) t = pj->job.deadline;
    }
    for (unsigned w = 0; w < p->nworkers; w++)
        if (p->w[w].retry_at && p->w[w].retry_at < t) t = p->w[w].retry_at;
    return t;
}

/* Under mu: moves waiting jobs into freed slots. */
static bool fill_pending(async__procpool_t *p)
{
    bool any = false;
    pp_pending_t *pj;
    while ((pj = p->pending_head)) {
        int rc = async__pp_place(p, &pj->job, pj->seq, NULL, NULL);
        if (rc == ASYNC_EAGAIN) break;
        p->pending_head = pj->next;
        if (!p->pending_head) p->pending_tail = NULL;
        async__pp_unpend(p, pj);
        any = true;
        if (rc) fail_pending(p, pj, rc, "no memory to place the job (the pool's shared heap is full, "
                                            "or its deadline table could not grow)");
        else async__free(pj);
    }
    if (any) async__pp_wake_workers(p->h, INT_MAX);
    return any;
}

/* Under mu: terminate.  Every job not finished fails now; running ones are
 * revoked so that their workers' late results are ignored. */
static void kill_everything(async__procpool_t *p)
{
    static const char msg[] = "the process pool was terminated";
    p->killing = true;
    fail_all_queued(p, ASYNC_ECANCELED, msg);
    retire_all(p);
    pp_slot_t *slots = pp_slots(p->h);
    for (uint32_t i = 0; i < p->h->nslots; i++) {
        uint32_t st = atomic_load(&slots[i].state);
        if (PP_KIND(st) != PP_RUNNING) continue;
        unsigned w = PP_WORKER(st);
        if (atomic_compare_exchange_strong(&slots[i].state, &st, PP_ST(PP_REVOKED, w))) {
            p->jobs[i].zombie_of = (int)w;
            fail_slot(p, i, ASYNC_ECANCELED, msg, false);
        }
    }
    for (unsigned w = 0; w < p->nworkers; w++)
        if (p->w[w].alive) send_msg(p, PP_MSG_KILL, w, p->w[w].pid, SIGKILL);
}

static void *supervise(void *arg)
{
    async__procpool_t *p = arg;
    pp_shm_t *h = p->h;
    pthread_mutex_lock(&p->mu);
    for (unsigned w = 0; w < p->nworkers; w++) spawn(p, w);
    pthread_mutex_unlock(&p->mu);
    int64_t check_at = 0;
    uint32_t last_srv = 0;
    for (;;) {
        uint32_t seq = atomic_load(&h->sup_seq);
        /* The socket only when the server said something, or now and then
         * to notice a server killed from outside: a system call per turn
         * would be most of the cost of a small job. */
        uint32_t srv = atomic_load(&h->srv_seq);
        bool progress = false;
        if (srv != last_srv || async_now() >= check_at) {
            last_srv = srv;
            check_at = async_now() + IDLE_CHECK_NS;
            progress = read_server(p);
        }
        for (unsigned w = 0; w < p->nworkers; w++) progress |= reap_worker(p, w);
        int64_t now = async_now();
        pthread_mutex_lock(&p->mu);
        for (unsigned w = 0; w < p->nworkers; w++) {
            pp_pworker_t *pw = &p->w[w];
            if (!pw->ready && pw->alive && atomic_load(&pp_workers(h)[w].state) == PP_W_READY) {
                pw->ready = true;
                pw->early_deaths = 0;
                if (++p->nready == p->nworkers) pthread_cond_broadcast(&p->cond);
            }
            if (pw->retry_at && pw->retry_at <= now && !pw->alive && !pw->spawning &&
                want_workers(p))
                spawn(p, w);
        }
        progress |= expire(p, now);
        if (p->pending_head) progress |= fill_pending(p);
        if (p->mode == PP_KILL && !p->killing) kill_everything(p);
        if (p->mode == PP_DRAIN && p->inflight == 0 && !p->retired_all) {
            p->retired_all = true;
            retire_all(p);
        }
        bool finished = p->mode != PP_OPEN && p->inflight == 0 && p->nalive == 0;
        int64_t wake = next_wake(p);
        bool notify = p->notify_broken;
        p->notify_broken = false;
        pthread_mutex_unlock(&p->mu);
        if (notify) p->on_broken(p->broken_arg, p->broken, p->broken_msg);
        if (finished) break;
        if (progress) continue;
        atomic_store(&h->sup_waiting, 1);
        pp_fence();
        if (!rings_pending(p)) {
            /* Capped so that a fork server killed from outside (it cannot
             * tell us) is noticed by the recv at the loop's top. */
            int64_t timeout = wake == ASYNC_FOREVER ? IDLE_CHECK_NS : wake - async_now();
            if (timeout > IDLE_CHECK_NS) timeout = IDLE_CHECK_NS;
            if (timeout < 0) timeout = 0;
            if (timeout != 0) pp_futex_wait(&h->sup_seq, seq, timeout);
        }
        atomic_store(&h->sup_waiting, 0);
    }
    pthread_mutex_lock(&p->mu);
    p->done = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int async__pp_start_supervisor(async__procpool_t *p)
{
    sigset_t all, old;
    sigfillset(&all);
    /* Process-directed signals belong to the application's threads. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&p->sup, NULL, supervise, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) return -rc;
    p->sup_started = true;
    return 0;
}

void async__pp_join_supervisor(async__procpool_t *p)
{
    pthread_mutex_lock(&p->join_mu);
    if (p->sup_started && !p->sup_joined) {
        pthread_join(p->sup, NULL);
        p->sup_joined = true;
    }
    pthread_mutex_unlock(&p->join_mu);
}
