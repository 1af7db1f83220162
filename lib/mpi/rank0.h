/* Rank 0's state of the MPI backend, shared by its two files only.
 * PRIVATE: never installed.
 *   backend.c     the driver slots, the progress thread, bcasts, start/join;
 *   direct_run.c  the direct path of async_executor_run.
 * The locking rules are at the top of backend.c. */
#ifndef ASYNC_MPI_RANK0_H
#define ASYNC_MPI_RANK0_H

#include <mpi.h>
#include <pthread.h>
#include "mpi_internal.h"

typedef struct sendreq {
    struct sendreq *next;
    int rank, tag;
    unsigned slot;       /* a job's driver slot */
    const void *buf;
    size_t len;
    bool owned;          /* free buf once sent */
    bool started;        /* req is under way: a direct run's send, handed
                            over at its deadline, only to be completed */
    struct bcast *bc;    /* the bcast this send belongs to, or NULL */
    MPI_Request req;
} sendreq_t;

/* One async_mpi_bcast: a header and the data for every serving rank.  Its
 * caller waits until `left` is 0, or until its deadline: then it sets
 * `abandoned` and the last send to complete frees the bcast (under mu). */
typedef struct bcast {
    unsigned left;
    bool abandoned;
    share_hdr_t h;
    sendreq_t q[];
} bcast_t;

typedef struct slot {
    struct mpib *b;
    unsigned index;
    int rank;      /* under b->mu: the rank its job in flight went to */
    bool awaiting; /* under b->mu: its job is sent and its reply still to come */
    uint64_t seq;  /* under b->mu: that job's seq, which its reply must echo */
    pthread_t tid;
    pthread_cond_t cv;
    char *reply; /* under b->mu */
    size_t reply_len;
    _Atomic bool ready; /* reply is set: lets the slot spin before it sleeps */
} slot_t;

typedef struct mpib {
    async_executor_t *ex;
    pthread_mutex_t mpi_mu; /* held around every MPI call */
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the progress thread waits here for sends */
    pthread_cond_t sent; /* bcast callers wait here */
    sendreq_t *head, **tail;
    _Atomic bool queued; /* head is non-empty: lets the progress thread spin */
    bool stop;
    /* Per rank (index 0 unused), under mu: jobs sent to it whose reply has
     * not come, by slots and direct runs.  A direct run takes only a rank
     * at 0, so that it never waits behind another job. */
    unsigned *busy;
    /* Per rank, under mu: a direct run gave up at its deadline and its
     * reply is still to come; the progress thread receives and drops it
     * (and only then is the rank idle).  The seq of that run's job, 0 for
     * none; orphans counts them. */
    uint64_t *orphan;
    unsigned orphans;
    unsigned directs;     /* direct runs under way */
    bool joining;         /* join() began: no new direct run */
    pthread_cond_t direct_idle; /* join waits here for directs == 0 */
    pthread_t progress;
    unsigned started; /* slot threads */
    slot_t s[];
} mpib_t;

/* direct_run.c: the backend's run hook (async__backend_ops_t.run): runs
 * job on an idle rank from the calling thread.  False when it did not (no
 * idle rank, sends queued, the pool closing, no memory): the caller takes
 * the ordinary path.  True with *code, *out_len and msg set as
 * async_executor_run sets them. */
bool async__mpi_run_direct(async_executor_t *ex, const async_job_t *job, int64_t deadline, void *out,
                           size_t *out_len, char *msg, size_t msg_cap, int *code);

#endif
