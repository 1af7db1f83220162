/* Fuzz target mpi-job: the two decoders of the MPI backend's wire format
 * (lib/mpi/mpi_internal.h), without MPI.  The input's first byte picks one:
 *
 *   even: a TAG_JOB message as a serving rank receives it, run by
 *         async__mpi_run (lib/mpi/run.c) against a registry of a few work
 *         and chunk functions and one datum.  Its reply must be one a rank
 *         can send (at most INT_MAX bytes) and rank 0 can read: decoded by
 *         async__mpi_reply_outcome it is never "malformed", it names the
 *         job's slot, and a job that the header describes exactly gets
 *         its function's outcome, not a refusal.
 *   odd:  a TAG_RESULT reply as rank 0 receives it, for a job of count
 *         rows of out_size bytes (the next three bytes), decoded by
 *         async__mpi_reply_outcome (lib/mpi/job_message.c).  Whatever the
 *         header claims, what the outcome points at lies inside the reply,
 *         within the job's rows, and a failed row is a row of the job.
 *
 * Rank 0 bounds what it asks of a rank (job_message.c: output under 2 GiB);
 * the harness models one that asks for at most 1 MiB of rows and 4096 rows,
 * so that an input is never slow only because it asks for much work. */
#include "fuzz.h"
#include "async.h"
#include "mpi/mpi_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

const char fuzz_target_name[] = "mpi-job";

/* init.c's, which needs MPI: this process plays rank 1 of 2. */
int async__mpi_rank_ = 1, async__mpi_size_ = 2;
async_mpi_opts_t async__mpi_opts;

static int echo(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)ctx;
    size_t n = in_size < out_size ? in_size : out_size;
    if (n) memcpy(out, in, n);
    return 0;
}

static int refuse(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)out, (void)out_size, (void)ctx;
    return async_work_fail(ASYNC_EINVAL, "refused %zu bytes", in_size);
}

/* A variable result of (first input byte) * 4099 bytes. */
static int grow(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)out, (void)out_size, (void)ctx;
    size_t n = in_size ? (size_t)((const unsigned char *)in)[0] * 4099 : 3;
    char *o = async_work_output(n);
    if (!o) return async_work_fail(ASYNC_ENOMEM, "no output of %zu bytes", n);
    memset(o, 'g', n);
    return 0;
}

static char datum[64] = "the registered datum";

static int with_ctx(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size;
    if (ctx != datum) return async_work_fail(ASYNC_EINVAL, "ctx %p", ctx);
    if (out_size) memcpy(out, datum, out_size < sizeof datum ? out_size : sizeof datum);
    return 0;
}

/* Fails the row whose first input byte is 0xee. */
static int chunk(const void *in, size_t in_size, void *out, size_t out_size, size_t count, size_t *failed,
                 void *ctx)
{
    (void)ctx;
    for (size_t k = 0; k < count; k++) {
        /* in is NULL for rows of no bytes. */
        const unsigned char *row = in_size ? (const unsigned char *)in + k * in_size : NULL;
        if (row && row[0] == 0xee) {
            *failed = k;
            return async_work_fail(ASYNC_EINVAL, "row %zu refused", k);
        }
        if (out_size) memset((char *)out + k * out_size, row ? row[0] : 0, out_size);
    }
    return 0;
}

static void setup(void)
{
    if (async_mpi_register("echo", echo) || async_mpi_register("refuse", refuse) ||
        async_mpi_register("grow", grow) || async_mpi_register("with_ctx", with_ctx) ||
        async_mpi_register_chunk("chunk", chunk) || async_mpi_register_data("datum", datum))
        fuzz_fail("registration failed");
    async__mpi_registry_freeze();
}

/* The outcome of a reply points only inside it. */
static void check_outcome(const char *reply, size_t len, size_t count, size_t out_size, const async__outcome_t *oc,
                          const char *rows, size_t rows_len)
{
    if (!memchr(oc->msg, '\0', sizeof oc->msg)) fuzz_fail("the outcome's message is not terminated");
    if (oc->err && (rows_len || oc->var_out)) fuzz_fail("a failed reply gave %zu row bytes, var %p", rows_len, oc->var_out);
    if (oc->err && count && oc->failed_row >= count)
        fuzz_fail("failed row %zu of a job of %zu rows", (size_t)oc->failed_row, count);
    if (rows_len) {
        if (rows < reply || rows > reply + len || rows_len > (size_t)(reply + len - rows))
            fuzz_fail("rows [%p, +%zu) outside the reply [%p, +%zu)", (const void *)rows, rows_len,
                      (const void *)reply, len);
        if (rows_len > count * out_size) fuzz_fail("%zu row bytes for %zu rows of %zu", rows_len, count, out_size);
    }
    if (oc->var_out) {
        const char *v = oc->var_out;
        if (v < reply || v > reply + len || oc->var_size > (size_t)(reply + len - v))
            fuzz_fail("a variable result [%p, +%zu) outside the reply [%p, +%zu)", oc->var_out, oc->var_size,
                      (const void *)reply, len);
    }
}

static void fuzz_reply(const uint8_t *data, size_t size)
{
    if (size < 3) return;
    size_t count = (size_t)data[0] % 17, out_size = data[1] | (size_t)(data[2] & 0x0f) << 8;
    size_t len = size - 3;
    /* A copy of exactly len bytes, so that reading past it is caught. */
    char *reply = malloc(len ? len : 1);
    if (len) memcpy(reply, data + 3, len);
    async__outcome_t oc;
    const char *rows;
    size_t rows_len;
    async__mpi_reply_outcome(reply, len, count, out_size, &oc, &rows, &rows_len);
    check_outcome(reply, len, count, out_size, &oc, rows, rows_len);
    free(reply);
}

static void fuzz_job(const uint8_t *data, size_t size, unsigned mode)
{
    job_hdr_t h = {0};
    if (size >= sizeof h) {
        memcpy(&h, data, sizeof h);
        /* What rank 0 may ask: see the top of the file. */
        if (h.count > 4096 || (h.out_size && h.count * h.out_size > (1u << 20)) || h.out_size > (1u << 20)) return;
    }
    char *msg = malloc(size ? size : 1);
    if (size) memcpy(msg, data, size);
    int64_t deadline = mode & 2 ? async_now() - 1 : ASYNC_FOREVER;
    char *reply = NULL;
    size_t len = 0;
    int r = async__mpi_run(msg, size, deadline, &reply, &len);
    if (r && r != ASYNC_ENOMEM) fuzz_fail("async__mpi_run: %s", async_errname(r));
    if (!r) {
        if (len > INT_MAX) fuzz_fail("a reply of %zu bytes: more than one MPI message", len);
        if (len < sizeof(res_hdr_t)) fuzz_fail("a reply of %zu bytes, shorter than its header", len);
        res_hdr_t rh;
        memcpy(&rh, reply, sizeof rh);
        if (size >= sizeof h && rh.slot != h.slot) fuzz_fail("the reply names slot %u for slot %u", rh.slot, h.slot);
        size_t count = size >= sizeof h ? (size_t)h.count : 0, out_size = size >= sizeof h ? (size_t)h.out_size : 0;
        async__outcome_t oc;
        const char *rows;
        size_t rows_len;
        async__mpi_reply_outcome(reply, len, count, out_size, &oc, &rows, &rows_len);
        if (oc.err == ASYNC_EIO) fuzz_fail("rank 0 cannot read the rank's reply: %s", oc.msg);
        check_outcome(reply, len, count, out_size, &oc, rows, rows_len);
        /* A job the header describes exactly, naming a registered
         * function, runs: its outcome is never the refusal. */
        uint64_t in_bytes;
        bool exact = size >= sizeof h && h.count && !__builtin_mul_overflow(h.count, h.in_size, &in_bytes) &&
                     size - sizeof h == in_bytes &&
                     (h.chunked ? async__mpi_chunk_at(h.fn) != NULL : async__mpi_fn_at(h.fn) != NULL) &&
                     (!h.ctx || async__mpi_ctx_at(h.ctx));
        if (exact && oc.err == ASYNC_EINVAL && strstr(oc.msg, "malformed"))
            fuzz_fail("a well-formed job was refused: %s", oc.msg);
        async__free(reply);
    }
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    if (size < 1) return 0;
    unsigned mode = data[0];
    if (mode & 1) fuzz_reply(data + 1, size - 1);
    else fuzz_job(data + 1, size - 1, mode);
    return 0;
}
