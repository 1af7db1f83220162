/* The MPI registry at its bound, ASYNC_MPI_DATA_MAX data: `limits CASE`.
 *
 *   time [N]  no MPI: registers N data names (default ASYNC_MPI_DATA_MAX)
 *             and N work function names, and prints how long each took,
 *             one line per figure (the harness of docs/mpi.md's registry
 *             figures; run it alone, not under mpirun). */
#include "cases.h"

/* --- the registration harness ----------------------------------------------------- */

static char slots[ASYNC_MPI_DATA_MAX + 1];

static int time_registration(size_t n)
{
    if (n > ASYNC_MPI_DATA_MAX) n = ASYNC_MPI_DATA_MAX;
    char name[32];
    int64_t t0 = async_now();
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "data-%06zu", i);
        int r = async_mpi_register_data(name, &slots[i]);
        if (r) {
            printf("FAIL register_data %s: %s\n", name, async_errname(r));
            return 1;
        }
    }
    double data_s = since_s(t0);
    t0 = async_now();
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "work-%06zu", i);
        int r = async_mpi_register(name, square_i64);
        if (r) {
            printf("FAIL register %s: %s\n", name, async_errname(r));
            return 1;
        }
    }
    double fn_s = since_s(t0);
    t0 = async_now();
    async__mpi_registry_freeze();
    double freeze_s = since_s(t0);
    /* Every registered pointer looked up as a job's ctx, as rank 0 does
     * for each job it sends. */
    t0 = async_now();
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t idx = 0;
        if (async__mpi_ctx_index(&slots[i], &idx) || !idx) {
            printf("FAIL ctx %zu not found\n", i);
            return 1;
        }
        sum += idx;
    }
    double ctx_s = since_s(t0);
    if (sum != (uint64_t)n * (n + 1) / 2) {
        printf("FAIL ctx indexes add up to %llu\n", (unsigned long long)sum);
        return 1;
    }
    printf("register_data, %zu names: %.4f s\n", n, data_s);
    printf("register, %zu names: %.4f s\n", n, fn_s);
    printf("freeze (sort and hash), %zu + %zu names: %.4f s\n", n, n, freeze_s);
    printf("ctx lookup, %zu data: %.3f us a lookup\n", n, ctx_s * 1e6 / (double)n);
    async__mpi_registry_free();
    return 0;
}

int main(int argc, char **argv)
{
    (void)cases_main;
    if (argc > 1 && !strcmp(argv[1], "time"))
        return time_registration(argc > 2 ? strtoull(argv[2], NULL, 10) : ASYNC_MPI_DATA_MAX);
    printf("FAIL unknown case '%s'\n", argc > 1 ? argv[1] : "");
    return 1;
}
