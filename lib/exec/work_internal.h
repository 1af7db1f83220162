/* The work-function side's frame, shared by work.c and the thread worker's
 * run of a single job (executor.c).  PRIVATE: never installed.
 *
 * A frame is set up for every job before its function is called, and its
 * services (async_work_fail, async_work_output, async_work_worker,
 * async_work_deadline) are rare: so it holds pointers to what the job
 * already has (the rows, the outcome and its message) instead of copies. */
#ifndef ASYNC_WORK_INTERNAL_H
#define ASYNC_WORK_INTERNAL_H

#include <stdint.h>
#include "backend_internal.h"
#include "future_internal.h"

/* What a variable-size result may use (async__rows_run's grow, grow_arg and
 * max_result); only a process worker has one, so a frame points to it and a
 * thread worker's frame spares the stores. */
typedef struct async__grow_opts {
    void *(*fn)(void *, size_t);
    void *arg;
    size_t max_result;
} async__grow_opts_t;

typedef struct async__frame {
    const async__rows_t *rows;      /* NULL while an initializer runs */
    async__outcome_t *oc;
    const async__grow_opts_t *grow; /* NULL: async__malloc, no cap */
    int64_t deadline;
    size_t row, msg_row;            /* msg_row: the row that left oc->msg, or SIZE_MAX */
    unsigned worker;
    bool var_ok;
} async__frame_t;

/* The frame of the job running on this thread, or NULL. */
extern _Thread_local async__frame_t *async__tls_frame ASYNC_TLS;

/* A work function's code as an outcome's: positive codes are ASYNC_EWORK. */
static inline int async__work_norm(int code) { return code > 0 ? ASYNC_EWORK : code; }

/* async__rows_run of one row of a work function (rows->fn set, rows->count
 * 1) on a thread worker (no grow, no cap), inlined into the thread worker's
 * run (async__exec_run): the frame's set-up and the outcome's stores are
 * most of a trivial job's run, and the call's saved registers as much
 * again.  Fills *oc as async__rows_run does, but for failed_row and msg,
 * which it sets only when oc->err is set (nothing reads them otherwise). */
static inline __attribute__((always_inline)) void
async__rows_run_one(const async__rows_t *rows, unsigned worker, int64_t deadline, bool var_ok,
                    async__outcome_t *oc)
{
    async__frame_t fr;
    fr.rows = rows;
    fr.oc = oc;
    fr.grow = NULL;
    fr.deadline = deadline;
    fr.row = 0;
    fr.msg_row = SIZE_MAX;
    fr.worker = worker;
    fr.var_ok = var_ok;
    oc->err = 0;
    oc->result_size = rows->out_size;
    oc->var_out = NULL;
    async__frame_t *saved = async__tls_frame;
    async__tls_frame = &fr;
    int r = rows->fn(rows->in, rows->in_size, rows->out, rows->out_size, rows->ctx);
    async__tls_frame = saved;
    if (__builtin_expect(r != 0, 0)) {
        oc->err = async__work_norm(r);
        oc->failed_row = 0;
        if (fr.msg_row != 0) oc->msg[0] = '\0'; /* async_work_fail left none */
        if (oc->var_out && oc->var_owned) async__free(oc->var_out);
        oc->var_out = NULL;
    }
}

/* The thread worker's run of a job it took (async__exec_take): its rows on
 * this thread, then async__exec_finish.  The job's deadline is not watched
 * while it runs (the caller watches a job for which async__exec_expirable
 * says so, and runs it with async__rows_run itself). */
void async__exec_run(async_executor_t *ex, unsigned worker, async__job_t *job);

#endif
