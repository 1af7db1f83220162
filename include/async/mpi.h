/* The executor's MPI backend: the same async_executor_map / submit / imap
 * calls spread over the ranks of `mpirun -np N ./prog` (Open MPI), as
 * mpi4py.futures' MPIPoolExecutor does for Python.  Rank 0 runs the program;
 * ranks 1 .. N-1 serve jobs.  Link with libasync-mpi (pkg-config async-mpi),
 * which holds all of libasync plus this backend, instead of libasync;
 * async.h does not include this header.
 *
 * Work functions cannot travel as pointers (a PIE program loads at another
 * address on every rank), so each one is registered by name before
 * async_mpi_init, on every rank alike (ASYNC_MPI_WORK does it at start-up);
 * init checks that every rank has the same registry.  A job's fn is turned
 * into its name on rank 0; an unregistered fn fails the job's future with
 * ASYNC_EINVAL and "work function NAME ... is not registered".  Inputs and
 * outputs travel as bytes, as on the process backend.  A job's ctx must be
 * NULL or data known to every rank: registered with async_mpi_register_data
 * or replicated with async_mpi_bcast; any other ctx fails the job with
 * ASYNC_EINVAL.  No initializer: async_executor_new refuses one with
 * ASYNC_ENOTSUP.  workers 0 gives two driver slots per serving rank
 * (rank_processes + 1 with a rank pool): each rank then holds a job
 * besides the ones it runs, ready when it finishes one; a map's chunks are
 * still handed out in order, one slot at a time.
 *
 * Failures: a job that fails returns its code and message as on the other
 * backends.  With async_mpi_opts_t.rank_processes, a rank runs its jobs in a
 * fork-based process pool of its own, so a job that crashes fails only its
 * own future (ASYNC_EWORKERDIED, "rank R: ...") and the rank serves on.
 * A rank that dies (killed, node lost) ends the whole MPI job: Open MPI 4.1
 * by default aborts every rank and mpirun reports which rank died; no
 * recovery of lost ranks exists in this backend (docs/mpi.md).  A rank that
 * is stopped or stuck ends nothing, but a job with a time limit still ends
 * at its deadline: a submit's future fails with ASYNC_ETIMEDOUT ("still
 * running on rank R at its deadline"), as on the thread backend, and its
 * late result is dropped (with rank_processes one second after it, the
 * time the rank's pool has to report that it killed the job); so does a
 * chunk of a map with a timeout_ns, in flight on such a rank (its late
 * reply is dropped, never written into the caller's out: a rank writes
 * only into its reply; a chunk still queued fails as it is taken, which
 * needs a free driver slot); async_executor_run on the direct path
 * returns ASYNC_ETIMEDOUT at the deadline, and async_imap_next_dl at its
 * own.  Jobs without a deadline (imap chunks have none), a map's
 * async_executor_map_dl deadline (which waits for running chunks),
 * async_imap_free and async_executor_free (no timed teardown exists) wait
 * until the rank resumes, as Python's pools wait for a stopped worker.  A variable result
 * (async_work_output) is at most INT_MAX less 304 bytes, one MPI message
 * with its header: async_work_output returns NULL above that.  Without
 * memory for a job's message on its rank, or for its reply on rank 0, the
 * message is still received and dropped and that job alone fails with
 * ASYNC_ENOMEM ("... no memory for the job's message" / "for a job's
 * reply"); the rank serves on.
 *
 * Threads: MPI runs at MPI_THREAD_SERIALIZED and the backend makes one MPI
 * call at a time on rank 0: those of the executor's progress thread, and
 * those of a thread in async_executor_run, which on a plain thread (not a
 * task) with the queue empty and a serving rank idle sends its job and
 * waits for the reply itself, spinning briefly and then napping; at the
 * job's deadline it returns ASYNC_ETIMEDOUT while the job runs on (or the
 * rank's pool kills it) and its result is dropped.  Futures are completed by the executor's driver threads,
 * so they are awaitable from tasks and waitable from any thread as on the
 * other backends.  The program itself must make no MPI call of its own
 * while the MPI executor lives.  One MPI executor per run: once it is
 * freed the serving ranks have exited. */
#ifndef ASYNC_MPI_H
#define ASYNC_MPI_H

#include <string.h>
#include "common.h"
#include "executor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Registers fn under name (copied, at most 63 bytes) for the MPI backend.
 * Call it before async_mpi_init, in the same way on every rank.  Errors:
 * ASYNC_EINVAL (NULL, empty or long name, NULL fn, or the name already
 * taken by another function), ASYNC_EBUSY (after async_mpi_init),
 * ASYNC_ENOMEM.  Registering the same (name, fn) twice is allowed. */
ASYNC_API int async_mpi_register(const char *name, async_work_fn fn);

/* The same for a chunk function (async_map_t.chunk_fn), which a map on the
 * MPI backend may then use; chunk and work functions share one namespace. */
ASYNC_API int async_mpi_register_chunk(const char *name, async_chunk_fn fn);

/* The most data one MPI run knows: names registered with
 * async_mpi_register_data plus every async_mpi_bcast of the run (each
 * replication takes an entry for good: the ranks keep every copy until they
 * exit).  A serving rank drops replicated data whose index is at or past it
 * (only a forged message names one), and a job naming such data fails with
 * ASYNC_EINVAL, "rank R: ctx N is past the ASYNC_MPI_DATA_MAX ...". */
#define ASYNC_MPI_DATA_MAX 65536

/* Registers data (any pointer, such as a static table built before
 * async_mpi_init on every rank) under name, so that it may be a job's ctx:
 * every rank passes its own pointer registered under that name.  Errors as
 * async_mpi_register, and ASYNC_EFULL with ASYNC_MPI_DATA_MAX names
 * registered (a name already registered is checked first: the same
 * registration again is still 0, the name with another pointer still
 * ASYNC_EINVAL).  A call that fails changes nothing and keeps no memory.
 * Each registration costs O(1) (a hash index by name). */
ASYNC_API int async_mpi_register_data(const char *name, void *data);

/* Calls registrar(#fn, fn) at program start-up (the two macros below). */
#define ASYNC__MPI_AT_START(fn, registrar)                                          \
    __attribute__((constructor)) static void async__mpi_reg_##fn(void)            \
    {                                                                               \
        (void)registrar(#fn, fn);                                                   \
    }                                                                               \
    struct async__mpi_reg_##fn##_semicolon

/* Registers a work function under its own name at program start-up, on
 * every rank: write `ASYNC_MPI_WORK(my_fn);` at file scope after my_fn. */
#define ASYNC_MPI_WORK(fn) ASYNC__MPI_AT_START(fn, async_mpi_register)

/* The same for a chunk function: `ASYNC_MPI_CHUNK(my_chunk_fn);`. */
#define ASYNC_MPI_CHUNK(fn) ASYNC__MPI_AT_START(fn, async_mpi_register_chunk)

typedef struct async_mpi_opts {
    /* 0 or sizeof(async_mpi_opts_t) as the program was compiled; 0 reads the 0.2
     * layout.  Later versions add fields only at the end and read them only
     * when size covers them; a nonzero size below the 0.2 struct's is
     * refused with ASYNC_EINVAL. */
    size_t size;
    /* Serving ranks run jobs in a fork-based process pool of this many
     * processes each (the process backend, at most 4096), so that a job
     * that crashes fails only its future; 0: each rank runs one job at a
     * time on its own thread, and a crash ends the MPI job. */
    unsigned rank_processes;
    /* Those pools' max_job_bytes (0: the process backend's default). */
    size_t max_job_bytes;
} async_mpi_opts_t;

/* Zeroes *o and sets its size (see the size field). */
static inline void async_mpi_opts_init(async_mpi_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

/* Starts MPI (MPI_Init_thread) and checks that every rank registered the
 * same functions and data.  Returns 0 only on rank 0; on every other rank
 * it serves jobs until rank 0 frees its MPI executor (or exits), then
 * finalizes MPI and exits the process with status 0 (also when the
 * registries differ: rank 0 reports that; 1 when MPI gave too low a thread
 * level there).  opts may be NULL; every rank must pass the same.  argc and argv
 * may be NULL.  msg (OUT, may be NULL, cap bytes) receives the reason of a
 * failure.  Errors: ASYNC_EALREADY (called before), ASYNC_EIO (MPI could
 * not start, or gives less than MPI_THREAD_SERIALIZED), ASYNC_EINVAL
 * (opts->size neither 0 nor large enough, or opts->rank_processes above
 * 4096, the process pool's limit: both checked before MPI starts; or
 * registries differ between ranks: the message names the first rank that
 * differs from rank 0; the run is then over, other ranks have exited),
 * ASYNC_ENOTSUP (a single rank: nobody to serve), ASYNC_ENOMEM. */
ASYNC_API int async_mpi_init(int *argc, char ***argv, const async_mpi_opts_t *opts, char *msg,
                             size_t cap);

/* This process's rank and the number of ranks; -1 and 0 before init. */
ASYNC_API int async_mpi_rank(void);
ASYNC_API int async_mpi_size(void);

/* Replicates size bytes at data, read-only, to every serving rank once, so
 * that data may then be a job's ctx (each rank's function gets its own
 * copy; rank 0's jobs name data by this pointer, which must stay valid and
 * unchanged while jobs use it; replicating the same pointer again makes
 * later jobs read the new copy).  Blocks until every rank has it: a rank
 * running a job without rank_processes receives it only after that job, so
 * the wait can be as long as the longest running job (async_mpi_bcast_dl
 * bounds it).  With rank_processes, a rank that receives it lets its pool
 * finish the jobs it runs and forks the pool again, so that its workers
 * hold the copy (a few ms per replication).  Any thread of rank 0 may call it.  ex must be the MPI
 * executor.  Errors: ASYNC_EINVAL (not an MPI executor, data NULL, size 0
 * or above INT_MAX), ASYNC_ECLOSED (the executor was shut down),
 * ASYNC_EFULL (the run already holds ASYNC_MPI_DATA_MAX registered or
 * replicated data; nothing is sent), ASYNC_ENOMEM.  A call that fails
 * changes nothing: when data was replicated before, jobs naming it still
 * read that copy. */
ASYNC_API int async_mpi_bcast(async_executor_t *ex, const void *data, size_t size);

/* async_mpi_bcast that waits at most until deadline (absolute, async_now()'s
 * clock).  This is not an MPI collective: rank 0 sends the bytes to each
 * serving rank (MPI_Isend), which takes them in its serving loop, so
 * bounding the wait is safe; what cannot be bounded is the sends
 * themselves, since MPI cannot take back a started send.  Hence:
 * ASYNC_ETIMEDOUT with the deadline already past on entry: nothing was sent
 * and data is not replicated.  ASYNC_ETIMEDOUT later: not every rank had
 * the bytes by the deadline, and the replication goes on in the background:
 * data is replicated (jobs may name it; each rank receives it before any
 * job sent after this call, since MPI keeps the order between two ranks)
 * and must stay valid and unchanged until async_executor_free(ex) returns,
 * which waits for the last send.  Other errors as async_mpi_bcast. */
ASYNC_API int async_mpi_bcast_dl(async_executor_t *ex, const void *data, size_t size, int64_t deadline);

/* Rank 0: finalizes MPI after the MPI executor was freed (at exit
 * otherwise, so calling it is optional); when no MPI executor was ever made
 * it first releases the serving ranks, and later executors fail with
 * ASYNC_ECLOSED.  Returns 0, or ASYNC_EBUSY while an
 * MPI executor lives. */
ASYNC_API int async_mpi_finalize(void);

#ifdef __cplusplus
}
#endif
#endif
