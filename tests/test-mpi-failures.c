/* The MPI backend's failures and hostile input, run for real: each test
 * starts `mpirun --oversubscribe --bind-to none -np 3 tests/bin/mpi/PROG
 * CASE` (2 serving ranks) with loopback-only transports, bounded by a
 * deadline after which the whole mpirun process group is killed, and checks
 * its exit status and output.  PROG is failures (stopped and killed ranks,
 * lifecycle, out of memory) or wire (forged messages, hostile
 * parameters); both compute every expected answer themselves.  Skips,
 * named and counted, without Open MPI. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include "support/mpirun.h"
#include "support/run.h"

#define BIN ASYNC_OUT_DIR "/tests/bin/mpi/"

/* The program that holds case c. */
static const char *prog_of(const char *c)
{
    static const char *wire[] = {"hostile", "huge", "params", "rebcast_registered", "forged_replies"};
    for (size_t i = 0; i < sizeof wire / sizeof wire[0]; i++)
        if (!strcmp(c, wire[i])) return BIN "wire";
    return BIN "failures";
}

static void need_mpi(const char *c)
{
    if (access(prog_of(c), X_OK)) cr_skip_test("missing package libopenmpi-dev: %s was not built", prog_of(c));
    if (system("mpirun --version >/dev/null 2>&1") != 0) cr_skip_test("missing package openmpi-bin: no mpirun");
}

/* Runs the case under mpirun with 3 ranks over btl, for at most timeout
 * seconds (times the slack). */
static void run_mpi(test_output_t *r, const char *btl, const char *c, double timeout)
{
    test_mpi_run(r, btl, NULL,
                 (char *[]){"mpirun", "--oversubscribe", "--bind-to", "none", "-np", "3",
                            (char *)prog_of(c), (char *)c, NULL},
                 timeout);
}

static void expect_pass(const char *btl, const char *c)
{
    need_mpi(c);
    static test_output_t r;
    /* hostile builds, sends and receives two replies of 2 GiB (11 s each
     * here under load, more under the sanitizers). */
    run_mpi(&r, btl, c, strcmp(c, "hostile") ? 90 : 150);
    char want[64];
    snprintf(want, sizeof want, "PASS %s\n", c);
    cr_assert(!r.timed_out, "mpirun %s timed out after %.1f s:\n%s", c, r.seconds, r.out);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "mpirun %s: status 0x%x:\n%s", c, r.status,
              r.out);
    cr_assert(strstr(r.out, want), "no '%s' line:\n%s", c, r.out);
    cr_assert(!strstr(r.out, "FAIL"), "%s", r.out);
    cr_log_info("%s: %.1f s", c, r.seconds);
}

#define VADER "self,vader"

TestSuite(mpi_failures, .timeout = 200);

/* Serving ranks stopped (SIGSTOP): a timed submit's future fails at its
 * deadline (it waited for the reply for ever), and so does a timed run
 * whose input is above the eager limit (it waited for its send to
 * complete for ever), and so does a map with a timeout_ns whose chunks
 * are on the stopped ranks (it waited until they resumed, and its late
 * replies wrote into out: now they are dropped); async_imap_next_dl ends
 * at its deadline; after SIGCONT the pool serves on and the imap yields
 * every item. */
Test(mpi_failures, stopped_ranks_end_timed_jobs_at_their_deadlines) { expect_pass(VADER, "stopped"); }
Test(mpi_failures, stopped_ranks_over_tcp) { expect_pass("self,tcp", "stopped"); }
/* With rank_processes a rank's pool kills a late job and says so: rank 0
 * waits a grace second for that answer, then gives up on a stopped rank. */
Test(mpi_failures, stopped_ranks_with_pools_end_timed_jobs_after_a_grace) { expect_pass(VADER, "stopped_pool"); }

/* Job messages rank 0 never sends and replies no rank sends: a deadline
 * centuries away (it overflowed on the rank), a 2 GiB output, truncated
 * and inconsistent headers, unknown functions and ctx; reply sizes that
 * wrap; rows and sizes at 0, MAX - 1, MAX, MAX + 1 and SIZE_MAX; share
 * headers without their data (the rank waited for it for ever), with data
 * of another size, and at ids MAX - 1, MAX + 1, UINT32_MAX.  Each gets a
 * precise error, and the ranks serve on. */
Test(mpi_failures, hostile_messages_get_precise_errors) { expect_pass(VADER, "hostile"); }

/* Results forged by a serving rank (a work function calling MPI) that
 * answer no job of rank 0's: too short to name a slot, or naming slots
 * past every driver slot, with message sizes 0, 1, 255, 256, 257 and
 * UINT32_MAX and data sizes 0, 1, 64, SIZE_MAX - 1 and SIZE_MAX.  Rank 0's
 * progress thread drops each one (counted), and maps and runs after them
 * give their right answers. */
Test(mpi_failures, forged_replies_for_no_job_are_dropped) { expect_pass(VADER, "forged_replies"); }

/* A variable result of 2 GiB cannot be one MPI message: async_work_output
 * refuses it on the rank (it was copied and sent with a negative count,
 * which aborted the MPI job). */
Test(mpi_failures, result_past_two_gib_fails_its_job_only) { expect_pass(VADER, "huge"); }

/* Timeouts -1, INT64_MIN, INT64_MAX and near INT64_MAX; NULL functions;
 * chunk sizes 0, 1, n + 1, SIZE_MAX; bcast bounds; registration bounds;
 * init and finalize out of order; rank_processes above the process pool's
 * 4096 (every case checks that one, before init: it used to start MPI and
 * run the jobs unisolated). */
Test(mpi_failures, hostile_parameters) { expect_pass(VADER, "params"); }

/* Registered data replicated with new bytes: jobs read the new copy, as
 * for any pointer replicated again (they read each rank's static one). */
Test(mpi_failures, registered_data_replicated_again_reads_the_new_bytes)
{
    expect_pass(VADER, "rebcast_registered");
}

/* The executor freed with 40 jobs queued or running: every future is
 * final after free (a result, or ASYNC_ECLOSED/ECANCELED), the ranks exit. */
Test(mpi_failures, free_with_jobs_pending_ends_every_future) { expect_pass(VADER, "free_pending"); }

/* main returns with the executor alive and 20 jobs queued: the exit
 * handler frees it, the ranks exit, mpirun ends with status 0. */
Test(mpi_failures, exit_with_the_executor_alive_releases_the_ranks) { expect_pass(VADER, "exit_alive"); }

/* Rank 0's allocations failing one at a time (the 1st, 2nd, ... of each
 * call, on every thread of rank 0): async_executor_new (a failed one
 * leaves the backend usable), submit, run, map, imap and bcast each fail
 * with ASYNC_ENOMEM or succeed, and work again at once; no leak (the
 * sanitizer build's LeakSanitizer checks every rank at exit). */
Test(mpi_failures, failing_allocations_on_rank_0_are_enomem) { expect_pass(VADER, "oom0"); }

/* A serving rank SIGKILLed from outside (not by its own job, as in
 * test-mpi's kill case), between jobs and in the middle of a map: Open MPI
 * 4.1's defaults end the whole job within seconds, mpirun names the rank
 * and the signal, and rank 0 never goes on nor hangs. */
static void expect_killed(const char *c)
{
    need_mpi(c);
    static test_output_t r;
    run_mpi(&r, VADER, c, 60);
    cr_assert(!r.timed_out, "the job hung after a rank was killed (%.1f s):\n%s", r.seconds, r.out);
    cr_assert(strstr(r.out, "killing rank 1"), "%s", r.out);
    cr_assert(!(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0), "mpirun succeeded:\n%s", r.out);
    cr_assert(strstr(r.out, "process rank 1"), "no rank named:\n%s", r.out);
    cr_assert(strstr(r.out, "signal 9"), "no signal named:\n%s", r.out);
    cr_assert(!strstr(r.out, "PASS") && !strstr(r.out, "went on"), "%s", r.out);
    cr_log_info("%s: the job ended in %.1f s", c, r.seconds);
}

Test(mpi_failures, rank_killed_between_jobs_ends_the_job_naming_it) { expect_killed("killed_idle"); }
Test(mpi_failures, rank_killed_during_a_map_ends_the_job_naming_it) { expect_killed("killed_mid_map"); }
