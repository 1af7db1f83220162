/* Receiving a message of a size known only from its probe, on rank 0 and on
 * the serving ranks alike.  A probed message must be received even when no
 * buffer can be allocated for it: left in MPI's queue, every later probe
 * finds it again, so nothing behind it from that rank is ever seen and the
 * job it belongs to waits for ever.  Without memory the message is drained
 * into a fixed scratch area and only its header is kept, which is enough
 * for the caller to fail that job with ASYNC_ENOMEM.
 *
 * Truncation is no way to drain: Open MPI 4.1 writes a rendezvous message
 * (above the eager limit, 4 KiB over vader, 64 KiB over tcp) past the end of
 * a shorter receive buffer before it reports MPI_ERR_TRUNCATE.  The scratch
 * receive instead uses a datatype of SCRATCH-byte blocks whose extent is 0,
 * so that every block lands on the same SCRATCH bytes.  The standard calls a
 * receive through overlapping entries erroneous because the bytes left there
 * are undefined; nothing here reads them, and test-mpi's oom case drains
 * replies past the eager limit over vader and tcp through this path. */
#include <mpi.h>
#include <stdint.h>
#include <string.h>
#include "mpi_internal.h"

#define SCRATCH 65536

/* One per process.  Every caller serializes its MPI calls (rank 0 holds
 * mpi_mu; a serving rank calls MPI from its serve loop only), so no two
 * drains share it at once, and what they leave in it is never read. */
static char scratch[SCRATCH];

/* Receives the message and keeps its first hl bytes in hdr (the whole of it
 * when it is that short), without allocating anything of libasync's. */
static void drain(int source, int tag, int count, void *hdr, int hl)
{
    int rest = count - hl;
    if (rest <= 0) {
        MPI_Recv(hdr, count, MPI_BYTE, source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        return;
    }
    MPI_Datatype block, overlap, whole;
    MPI_Type_contiguous(SCRATCH, MPI_BYTE, &block);
    MPI_Type_create_resized(block, 0, 0, &overlap);
    int lens[2] = {hl, (rest + SCRATCH - 1) / SCRATCH};
    MPI_Aint at[2] = {(MPI_Aint)(uintptr_t)hdr, (MPI_Aint)(uintptr_t)scratch};
    MPI_Datatype types[2] = {MPI_BYTE, overlap};
    MPI_Type_create_struct(2, lens, at, types, &whole);
    MPI_Type_commit(&whole);
    /* One element of `whole` holds at least count bytes: a shorter message
     * into it is an ordinary receive, not a truncation. */
    MPI_Recv(MPI_BOTTOM, 1, whole, source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Type_free(&whole);
    MPI_Type_free(&overlap);
    MPI_Type_free(&block);
}

char *async__mpi_recv_probed(int source, int tag, int count, void *hdr, size_t hdr_size)
{
    if (count < 0) count = 0;
    int hl = (size_t)count < hdr_size ? count : (int)hdr_size;
    if (hdr_size) memset(hdr, 0, hdr_size);
    char *buf = async__malloc(count ? (size_t)count : 1);
    if (!buf) {
        drain(source, tag, count, hdr, hl);
        return NULL;
    }
    MPI_Recv(buf, count, MPI_BYTE, source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (hl) memcpy(hdr, buf, (size_t)hl);
    return buf;
}
