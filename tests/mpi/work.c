/* The work functions that both MPI test programs register on every rank
 * (mpi-suite, failures and wire link this object: the Makefile's MPI_WORK),
 * declared in work.h.  Each computes its answer from its input; the
 * programs compute the answers they expect with the same functions. */
#include <async.h>
#include <async/mpi.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "work.h"

int square_i64(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    int64_t x;
    memcpy(&x, in, sizeof x);
    x = x * x - 3;
    memcpy(out, &x, sizeof x);
    return 0;
}
ASYNC_MPI_WORK(square_i64);

/* Its rank and pid, and how many input bytes it got. */
int whoami(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)out_size, (void)ctx;
    int64_t r[3] = {async_mpi_rank(), getpid(), (int64_t)in_size};
    memcpy(out, r, sizeof r);
    return 0;
}
ASYNC_MPI_WORK(whoami);

/* Naps 50 ms, then as whoami: keeps a rank busy long enough that
 * concurrent jobs spread over both ranks. */
int slow_whoami(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    usleep(50000);
    return whoami(in, in_size, out, out_size, ctx);
}
ASYNC_MPI_WORK(slow_whoami);

/* The job's deadline as its function sees it, and the rank's clock. */
int deadline_seen(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out_size, (void)ctx;
    int64_t r[2] = {async_work_deadline(), async_now()};
    memcpy(out, r, sizeof r);
    return 0;
}
ASYNC_MPI_WORK(deadline_seen);

/* A variable result of the size its input names (one byte written). */
int big_out(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    uint64_t n;
    memcpy(&n, in, sizeof n);
    char *o = async_work_output((size_t)n);
    if (!o) return async_work_fail(ASYNC_ENOMEM, "no output of %llu bytes", (unsigned long long)n);
    o[0] = 'q';
    return 0;
}
ASYNC_MPI_WORK(big_out);

/* Row i of the int64_t table in ctx. */
int stamp_at(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size;
    uint32_t i;
    memcpy(&i, in, sizeof i);
    memcpy(out, (const int64_t *)ctx + i, sizeof(int64_t));
    return 0;
}
ASYNC_MPI_WORK(stamp_at);

/* Sleeps the given milliseconds. */
int nap_ms(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out, (void)out_size, (void)ctx;
    int64_t ms;
    memcpy(&ms, in, sizeof ms);
    usleep((useconds_t)(ms * 1000));
    return 0;
}
ASYNC_MPI_WORK(nap_ms);
