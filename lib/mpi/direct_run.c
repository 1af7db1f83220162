/* The direct path of async_executor_run on the MPI backend.
 *
 * A run on a plain thread, with the queue empty and a rank that has nothing
 * of ours to do, skips the driver slot, the progress thread and the future:
 * the calling thread sends the job to the rank itself, polls for its reply
 * (tag TAG_DIRECT, which nobody else receives) and copies the result into
 * the caller's buffer.  The trip is then MPI's latency and the rank's run,
 * with no thread of rank 0 to wake on either side.  While it waits the
 * thread spins, then naps as the progress thread does (mpi_internal.h).
 * At the job's deadline it stops waiting (a rank without a pool cannot stop
 * the job) and leaves the reply to the progress thread, which drops it. */
#include <stdio.h>
#include <string.h>
#include "rank0.h"
#include "exec/executor_internal.h"

_Atomic uint64_t async__mpi_direct_runs;

/* Claims an idle rank for a direct run: 0 when there is none, the pool is
 * closing, or sends are queued for the progress thread. */
static int claim_rank(mpib_t *b)
{
    int rank = 0;
    pthread_mutex_lock(&b->mu);
    if (!b->joining && !b->stop && !b->head)
        for (int r = 1; r < async__mpi_size_ && !rank; r++)
            if (!b->busy[r]) rank = r;
    if (rank) {
        b->busy[rank]++;
        b->directs++;
    }
    pthread_mutex_unlock(&b->mu);
    return rank;
}

/* The direct run on rank is over; orphaned (its job's seq, 0 for not): its
 * reply is still to come, for the progress thread to drop, and the rank
 * stays busy until then. */
static void release_rank(mpib_t *b, int rank, uint64_t orphaned)
{
    pthread_mutex_lock(&b->mu);
    if (orphaned) {
        b->orphan[rank] = orphaned;
        b->orphans++;
        pthread_cond_signal(&b->wake);
    } else {
        b->busy[rank]--;
    }
    if (!--b->directs && b->joining) pthread_cond_broadcast(&b->direct_idle);
    pthread_mutex_unlock(&b->mu);
}

/* Sends the job message under mpi_mu, unless sends are queued for the
 * progress thread (a bcast: it must reach the rank first, and MPI keeps
 * the order of sends, not of enqueues).  False when it did not send. */
static bool send_direct(mpib_t *b, int rank, const char *m, size_t len, MPI_Request *req)
{
    pthread_mutex_lock(&b->mpi_mu);
    pthread_mutex_lock(&b->mu);
    bool clear = !b->head;
    pthread_mutex_unlock(&b->mu);
    if (clear) MPI_Isend(m, (int)len, MPI_BYTE, rank, TAG_JOB, MPI_COMM_WORLD, req);
    pthread_mutex_unlock(&b->mpi_mu);
    return clear;
}

/* Polls until the send has completed and the reply to the job numbered
 * seq has come; any other message of the tag from the rank (only a forged
 * one: it answers no run) is received and dropped.  Returns 0
 * with the reply in *reply (OUT, async__malloc'd, *len bytes);
 * ASYNC_ENOMEM when it came but no memory could hold it (it was received
 * and dropped: the rank is free); ASYNC_ETIMEDOUT when deadline passed
 * first: the job's reply is still to come, and *unsent (OUT) says whether
 * the send is still under way too.  A send above the eager limit (4 KiB
 * over vader) completes only once the rank takes the message, which a rank
 * that is stopped or stuck never does, so the deadline must not wait for
 * it. */
static int await_direct(mpib_t *b, int rank, MPI_Request *req, uint64_t seq, int64_t deadline, char **reply,
                        size_t *len, bool *unsent)
{
    async__mpi_backoff_t backoff = {0};
    bool sent_all = false;
    for (;;) {
        *reply = NULL;
        pthread_mutex_lock(&b->mpi_mu);
        if (!sent_all) {
            int done = 0;
            MPI_Test(req, &done, MPI_STATUS_IGNORE);
            sent_all = done;
        }
        MPI_Status st;
        int flag = 0;
        if (sent_all) MPI_Iprobe(rank, TAG_DIRECT, MPI_COMM_WORLD, &flag, &st);
        int count = 0;
        res_hdr_t h;
        if (flag) {
            MPI_Get_count(&st, MPI_BYTE, &count);
            *reply = async__mpi_recv_probed(rank, TAG_DIRECT, count, &h, sizeof h);
        }
        pthread_mutex_unlock(&b->mpi_mu);
        if (flag && (count < (int)sizeof h || h.seq != seq)) {
            /* Before, such a message was taken as this run's answer (a
             * short one failed it with ASYNC_EIO), and this run's own
             * reply then as the next run's, and so on. */
            async__free(*reply);
            *reply = NULL;
            atomic_fetch_add_explicit(&async__mpi_stray_replies, 1, memory_order_relaxed);
            async__mpi_active(&backoff);
            flag = 0;
        }
        if (flag) {
            *len = (size_t)count;
            return *reply ? 0 : ASYNC_ENOMEM;
        }
        if (deadline != ASYNC_FOREVER && async_now() > deadline) {
            *unsent = !sent_all;
            return ASYNC_ETIMEDOUT;
        }
        async__mpi_nap(&backoff);
    }
}

/* A direct run gave up at its deadline before its send completed: the
 * progress thread completes it and frees m (the rank is marked an orphan's
 * after this, so the progress thread also drops the reply).  Without memory
 * to hand it over, this thread waits for the send itself. */
static void hand_over(mpib_t *b, int rank, char *m, size_t len, MPI_Request *req)
{
    sendreq_t *q = async__calloc(1, sizeof *q);
    if (!q) {
        async__mpi_backoff_t backoff = {0};
        for (int done = 0; !done;) {
            pthread_mutex_lock(&b->mpi_mu);
            MPI_Test(req, &done, MPI_STATUS_IGNORE);
            pthread_mutex_unlock(&b->mpi_mu);
            if (!done) async__mpi_nap(&backoff);
        }
        async__free(m);
        return;
    }
    *q = (sendreq_t){.rank = rank, .tag = TAG_JOB, .slot = 0, .buf = m, .len = len, .owned = true,
                     .started = true, .req = *req};
    pthread_mutex_lock(&b->mu);
    *b->tail = q;
    b->tail = &q->next;
    atomic_store(&b->queued, true);
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->mu);
}

/* The caller's answer from a reply, as async_executor_run gives it on the
 * ordinary path: the result copied only for a job that succeeded in time. */
static int answer(const char *reply, size_t rlen, const async_job_t *job, int64_t deadline, void *out,
                  size_t *out_len, char *msg, size_t msg_cap)
{
    async__outcome_t oc;
    const char *rows;
    size_t n;
    async__mpi_reply_outcome(reply, rlen, 1, job->out_size, &oc, &rows, &n);
    /* async__exec_finish's rule: a result past the deadline is a failure. */
    if (!oc.err && deadline != ASYNC_FOREVER && async_now() > deadline) {
        oc.err = ASYNC_ETIMEDOUT;
        snprintf(oc.msg, sizeof oc.msg, "finished after its deadline");
    }
    size_t size = 0;
    if (!oc.err) {
        const char *data = oc.var_out ? oc.var_out : rows;
        size = oc.var_out ? oc.var_size : oc.result_size;
        size_t copy = size < job->out_size ? size : job->out_size;
        if (out && copy) memcpy(out, data, copy);
    }
    if (out_len) *out_len = size;
    if (msg && msg_cap) snprintf(msg, msg_cap, "%s", oc.err ? oc.msg : "");
    return oc.err;
}

bool async__mpi_run_direct(async_executor_t *ex, const async_job_t *job, int64_t deadline, void *out,
                           size_t *out_len, char *msg, size_t msg_cap, int *code)
{
    mpib_t *b = ex->backend;
    int rank = claim_rank(b);
    if (!rank) return false;
    async__rows_t rw = {.fn = job->fn, .ctx = job->ctx, .in = job->in, .in_size = job->in_size,
                        .out_size = job->out_size, .count = 1};
    char *m, why[ASYNC_FUTURE_MSG_MAX];
    size_t len;
    int r = async__mpi_job_message(DIRECT_SLOT, &rw, true, deadline, &m, &len, why);
    if (r == ASYNC_ENOMEM) { /* the ordinary path says so with its own codes */
        release_rank(b, rank, 0);
        return false;
    }
    if (r) { /* what a slot would fail the job with: unregistered, bad ctx, too large */
        release_rank(b, rank, 0);
        *code = r;
        if (out_len) *out_len = 0;
        if (msg && msg_cap) snprintf(msg, msg_cap, "%s", why);
        atomic_fetch_add_explicit(&async__mpi_direct_runs, 1, memory_order_relaxed);
        return true;
    }
    MPI_Request req;
    if (!send_direct(b, rank, m, len, &req)) {
        async__free(m);
        release_rank(b, rank, 0);
        return false;
    }
    size_t rlen = 0;
    char *reply;
    bool unsent = false;
    uint64_t seq = async__mpi_job_seq(m);
    r = await_direct(b, rank, &req, seq, deadline, &reply, &rlen, &unsent);
    if (unsent) hand_over(b, rank, m, len, &req);
    else async__free(m);
    release_rank(b, rank, r == ASYNC_ETIMEDOUT ? seq : 0);
    if (!r) {
        *code = answer(reply, rlen, job, deadline, out, out_len, msg, msg_cap);
        async__free(reply);
    } else if (r == ASYNC_ENOMEM) { /* as a slot's job fails (parse) */
        *code = r;
        if (out_len) *out_len = 0;
        if (msg && msg_cap) snprintf(msg, msg_cap, "rank 0: no memory for a job's reply (%zu bytes)", rlen);
    } else { /* as the thread backend's watchdog says it */
        *code = ASYNC_ETIMEDOUT;
        if (out_len) *out_len = 0;
        if (msg && msg_cap)
            snprintf(msg, msg_cap, "still running on rank %d at its deadline (%s)", rank,
                     async__mpi_opts.rank_processes
                         ? "the rank's process pool stops it; its result is dropped"
                         : "without rank_processes a rank cannot stop a job: it runs on, its "
                           "result is dropped");
    }
    atomic_fetch_add_explicit(&async__mpi_direct_runs, 1, memory_order_relaxed);
    return true;
}
