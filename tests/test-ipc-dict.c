/* The process-shared dictionary: get/set/update/increment/delete/items and
 * their errors, tombstone reuse, all-or-nothing updates, concurrent writers
 * in several processes, a writer killed in the middle of an update (stopped
 * there through the test hook, then killed), and a kill storm of writers
 * whose every update must stay whole. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "support/proc.h"

/* lib/ipc/ipc_internal.h: called by update after its i-th item, before its commit. */
extern void (*async__ipc_dict_hook)(int where);

#define CHILD_NS ASYNC_SEC(30)

static int64_t get_i64(async_shared_dict_t *d, const char *key)
{
    int64_t v = 0;
    size_t len = 0;
    int err = async_shared_dict_get(d, key, &v, sizeof v, &len);
    cr_assert_eq(err, 0, "get %s: %s", key, async_strerror(err));
    cr_assert_eq(len, sizeof v);
    return v;
}

static int count_cb(const char *key, const void *value, size_t len, void *arg)
{
    (void)key, (void)value, (void)len;
    ++*(int *)arg;
    return 0;
}

static int reenter_cb(const char *key, const void *value, size_t len, void *arg)
{
    (void)value, (void)len;
    async_shared_dict_t *d = arg;
    return async_shared_dict_set(d, key, "x", 1) == ASYNC_EALREADY ? 7 : 1;
}

Test(ipc_dict, set_get_update_increment_delete_items, .timeout = 10)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 8, 16, 32), 0);
    cr_assert_eq(async_shared_dict_capacity(d), 8);
    cr_assert_eq(async_shared_dict_len(d), 0);
    char buf[32];
    size_t len = 0;
    cr_assert_eq(async_shared_dict_get(d, "a", buf, sizeof buf, &len), ASYNC_ENOENT);
    cr_assert_str_eq(async_errname(ASYNC_ENOENT), "ASYNC_ENOENT"); /* a named code, not "unknown" */
    cr_assert_eq(async_shared_dict_set(d, "a", "hello", 5), 0);
    cr_assert_eq(async_shared_dict_get(d, "a", buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    cr_assert_eq(async_shared_dict_set(d, "a", "hi", 2), 0, "overwrite");
    cr_assert_eq(async_shared_dict_get(d, "a", buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 2);
    cr_assert_eq(memcmp(buf, "hi", 2), 0);
    cr_assert_eq(async_shared_dict_get(d, "a", buf, 1, &len), ASYNC_EINVAL, "too small");
    cr_assert_eq(len, 2);
    cr_assert_eq(async_shared_dict_get(d, "a", NULL, 0, &len), ASYNC_EINVAL);
    cr_assert_eq(async_shared_dict_set(d, "empty", NULL, 0), 0);
    cr_assert_eq(async_shared_dict_get(d, "empty", NULL, 0, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(async_shared_dict_len(d), 2);

    async_shared_dict_item_t items[] = {{"b", "B", 1}, {"c", "C", 1}, {"b", "BB", 2}};
    cr_assert_eq(async_shared_dict_update(d, items, 3), 0);
    cr_assert_eq(async_shared_dict_get(d, "b", buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 2, "the later duplicate wins");
    cr_assert_eq(async_shared_dict_len(d), 4);

    int64_t v = 0;
    cr_assert_eq(async_shared_dict_increment(d, "n", 5, &v), 0);
    cr_assert_eq(v, 5);
    cr_assert_eq(async_shared_dict_increment(d, "n", -7, &v), 0);
    cr_assert_eq(v, -2);
    cr_assert_eq(get_i64(d, "n"), -2);
    cr_assert_eq(async_shared_dict_increment(d, "a", 1, &v), ASYNC_EINVAL, "not 8 bytes");
    int64_t big = INT64_MAX;
    cr_assert_eq(async_shared_dict_set(d, "big", &big, sizeof big), 0);
    cr_assert_eq(async_shared_dict_increment(d, "big", 1, &v), ASYNC_EINVAL, "overflow");
    cr_assert_eq(get_i64(d, "big"), INT64_MAX);

    int n = 0;
    cr_assert_eq(async_shared_dict_items(d, count_cb, &n), 0);
    cr_assert_eq(n, 6);
    cr_assert_eq((size_t)n, async_shared_dict_len(d));
    cr_assert_eq(async_shared_dict_items(d, reenter_cb, d), 7, "re-entry is refused, not a deadlock");

    cr_assert_eq(async_shared_dict_delete(d, "a"), 0);
    cr_assert_eq(async_shared_dict_delete(d, "a"), ASYNC_ENOENT);
    cr_assert_eq(async_shared_dict_get(d, "a", buf, sizeof buf, &len), ASYNC_ENOENT);
    cr_assert_eq(async_shared_dict_len(d), 5);
    async_shared_dict_free(d);
    async_shared_dict_free(NULL);
}

Test(ipc_dict, bad_arguments_and_full, .timeout = 10)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(NULL, 8, 8, 8), ASYNC_EINVAL);
    cr_assert_eq(async_shared_dict_new(&d, 0, 8, 8), ASYNC_EINVAL);
    cr_assert_eq(async_shared_dict_new(&d, 8, 0, 8), ASYNC_EINVAL);
    cr_assert_eq(async_shared_dict_new(&d, 2, 4, 4), 0);
    cr_assert_eq(async_shared_dict_set(d, NULL, "x", 1), ASYNC_EINVAL);
    cr_assert_eq(async_shared_dict_set(d, "toolong", "x", 1), ASYNC_EINVAL);
    cr_assert_eq(async_shared_dict_set(d, "k", "12345", 5), ASYNC_EINVAL);
    cr_assert_eq(async_shared_dict_set(d, "k", NULL, 1), ASYNC_EINVAL);
    cr_assert_eq(async_shared_dict_increment(d, "k", 1, NULL), ASYNC_EINVAL, "max_value < 8");
    cr_assert_eq(async_shared_dict_items(d, NULL, NULL), ASYNC_EINVAL);
    cr_assert_eq(async_shared_dict_set(d, "abcd", "x", 1), 0, "a key of exactly max_key");
    cr_assert_eq(async_shared_dict_set(d, "b", "x", 1), 0);
    cr_assert_eq(async_shared_dict_set(d, "c", "x", 1), ASYNC_EFULL);
    cr_assert_eq(async_shared_dict_set(d, "b", "y", 1), 0, "an existing key still fits");
    /* All or nothing: the first item fits in a freed place, the second does not. */
    cr_assert_eq(async_shared_dict_delete(d, "b"), 0);
    async_shared_dict_item_t items[] = {{"c", "1", 1}, {"e", "2", 1}};
    cr_assert_eq(async_shared_dict_update(d, items, 2), ASYNC_EFULL);
    char buf[4];
    cr_assert_eq(async_shared_dict_get(d, "c", buf, sizeof buf, NULL), ASYNC_ENOENT);
    cr_assert_eq(async_shared_dict_len(d), 1);
    cr_assert_eq(async_shared_dict_update(d, items, 1), 0);
    cr_assert_eq(async_shared_dict_len(d), 2);
    async_shared_dict_free(d);
}

Test(ipc_dict, deleted_places_are_reused, .timeout = 20)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 64, 16, 8), 0);
    char key[16];
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 64; i++) {
            snprintf(key, sizeof key, "r%d-%d", round, i);
            cr_assert_eq(async_shared_dict_increment(d, key, i, NULL), 0, "%s", key);
        }
        cr_assert_eq(async_shared_dict_len(d), 64);
        for (int i = 0; i < 64; i++) {
            snprintf(key, sizeof key, "r%d-%d", round, i);
            cr_assert_eq(get_i64(d, key), i);
            cr_assert_eq(async_shared_dict_delete(d, key), 0);
        }
        cr_assert_eq(async_shared_dict_len(d), 0);
    }
    async_shared_dict_free(d);
}

/* --- many processes ----------------------------------------------------------------- */

#define WRITERS 4
#define INCS 20000

typedef struct shared_job {
    async_shared_dict_t *d;
    int id;
} shared_job_t;

static int incrementer(void *arg)
{
    shared_job_t *j = arg;
    char own[16];
    snprintf(own, sizeof own, "w%d", j->id);
    for (int i = 0; i < INCS; i++) {
        if (async_shared_dict_increment(j->d, "total", 1, NULL)) return 1;
        if (async_shared_dict_increment(j->d, own, 1, NULL)) return 2;
    }
    return 0;
}

Test(ipc_dict, concurrent_writers_lose_no_update, .timeout = 60)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 16, 16, 8), 0);
    async_process_t *p[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        shared_job_t j = {d, i};
        cr_assert_eq(async_process_spawn(&p[i], incrementer, &j), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        cr_assert_eq(async_process_join_dl(p[i], async_now() + CHILD_NS), 0);
        int code = -1;
        cr_assert_eq(async_process_status(p[i], &code, NULL), 0);
        cr_assert_eq(code, 0);
        async_process_free(p[i]);
    }
    cr_assert_eq(get_i64(d, "total"), WRITERS * INCS);
    char own[16];
    for (int i = 0; i < WRITERS; i++) {
        snprintf(own, sizeof own, "w%d", i);
        cr_assert_eq(get_i64(d, own), INCS);
    }
    cr_assert_eq(async_shared_dict_len(d), WRITERS + 1);
    async_shared_dict_free(d);
}

/* --- a writer killed mid-update ----------------------------------------------------- */

static int stop_where;

static void stop_here(int where)
{
    if (where == stop_where) raise(SIGSTOP);
}

static int hooked_update(void *arg)
{
    async_shared_dict_t *d = arg;
    async__ipc_dict_hook = stop_here;
    int64_t one = 1;
    /* Overwrites a and b, inserts c, and deletes nothing. */
    async_shared_dict_item_t items[] = {{"a", &one, 8}, {"b", &one, 8}, {"c", &one, 8}};
    return async_shared_dict_update(d, items, 3) ? 1 : 0;
}

static void kill_writer_at(int where)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 8, 8, 8), 0);
    int64_t zero = 0;
    async_shared_dict_item_t init[] = {{"a", &zero, 8}, {"b", &zero, 8}};
    cr_assert_eq(async_shared_dict_update(d, init, 2), 0);
    stop_where = where;
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, hooked_update, d), 0);
    siginfo_t si = {0};
    cr_assert_eq(waitid(P_PID, (id_t)async_process_pid(p), &si, WSTOPPED | WNOWAIT), 0);
    cr_assert_eq(si.si_code, CLD_STOPPED);
    cr_assert_eq(async_process_kill(p), 0);
    cr_assert_eq(async_process_join_dl(p, async_now() + CHILD_NS), 0);
    async_process_free(p);

    /* Exactly as before the update: not a, not b, no c. */
    cr_assert_eq(get_i64(d, "a"), 0);
    cr_assert_eq(get_i64(d, "b"), 0);
    cr_assert_eq(async_shared_dict_get(d, "c", NULL, 0, NULL), ASYNC_ENOENT);
    cr_assert_eq(async_shared_dict_len(d), 2);
    int n = 0;
    cr_assert_eq(async_shared_dict_items(d, count_cb, &n), 0);
    cr_assert_eq(n, 2);
    /* And it works on. */
    cr_assert_eq(async_shared_dict_increment(d, "c", 3, NULL), 0);
    cr_assert_eq(async_shared_dict_increment(d, "a", 2, NULL), 0);
    cr_assert_eq(get_i64(d, "a"), 2);
    cr_assert_eq(get_i64(d, "c"), 3);
    cr_assert_eq(async_shared_dict_len(d), 3);
    async_shared_dict_free(d);
}

Test(ipc_dict, writer_killed_after_one_item_changes_nothing, .timeout = 30) { kill_writer_at(1); }
Test(ipc_dict, writer_killed_before_its_commit_changes_nothing, .timeout = 30) { kill_writer_at(3); }

/* --- a kill storm of writers -------------------------------------------------------- */

#define STORM_WRITERS 3
#define MAX_WRITERS 200

typedef struct storm {
    async_shared_dict_t *d;
    int64_t *done; /* shared: increments of "n" that returned, per writer */
    int id;
} storm_t;

/* Keeps x == y == z in every update and counts increments of n. */
static int storm_writer(void *arg)
{
    storm_t *s = arg;
    int64_t dl = async_now() + CHILD_NS;
    for (int64_t i = 1; async_now() < dl; i++) {
        async_shared_dict_item_t items[] = {{"x", &i, 8}, {"y", &i, 8}, {"z", &i, 8}};
        if (async_shared_dict_update(s->d, items, 3)) return 1;
        if (async_shared_dict_increment(s->d, "n", 1, NULL)) return 2;
        __atomic_store_n(&s->done[s->id], i, __ATOMIC_SEQ_CST);
    }
    return 0;
}

typedef struct snap {
    int64_t x, y, z;
} snap_t;

static int snap_cb(const char *key, const void *value, size_t len, void *arg)
{
    snap_t *sn = arg;
    int64_t v;
    if (len != 8) return 1;
    memcpy(&v, value, 8);
    if (!strcmp(key, "x")) sn->x = v;
    else if (!strcmp(key, "y")) sn->y = v;
    else if (!strcmp(key, "z")) sn->z = v;
    return 0;
}

Test(ipc_dict, writer_kill_storm_leaves_every_update_whole, .timeout = 120)
{
    storm_t s = {0};
    async_shared_array_t *done;
    cr_assert_eq(async_shared_dict_new(&s.d, 8, 8, 8), 0);
    cr_assert_eq(async_shared_array_new(&done, sizeof(int64_t), MAX_WRITERS, false), 0);
    s.done = async_shared_array_ptr(done);
    async_process_t *w[STORM_WRITERS];
    int next = 0;
    for (int i = 0; i < STORM_WRITERS; i++) {
        s.id = next++;
        cr_assert_eq(async_process_spawn(&w[i], storm_writer, &s), 0);
    }
    unsigned seed = 3, killed = 0, checks = 0;
    int64_t end = async_now() + ASYNC_MSEC(1500);
    while (async_now() < end && next < MAX_WRITERS) {
        usleep(500 + (unsigned)rand_r(&seed) % 3000);
        snap_t sn = {0};
        cr_assert_eq(async_shared_dict_items(s.d, snap_cb, &sn), 0);
        cr_assert(sn.x == sn.y && sn.y == sn.z, "a torn update: x=%lld y=%lld z=%lld",
                  (long long)sn.x, (long long)sn.y, (long long)sn.z);
        checks++;
        int i = (int)((unsigned)rand_r(&seed) % STORM_WRITERS);
        test_proc_kill(w[i], CHILD_NS); /* fails if the writer failed instead */
        killed++;
        s.id = next++;
        cr_assert_eq(async_process_spawn(&w[i], storm_writer, &s), 0);
    }
    for (int i = 0; i < STORM_WRITERS; i++) {
        async_process_kill(w[i]);
        cr_assert_eq(async_process_join_dl(w[i], async_now() + CHILD_NS), 0);
        killed++;
        async_process_free(w[i]);
    }
    snap_t sn = {0};
    cr_assert_eq(async_shared_dict_items(s.d, snap_cb, &sn), 0);
    cr_assert(sn.x == sn.y && sn.y == sn.z);
    /* Each writer recorded its increments after they returned; one killed
     * between the two may have added one more than it recorded. */
    int64_t recorded = 0;
    for (int i = 0; i < next; i++) recorded += s.done[i];
    int64_t n = get_i64(s.d, "n");
    cr_log_info("%u writers killed, %u snapshots checked, n = %lld, recorded %lld", killed, checks,
                (long long)n, (long long)recorded);
    cr_assert_geq(n, recorded);
    cr_assert_leq(n, recorded + killed);
    cr_assert_gt(recorded, 0);
    cr_assert_eq(async_shared_dict_len(s.d), 4);
    async_shared_array_free(done);
    async_shared_dict_free(s.d);
}
