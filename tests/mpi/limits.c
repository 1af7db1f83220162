/* The MPI registry at its bound, ASYNC_MPI_DATA_MAX data: `limits CASE`
 * (tests/mpi/cases.h has the frame of the mpirun cases).
 *
 *   data_max   under mpirun -np 3: every rank registers ASYNC_MPI_DATA_MAX
 *              data; one more is ASYNC_EFULL and changes nothing; every
 *              registered datum then serves as a job's ctx on its rank;
 *   bcast_max  under mpirun -np 3: one entry short of the bound, a
 *              replication fills it; the next ones are ASYNC_EFULL and the
 *              copy that jobs read stays the one replicated;
 *   index [K]  no MPI: the registry's hash indexes against a scan, with
 *              each allocation of every registration failing in turn, and
 *              with the K-th allocation of the freeze failing (0: none);
 *   time [N]   no MPI: registers N data names (default ASYNC_MPI_DATA_MAX)
 *              and N work function names, and prints how long each took,
 *              one line per figure (the harness of docs/mpi.md's registry
 *              figures; run it alone, not under mpirun).
 * Run by tests/test-mpi-limits.c. */
#include "cases.h"

/* --- a counting allocator, failing the armed allocation ------------------------------ */

/* Installed before any constructor registers a function (priority 101 runs
 * before the default), so that live counts every block of libasync's. */
static _Atomic long live, countdown = -1, fails;

static bool fail_now(void)
{
    long c = atomic_load(&countdown);
    while (c > 0 && !atomic_compare_exchange_weak(&countdown, &c, c - 1)) {
    }
    if (c != 1) return false;
    atomic_fetch_add(&fails, 1);
    return true;
}

static void *c_malloc(size_t n, void *ud)
{
    (void)ud;
    void *p = fail_now() ? NULL : malloc(n);
    if (p) atomic_fetch_add(&live, 1);
    return p;
}

static void *c_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    if (fail_now()) return NULL;
    void *q = realloc(p, n);
    if (q && !p) atomic_fetch_add(&live, 1);
    return q;
}

static void c_free(void *p, void *ud)
{
    (void)ud;
    if (p) atomic_fetch_sub(&live, 1);
    free(p);
}

static const async_allocator_t counting = {c_malloc, c_realloc, c_free, NULL};

__attribute__((constructor(101))) static void install_counting(void) { async_set_allocator(&counting); }

/* Arms the n-th allocation from now to fail. */
static void arm(long n) { atomic_store(&countdown, n); }
/* Disarms; true if the armed allocation was reached (and failed). */
static bool disarm(long f0)
{
    atomic_store(&countdown, -1);
    return atomic_load(&fails) > f0;
}

/* The value every rank computes alike for datum k. */
static int64_t val_of(size_t k) { return (int64_t)((k * 2654435761u) % 1000003u) - 500000; }

static int64_t vals[ASYNC_MPI_DATA_MAX];
static int64_t extra[4];

/* --- data_max and bcast_max: before init, on every rank ------------------------------ */

/* Registers data k = 0 .. n-1 as "d-K" (cases_main registered "table"). */
static void register_vals(size_t n)
{
    char name[32];
    size_t bad = 0;
    for (size_t k = 0; k < n; k++) {
        vals[k] = val_of(k);
        snprintf(name, sizeof name, "d-%05zu", k);
        int r = async_mpi_register_data(name, &vals[k]);
        if (r && !bad++) CHECK(0, "register_data %s: %s", name, async_errname(r));
    }
    CHECK(!bad, "%zu of %zu registrations failed", bad, n);
}

static void before_init(const char *c)
{
    if (!strcmp(c, "bcast_max")) {
        register_vals(ASYNC_MPI_DATA_MAX - 2); /* and "table": one short of the bound */
        return;
    }
    if (strcmp(c, "data_max")) return;
    int64_t t0 = async_now();
    register_vals(ASYNC_MPI_DATA_MAX - 1); /* and "table": the bound exactly */
    printf("data_max: a rank registered %d data in %.3f s\n", ASYNC_MPI_DATA_MAX, since_s(t0));
    long live0 = atomic_load(&live);
    /* One more: refused, twice, whatever its name; nothing allocated. */
    int r = async_mpi_register_data("one-too-many", extra);
    CHECK(r == ASYNC_EFULL && !strcmp(async_errname(r), "ASYNC_EFULL") && strstr(async_strerror(r), "capacity"),
          "data %d: %s '%s'", ASYNC_MPI_DATA_MAX + 1, async_errname(r), async_strerror(r));
    printf("data_max: data %d: %s '%s'\n", ASYNC_MPI_DATA_MAX + 1, async_errname(r), async_strerror(r));
    CHECK((r = async_mpi_register_data("one-too-many", extra)) == ASYNC_EFULL, "again: %s", async_errname(r));
    CHECK((r = async_mpi_register_data("zz-last", &extra[1])) == ASYNC_EFULL, "another name: %s",
          async_errname(r));
    /* Full, the other errors keep their order: a name taken is EINVAL, the
     * same registration again is allowed, a bad name is EINVAL. */
    CHECK((r = async_mpi_register_data("d-00007", &vals[7])) == 0, "the same registration, full: %s",
          async_errname(r));
    CHECK((r = async_mpi_register_data("d-00007", extra)) == ASYNC_EINVAL, "a name taken, full: %s",
          async_errname(r));
    CHECK((r = async_mpi_register_data("table", table)) == 0, "table again, full: %s", async_errname(r));
    CHECK((r = async_mpi_register_data("", extra)) == ASYNC_EINVAL, "an empty name, full: %s", async_errname(r));
    CHECK((r = async_mpi_register_data(NULL, extra)) == ASYNC_EINVAL, "a NULL name, full: %s", async_errname(r));
    char long_name[65];
    memset(long_name, 'd', 64);
    long_name[64] = '\0';
    CHECK((r = async_mpi_register_data(long_name, extra)) == ASYNC_EINVAL, "a 64-byte name, full: %s",
          async_errname(r));
    CHECK(atomic_load(&live) == live0, "refused registrations kept %ld blocks", atomic_load(&live) - live0);
    /* Functions have a table of their own: the data bound is not theirs. */
    CHECK((r = async_mpi_register("limits_square", square_i64)) == 0, "a function, data full: %s",
          async_errname(r));
}

/* --- data_max and bcast_max: rank 0, with the executor -------------------------------- */

/* stamp_at(row) with ctx on the direct path, or through a future. */
static int stamp(void *ctx, uint32_t row, bool future, int64_t *got, char *msg, size_t cap)
{
    async_job_t j = {.fn = stamp_at, .ctx = ctx, .in = &row, .in_size = 4, .out_size = 8};
    if (!future) return async_executor_run(ex, &j, got, NULL, msg, cap);
    async_future_t *f;
    int r = async_executor_submit(&f, ex, &j);
    if (r) return r;
    r = async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(60)));
    const void *d;
    size_t n = 0;
    if (!r && !async_future_result(f, &d, &n) && n == 8) memcpy(got, d, 8);
    snprintf(msg, cap, "%s", async_future_message(f));
    async_future_unref(f);
    return r;
}

static void c_data_max(void)
{
    char msg[ASYNC_FUTURE_MSG_MAX] = "";
    int64_t got = 0;
    /* The refused pointer is no job's ctx. */
    int r = stamp(extra, 0, false, &got, msg, sizeof msg);
    CHECK(r == ASYNC_EINVAL && strstr(msg, "is neither NULL nor data registered"), "ctx refused at the bound: %s '%s'",
          async_errname(r), msg);
    printf("data_max: a job naming the refused data: %s '%s'\n", async_errname(r), msg);
    /* Replication needs an entry too: refused, nothing sent. */
    CHECK((r = async_mpi_bcast(ex, extra, sizeof extra)) == ASYNC_EFULL, "bcast, full: %s", async_errname(r));
    CHECK((r = async_mpi_bcast_dl(ex, extra, sizeof extra, async_deadline_after(ASYNC_SEC(30)))) == ASYNC_EFULL,
          "bcast_dl, full: %s", async_errname(r));
    CHECK((r = stamp(extra, 0, true, &got, msg, sizeof msg)) == ASYNC_EINVAL, "ctx refused (submit): %s",
          async_errname(r));
    /* Every registered datum, as its rank's own copy, on the direct path. */
    int64_t t0 = async_now();
    size_t bad = 0;
    for (size_t k = 0; k < ASYNC_MPI_DATA_MAX - 1; k++) {
        got = INT64_MIN;
        r = stamp(&vals[k], 0, false, &got, msg, sizeof msg);
        if ((r || got != vals[k]) && !bad++)
            CHECK(0, "ctx d-%05zu: %s %lld != %lld '%s'", k, async_errname(r), (long long)got, (long long)vals[k],
                  msg);
    }
    CHECK(!bad, "%zu of %d registered data read wrong", bad, ASYNC_MPI_DATA_MAX - 1);
    printf("data_max: %d runs, each naming another registered datum: %.3f s\n", ASYNC_MPI_DATA_MAX - 1,
           since_s(t0));
    /* Some through the driver slots too, and the table cases_main registered. */
    for (size_t k = 0; k < ASYNC_MPI_DATA_MAX - 1; k += 4099) {
        r = stamp(&vals[k], 0, true, &got, msg, sizeof msg);
        CHECK(r == 0 && got == vals[k], "submit ctx d-%05zu: %s '%s'", k, async_errname(r), msg);
    }
    r = stamp(table, 5, true, &got, msg, sizeof msg);
    CHECK(r == 0 && got == table[5], "the table: %s '%s'", async_errname(r), msg);
    /* A map over the first datum as an array: row i is vals[i]. */
    enum { N = 4096 };
    static uint32_t rows[N];
    static int64_t out[N];
    for (uint32_t i = 0; i < N; i++) rows[i] = i;
    async_map_t m = {.fn = stamp_at, .ctx = vals, .in = rows, .in_size = 4, .out = out, .out_size = 8, .n = N};
    async_map_error_t err = {0};
    r = async_executor_map(ex, &m, &err);
    CHECK(r == 0 && !memcmp(out, vals, sizeof out), "a map over d-00000: %s %s", async_errname(r), err.message);
}

static void c_bcast_max(void)
{
    static int64_t rep[4], first[4], other[4];
    for (int i = 0; i < 4; i++) first[i] = rep[i] = val_of((size_t)i + 7), other[i] = -rep[i];
    char msg[ASYNC_FUTURE_MSG_MAX] = "";
    int64_t got = 0;
    int r = async_mpi_bcast(ex, rep, sizeof rep); /* the bound's last entry */
    CHECK(r == 0, "bcast of the last entry: %s", async_errname(r));
    r = stamp(rep, 2, false, &got, msg, sizeof msg);
    CHECK(r == 0 && got == first[2], "the last entry: %s %lld '%s'", async_errname(r), (long long)got, msg);
    /* Replicating it again with new bytes needs a new entry: refused, and
     * jobs still read the copy the ranks hold (before, rank 0 forgot it
     * first, and they failed: "ctx ... is neither NULL nor data"). */
    for (int i = 0; i < 4; i++) rep[i] += 1000;
    CHECK((r = async_mpi_bcast(ex, rep, sizeof rep)) == ASYNC_EFULL, "bcast again, full: %s", async_errname(r));
    for (int future = 0; future < 2; future++) {
        r = stamp(rep, 2, future, &got, msg, sizeof msg);
        CHECK(r == 0 && got == first[2], "after the refused bcast (%s): %s %lld (want %lld) '%s'",
              future ? "submit" : "run", async_errname(r), (long long)got, (long long)first[2], msg);
    }
    printf("bcast_max: a job naming the data whose new bytes were refused: %s, reads %lld (replicated %lld)\n",
           async_errname(r), (long long)got, (long long)first[2]);
    CHECK((r = async_mpi_bcast(ex, other, sizeof other)) == ASYNC_EFULL, "bcast of new data, full: %s",
          async_errname(r));
    CHECK((r = async_mpi_bcast_dl(ex, other, sizeof other, async_deadline_after(ASYNC_SEC(30)))) == ASYNC_EFULL,
          "bcast_dl, full: %s", async_errname(r));
    CHECK((r = async_mpi_bcast(ex, table, sizeof table)) == ASYNC_EFULL, "bcast of the table, full: %s",
          async_errname(r));
    r = stamp(table, 3, false, &got, msg, sizeof msg);
    CHECK(r == 0 && got == table[3], "the table: %s '%s'", async_errname(r), msg);
    r = stamp(other, 0, false, &got, msg, sizeof msg);
    CHECK(r == ASYNC_EINVAL, "data never replicated: %s '%s'", async_errname(r), msg);
    r = stamp(&vals[ASYNC_MPI_DATA_MAX - 3], 0, false, &got, msg, sizeof msg);
    CHECK(r == 0 && got == vals[ASYNC_MPI_DATA_MAX - 3], "the last registered: %s '%s'", async_errname(r), msg);
}

static bool run_case(const char *c)
{
    if (!strcmp(c, "data_max")) c_data_max();
    else if (!strcmp(c, "bcast_max")) c_bcast_max();
    else return false;
    return true;
}

/* --- index: the hash indexes against a scan, allocations failing --------------------- */

static int sum_chunk(const void *in, size_t in_size, void *out, size_t out_size, size_t count, size_t *failed,
                     void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)count, (void)failed, (void)ctx;
    return 0;
}

static int unregistered_fn(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in, (void)in_size, (void)out, (void)out_size, (void)ctx;
    return 0;
}

/* op() with each of its allocations failing in turn (the 1st, 2nd, ...)
 * until one makes no allocation that fails: each failure must be
 * ASYNC_ENOMEM and leave check() true; returns op's last result. */
static int each_failing(const char *what, int (*op)(void *), void *arg, bool (*check)(void *), long *enomem)
{
    for (long n = 1; n < 64; n++) {
        long f0 = atomic_load(&fails);
        arm(n);
        int r = op(arg);
        if (!disarm(f0)) return r;
        if (r != ASYNC_ENOMEM) CHECK(0, "%s, allocation %ld failing: %s", what, n, async_errname(r));
        if (check && !check(arg)) CHECK(0, "%s, allocation %ld failing, left a trace", what, n);
        (*enomem)++;
    }
    CHECK(0, "%s made 64 allocations", what);
    return ASYNC_ENOMEM;
}

typedef struct reg_arg {
    char name[32];
    void *ptr;
    async_work_fn fn;
} reg_arg_t;

static int op_register_data(void *a) { return async_mpi_register_data(((reg_arg_t *)a)->name, ((reg_arg_t *)a)->ptr); }
static int op_register(void *a) { return async_mpi_register(((reg_arg_t *)a)->name, ((reg_arg_t *)a)->fn); }

typedef struct add_arg {
    void *ptr;
    uint32_t before; /* ctx index of ptr before the replication (0: none) */
} add_arg_t;

static int op_data_add(void *a)
{
    int id = async__mpi_data_add(((add_arg_t *)a)->ptr, false);
    return id < 0 ? id : 0;
}

/* A refused replication leaves the pointer naming what it named. */
static bool same_ctx(void *a)
{
    add_arg_t *x = a;
    uint32_t idx = 0;
    int r = async__mpi_ctx_index(x->ptr, &idx);
    return x->before ? r == 0 && idx == x->before : r == ASYNC_EINVAL;
}

static uint32_t ctx_of(const void *p)
{
    uint32_t idx = 0;
    return async__mpi_ctx_index(p, &idx) ? 0 : idx;
}

/* The index a scan finds first for fn, as the registry did before. */
static uint32_t scan_first(async_work_fn fn, size_t n)
{
    for (uint32_t j = 0; j < n; j++)
        if (async__mpi_fn_at(j) == fn) return j;
    return UINT32_MAX;
}

static int index_case(long k_freeze)
{
    enum { ND = 3000, NF = 2000 };
    static char d[ND];
    long enomem = 0;
    reg_arg_t a;
    for (size_t i = 0; i < ND; i++) {
        snprintf(a.name, sizeof a.name, "x-%05zu", ND - 1 - i); /* registered in reverse: the sort moves all */
        a.ptr = &d[ND - 1 - i];
        int r = each_failing("register_data", op_register_data, &a, NULL, &enomem);
        CHECK(r == 0, "register_data %s: %s", a.name, async_errname(r));
    }
    for (size_t i = 0; i < NF; i++) {
        snprintf(a.name, sizeof a.name, "f-%05zu", i);
        a.fn = i % 2 ? square_i64 : whoami;
        int r = each_failing("register", op_register, &a, NULL, &enomem);
        CHECK(r == 0, "register %s: %s", a.name, async_errname(r));
    }
    int r;
    CHECK((r = async_mpi_register_chunk("sum_chunk", sum_chunk)) == 0, "register_chunk: %s", async_errname(r));
    /* The duplicate checks, as before the indexes. */
    for (size_t i = 0; i < ND; i += 97) {
        snprintf(a.name, sizeof a.name, "x-%05zu", i);
        CHECK((r = async_mpi_register_data(a.name, &d[i])) == 0, "%s again: %s", a.name, async_errname(r));
        CHECK((r = async_mpi_register_data(a.name, &d[(i + 1) % ND])) == ASYNC_EINVAL, "%s taken: %s", a.name,
              async_errname(r));
    }
    for (size_t i = 0; i < NF; i += 89) {
        snprintf(a.name, sizeof a.name, "f-%05zu", i);
        async_work_fn fn = i % 2 ? square_i64 : whoami, other = i % 2 ? whoami : square_i64;
        CHECK((r = async_mpi_register(a.name, fn)) == 0, "%s again: %s", a.name, async_errname(r));
        CHECK((r = async_mpi_register(a.name, other)) == ASYNC_EINVAL, "%s taken: %s", a.name, async_errname(r));
        CHECK((r = async_mpi_register_chunk(a.name, sum_chunk)) == ASYNC_EINVAL, "%s taken by a chunk: %s", a.name,
              async_errname(r));
    }
    CHECK((r = async_mpi_register("sum_chunk", square_i64)) == ASYNC_EINVAL, "a chunk's name: %s", async_errname(r));
    CHECK((r = async_mpi_register_data("f-00001", d)) == 0, "data and functions are two namespaces: %s",
          async_errname(r));
    printf("index: registrations: %ld allocations failed, each ASYNC_ENOMEM\n", enomem);
    CHECK(enomem > 0, "no registration allocated");

    /* The freeze, its K-th allocation failing: then the lookups scan. */
    long f0 = atomic_load(&fails);
    if (k_freeze > 0) arm(k_freeze);
    async__mpi_registry_freeze();
    bool hit = disarm(f0);
    printf("index: freeze with allocation %ld failing: %s\n", k_freeze, hit ? "failed" : "not reached");
    size_t nd = ND + 1; /* and "f-00001" */
    uint64_t sum = 0;
    size_t bad = 0;
    for (size_t i = 0; i < ND; i++) {
        uint32_t idx = ctx_of(&d[i]);
        sum += idx;
        if ((!idx || async__mpi_ctx_at(idx) != &d[i]) && !bad++) CHECK(0, "ctx x-%05zu: index %u", i, idx);
    }
    /* d registered twice (x-00000 and f-00001): the newest entry, after the sort "x-00000". */
    /* d is registered twice, "f-00001" (index 0 after the sort) and
     * "x-00000" (1): jobs name the newest, as a scan from the end finds. */
    CHECK(!bad && sum == (uint64_t)nd * (nd + 1) / 2 - 1 && ctx_of(d) == 2,
          "%zu ctx lookups wrong, indexes add up to %llu, d is %u", bad, (unsigned long long)sum, ctx_of(d));
    CHECK(async__mpi_ctx_at((uint32_t)nd + 1) == NULL && async__mpi_ctx_at((uint32_t)nd) != NULL,
          "the table holds other than %zu data", nd);
    CHECK(ctx_of(extra) == 0, "an unknown ctx found");
    size_t nf = NF + 16; /* at most: work.o's registrations and sum_chunk */
    uint32_t fi = UINT32_MAX;
    for (int k = 0; k < 2; k++) {
        async_work_fn fn = k ? square_i64 : whoami;
        CHECK(async__mpi_fn_index(fn, &fi) == 0 && fi == scan_first(fn, nf), "fn %d: index %u, a scan finds %u", k,
              fi, scan_first(fn, nf));
    }
    CHECK(async__mpi_fn_index(unregistered_fn, &fi) == ASYNC_EINVAL, "an unregistered fn found");
    CHECK(async__mpi_chunk_index(sum_chunk, &fi) == 0 && async__mpi_chunk_at(fi) == sum_chunk, "the chunk fn");
    CHECK(async__mpi_chunk_index((async_chunk_fn)NULL, &fi) == ASYNC_EINVAL, "a NULL chunk fn found");
    CHECK(async_mpi_register_data("late", d) == ASYNC_EBUSY && async_mpi_register("late", whoami) == ASYNC_EBUSY,
          "registration after the freeze");

    /* Replications (rank 0's async_mpi_bcast), each allocation failing in
     * turn: a registered pointer, then the same again, then fresh ones up
     * to the bound, then past it. */
    add_arg_t x = {.ptr = &d[3], .before = ctx_of(&d[3])};
    r = each_failing("a replication of registered data", op_data_add, &x, same_ctx, &enomem);
    uint32_t rep1 = ctx_of(&d[3]);
    CHECK(r == 0 && rep1 == nd + 1, "replicated: %s, ctx %u", async_errname(r), rep1);
    x.before = rep1;
    r = each_failing("the same pointer again", op_data_add, &x, same_ctx, &enomem);
    uint32_t rep2 = ctx_of(&d[3]);
    CHECK(r == 0 && rep2 == nd + 2 && async__mpi_ctx_at(rep1) == NULL, "again: %s, ctx %u, the old copy %p",
          async_errname(r), rep2, async__mpi_ctx_at(rep1));
    for (size_t k = nd + 2; k < ASYNC_MPI_DATA_MAX; k++) {
        if (async__mpi_data_add(&vals[k], false) < 0 && !bad++) CHECK(0, "replication %zu failed", k);
    }
    x.before = rep2;
    long f1 = atomic_load(&fails);
    arm(1);
    r = op_data_add(&x);
    CHECK(!disarm(f1) && r == ASYNC_EFULL && same_ctx(&x), "past the bound: %s, ctx %u (was %u)", async_errname(r),
          ctx_of(&d[3]), rep2);
    CHECK(ctx_of(&vals[ASYNC_MPI_DATA_MAX - 1]) == ASYNC_MPI_DATA_MAX && ctx_of(&vals[nd + 2]) == nd + 3,
          "the replicas' indexes");
    add_arg_t y = {.ptr = extra};
    CHECK(op_data_add(&y) == ASYNC_EFULL && same_ctx(&y), "new data past the bound");
    async__mpi_registry_free();
    CHECK(atomic_load(&live) == 0, "%ld blocks left after the registry was freed", atomic_load(&live));
    if (!failures) printf("PASS index\n");
    return failures ? 1 : 0;
}

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
    if (argc > 1 && !strcmp(argv[1], "time"))
        return time_registration(argc > 2 ? strtoull(argv[2], NULL, 10) : ASYNC_MPI_DATA_MAX);
    if (argc > 1 && !strcmp(argv[1], "index")) {
        setvbuf(stdout, NULL, _IOLBF, 0);
        return index_case(argc > 2 ? atol(argv[2]) : 0);
    }
    return cases_main(argc, argv, &(cases_hooks_t){before_init, NULL, run_case});
}
