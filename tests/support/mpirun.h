/* The environment of a test's mpirun child, shared by the MPI tests: root
 * may run it (the CI machine's user), Open MPI's own leaks are suppressed by
 * library under LeakSanitizer (which needs full stacks for that), and with
 * a btl the ranks talk over it on loopback only.  Call it in the forked
 * child, before exec; a test may override a variable afterwards. */
#ifndef TEST_SUPPORT_MPIRUN_H
#define TEST_SUPPORT_MPIRUN_H
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "run.h"

/* btl: "self,vader", "self,tcp", ..., or NULL to leave the transports and
 * interfaces to the mpirun command line. */
static inline void test_mpi_child_env(const char *btl)
{
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    if (btl) {
        setenv("OMPI_MCA_btl", btl, 1);
        setenv("OMPI_MCA_pml", "ob1", 1);
        setenv("OMPI_MCA_oob_tcp_if_include", "lo", 1);
        setenv("OMPI_MCA_btl_tcp_if_include", "lo", 1);
    }
    setenv("LSAN_OPTIONS",
           "suppressions=" ASYNC_SRC_DIR "/tests/mpi/lsan-mpi.supp:print_suppressions=0", 1);
    setenv("ASAN_OPTIONS", "fast_unwind_on_malloc=0", 1);
}

/* Runs argv (argv[0] looked up in PATH: mpirun, or a program by its path)
 * in a forked child in its own process group, its stdout and stderr on one
 * pipe, with test_mpi_child_env(btl) and then each "NAME=value" of env
 * (NULL-terminated; env may be NULL), and collects it into r (test_collect:
 * at most timeout seconds, times the slack, then its group is killed). */
static inline void test_mpi_run(test_output_t *r, const char *btl, char *const env[],
                                char *const argv[], double timeout)
{
    memset(r, 0, sizeof *r);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    double t0 = test_now_s();
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        test_mpi_child_env(btl);
        for (char *const *e = env; e && *e; e++) putenv(*e);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    close(p[1]);
    test_collect(r, pid, p[0], t0, timeout);
}
#endif
