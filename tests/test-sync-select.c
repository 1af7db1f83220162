/* Channels, select and condition variables (lib/core/chan.c, select.c,
 * sync.c): a channel belongs to the loop that made it; select meets a peer
 * that blocks after it, wakes when its channel closes, waits on when woken
 * for an element another task took, unlinks its watchers out of order,
 * completes nothing with a foreign channel, and takes more cases than its
 * stack array; a condition wait that cannot begin keeps the mutex.  Each
 * test names the mutant of lib/core it kills (scripts/mutate). */
#include <criterion/criterion.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <async.h>
#include <async/select.h>
#include "support/alloc.h"
#include "support/run.h"

/* --- channels: binding and select's wake-ups ------------------------------ */

struct foreign {
    async_chan_t *chan;
    int rc;
};

static int use_foreign_chan(void *arg, void **res)
{
    (void)res;
    struct foreign *f = arg;
    int v = 1;
    f->rc = async_chan_trysend(f->chan, &v);
    return 0;
}

static int t_chan_bound_at_creation(void *arg, void **res)
{
    (void)arg, (void)res;
    struct foreign f = {NULL, 1};
    cr_assert_eq(async_chan_new(&f.chan, sizeof(int), 4), 0);
    /* Its first use is on another thread's loop: it belongs to this one. */
    cr_assert_eq(test_run_task_in_thread(use_foreign_chan, &f), 0);
    cr_assert_eq(f.rc, ASYNC_EWRONGLOOP, "a channel made in a task, used first elsewhere: %s",
                 async_errname(f.rc));
    int v = 2;
    cr_assert_eq(async_chan_trysend(f.chan, &v), 0);
    cr_assert_eq(async_chan_destroy(f.chan), 0);
    return 0;
}
/* Kills sync.c:92 without `bind_to(&c->bound, async_loop_current())`: a channel made
 * in a task was bound to whichever loop used it first. */
Test(sync_select, channel_belongs_to_the_loop_that_made_it, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_chan_bound_at_creation, NULL, NULL), 0);
}

struct sel {
    async_chan_t *chan;
    int op;
    int value;
    int rc;
};

static int select_one(void *arg, void **res)
{
    (void)res;
    struct sel *s = arg;
    async_select_case_t c = {.chan = s->chan, .op = s->op, .elem = &s->value};
    size_t fired = 9;
    s->rc = async_select_dl(&c, 1, &fired, async_deadline_after(ASYNC_SEC(3)));
    if (s->rc == 0) cr_assert_eq(fired, 0);
    return 0;
}

static int t_select_meets_blocking_peer(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), 0), 0);
    /* A select waits to receive; a sender then blocks on the channel. */
    struct sel r = {c, ASYNC_SELECT_RECV, 0, 1};
    async_task_t t = test_spawn_started(select_one, &r);
    int v = 41;
    cr_assert_eq(async_chan_send_dl(c, &v, async_deadline_after(ASYNC_SEC(3))), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(r.rc, 0, "select recv: %s", async_errname(r.rc));
    cr_assert_eq(r.value, 41);
    /* A select waits to send; a receiver then blocks on the channel. */
    struct sel s = {c, ASYNC_SELECT_SEND, 42, 1};
    t = test_spawn_started(select_one, &s);
    v = 0;
    cr_assert_eq(async_chan_recv_dl(c, &v, async_deadline_after(ASYNC_SEC(3))), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(s.rc, 0, "select send: %s", async_errname(s.rc));
    cr_assert_eq(v, 42);
    cr_assert_eq(async_chan_destroy(c), 0);

    /* A select waits to send on a full buffer; a receive then frees a slot. */
    cr_assert_eq(async_chan_new(&c, sizeof(int), 1), 0);
    v = 1;
    cr_assert_eq(async_chan_trysend(c, &v), 0);
    struct sel f = {c, ASYNC_SELECT_SEND, 2, 1};
    t = test_spawn_started(select_one, &f);
    cr_assert_eq(async_chan_recv(c, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(async_yield(), 0); /* the woken select runs (its deadline is seconds off) */
    cr_assert_eq(async_task_done(t), 1, "a select to send was not woken by the freed slot");
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(f.rc, 0, "select send on a freed slot: %s", async_errname(f.rc));
    cr_assert_eq(async_chan_tryrecv(c, &v), 0);
    cr_assert_eq(v, 2);
    cr_assert_eq(async_chan_destroy(c), 0);
    return 0;
}
/* Kills sync.c:139 and :169 without async__chan_changed before a blocking
 * send or receive parks, and :133 without it after a receive frees a slot:
 * a select on the other side never heard of it and waited out its
 * deadline. */
Test(sync_select, select_meets_a_peer_that_blocks_after_it, .timeout = 20)
{
    cr_assert_eq(test_run_task(t_select_meets_blocking_peer, NULL, NULL), 0);
}

static int t_select_sees_close(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), 0), 0);
    struct sel r = {c, ASYNC_SELECT_RECV, 0, 1};
    async_task_t t = test_spawn_started(select_one, &r);
    cr_assert_eq(async_chan_close(c), 0);
    cr_assert_eq(async_yield(), 0); /* the woken select runs (its deadline is seconds off) */
    cr_assert_eq(async_task_done(t), 1, "a select was not woken by its channel's close");
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(r.rc, ASYNC_EEOF, "select recv on a closed channel: %s", async_errname(r.rc));
    cr_assert_eq(async_chan_destroy(c), 0);
    return 0;
}
/* Kills sync.c:186 without async__chan_changed on close: a select waiting
 * on the channel slept through it. */
Test(sync_select, select_wakes_when_its_channel_closes, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_select_sees_close, NULL, NULL), 0);
}

/* --- condition variable: a wait that cannot begin -------------------------- */

struct locker {
    async_mutex_t *m;
    bool held;
};

static int lock_once(void *arg, void **res)
{
    (void)res;
    struct locker *l = arg;
    int rc = async_mutex_lock_dl(l->m, async_deadline_after(ASYNC_SEC(3)));
    if (rc) return rc;
    l->held = true;
    return async_mutex_unlock(l->m);
}

static int t_cond_wait_refused(void *arg, void **res)
{
    (void)arg, (void)res;
    async_mutex_t *m;
    async_cond_t *c;
    cr_assert_eq(async_mutex_new(&m), 0);
    cr_assert_eq(async_cond_new(&c), 0);
    for (int round = 0; round < 2; round++) {
        struct locker l = {m, false};
        cr_assert_eq(async_mutex_lock(m), 0);
        async_task_t t = test_spawn_started(lock_once, &l); /* queued for m */
        int rc;
        if (round == 0) {
            rc = async_cond_wait_dl(c, m, async_now() - 1);
            cr_assert_eq(rc, ASYNC_ETIMEDOUT);
        } else {
            cr_assert_eq(async_task_cancel(async_task_self()), 0);
            rc = async_cond_wait(c, m);
            cr_assert_eq(rc, ASYNC_ECANCELED);
        }
        /* Refused before it began: the mutex was never let go, so the
         * task queued for it has not had it. */
        cr_assert_not(l.held, "round %d: the mutex went to another task during a refused wait", round);
        bool was = async_task_shield(true);
        cr_assert_eq(async_mutex_unlock(m), 0);
        cr_assert_eq(async_task_await(t, NULL), 0);
        async_task_shield(was);
        cr_assert(l.held);
    }
    cr_assert_eq(async_cond_destroy(c), 0);
    cr_assert_eq(async_mutex_destroy(m), 0);
    return 0;
}
/* Kills sync.c:375 and :376 without their early returns: cond_wait in a
 * cancelled task, or past its deadline, let the mutex go to a waiting task
 * and took it back. */
Test(sync_select, cond_wait_that_cannot_begin_keeps_the_mutex, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_cond_wait_refused, NULL, NULL), 0);
}

struct foreign_mutex {
    async_mutex_t *m;
    int rc;
};

static int bind_mutex(void *arg, void **res)
{
    (void)res;
    struct foreign_mutex *f = arg;
    f->rc = async_mutex_trylock(f->m); /* binds it to this task's loop */
    if (f->rc == 0) f->rc = async_mutex_unlock(f->m);
    return 0;
}

static int t_cond_foreign_mutex(void *arg, void **res)
{
    (void)res;
    struct foreign_mutex *f = arg;
    async_cond_t *c;
    cr_assert_eq(async_cond_new(&c), 0);
    cr_assert_eq(async_cond_wait_dl(c, f->m, async_deadline_after(ASYNC_MSEC(10))), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_cond_destroy(c), 0);
    return 0;
}
/* Kills sync.c:372 without `|| own(&m->bound)`: a mutex of another loop gave
 * EPERM (not held) instead of EWRONGLOOP. */
Test(sync_select, cond_wait_with_another_loops_mutex_is_ewrongloop, .timeout = 10)
{
    struct foreign_mutex f = {NULL, 1};
    async_loop_t *other;
    cr_assert_eq(async_loop_new(&other), 0);
    cr_assert_eq(async_mutex_new(&f.m), 0);
    cr_assert_eq(async_task_spawn(NULL, other, bind_mutex, &f, NULL), 0);
    cr_assert_eq(async_loop_run(other, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(f.rc, 0);
    cr_assert_eq(test_run_task(t_cond_foreign_mutex, &f, NULL), 0);
    cr_assert_eq(async_mutex_destroy(f.m), 0); /* from its loop's thread, outside it */
    cr_assert_eq(async_loop_destroy(other), 0);
}

static int t_select_element_stolen(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c;
    cr_assert_eq(async_chan_new(&c, sizeof(int), 1), 0);
    struct sel r = {c, ASYNC_SELECT_RECV, 0, 1};
    async_task_t t = test_spawn_started(select_one, &r);
    /* Buffered, which wakes the select, and taken back before it runs. */
    int v = 5;
    cr_assert_eq(async_chan_trysend(c, &v), 0);
    cr_assert_eq(async_chan_tryrecv(c, &v), 0);
    cr_assert_eq(async_yield(), 0);
    cr_assert_eq(async_task_done(t), 0, "a select woken for nothing returned (%s)", async_errname(r.rc));
    v = 6;
    cr_assert_eq(async_chan_send(c, &v), 0);
    cr_assert_eq(async_task_await(t, NULL), 0);
    cr_assert_eq(r.rc, 0, "select: %s", async_errname(r.rc));
    cr_assert_eq(r.value, 6);
    cr_assert_eq(async_chan_destroy(c), 0);
    return 0;
}
/* Kills select.c:30 waking the select with a nonzero code: a select whose
 * element another task took first went back to waiting. */
Test(sync_select, select_woken_for_a_stolen_element_waits_on, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_select_element_stolen, NULL, NULL), 0);
}

struct two_selects {
    async_chan_t *chan;
    int got[2];
    int rc[2];
};

/* Selects on its channel twice from the same frame: the second select's
 * watcher lies where the first one's was. */
static int select_twice(void *arg, void **res)
{
    (void)res;
    struct two_selects *s = arg;
    for (int i = 0; i < 2; i++) {
        async_select_case_t c = {.chan = s->chan, .op = ASYNC_SELECT_RECV, .elem = &s->got[i]};
        size_t fired;
        s->rc[i] = async_select_dl(&c, 1, &fired, async_deadline_after(ASYNC_SEC(3)));
    }
    return 0;
}

static int t_watchers_unlinked_out_of_order(void *arg, void **res)
{
    (void)arg, (void)res;
    async_chan_t *c1, *c2;
    cr_assert_eq(async_chan_new(&c1, sizeof(int), 1), 0);
    cr_assert_eq(async_chan_new(&c2, sizeof(int), 1), 0);
    struct two_selects a = {c1, {0, 0}, {1, 1}};
    struct sel b = {c2, ASYNC_SELECT_RECV, 0, 1};
    async_task_t ta = test_spawn_started(select_twice, &a);
    async_task_t tb = test_spawn_started(select_one, &b); /* its watcher is linked last */
    int v = 20;
    cr_assert_eq(async_chan_trysend(c2, &v), 0); /* the later select ends first */
    cr_assert_eq(async_task_await(tb, NULL), 0);
    cr_assert_eq(b.rc, 0);
    v = 10;
    cr_assert_eq(async_chan_trysend(c1, &v), 0);
    cr_assert_eq(async_yield(), 0); /* a's first select ends, its second waits */
    v = 11;
    cr_assert_eq(async_chan_trysend(c1, &v), 0);
    cr_assert_eq(async_task_await(ta, NULL), 0);
    cr_assert_eq(a.rc[0], 0);
    cr_assert_eq(a.rc[1], 0, "second select: %s", async_errname(a.rc[1]));
    cr_assert_eq(a.got[0], 10);
    cr_assert_eq(a.got[1], 11);
    cr_assert_eq(async_chan_destroy(c1), 0);
    cr_assert_eq(async_chan_destroy(c2), 0);
    return 0;
}
/* Kills select.c:52 without `w->next->prev = w->prev`: unlinking a later
 * select's watcher first left the earlier one's pointing at it, and the
 * watch list then looped on itself. */
Test(sync_select, select_watchers_unlinked_out_of_order, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_watchers_unlinked_out_of_order, NULL, NULL), 0);
}

static int bind_chan(void *arg, void **res)
{
    (void)res;
    int v;
    return async_chan_tryrecv(arg, &v) == ASYNC_EAGAIN ? 0 : 1; /* binds it here */
}

static int t_select_foreign_case(void *arg, void **res)
{
    (void)res;
    async_chan_t *foreign = arg, *mine;
    cr_assert_eq(async_chan_new(&mine, sizeof(int), 1), 0);
    int v = 3, got = 0;
    cr_assert_eq(async_chan_trysend(mine, &v), 0);
    async_select_case_t cases[2] = {{.chan = mine, .op = ASYNC_SELECT_RECV, .elem = &got},
                                    {.chan = foreign, .op = ASYNC_SELECT_RECV, .elem = &got}};
    size_t fired = 9;
    cr_assert_eq(async_select(cases, 2, &fired), ASYNC_EWRONGLOOP);
    cr_assert_eq(async_chan_len(mine), 1, "a select that failed took an element");
    cr_assert_eq(async_chan_destroy(mine), 0);
    return 0;
}
/* Kills select.c:85 without the up-front ownership check: the case on the
 * select's own channel completed before the foreign one failed. */
Test(sync_select, select_with_a_foreign_channel_completes_nothing, .timeout = 10)
{
    async_loop_t *other;
    async_chan_t *foreign;
    cr_assert_eq(async_loop_new(&other), 0);
    cr_assert_eq(async_chan_new(&foreign, sizeof(int), 1), 0);
    async_task_t t;
    cr_assert_eq(async_task_spawn(&t, other, bind_chan, foreign, NULL), 0);
    cr_assert_eq(async_loop_run(other, ASYNC_RUN_DEFAULT), 0);
    cr_assert_eq(test_run_task(t_select_foreign_case, foreign, NULL), 0);
    cr_assert_eq(async_chan_destroy(foreign), 0);
    cr_assert_eq(async_loop_destroy(other), 0);
}

#define MANY 11

struct many {
    size_t n;
    async_chan_t *chans[MANY];
    int got[MANY];
    size_t fired;
    int rc;
};

static int select_many(void *arg, void **res)
{
    (void)res;
    struct many *m = arg;
    async_select_case_t cases[MANY];
    for (size_t i = 0; i < m->n; i++)
        cases[i] = (async_select_case_t){.chan = m->chans[i], .op = ASYNC_SELECT_RECV, .elem = &m->got[i]};
    m->rc = async_select_dl(cases, m->n, &m->fired, async_deadline_after(ASYNC_SEC(3)));
    return 0;
}

static int t_select_many(void *arg, void **res)
{
    (void)arg, (void)res;
    /* Around select.c's ON_STACK (8) watchers kept on the stack. */
    for (size_t n = 7; n <= MANY; n++) {
        struct many m = {.n = n, .fired = 99, .rc = 1};
        for (size_t i = 0; i < n; i++) cr_assert_eq(async_chan_new(&m.chans[i], sizeof(int), 1), 0);
        async_task_t t = test_spawn_started(select_many, &m); /* parked, a watcher a case */
        int v = (int)n;
        cr_assert_eq(async_chan_trysend(m.chans[n - 1], &v), 0);
        cr_assert_eq(async_task_await(t, NULL), 0);
        cr_assert_eq(m.rc, 0, "%zu cases: %s", n, async_errname(m.rc));
        cr_assert_eq(m.fired, n - 1);
        cr_assert_eq(m.got[n - 1], (int)n);
        for (size_t i = 0; i < n; i++) cr_assert_eq(async_chan_destroy(m.chans[i]), 0);
    }
    return 0;
}
/* Kills select.c:94 keeping nine watchers in the stack array of eight (the
 * sanitizer builds see the overflow; the plain build, its damage). */
Test(sync_select, select_with_more_cases_than_the_stack_array, .timeout = 10)
{
    cr_assert_eq(test_run_task(t_select_many, NULL, NULL), 0);
}

