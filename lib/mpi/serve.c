/* A serving rank (1 .. N-1): receives jobs from rank 0, runs them, and sends
 * the results back with MPI_Isend, until rank 0 says stop.  Only this
 * thread calls MPI.  Jobs run here one at a time, or, with
 * async_mpi_opts_t.rank_processes, in a fork-based process pool of this
 * rank (the process backend), which runs several at once and turns a job
 * that crashes into a failed reply while the rank serves on.
 *
 * Idle, the loop probes for a moment and then sleeps between probes
 * (mpi_internal.h), rather than block in MPI_Recv, which Open MPI
 * implements by busy polling (docs/mpi.md has the measured cost). */
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include "mpi_internal.h"

typedef struct pending {
    MPI_Request req;
    char *buf;
} pending_t;

typedef struct running {
    async_future_t *f;
    uint32_t slot;
    uint64_t seq;
} running_t;

typedef struct serve {
    pending_t *pend;
    size_t npend, cappend;
    running_t *run;
    size_t nrun, caprun;
} serve_t;

/* In a worker process of the rank's pool: runs the job message and returns
 * the whole reply as the job's variable result. */
static int pool_run(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)out, (void)out_size, (void)ctx;
    char *reply;
    size_t len;
    int r = async__mpi_run(in, in_size, async_work_deadline(), &reply, &len);
    if (r) return async_work_fail(r, "rank %d: no memory for the reply", async__mpi_rank_);
    void *o = async_work_output(len);
    if (!o) {
        async__free(reply);
        return async_work_fail(ASYNC_ENOMEM, "rank %d: the result (%zu bytes) exceeds the rank "
                               "pool's limit", async__mpi_rank_, len);
    }
    memcpy(o, reply, len);
    async__free(reply);
    return 0;
}

/* Replies go back with the tag their slot asks for (a direct run's or a
 * driver slot's); every reply starts with its res_hdr_t. */
static void send_reply(serve_t *sv, char *reply, size_t len)
{
    res_hdr_t h;
    memcpy(&h, reply, sizeof h);
    int tag = async__mpi_reply_tag(h.slot);
    if (sv->npend == sv->cappend) {
        size_t nc = sv->cappend ? sv->cappend * 2 : 16;
        pending_t *np = async__malloc(nc * sizeof *np);
        if (!np) { /* no memory for the list: send it blocking */
            MPI_Send(reply, (int)len, MPI_BYTE, 0, tag, MPI_COMM_WORLD);
            async__free(reply);
            return;
        }
        if (sv->pend) memcpy(np, sv->pend, sv->npend * sizeof *np);
        async__free(sv->pend);
        sv->pend = np;
        sv->cappend = nc;
    }
    pending_t *p = &sv->pend[sv->npend++];
    p->buf = reply;
    MPI_Isend(reply, (int)len, MPI_BYTE, 0, tag, MPI_COMM_WORLD, &p->req);
}

static void send_error(serve_t *sv, uint32_t slot, uint64_t seq, int err, const char *msg)
{
    char *reply;
    size_t len;
    if (async__mpi_error_reply(slot, seq, err, msg, &reply, &len) == 0) {
        send_reply(sv, reply, len);
        return;
    }
    /* Not even an error reply fits: a header on the stack, sent blocking,
     * so that rank 0's slot never waits for ever. */
    res_hdr_t h = {.slot = slot, .err = ASYNC_ENOMEM, .seq = seq};
    MPI_Send(&h, sizeof h, MPI_BYTE, 0, async__mpi_reply_tag(slot), MPI_COMM_WORLD);
}

/* The job's deadline on this rank's clock from the time it had left when
 * rank 0 sent it.  Saturated: a deadline centuries away (a timeout near
 * INT64_MAX) overflowed now + remaining, and the wrapped, negative deadline
 * made a rank pool fail the job at once ("deadline passed before it ran");
 * 0 or less (only a malformed message carries it) has passed. */
static int64_t job_deadline(int64_t remaining)
{
    if (remaining == NO_DEADLINE) return ASYNC_FOREVER;
    int64_t now = async_now();
    if (remaining <= 0) return now;
    return remaining >= ASYNC_FOREVER - now ? ASYNC_FOREVER : now + remaining;
}

static void run_job(serve_t *sv, async_executor_t *pool, char *buf, size_t len)
{
    job_hdr_t h = {0};
    if (len >= sizeof h) memcpy(&h, buf, sizeof h);
    int64_t dl = job_deadline(h.remaining);
    char msg[ASYNC_FUTURE_MSG_MAX + 64];
    if (!pool) {
        char *reply;
        size_t rlen;
        if (async__mpi_run(buf, len, dl, &reply, &rlen)) {
            snprintf(msg, sizeof msg, "rank %d: no memory for the reply", async__mpi_rank_);
            send_error(sv, h.slot, h.seq, ASYNC_ENOMEM, msg);
        } else {
            send_reply(sv, reply, rlen);
        }
        return;
    }
    if (sv->nrun == sv->caprun) {
        size_t nc = sv->caprun ? sv->caprun * 2 : 16;
        running_t *np = async__malloc(nc * sizeof *np);
        if (!np) {
            snprintf(msg, sizeof msg, "rank %d: no memory to queue the job", async__mpi_rank_);
            send_error(sv, h.slot, h.seq, ASYNC_ENOMEM, msg);
            return;
        }
        if (sv->run) memcpy(np, sv->run, sv->nrun * sizeof *np);
        async__free(sv->run);
        sv->run = np;
        sv->caprun = nc;
    }
    /* The time left, as the rank's pool counts it from this submit. */
    int64_t left = dl == ASYNC_FOREVER ? 0 : dl - async_now();
    async_job_t job = {.fn = pool_run, .in = buf, .in_size = len,
                       .timeout_ns = dl == ASYNC_FOREVER ? 0 : left > 0 ? left : -1};
    async_future_t *f;
    int r = async_executor_submit(&f, pool, &job);
    if (r) {
        char why[ASYNC_FUTURE_MSG_MAX - 32];
        async_executor_error(pool, why, sizeof why);
        (void)!snprintf(msg, sizeof msg, "rank %d: its process pool refused the job: %s", async__mpi_rank_,
                 why[0] ? why : async_strerror(r));
        send_error(sv, h.slot, h.seq, r, msg);
        return;
    }
    sv->run[sv->nrun++] = (running_t){f, h.slot, h.seq};
}

/* Sends the replies of the pool's jobs that have ended. */
static bool reap(serve_t *sv)
{
    bool any = false;
    for (size_t i = 0; i < sv->nrun;) {
        async_future_t *f = sv->run[i].f;
        if (!async_future_done(f)) {
            i++;
            continue;
        }
        uint32_t slot = sv->run[i].slot;
        uint64_t seq = sv->run[i].seq;
        sv->run[i] = sv->run[--sv->nrun];
        const void *data;
        size_t size;
        int err = async_future_result(f, &data, &size);
        if (!err && size >= sizeof(res_hdr_t)) {
            char *reply = async__malloc(size);
            if (reply) {
                memcpy(reply, data, size);
                send_reply(sv, reply, size);
            } else {
                send_error(sv, slot, seq, ASYNC_ENOMEM, "no memory for the reply");
            }
        } else {
            char msg[ASYNC_FUTURE_MSG_MAX + 64];
            (void)!snprintf(msg, sizeof msg, "rank %d: %s", async__mpi_rank_,
                     err ? async_future_message(f) : "the job gave no reply");
            send_error(sv, slot, seq, err ? err : ASYNC_EIO, msg);
        }
        async_future_unref(f);
        any = true;
    }
    return any;
}

static bool test_sends(serve_t *sv)
{
    bool any = false;
    for (size_t i = 0; i < sv->npend;) {
        int done = 0;
        MPI_Test(&sv->pend[i].req, &done, MPI_STATUS_IGNORE);
        if (!done) {
            i++;
            continue;
        }
        async__free(sv->pend[i].buf);
        sv->pend[i] = sv->pend[--sv->npend];
        any = true;
    }
    return any;
}

/* The rank's process pool (async_mpi_opts_t.rank_processes), or NULL. */
static async_executor_t *make_pool(void)
{
    if (!async__mpi_opts.rank_processes) return NULL;
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_PROCESSES,
                               .workers = async__mpi_opts.rank_processes,
                               .max_job_bytes = async__mpi_opts.max_job_bytes};
    async_executor_t *pool;
    int r = async_executor_new(&pool, &o);
    if (r) {
        /* Serve on without isolation rather than leave rank 0 waiting. */
        fprintf(stderr, "libasync-mpi: rank %d: no process pool (%s); running jobs in the rank\n",
                async__mpi_rank_, async_strerror(r));
        return NULL;
    }
    return pool;
}

/* New replicated data reaches the pool's workers only through a fork: they
 * were forked before it arrived.  So the rank finishes the jobs the pool
 * runs (every job sent after the data comes after it, in MPI's order) and
 * forks a new pool, whose workers inherit the rank's copy. */
static void refork_pool(serve_t *sv, async_executor_t **pool, async__mpi_backoff_t *backoff)
{
    while (sv->nrun) {
        bool any = reap(sv);
        if (test_sends(sv)) any = true;
        if (any) async__mpi_active(backoff);
        else async__mpi_nap(backoff);
    }
    async_executor_free(*pool);
    *pool = make_pool();
}

void async__mpi_serve(void)
{
    serve_t sv = {0};
    async_executor_t *pool = make_pool();
    async__mpi_backoff_t backoff = {0};
    prctl(PR_SET_TIMERSLACK, 1000UL); /* as rank 0's progress thread */
    for (;;) {
        int flag = 0, count = 0;
        MPI_Status st;
        MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
        bool active = false;
        if (flag) {
            active = true;
            MPI_Get_count(&st, MPI_BYTE, &count);
            /* Received with memory or without (recv.c): the headers below
             * are read from hd, which is filled either way. */
            union {
                job_hdr_t job;
                share_hdr_t share;
            } hd;
            char *buf = async__mpi_recv_probed(0, st.MPI_TAG, count, &hd, sizeof hd);
            if (st.MPI_TAG == TAG_STOP) {
                async__free(buf);
                break;
            }
            if (st.MPI_TAG == TAG_SHARE && count == (int)sizeof(share_hdr_t)) {
                /* The data is the next message from rank 0 (the progress
                 * thread sends the two back to back, and MPI keeps their
                 * order, so a probe of any tag finds it first).  Without
                 * memory for it, without room in the table (an id at or
                 * past ASYNC_MPI_DATA_MAX), or of another size than the
                 * header says (0 included), it stays unknown here, and
                 * jobs that name it fail with a message saying so; the
                 * last two only a forged header gives.  A header whose
                 * next message is not its data (a forged one) is dropped
                 * and that message left to the loop: waiting for data
                 * that never comes stopped the rank for good, its jobs
                 * and rank 0's stop unread (mpi_failures/hostile). */
                MPI_Status ds;
                int dcount = 0;
                MPI_Probe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &ds);
                if (ds.MPI_TAG == TAG_SHARE_DATA) {
                    MPI_Get_count(&ds, MPI_BYTE, &dcount);
                    char *data = async__mpi_recv_probed(0, TAG_SHARE_DATA, dcount, NULL, 0);
                    if (!data || !dcount || hd.share.size != (uint64_t)dcount ||
                        async__mpi_data_put(hd.share.id, data))
                        async__free(data);
                    else if (pool) refork_pool(&sv, &pool, &backoff);
                }
            } else if (st.MPI_TAG == TAG_JOB && buf) {
                run_job(&sv, pool, buf, (size_t)count);
            } else if (st.MPI_TAG == TAG_JOB) {
                char msg[96];
                snprintf(msg, sizeof msg, "rank %d: no memory for the job's message (%d bytes)",
                         async__mpi_rank_, count);
                send_error(&sv, hd.job.slot, hd.job.seq, ASYNC_ENOMEM, msg);
            }
            async__free(buf);
        }
        if (pool && reap(&sv)) active = true;
        if (test_sends(&sv)) active = true;
        if (active) async__mpi_active(&backoff);
        else async__mpi_nap(&backoff);
    }
    /* Rank 0 sends stop only once every job has its reply. */
    while (sv.npend) {
        MPI_Wait(&sv.pend[sv.npend - 1].req, MPI_STATUS_IGNORE);
        async__free(sv.pend[--sv.npend].buf);
    }
    for (size_t i = 0; i < sv.nrun; i++) async_future_unref(sv.run[i].f);
    async_executor_free(pool);
    async__free(sv.pend);
    async__free(sv.run);
}
