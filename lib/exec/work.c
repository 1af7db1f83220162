/* The work-function side of the executors: runs a job's rows on the calling
 * thread (a worker thread, or inside a worker process), and gives the work
 * function its per-call services (async_work_fail, async_work_output,
 * async_work_worker, async_work_deadline) through a thread-local frame.
 * Nothing here takes a lock or allocates, except async_work_output growing a
 * variable-size result. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "backend_internal.h"
#include "future_internal.h"

/* What a variable-size result may use (async__rows_run's grow, grow_arg and
 * max_result); only a process worker has one, so a frame points to it and a
 * thread worker's frame spares the stores. */
typedef struct grow_opts {
    void *(*fn)(void *, size_t);
    void *arg;
    size_t max_result;
} grow_opts_t;

/* The frame is set up for every job before its function is called, and its
 * services are rare: so it holds pointers to what the job already has (the
 * rows, the outcome and its message) instead of copies. */
typedef struct frame {
    const async__rows_t *rows; /* NULL while an initializer runs */
    async__outcome_t *oc;
    const grow_opts_t *grow;   /* NULL: async__malloc, no cap */
    int64_t deadline;
    size_t row, msg_row;
    unsigned worker;
    bool var_ok;
} frame_t;

static _Thread_local frame_t *tls_frame ASYNC_TLS;

static int norm(int code) { return code > 0 ? ASYNC_EWORK : code; }

int async_work_fail(int code, const char *fmt, ...)
{
    frame_t *fr = tls_frame;
    if (fr && fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fr->oc->msg, ASYNC_FUTURE_MSG_MAX, fmt, ap);
        va_end(ap);
        fr->msg_row = fr->row;
    }
    return code == 0 ? ASYNC_EWORK : norm(code);
}

void *async_work_output(size_t size)
{
    static char empty[1];
    frame_t *fr = tls_frame;
    if (!fr || !fr->rows) return NULL;
    async__outcome_t *oc = fr->oc;
    const async__rows_t *rows = fr->rows;
    if (size <= rows->out_size) {
        if (oc->var_out && oc->var_owned) async__free(oc->var_out);
        oc->var_out = NULL;
        oc->var_size = 0;
        oc->result_size = size;
        return rows->out ? rows->out + fr->row * rows->out_size : empty;
    }
    const grow_opts_t *g = fr->grow;
    if (!fr->var_ok || (g && g->max_result && size > g->max_result)) return NULL;
    void *buf = g && g->fn ? g->fn(g->arg, size) : async__malloc(size);
    if (!buf) return NULL;
    if (oc->var_out && oc->var_owned) async__free(oc->var_out);
    oc->var_out = buf;
    oc->var_size = size;
    oc->var_owned = !(g && g->fn);
    return buf;
}

int async_work_worker(void) { return tls_frame ? (int)tls_frame->worker : -1; }

int64_t async_work_deadline(void) { return tls_frame ? tls_frame->deadline : ASYNC_FOREVER; }

/* The rows after the first, out of line: a single submit runs one row, and
 * the loop's set-up cost more than its one call. */
static __attribute__((noinline)) void rows_rest(const async__rows_t *rows, frame_t *fr,
                                                async__outcome_t *oc)
{
    /* The row loop is most of a map's time beside the work function, so it
     * keeps to one store a row (the row's index, which the frame's services
     * need; they find the row's output from it) and steps its pointers as
     * integers, by 0 for an absent array: stepping a null pointer is
     * undefined, and testing for one cost four instructions a row.  Bounds
     * and arguments are in locals: the work function is opaque, so fields
     * of *rows would be reloaded after every call. */
    const async_work_fn fn = rows->fn;
    void *const ctx = rows->ctx;
    const size_t in_size = rows->in_size, out_size = rows->out_size, count = rows->count;
    const uintptr_t in_step = rows->in ? in_size : 0, out_step = rows->out ? out_size : 0;
    uintptr_t in = (uintptr_t)rows->in + in_step, out = (uintptr_t)rows->out + out_step;
    for (size_t i = 1; i < count; i++, in += in_step, out += out_step) {
        fr->row = i;
        int r = fn((const void *)in, in_size, (void *)out, out_size, ctx);
        if (__builtin_expect(r != 0, 0)) {
            oc->err = norm(r);
            oc->failed_row = i;
            if (fr->msg_row != i) oc->msg[0] = '\0'; /* a message left by an earlier row */
            return;
        }
    }
}

/* A chunk function's one call for all the rows.  The frame has no rows, so
 * async_work_output finds none to hand out: the results go to out. */
static __attribute__((noinline)) void rows_chunk(const async__rows_t *rows, frame_t *fr,
                                                 async__outcome_t *oc)
{
    const async__chunk_call_t *call = rows->ctx;
    size_t failed = 0;
    fr->rows = NULL;
    int r = call->fn(rows->in, rows->in_size, rows->out, rows->out_size, rows->count, &failed,
                     call->ctx);
    if (__builtin_expect(r != 0, 0)) {
        oc->err = norm(r);
        /* Out of range: the run's first item, as documented.  Never a
         * later one: the rows before the failing one count as written, and
         * the process backend copies them back into the caller's array. */
        oc->failed_row = failed < rows->count ? failed : 0;
    }
}

void async__rows_run(const async__rows_t *rows, unsigned worker, int64_t deadline, bool var_ok,
                     void *(*grow)(void *grow_arg, size_t size), void *grow_arg, size_t max_result,
                     async__outcome_t *oc)
{
    grow_opts_t g;
    frame_t fr;
    fr.rows = rows;
    fr.oc = oc;
    fr.grow = NULL; /* a thread worker's: it has no grow and no cap */
    if (__builtin_expect(grow || max_result, 0)) {
        g = (grow_opts_t){grow, grow_arg, max_result};
        fr.grow = &g;
    }
    fr.deadline = deadline;
    fr.row = 0;
    fr.msg_row = SIZE_MAX;
    fr.worker = worker;
    fr.var_ok = var_ok && rows->count == 1;
    oc->err = 0;
    oc->failed_row = 0;
    oc->result_size = rows->out_size;
    oc->msg[0] = '\0';
    oc->var_out = NULL;
    oc->var_size = 0;
    oc->var_owned = false;
    frame_t *saved = tls_frame;
    tls_frame = &fr;
    if (!rows->fn) {
        if (rows->count) rows_chunk(rows, &fr, oc);
    } else if (rows->count) {
        /* Row 0 is called here, the rest in rows_rest: a failing row 0 owns
         * whatever message there is, as the message was cleared above. */
        int r = rows->fn(rows->in, rows->in_size, rows->out, rows->out_size, rows->ctx);
        if (__builtin_expect(r != 0, 0)) oc->err = norm(r);
        else if (rows->count > 1) rows_rest(rows, &fr, oc);
    }
    if (oc->err && oc->var_out && oc->var_owned) {
        async__free(oc->var_out);
        oc->var_out = NULL;
    }
    tls_frame = saved;
}

int async__run_init(async_executor_t *ex, unsigned worker, char msg[ASYNC_FUTURE_MSG_MAX])
{
    msg[0] = '\0';
    if (!ex->opts.initializer) return 0;
    async__outcome_t oc;
    oc.msg[0] = '\0';
    frame_t fr = {.deadline = ASYNC_FOREVER, .msg_row = SIZE_MAX, .worker = worker, .oc = &oc};
    frame_t *saved = tls_frame;
    tls_frame = &fr;
    int r = ex->opts.initializer(ex->opts.init_ctx);
    tls_frame = saved;
    if (r) memcpy(msg, oc.msg, ASYNC_FUTURE_MSG_MAX);
    return norm(r);
}
