/* --mode mpi: the lab's range functions over the ranks of
 * `mpirun -np N demos/lab/lab WORKLOAD --mode mpi`, through the same
 * executor API (async_executor_map on an ASYNC_BACKEND_MPI executor).
 *
 * Every rank runs this program: each parses the same options, and
 * lab_mpi_start's async_mpi_init returns only on rank 0; the others serve
 * chunks until rank 0 is done.  One work function, lab_mpi_chunk, is
 * registered (ASYNC_MPI_WORK); a chunk's input names the workload (its
 * index in `kinds`, the same table on every rank), the range and the size
 * of one item's results.  The workload's read-only input is replicated once
 * per job with async_mpi_bcast and is the chunk's ctx; the serving rank
 * attaches a ctx of the workload's own shape over its copy (cached while
 * chunks of the same input arrive), runs the range function the other modes
 * run, and returns the range's results as the chunk's output bytes.
 *
 * Built without Open MPI (no LAB_WITH_MPI, the lab then links plain libasync),
 * the mode is refused with a message and nothing here touches MPI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "async/executor.h"
#include "lab.h"

#ifdef LAB_WITH_MPI
#include "async/mpi.h"

static const lab_mpi_kind_t *const kinds[] = {&lab_mpi_howmany, &lab_mpi_primes, &lab_mpi_factors,
                                              &lab_mpi_normalize, &lab_mpi_sumsq};
#define NKINDS (sizeof kinds / sizeof kinds[0])

/* One chunk: items [lo, hi) of n, item_size result bytes each. */
typedef struct span {
    uint32_t kind, pad;
    uint64_t n, item_size, lo, hi;
} span_t;

/* The serving rank's attached ctx.  A rank runs one job at a time on its
 * serving thread (no rank_processes), so this needs no lock. */
static struct {
    const lab_mpi_kind_t *kind;
    const void *in;
    uint64_t n;
    void *ctx, *results;
} att;

static int lab_mpi_chunk(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    span_t s;
    if (in_size != sizeof s) return async_work_fail(ASYNC_EINVAL, "lab: a chunk of %zu bytes", in_size);
    memcpy(&s, in, sizeof s);
    if (s.kind >= NKINDS || s.lo > s.hi || s.hi > s.n || (s.hi - s.lo) * s.item_size > out_size)
        return async_work_fail(ASYNC_EINVAL, "lab: a malformed chunk (kind %u, [%llu, %llu) of %llu)", s.kind,
                               (unsigned long long)s.lo, (unsigned long long)s.hi, (unsigned long long)s.n);
    const lab_mpi_kind_t *k = kinds[s.kind];
    if (att.kind != k || att.in != ctx || att.n != s.n) {
        if (att.ctx) att.kind->detach(att.ctx);
        att.kind = k;
        att.in = ctx;
        att.n = s.n;
        att.ctx = k->attach(ctx, s.n, &att.results);
        if (!att.ctx) {
            att.kind = NULL;
            return async_work_fail(ASYNC_ENOMEM, "lab: rank %d: no memory for %s's %llu items", async_mpi_rank(),
                                   k->name, (unsigned long long)s.n);
        }
    }
    k->fn(att.ctx, s.lo, s.hi);
    memcpy(out, (char *)att.results + s.lo * s.item_size, (s.hi - s.lo) * s.item_size);
    return 0;
}
ASYNC_MPI_WORK(lab_mpi_chunk);

static async_executor_t *ex;

bool lab_mpi_built(void)
{
    return true;
}

void lab_mpi_start(int *argc, char ***argv)
{
    char msg[256];
    int rc = async_mpi_init(argc, argv, NULL, msg, sizeof msg);
    if (rc) lab_die("--mode mpi: %s: %s (run it as: mpirun -np 3 demos/lab/lab WORKLOAD --mode mpi)",
                    async_strerror(rc), msg[0] ? msg : "MPI did not start");
}

unsigned lab_mpi_workers(void)
{
    return async_mpi_size() > 1 ? (unsigned)async_mpi_size() - 1 : 0;
}

void lab_mpi_end(void)
{
    if (ex) async_executor_free(ex);
    ex = NULL;
    async_mpi_finalize();
}

/* The one MPI executor of the run (the serving ranks exit with it). */
static async_executor_t *executor(double *start_s)
{
    if (!ex) {
        double t0 = lab_now();
        int rc = async_executor_new(&ex, &(async_executor_opts_t){.backend = ASYNC_BACKEND_MPI});
        if (rc) lab_die("cannot start the MPI executor: %s", async_strerror(rc));
        if (start_s) *start_s = lab_now() - t0;
    }
    return ex;
}

typedef struct mpi_run {
    uint32_t kind;
    const void *ctx; /* the replicated input, or NULL */
    size_t n, chunk, item_size, nchunks;
    span_t *spans;
    char *rows; /* nchunks x chunk items: the last chunk's row is partly unused */
    void *out;
} mpi_run_t;

static double mpi_once(void *arg, double *start_s)
{
    mpi_run_t *m = arg;
    async_executor_t *e = executor(start_s);
    async_map_t map = {.fn = lab_mpi_chunk, .ctx = (void *)m->ctx, .in = m->spans, .in_size = sizeof *m->spans,
                       .out = m->rows, .out_size = m->chunk * m->item_size, .n = m->nchunks, .chunksize = 1};
    async_map_error_t err;
    double t0 = lab_now();
    int rc = async_executor_map(e, &map, &err);
    if (rc) lab_die("mpi map failed at chunk %zu: %s: %s", err.index, async_strerror(rc), err.message);
    memcpy(m->out, m->rows, m->n * m->item_size);
    return lab_now() - t0;
}

double lab_mpi_run(const lab_mpi_kind_t *kind, const void *in, size_t in_size, size_t n, size_t chunk, void *out,
                   size_t out_size, double *start_s)
{
    if (start_s) *start_s = 0;
    uint32_t k = 0;
    while (k < NKINDS && kinds[k] != kind) k++;
    if (k == NKINDS || n == 0 || out_size % n) lab_die("mpi: %s is not a kind the ranks know", kind->name);
    if (chunk == 0) chunk = 1;
    mpi_run_t m = {.kind = k, .n = n, .chunk = chunk, .item_size = out_size / n, .nchunks = (n + chunk - 1) / chunk,
                   .out = out};
    async_executor_t *e = executor(start_s);
    if (in) {
        /* Once per job, not per chunk or per repeat: the ranks keep it. */
        int rc = async_mpi_bcast(e, in, in_size);
        if (rc) lab_die("mpi: cannot replicate %s's %zu input bytes: %s", kind->name, in_size, async_strerror(rc));
        m.ctx = in;
    }
    m.spans = malloc(m.nchunks * sizeof *m.spans);
    m.rows = malloc(m.nchunks * chunk * m.item_size);
    if (!m.spans || !m.rows) lab_die("out of memory");
    for (size_t c = 0; c < m.nchunks; c++) {
        size_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        m.spans[c] = (span_t){.kind = k, .n = n, .item_size = m.item_size, .lo = lo, .hi = hi};
    }
    double t = lab_best_of(mpi_once, &m, NULL);
    free(m.spans);
    free(m.rows);
    return t;
}

#else /* built without Open MPI */

bool lab_mpi_built(void)
{
    return false;
}

void lab_mpi_start(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    lab_die("--mode mpi: this lab was built without Open MPI (install libopenmpi-dev and openmpi-bin, then "
            "make)");
}

unsigned lab_mpi_workers(void)
{
    return 0;
}

void lab_mpi_end(void) {}

double lab_mpi_run(const lab_mpi_kind_t *kind, const void *in, size_t in_size, size_t n, size_t chunk, void *out,
                   size_t out_size, double *start_s)
{
    (void)in, (void)in_size, (void)n, (void)chunk, (void)out, (void)out_size, (void)start_s;
    lab_die("mpi: %s: this lab was built without Open MPI", kind->name);
}

#endif
