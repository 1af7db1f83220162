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
#include <poll.h>
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

/* The fork server's exit status follows the end of its socket at once. */
#define SERVER_EXIT_NS ASYNC_MSEC(100)
/* While the pool waits only for its workers' exits (shutdown or terminate
 * with no job left), a fork server that says nothing for this long is
 * stopped or wedged: it is killed, and its workers with it. */
#define SERVER_PATIENCE_NS ASYNC_SEC(5)
/* A message that found the socket full is retried this often. */
#define OWED_RETRY_NS ASYNC_MSEC(10)
/* A job found being delivered at its deadline is looked at once more then. */
#define GRACE_NS ASYNC_SEC(1)
#define QUARANTINE (-2)

/* Sends without blocking: false when the socket is full (a server that
 * does not read, because it is stopped or busy, must not stop the
 * supervisor, which delivers results and keeps deadlines). */
static bool try_send(async__procpool_t *p, uint32_t type, unsigned w, pid_t pid, int value)
{
    pp_msg_t m = {type, w, pid, value};
    for (;;) {
        if (send(p->sock, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)sizeof m) return true;
        if (errno == EINTR) continue;
        /* EPIPE and the like: the server is gone, which read_server sees. */
        return errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS;
    }
}

/* Only SPAWN and KILL (always SIGKILL) go from here, one of each a worker
 * at most: what does not fit now is owed, and sent in order later. */
static void send_msg(async__procpool_t *p, uint32_t type, unsigned w, pid_t pid, int value)
{
    pp_pworker_t *pw = &p->w[w];
    if (p->server_gone) return;
    if (!p->nowed && try_send(p, type, w, pid, value)) return;
    if (type == PP_MSG_KILL) {
        if (!pw->kill_owed && !pw->spawn_owed) p->nowed++;
        pw->kill_owed = pid;
    } else {
        if (!pw->kill_owed && !pw->spawn_owed) p->nowed++;
        pw->spawn_owed = true;
    }
}

static void send_owed(async__procpool_t *p)
{
    for (unsigned w = 0; p->nowed && w < p->nworkers; w++) {
        pp_pworker_t *pw = &p->w[w];
        if (!pw->kill_owed && !pw->spawn_owed) continue;
        if (p->server_gone) pw->kill_owed = 0, pw->spawn_owed = false;
        if (pw->kill_owed) {
            if (!try_send(p, PP_MSG_KILL, w, pw->kill_owed, SIGKILL)) return;
            pw->kill_owed = 0;
        }
        if (pw->spawn_owed) {
            if (!try_send(p, PP_MSG_SPAWN, w, 0, 0)) return;
            pw->spawn_owed = false;
        }
        if (!pw->kill_owed && !pw->spawn_owed) p->nowed--;
    }
}

/* Calls a job's done without mu, then frees its slot, unless zombie_of
 * names the worker that may still write to it (the slot is freed when that
 * worker is reaped), or is QUARANTINE (no worker can be named: the slot is
 * kept out of use until the pool is freed).  Nothing happens if the job's done was claimed already
 * (a waiting thread took a stray HANDED first, or the slot is free and only
 * its state word says otherwise).  Called and returns with mu held. */
static void fail_slot(async__procpool_t *p, uint32_t idx, int err, const char *msg, int zombie_of)
{
    if (!async__pp_claim(p, idx)) return;
    pp_job_t *jp = &p->jobs[idx];
    async__procpool_done_fn done = jp->done;
    void *arg = jp->arg;
    _Atomic uint32_t *waiter = jp->waiter;
    if (zombie_of != -1) {
        jp->zombie_of = zombie_of;
        jp->seq = 0;       /* no longer cancellable or expirable */
        jp->waiter = NULL; /* told below: it may be gone after */
    }
    pthread_mutex_unlock(&p->mu);
    done(p->user, arg, err, msg, NULL, 0);
    async__pp_wake_waiter(p, idx, waiter);
    pthread_mutex_lock(&p->mu);
    if (zombie_of == -1) async__pp_slot_free(p, idx);
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
    pp_slot_t *slots = p->v.slots;
    for (uint32_t i = 0; i < p->v.nslots; i++) {
        uint32_t st = atomic_load(&slots[i].state);
        if (PP_KIND(st) == PP_QUEUED && atomic_load(&p->jobs[i].fin) == 0 &&
            atomic_compare_exchange_strong(&slots[i].state, &st, PP_ST(PP_REVOKED, 0)))
            fail_slot(p, i, err, msg, -1);
    }
}

static void retire_all(async__procpool_t *p)
{
    for (unsigned w = 0; w < p->nworkers; w++) atomic_store(&p->v.workers[w].retire, 1);
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
    pp_worker_t *wr = &p->v.workers[w];
    wr->init_err = 0;
    wr->init_msg[0] = '\0';
    atomic_store(&wr->retire, 0);
    p->w[w].done_head = 0;
    p->w[w].corrupt[0] = '\0';
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

/* Worker w's ring or records hold what no worker of ours writes: it is
 * retired and killed, its ring is read no more, and the jobs it still
 * holds fail with this reason when it is reaped (the finished ones are
 * delivered from their slots, checked as always).  Under mu. */
static void worker_corrupt(async__procpool_t *p, unsigned w, const char *what)
{
    pp_pworker_t *pw = &p->w[w];
    if (pw->corrupt[0]) return;
    snprintf(pw->corrupt, sizeof pw->corrupt, "%s", what);
    atomic_store(&p->v.workers[w].retire, 1);
    if (pw->alive) send_msg(p, PP_MSG_KILL, w, pw->pid, SIGKILL);
    /* Spawning: on_spawned kills it once it knows the pid. */
}

/* Delivers what worker w has finished; returns whether there was any.
 * The ring is the worker's to write, so each entry is checked: a tail
 * further ahead than the ring is long, or an entry that names a slot out of
 * range, one not finished by w, or one already delivered, is corruption. */
static bool reap_worker(async__procpool_t *p, unsigned w)
{
    pp_pworker_t *pw = &p->w[w];
    if (pw->corrupt[0]) return false;
    pp_worker_t *wr = &p->v.workers[w];
    uint64_t head = pw->done_head;
    uint64_t tail = atomic_load_explicit(&wr->done_tail, memory_order_acquire);
    if (head == tail) return false;
    _Atomic uint32_t *ring = pp_done_ring(&p->v, w);
    uint32_t nslots = p->v.nslots;
    uint32_t batch[256];
    char bad[200] = "";
    while (head != tail && !bad[0]) {
        unsigned n = 0;
        uint64_t res_end = 0;
        if (tail - head > nslots)
            snprintf(bad, sizeof bad,
                     "its done ring's tail (%llu) is %llu entries past its head (%llu), in a ring of "
                     "%u",
                     (unsigned long long)tail, (unsigned long long)(tail - head),
                     (unsigned long long)head, nslots);
        for (; !bad[0] && head != tail && n < 256; head++) {
            uint32_t idx = atomic_load_explicit(&ring[head & (nslots - 1)], memory_order_relaxed);
            uint32_t st = idx < nslots ? atomic_load(&p->v.slots[idx].state) : 0;
            if (idx >= nslots || st != PP_ST(PP_DONE, w) || !async__pp_claim(p, idx)) {
                snprintf(bad, sizeof bad,
                         "its done ring named slot %u, %s", idx,
                         idx >= nslots ? "beyond the pool's slots"
                         : st != PP_ST(PP_DONE, w) ? "which it had not finished"
                                                    : "which was delivered already");
                break;
            }
            async__pp_deliver(p, idx, w);
            async__pp_wake_waiter(p, idx, p->jobs[idx].waiter);
            uint64_t re = READ_ONCE(p->v.slots[idx].res_end);
            if (re) res_end = re;
            batch[n++] = idx;
        }
        pw->done_head = head;
        pthread_mutex_lock(&p->mu);
        for (unsigned i = 0; i < n; i++) {
            async__pp_slot_free(p, batch[i]);
            async__pp_job_finished(p);
        }
        if (bad[0]) worker_corrupt(p, w, bad);
        pthread_mutex_unlock(&p->mu);
        async__pp_release_results(p, w, res_end);
        tail = atomic_load_explicit(&wr->done_tail, memory_order_acquire);
    }
    return true;
}

static bool rings_pending(async__procpool_t *p)
{
    for (unsigned w = 0; w < p->nworkers; w++) {
        pp_worker_t *wr = &p->v.workers[w];
        if (!p->w[w].corrupt[0] &&
            p->w[w].done_head != atomic_load_explicit(&wr->done_tail, memory_order_relaxed))
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
    pp_worker_t *wr = &p->v.workers[w];
    pp_pworker_t *pw = &p->w[w];
    char msg[400];
    int init_err = READ_ONCE(wr->init_err);
    if (WIFEXITED(status) && WEXITSTATUS(status) == PP_INIT_EXIT && init_err) {
        /* The initializer itself reported the failure: it would fail again.
         * Its message is bounded here: the region need not hold its NUL. */
        snprintf(msg, sizeof msg, "worker %u initializer failed: %s%s%.*s", w,
                 async_strerror(init_err < 0 ? init_err : ASYNC_EINIT), wr->init_msg[0] ? ": " : "",
                 (int)sizeof wr->init_msg, wr->init_msg);
        break_pool(p, ASYNC_EINIT, msg);
        return false;
    }
    if (++pw->early_deaths >= EARLY_DEATHS_MAX) {
        if (p->v.init)
            snprintf(msg, sizeof msg,
                     "worker %u initializer failed: the worker died %u times in a row before it "
                     "was ready (last: %s); the pool stopped restarting it",
                     w, pw->early_deaths, why);
        else
            snprintf(msg, sizeof msg,
                     "worker %u died %u times in a row before it was ready (last: %s); the pool "
                     "stopped restarting it",
                     w, pw->early_deaths, why);
        break_pool(p, p->v.init ? ASYNC_EINIT : ASYNC_EWORKERDIED, msg);
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
    pp_worker_t *wr = &p->v.workers[w];
    reap_worker(p, w);
    char why[sizeof p->w[w].corrupt + 240], msg[sizeof p->broken_msg + sizeof why];
    describe(why, sizeof why, pid, status);
    pthread_mutex_lock(&p->mu);
    pp_pworker_t *pw = &p->w[w];
    if (pw->corrupt[0]) {
        /* We had it killed: say why, not only that it was. */
        size_t n = strlen(why);
        snprintf(why + n, sizeof why - n,
                 ", because the pool's shared memory was overwritten (%s) and it was killed",
                 pw->corrupt);
    }
    pw->alive = false;
    pw->pid = 0;
    p->nalive--;
    if (pw->ready) {
        pw->ready = false;
        p->nready--;
    }
    uint32_t wst = atomic_load(&wr->state);
    pp_slot_t *slots = p->v.slots;
    for (uint32_t i = 0; i < p->v.nslots; i++) {
        uint32_t st = atomic_load(&slots[i].state);
        /* Slots revoked from w: ours to free now, whatever their state word
         * says (only our record is trusted). */
        if (p->jobs[i].zombie_of == (int)w) {
            async__pp_slot_free(p, i);
            continue;
        }
        if (atomic_load(&p->jobs[i].fin)) continue; /* free, or its done was claimed */
        if (PP_KIND(st) == PP_RUNNING && PP_WORKER(st) == w) {
            if (p->server_gone || p->replacing) {
                /* Nobody reaped it: it was killed because the fork server
                 * died (PR_SET_PDEATHSIG), so the worker is not to blame. */
                snprintf(msg, sizeof msg, "%s; the worker running the job (pid %d) died with it",
                         p->replacing ? p->replacing : p->broken_msg, (int)pid);
                fail_slot(p, i, ASYNC_ECHILD, msg, -1);
            } else {
                snprintf(msg, sizeof msg, "%s while running the job", why);
                fail_slot(p, i, ASYNC_EWORKERDIED, msg, -1);
            }
        } else if (PP_KIND(st) == PP_DONE && PP_WORKER(st) == w && async__pp_claim(p, i)) {
            /* Finished but not yet on the done ring when the worker died
             * (or after the ring was found corrupt). */
            _Atomic uint32_t *waiter = p->jobs[i].waiter;
            pthread_mutex_unlock(&p->mu);
            async__pp_deliver(p, i, w);
            async__pp_wake_waiter(p, i, waiter);
            pthread_mutex_lock(&p->mu);
            async__pp_slot_free(p, i);
            async__pp_job_finished(p);
        } else if (PP_KIND(st) == PP_HANDED && PP_WORKER(st) == w) {
            async__pp_wake_handed(p, i); /* its waiter delivers it */
        }
    }
    atomic_store(&wr->state, PP_W_EMPTY);
    uint32_t spinning = w + 1;
    atomic_compare_exchange_strong(&h->spinner, &spinning, 0); /* died spinning */
    bool now = true;
    if (wst != PP_W_STARTING && wst != PP_W_EMPTY) pw->early_deaths = 0;
    else if (!p->killing && !p->broken && !p->replacing) now = early_death(p, w, status, why);
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
        atomic_store(&p->v.workers[w].state, PP_W_EMPTY);
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
        /* Terminating, or its ring was found corrupt before it started. */
        if (p->killing || pw->corrupt[0]) send_msg(p, PP_MSG_KILL, w, pid, SIGKILL);
    }
    pthread_mutex_unlock(&p->mu);
}

/* --- the fork server --------------------------------------------------------- */

/* The fork server is gone, or no longer to be trusted: its workers die with
 * it (PR_SET_PDEATHSIG) and no new one can start, so the pool is broken
 * with ASYNC_ECHILD, and the jobs the workers held fail with that code too.
 * why: NULL when its socket closed (it died, or closed it and lives on),
 * else what it did wrong; a server still alive is killed, since it can no
 * longer be told to leave. */
static void on_server_gone(async__procpool_t *p, const char *why)
{
    char how[200] = "";
    int status;
    bool killed;
    p->server_gone = true; /* no message goes to it any more */
    /* Its socket closes as it exits; the exit status follows at once. */
    bool known = async__pp_reap_server(p, why ? 0 : SERVER_EXIT_NS, &status, &killed);
    if (killed) snprintf(how, sizeof how, ", and the pool killed it");
    else if (known && WIFSIGNALED(status))
        snprintf(how, sizeof how, ", killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else if (known && WIFEXITED(status))
        snprintf(how, sizeof how, ", exit status %d", WEXITSTATUS(status));
    else
        snprintf(how, sizeof how, " (another waiter reaped it, and the kernel does not keep "
                                  "its exit status)");
    char msg[400];
    if (why)
        snprintf(msg, sizeof msg,
                 "the process pool's fork server (pid %d) %s%s; the pool cannot start workers "
                 "and is broken",
                 (int)p->server, why, how);
    else if (killed)
        snprintf(msg, sizeof msg,
                 "the process pool's fork server (pid %d) closed its socket but did not exit%s; "
                 "the pool cannot start workers and is broken",
                 (int)p->server, how);
    else
        snprintf(msg, sizeof msg,
                 "the process pool's fork server (pid %d) died%s; the pool cannot start workers "
                 "and is broken",
                 (int)p->server, how);
    pthread_mutex_lock(&p->mu);
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
    char bad[200];
    if (p->server_gone) return false;
    for (;;) {
        /* MSG_TRUNC: the length of the whole message, not of what fit. */
        n = recv(p->sock, &m, sizeof m, MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        any = true;
        if (n == 0) {
            /* The end of the socket, or an empty message: poll tells. */
            struct pollfd pfd = {.fd = p->sock, .events = POLLIN | POLLRDHUP};
            if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLRDHUP))) break;
            on_server_gone(p, "sent an empty message");
            return true;
        }
        const char *why = NULL;
        if (n != (ssize_t)sizeof m) {
            snprintf(bad, sizeof bad, "sent a message of %zd bytes (they are %zu)", n, sizeof m);
            why = bad;
        } else {
            pthread_mutex_lock(&p->mu);
            why = async__pp_bad_server_message(p, &m, bad, sizeof bad);
            pthread_mutex_unlock(&p->mu);
        }
        if (why) {
            on_server_gone(p, why);
            return true;
        }
        p->server_heard = async_now();
        p->ping_at = 0; /* it answers */
        if (m.type == PP_MSG_PONG) p->ping_out = false;
        else if (m.type == PP_MSG_SPARED) async__pp_on_spared(p, m.pid, m.value);
        else if (m.type == PP_MSG_SELF) {} /* a spare that took over: it is p->server */
        else if (m.type == PP_MSG_SPAWNED) on_spawned(p, m.w, m.pid, m.value);
        else on_exit_report(p, m.w, m.pid, m.value);
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        on_server_gone(p, NULL);
        any = true;
    }
    return any;
}

/* The fork server said nothing for PP_SERVER_ANSWER_NS after a ping: its
 * spare takes over, or, with none ready, the pool breaks.  The old server's
 * workers die with it; the jobs they ran fail with ASYNC_ECHILD and the
 * reason, their finished ones are delivered, and each is forked again by
 * the new server. */
static void server_unresponsive(async__procpool_t *p)
{
    int secs = (int)(PP_SERVER_ANSWER_NS / ASYNC_SEC(1));
    pid_t old = p->server;
    pid_t spare = async__pp_take_over(p);
    char why[300];
    if (!spare) {
        snprintf(why, sizeof why,
                 "did not answer the pool for %d s (it is stopped or wedged), and no spare fork "
                 "server was ready to take over", secs);
        on_server_gone(p, why);
        return;
    }
    snprintf(why, sizeof why,
             "the process pool's fork server (pid %d) did not answer for %d s (it is stopped or "
             "wedged); the pool killed it, and its workers with it, and its spare (pid %d) took over",
             (int)old, secs, (int)spare);
    p->replacing = why;
    for (unsigned w = 0; w < p->nworkers; w++)
        if (p->w[w].alive || p->w[w].spawning) on_exit_report(p, w, p->w[w].pid, SIGKILL);
    p->replacing = NULL;
}

/* --- deadlines, pending jobs, modes ------------------------------------------- */

/* Under mu. */
static bool expire(async__procpool_t *p, int64_t now)
{
    bool any = false;
    pp_slot_t *slots = p->v.slots;
    while (p->ndl && p->dl[0].t <= now) {
        pp_deadline_t d = p->dl[0];
        async__pp_deadline_pop(p);
        if (p->jobs[d.idx].seq != d.seq) continue;
        any = true;
        uint32_t st = atomic_load(&slots[d.idx].state);
        unsigned kind = PP_KIND(st), w = PP_WORKER(st);
        if (kind == PP_QUEUED &&
            atomic_compare_exchange_strong(&slots[d.idx].state, &st, PP_ST(PP_REVOKED, 0))) {
            fail_slot(p, d.idx, ASYNC_ETIMEDOUT,
                      "the job's deadline passed before a worker started it", -1);
        } else if (kind == PP_HANDED && w < p->nworkers) {
            /* Its waiting thread delivers it, whatever wrote the word: that
             * thread looks at the state whenever it wakes. */
        } else if (kind == PP_DONE && w < p->nworkers && !p->jobs[d.idx].grace) {
            /* Being delivered: once more a while later, in case the state
             * word was overwritten and no ring names the slot. */
            p->jobs[d.idx].grace = true;
            async__pp_deadline_push(p, now + GRACE_NS, d.idx, d.seq);
        } else if (kind == PP_DONE && w < p->nworkers) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "the job's deadline passed while its slot said worker %u had finished it, "
                     "but no completion ring named it (the pool's shared memory was overwritten)",
                     w);
            fail_slot(p, d.idx, ASYNC_ETIMEDOUT, msg, (int)w);
        } else if (kind != PP_RUNNING || w >= p->nworkers) {
            /* A state no process of ours leaves at a deadline (FREE, REVOKED
             * of a live job, an unknown kind, no such worker), or a delivery
             * that never came: whoever holds the slot cannot be told, so it
             * stays out of use, and the job fails now rather than never. */
            char msg[200];
            snprintf(msg, sizeof msg,
                     "the job's deadline passed while its slot's state word held 0x%x, which the "
                     "pool does not write (its shared memory was overwritten)",
                     (unsigned)st);
            fail_slot(p, d.idx, ASYNC_ETIMEDOUT, msg, QUARANTINE);
        } else {
            pp_worker_t *wr = &p->v.workers[w];
            atomic_store(&wr->retire, 1); /* take nothing else before the kill lands */
            if (atomic_compare_exchange_strong(&slots[d.idx].state, &st,
                                               PP_ST(PP_REVOKED, w))) {
                char msg[200];
                pid_t pid = p->w[w].pid;
                snprintf(msg, sizeof msg,
                         "the job ran past its deadline; its worker process %d was killed",
                         (int)pid);
                send_msg(p, PP_MSG_KILL, w, pid, SIGKILL);
                fail_slot(p, d.idx, ASYNC_ETIMEDOUT, msg, (int)w);
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
    pp_slot_t *slots = p->v.slots;
    for (uint32_t i = 0; i < p->v.nslots; i++) {
        uint32_t st = atomic_load(&slots[i].state);
        if (PP_KIND(st) != PP_RUNNING || atomic_load(&p->jobs[i].fin)) continue;
        unsigned w = PP_WORKER(st);
        /* No such worker: the word was overwritten; every worker dies now
         * anyway, and the slot stays out of use. */
        if (atomic_compare_exchange_strong(&slots[i].state, &st, PP_ST(PP_REVOKED, w)))
            fail_slot(p, i, ASYNC_ECANCELED, msg, w < p->nworkers ? (int)w : QUARANTINE);
    }
    for (unsigned w = 0; w < p->nworkers; w++)
        if (p->w[w].alive) send_msg(p, PP_MSG_KILL, w, p->w[w].pid, SIGKILL);
}

/* Under mu, with the submit ring empty: a live job whose slot still says
 * QUEUED has lost its ring entry (a worker overwrote it), since placing
 * publishes the state before the entry and a worker claims the slot before
 * it moves the head past it.  Such a job would wait for its deadline, or for
 * ever: it is published again. */
static void requeue_lost(async__procpool_t *p)
{
    bool any = false;
    for (uint32_t i = 0; i < p->v.nslots; i++) {
        if (atomic_load(&p->jobs[i].fin) || atomic_load(&p->v.slots[i].state) != PP_QUEUED) continue;
        if (p->q_tail - async__pp_q_head(p) >= p->v.ring_cap) break;
        atomic_store_explicit(&p->v.ring[p->q_tail & (p->v.ring_cap - 1)], i, memory_order_relaxed);
        atomic_store_explicit(&p->h->q_tail, ++p->q_tail, memory_order_release);
        any = true;
    }
    if (any) async__pp_wake_workers(p->h, INT_MAX);
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
        int64_t t = async_now();
        /* Held (a done callback, the process stopped): the server had no
         * chance to be heard, so its wait starts again. */
        if (t - p->last_turn > PP_TURN_GAP_NS && p->ping_at) p->ping_at = t;
        p->last_turn = t;
        bool periodic = t >= check_at;
        if (srv != last_srv || periodic) {
            last_srv = srv;
            check_at = t + IDLE_CHECK_NS;
            progress = read_server(p);
        }
        if (periodic && !p->server_gone) {
            pthread_mutex_lock(&p->mu);
            bool want = want_workers(p);
            pthread_mutex_unlock(&p->mu);
            async__pp_check_spare(p, t);
            if (want && p->spare_sock < 0) async__pp_ask_spare(p, t);
            if (async__pp_server_silent(p, t, want)) {
                server_unresponsive(p);
                continue;
            }
        }
        for (unsigned w = 0; w < p->nworkers; w++) progress |= reap_worker(p, w);
        int64_t now = async_now();
        pthread_mutex_lock(&p->mu);
        for (unsigned w = 0; w < p->nworkers; w++) {
            pp_pworker_t *pw = &p->w[w];
            if (!pw->ready && pw->alive && atomic_load(&p->v.workers[w].state) == PP_W_READY) {
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
        if (p->mode == PP_KILL && !p->killing) {
            kill_everything(p);
            p->closing_at = now;
        }
        if (p->mode == PP_DRAIN && p->inflight == 0 && !p->retired_all) {
            p->retired_all = true;
            retire_all(p);
            p->closing_at = now;
        }
        if (p->nowed) send_owed(p);
        bool finished = p->mode != PP_OPEN && p->inflight == 0 && p->nalive == 0;
        /* Only the exits are awaited, and the server reports none. */
        int64_t heard = p->server_heard > p->closing_at ? p->server_heard : p->closing_at;
        bool unheard = !finished && p->mode != PP_OPEN && p->inflight == 0 && p->closing_at &&
                       !p->server_gone && now - heard > SERVER_PATIENCE_NS;
        bool owed = p->nowed > 0;
        /* The submit ring's indices are the region's: put back what was
         * overwritten (a tail far ahead would keep every worker scanning
         * garbage entries, a head out of range would stall the ring). */
        if (atomic_load(&h->q_tail) != p->q_tail) atomic_store(&h->q_tail, p->q_tail);
        bool queued = p->q_tail != async__pp_q_head(p);
        if (!queued && now >= p->requeue_at) {
            p->requeue_at = now + IDLE_CHECK_NS;
            requeue_lost(p);
        }
        int64_t wake = next_wake(p);
        bool notify = p->notify_broken;
        p->notify_broken = false;
        pthread_mutex_unlock(&p->mu);
        if (notify) p->on_broken(p->broken_arg, p->broken, p->broken_msg);
        if (finished) break;
        if (unheard) {
            on_server_gone(p, "said nothing for 5 s while the pool waited for its workers to "
                              "exit (it is stopped or wedged)");
            continue;
        }
        if (progress) continue;
        atomic_store(&h->sup_waiting, 1);
        pp_fence();
        if (!rings_pending(p)) {
            /* Capped so that a fork server killed from outside (it cannot
             * tell us) is noticed by the recv at the loop's top. */
            int64_t timeout = wake == ASYNC_FOREVER ? IDLE_CHECK_NS : wake - async_now();
            if (timeout > IDLE_CHECK_NS) timeout = IDLE_CHECK_NS;
            if (owed && timeout > OWED_RETRY_NS) timeout = OWED_RETRY_NS;
            if (timeout < 0) timeout = 0;
            if (timeout != 0) pp_futex_wait(&h->sup_seq, seq, timeout);
            /* Jobs still queued after a quiet spell: wake every worker, in
             * case the words that decide who is woken (sleepers, spinner)
             * were overwritten and nobody was. */
            if (queued && atomic_load(&h->sup_seq) == seq) {
                atomic_fetch_add(&h->work_seq, 1);
                pp_futex_wake(&h->work_seq, INT_MAX);
            }
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
