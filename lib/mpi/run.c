/* Runs one job message on the calling thread of a serving rank (its serve
 * loop, or a worker process of its pool) and builds the result message.
 * The message comes from rank 0 of the same program, but its sizes are
 * still checked against the bytes received before anything is read. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "mpi_internal.h"
#include "exec/future_internal.h"

#define MSG_ROOM ASYNC_FUTURE_MSG_MAX
/* The most output a reply can carry: a message is at most INT_MAX bytes
 * (MPI's count), and the reply holds its header and room for a message
 * too.  Rank 0 never sends a job whose rows need more (job_message.c); a
 * variable result is capped here, where async_work_output refuses more. */
#define REPLY_ROOM ((size_t)INT32_MAX - sizeof(res_hdr_t) - MSG_ROOM)

bool async__mpi_nap(async__mpi_backoff_t *b)
{
    int64_t now = async_now();
    if (!b->idle_since) b->idle_since = now;
    bool long_jobs = b->job_ns >= ASYNC__MPI_LONG_JOB_NS;
    if (!long_jobs && now - b->idle_since < ASYNC__MPI_SPIN_NS) {
        async__cpu_relax();
        return true;
    }
    /* Idle for long, the poller sleeps longer: latency matters while jobs
     * come and go, CPU while nothing does. */
    long cap = now - b->idle_since > ASYNC__MPI_LONG_IDLE_NS ? 2000000 : ASYNC__MPI_NAP_MAX_NS;
    if (long_jobs && b->job_ns / 128 > cap) cap = b->job_ns / 128 < 2000000 ? (long)(b->job_ns / 128) : 2000000;
    long ns = 20000L << b->step;
    if (ns > cap) ns = cap;
    else b->step++;
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
    return false;
}

int async__mpi_error_reply(uint32_t slot, uint64_t seq, int err, const char *msg, char **reply, size_t *len)
{
    size_t ml = msg ? strnlen(msg, MSG_ROOM - 1) : 0;
    char *r = async__malloc(sizeof(res_hdr_t) + ml + 1);
    if (!r) return ASYNC_ENOMEM;
    res_hdr_t h = {.slot = slot, .err = err, .msg_len = (uint32_t)ml, .seq = seq};
    memcpy(r, &h, sizeof h);
    if (ml) memcpy(r + sizeof h, msg, ml);
    *reply = r;
    *len = sizeof h + ml;
    return 0;
}

int async__mpi_run(const char *msg, size_t len, int64_t deadline, char **reply, size_t *reply_len)
{
    job_hdr_t h;
    if (len < sizeof h)
        return async__mpi_error_reply(0, 0, ASYNC_EINVAL, "short job message", reply, reply_len);
    memcpy(&h, msg, sizeof h);
    char why[MSG_ROOM];
    async_work_fn fn = h.chunked ? NULL : async__mpi_fn_at(h.fn);
    async__chunk_call_t call = {h.chunked ? async__mpi_chunk_at(h.fn) : NULL, NULL};
    void *ctx = async__mpi_ctx_at(h.ctx);
    if (h.ctx > ASYNC_MPI_DATA_MAX || (h.ctx && !ctx)) {
        /* Data past the bound was dropped on arrival (serve.c): say so. */
        if (h.ctx > ASYNC_MPI_DATA_MAX)
            snprintf(why, sizeof why, "rank %d: ctx %u is past the %d data a run holds (ASYNC_MPI_DATA_MAX)",
                     async__mpi_rank_, h.ctx, ASYNC_MPI_DATA_MAX);
        else
            snprintf(why, sizeof why, "rank %d: ctx %u is no data this rank holds", async__mpi_rank_, h.ctx);
        return async__mpi_error_reply(h.slot, h.seq, ASYNC_EINVAL, why, reply, reply_len);
    }
    if ((!fn && !call.fn) || (h.ctx && !ctx) || h.count == 0 ||
        (h.in_size && h.count > (len - sizeof h) / h.in_size) ||
        len - sizeof h != h.count * h.in_size ||
        (h.out_size && h.count > REPLY_ROOM / h.out_size)) {
        snprintf(why, sizeof why, "rank %d: malformed job message (%zu bytes, fn %u, ctx %u)",
                 async__mpi_rank_, len, h.fn, h.ctx);
        return async__mpi_error_reply(h.slot, h.seq, ASYNC_EINVAL, why, reply, reply_len);
    }
    size_t out_bytes = h.count * h.out_size, off = sizeof(res_hdr_t) + MSG_ROOM;
    char *r = async__malloc(off + out_bytes);
    if (!r) return async__mpi_error_reply(h.slot, h.seq, ASYNC_ENOMEM, "no memory for the output", reply,
                                          reply_len);
    call.ctx = ctx;
    async__rows_t rows = {fn, fn ? ctx : &call, h.in_size ? msg + sizeof h : NULL, h.in_size,
                          out_bytes ? r + off : NULL, h.out_size, h.count};
    async__outcome_t oc;
    async__rows_run(&rows, (unsigned)async__mpi_rank_ - 1, deadline, h.var_ok, NULL, NULL, REPLY_ROOM, &oc);
    res_hdr_t rh = {.slot = h.slot, .err = oc.err, .failed_row = oc.failed_row,
                    .result_size = oc.result_size, .seq = h.seq};
    const char *data = r + off;
    size_t data_size = oc.err ? 0 : out_bytes;
    if (!oc.err && oc.var_out) { /* a variable result replaces the rows */
        char *big = async__malloc(off + oc.var_size);
        if (big) {
            memcpy(big + off, oc.var_out, oc.var_size);
            async__free(r);
            r = big;
            data_size = oc.var_size;
            rh.var = 1;
        } else {
            rh.err = ASYNC_ENOMEM;
            data_size = 0;
            snprintf(oc.msg, sizeof oc.msg, "rank %d: no memory for the result", async__mpi_rank_);
        }
        data = r + off;
        if (oc.var_owned) async__free(oc.var_out);
    } else if (!oc.err && h.count == 1 && oc.result_size < out_bytes) {
        data_size = oc.result_size; /* async_work_output shrank a submit's result */
    }
    rh.msg_len = (uint32_t)strnlen(oc.msg, MSG_ROOM - 1);
    rh.data_size = data_size;
    memcpy(r, &rh, sizeof rh);
    memcpy(r + sizeof rh, oc.msg, rh.msg_len);
    memmove(r + sizeof rh + rh.msg_len, data, data_size);
    *reply = r;
    *reply_len = sizeof rh + rh.msg_len + data_size;
    return 0;
}
