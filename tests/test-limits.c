/* The fault suite's limits: every constructor of the library under exhausted
 * descriptors (RLIMIT_NOFILE reached), and task spawn under a small address
 * space (RLIMIT_AS).  Each case runs in a forked child, so that the limits
 * and the descriptors filling them stay there, and is bounded by a deadline.
 * For each number of free descriptors from 0 to HEADROOM, the constructor
 * either succeeds (and then its object works and is freed) or fails with
 * ASYNC_EMFILE/ASYNC_ENFILE; either way the process holds exactly the
 * descriptors it held before the call.  A constructor that needs descriptors
 * must fail with ASYNC_EMFILE when none is free; one that needs none must
 * succeed.  Afterwards, with the descriptors back, it succeeds again: the
 * program goes on.  A child that aborts, or that gives any other error,
 * fails the test with what it saw. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <async.h>
#include <async/executor.h>
#include <async/http.h>
#include "support/proc.h"

/* AddressSanitizer and ThreadSanitizer both reserve terabytes of shadow
 * memory at start, so neither can run under a small RLIMIT_AS: those cases
 * are skipped (and counted) in their builds. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#  define TEST_SHADOW 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#    define TEST_SHADOW 1
#  endif
#endif

#define HEADROOM 12
#define NOFILE 256
#define CHILD_DEADLINE_S 60

/* --- the child's side ------------------------------------------------------ */

static int report_fd = -1; /* the pipe to the parent: everything the child says */

static void say(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0 && write(report_fd, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1) < 0) {
        /* the parent sees the exit status anyway */
    }
}

/* Open descriptors, counted without opening one (opendir would need one). */
static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < NOFILE; fd++) n += fcntl(fd, F_GETFD) != -1;
    return n;
}

static int filler[NOFILE];
static int n_filler;

/* Takes every free descriptor, then gives back `free_fds` of them. */
static void fill(int free_fds)
{
    int fd;
    while ((fd = fcntl(2, F_DUPFD_CLOEXEC, 0)) >= 0) filler[n_filler++] = fd;
    for (int i = 0; i < free_fds && n_filler > 0; i++) close(filler[--n_filler]);
}

static void unfill(void)
{
    while (n_filler > 0) close(filler[--n_filler]);
}

/* A constructor under test: builds the object, uses it a little, frees it,
 * and returns the constructor's code (or 0). */
typedef int (*ctor_fn)(void);

/* What a constructor needs, and so what it must do under each limit. */
enum {
    NEEDS_FDS = 1, /* with no descriptor free it must fail with ASYNC_EMFILE; else work */
    ALLOCATES = 2, /* with no address space left it must fail with ASYNC_ENOMEM */
    KEEPS_FDS = 4, /* once made it keeps descriptors for the process, by design */
    ON_LOOP = 8,   /* fn works on shared_loop: under RLIMIT_NOFILE one made before the
                    * descriptors ran out, under RLIMIT_AS one made for each call */
};

/* One case of the table below: a constructor and what it needs. */
typedef struct limit_case {
    const char *name; /* what a failure calls it */
    ctor_fn fn;
    int flags;
} limit_case_t;

/* The case the forked child runs (set in the parent before the fork). */
static limit_case_t current;

/* Objects that live on a loop made before the descriptors ran out. */
static async_loop_t *shared_loop;

static bool precise(int rc) { return rc == ASYNC_EMFILE || rc == ASYNC_ENFILE; }

/* Lowers RLIMIT_NOFILE to NOFILE, so that fill() and count_fds() see every
 * descriptor the process may have. */
static int limit_nofile(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = NOFILE;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) return 0;
    say("%s: setrlimit(RLIMIT_NOFILE): %s\n", current.name, strerror(errno));
    return 1;
}

/* The child's whole run for the current case under RLIMIT_NOFILE; returns
 * its exit code. */
static int sweep_nofile(void)
{
    const char *name = current.name;
    if ((current.flags & ON_LOOP) && async_loop_new(&shared_loop) != 0) {
        say("%s: async_loop_new before the sweep failed\n", name);
        return 1;
    }
    if (limit_nofile()) return 1;
    int bad = 0;
    for (int k = 0; k <= HEADROOM; k++) {
        fill(k);
        int before = count_fds();
        int rc = current.fn();
        int after = count_fds();
        unfill();
        if (rc != 0 && !precise(rc)) {
            say("%s with %d free descriptors: %s (%s), not ASYNC_EMFILE\n", name, k,
                async_errname(rc), async_strerror(rc));
            bad = 1;
        }
        if (k == 0 && (current.flags & NEEDS_FDS) && rc != ASYNC_EMFILE) {
            say("%s with no free descriptor: %s, want ASYNC_EMFILE\n", name, async_errname(rc));
            bad = 1;
        }
        if (!(current.flags & NEEDS_FDS) && rc != 0) {
            say("%s needs no descriptor yet failed with %d free: %s\n", name, k,
                async_errname(rc));
            bad = 1;
        }
        if (after != before && !(rc == 0 && (current.flags & KEEPS_FDS))) {
            say("%s with %d free descriptors (%s): %d open before, %d after\n", name, k,
                async_errname(rc), before, after);
            bad = 1;
        }
    }
    int before = count_fds();
    int rc = current.fn();
    if (rc != 0) {
        say("%s with descriptors back: %s\n", name, async_errname(rc));
        bad = 1;
    }
    if (count_fds() != before && !(current.flags & KEEPS_FDS)) {
        say("%s with descriptors back leaked: %d open before, %d after\n", name, before,
            count_fds());
        bad = 1;
    }
    if (shared_loop && async_loop_destroy(shared_loop) != 0) {
        say("%s: the loop made before the sweep would not be destroyed\n", name);
        bad = 1;
    }
    return bad;
}

/* --- the parent's side ----------------------------------------------------- */

/* Runs main() in a forked child and fails the test, with what the child
 * said, unless it exits 0. */
static void in_child(const char *name, int (*main_fn)(void))
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(p[0]);
        report_fd = p[1];
        alarm(CHILD_DEADLINE_S);
        test_child_exit(main_fn());
    }
    close(p[1]);
    char msg[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof msg - 1 && (n = read(p[0], msg + len, sizeof msg - 1 - len)) > 0)
        len += (size_t)n;
    msg[len] = 0;
    close(p[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(!WIFSIGNALED(status), "%s: the child died of signal %d (%s)%s%s", name,
              WTERMSIG(status), strsignal(WTERMSIG(status)), len ? ": " : "", msg);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: %s", name, msg);
}

/* --- constructors ---------------------------------------------------------- */

static int yield_once(void *arg, void **res)
{
    (void)arg, (void)res;
    return async_yield();
}

static int run_one_task(async_loop_t *loop)
{
    async_task_t t;
    int rc = async_task_spawn(&t, loop, yield_once, NULL, NULL);
    if (rc) return rc;
    if (async_loop_run(loop, ASYNC_RUN_DEFAULT) != 0) return ASYNC_EIO;
    return 0;
}

/* A loop from make (async_loop_new or async_loop_default) runs a task and
 * is destroyed. */
static int loop_made_by(int (*make)(async_loop_t **))
{
    async_loop_t *loop;
    int rc = make(&loop);
    if (rc) return rc;
    rc = run_one_task(loop);
    if (async_loop_destroy(loop)) return ASYNC_EBUSY;
    return rc;
}

static int loop_new(void) { return loop_made_by(async_loop_new); }
static int loop_default(void) { return loop_made_by(async_loop_default); }

static int task_spawn(void) { return run_one_task(shared_loop); }

static int group_new(void)
{
    async_group_t *g;
    int rc = async_group_new(&g, shared_loop);
    if (rc) return rc;
    return async_group_destroy(g);
}

static int chan_new(void)
{
    async_chan_t *c;
    int rc = async_chan_new(&c, sizeof(int), 4);
    if (rc) return rc;
    return async_chan_destroy(c);
}

static int add_one(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    *(int *)out = *(const int *)in + 1;
    return 0;
}

static int executor(async_backend_t backend)
{
    async_executor_opts_t o = {.backend = backend, .workers = 2};
    async_executor_t *ex;
    int rc = async_executor_new(&ex, &o);
    if (rc) return rc;
    int in = 41;
    async_job_t job = {.fn = add_one, .in = &in, .in_size = sizeof in, .out_size = sizeof(int)};
    async_future_t *f;
    rc = async_executor_submit(&f, ex, &job);
    if (rc == 0) {
        rc = async_future_wait_dl(f, async_deadline_after(ASYNC_SEC(20)));
        const void *data;
        size_t size;
        if (rc == 0 && (async_future_result(f, &data, &size) || *(const int *)data != 42))
            rc = ASYNC_EIO;
        async_future_unref(f);
    }
    async_executor_free(ex);
    return rc;
}

static int executor_threads(void) { return executor(ASYNC_BACKEND_THREADS); }
static int executor_processes(void) { return executor(ASYNC_BACKEND_PROCESSES); }

static int http_own_loop(void)
{
    async_http_t *http;
    int rc = async_http_new(&http, NULL, NULL);
    if (rc) return rc;
    return async_http_destroy(http);
}

static int shm_new(void)
{
    async_shm_t *shm;
    int rc = async_shm_new(&shm, 4096);
    if (rc) return rc;
    async_shm_free(shm);
    return 0;
}

static int queue_new(void)
{
    async_ipc_queue_t *q;
    int rc = async_ipc_queue_new(&q, 4, 16, 0);
    if (rc) return rc;
    async_ipc_queue_free(q);
    return 0;
}

static int pipe_new(void)
{
    async_ipc_pipe_t *a, *b;
    int rc = async_ipc_pipe_new(&a, &b, 0);
    if (rc) return rc;
    async_ipc_pipe_free(a);
    async_ipc_pipe_free(b);
    return 0;
}

static int locks_new(void)
{
    async_ipc_lock_t *l;
    async_ipc_sem_t *s;
    async_ipc_event_t *e;
    int rc = async_ipc_lock_new(&l);
    if (rc) return rc;
    rc = async_ipc_sem_new(&s, 1, 1);
    if (rc) goto out_lock;
    rc = async_ipc_event_new(&e);
    if (rc) goto out_sem;
    async_ipc_event_free(e);
out_sem:
    async_ipc_sem_free(s);
out_lock:
    async_ipc_lock_free(l);
    return rc;
}

static int exit_seven(void *arg)
{
    (void)arg;
    return 7;
}

static int process_spawn(void)
{
    async_process_t *p;
    int rc = async_process_spawn(&p, exit_seven, NULL);
    if (rc) return rc;
    rc = async_process_join_dl(p, async_deadline_after(ASYNC_SEC(20)));
    int code = -1;
    if (rc == 0 && (async_process_status(p, &code, NULL) || code != 7)) rc = ASYNC_EIO;
    async_process_free(p);
    return rc;
}

static int progress_new(void)
{
    async_progress_t *p;
    int rc = async_progress_new(&p, "limits", 10);
    if (rc) return rc;
    async_progress_free(p);
    return 0;
}

/* --- the table ------------------------------------------------------------- */

/* Every constructor: what failures call it, the function, its flags, the
 * tests' timeout (s), and the names of its two tests, one under exhausted
 * descriptors and one under a full address space.  Each constructor is a
 * test of its own under each limit, so a failure names it.  An IPC pipe may
 * not touch the heap at all. */
#define LIMIT_CASES(X)                                                                           \
    X("async_loop_new", loop_new, NEEDS_FDS | ALLOCATES, 90, loop_new_without_descriptors,       \
      loop_new_out_of_address_space)                                                             \
    X("async_loop_default", loop_default, NEEDS_FDS | ALLOCATES | KEEPS_FDS, 90,                 \
      loop_default_without_descriptors, loop_default_out_of_address_space)                       \
    X("async_task_spawn", task_spawn, ALLOCATES | ON_LOOP, 90, task_spawn_needs_no_descriptor,   \
      task_spawn_out_of_address_space)                                                           \
    X("async_group_new", group_new, ALLOCATES | ON_LOOP, 90, group_needs_no_descriptor,          \
      group_out_of_address_space)                                                                \
    X("async_chan_new", chan_new, ALLOCATES, 90, channel_needs_no_descriptor,                    \
      channel_out_of_address_space)                                                              \
    X("async_executor_new(threads)", executor_threads, ALLOCATES, 120,                           \
      executor_threads_without_descriptors, executor_threads_out_of_address_space)               \
    X("async_executor_new(processes)", executor_processes, NEEDS_FDS | ALLOCATES, 120,           \
      executor_processes_without_descriptors, executor_processes_out_of_address_space)           \
    X("async_http_new(own loop)", http_own_loop, NEEDS_FDS | ALLOCATES, 90,                      \
      http_client_own_loop_without_descriptors, http_client_out_of_address_space)                \
    X("async_shm_new", shm_new, NEEDS_FDS | ALLOCATES, 90, ipc_shm_without_descriptors,          \
      ipc_shm_out_of_address_space)                                                              \
    X("async_ipc_queue_new", queue_new, NEEDS_FDS | ALLOCATES, 90, ipc_queue_without_descriptors, \
      ipc_queue_out_of_address_space)                                                            \
    X("async_ipc_pipe_new", pipe_new, NEEDS_FDS, 90, ipc_pipe_without_descriptors,               \
      ipc_pipe_out_of_address_space)                                                             \
    X("async_ipc_lock/sem/event_new", locks_new, ALLOCATES, 90, ipc_locks_need_no_descriptor,    \
      ipc_locks_out_of_address_space)                                                            \
    X("async_process_spawn", process_spawn, ALLOCATES, 90, process_spawn_without_descriptors,    \
      process_spawn_out_of_address_space)                                                        \
    X("async_progress_new", progress_new, ALLOCATES, 90, progress_needs_no_descriptor,           \
      progress_out_of_address_space)

/* --- descriptor exhaustion ------------------------------------------------- */

/* A request that cannot get a socket says so, rather than "Couldn't connect";
 * with descriptors back, the same request fails as a refused connection. */
static int http_request_child(void)
{
    current.name = "HTTP request";
    if (limit_nofile()) return 1;
    async_http_t *http;
    int rc = async_http_new(&http, NULL, NULL);
    if (rc) {
        say("async_http_new: %s\n", async_errname(rc));
        return 1;
    }
    int bad = 0;
    async_http_request_t req = {.url = "http://127.0.0.1:1/", .max_retries = -1};
    async_http_response_t *r = NULL;
    fill(0);
    int before = count_fds();
    rc = async_http_fetch_dl(&r, http, &req, async_deadline_after(ASYNC_SEC(20)));
    int after = count_fds();
    unfill();
    if (rc != ASYNC_EMFILE || !r || r->error != ASYNC_EMFILE || !strstr(r->errmsg, "descriptors")) {
        say("out of descriptors: %s, \"%s\"; want ASYNC_EMFILE\n", async_errname(rc),
            r ? r->errmsg : "(no response)");
        bad = 1;
    }
    if (after != before) {
        say("the failed request leaked: %d open before, %d after\n", before, after);
        bad = 1;
    }
    async_http_response_free(r);
    r = NULL;
    rc = async_http_fetch_dl(&r, http, &req, async_deadline_after(ASYNC_SEC(20)));
    if (rc != ASYNC_ECURL || !r || !strstr(r->errmsg, "onnect")) {
        say("with descriptors back: %s, \"%s\"; want a refused connection\n",
            async_errname(rc), r ? r->errmsg : "(no response)");
        bad = 1;
    }
    async_http_response_free(r);
    async_http_destroy(http);
    return bad;
}

Test(limits, http_request_reports_descriptor_exhaustion, .timeout = 90)
{
    in_child("HTTP request without descriptors", http_request_child);
}

/* --- address space --------------------------------------------------------- */

#define AS_HEADROOM ((rlim_t)96 << 20)
#define AS_MAX_TASKS 200000

static long vm_size(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* Takes what memory is left, so that no slack in malloc's heap hides what
 * the code under test needs; ballast_free() gives it back. */
static void *ballast_fill(void)
{
    void *ballast = NULL;
    for (size_t size = (size_t)64 << 10; size >= 16; size /= 2) {
        void **b;
        while ((b = malloc(size))) {
            *b = ballast;
            ballast = b;
        }
    }
    return ballast;
}

static void ballast_free(void *ballast)
{
    while (ballast) {
        void *next = *(void **)ballast;
        free(ballast);
        ballast = next;
    }
}

/* Every task sleeps, so libev's timer heap and pending queue grow with the
 * number of tasks while the address space is already full of their stacks. */
static int nap(void *arg, void **res)
{
    (void)arg, (void)res;
    return async_sleep(ASYNC_MSEC(20));
}

/* Spawns until memory runs out, runs them all, then spawns again: spawn says
 * ASYNC_ENOMEM, libev never aborts, and the program goes on. */
static int address_space_child(void)
{
    async_loop_t *loop;
    int rc = async_loop_new(&loop);
    if (rc) {
        say("async_loop_new: %s\n", async_errname(rc));
        return 1;
    }
    long vm = vm_size();
    if (vm < 0) {
        say("no VmSize in /proc/self/status\n");
        return 1;
    }
    struct rlimit rl = {(rlim_t)vm + AS_HEADROOM, (rlim_t)vm + AS_HEADROOM};
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        say("setrlimit(RLIMIT_AS): %s\n", strerror(errno));
        return 1;
    }
    async_task_opts_t o = {.stack_size = ASYNC_STACK_MIN, .detached = true};
    int n = 0;
    for (; n < AS_MAX_TASKS; n++) {
        rc = async_task_spawn(NULL, loop, nap, NULL, &o);
        if (rc) break;
    }
    if (rc != ASYNC_ENOMEM || n == 0) {
        say("after %d tasks spawn said %s, want ASYNC_ENOMEM\n", n, async_errname(rc));
        return 1;
    }
    /* The program takes what memory is left, then runs the tasks it has. */
    void *ballast = ballast_fill();
    rc = async_loop_run(loop, ASYNC_RUN_DEFAULT);
    ballast_free(ballast);
    if (rc != 0) {
        say("running %d tasks: %d\n", n, rc);
        return 1;
    }
    /* The program's choice after ASYNC_ENOMEM: go on with fewer tasks. */
    for (int i = 0; i < n / 2; i++) {
        rc = async_task_spawn(NULL, loop, nap, NULL, &o);
        if (rc) {
            say("spawn %d of %d again, after the first %d ended: %s\n", i, n / 2, n,
                async_errname(rc));
            return 1;
        }
    }
    rc = async_loop_run(loop, ASYNC_RUN_DEFAULT);
    if (rc != 0 || async_loop_destroy(loop) != 0) {
        say("second run: %d\n", rc);
        return 1;
    }
    return 0;
}

/* Every constructor with the address space nearly or entirely full (the
 * limit a little above what is mapped, and malloc's slack taken): each
 * either works or fails with ASYNC_ENOMEM, nothing crashes, and once the
 * limit is lifted it works again. */
static const rlim_t as_headroom[] = {0, 64 << 10, 1 << 20, 8 << 20, 32 << 20};

/* The current constructor, on a loop made (and destroyed) for this call if
 * it works on one: under RLIMIT_AS the loop is part of what is measured. */
static int call_on_own_loop(void)
{
    if (!(current.flags & ON_LOOP)) return current.fn();
    int rc = async_loop_new(&shared_loop);
    if (rc) return rc;
    rc = current.fn();
    if (async_loop_destroy(shared_loop)) rc = ASYNC_EBUSY;
    shared_loop = NULL;
    return rc;
}

static int sweep_as(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_AS, &rl);
    rlim_t hard = rl.rlim_max;
    int bad = 0;
    for (size_t i = 0; i < sizeof as_headroom / sizeof as_headroom[0]; i++) {
        long vm = vm_size();
        rl.rlim_cur = (rlim_t)vm + as_headroom[i];
        rl.rlim_max = hard;
        if (vm < 0 || setrlimit(RLIMIT_AS, &rl) != 0) {
            say("%s: cannot lower RLIMIT_AS\n", current.name);
            return 1;
        }
        void *ballast = ballast_fill();
        int rc = call_on_own_loop();
        ballast_free(ballast);
        rl.rlim_cur = hard;
        setrlimit(RLIMIT_AS, &rl);
        if (rc != 0 && rc != ASYNC_ENOMEM) {
            say("%s with %zu KiB of address space left: %s (%s), not ASYNC_ENOMEM\n",
                current.name, (size_t)(as_headroom[i] >> 10), async_errname(rc),
                async_strerror(rc));
            bad = 1;
        }
        if (i == 0 && (current.flags & ALLOCATES) && rc != ASYNC_ENOMEM) {
            say("%s with no address space left: %s, want ASYNC_ENOMEM\n", current.name,
                async_errname(rc));
            bad = 1;
        }
    }
    int rc = call_on_own_loop();
    if (rc != 0) {
        say("%s with the limit lifted: %s\n", current.name, async_errname(rc));
        bad = 1;
    }
    return bad;
}

/* AddressSanitizer and ThreadSanitizer reserve terabytes of shadow memory:
 * under them these tests are skipped, and counted as skipped. */
static void in_child_as(const char *name, int (*main_fn)(void))
{
#ifdef TEST_SHADOW
    (void)name, (void)main_fn;
    cr_skip("a sanitizer maps terabytes of shadow memory and cannot run under a small RLIMIT_AS");
#else
    in_child(name, main_fn);
#endif
}

/* --- the table's tests ------------------------------------------------------ */

/* Runs sweep (sweep_nofile or sweep_as) for case c in a forked child. */
static void run_case(limit_case_t c, int (*sweep)(void))
{
    current = c;
    if (sweep == sweep_as) in_child_as(c.name, sweep);
    else in_child(c.name, sweep);
}

#define CASE_TEST(test, secs, sweep, label, ctor, flags_)                                        \
    Test(limits, test, .timeout = secs) { run_case((limit_case_t){label, ctor, flags_}, sweep); }
#define NOFILE_TEST(label, ctor, flags_, secs, nofile_test, as_test)                             \
    CASE_TEST(nofile_test, secs, sweep_nofile, label, ctor, flags_)
#define AS_TEST(label, ctor, flags_, secs, nofile_test, as_test)                                 \
    CASE_TEST(as_test, secs, sweep_as, label, ctor, flags_)
LIMIT_CASES(NOFILE_TEST)
LIMIT_CASES(AS_TEST)

Test(limits, spawn_under_address_space_limit_reports_enomem, .timeout = 120)
{
    in_child_as("spawn under RLIMIT_AS", address_space_child);
}

/* --- the process pool under RLIMIT_FSIZE and RLIMIT_AS --------------------- */

static int square(const void *in, size_t in_size, void *out, size_t out_size, void *ctx)
{
    (void)in_size, (void)out_size, (void)ctx;
    long v;
    memcpy(&v, in, sizeof v);
    v *= v;
    memcpy(out, &v, sizeof v);
    return 0;
}

/* A process pool made, one job run on it and checked, the pool freed: 0, or
 * 1 having said what went wrong. */
static int one_process_job(const char *what)
{
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_PROCESSES, .workers = 1};
    async_executor_t *ex;
    int rc = async_executor_new(&ex, &o);
    if (rc) {
        say("%s: async_executor_new: %s\n", what, async_errname(rc));
        return 1;
    }
    long in = 12, out = 0;
    size_t len = sizeof out;
    async_job_t j = {.fn = square, .in = &in, .in_size = sizeof in, .out_size = sizeof out};
    rc = async_executor_run(ex, &j, &out, &len, NULL, 0);
    async_executor_free(ex);
    if (rc || out != 144) {
        say("%s: the job: %s, %ld\n", what, async_errname(rc), out);
        return 1;
    }
    return 0;
}

static void soft_limit(int resource, rlim_t v)
{
    struct rlimit r;
    getrlimit(resource, &r);
    r.rlim_cur = v;
    setrlimit(resource, &r);
}

static int file_size_child(void)
{
    /* Its shared heap shrinks to fit (it was 1 GiB whatever the limit:
     * ftruncate raised SIGXFSZ, which killed the program). */
    soft_limit(RLIMIT_FSIZE, (rlim_t)64 << 20);
    if (one_process_job("RLIMIT_FSIZE 64 MiB")) return 1;
    /* Too small for any heap: an error, no signal. */
    soft_limit(RLIMIT_FSIZE, (rlim_t)1 << 20);
    async_executor_opts_t o = {.backend = ASYNC_BACKEND_PROCESSES, .workers = 1};
    async_executor_t *ex = NULL;
    int rc = async_executor_new(&ex, &o);
    if (rc != ASYNC_ENOMEM) {
        say("RLIMIT_FSIZE 1 MiB: async_executor_new: %s, not ASYNC_ENOMEM\n", async_errname(rc));
        if (!rc) async_executor_free(ex);
        return 1;
    }
    return 0;
}

/* The process pool's shared memory fits RLIMIT_FSIZE (a memfd is a file):
 * demos18 found lab's processes mode killed by SIGXFSZ under `ulimit -f`. */
Test(limits, process_pool_fits_a_file_size_limit, .timeout = 60)
{
    signal(SIGXFSZ, SIG_DFL); /* as a program that did not ignore it */
    in_child("process pool under RLIMIT_FSIZE", file_size_child);
}

static int address_space_pool_child(void)
{
    soft_limit(RLIMIT_AS, (rlim_t)1 << 30);
    return one_process_job("RLIMIT_AS 1 GiB");
}

/* ... and RLIMIT_AS: under `ulimit -v 1000000` async_executor_new failed
 * with ASYNC_ENOMEM, its 1 GiB heap alone past the limit (demos18). */
Test(limits, process_pool_fits_an_address_space_limit, .timeout = 60)
{
    in_child_as("process pool under RLIMIT_AS", address_space_pool_child);
}

/* --- the brewery demo at ulimit -n 64 ---------------------------------------- */

#define DEMO ASYNC_OUT_DIR "/demos/brewery/brewery"

/* Runs the demo in one mode with 64 descriptors; it must end by itself
 * (exit 0, or nonzero having said what failed), never by a signal: earlier
 * versions died of SIGABRT inside libev. */
static void demo_at_64(const char *mode)
{
    char json[64], errfile[64];
    snprintf(json, sizeof json, "/tmp/test-limits-brewery-%d.json", (int)getpid());
    /* A file, not a pipe: a server the demo leaves behind must not hold the
     * test up waiting for end of file. */
    snprintf(errfile, sizeof errfile, "/tmp/test-limits-brewery-%d.err", (int)getpid());
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct rlimit rl = {64, 64};
        int devnull = open("/dev/null", O_WRONLY);
        int err = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (devnull < 0 || err < 0 || dup2(devnull, 1) < 0 || dup2(err, 2) < 0) _exit(126);
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(126);
        alarm(CHILD_DEADLINE_S); /* kept across exec: a hang ends as SIGALRM */
        execl(DEMO, DEMO, "--mode", mode, "--states", "all", "--json", json, "--latency", "1",
              "--timeout-ms", "1000", "--retries", "0", (char *)NULL);
        _exit(127);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    static char msg[1 << 16];
    size_t len = 0;
    FILE *f = fopen(errfile, "r");
    if (f) {
        len = fread(msg, 1, sizeof msg - 1, f);
        fclose(f);
    }
    msg[len] = 0;
    unlink(errfile);
    unlink(json);
    const char *tail = len > 300 ? msg + len - 300 : msg;
    cr_assert(!WIFSIGNALED(status), "brewery --mode %s at ulimit -n 64 died of signal %d (%s): %s",
              mode, WTERMSIG(status), strsignal(WTERMSIG(status)), tail);
    int code = WEXITSTATUS(status);
    cr_assert(code != 126 && code != 127, "could not run %s", DEMO);
    if (code != 0)
        cr_assert(strstr(msg, "failed"), "exit %d without saying what failed: %s", code, tail);
}

Test(limits, brewery_demo_async_at_64_descriptors, .timeout = 90)
{
    demo_at_64("async");
}

Test(limits, brewery_demo_threads_at_64_descriptors, .timeout = 90)
{
    demo_at_64("threads");
}
