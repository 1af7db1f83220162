/* The environment of a test's mpirun child, shared by the MPI tests: root
 * may run it (the CI machine's user), Open MPI's own leaks are suppressed by
 * library under LeakSanitizer (which needs full stacks for that), and with
 * a btl the ranks talk over it on loopback only.  Call it in the forked
 * child, before exec; a test may override a variable afterwards. */
#ifndef TEST_SUPPORT_MPIRUN_H
#define TEST_SUPPORT_MPIRUN_H
#include <stdlib.h>

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
#endif
