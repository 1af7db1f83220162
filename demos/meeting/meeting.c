/* The lab's meeting: a stand-up (4 updates, 1 s apart), work (3 tasks, 1.5 s
 * apart) and coffee (10 s), first one after another (18.5 s), then as
 * concurrent tasks on one loop (10 s: the longest of the three).
 *
 *   meeting [--scale F]    every delay times F (tests use 0.01)
 */
#include <async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double scale = 1.0;
/* The delays (18.5 s serially) times this stay within a day. */
#define MAX_SCALE 4000.0
static bool quiet;

static int64_t scaled(double seconds) { return (int64_t)(seconds * scale * 1e9); }

static void say(const char *what, int i, int64_t t0)
{
    if (!quiet) printf("  %6.2f s  %s %d\n", (double)(async_now() - t0) / 1e9, what, i);
}

struct job {
    const char *name;
    int steps;
    double gap;
    int64_t t0;
};

/* The body is the same in both versions: serially it runs as the only task,
 * concurrently the three share the loop while each one sleeps. */
static int run_job(void *arg, void **result)
{
    (void)result;
    struct job *j = arg;
    for (int i = 1; i <= j->steps; i++) {
        int rc = async_sleep(scaled(j->gap));
        if (rc) return rc;
        say(j->name, i, j->t0);
    }
    return 0;
}

static struct job jobs[] = {
    {"stand-up update", 4, 1.0, 0},
    {"work task", 3, 1.5, 0},
    {"coffee", 1, 10.0, 0},
};
#define NJOBS (sizeof jobs / sizeof jobs[0])

/* Both mains leave their code in *arg: the loop runs them detached. */
static int serially(void *arg, void **result)
{
    (void)result;
    int *rc = arg;
    for (size_t i = 0; i < NJOBS && !*rc; i++) *rc = run_job(&jobs[i], NULL);
    return *rc;
}

static int concurrently(void *arg, void **result)
{
    (void)result;
    int *rc = arg;
    async_group_t *group;
    if ((*rc = async_group_new(&group, NULL))) return *rc;
    for (size_t i = 0; i < NJOBS && !*rc; i++) *rc = async_group_spawn(group, run_job, &jobs[i], NULL);
    int waited = async_group_wait(group);
    if (!*rc) *rc = waited;
    async_group_destroy(group);
    return *rc;
}

static double timed(async_task_fn fn)
{
    async_loop_t *loop;
    int rc = async_loop_new(&loop);
    if (rc) {
        fprintf(stderr, "meeting: %s\n", async_strerror(rc));
        exit(1);
    }
    int64_t t0 = async_now();
    for (size_t i = 0; i < NJOBS; i++) jobs[i].t0 = t0;
    int task_rc = 0;
    if ((rc = async_task_spawn(NULL, loop, fn, &task_rc,
                               &(async_task_opts_t){.detached = true})) == 0) {
        async_loop_run(loop, ASYNC_RUN_DEFAULT);
        rc = task_rc;
    }
    double seconds = (double)(async_now() - t0) / 1e9;
    async_loop_destroy(loop);
    if (rc) {
        fprintf(stderr, "meeting: %s\n", async_strerror(rc));
        exit(1);
    }
    return seconds;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scale") && i + 1 < argc) {
            char *end;
            scale = strtod(argv[++i], &end);
            /* NaN passed "scale <= 0" and ran at once; inf or 1e9 made the
             * delays' nanoseconds overflow int64_t (1e9 slept ~584 years). */
            if (*end || end == argv[i] || !(scale > 0) || scale > MAX_SCALE) {
                fprintf(stderr, "meeting: --scale wants a positive number up to %g, not '%s'\n", MAX_SCALE,
                        argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = true;
        } else {
            fprintf(stderr, "usage: meeting [--scale F] [--quiet]\n");
            return 2;
        }
    }
    printf("serially (expected %.2f s):\n", 18.5 * scale);
    double serial = timed(serially);
    printf("concurrently (expected %.2f s):\n", 10.0 * scale);
    double concurrent = timed(concurrently);
    printf("serial:     %.3f s\n", serial);
    printf("concurrent: %.3f s\n", concurrent);
    printf("ratio:      %.2fx\n", serial / concurrent);
    return 0;
}
