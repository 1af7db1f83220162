/* Executor internals shared by executor.c and imap.c only (backends use
 * executor_internal.h).  PRIVATE: never installed. */
#ifndef ASYNC_EXECUTOR_PRIV_H
#define ASYNC_EXECUTOR_PRIV_H

#include "executor_internal.h"

enum { JOB_SUBMIT = 1, JOB_MAP, JOB_IMAP };

typedef struct bucket {
    int prio;
    async__job_t *head, *tail;
    struct bucket *next;
} bucket_t;

typedef struct async__exec_priv {
    pthread_mutex_t mu;     /* guards everything below but join state */
    pthread_cond_t work;    /* idle workers wait here */
    pthread_cond_t room;    /* submitters wait here while the queue is full */
    bucket_t zero;          /* priority 0, always in the list */
    bucket_t *buckets;      /* highest priority first */
    size_t queued;
    unsigned idle;          /* workers waiting on `work` */
    unsigned wakes;         /* signals sent that no worker has consumed yet */
    unsigned room_waiters;
    bool closed;
    int broken;             /* ASYNC_EINIT once an initializer failed */
    char broken_msg[ASYNC_FUTURE_MSG_MAX + 64];
    pthread_mutex_t join_mu;
    bool joined;
} exec_priv_t;

/* A map's state, in its future's extra bytes, followed by its chunks. */
typedef struct map_state {
    async_future_t *f;
    pthread_mutex_t mu;     /* guards remaining and the failure */
    size_t remaining;       /* chunks not finished */
    int fail_code;
    size_t fail_index;
    char msg[ASYNC_FUTURE_MSG_MAX];
    _Atomic bool abandoned; /* skip chunks not started yet */
    async_future_cb on_success, on_error;
    void *cb_arg;
    async__job_t jobs[];
} map_state_t;

int async__exec_enqueue(async_executor_t *ex, async__job_t *jobs, size_t n, int how,
                        int64_t deadline);
size_t async__default_chunksize(const async_executor_t *ex, size_t n);
int async__cond_wait_dl(pthread_cond_t *c, pthread_mutex_t *m, int64_t deadline);

/* imap.c: called when a chunk is taken (false: skip it, already finished)
 * and when it is finished. */
bool async__imap_chunk_start(async__job_t *job);
void async__imap_chunk_done(async__job_t *job, int err, size_t row, const char *msg);

#endif
