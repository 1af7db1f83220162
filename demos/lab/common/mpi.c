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

static const lab_mpi_kind_t *const kinds[] = {&lab_mpi_howmany,   &lab_mpi_primes, &lab_mpi_factors,
                                              &lab_mpi_normalize, &lab_mpi_sumsq,  &lab_mpi_heavy,
                                              &lab_mpi_common,    &lab_mpi_chunks, &lab_mpi_workers_spin,
                                              &lab_mpi_busywork};
#define NKINDS (sizeof kinds / sizeof kinds[0])

/* One chunk: items [lo, hi) of n, item_size result bytes each (or placed
 * by the kind's offset function when item_size is 0). */
typedef struct span {
    uint32_t kind, pad;
    uint64_t n, item_size, lo, hi;
} span_t;

/* The serving rank's attached ctx.  A rank runs one job at a time on its
 * serving thread, or, with rank pools, one at a time in each worker
 * process, which has its own copy: no lock either way. */
static struct {
    const lab_mpi_kind_t *kind;
    const void *in;
    uint64_t n;
    void *ctx, *results;
} att;

/* Where item i's results start in the results of ctx (i in [0, n]). */
static size_t offset_of(const lab_mpi_kind_t *k, const void *ctx, uint64_t item_size, size_t i)
{
    return k->offset ? k->offset(ctx, i) : i * item_size;
}

static int lab_mpi_chunk(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    span_t s;
    if (in_size != sizeof s) return async_work_fail(ASYNC_EINVAL, "lab: a chunk of %zu bytes", in_size);
    memcpy(&s, in, sizeof s);
    if (s.kind >= NKINDS || s.lo > s.hi || s.hi > s.n || (s.hi - s.lo) * s.item_size > out_size ||
        (kinds[s.kind]->offset != NULL) != (s.item_size == 0))
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
    size_t from = offset_of(k, att.ctx, s.item_size, s.lo), to = offset_of(k, att.ctx, s.item_size, s.hi);
    if (to - from > out_size)
        return async_work_fail(ASYNC_EINVAL, "lab: rank %d: %s's items [%llu, %llu) hold %zu result bytes, room for %zu",
                               async_mpi_rank(), k->name, (unsigned long long)s.lo, (unsigned long long)s.hi,
                               to - from, out_size);
    k->fn(att.ctx, s.lo, s.hi);
    memcpy(out, (char *)att.results + from, to - from);
    return 0;
}
ASYNC_MPI_WORK(lab_mpi_chunk);

const char *lab_rank_tag(void)
{
    static char tag[32];
    int rank = async_mpi_rank();
    if (rank <= 0) return "";
    snprintf(tag, sizeof tag, "rank %d: ", rank);
    return tag;
}

/* A registration that fails is a bug of the lab (two functions under one
 * name): it stops every rank alike, before MPI starts. */
void lab_mpi_work(const char *name, async_work_fn fn)
{
    int rc = async_mpi_register(name, fn);
    if (rc) lab_die("cannot register the work function %s for MPI: %s", name, async_strerror(rc));
}

static async_executor_t *ex;

bool lab_mpi_built(void)
{
    return true;
}

/* rank_processes of this run (0: no rank pools), and the MPI executor's
 * driver slots (0: the backend's default). */
static unsigned rank_processes, slots;

/* Processes per serving rank for a pool of `pool` tasks over all of them,
 * rounded up.  Before MPI starts only Open MPI's environment tells how many
 * ranks there are (OMPI_COMM_WORLD_SIZE, set for every rank mpirun starts,
 * so every rank computes the same); without it, pool, enough for any
 * number of ranks. */
static unsigned per_rank(unsigned pool)
{
    const char *s = getenv("OMPI_COMM_WORLD_SIZE");
    char *end;
    long n = s ? strtol(s, &end, 10) : 0;
    if (!s || *end || n < 2 || n > 1 << 20) return pool;
    return (pool + (unsigned)n - 2) / ((unsigned)n - 1);
}

void lab_mpi_start(int *argc, char ***argv, unsigned pool)
{
    char msg[256];
    async_mpi_opts_t o;
    async_mpi_opts_init(&o);
    if (pool) {
        o.rank_processes = per_rank(pool);
        rank_processes = o.rank_processes;
        slots = pool;
    }
    int rc = async_mpi_init(argc, argv, &o, msg, sizeof msg);
    if (rc) lab_die("--mode mpi: %s: %s (run it as: mpirun -np 3 demos/lab/lab WORKLOAD --mode mpi)",
                    async_strerror(rc), msg[0] ? msg : "MPI did not start");
}

unsigned lab_mpi_workers(void)
{
    return async_mpi_size() > 1 ? (unsigned)async_mpi_size() - 1 : 0;
}

unsigned lab_mpi_rank_processes(void)
{
    return rank_processes;
}

void lab_mpi_end(void)
{
    if (ex) async_executor_free(ex);
    ex = NULL;
    async_mpi_finalize();
}

/* The one MPI executor of the run (the serving ranks exit with it). */
async_executor_t *lab_mpi_executor(double *start_s)
{
    if (start_s) *start_s = 0;
    if (async_mpi_rank() != 0) lab_die("--mode mpi: MPI was not started (lab_mpi_start)");
    if (!ex) {
        double t0 = lab_now();
        int rc = async_executor_new(&ex, &(async_executor_opts_t){.backend = ASYNC_BACKEND_MPI, .workers = slots});
        if (rc) lab_die("cannot start the MPI executor: %s", async_strerror(rc));
        if (start_s) *start_s = lab_now() - t0;
    }
    return ex;
}

void lab_mpi_replicate(const void *data, size_t size, const char *what)
{
    int rc = async_mpi_bcast(lab_mpi_executor(NULL), data, size);
    if (rc) lab_die("mpi: cannot replicate %s's %zu input bytes: %s", what, size, async_strerror(rc));
}

typedef struct mpi_run {
    const lab_mpi_kind_t *kind;
    const void *ctx; /* the replicated input, or NULL */
    const void *own; /* rank 0's ctx of the workload, for the kind's offsets */
    size_t n, nchunks, room; /* room: the most result bytes of one chunk */
    span_t *spans;
    char *rows; /* nchunks x room bytes */
    void *out;
    unsigned workers; /* chunks in flight at most; 0: every serving rank */
    bool async;
} mpi_run_t;

static size_t run_offset(const mpi_run_t *m, size_t i)
{
    return offset_of(m->kind, m->own, m->spans[0].item_size, i);
}

/* Pool.map: every chunk at once, the caller asleep until the last. */
static void run_map(async_executor_t *e, const async_map_t *map)
{
    async_map_error_t err;
    int rc = async_executor_map(e, map, &err);
    if (rc) lab_die("mpi map failed at chunk %zu: %s: %s", err.index, async_strerror(rc), err.message);
}

/* Pool.map_async(...).get(): the same map behind a future. */
static void run_map_async(async_executor_t *e, const async_map_t *map)
{
    async_future_t *f = NULL;
    int rc = async_executor_map_async(&f, e, map, NULL, NULL, NULL);
    if (rc == 0) rc = async_future_wait(f);
    if (rc == 0) rc = async_future_error(f);
    if (rc) lab_die("mpi map_async failed: %s: %s", async_strerror(rc), f ? async_future_message(f) : "");
    async_future_unref(f);
}

/* A pool of `window` workers on ranks that may be more: imap keeps at most
 * window chunks in flight, so at most that many ranks work at once. */
static void run_window(async_executor_t *e, const async_map_t *map, unsigned window)
{
    async_imap_t im = {.fn = map->fn, .ctx = map->ctx, .in = map->in, .in_size = map->in_size,
                       .out_size = map->out_size, .n = map->n, .chunksize = 1, .unordered = true, .window = window};
    async_imap_iter_t *it;
    int rc = async_executor_imap(&it, e, &im);
    if (rc) lab_die("mpi imap: %s", async_strerror(rc));
    size_t index;
    char *slot = malloc(map->out_size ? map->out_size : 1);
    if (!slot) lab_die("out of memory");
    while ((rc = async_imap_next(it, slot, &index)) == 0) memcpy((char *)map->out + index * map->out_size, slot, map->out_size);
    if (rc != ASYNC_EEOF) lab_die("mpi chunk %zu failed: %s: %s", index, async_strerror(rc), async_imap_message(it));
    async_imap_free(it);
    free(slot);
}

static double mpi_once(void *arg, double *start_s)
{
    mpi_run_t *m = arg;
    async_executor_t *e = lab_mpi_executor(start_s);
    async_map_t map = {.fn = lab_mpi_chunk, .ctx = (void *)m->ctx, .in = m->spans, .in_size = sizeof *m->spans,
                       .out = m->rows, .out_size = m->room, .n = m->nchunks, .chunksize = 1};
    double t0 = lab_now();
    if (m->async) run_map_async(e, &map);
    else if (m->workers && m->workers < lab_mpi_workers()) run_window(e, &map, m->workers);
    else run_map(e, &map);
    for (size_t c = 0; c < m->nchunks; c++) {
        size_t from = run_offset(m, m->spans[c].lo);
        memcpy((char *)m->out + from, m->rows + c * m->room, run_offset(m, m->spans[c].hi) - from);
    }
    return lab_now() - t0;
}

double lab_mpi_call(const lab_mpi_call_t *call, const void *in, size_t in_size, size_t n, size_t chunk, void *out,
                    size_t out_size, double *start_s)
{
    const lab_mpi_kind_t *kind = call->kind;
    if (start_s) *start_s = 0;
    uint32_t k = 0;
    while (k < NKINDS && kinds[k] != kind) k++;
    if (k == NKINDS) lab_die("mpi: %s is not a kind the ranks know", kind->name);
    if (n == 0 || (!kind->offset && out_size % n)) lab_die("mpi: %s: %zu result bytes for %zu items", kind->name, out_size, n);
    if (kind->offset && !call->own) lab_die("mpi: %s places its results by its ctx, and none was given", kind->name);
    if (chunk == 0) chunk = 1;
    uint64_t item_size = kind->offset ? 0 : out_size / n;
    mpi_run_t m = {.kind = kind, .own = call->own, .n = n, .nchunks = (n + chunk - 1) / chunk, .out = out,
                   .workers = call->workers, .async = call->async};
    lab_mpi_executor(start_s); /* its start-up is timed apart, before the replication */
    if (in) {
        /* Once per job, not per chunk or per repeat: the ranks keep it. */
        lab_mpi_replicate(in, in_size, kind->name);
        m.ctx = in;
    }
    m.spans = malloc(m.nchunks * sizeof *m.spans);
    if (!m.spans) lab_die("out of memory");
    for (size_t c = 0; c < m.nchunks; c++) {
        size_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        m.spans[c] = (span_t){.kind = k, .n = n, .item_size = item_size, .lo = lo, .hi = hi};
    }
    for (size_t c = 0; c < m.nchunks; c++) {
        size_t bytes = run_offset(&m, m.spans[c].hi) - run_offset(&m, m.spans[c].lo);
        if (bytes > m.room) m.room = bytes;
    }
    m.rows = malloc(m.nchunks * (m.room ? m.room : 1));
    if (!m.rows) lab_die("out of memory");
    double t = call->async ? mpi_once(&m, NULL) : lab_best_of(mpi_once, &m, NULL);
    free(m.spans);
    free(m.rows);
    return t;
}

double lab_mpi_run(const lab_mpi_kind_t *kind, const void *in, size_t in_size, size_t n, size_t chunk, void *out,
                   size_t out_size, double *start_s)
{
    return lab_mpi_call(&(lab_mpi_call_t){.kind = kind}, in, in_size, n, chunk, out, out_size, start_s);
}

#else /* built without Open MPI */

bool lab_mpi_built(void)
{
    return false;
}

void lab_mpi_start(int *argc, char ***argv, unsigned pool)
{
    (void)argc, (void)argv, (void)pool;
    lab_die("--mode mpi: this lab was built without Open MPI (install libopenmpi-dev and openmpi-bin, then "
            "make)");
}

unsigned lab_mpi_workers(void)
{
    return 0;
}

unsigned lab_mpi_rank_processes(void)
{
    return 0;
}

void lab_mpi_end(void) {}

double lab_mpi_call(const lab_mpi_call_t *call, const void *in, size_t in_size, size_t n, size_t chunk, void *out,
                    size_t out_size, double *start_s)
{
    (void)in, (void)in_size, (void)n, (void)chunk, (void)out, (void)out_size, (void)start_s;
    lab_die("mpi: %s: this lab was built without Open MPI", call->kind->name);
}

double lab_mpi_run(const lab_mpi_kind_t *kind, const void *in, size_t in_size, size_t n, size_t chunk, void *out,
                   size_t out_size, double *start_s)
{
    return lab_mpi_call(&(lab_mpi_call_t){.kind = kind}, in, in_size, n, chunk, out, out_size, start_s);
}

const char *lab_rank_tag(void)
{
    return "";
}

/* Without Open MPI nothing is registered: no rank will ever ask. */
void lab_mpi_work(const char *name, async_work_fn fn)
{
    (void)name, (void)fn;
}

async_executor_t *lab_mpi_executor(double *start_s)
{
    (void)start_s;
    lab_die("--mode mpi: this lab was built without Open MPI");
}

void lab_mpi_replicate(const void *data, size_t size, const char *what)
{
    (void)data, (void)size;
    lab_die("mpi: %s: this lab was built without Open MPI", what);
}

#endif
