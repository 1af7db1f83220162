/* The MPI backend's registry at its bound, ASYNC_MPI_DATA_MAX (65,536)
 * data, and its hash indexes: tests/bin/mpi/limits (tests/mpi/limits.c),
 * its cases under `mpirun --oversubscribe --bind-to none -np 3` over
 * loopback-only transports, and its registry checks alone (no MPI), each
 * bounded by a deadline after which its process group is killed.  The
 * program computes every expected answer itself.  Skips, named and
 * counted, without Open MPI. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "support/mpirun.h"
#include "support/run.h"

#define PROG ASYNC_OUT_DIR "/tests/bin/mpi/limits"

static void need_prog(void)
{
    if (access(PROG, X_OK)) cr_skip_test("missing package libopenmpi-dev: %s was not built", PROG);
}

/* Runs PROG c arg (under mpirun -np 3 over btl when btl is set) for at
 * most timeout seconds (times the slack). */
static void run(test_output_t *r, const char *btl, const char *c, const char *arg, double timeout)
{
    if (btl)
        test_mpi_run(r, btl, NULL,
                     (char *[]){"mpirun", "--oversubscribe", "--bind-to", "none", "-np", "3", PROG,
                                (char *)c, NULL},
                     timeout);
    else
        test_mpi_run(r, NULL, NULL, (char *[]){PROG, (char *)c, (char *)arg, NULL}, timeout);
}

static void expect_pass(const char *btl, const char *c, const char *arg, test_output_t *r)
{
    run(r, btl, c, arg, 120);
    char want[64];
    snprintf(want, sizeof want, "PASS %s\n", c);
    cr_assert(!r->timed_out, "%s timed out after %.1f s:\n%s", c, r->seconds, r->out);
    cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "%s: status 0x%x:\n%s", c, r->status, r->out);
    cr_assert(strstr(r->out, want), "no '%s' line:\n%s", c, r->out);
    cr_assert(!strstr(r->out, "FAIL"), "%s", r->out);
    cr_log_info("%s: %.1f s", c, r->seconds);
}

static void expect_mpi_pass(const char *btl, const char *c)
{
    need_prog();
    if (system("mpirun --version >/dev/null 2>&1") != 0) cr_skip_test("missing package openmpi-bin: no mpirun");
    static test_output_t r;
    expect_pass(btl, c, NULL, &r);
}

TestSuite(mpi_limits, .timeout = 300);

/* Every rank registers ASYNC_MPI_DATA_MAX data (6.9 s a rank before the
 * registry's hash index, 0.02 s after); the next is ASYNC_EFULL, "capacity
 * exhausted", whatever its name, and allocates nothing; a name taken is
 * still ASYNC_EINVAL and the same registration again 0; init agrees on
 * every rank; a job naming the refused pointer fails with ASYNC_EINVAL;
 * async_mpi_bcast and bcast_dl are ASYNC_EFULL; each of the 65,535 data
 * then serves as a job's ctx (each rank reads its own copy), on the direct
 * path, through futures and in a map.  LeakSanitizer checks every rank at
 * exit in the sanitizer build. */
Test(mpi_limits, registering_past_the_data_bound_is_efull) { expect_mpi_pass("self,vader", "data_max"); }

/* One entry short of the bound, a replication takes the last; the same
 * pointer replicated again with new bytes is ASYNC_EFULL and jobs still
 * read the copy the ranks hold (rank 0 forgot that copy before it found
 * the table full, so they failed with ASYNC_EINVAL); other data is
 * ASYNC_EFULL too, registered data still serves. */
Test(mpi_limits, a_refused_replication_keeps_the_copy_jobs_read) { expect_mpi_pass("self,vader", "bcast_max"); }

/* Without MPI: 3,000 data and 2,000 function names registered with each
 * allocation of each registration failing in turn (each ASYNC_ENOMEM,
 * nothing left behind), the duplicate checks, then the freeze with its
 * 1st, 2nd, ... allocation failing until one is not reached (the lookups
 * then scan the tables): every ctx, work and chunk function is found where
 * a scan finds it, replications with allocations failing keep the copy
 * jobs name, the bound is ASYNC_EFULL, and freeing the registry leaves no
 * block of the counting allocator. */
Test(mpi_limits, the_registry_indexes_survive_failing_allocations)
{
    need_prog();
    static test_output_t r;
    int runs = 0;
    for (long k = 0; k < 64; k++) {
        char arg[24];
        snprintf(arg, sizeof arg, "%ld", k);
        expect_pass(NULL, "index", arg, &r);
        runs++;
        if (k > 0 && strstr(r.out, "not reached")) break;
    }
    cr_assert(strstr(r.out, "not reached"), "the freeze made 63 allocations or more:\n%s", r.out);
    cr_assert(runs > 2, "the freeze made no allocation to fail:\n%s", r.out);
    cr_log_info("index: the freeze's %d allocations failed in turn", runs - 2);
}
