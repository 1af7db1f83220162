/* Message pipes: duplex and one-way, framing across processes, end-of-stream,
 * a closed peer, too-small buffers, deadlines, poll, and a task awaiting a
 * pipe while another task keeps running. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "async.h"
#include "async/ipc.h"
#include "async/process.h"
#include "support/proc.h"
#include "support/ticker.h"

/* Generous: it only turns a child that never ends into a failure. */
#define CHILD_NS ASYNC_SEC(10)

typedef struct ends {
    async_ipc_pipe_t *a, *b;
} ends_t;

/* A new pipe in e (flags as async_ipc_pipe_new takes them) whose end b is
 * fn's, in a child: here it is closed, e->a is the test's. */
static async_process_t *spawn_peer(ends_t *e, unsigned flags, async_process_fn fn)
{
    cr_assert_eq(async_ipc_pipe_new(&e->a, &e->b, flags), 0);
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, fn, e), 0);
    async_ipc_pipe_free(e->b);
    return p;
}

/* Echoes every message back, uppercased, until end-of-stream. */
static int echo_upper(void *arg)
{
    ends_t *e = arg;
    async_ipc_pipe_free(e->a);
    char buf[256];
    size_t len;
    int err;
    while ((err = async_ipc_pipe_recv(e->b, buf, sizeof buf, &len)) == 0) {
        for (size_t i = 0; i < len; i++)
            if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] -= 32;
        if (async_ipc_pipe_send(e->b, buf, len)) return 2;
    }
    return err == ASYNC_EEOF ? 0 : 1;
}

Test(ipc_pipe, duplex_round_trips_and_end_of_stream, .timeout = 10)
{
    ends_t e;
    async_process_t *p = spawn_peer(&e, 0, echo_upper);
    const char *words[] = {"hello", "", "pipes carry whole messages", "x"};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(async_ipc_pipe_send(e.a, words[i], strlen(words[i])), 0);
        char buf[64];
        size_t len;
        cr_assert_eq(async_ipc_pipe_recv_dl(e.a, buf, sizeof buf, &len,
                                            async_deadline_after(ASYNC_SEC(5))), 0);
        cr_assert_eq(len, strlen(words[i]));
        for (size_t k = 0; k < len; k++) cr_assert_eq(buf[k], words[i][k] >= 'a' && words[i][k] <= 'z' ? words[i][k] - 32 : words[i][k]);
    }
    /* A burst of small messages keeps boundaries and order (kept small: each
     * send is one socket buffer, and both directions must not fill up). */
    for (int i = 1000; i < 1100; i++) cr_assert_eq(async_ipc_pipe_send(e.a, &i, sizeof i), 0);
    for (int i = 1000; i < 1100; i++) { /* no byte of these is a lowercase letter */
        int v;
        size_t len;
        cr_assert_eq(async_ipc_pipe_recv(e.a, &v, sizeof v, &len), 0);
        cr_assert_eq(len, sizeof v);
        cr_assert_eq(v, i);
    }
    async_ipc_pipe_free(e.a); /* the child sees end-of-stream and exits 0 */
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0);
}

static int send_three_and_close(void *arg)
{
    ends_t *e = arg;
    async_ipc_pipe_free(e->a);
    for (int i = 0; i < 3; i++)
        if (async_ipc_pipe_send(e->b, &i, sizeof i)) return 1;
    async_ipc_pipe_free(e->b);
    return 0;
}

Test(ipc_pipe, one_way_drains_then_eof, .timeout = 10)
{
    ends_t e;
    cr_assert_eq(async_ipc_pipe_new(&e.a, &e.b, ASYNC_IPC_PIPE_ONEWAY), 0);
    cr_assert_eq(async_ipc_pipe_send(e.a, "x", 1), ASYNC_ENOTSUP, "receive-only end");
    cr_assert_eq(async_ipc_pipe_send_dl(e.a, "x", 1, 0), ASYNC_ENOTSUP);
    char buf[8];
    size_t len;
    void *msg;
    cr_assert_eq(async_ipc_pipe_recv(e.b, buf, sizeof buf, &len), ASYNC_ENOTSUP, "send-only end");
    cr_assert_eq(async_ipc_pipe_recv_dl(e.b, buf, sizeof buf, &len, 0), ASYNC_ENOTSUP);
    cr_assert_eq(async_ipc_pipe_tryrecv(e.b, buf, sizeof buf, &len), ASYNC_ENOTSUP);
    cr_assert_eq(async_ipc_pipe_recv_alloc_dl(&msg, &len, e.b, 0), ASYNC_ENOTSUP);
    cr_assert_eq(async_ipc_pipe_poll_dl(e.b, 0), ASYNC_ENOTSUP);
    async_process_t *p;
    cr_assert_eq(async_process_spawn(&p, send_three_and_close, &e), 0);
    async_ipc_pipe_free(e.b);
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0);
    for (int i = 0; i < 3; i++) {
        int v;
        cr_assert_eq(async_ipc_pipe_recv(e.a, &v, sizeof v, &len), 0);
        cr_assert_eq(v, i);
    }
    cr_assert_eq(async_ipc_pipe_poll_dl(e.a, 0), 0, "end-of-stream is ready");
    cr_assert_eq(async_ipc_pipe_tryrecv(e.a, buf, sizeof buf, &len), ASYNC_EEOF);
    cr_assert_eq(async_ipc_pipe_recv(e.a, buf, sizeof buf, &len), ASYNC_EEOF);
    cr_assert_eq(async_ipc_pipe_recv(e.a, buf, sizeof buf, &len), ASYNC_EEOF, "stays at the end");
    async_ipc_pipe_free(e.a);
}

Test(ipc_pipe, send_to_closed_peer_is_epipe, .timeout = 10)
{
    async_ipc_pipe_t *a, *b;
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    async_ipc_pipe_free(b);
    int err = 0;
    /* The first send may land in the socket buffer before the reset is seen. */
    for (int i = 0; i < 3 && !err; i++) err = async_ipc_pipe_send(a, "x", 1);
    cr_assert_eq(err, ASYNC_EPIPE);
    async_ipc_pipe_free(a);
}

Test(ipc_pipe, small_buffer_deadline_poll_and_alloc, .timeout = 10)
{
    async_ipc_pipe_t *a, *b;
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0x4), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    char buf[8];
    size_t len = 0;
    cr_assert_eq(async_ipc_pipe_poll_dl(a, 0), ASYNC_ETIMEDOUT);
    int64_t t0 = async_now();
    cr_assert_eq(async_ipc_pipe_recv_dl(a, buf, sizeof buf, &len, t0 + ASYNC_MSEC(20)),
                 ASYNC_ETIMEDOUT);
    cr_assert_geq(async_now() - t0, ASYNC_MSEC(20));
    cr_assert_eq(async_ipc_pipe_send(b, "0123456789", 10), 0);
    cr_assert_eq(async_ipc_pipe_poll_dl(a, async_deadline_after(ASYNC_SEC(5))), 0);
    cr_assert_eq(async_ipc_pipe_recv(a, buf, sizeof buf, &len), ASYNC_EINVAL);
    cr_assert_eq(len, 10, "the length needed");
    void *msg;
    cr_assert_eq(async_ipc_pipe_recv_alloc_dl(&msg, &len, a, ASYNC_FOREVER), 0, "still there");
    cr_assert_eq(len, 10);
    cr_assert_eq(memcmp(msg, "0123456789", 10), 0);
    async_ipc_msg_free(msg);
    cr_assert_eq(async_ipc_pipe_send(b, NULL, 1), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_pipe_send(b, buf, ASYNC_IPC_PIPE_MAX_MSG + 1), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_pipe_recv(a, NULL, 4, &len), ASYNC_EINVAL);
    cr_assert_eq(async_ipc_pipe_recv_alloc_dl(NULL, &len, a, 0), ASYNC_EINVAL);
    cr_assert_geq(async_ipc_pipe_fd(a), 0);
    async_ipc_pipe_free(a);
    async_ipc_pipe_free(b);
    async_ipc_pipe_free(NULL);
}

#define BIG ((size_t)4 << 20)

static int send_big(void *arg)
{
    ends_t *e = arg;
    async_ipc_pipe_free(e->a);
    unsigned char *m = malloc(BIG);
    for (size_t i = 0; i < BIG; i++) m[i] = (unsigned char)(i * 7);
    int err = async_ipc_pipe_send(e->b, m, BIG);
    free(m);
    async_ipc_pipe_free(e->b);
    return err ? 1 : 0;
}

Test(ipc_pipe, big_message_across_processes, .timeout = 20)
{
    ends_t e;
    async_process_t *p = spawn_peer(&e, ASYNC_IPC_PIPE_ONEWAY, send_big);
    void *msg;
    size_t len;
    cr_assert_eq(async_ipc_pipe_recv_alloc_dl(&msg, &len, e.a,
                                              async_deadline_after(ASYNC_SEC(10))), 0);
    cr_assert_eq(len, BIG);
    unsigned char *m = msg;
    for (size_t i = 0; i < BIG; i += 4099) cr_assert_eq(m[i], (unsigned char)(i * 7));
    async_ipc_msg_free(msg);
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0);
    async_ipc_pipe_free(e.a);
}

static int send_half_and_die(void *arg)
{
    ends_t *e = arg;
    async_ipc_pipe_free(e->a);
    /* A length prefix promising 100 bytes, then only 3 of them. */
    uint32_t n = 100;
    if (write(async_ipc_pipe_fd(e->b), &n, sizeof n) != sizeof n) return 1;
    if (write(async_ipc_pipe_fd(e->b), "abc", 3) != 3) return 1;
    return 0;
}

Test(ipc_pipe, peer_dying_mid_message_is_eio, .timeout = 10)
{
    ends_t e;
    async_process_t *p = spawn_peer(&e, 0, send_half_and_die);
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0);
    char buf[128];
    size_t len;
    cr_assert_eq(async_ipc_pipe_recv(e.a, buf, sizeof buf, &len), ASYNC_EIO);
    async_ipc_pipe_free(e.a);
}

/* tryrecv never waits: ASYNC_EAGAIN until a whole message is there, with
 * nothing consumed, even when part of one has arrived; then the message. */
Test(ipc_pipe, tryrecv_says_eagain_until_a_whole_message, .timeout = 10)
{
    async_ipc_pipe_t *a, *b;
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    char buf[16];
    size_t len = 0;
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, sizeof buf, &len), ASYNC_EAGAIN, "nothing sent");
    uint32_t n = 5;
    cr_assert_eq(write(async_ipc_pipe_fd(b), &n, sizeof n), sizeof n);
    cr_assert_eq(write(async_ipc_pipe_fd(b), "ab", 2), 2);
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, sizeof buf, &len), ASYNC_EAGAIN, "half a message");
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, sizeof buf, &len), ASYNC_EAGAIN, "still half");
    cr_assert_eq(write(async_ipc_pipe_fd(b), "cde", 3), 3);
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, 2, &len), ASYNC_EINVAL, "too small: left there");
    cr_assert_eq(len, 5);
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, sizeof buf, &len), 0);
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(buf, "abcde", 5), 0);
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, sizeof buf, &len), ASYNC_EAGAIN, "drained");
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, sizeof buf, NULL), ASYNC_EINVAL);
    async_ipc_pipe_free(b);
    cr_assert_eq(async_ipc_pipe_tryrecv(a, buf, sizeof buf, &len), ASYNC_EEOF, "peer closed");
    async_ipc_pipe_free(a);
}

/* Any deadline at or before now has passed, 0 and negative ones included
 * (INT64_MIN once overflowed into a wait of centuries): a call that can
 * complete at once does, one that would have to wait times out at once. */
Test(ipc_pipe, every_past_deadline_has_passed, .timeout = 10)
{
    const int64_t past[] = {0, -1, INT64_MIN, 1, async_now() - 1};
    async_ipc_pipe_t *a, *b;
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    char buf[16];
    size_t len;
    void *msg;
    for (size_t i = 0; i < sizeof past / sizeof *past; i++) {
        int64_t dl = past[i];
        cr_assert_eq(async_ipc_pipe_recv_dl(a, buf, sizeof buf, &len, dl), ASYNC_ETIMEDOUT,
                     "deadline %lld", (long long)dl);
        cr_assert_eq(async_ipc_pipe_recv_alloc_dl(&msg, &len, a, dl), ASYNC_ETIMEDOUT);
        cr_assert_eq(async_ipc_pipe_poll_dl(a, dl), ASYNC_ETIMEDOUT);
        cr_assert_eq(async_ipc_pipe_send_dl(b, "hi", 2, dl), 0, "there is room: sent");
        cr_assert_eq(async_ipc_pipe_poll_dl(a, dl), 0);
        cr_assert_eq(async_ipc_pipe_recv_dl(a, buf, sizeof buf, &len, dl), 0, "there: received");
        cr_assert_eq(len, 2);
    }
    async_ipc_pipe_free(a);
    async_ipc_pipe_free(b);
}

/* --- tasks ------------------------------------------------------------------ */

typedef struct tctx {
    async_ipc_pipe_t *end;
    int err, ticks_at_recv;
    test_ticker_t ticker;
    char got[16];
} tctx_t;

static int recv_task(void *arg, void **result)
{
    (void)result;
    tctx_t *c = arg;
    size_t len;
    c->err = async_ipc_pipe_recv_dl(c->end, c->got, sizeof c->got, &len,
                                    async_deadline_after(ASYNC_SEC(5)));
    c->ticks_at_recv = test_ticker_stop(&c->ticker);
    return 0;
}

static int send_after_50ms(void *arg)
{
    ends_t *e = arg;
    async_ipc_pipe_free(e->a);
    usleep(50000);
    return async_ipc_pipe_send(e->b, "late", 5) ? 1 : 0;
}

Test(ipc_pipe, task_awaits_pipe_while_others_run, .timeout = 10)
{
    ends_t e;
    async_process_t *p = spawn_peer(&e, 0, send_after_50ms);
    tctx_t c = {.end = e.a};
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, recv_task, &c, NULL), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, test_ticker_task, &c.ticker, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.err, 0);
    cr_assert_str_eq(c.got, "late");
    cr_assert_geq(c.ticks_at_recv, 5, "ticks %d", c.ticks_at_recv);
    cr_assert_eq(async_loop_destroy(loop), 0);
    cr_assert_eq(test_proc_code(p, CHILD_NS), 0);
    async_ipc_pipe_free(e.a);
}

typedef struct cancelled_ctx {
    async_ipc_pipe_t *end;
    int try_got, try_empty, recv_empty;
} cancelled_ctx_t;

static int recv_in_cancelled_task(void *arg, void **result)
{
    (void)result;
    cancelled_ctx_t *c = arg;
    async_task_cancel(async_task_self());
    char buf[8];
    size_t len;
    c->try_got = async_ipc_pipe_tryrecv(c->end, buf, sizeof buf, &len);
    c->try_empty = async_ipc_pipe_tryrecv(c->end, buf, sizeof buf, &len);
    c->recv_empty = async_ipc_pipe_recv(c->end, buf, sizeof buf, &len);
    return 0;
}

/* A cancelled task's try form still completes or says EAGAIN (never
 * ECANCELED); a receive that would have to wait is cancelled. */
Test(ipc_pipe, tryrecv_in_a_cancelled_task_is_not_cancelled, .timeout = 10)
{
    async_ipc_pipe_t *a, *b;
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    cr_assert_eq(async_ipc_pipe_send(b, "x", 1), 0);
    cancelled_ctx_t c = {.end = a};
    async_loop_t *loop;
    cr_assert_eq(async_loop_new(&loop), 0);
    cr_assert_eq(async_task_spawn(NULL, loop, recv_in_cancelled_task, &c, NULL), 0);
    cr_assert_eq(async_loop_run(loop, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(c.try_got, 0);
    cr_assert_eq(c.try_empty, ASYNC_EAGAIN);
    cr_assert_eq(c.recv_empty, ASYNC_ECANCELED);
    cr_assert_eq(async_loop_destroy(loop), 0);
    async_ipc_pipe_free(a);
    async_ipc_pipe_free(b);
}

/* The largest single allocation libasync asked for, through the seam. */
static size_t largest;
static void *track_malloc(size_t n, void *ud)
{
    (void)ud;
    if (n > largest) largest = n;
    return malloc(n);
}
static void *track_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    if (n > largest) largest = n;
    return realloc(p, n);
}
static void track_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

/* A peer that announces more than ASYNC_IPC_PIPE_MAX_MSG (here 4 GiB - 1)
 * broke the framing: the receiver says ASYNC_EIO at once, without waiting
 * for the bytes or allocating for them.  And a header that claims 512 MiB
 * but sends 8 bytes and closes costs memory only for what came (the
 * receiver used to allocate the announced size up front). */
Test(ipc_pipe, hostile_length_is_refused_without_allocating, .timeout = 10)
{
    async_set_allocator(&(async_allocator_t){track_malloc, track_realloc, track_free, NULL});
    async_ipc_pipe_t *a, *b;
    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    const unsigned char huge[4] = {0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(write(async_ipc_pipe_fd(b), huge, sizeof huge), 4);
    void *msg = NULL;
    size_t len = 0;
    largest = 0;
    cr_expect_eq(async_ipc_pipe_recv_alloc_dl(&msg, &len, a, async_deadline_after(ASYNC_SEC(5))),
                 ASYNC_EIO);
    cr_expect_null(msg);
    cr_expect_lt(largest, (size_t)4 << 20, "allocated %zu bytes for a 4-byte header", largest);
    async_ipc_pipe_free(a);
    async_ipc_pipe_free(b);

    cr_assert_eq(async_ipc_pipe_new(&a, &b, 0), 0);
    uint32_t claim = 512u << 20;
    unsigned char frame[12] = {0};
    memcpy(frame, &claim, 4);
    cr_assert_eq(write(async_ipc_pipe_fd(b), frame, sizeof frame), 12);
    async_ipc_pipe_free(b); /* the peer closes inside its "message" */
    largest = 0;
    cr_expect_eq(async_ipc_pipe_recv_alloc_dl(&msg, &len, a, async_deadline_after(ASYNC_SEC(5))),
                 ASYNC_EIO);
    cr_expect_lt(largest, (size_t)4 << 20, "allocated %zu bytes for 12 bytes that came", largest);
    async_ipc_pipe_free(a);
    async_set_allocator(NULL);
}
