/* What the two MPI failure programs share (tests/mpi/failures.c,
 * tests/mpi/wire.c): the checks, the work functions every rank
 * registers, and main's frame, which checks registration and init misuse
 * before init (alike on every rank), starts MPI, makes the executor and
 * runs one case on rank 0: it prints "PASS CASE" and exits 0, or prints
 * what went wrong and exits 1.  Expected answers are computed, never typed
 * in.  Run by tests/test-mpi-failures.c under `mpirun -np 3`. */
#ifndef TESTS_MPI_CASES_H
#define TESTS_MPI_CASES_H
#include <async.h>
#include <async/mpi.h>
#include <mpi.h>
#include "mpi/mpi_internal.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            printf(__VA_ARGS__);                                                          \
            printf("\n");                                                                 \
            fflush(stdout);                                                               \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

#include "work.h"

/* Built alike on every rank before init: registered data. */
static int64_t table[8] = {3, 1, 4, 1, 5, 9, 2, 6};

static async_executor_t *ex;
/* The options every rank passes to async_mpi_init (before_init may set
 * them, alike on every rank). */
static async_mpi_opts_t case_opts;
extern _Atomic uint64_t async__mpi_direct_runs;
static inline uint64_t direct_runs(void) { return atomic_load(&async__mpi_direct_runs); }

static inline double since_s(int64_t t0) { return (double)(async_now() - t0) / 1e9; }

/* The program's hooks: before_init(c) runs on every rank before init;
 * before_executor(c) on rank 0 after init, true when it did the whole case
 * (the executor is then its own business); run_case(c) with the executor,
 * false for a case it does not know. */
typedef struct cases_hooks {
    void (*before_init)(const char *c);
    bool (*before_executor)(const char *c);
    bool (*run_case)(const char *c);
} cases_hooks_t;

static int cases_main(int argc, char **argv, const cases_hooks_t *hk)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *c = argc > 1 ? argv[1] : "";
    /* Registration's own checks, alike on every rank (before init). */
    char long_name[65];
    memset(long_name, 'n', 64);
    long_name[64] = '\0';
    CHECK(async_mpi_register(long_name, square_i64) == ASYNC_EINVAL, "a 64-byte name");
    long_name[63] = '\0';
    CHECK(async_mpi_register(long_name, square_i64) == 0, "a 63-byte name");
    CHECK(async_mpi_register("square_i64", whoami) == ASYNC_EINVAL, "a name taken by another function");
    CHECK(async_mpi_register("square_i64", square_i64) == 0, "the same registration twice");
    CHECK(async_mpi_register("", square_i64) == ASYNC_EINVAL, "an empty name");
    CHECK(async_mpi_register(NULL, square_i64) == ASYNC_EINVAL, "a NULL name");
    CHECK(async_mpi_register("nofn", NULL) == ASYNC_EINVAL, "a NULL function");
    CHECK(async_mpi_register_data("table", table) == 0, "register_data");
    CHECK(async_mpi_register_data("table", &failures) == ASYNC_EINVAL, "data name taken");
    CHECK(async_mpi_rank() == -1 && async_mpi_size() == 0, "rank before init");
    async_executor_t *early;
    CHECK(async_executor_new(&early, &(async_executor_opts_t){.backend = ASYNC_BACKEND_MPI}) == ASYNC_ENOTSUP,
          "an executor before init");
    CHECK(async_mpi_finalize() == 0, "finalize before init");
    char msg[256];
    int r0;
    /* More rank processes than a process pool takes: refused before MPI
     * starts (each rank's pool failed, and its jobs ran unisolated). */
    async_mpi_opts_t many = {.rank_processes = 5000};
    r0 = async_mpi_init(&argc, &argv, &many, msg, sizeof msg);
    CHECK(r0 == ASYNC_EINVAL && strstr(msg, "rank_processes"), "rank_processes 5000: %s '%s'", async_errname(r0),
          msg);
    CHECK(async_mpi_rank() == -1, "init went on with rank_processes 5000 (rank %d)", async_mpi_rank());
    if (hk->before_init) hk->before_init(c);
    int r = async_mpi_init(&argc, &argv, &case_opts, msg, sizeof msg);
    if (r) {
        printf("FAIL init: %s: %s\n", async_errname(r), msg);
        return 1;
    }
    if (hk->before_executor && hk->before_executor(c)) goto out;
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_MPI};
    CHECK((r = async_executor_new(&ex, &o)) == 0, "executor: %s", async_errname(r));
    if (r) return 1;
    if (!hk->run_case(c)) {
        printf("FAIL unknown case '%s'\n", c);
        failures++;
    }
out:
    if (ex) async_executor_free(ex);
    CHECK(async_mpi_finalize() == 0, "finalize");
    if (!failures) printf("PASS %s\n", c);
    return failures ? 1 : 0;
}


#endif
