/* Rank 0's half of the wire format (mpi_internal.h): the TAG_JOB message
 * of a job, and the outcome a TAG_RESULT or TAG_DIRECT reply carries.  The
 * serving ranks' half is in run.c. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "mpi_internal.h"

/* The last seq given; 0 is never one. */
static _Atomic uint64_t last_seq;

/* Builds the message of a job of rows for slot (DIRECT_SLOT for a direct
 * run); on error fills why. */
int async__mpi_job_message(uint32_t slot, const async__rows_t *rw, bool var_ok, int64_t deadline, char **out,
                           size_t *len, char why[ASYNC_FUTURE_MSG_MAX])
{
    job_hdr_t h = {.slot = slot, .var_ok = var_ok, .count = rw->count,
                   .in_size = rw->in_size, .out_size = rw->out_size, .remaining = NO_DEADLINE};
    /* A chunk function's rows carry it and the real ctx in their ctx. */
    const async__chunk_call_t *call = rw->fn ? NULL : rw->ctx;
    void *fn = call ? (void *)call->fn : (void *)rw->fn;
    void *ctx = call ? call->ctx : rw->ctx;
    h.chunked = call != NULL;
    if (call ? async__mpi_chunk_index(call->fn, &h.fn) : async__mpi_fn_index(rw->fn, &h.fn)) {
        Dl_info di;
        const char *name = dladdr(fn, &di) && di.dli_sname ? di.dli_sname : "(no symbol)";
        snprintf(why, ASYNC_FUTURE_MSG_MAX,
                 call ? "chunk function %s at %p is not registered for MPI: call "
                        "async_mpi_register_chunk or ASYNC_MPI_CHUNK on every rank"
                      : "work function %s at %p is not registered for MPI: call async_mpi_register or "
                        "ASYNC_MPI_WORK on every rank",
                 name, fn);
        return ASYNC_EINVAL;
    }
    if (async__mpi_ctx_index(ctx, &h.ctx)) {
        snprintf(why, ASYNC_FUTURE_MSG_MAX,
                 "ctx %p is neither NULL nor data registered with async_mpi_register_data or "
                 "async_mpi_bcast",
                 ctx);
        return ASYNC_EINVAL;
    }
    size_t in_bytes = rw->in ? rw->in_size * rw->count : 0;
    if (!rw->in) h.in_size = 0;
    if (in_bytes > (size_t)INT32_MAX - sizeof h ||
        (rw->out_size && rw->count > ((size_t)INT32_MAX - 512) / rw->out_size)) {
        snprintf(why, ASYNC_FUTURE_MSG_MAX, "the job's input or output exceeds 2 GiB, MPI's limit");
        return ASYNC_EINVAL;
    }
    if (deadline != ASYNC_FOREVER) {
        /* Compared before subtracting: deadline - now overflows for a
         * deadline near INT64_MIN, which has long passed. */
        int64_t now = async_now();
        h.remaining = deadline > now ? deadline - now : 1;
    }
    char *m = async__malloc(sizeof h + in_bytes);
    if (!m) {
        snprintf(why, ASYNC_FUTURE_MSG_MAX, "no memory for the job's message");
        return ASYNC_ENOMEM;
    }
    h.seq = atomic_fetch_add_explicit(&last_seq, 1, memory_order_relaxed) + 1;
    memcpy(m, &h, sizeof h);
    if (in_bytes) memcpy(m + sizeof h, rw->in, in_bytes);
    *out = m;
    *len = sizeof h + in_bytes;
    return 0;
}

/* Fills oc from a reply (NULL: rank 0 had no memory to receive it) to a
 * job of count rows of out_size bytes, and
 * points *rows at the output rows in it (*rows_len bytes, at most count *
 * out_size; 0 for a failed job or a variable result, which oc->var_out
 * points at instead). */
void async__mpi_reply_outcome(const char *reply, size_t len, size_t count, size_t out_size, async__outcome_t *oc,
                              const char **rows, size_t *rows_len)
{
    memset(oc, 0, sizeof *oc);
    *rows = NULL;
    *rows_len = 0;
    res_hdr_t h;
    if (!reply) {
        oc->err = ASYNC_ENOMEM;
        snprintf(oc->msg, sizeof oc->msg, "rank 0: no memory for a job's reply");
        return;
    }
    if (len < sizeof h) {
        oc->err = ASYNC_EIO;
        snprintf(oc->msg, sizeof oc->msg, "a malformed reply (%zu bytes)", len);
        return;
    }
    memcpy(&h, reply, sizeof h);
    size_t ml = h.msg_len < sizeof oc->msg - 1 ? h.msg_len : sizeof oc->msg - 1;
    /* Compared part by part: the sum of the header's two sizes can wrap
     * (data_size is 64 bits) onto len, and then data_size would point far
     * past the reply. */
    if (h.msg_len > len - sizeof h || h.data_size != len - sizeof h - h.msg_len) {
        oc->err = ASYNC_EIO;
        snprintf(oc->msg, sizeof oc->msg, "a malformed reply (%zu bytes)", len);
        return;
    }
    memcpy(oc->msg, reply + sizeof h, ml);
    oc->msg[ml] = '\0';
    oc->err = h.err;
    oc->failed_row = h.failed_row < count ? h.failed_row : 0; /* a row of this job */
    oc->result_size = h.result_size;
    const char *data = reply + sizeof h + h.msg_len;
    if (h.err) return;
    if (h.var) {
        oc->var_out = (void *)data; /* copied by async__exec_finish */
        oc->var_size = h.data_size;
        oc->var_owned = false;
        return;
    }
    size_t cap = out_size * count;
    size_t n = h.data_size < cap ? h.data_size : cap;
    *rows = data;
    *rows_len = n;
    if (count == 1) oc->result_size = n;
}

