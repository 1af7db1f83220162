/* See proc.h. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <async.h>
#include "proc.h"

int test_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the descriptor opendir itself holds */
}

int test_count_maps(const char *containing)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert_not_null(f);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (!containing || strstr(line, containing)) n++;
    fclose(f);
    return n;
}

long test_shmem_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert_not_null(f);
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "RssShmem:", 9) == 0) sscanf(line + 9, "%ld", &kb);
    fclose(f);
    cr_assert_geq(kb, 0, "no RssShmem in /proc/self/status");
    return kb;
}

char test_proc_state(async_process_t *p)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", async_process_pid(p));
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *close_paren = strrchr(buf, ')');
    cr_assert(close_paren && close_paren[1] == ' ', "unreadable %s", path);
    return close_paren[2];
}

void test_proc_wait_asleep(async_process_t *p)
{
    for (int i = 0; i < 4000; i++) {
        if (test_proc_state(p) == 'S') {
            usleep(20 * 1000);
            return;
        }
        usleep(5000);
    }
    cr_assert_fail("process %d never went to sleep", async_process_pid(p));
}

bool test_proc_asleep(async_process_t *p)
{
    for (int i = 0; i < 4000; i++) {
        char st = test_proc_state(p);
        if (st == 'S') return true;
        if (st == 'Z' || st == 'X') return false;
        usleep(5000);
    }
    cr_assert_fail("the child neither slept nor ended");
    return false;
}

/* A pid of 0 or below would name a process group, or every process. */
static void assert_killable(const async_process_t *p)
{
    cr_assert_gt(async_process_pid(p), 0, "no child to kill");
}

/* Joins p before now + wedge_ns: true.  False if it had not ended by then:
 * it is killed, reaped and freed (left running, it would hold the test
 * runner's pipes open). */
static bool joined(async_process_t *p, int64_t wedge_ns)
{
    int err = async_process_join_dl(p, async_now() + wedge_ns);
    if (err == ASYNC_ETIMEDOUT) {
        assert_killable(p);
        async_process_kill(p);
        async_process_join(p);
        async_process_free(p);
        return false;
    }
    cr_assert_eq(err, 0, "join of process %d: %s", async_process_pid(p), async_strerror(err));
    return true;
}

/* Frees p, joined; OUT: its exit code (-1 if a signal ended it) and that
 * signal (0 if none). */
static void status_and_free(async_process_t *p, int *code, int *sig)
{
    *code = -1;
    *sig = 0;
    cr_assert_eq(async_process_status(p, code, sig), 0);
    async_process_free(p);
}

int test_proc_exit(async_process_t *p, int64_t wedge_ns)
{
    if (!joined(p, wedge_ns)) return -1;
    int code, sig;
    status_and_free(p, &code, &sig);
    return sig ? 128 + sig : code;
}

/* Joins p, which must end before now + wedge_ns (the test fails otherwise),
 * and frees it; OUT as status_and_free. */
static void join_and_free(async_process_t *p, int64_t wedge_ns, int *code, int *sig)
{
    int pid = async_process_pid(p);
    if (!joined(p, wedge_ns))
        cr_assert_fail("process %d did not end in %.1f s", pid, (double)wedge_ns / 1e9);
    status_and_free(p, code, sig);
}

int test_proc_code(async_process_t *p, int64_t wedge_ns)
{
    int code, sig;
    join_and_free(p, wedge_ns, &code, &sig);
    return code;
}

void test_proc_kill(async_process_t *p, int64_t wedge_ns)
{
    assert_killable(p);
    int pid = async_process_pid(p), code, sig;
    cr_assert_eq(async_process_kill(p), 0, "process %d had already been reaped", pid);
    join_and_free(p, wedge_ns, &code, &sig);
    cr_assert_eq(sig, SIGKILL, "process %d ended with exit %d, signal %d, not by the SIGKILL", pid,
                 code, sig);
}

int test_proc_end(async_process_t *p, int64_t wedge_ns)
{
    assert_killable(p);
    if (async_process_is_alive(p)) cr_assert_eq(async_process_kill(p), 0);
    int code, sig;
    join_and_free(p, wedge_ns, &code, &sig);
    return sig ? 128 + sig : code;
}

int test_die_where;

void test_die_here(int where)
{
    if (where == test_die_where) raise(SIGKILL);
}
