/* The lab demo's shared declarations: options, the mode runner, shared
 * memory, numpy's generator, Python's text, CSV, reports, soln.json and
 * the report file.
 *
 * Every workload keeps its data and results in shared memory (lab_shared_*)
 * allocated before a pool starts, so the same range function runs unchanged
 * serially, on threads and in worker processes, and every mode writes its
 * results to the same kind of memory: that is what lets the lab check that
 * the modes agree byte for byte. */
#ifndef LAB_H
#define LAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>
#include "async/executor.h"
#include "async/progress.h"
#include "../../common/outfile.h"

/* LAB_MPI runs only under mpirun (--mode mpi, mpi.c); the modes below
 * LAB_NPOOLS start a pool of their own in this process. */
typedef enum lab_mode { LAB_SERIAL, LAB_THREADS, LAB_PROCESSES, LAB_MPI, LAB_NMODES } lab_mode_t;
#define LAB_NPOOLS LAB_MPI

extern const char *const lab_mode_name[LAB_NMODES];

typedef struct lab_opts {
    double scale;       /* sizes and durations are multiplied by this */
    unsigned workers;   /* pool size for threads and processes */
    unsigned modes;     /* bit (1 << mode) for each mode to run */
    uint64_t seed;
    bool seed_set;      /* --seed given: it replaces the notebooks' seeds too */
    unsigned repeat;    /* runs per timing; the best counts */
    const char *input, *output, *plot_dir, *soln, *report;
    int ncpu;
} lab_opts_t;

extern lab_opts_t lab_opt;
/* Per-workload figures, written into the report file (lab-report.json). */
extern json_t *lab_figures;

/* --- util.c --------------------------------------------------------------- */
double lab_now(void); /* seconds, monotonic */
/* Zeroed shared memory (MAP_SHARED | MAP_ANONYMOUS); exits on failure. */
void *lab_shared_alloc(size_t size);
void lab_shared_free(void *p, size_t size);
/* splitmix64, for data with no notebook counterpart (factors): a fixed seed
 * gives the same data on every run and machine. */
uint64_t lab_rand(uint64_t *state);
uint64_t lab_fnv(const void *data, size_t len, uint64_t h); /* FNV-1a, h = 0 to start */
size_t lab_scaled(size_t n, size_t min);                    /* n * scale, at least min */
void lab_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Why a file cannot be written at path (an empty name, a directory, its folder is
 * missing or not writable), or NULL if it can: checked before a run so that
 * minutes of work do not end in "cannot write". */
const char *lab_unwritable(const char *path);
/* Whether paths a and b name one file (the same inode if both exist, else
 * the same name in the same resolved folder). */
bool lab_same_file(const char *a, const char *b);

typedef struct lab_result {
    double secs[LAB_NMODES];
    uint64_t sum[LAB_NMODES]; /* FNV of the mode's results */
    bool ran[LAB_NMODES];
    double start[LAB_NMODES]; /* pool start-up, not in secs; 0 if unknown */
    double others[LAB_NMODES]; /* CPUs other programs used during the run */
    unsigned workers; /* the parallel modes' pool size; 0: lab_opt.workers */
} lab_result_t;

/* --- mt.c: numpy's legacy generator (RandomState), bit for bit ----------- */
typedef struct lab_mt {
    uint32_t key[624];
    int pos;
} lab_mt_t;
void lab_mt_seed(lab_mt_t *mt, uint32_t seed);      /* np.random.seed(seed) */
uint32_t lab_mt_next32(lab_mt_t *mt);               /* genrand_int32 */
double lab_mt_double(lab_mt_t *mt);                 /* random_sample(): [0, 1), 53 bits */
int64_t lab_mt_randint(lab_mt_t *mt, int64_t low, int64_t high); /* randint: [low, high) */

/* The seeds of the notebooks' data, unless --seed replaces them. */
#define LAB_SEED_NORMALIZE 42
#define LAB_SEED_HOWMANY 100
/* A digest of a stream of 64-bit values that numpy computes in one line:
 * sum of (v_i + 1) * (2 i + 1) modulo 2^64.  Every weight is odd, so a
 * change to any one value changes the digest. */
typedef struct lab_digest {
    uint64_t sum, i;
} lab_digest_t;
static inline void lab_digest_add(lab_digest_t *d, uint64_t v)
{
    d->sum += (v + 1) * (2 * d->i++ + 1);
}

/* --- pyfmt.c: Python's text for floats, lists and JSON strings ------------ */
typedef struct lab_str {
    char *s;
    size_t len, cap;
} lab_str_t;
/* repr(x) into buf (cap >= 32); returns its length. */
size_t lab_py_float(double x, char *buf, size_t cap);
void lab_str_add(lab_str_t *s, const char *text, size_t len);
void lab_str_puts(lab_str_t *s, const char *text);
void lab_str_float(lab_str_t *s, double x);
/* str() of a list of nrows lists: row r is v[off[r] .. off[r + 1]). */
void lab_py_rows(lab_str_t *s, const double *v, const size_t *off, size_t nrows, bool ints);
/* A JSON string literal as json.dumps (ensure_ascii) writes it. */
void lab_json_string(lab_str_t *s, const char *text);

/* --- runner.c: one range function, three modes ---------------------------- */
/* Processes items [lo, hi) of the job at ctx.  ctx and everything it points
 * to must live in lab_shared_alloc memory (or be read-only data that existed
 * before the pool started) so that worker processes see it. */
typedef void (*lab_range_fn)(void *ctx, size_t lo, size_t hi);

/* Runs fn over [0, n) in chunks of `chunk` items in `mode` with `workers`
 * workers; shows a progress bar labelled `label` for runs over a second.
 * A NULL label means no bar; without a bar (stderr is not a terminal) the
 * run is a plain map instead of an imap.  With
 * lab_opt.repeat > 1 the job runs that many times and the best time counts.
 * Returns the seconds the run took (the pool's start-up excluded, reported
 * in *start_s when not NULL).  Exits with a message on a pool failure. */
double lab_run(lab_mode_t mode, unsigned workers, lab_range_fn fn, void *ctx, size_t n, size_t chunk,
               const char *label, double *start_s);
/* The same job through async_executor_map_async on a fresh pool of the
 * mode's backend, then a wait on its future: Pool.map_async(...).get().
 * Returns the seconds from the call to the future being final. */
double lab_run_async(lab_mode_t mode, unsigned workers, lab_range_fn fn, void *ctx, size_t n, size_t chunk);
/* Times once(arg) as lab_run times a run (the best of --repeat runs, and
 * of 5 under 0.1 s; lab_last_others set); *start_s from the first run. */
double lab_best_of(double (*once)(void *arg, double *start_s), void *arg, double *start_s);
/* Runs every mode the user asked for, clearing out (out_size bytes) before
 * each and hashing it after, into r. */
void lab_modes(lab_result_t *r, lab_range_fn fn, void *ctx, size_t n, size_t chunk, const char *label,
               void *out, size_t out_size);
/* The backend each parallel mode is using, for the report. */
const char *lab_backend(lab_mode_t mode);

/* --- mpi.c: the same range functions over MPI ranks (--mode mpi) ---------
 * Ranks share no memory, so a workload that runs over MPI says how a
 * serving rank rebuilds its ctx from bytes: rank 0 replicates the job's
 * read-only input once (async_mpi_bcast), each chunk names its range, the
 * serving rank runs the workload's own range function over its copy and
 * sends that range's results back as the chunk's output bytes, which land
 * where the other modes write them.  The results of item i are the
 * item_size bytes at results + i * item_size (out_size / n of lab_modes),
 * unless the kind places them itself (offset).
 * Every kind is listed in mpi.c's table, the same on every rank. */
typedef struct lab_mpi_kind {
    const char *name;
    lab_range_fn fn;
    /* On a serving rank: a ctx for fn over in (the rank's copy of the
     * replicated input, NULL when there is none) for n items, with room for
     * every item's results, which *results points to; NULL when out of
     * memory.  Kept for the rank's later chunks of the same input. */
    void *(*attach)(const void *in, size_t n, void **results);
    void (*detach)(void *ctx);
    /* NULL for results of one size per item; else the byte offset of item
     * i's results (i in [0, n], so item i ends where i + 1 starts), read
     * from a ctx of the workload's shape: rank 0's own (lab_mpi_call_t.own)
     * or a serving rank's attached one, which must agree. */
    size_t (*offset)(const void *ctx, size_t i);
} lab_mpi_kind_t;

extern const lab_mpi_kind_t lab_mpi_howmany, lab_mpi_primes, lab_mpi_factors, lab_mpi_normalize, lab_mpi_sumsq,
    lab_mpi_heavy, lab_mpi_common, lab_mpi_chunks, lab_mpi_workers_spin, lab_mpi_busywork;

/* lab_modes, and when --mode has mpi, the same job over MPI ranks: in
 * (in_size bytes, or NULL and 0) is the input every serving rank needs to
 * rebuild the ctx with kind->attach; it must stay unchanged until the call
 * returns.  kind NULL: this workload does not run over MPI (lab_modes). */
void lab_modes_mpi(lab_result_t *r, lab_range_fn fn, void *ctx, size_t n, size_t chunk, const char *label,
                   void *out, size_t out_size, const lab_mpi_kind_t *kind, const void *in, size_t in_size);
/* One MPI run of kind over [0, n) in chunks (lab_best_of's timing): the
 * results land in out; *start_s gets the MPI executor's start-up on its
 * first use, 0 after. */
double lab_mpi_run(const lab_mpi_kind_t *kind, const void *in, size_t in_size, size_t n, size_t chunk, void *out,
                   size_t out_size, double *start_s);
/* How lab_mpi_call runs a kind. */
typedef struct lab_mpi_call {
    const lab_mpi_kind_t *kind;
    const void *own;  /* rank 0's ctx of the workload: required by a kind with offset */
    unsigned workers; /* a pool of this many: at most so many chunks in flight (imap's
                       * window); 0 or more than the serving ranks: all of them */
    bool async;       /* one timed run through async_executor_map_async and a wait */
} lab_mpi_call_t;
/* lab_mpi_run with those choices. */
double lab_mpi_call(const lab_mpi_call_t *call, const void *in, size_t in_size, size_t n, size_t chunk, void *out,
                    size_t out_size, double *start_s);
/* The run's one MPI executor (started on first use; *start_s gets its
 * start-up then, 0 after; may be NULL), for workloads that call the
 * executor API themselves.  Never free it: lab_mpi_end does.  Exits with a
 * message when MPI was not started or the lab was built without it. */
async_executor_t *lab_mpi_executor(double *start_s);
/* async_mpi_bcast of size bytes at data, so that data may be a job's ctx on
 * every rank; what names the workload in the message if it fails (exits). */
void lab_mpi_replicate(const void *data, size_t size, const char *what);
/* "rank R: " on a serving rank, "" elsewhere: for a job's failure message,
 * so that the user learns which host it failed on. */
const char *lab_rank_tag(void);
/* Registers fn for the MPI backend under name (async_mpi_register; a no-op
 * without Open MPI); exits if the name is taken.  LAB_MPI_WORK(fn) at file
 * scope does it at start-up, on every rank alike, as ASYNC_MPI_WORK does
 * (which only mpi.c, built with LAB_WITH_MPI, may include). */
void lab_mpi_work(const char *name, async_work_fn fn);
#define LAB_MPI_WORK(fn)                                                                                       \
    __attribute__((constructor)) static void lab__mpi_work_##fn(void)                                         \
    {                                                                                                           \
        lab_mpi_work(#fn, fn);                                                                                  \
    }                                                                                                           \
    struct lab__mpi_work_##fn##_semicolon
/* Whether this lab was built with libasync-mpi. */
bool lab_mpi_built(void);
/* Starts MPI when --mode has mpi (call it once the options are read): only
 * rank 0 returns; the other ranks serve chunks until rank 0 ends and then
 * exit.  pool 0: each serving rank runs its jobs on its own thread; else
 * every rank runs them in a fork-based process pool of its own
 * (async_mpi_opts_t.rank_processes: pool / serving ranks, rounded up),
 * which kills a job at its deadline, and the run's MPI executor has pool
 * driver slots, so pool jobs run at once.  Every rank must pass the same.
 * Exits with a message when MPI cannot start (not under mpirun -np 2 or
 * more). */
void lab_mpi_start(int *argc, char ***argv, unsigned pool);
/* The number of serving ranks (0 before lab_mpi_start). */
unsigned lab_mpi_workers(void);
/* Each serving rank's process pool size (0: no rank pools). */
unsigned lab_mpi_rank_processes(void);
/* Stops the serving ranks and finalizes MPI (also done at exit). */
void lab_mpi_end(void);

/* --- csvio.c -------------------------------------------------------------- */
typedef struct lab_rows {
    size_t nrows;
    size_t *off;   /* nrows + 1 offsets into v */
    double *v;
    char *tag;     /* with LAB_CSV_TAGGED: each row's first field, one char */
    size_t *line;  /* the line each row starts on, for messages */
} lab_rows_t;

enum {
    LAB_CSV_INTS = 1 << 0,   /* every value must be an integer */
    LAB_CSV_SQUARE = 1 << 1, /* every row as long as the first */
    LAB_CSV_TAGGED = 1 << 2, /* the first field is a tag: 'a' or 'b' */
};

/* Reads path into rows; on a bad file (a field that is not a number, a NUL
 * byte, ragged rows, a stray quote, no rows) returns -1 with a message naming
 * the file, line and column in err, and on a read error (a directory: EISDIR)
 * with the system's reason. */
int lab_csv_read(const char *path, unsigned flags, lab_rows_t *rows, char *err, size_t errlen);
void lab_rows_free(lab_rows_t *rows);
/* Opens path for writing results (OUT: o), or exits with a message;
 * lab_csv_finish puts the file in place whole, or exits with the reason
 * and the old file as it was (demos/common/outfile.h). */
FILE *lab_csv_create(demo_out_t *o, const char *path);
void lab_csv_finish(demo_out_t *o, const char *path);

/* --- report.c ------------------------------------------------------------- */
typedef enum lab_bound {
    LAB_BOUND_CPU,      /* compute bound: speedup follows the cores */
    LAB_BOUND_MEMORY,   /* streams memory: bandwidth caps the speedup */
    LAB_BOUND_OVERHEAD, /* tiny tasks: dispatch overhead dominates */
    LAB_BOUND_LONGEST,  /* uneven tasks that wait: the longest one sets the time */
} lab_bound_t;


void lab_header(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the mode table and the verdict; checks that the modes agree (exits
 * non-zero if not); returns the workload's figures object (also stored in
 * lab_figures under name). */
json_t *lab_report(const char *name, const lab_result_t *r, lab_bound_t bound, double work_units,
                   const char *unit);
/* CPUs' worth of other programs' work per second between begin and end (0
 * for spans under 0.2 s, which /proc/stat's ticks cannot resolve). */
typedef struct lab_load {
    double machine, ours, wall;
} lab_load_t;
void lab_load_begin(lab_load_t *l);
double lab_load_end(const lab_load_t *l);
/* The same since the last lab_header. */
double lab_others_cpus(void);
/* Set by lab_run: the other programs' load during its best run. */
extern double lab_last_others;
/* The verdict alone, for sub-tables. */
void lab_verdict(const lab_result_t *r, lab_bound_t bound);
/* Whether the mode was asked for. */
bool lab_want(lab_mode_t mode);

/* --- workloads ------------------------------------------------------------ */
int lab_howmany(void);
int lab_common(void);
int lab_busywork(void);
int lab_normalize(void);
int lab_primes(void);
int lab_factors(void);
int lab_sumsq(void);
int lab_heavy(void);
int lab_chunks(void);
int lab_workers(void);
int lab_pairs(void);     /* lecture.c */
int lab_files(void);     /* lecture.c */
int lab_scheduler(void); /* scheduler.c */
/* data.c: `lab data` prints the generated data's first values and digests. */
int lab_data(void);
/* heavy's input: n = 40,000,000 x scale values of
 * RandomState(seed).random_sample(n). */
size_t lab_heavy_n(void);
void lab_heavy_data(double *x, size_t n);
/* normalize.c: the first rows of the XXL dataset, normalised, from the
 * full-size stream whatever --scale says. */
void lab_norm_first_rows(size_t nrows, double *out /* nrows x 100 */);
/* soln.c: soln.json in the notebook's shape, and every figure of the run in
 * the report file (default: lab-report.json beside soln.json). */
int lab_soln_write(const char *path);
/* The report file's path for the soln file at soln: --report, else
 * lab-report.json in soln's folder (into buf, cap bytes). */
const char *lab_report_path(const char *soln, char *buf, size_t cap);
/* plot.c: writes DIR/NAME.png from the data file and script, or says why not. */
int lab_plot(const char *name, const char *data, const char *script);
/* Why charts cannot be written into dir (an empty name, not a folder, not
 * writable, or missing and mkdir fails), or NULL if they can (a missing dir
 * is made): --plot is checked before the run, as --soln is. */
const char *lab_plot_unwritable(const char *dir);

/* The lab's answers, kept for soln.json: prob1 and prob3 JSON strings
 * (Python's str() of the lists), prob2 an object of part1..part3 reals. */
extern json_t *lab_prob1, *lab_prob2, *lab_prob3;
/* prob2's details (every configuration and mode), for the report. */
extern json_t *lab_prob2_detail;

#endif
