/* Shared memory regions, and leak checks for every IPC object: descriptors
 * (/proc/self/fd), mappings (/proc/self/maps) and heap (the counting
 * allocator), including out-of-memory paths. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "support/alloc.h"
#include "support/proc.h"

static int write_in_child(void *arg)
{
    strcpy(async_shm_ptr(arg), "written by the child");
    return 0;
}

Test(ipc_shm, region_shared_with_a_child, .timeout = 10)
{
    async_shm_t *shm;
    cr_assert_eq(async_shm_new(&shm, 0), ASYNC_EINVAL);
    cr_assert_eq(async_shm_new(NULL, 10), ASYNC_EINVAL);
    cr_assert_eq(async_shm_new(&shm, 10000), 0);
    cr_assert_eq(async_shm_size(shm), 10000);
    cr_assert_geq(async_shm_fd(shm), 0);
    unsigned char *p = async_shm_ptr(shm);
    for (int i = 0; i < 10000; i++) cr_assert_eq(p[i], 0, "zero-filled");
    async_process_t *c;
    cr_assert_eq(async_process_spawn(&c, write_in_child, shm), 0);
    cr_assert_eq(async_process_join(c), 0);
    async_process_free(c);
    cr_assert_str_eq((char *)p, "written by the child");
    async_shm_free(shm);
    async_shm_free(NULL);
}

Test(ipc_shm, attach_by_descriptor, .timeout = 10)
{
    async_shm_t *a, *b;
    cr_assert_eq(async_shm_new(&a, 4096), 0);
    cr_assert_eq(async_shm_attach(&b, async_shm_fd(a)), 0);
    cr_assert_eq(async_shm_size(b), 4096);
    cr_assert_neq(async_shm_fd(b), async_shm_fd(a), "the handle owns a duplicate");
    strcpy(async_shm_ptr(a), "same memory");
    cr_assert_str_eq(async_shm_ptr(b), "same memory");
    async_shm_free(a);
    cr_assert_str_eq(async_shm_ptr(b), "same memory", "outlives the creator's view");
    async_shm_free(b);
    cr_assert_eq(async_shm_attach(&b, -1), -EBADF);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    cr_assert_eq(async_shm_attach(&b, fds[0]), ASYNC_EINVAL, "not a region");
    close(fds[0]);
    close(fds[1]);
}

/* Creates and frees one of everything. */
static void one_of_each(void)
{
    async_shm_t *shm;
    async_ipc_queue_t *q;
    async_ipc_pipe_t *pa, *pb;
    async_ipc_lock_t *l;
    async_ipc_rlock_t *rl;
    async_ipc_sem_t *s;
    async_ipc_event_t *e;
    async_ipc_cond_t *c;
    async_ipc_barrier_t *b;
    async_shared_value_t *v;
    async_shared_array_t *a;
    cr_assert_eq(async_shm_new(&shm, 100), 0);
    cr_assert_eq(async_ipc_queue_new(&q, 16, 64, ASYNC_IPC_QUEUE_JOINABLE), 0);
    cr_assert_eq(async_ipc_pipe_new(&pa, &pb, 0), 0);
    cr_assert_eq(async_ipc_lock_new(&l), 0);
    cr_assert_eq(async_ipc_rlock_new(&rl), 0);
    cr_assert_eq(async_ipc_sem_new(&s, 1, 0), 0);
    cr_assert_eq(async_ipc_event_new(&e), 0);
    cr_assert_eq(async_ipc_cond_new(&c), 0);
    cr_assert_eq(async_ipc_barrier_new(&b, 2), 0);
    cr_assert_eq(async_shared_value_new(&v, 8, true), 0);
    cr_assert_eq(async_shared_array_new(&a, 8, 1000, true), 0);
    /* Use the ones with buffers so that those get allocated too. */
    cr_assert_eq(async_ipc_queue_put(q, "m", 1), 0);
    cr_assert_eq(async_ipc_pipe_send(pa, "m", 1), 0);
    char buf[64];
    size_t len;
    cr_assert_eq(async_ipc_pipe_recv(pb, buf, sizeof buf, &len), 0);
    async_shared_array_free(a);
    async_shared_value_free(v);
    async_ipc_barrier_free(b);
    async_ipc_cond_free(c);
    async_ipc_event_free(e);
    async_ipc_sem_free(s);
    async_ipc_rlock_free(rl);
    async_ipc_lock_free(l);
    async_ipc_pipe_free(pa);
    async_ipc_pipe_free(pb);
    async_ipc_queue_free(q);
    async_shm_free(shm);
}

static int nothing(void *arg)
{
    (void)arg;
    return 7;
}

Test(ipc_shm, no_descriptor_mapping_or_heap_leaks, .timeout = 10)
{
    test_alloc_install();
    one_of_each(); /* first use may set up libc state */
    int fds = test_count_fds(), maps = test_count_maps(NULL);
    long live = test_alloc_live();
    for (int i = 0; i < 50; i++) one_of_each();
    for (int i = 0; i < 10; i++) {
        async_process_t *p;
        cr_assert_eq(async_process_spawn(&p, nothing, NULL), 0);
        async_process_free(p);
    }
    cr_assert_eq(test_count_fds(), fds);
#if !defined(__SANITIZE_THREAD__) /* ThreadSanitizer maps shadow memory as it goes */
    cr_assert_eq(test_count_maps(NULL), maps);
#else
    (void)maps;
#endif
    cr_assert_eq(test_alloc_live(), live);
    test_alloc_uninstall();
}

Test(ipc_shm, out_of_memory_paths_leak_nothing, .timeout = 10)
{
    test_alloc_install();
    int fds = test_count_fds();
    long live = test_alloc_live();
    async_shm_t *shm = NULL;
    async_ipc_pipe_t *a = NULL, *b = NULL;
    async_process_t *p = NULL;
    test_alloc_fail_after(0);
    cr_assert_eq(async_shm_new(&shm, 100), ASYNC_ENOMEM);
    test_alloc_fail_after(0);
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), ASYNC_ENOMEM);
    test_alloc_fail_after(1);
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), ASYNC_ENOMEM);
    test_alloc_fail_after(0);
    cr_assert_eq(async_process_spawn(&p, nothing, NULL), ASYNC_ENOMEM);
    test_alloc_fail_after(-1);
    cr_assert_null(shm);
    cr_assert_null(p);
    cr_assert_eq(test_count_fds(), fds);
    cr_assert_eq(test_alloc_live(), live);
    /* A receive whose buffer cannot grow fails cleanly and leaves the message. */
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    cr_assert_eq(async_ipc_pipe_send(b, "abc", 3), 0);
    char buf[8];
    size_t len;
    test_alloc_fail_after(0);
    cr_assert_eq(async_ipc_pipe_recv(a, buf, sizeof buf, &len), ASYNC_ENOMEM);
    test_alloc_fail_after(-1);
    cr_assert_eq(async_ipc_pipe_recv(a, buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 3);
    async_ipc_pipe_free(a);
    async_ipc_pipe_free(b);
    cr_assert_eq(test_alloc_live(), live);
    test_alloc_uninstall();
}
