/* async_mpi_init and the run's lifetime: MPI starts here, the registries are
 * frozen and compared across ranks, serving ranks enter their loop and exit
 * from here, and rank 0 finalizes MPI after its executor is gone (at exit
 * if the program does not call async_mpi_finalize). */
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mpi_internal.h"

int async__mpi_rank_ = -1, async__mpi_size_ = 0;
async_mpi_opts_t async__mpi_opts;
async_executor_t *_Atomic async__mpi_ex;
static bool inited, finalized;

int async_mpi_rank(void) { return async__mpi_rank_; }
int async_mpi_size(void) { return async__mpi_size_; }

static void say(char *msg, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *msg, size_t cap, const char *fmt, ...)
{
    if (!msg || !cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
}

int async_mpi_finalize(void)
{
    if (async__mpi_rank_ != 0 || finalized) return 0;
    if (atomic_load(&async__mpi_ex)) return ASYNC_EBUSY;
    finalized = true;
    async__mpi_stop_all();
    MPI_Finalize();
    async__mpi_registry_free();
    return 0;
}

/* A program that returns from main with the executor alive must not leave
 * the serving ranks waiting: free it (which stops them), then finalize. */
static void at_exit(void)
{
    async_executor_t *ex = atomic_load(&async__mpi_ex);
    if (ex) async_executor_free(ex);
    async_mpi_finalize();
}

int async_mpi_init(int *argc, char ***argv, const async_mpi_opts_t *opts, char *msg, size_t cap)
{
    if (msg && cap) msg[0] = '\0';
    if (inited) return ASYNC_EALREADY;
    if (opts && async__size_bad(opts)) {
        say(msg, cap, "async_mpi_opts_t.size is neither 0 nor the struct's size");
        return ASYNC_EINVAL;
    }
    /* Above the pools' limit every serving rank's pool would fail to start
     * and its jobs run without isolation, which only a line on each rank's
     * stderr said: refused here instead, before MPI starts, on every rank. */
    if (opts && opts->rank_processes > ASYNC__MPI_MAX_RANK_PROCESSES) {
        say(msg, cap, "async_mpi_opts_t.rank_processes %u is above the process pool's %u", opts->rank_processes,
            ASYNC__MPI_MAX_RANK_PROCESSES);
        return ASYNC_EINVAL;
    }
    inited = true;
    if (opts) async__mpi_opts = *opts;
    int flag = 0, provided = 0;
    MPI_Initialized(&flag);
    if (flag) MPI_Query_thread(&provided);
    else if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
        say(msg, cap, "MPI_Init_thread failed");
        return ASYNC_EIO;
    }
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* Rank 0's MPI calls move to the progress thread: SERIALIZED at least. */
    if (provided < MPI_THREAD_SERIALIZED) {
        say(msg, cap, "MPI gives thread level %d, below MPI_THREAD_SERIALIZED (%d)", provided,
            MPI_THREAD_SERIALIZED);
        MPI_Finalize();
        if (rank) exit(1);
        return ASYNC_EIO;
    }
    /* Every rank compares its registry's hash with rank 0's; the lowest
     * rank that differs is reported (size when none does). */
    uint64_t h = async__mpi_registry_freeze(), h0 = h;
    MPI_Bcast(&h0, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    int mine = h != h0 ? rank : size, differs = size;
    MPI_Allreduce(&mine, &differs, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (differs < size || size < 2) {
        MPI_Finalize();
        async__mpi_registry_free();
        /* Rank 0 reports it; a serving rank's non-zero status would make
         * mpirun kill rank 0 before it could. */
        if (rank) exit(0);
        if (differs < size) {
            say(msg, cap, "rank %d registered other work functions or data than rank 0", differs);
            return ASYNC_EINVAL;
        }
        say(msg, cap, "a single rank: run it under mpirun -np 2 or more");
        return ASYNC_ENOTSUP;
    }
    async__mpi_rank_ = rank;
    async__mpi_size_ = size;
    if (rank) {
        async__mpi_serve();
        MPI_Finalize();
        async__mpi_registry_free();
        exit(0);
    }
    atexit(at_exit);
    return 0;
}

int async_mpi_bcast(async_executor_t *ex, const void *data, size_t size)
{
    return async__mpi_share(ex, data, size, ASYNC_FOREVER);
}

int async_mpi_bcast_dl(async_executor_t *ex, const void *data, size_t size, int64_t deadline)
{
    return async__mpi_share(ex, data, size, deadline);
}
