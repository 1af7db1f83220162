/* IPC objects whose shared mapping another process scribbled on (round
 * 17), as a buggy worker with a stray write or an overrun would: every
 * process maps the whole object writable, so one process's mistake lands
 * in the memory all the others trust.  A child makes one write to a word
 * of the object (lib/ipc/ipc_internal.h's async__ipc_spots_t says where),
 * then the parent, the survivor, uses the object.  The survivor must get a
 * precise error (ASYNC_EIO) or find its object unchanged, never a crash, an
 * overrun of its own buffer, a stale message, a wedge, or a write to or
 * unmap of memory or a descriptor that is not the object's.  A write to an
 * object's geometry (its sizes, counts and descriptors, fixed at creation)
 * faults in the writer: that page is read-only after creation. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "ipc/ipc_internal.h"
#include "support/proc.h"

#define WEDGE_NS ASYNC_SEC(20)
#define FAULTED 77 /* the scribbler's exit code when its write faulted */

typedef struct scribble {
    void *at;
    uint64_t value;
    int width; /* 1, 4 or 8 bytes */
} scribble_t;

static void on_fault(int sig)
{
    (void)sig;
    _exit(FAULTED);
}

static int scribbler(void *arg)
{
    scribble_t *s = arg;
    struct sigaction sa = {.sa_handler = on_fault};
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    if (s->width == 1) *(volatile uint8_t *)s->at = (uint8_t)s->value;
    else if (s->width == 4) *(volatile uint32_t *)s->at = (uint32_t)s->value;
    else *(volatile uint64_t *)s->at = s->value;
    test_child_exit(0);
}

/* Has a child write value (width bytes) at at; its exit code (FAULTED
 * when the write faulted). */
static int scribble(void *at, uint64_t value, int width)
{
    scribble_t s = {at, value, width};
    async_process_opts_t o;
    async_process_opts_init(&o);
    o.daemon = true;
    async_process_t *p;
    cr_assert_eq(async_process_spawn_opts(&p, scribbler, &s, &o), 0);
    return test_proc_exit(p, WEDGE_NS);
}

/* --- the queue ------------------------------------------------------------------ */

/* On main the getter copied the length the word said, 4 GiB, into its
 * 16-byte buffer and died of SIGSEGV (ASan: a stack-buffer-overflow). */
Test(ipc_scribble, a_scribbled_message_length_is_an_error_not_an_overrun, .timeout = 60)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 4, 16, 0), 0);
    cr_assert_eq(async_ipc_queue_put(q, "first", 5), 0);
    cr_assert_eq(async_ipc_queue_put(q, "second", 6), 0);
    async__ipc_spots_t at;
    async__ipc_queue_spots(q, &at);
    cr_assert_eq(scribble(at.len_at_tail, 0xfffffff0u, 4), 0);

    struct { char buf[16]; char guard[16]; } b;
    memset(&b, 0x5a, sizeof b);
    size_t len = 1234;
    cr_expect_eq(async_ipc_queue_get_dl(q, b.buf, sizeof b.buf, &len, async_now() + WEDGE_NS),
                 ASYNC_EIO, "a length past max_msg is an error");
    for (size_t i = 0; i < sizeof b.guard; i++) cr_assert_eq(b.guard[i], 0x5a, "overran the buffer");
    /* The bad message is dropped: the queue goes on with the next. */
    cr_expect_eq(async_ipc_queue_len(q), 1);
    cr_assert_eq(async_ipc_queue_tryget(q, b.buf, sizeof b.buf, &len), 0);
    cr_expect_eq(len, 6);
    cr_expect_eq(memcmp(b.buf, "second", 6), 0);
    cr_expect_eq(async_ipc_queue_tryget(q, b.buf, sizeof b.buf, &len), ASYNC_EAGAIN);
    cr_expect_eq(async_ipc_queue_put(q, "third", 5), 0);
    cr_expect_eq(async_ipc_queue_tryget(q, b.buf, sizeof b.buf, &len), 0);
    cr_expect_eq(len, 5);
    async_ipc_queue_free(q);
}

/* Counters that cannot be (more messages than slots, more got than put):
 * on main a getter got the stale bytes of slots long since got, again and
 * again, and a putter found the ring full for ever (put without a deadline
 * never returned). */
static void scribbled_counter(bool head, uint64_t value_from_tail)
{
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 4, 8, 0), 0);
    char buf[8];
    size_t len;
    for (int i = 0; i < 6; i++) { /* wrap once, so that every slot holds an old message */
        cr_assert_eq(async_ipc_queue_put(q, "old", 3), 0);
        cr_assert_eq(async_ipc_queue_get(q, buf, sizeof buf, &len), 0);
    }
    cr_assert_eq(async_ipc_queue_put(q, "live", 4), 0);
    async__ipc_spots_t at;
    async__ipc_queue_spots(q, &at);
    uint64_t tail = atomic_load(at.tail);
    cr_assert_eq(scribble(head ? (void *)at.head : (void *)at.tail, tail + value_from_tail, 8), 0);

    int64_t dl = async_now() + WEDGE_NS;
    cr_expect_eq(async_ipc_queue_tryget(q, buf, sizeof buf, &len), ASYNC_EIO);
    cr_expect_eq(async_ipc_queue_get_dl(q, buf, sizeof buf, &len, dl), ASYNC_EIO);
    cr_expect_eq(async_ipc_queue_get(q, buf, sizeof buf, &len), ASYNC_EIO);
    cr_expect_eq(async_ipc_queue_tryput(q, "x", 1), ASYNC_EIO);
    cr_expect_eq(async_ipc_queue_put(q, "x", 1), ASYNC_EIO, "a put waited for room that cannot come");
    cr_expect(async_now() < dl, "the calls waited");
    cr_expect_leq(async_ipc_queue_len(q), 4);
    cr_expect_eq(async_ipc_queue_close(q), 0);
    async_ipc_queue_free(q);
}

Test(ipc_scribble, more_messages_than_slots_is_an_error, .timeout = 60)
{
    scribbled_counter(true, 4 + 3);
}

Test(ipc_scribble, more_got_than_put_is_an_error, .timeout = 60)
{
    scribbled_counter(false, 2); /* tail two past head */
}

/* On main the write took: the queue then took a fifth message into 4
 * slots, past its mapping's end in time, and each commit wrote 8 bytes to
 * the descriptor the scribbled number named (here a pipe of the test's). */
Test(ipc_scribble, a_stray_write_to_the_queue_geometry_faults_in_the_writer, .timeout = 60)
{
    int fds[2];
    cr_assert_eq(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
    async_ipc_queue_t *q;
    cr_assert_eq(async_ipc_queue_new(&q, 4, 8, 0), 0);
    async__ipc_spots_t at;
    async__ipc_queue_spots(q, &at);
    cr_expect_eq(scribble(at.capacity, (uint64_t)1 << 40, 8), FAULTED, "the capacity was writable");
    cr_expect_eq(scribble(at.get_efd, (uint64_t)fds[1], 4), FAULTED, "the descriptor was writable");

    int a = async_ipc_queue_watch(q, ASYNC_READABLE); /* so that commits signal the eventfd */
    cr_assert_eq(a, 0);
    for (int i = 0; i < 4; i++) cr_expect_eq(async_ipc_queue_tryput(q, "m", 1), 0);
    cr_expect_eq(async_ipc_queue_tryput(q, "m", 1), ASYNC_EAGAIN, "a fifth message in four slots");
    cr_expect_eq(async_ipc_queue_capacity(q), 4);
    char c;
    cr_expect_eq(read(fds[0], &c, 1), -1, "the queue wrote to a descriptor not its own");
    cr_expect_eq(errno, EAGAIN);
    cr_expect_eq(async_ipc_queue_unwatch(q, ASYNC_READABLE), 0);
    async_ipc_queue_free(q);
    cr_expect_eq(fcntl(fds[1], F_GETFD), FD_CLOEXEC, "the queue's free closed a descriptor not its own");
    close(fds[0]);
    close(fds[1]);
}

/* --- the dictionary ------------------------------------------------------------- */

typedef struct seen {
    int keys;
    size_t longest_value, longest_key;
} seen_t;

static int note(const char *key, const void *value, size_t len, void *arg)
{
    (void)value;
    seen_t *s = arg;
    s->keys++;
    if (len > s->longest_value) s->longest_value = len;
    size_t k = strnlen(key, 4096);
    if (k > s->longest_key) s->longest_key = k;
    return 0;
}

/* On main get said the value was 2 GiB long and, given the room, copied
 * 2 GiB from the shared table (past its mapping: SIGSEGV); items handed
 * its callback that length. */
Test(ipc_scribble, a_scribbled_value_length_is_an_error_not_an_overrun, .timeout = 60)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 8, 16, 8), 0);
    int64_t one = 1;
    cr_assert_eq(async_shared_dict_set(d, "k", &one, sizeof one), 0);
    cr_assert_eq(async_shared_dict_set(d, "other", &one, sizeof one), 0);
    async__ipc_spots_t at;
    cr_assert_eq(async__ipc_dict_spots(d, "k", &at), 0);
    cr_assert_eq(scribble(at.vlen, 0x7fffffffu, 4), 0);

    size_t len = 0;
    int64_t v;
    cr_expect_eq(async_shared_dict_get(d, "k", NULL, 0, &len), ASYNC_EIO);
    size_t big = (size_t)1 << 31;
    void *room = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    cr_assert_neq(room, MAP_FAILED);
    cr_expect_eq(async_shared_dict_get(d, "k", room, big, &len), ASYNC_EIO, "copied past the table");
    munmap(room, big);
    cr_expect_eq(async_shared_dict_increment(d, "k", 1, &v), ASYNC_EIO);
    seen_t s = {0};
    cr_expect_eq(async_shared_dict_items(d, note, &s), ASYNC_EIO);
    cr_expect_leq(s.longest_value, 8, "items handed on a length past max_value");
    /* The other key is untouched, and a set of the scribbled one mends it. */
    cr_expect_eq(async_shared_dict_get(d, "other", &v, sizeof v, &len), 0);
    cr_expect_eq(v, 1);
    cr_expect_eq(async_shared_dict_set(d, "k", &one, sizeof one), 0);
    cr_expect_eq(async_shared_dict_increment(d, "k", 1, &v), 0);
    cr_expect_eq(v, 2);
    s = (seen_t){0};
    cr_expect_eq(async_shared_dict_items(d, note, &s), 0);
    cr_expect_eq(s.keys, 2);
    cr_expect_eq(async_shared_dict_len(d), 2);
    async_shared_dict_free(d);
}

/* On main items handed its callback a key with no NUL in its max_key + 1
 * bytes (the callback's strlen ran on into the value), or skipped a key
 * whose state word was garbage while len still counted it. */
static void scribbled_key(int what)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 8, 4, 8), 0);
    int64_t one = 1;
    cr_assert_eq(async_shared_dict_set(d, "abcd", &one, sizeof one), 0);
    async__ipc_spots_t at;
    cr_assert_eq(async__ipc_dict_spots(d, "abcd", &at), 0);
    if (what == 0) cr_assert_eq(scribble(at.key + 4, 'e', 1), 0); /* the NUL */
    else if (what == 1) cr_assert_eq(scribble(at.klen, 60000, 4), 0);
    else cr_assert_eq(scribble(at.state, 0x55, 4), 0);
    seen_t s = {0};
    cr_expect_eq(async_shared_dict_items(d, note, &s), ASYNC_EIO);
    cr_expect_eq(s.keys, 0);
    async_shared_dict_free(d);
}

Test(ipc_scribble, items_never_hands_on_a_key_without_its_nul, .timeout = 60) { scribbled_key(0); }
Test(ipc_scribble, items_never_hands_on_a_key_longer_than_max_key, .timeout = 60) { scribbled_key(1); }
Test(ipc_scribble, items_reports_a_version_in_no_known_state, .timeout = 60) { scribbled_key(2); }

/* On main the write took, and every lookup probed 2^40 slots' worth of
 * addresses past the table: SIGSEGV in the survivor. */
Test(ipc_scribble, a_stray_write_to_the_dict_geometry_faults_in_the_writer, .timeout = 60)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 8, 16, 8), 0);
    int64_t one = 1, v;
    cr_assert_eq(async_shared_dict_set(d, "k", &one, sizeof one), 0);
    async__ipc_spots_t at;
    cr_assert_eq(async__ipc_dict_spots(d, "k", &at), 0);
    cr_expect_eq(scribble(at.nslots, (uint64_t)1 << 40, 8), FAULTED, "the slot count was writable");
    for (int i = 0; i < 8; i++) {
        char key[8];
        snprintf(key, sizeof key, "n%d", i);
        int err = async_shared_dict_set(d, key, &one, sizeof one);
        cr_expect_eq(err, i < 7 ? 0 : ASYNC_EFULL, "%s: %s", key, async_strerror(err));
    }
    size_t len;
    cr_expect_eq(async_shared_dict_get(d, "k", &v, sizeof v, &len), 0);
    cr_expect_eq(async_shared_dict_get(d, "absent", &v, sizeof v, &len), ASYNC_ENOENT);
    async_shared_dict_free(d);
}

/* --- values, arrays and the fixed-size objects ---------------------------------- */

/* On main the write took, and set wrote past the array (into whatever was
 * mapped after it) instead of refusing the index. */
Test(ipc_scribble, a_stray_write_to_an_array_length_faults_in_the_writer, .timeout = 60)
{
    async_shared_array_t *a;
    cr_assert_eq(async_shared_array_new(&a, sizeof(long), 4, true), 0);
    async__ipc_spots_t at;
    async__ipc_array_spots(a, &at);
    cr_expect_eq(scribble(at.n, (uint64_t)1 << 40, 8), FAULTED, "the length was writable");
    long x = 7;
    cr_expect_eq(async_shared_array_set(a, 4, &x), ASYNC_EINVAL);
    cr_expect_eq(async_shared_array_set(a, 1 << 20, &x), ASYNC_EINVAL);
    cr_expect_eq(async_shared_array_len(a), 4);
    cr_expect_eq(async_shared_array_set(a, 3, &x), 0);
    async_shared_array_free(a);
}

/* Whether the page at p is mapped in this process. */
static bool mapped(void *p)
{
    return msync(p, 1, MS_ASYNC) == 0 || errno != ENOMEM;
}

/* A fixed-size object (a lock, a semaphore, ...) keeps its mapping's size
 * in its header too.  On main free unmapped the size the header said: a
 * scribbled one unmapped the page after the object, whatever was there. */
static void free_unmaps_only_its_own(int kind)
{
    long page = sysconf(_SC_PAGESIZE);
    void *obj = NULL;
    if (kind == 0) cr_assert_eq(async_ipc_lock_new((async_ipc_lock_t **)&obj), 0);
    else if (kind == 1) cr_assert_eq(async_ipc_sem_new((async_ipc_sem_t **)&obj, 1, 0), 0);
    else cr_assert_eq(async_ipc_barrier_new((async_ipc_barrier_t **)&obj, 2), 0);
    /* The page after the object: our own page if it is free, or whatever
     * holds it (it must survive all the same). */
    char *next = (char *)obj + page;
    void *mine = mmap(next, (size_t)page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (mine == next) *next = 42;
    else if (mine != MAP_FAILED) munmap(mine, (size_t)page), mine = MAP_FAILED;
    cr_assert(mapped(next));
    async__ipc_hdr_t *h = obj;
    cr_assert_eq(scribble(&h->map_size, (uint64_t)(2 * page), 8), 0);
    if (kind == 0) async_ipc_lock_free(obj);
    else if (kind == 1) async_ipc_sem_free(obj);
    else async_ipc_barrier_free(obj);
    cr_expect(mapped(next), "free unmapped the page after the object");
    cr_expect(!mapped(obj), "free left the object mapped");
    if (mine == next && mapped(next)) {
        cr_expect_eq(*next, 42);
        munmap(mine, (size_t)page);
    }
}

Test(ipc_scribble, a_lock_free_unmaps_only_the_lock, .timeout = 60) { free_unmaps_only_its_own(0); }
Test(ipc_scribble, a_semaphore_free_unmaps_only_the_semaphore, .timeout = 60) { free_unmaps_only_its_own(1); }
Test(ipc_scribble, a_barrier_free_unmaps_only_the_barrier, .timeout = 60) { free_unmaps_only_its_own(2); }

/* --- the seal at the mapping-count limit ----------------------------------------- */

/* Sealing the first page splits the object's mapping in two, one more
 * entry in the process's mapping count (vm.max_map_count): at the limit
 * the object's creation must fail whole (ASYNC_ENOMEM), its mapping and
 * descriptors gone, also when the mapping itself still fitted and only the
 * split did not.  In a child, which fills its mapping count with one-page
 * shared mappings (they never merge), then frees them one at a time and
 * tries again until the creation succeeds.  No malloc in the child once
 * the count is full: the counts are read with read(2) into a static
 * buffer. */
static int count_maps_raw(void)
{
    static char buf[1 << 16];
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC), n = 0;
    if (fd < 0) return -1;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < r; i++) n += buf[i] == '\n';
    close(fd);
    return n;
}

/* Which of the first 256 descriptors are open, as a bitmap. */
typedef struct fdset { uint64_t bits[4]; } fdset_t;

static fdset_t open_fds(void)
{
    fdset_t f = {{0}};
    for (int i = 0; i < 256; i++)
        if (fcntl(i, F_GETFD) != -1) f.bits[i / 64] |= (uint64_t)1 << (i % 64);
    return f;
}

enum { MAX_FILL = 70000 };
static void *fill[MAX_FILL];

static int create(int kind, void **obj)
{
    switch (kind) {
    case 0: return async_ipc_queue_new((async_ipc_queue_t **)obj, 4, 8, 0);
    case 1: return async_shared_dict_new((async_shared_dict_t **)obj, 4, 8, 8);
    default: return async_shared_array_new((async_shared_array_t **)obj, 8, 4, true);
    }
}

static int creator_at_the_limit(void *arg)
{
    int kind = (int)(intptr_t)arg;
    long page = sysconf(_SC_PAGESIZE);
    int n = 0;
    while (n < MAX_FILL) {
        void *p = mmap(NULL, (size_t)page, PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) break;
        fill[n++] = p;
    }
    if (n == MAX_FILL) test_child_exit(2); /* no limit reached */
    int failures = 0;
    void *obj = NULL;
    for (;;) {
        int maps = count_maps_raw();
        fdset_t fds = open_fds();
        int err = create(kind, &obj);
        if (err == 0) break;
        if (err != ASYNC_ENOMEM) test_child_exit(3);
        if (count_maps_raw() != maps) test_child_exit(4); /* a mapping left behind */
        fdset_t now = open_fds();
        if (memcmp(&now, &fds, sizeof now)) test_child_exit(5); /* a descriptor left behind */
        failures++;
        if (n == 0) test_child_exit(6);
        munmap(fill[--n], (size_t)page);
    }
    if (failures < 2) test_child_exit(7); /* at 0 and 1 free entries both must fail */
    /* The object works. */
    int rc = 0;
    if (kind == 0) {
        char buf[8];
        size_t len;
        if (async_ipc_queue_put(obj, "abc", 3) || async_ipc_queue_get(obj, buf, 8, &len) || len != 3)
            rc = 8;
        async_ipc_queue_free(obj);
    } else if (kind == 1) {
        int64_t v;
        if (async_shared_dict_increment(obj, "k", 5, &v) || v != 5) rc = 8;
        async_shared_dict_free(obj);
    } else {
        long x = 9, y = 0;
        if (async_shared_array_set(obj, 3, &x) || async_shared_array_get(obj, 3, &y) || y != 9) rc = 8;
        async_shared_array_free(obj);
    }
    while (n > 0) munmap(fill[--n], (size_t)page);
    test_child_exit(rc);
}

static void at_the_limit(int kind)
{
#if defined(__SANITIZE_THREAD__)
    cr_skip_test("ThreadSanitizer's own allocator needs mappings of its own at the limit");
#endif
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, creator_at_the_limit, (void *)(intptr_t)kind), 0);
    int code = test_proc_exit(p, ASYNC_SEC(60));
    cr_expect_eq(code, 0, "the child ended %d (2: no limit, 3: not ENOMEM, 4: a mapping left, 5: a "
                          "descriptor left, 7: did not fail at the limit, 8: the object failed)", code);
}

Test(ipc_scribble, a_queue_at_the_mapping_limit_fails_whole, .timeout = 120) { at_the_limit(0); }
Test(ipc_scribble, a_dict_at_the_mapping_limit_fails_whole, .timeout = 120) { at_the_limit(1); }
Test(ipc_scribble, an_array_at_the_mapping_limit_fails_whole, .timeout = 120) { at_the_limit(2); }

/* --- a key that changes under the call ------------------------------------------ */

/* update checks every key's length before it takes the lock, then copies
 * each under it.  A key in memory another process writes (an async_shm_t
 * region, say) can grow in between; on main the copy took its new length
 * from strlen, wrote a 39-byte key into a version with room for 8 (over
 * its value and into the next version), and stored a klen past max_key.
 * Here the dictionary's own hook, called after the first item is written,
 * stands in for that writer: it overwrites the second key's NUL. */
static char growing_key[48] = "b";

static void grow_key(int where)
{
    if (where == 1) memset(growing_key, 'x', sizeof growing_key - 1); /* NUL only at the end */
}

static int check_lengths(const char *key, const void *value, size_t len, void *arg)
{
    (void)value;
    seen_t *s = arg;
    s->keys++;
    size_t k = strnlen(key, 4096);
    if (k > s->longest_key) s->longest_key = k;
    if (len > s->longest_value) s->longest_value = len;
    return 0;
}

Test(ipc_scribble, a_key_that_grows_during_an_update_is_refused_whole, .timeout = 60)
{
    async_shared_dict_t *d;
    cr_assert_eq(async_shared_dict_new(&d, 8, 8, 8), 0);
    int64_t one = 1;
    async_shared_dict_item_t items[] = {{"a", &one, sizeof one}, {growing_key, &one, sizeof one}};
    async__ipc_dict_hook = grow_key;
    int err = async_shared_dict_update(d, items, 2);
    async__ipc_dict_hook = NULL;
    cr_expect_eq(err, ASYNC_EINVAL, "update: %s", async_strerror(err));
    cr_expect_eq(async_shared_dict_len(d), 0, "not all or nothing");
    seen_t s = {0};
    cr_expect_eq(async_shared_dict_items(d, check_lengths, &s), 0);
    cr_expect_eq(s.keys, 0);
    cr_expect_leq(s.longest_key, 8);
    size_t len;
    int64_t v;
    cr_expect_eq(async_shared_dict_get(d, "a", &v, sizeof v, &len), ASYNC_ENOENT);
    cr_expect_eq(async_shared_dict_set(d, "a", &one, sizeof one), 0);
    cr_expect_eq(async_shared_dict_len(d), 1);
    async_shared_dict_free(d);
}
