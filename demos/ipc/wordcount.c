/* wordcount: worker processes count the words of their part of a text into
 * one shared table (the labs' question 5.2), six ways:
 *   serial          one process, the reference counts;
 *   no lock         N processes doing `count++` on shared memory: updates get
 *                   lost when two processes increment the same word at once;
 *   lock each       N processes taking the table's lock around every update:
 *                   exact, and the lock's cost shows;
 *   local + merge   N processes counting privately, then merging under the
 *                   lock once per distinct word: exact and fast;
 *   dict each       N processes incrementing each word in a shared
 *                   dictionary (async_shared_dict_t, the lectures'
 *                   Manager().dict() with a lock, minus the proxy server);
 *   dict merge      N processes counting privately, then merging into the
 *                   shared dictionary once per distinct word.
 * Words are inserted into the shared table without a lock (a slot is claimed
 * with a compare-and-swap), so only the counts race.  A default text is
 * generated; --input FILE counts a user's file instead: a regular file is
 * mapped, a FIFO, device or /proc file is read to its end (up to 1 GiB), and
 * a directory or a file that cannot be opened ends the run with
 * "wordcount: FILE: reason" and exit status 1.
 *
 *   wordcount [--input FILE] [--words N] [--workers W] */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "common/args.h"

#define MAX_WORD 41
#define TABLE_BITS 18
#define TABLE_SIZE ((size_t)1 << TABLE_BITS)
#define LOCAL_SIZE ((size_t)1 << 14) /* a worker's private table; merged when full */

typedef struct slot {
    _Atomic uint32_t state; /* 0 empty, 1 being filled, 2 ready */
    uint16_t len;
    char word[MAX_WORD + 1];
    long count;
} slot_t;

enum mode { SERIAL, NO_LOCK, LOCK_EACH, LOCAL_MERGE, DICT_EACH, DICT_MERGE };

typedef struct job {
    const char *text;
    size_t len;
    unsigned workers;
    async_shared_array_t *table;
    async_shared_dict_t *dict; /* the dictionary modes' table */
    enum mode mode;
    unsigned part;
} job_t;

static uint64_t hash(const char *w, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)w[i]) * 1099511628211ull;
    return h;
}

/* Finds word in the table, inserting it if new; NULL when the table is full.
 * Safe for concurrent use by processes sharing the table: a new slot is
 * claimed with a CAS and published with state 2. */
static slot_t *lookup(slot_t *t, size_t size, const char *w, size_t n)
{
    size_t mask = size - 1;
    for (size_t i = hash(w, n) & mask, probes = 0; probes < size; i = (i + 1) & mask, probes++) {
        slot_t *s = &t[i];
        uint32_t st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (st == 0) {
            uint32_t zero = 0;
            if (atomic_compare_exchange_strong(&s->state, &zero, 1)) {
                memcpy(s->word, w, n);
                s->word[n] = '\0';
                s->len = (uint16_t)n;
                atomic_store_explicit(&s->state, 2, memory_order_release);
                return s;
            }
            st = zero;
        }
        while (st == 1) st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (s->len == n && memcmp(s->word, w, n) == 0) return s;
    }
    return NULL;
}

/* Calls fn for every word (lowercased letters, digits and apostrophes). */
static int each_word(const char *p, const char *end, int (*fn)(void *, const char *, size_t), void *arg)
{
    char w[MAX_WORD + 1];
    while (p < end) {
        while (p < end && !(isalnum((unsigned char)*p) || *p == '\'')) p++;
        size_t n = 0;
        while (p < end && (isalnum((unsigned char)*p) || *p == '\'')) {
            if (n < MAX_WORD) w[n++] = (char)tolower((unsigned char)*p);
            p++;
        }
        if (n && fn(arg, w, n)) return 1;
    }
    return 0;
}

typedef struct counter {
    job_t *job;
    slot_t *shared;
    slot_t *local;
} counter_t;

static int count_shared(void *arg, const char *w, size_t n)
{
    counter_t *c = arg;
    slot_t *s = lookup(c->shared, TABLE_SIZE, w, n);
    if (!s) return 1;
    if (c->job->mode == LOCK_EACH) {
        async_shared_array_lock(c->job->table);
        s->count++;
        async_shared_array_unlock(c->job->table);
    } else {
        /* Deliberately unsynchronised: a read-modify-write that another
         * process can interleave with, losing one of the two updates. */
        s->count++;
    }
    return 0;
}

static int count_dict(void *arg, const char *w, size_t n)
{
    counter_t *c = arg;
    char key[MAX_WORD + 1];
    memcpy(key, w, n);
    key[n] = '\0';
    return async_shared_dict_increment(c->job->dict, key, 1, NULL) ? 1 : 0;
}

/* Adds the private counts to the dictionary, one increment per distinct
 * word (each one atomic on its own: no lock around the merge). */
static int merge_dict(counter_t *c)
{
    int rc = 0;
    for (size_t i = 0; i < LOCAL_SIZE && !rc; i++) {
        slot_t *l = &c->local[i];
        if (l->count) rc = async_shared_dict_increment(c->job->dict, l->word, l->count, NULL) ? 1 : 0;
    }
    memset(c->local, 0, LOCAL_SIZE * sizeof(slot_t));
    return rc;
}

/* Adds the private counts to the shared table under its lock (one lock for
 * the whole merge), and empties the private table. */
static int merge(counter_t *c)
{
    if (c->job->mode == DICT_MERGE) return merge_dict(c);
    int rc = 0;
    async_shared_array_lock(c->job->table);
    for (size_t i = 0; i < LOCAL_SIZE && !rc; i++) {
        slot_t *l = &c->local[i];
        if (!l->count) continue;
        slot_t *s = lookup(c->shared, TABLE_SIZE, l->word, l->len);
        if (s) s->count += l->count;
        else rc = 1;
    }
    async_shared_array_unlock(c->job->table);
    memset(c->local, 0, LOCAL_SIZE * sizeof(slot_t));
    return rc;
}

static int count_local(void *arg, const char *w, size_t n)
{
    counter_t *c = arg;
    slot_t *s = lookup(c->local, LOCAL_SIZE, w, n);
    if (!s) {
        if (merge(c)) return 1;
        s = lookup(c->local, LOCAL_SIZE, w, n);
    }
    s->count++;
    return 0;
}

/* The part of the text worker `part` of `workers` counts: split evenly, each
 * boundary moved forward past the word it falls in. */
static void part_of(const job_t *j, unsigned part, const char **b, const char **e)
{
    size_t lo = j->len * part / j->workers, hi = j->len * (part + 1) / j->workers;
    while (lo > 0 && lo < j->len && (isalnum((unsigned char)j->text[lo]) || j->text[lo] == '\'')) lo++;
    while (hi < j->len && (isalnum((unsigned char)j->text[hi]) || j->text[hi] == '\'')) hi++;
    if (part == 0) lo = 0;
    *b = j->text + lo;
    *e = j->text + hi;
}

static int worker(void *arg)
{
    job_t *j = arg;
    const char *b, *e;
    part_of(j, j->part, &b, &e);
    counter_t c = {j, async_shared_array_ptr(j->table), NULL};
    if (j->mode == DICT_EACH) return each_word(b, e, count_dict, &c);
    if (j->mode != LOCAL_MERGE && j->mode != DICT_MERGE) return each_word(b, e, count_shared, &c);
    c.local = calloc(LOCAL_SIZE, sizeof(slot_t));
    if (!c.local || each_word(b, e, count_local, &c) || merge(&c)) return 1;
    free(c.local);
    return 0;
}

static void reset_counts(slot_t *t)
{
    for (size_t i = 0; i < TABLE_SIZE; i++) t[i].count = 0;
}

/* Runs one mode; returns seconds, or -1 if a worker failed. */
static double run(job_t *j, enum mode mode, unsigned workers, size_t distinct)
{
    reset_counts(async_shared_array_ptr(j->table));
    if (mode == DICT_EACH || mode == DICT_MERGE) {
        async_shared_dict_free(j->dict);
        j->dict = NULL;
        if (async_shared_dict_new(&j->dict, distinct + 1, MAX_WORD, sizeof(int64_t))) return -1;
    }
    j->mode = mode;
    j->workers = workers;
    int64_t t0 = async_now();
    if (workers == 1) {
        j->part = 0;
        if (worker(j)) return -1;
        return (double)(async_now() - t0) / 1e9;
    }
    async_process_t *p[64];
    for (unsigned i = 0; i < workers; i++) {
        j->part = i;
        if (async_process_spawn(&p[i], worker, j)) return -1;
    }
    int failed = 0;
    for (unsigned i = 0; i < workers; i++) {
        int code;
        async_process_join(p[i]);
        async_process_status(p[i], &code, NULL);
        failed |= code;
        async_process_free(p[i]);
    }
    return failed ? -1 : (double)(async_now() - t0) / 1e9;
}

/* Checks the dictionary against the reference counts in the table t (whose
 * serial run holds every word): *got the total counted, *wrong the words
 * miscounted or missing. */
typedef struct dict_check {
    slot_t *t;
    const long *ref;
    long got, wrong, seen;
} dict_check_t;

static int check_word(const char *key, const void *value, size_t len, void *arg)
{
    dict_check_t *dc = arg;
    int64_t v;
    if (len != sizeof v) return 1;
    memcpy(&v, value, sizeof v);
    slot_t *s = lookup(dc->t, TABLE_SIZE, key, strlen(key));
    if (!s) return 1;
    dc->got += (long)v;
    dc->wrong += v != dc->ref[s - dc->t];
    dc->seen++;
    return 0;
}

static long total(slot_t *t)
{
    long n = 0;
    for (size_t i = 0; i < TABLE_SIZE; i++) n += t[i].count;
    return n;
}

/* A deterministic text of n words over a Zipf-like vocabulary of 5,000
 * made-up words, so that a few words are very frequent, as in real text. */
static char *generate(size_t n, size_t *len)
{
    enum { VOCAB = 5000 };
    static char words[VOCAB][9];
    static double cum[VOCAB];
    double sum = 0;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < VOCAB; i++) {
        int l = 2 + (int)(s % 6);
        for (int k = 0; k < l; k++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            words[i][k] = (char)('a' + s % 26);
        }
        words[i][l] = '\0';
        sum += 1.0 / (i + 1);
        cum[i] = sum;
    }
    char *text = malloc(n * 9 + 1), *p = text;
    if (!text) return NULL;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        double u = (double)(s >> 11) / 9007199254740992.0 * sum;
        int lo = 0, hi = VOCAB - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (cum[mid] < u) lo = mid + 1; else hi = mid;
        }
        size_t l = strlen(words[lo]);
        memcpy(p, words[lo], l);
        p += l;
        *p++ = (i % 12 == 11) ? '\n' : ' ';
    }
    *len = (size_t)(p - text);
    return text;
}

/* The largest input read as a stream (a pipe, /proc, a device), so that
 * --input /dev/zero ends with a message instead of filling memory. */
#define MAX_STREAM ((size_t)1 << 30)

/* --input: a regular file is mapped; anything stat cannot size (a FIFO,
 * /dev/stdin, /proc/cpuinfo, whose st_size is 0) is read to its end, which
 * once counted 0 words of it.  The text lands in j->text (and *owned when it
 * was read).  Returns NULL, or why the file cannot be counted. */
static const char *read_input(const char *path, job_t *j, char **owned)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0) return strerror(errno);
    if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
        /* mmap of a directory said "No such device". */
        int e = S_ISDIR(st.st_mode) ? EISDIR : errno;
        close(fd);
        return strerror(e);
    }
    if (S_ISREG(st.st_mode) && st.st_size > 0) {
        j->len = (size_t)st.st_size;
        j->text = mmap(NULL, j->len, PROT_READ, MAP_PRIVATE, fd, 0);
        int e = errno;
        close(fd);
        return j->text == MAP_FAILED ? strerror(e) : NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    const char *why = buf ? NULL : strerror(ENOMEM);
    for (ssize_t k; !why;) {
        if (n == cap) {
            char *nb = cap < MAX_STREAM ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                why = cap < MAX_STREAM ? strerror(ENOMEM) : "more than 1 GiB (the most read from a stream)";
                break;
            }
            buf = nb;
            cap *= 2;
        }
        k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) why = strerror(errno);
        else if (k == 0) break;
        else n += (size_t)k;
    }
    close(fd);
    if (why) {
        free(buf);
        return why;
    }
    j->text = *owned = buf;
    j->len = n;
    return NULL;
}

int main(int argc, char **argv)
{
    const char *input = NULL;
    size_t nwords = 3000000;
    unsigned workers = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--input") && i + 1 < argc) input = argv[++i];
        else if (!strcmp(argv[i], "--words") && i + 1 < argc) {
            unsigned long v;
            if (!arg_ulong("wordcount", "--words", argv[++i], 1, 1000000000, &v)) return 2;
            nwords = v;
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            unsigned long v;
            if (!arg_ulong("wordcount", "--workers", argv[++i], 2, 64, &v)) return 2;
            workers = (unsigned)v;
        } else {
            fprintf(stderr, "usage: %s [--input FILE] [--words N] [--workers W]\n", argv[0]);
            return 2;
        }
    }
    job_t j = {0};
    char *owned = NULL;
    if (input) {
        const char *why = read_input(input, &j, &owned);
        if (why) {
            fprintf(stderr, "wordcount: %s: %s\n", *input ? input : "(empty file name)", why);
            return 1;
        }
    } else {
        j.text = owned = generate(nwords, &j.len);
        if (!owned) return 1;
    }
    int err = async_shared_array_new(&j.table, sizeof(slot_t), TABLE_SIZE, true);
    if (err) {
        fprintf(stderr, "wordcount: %s\n", async_strerror(err));
        return 1;
    }
    slot_t *t = async_shared_array_ptr(j.table);
    fflush(stdout);

    double serial = run(&j, SERIAL, 1, 0);
    if (serial < 0) {
        fprintf(stderr, "wordcount: the table is full (more than %zu distinct words)\n", TABLE_SIZE);
        return 1;
    }
    long words = total(t), distinct = 0;
    long *ref = malloc(TABLE_SIZE * sizeof *ref);
    for (size_t i = 0; i < TABLE_SIZE; i++) {
        ref[i] = t[i].count;
        distinct += t[i].count > 0;
    }
    printf("text: %s, %zu bytes, %ld words, %ld distinct\n", input ? input : "generated",
           j.len, words, distinct);
    printf("%-40s %8.3f s  counted %ld (reference)\n", "serial, 1 process", serial, words);

    /* The race needs two processes on two cores hitting one word at the same
     * moment, so how many updates it loses varies: run it three times. */
    static const struct { enum mode mode; const char *name; } modes[] = {
        {NO_LOCK, "no lock, run 1"}, {NO_LOCK, "no lock, run 2"}, {NO_LOCK, "no lock, run 3"},
        {LOCK_EACH, "lock around each update"}, {LOCAL_MERGE, "local counts, merge under lock"},
        {DICT_EACH, "shared dict, increment each"}, {DICT_MERGE, "local counts, merge into dict"}};
    int rc = 0;
    double unlocked = 1e9;
    for (int m = 0; m < 7; m++) {
        double secs = run(&j, modes[m].mode, workers, (size_t)distinct);
        if (secs < 0) {
            fprintf(stderr, "wordcount: a worker failed\n");
            return 1;
        }
        long got = 0, wrong = 0;
        if (modes[m].mode == DICT_EACH || modes[m].mode == DICT_MERGE) {
            dict_check_t dc = {t, ref, 0, 0, 0};
            if (async_shared_dict_items(j.dict, check_word, &dc)) {
                fprintf(stderr, "wordcount: the dictionary holds a word the text lacks\n");
                return 1;
            }
            got = dc.got;
            wrong = dc.wrong + (distinct - dc.seen);
        } else {
            got = total(t);
            for (size_t i = 0; i < TABLE_SIZE; i++) wrong += t[i].count != ref[i];
        }
        char name[64];
        snprintf(name, sizeof name, "%u procs, %s", workers, modes[m].name);
        printf("%-40s %8.3f s  counted %ld", name, secs, got);
        if (got == words && !wrong) printf(" (exact)");
        else printf(" (LOST %ld updates, %ld words miscounted)", words - got, wrong);
        if (modes[m].mode == NO_LOCK && secs < unlocked) unlocked = secs;
        if (modes[m].mode == LOCK_EACH && words > 0)
            printf(", the lock adds %+.0f ns per word (vs the fastest no-lock run)", (secs - unlocked) * 1e9 / (double)words);
        printf("\n");
        if (modes[m].mode != NO_LOCK && (got != words || wrong)) rc = 1;
    }
    /* The five most frequent words. */
    printf("most frequent:");
    for (int k = 0; k < 5; k++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < TABLE_SIZE; i++)
            if (ref[i] > 0 && (best == SIZE_MAX || ref[i] > ref[best])) best = i;
        if (best == SIZE_MAX) break;
        printf(" %s=%ld", t[best].word, ref[best]);
        ref[best] = -1;
    }
    printf("\n");
    free(ref);
    free(owned);
    async_shared_dict_free(j.dict);
    async_shared_array_free(j.table);
    return rc;
}
