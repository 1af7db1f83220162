/* Work functions shared by the MPI test programs (tests/mpi/work.c),
 * registered on every rank by their ASYNC_MPI_WORK there. */
#ifndef TESTS_MPI_WORK_H
#define TESTS_MPI_WORK_H
#include <stddef.h>

int square_i64(const void *in, size_t in_size, void *out, size_t out_size, void *ctx);
int whoami(const void *in, size_t in_size, void *out, size_t out_size, void *ctx);
int slow_whoami(const void *in, size_t in_size, void *out, size_t out_size, void *ctx);
int deadline_seen(const void *in, size_t in_size, void *out, size_t out_size, void *ctx);
int big_out(const void *in, size_t in_size, void *out, size_t out_size, void *ctx);
int stamp_at(const void *in, size_t in_size, void *out, size_t out_size, void *ctx);
int nap_ms(const void *in, size_t in_size, void *out, size_t out_size, void *ctx);

#endif
