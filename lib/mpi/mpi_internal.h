/* Shared by the files of the MPI backend only.  PRIVATE: never installed.
 *
 * The wire format between rank 0 and a serving rank, all MPI_BYTE on
 * MPI_COMM_WORLD, in the order MPI keeps between one pair of ranks:
 *   TAG_JOB    0 -> r: job_hdr_t, then count * in_size input bytes.
 *   TAG_RESULT r -> 0: res_hdr_t, then msg_len message bytes, then data_size
 *              output bytes (count * out_size rows, or a submit's result).
 *   TAG_DIRECT r -> 0: the same, for a job whose slot is DIRECT_SLOT: the
 *              reply of a direct run (async_executor_run on a plain thread),
 *              which that thread receives itself; the progress thread never
 *              probes this tag.
 *   TAG_SHARE  0 -> r: share_hdr_t, then at once TAG_SHARE_DATA: the bytes.
 *   TAG_STOP   0 -> r: empty; the rank finalizes and exits.
 * Every rank runs the same program, so the structs have the same layout.
 * A reply echoes its job's seq; its receiver (a driver slot, a direct run)
 * takes only the one it waits for.  A share's data is the very next
 * message after its header (the rank drops a header whose next message is
 * not). */
#ifndef ASYNC_MPI_INTERNAL_H
#define ASYNC_MPI_INTERNAL_H

#include <stdint.h>
#include <string.h>
#include "exec/backend_internal.h"
#include "async/mpi.h"

enum { TAG_JOB = 1, TAG_RESULT, TAG_SHARE, TAG_SHARE_DATA, TAG_STOP, TAG_DIRECT };

/* job_hdr_t.slot of a direct run: its reply goes back as TAG_DIRECT. */
#define DIRECT_SLOT UINT32_MAX

/* The tag a serving rank answers a job of this slot with. */
static inline int async__mpi_reply_tag(uint32_t slot)
{
    return slot == DIRECT_SLOT ? TAG_DIRECT : TAG_RESULT;
}

#define NO_DEADLINE INT64_MAX

/* The most async_mpi_opts_t.rank_processes may ask: a process pool takes at
 * most 4096 workers (lib/exec/procpool/procpool.c). */
#define ASYNC__MPI_MAX_RANK_PROCESSES 4096u

typedef struct job_hdr {
    uint32_t slot;      /* rank 0's driver slot, echoed in the result */
    uint32_t fn;        /* index in the sorted registry */
    uint32_t ctx;       /* 0: NULL; else data index + 1 */
    uint16_t var_ok;
    uint16_t chunked;   /* fn is a chunk function (async_map_t.chunk_fn) */
    uint64_t count, in_size, out_size;
    int64_t remaining;  /* ns to the deadline when sent, NO_DEADLINE for none */
    uint64_t seq;       /* rank 0's number for this job, never 0, echoed in its reply */
    uint64_t pad;       /* 64 bytes: input rows after it stay 16-aligned */
} job_hdr_t;

typedef struct res_hdr {
    uint32_t slot;
    int32_t err;
    uint64_t failed_row;
    uint64_t result_size; /* as async__outcome_t */
    uint64_t data_size;   /* output bytes after the message */
    uint32_t var;         /* the data is a variable-size result */
    uint32_t msg_len;
    /* The job's seq (0 when its message was too short to carry one): a
     * reply whose seq is not the one its receiver waits for answers no job
     * of rank 0's (only a forged message has one: a slot or a direct run
     * took it as its answer, and then the real one as its next job's) and
     * is dropped.  48 bytes: rows written after it stay 16-aligned. */
    uint64_t seq;
} res_hdr_t;

typedef struct share_hdr {
    uint32_t id;        /* data index */
    uint64_t size;
} share_hdr_t;

/* Polling without burning a CPU (Open MPI has no wait that does not spin):
 * after activity a poller spins for SPIN_NS, then sleeps between polls,
 * 20 us doubling up to NAP_MAX_NS.  The spin covers the gap between a reply
 * and the next job of a loop of submits (measured here: 300 us gave an
 * 80 us round trip, 50 us gave 900 us, because each sleeping poller then
 * waited for a CPU); the cap bounds the latency a sleeping poller adds.
 * After LONG_IDLE_NS without activity the cap is 2 ms, so that an idle
 * rank wakes 500 times a second, under 1% of a CPU (test-mpi's idle case
 * measures it). */
#define ASYNC__MPI_SPIN_NS 300000
#define ASYNC__MPI_LONG_IDLE_NS 100000000
#define ASYNC__MPI_NAP_MAX_NS 200000
/* A poller that knows its jobs run long (job_ns, the typical time from
 * sending a job to its reply, at least LONG_JOB_NS) skips the spin, which
 * would take a CPU from the ranks computing them, and lets its naps grow to
 * job_ns / 128 (at most 2 ms): a reply then waits about 0.4% of its job's
 * time for the poller to wake. */
#define ASYNC__MPI_LONG_JOB_NS (20 * (int64_t)ASYNC__MPI_SPIN_NS)
typedef struct async__mpi_backoff {
    int64_t idle_since; /* 0: active */
    unsigned step;
    int64_t job_ns;     /* 0: unknown */
} async__mpi_backoff_t;

static inline void async__mpi_active(async__mpi_backoff_t *b)
{
    b->idle_since = 0;
    b->step = 0;
}

/* One idle poll's pause; true while still spinning. */
bool async__mpi_nap(async__mpi_backoff_t *b);

/* recv.c: receives the message from source with tag that a probe found
 * (count bytes, from MPI_Get_count) and returns it in an async__malloc'd
 * buffer of count bytes (1 when count is 0); its first hdr_size bytes (all
 * of it when it is shorter, the rest of hdr zeroed) are copied to hdr.
 * Without memory for the buffer the message is still received, into a
 * scratch area, and dropped, so that it never waits in MPI's queue where
 * every later probe would find it again: NULL is returned, hdr filled all
 * the same, and the caller fails the job the header names with
 * ASYNC_ENOMEM.  The caller serializes MPI calls as everywhere (rank 0:
 * under mpi_mu). */
char *async__mpi_recv_probed(int source, int tag, int count, void *hdr, size_t hdr_size);

/* registry.c */
/* Sorts the registry and freezes it; returns its hash (names, in order). */
uint64_t async__mpi_registry_freeze(void);
int async__mpi_fn_index(async_work_fn fn, uint32_t *index);
async_work_fn async__mpi_fn_at(uint32_t index);
/* The same for chunk functions, which share the table and its indexes. */
int async__mpi_chunk_index(async_chunk_fn fn, uint32_t *index);
async_chunk_fn async__mpi_chunk_at(uint32_t index);
/* ctx -> 0 (NULL) or data index + 1; ASYNC_EINVAL when unknown. */
int async__mpi_ctx_index(const void *ctx, uint32_t *index);
void *async__mpi_ctx_at(uint32_t index);
/* Rank 0: appends replicated data (the caller's pointer); returns its index
 * or a negative error (ASYNC_EFULL with ASYNC_MPI_DATA_MAX entries). */
int async__mpi_data_add(void *data, bool owned);
/* A serving rank: puts its own copy (owned, freed with the registry) of
 * replicated data at index id; ASYNC_EINVAL (data not taken) for an id at
 * or past ASYNC_MPI_DATA_MAX. */
int async__mpi_data_put(uint32_t id, void *data);
void async__mpi_registry_free(void);

/* run.c: runs the job in msg (a TAG_JOB message of len bytes) on this thread
 * and builds its TAG_RESULT message in *reply (async__malloc'd, *reply_len
 * bytes); rank names the rank in messages.  ASYNC_ENOMEM when no reply could
 * be built. */
int async__mpi_run(const char *msg, size_t len, int64_t deadline, char **reply, size_t *reply_len);
/* An error reply for the job (slot, seq). */
int async__mpi_error_reply(uint32_t slot, uint64_t seq, int err, const char *msg, char **reply, size_t *len);

/* The seq of a job message that async__mpi_job_message built. */
static inline uint64_t async__mpi_job_seq(const char *msg)
{
    job_hdr_t h;
    memcpy(&h, msg, sizeof h);
    return h.seq;
}

/* job_message.c: the TAG_JOB message of a job of rows for slot
 * (DIRECT_SLOT for a direct run), async__malloc'd in *out (*len bytes),
 * numbered with the next seq (async__mpi_job_seq reads it).
 * Errors, with why filled: ASYNC_EINVAL (a work function or ctx not
 * registered, input or output over MPI's 2 GiB), ASYNC_ENOMEM. */
int async__mpi_job_message(uint32_t slot, const async__rows_t *rw, bool var_ok, int64_t deadline, char **out,
                           size_t *len, char why[ASYNC_FUTURE_MSG_MAX]);
/* job_message.c: fills oc from a reply (NULL: rank 0 had no memory to
 * receive it: ASYNC_ENOMEM; shorter than its header or than it says:
 * ASYNC_EIO) to a job of count rows of out_size bytes, and points *rows at
 * the output rows in it (*rows_len bytes, at most count * out_size; 0 for a
 * failed job or a variable result, which oc->var_out points at instead). */
void async__mpi_reply_outcome(const char *reply, size_t len, size_t count, size_t out_size, async__outcome_t *oc,
                              const char **rows, size_t *rows_len);

/* direct_run.c: direct runs completed (tests only). */
extern _Atomic uint64_t async__mpi_direct_runs;
/* backend.c: results dropped because no job of ours was waiting for them
 * (tests only). */
extern _Atomic uint64_t async__mpi_stray_replies;

/* backend.c, benchmarks only: driver slots at or above it take no job
 * (0: every slot takes jobs), for an A/B of the slot count in one run. */
extern _Atomic unsigned async__mpi_slot_cap;

/* init.c */
extern int async__mpi_rank_, async__mpi_size_;
extern async_mpi_opts_t async__mpi_opts;
/* Rank 0: whether the MPI executor exists (at most one per run), and the
 * one that exists. */
extern async_executor_t *_Atomic async__mpi_ex;
/* serve.c: a serving rank's loop; returns when rank 0 says stop. */
void async__mpi_serve(void);
/* backend.c: rank 0, no executor alive: stops the serving ranks if no
 * executor ever did (a program that never made one must not leave them
 * serving); later executors then fail with ASYNC_ECLOSED. */
void async__mpi_stop_all(void);
int async__mpi_share(async_executor_t *ex, const void *data, size_t size, int64_t deadline);

#endif
