/* What tests read from /proc and do to the processes they fork: leak
 * counters (open descriptors, mappings: all of them, or those whose line
 * contains a name, such as a memfd's; the shared memory this process has
 * touched), a child's scheduler state, the join of a child that must end by
 * itself, the kill and reap of one that must not, and a library test hook
 * that kills its process at a chosen point (test-ipc-hostile.c,
 * test-ipc-recovery.c). */
#ifndef TEST_SUPPORT_PROC_H
#define TEST_SUPPORT_PROC_H
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>
#include <async/process.h>
int test_count_fds(void);
int test_count_maps(const char *containing); /* NULL: every mapping */

/* RssShmem of this process, in kB (fails the test if /proc has none). */
long test_shmem_kb(void);

/* The state letter of a child in /proc/PID/stat ('S' asleep, 'Z' ended and
 * not yet joined, 'R' running, ...). */
char test_proc_state(async_process_t *p);

/* Waits until the child sleeps in the kernel (state S: for the children of
 * the IPC tests, inside their futex wait or their loop's epoll), then 20 ms
 * more, past any spin before the sleep; fails the test after 20 s. */
void test_proc_wait_asleep(async_process_t *p);

/* Waits until the child sleeps in the kernel: true; false if it ended
 * instead; fails the test after 20 s of neither. */
bool test_proc_asleep(async_process_t *p);

/* Joins p, which must end by itself before now + wedge_ns, and frees it:
 * its exit code, or 128 + the signal that ended it; -1 when it wedged (it
 * is killed and reaped then). */
int test_proc_exit(async_process_t *p, int64_t wedge_ns);

/* Joins p, which must end by itself before now + wedge_ns (the test fails
 * otherwise, once p is killed and reaped), and frees it: its exit code, -1
 * if a signal ended it (as async_process_status reports it). */
int test_proc_code(async_process_t *p, int64_t wedge_ns);

/* Kills p (SIGKILL; its pid must be above 0), joins it before now +
 * wedge_ns and frees it; the test fails if it was not that SIGKILL that
 * ended it (it had exited, or died of a signal of its own) or if it was
 * not reaped in time. */
void test_proc_kill(async_process_t *p, int64_t wedge_ns);

/* Ends p, whether or not it is still running: kills it (SIGKILL; its pid
 * must be above 0) if it runs, joins it before now + wedge_ns (the test
 * fails otherwise) and frees it: 128 + the signal that ended it, or its
 * exit code if it had ended by itself. */
int test_proc_end(async_process_t *p, int64_t wedge_ns);

/* A library test hook (lib/ipc/ipc_internal.h: async__ipc_*_hook) that
 * raises SIGKILL in its process when called at test_die_where. */
extern int test_die_where;
void test_die_here(int where);

/* _exit for a test's forked child: under `make coverage` it first writes
 * the child's gcov counters, which _exit throws away, so what the child
 * ran is counted (the library's own children do the same, core_internal.h). */
#ifdef ASYNC_COVERAGE
void __gcov_dump(void);
#define test_child_exit(code) (__gcov_dump(), _exit(code))
#else
#define test_child_exit(code) _exit(code)
#endif
#endif
