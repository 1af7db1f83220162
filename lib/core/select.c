/* Select over channels (include/async/select.h).
 *
 * A select tries its cases with the channels' try forms; when none can
 * complete, it puts one watcher per case on this thread's watch list and
 * parks, as a library wait (not a waker suspension: a waker the task took
 * for something else must not end a select with its code).  sync.c calls
 * async__chan_changed on every change that may let a case complete, which
 * wakes the selecting task of each watcher of that channel if it is still
 * parked (the watchers are linked only around the park, so a parked task
 * with a linked watcher is parked in this select); the select then tries
 * again, because another task may have taken the element first.  The list is per thread because channels and their tasks
 * belong to one loop, and one loop runs on one thread: no lock is needed.
 * Watchers live on the selecting task's stack and are unlinked before the
 * select returns, whatever ended it. */
#include "core_internal.h"
#include "select_internal.h"
#include "async/select.h"

struct watcher {
    async_chan_t *chan;
    async_task_impl_t *task;
    struct watcher *prev, *next;
};

static _Thread_local struct watcher *watchers;

void async__chan_changed(async_chan_t *chan)
{
    for (struct watcher *w = watchers; w; w = w->next)
        if (w->chan == chan && w->task->state == TASK_SUSPENDED) async__task_unpark(w->task, 0);
}

bool async__chan_watched(const async_chan_t *chan)
{
    for (const struct watcher *w = watchers; w; w = w->next)
        if (w->chan == chan) return true;
    return false;
}

static void link_w(struct watcher *w)
{
    w->prev = NULL;
    w->next = watchers;
    if (watchers) watchers->prev = w;
    watchers = w;
}

static void unlink_w(struct watcher *w)
{
    if (w->prev) w->prev->next = w->next;
    else watchers = w->next;
    if (w->next) w->next->prev = w->prev;
}

/* 0, ASYNC_ECLOSED (a send) or ASYNC_EEOF (a receive) when case i completed
 * (*fired = i), ASYNC_EAGAIN when none could. */
static int try_all(async_select_case_t *cases, size_t n, size_t *fired)
{
    for (size_t i = 0; i < n; i++) {
        async_select_case_t *c = &cases[i];
        if (!c->chan) continue;
        int rc = c->op == ASYNC_SELECT_RECV ? async_chan_tryrecv(c->chan, c->elem)
                                            : async_chan_trysend(c->chan, c->elem);
        if (rc != ASYNC_EAGAIN) {
            *fired = i;
            return rc;
        }
    }
    return ASYNC_EAGAIN;
}

#define ON_STACK 8

static int select_impl(async_select_case_t *cases, size_t n, size_t *fired, int64_t deadline, bool block)
{
    if (!cases || !n || !fired) return ASYNC_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!cases[i].chan) continue;
        if ((cases[i].op != ASYNC_SELECT_RECV && cases[i].op != ASYNC_SELECT_SEND) || !cases[i].elem)
            return ASYNC_EINVAL;
    }
    /* Every channel checked before any case is tried: a select that fails
     * completes nothing. */
    for (size_t i = 0; i < n; i++)
        if (cases[i].chan && async__chan_own(cases[i].chan)) return ASYNC_EWRONGLOOP;
    /* A case that can complete now completes, even in a cancelled task;
     * only the wait below is refused to one. */
    int rc = try_all(cases, n, fired);
    if (rc != ASYNC_EAGAIN || !block) return rc;
    async_task_impl_t *self;
    if ((rc = async__task_check_blocking(&self))) return rc;
    if (async__task_cancel_pending(self)) return ASYNC_ECANCELED;
    struct watcher local[ON_STACK], *w = local;
    if (n > ON_STACK && !(w = async__malloc(n * sizeof *w))) return ASYNC_ENOMEM;
    for (;;) {
        for (size_t i = 0; i < n; i++) {
            w[i].chan = cases[i].chan;
            w[i].task = self;
            link_w(&w[i]);
        }
        int wrc = async__task_park(self, deadline); /* 0, ETIMEDOUT or ECANCELED */
        for (size_t i = 0; i < n; i++) unlink_w(&w[i]);
        if (wrc == ASYNC_ECANCELED) { /* complete nothing */
            rc = wrc;
            break;
        }
        /* A case that can complete now wins over the deadline, as in every
         * other blocking call of sync.h. */
        rc = try_all(cases, n, fired);
        if (rc != ASYNC_EAGAIN) break;
        if (wrc) {
            rc = wrc;
            break;
        }
    }
    if (w != local) async__free(w);
    return rc;
}

int async_select_dl(async_select_case_t *cases, size_t n, size_t *fired, int64_t deadline)
{
    return select_impl(cases, n, fired, deadline, true);
}

int async_select(async_select_case_t *cases, size_t n, size_t *fired)
{
    return select_impl(cases, n, fired, ASYNC_FOREVER, true);
}

int async_tryselect(async_select_case_t *cases, size_t n, size_t *fired)
{
    return select_impl(cases, n, fired, 0, false);
}
