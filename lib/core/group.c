/* Task groups: structured concurrency on top of tasks.  A group counts its
 * live tasks; the first to fail records its error and cancels the rest; the
 * group cannot be freed while any of them runs, so nothing outlives it.
 * Group tasks are detached: their results go through the arguments the
 * caller passes, and their slots are reclaimed as they end.  A group task
 * carries the group as its exit hook (task->on_exit), which is how the group
 * hears of its end. */
#include "core_internal.h"

struct async_group {
    async_loop_t *loop;
    async__list_t tasks;   /* live tasks, through task->group_link */
    async__list_t waiters; /* tasks in async_group_wait, through wait_link */
    size_t live;
    int first_error;
    bool cancelled;
};

int async_group_new(async_group_t **out, async_loop_t *loop)
{
    if (!loop) loop = async_loop_current();
    if (!loop) return ASYNC_ENOLOOP;
    async_group_t *g = async__calloc(1, sizeof *g);
    if (!g) return ASYNC_ENOMEM;
    g->loop = loop;
    async__list_init(&g->tasks);
    async__list_init(&g->waiters);
    *out = g;
    return 0;
}

static void task_done(async_task_impl_t *t, void *arg);

/* True when t is one of g's tasks. */
static bool member(const async_task_impl_t *t, const async_group_t *g)
{
    return t->on_exit == task_done && t->on_exit_arg == g;
}

int async_group_spawn(async_group_t *g, async_task_fn fn, void *arg, const async_task_opts_t *opts)
{
    if (g->cancelled) return ASYNC_ECLOSED;
    async_task_opts_t o = opts ? *opts : (async_task_opts_t){0};
    o.detached = true;
    async_task_impl_t *t;
    int rc = async__task_spawn(g->loop, fn, arg, &o, &t);
    if (rc) return rc;
    t->on_exit = task_done;
    t->on_exit_arg = g;
    async__list_push(&g->tasks, &t->group_link);
    g->live++;
    return 0;
}

int async_group_cancel(async_group_t *g)
{
    /* Cancelling wakes the group's tasks: only the loop's thread may. */
    if (!async__on_loop_thread(g->loop)) return ASYNC_EWRONGLOOP;
    if (g->cancelled) return ASYNC_EALREADY;
    g->cancelled = true;
    for (async__list_t *n = g->tasks.next; n != &g->tasks; n = n->next) {
        async_task_impl_t *t = container_of(n, async_task_impl_t, group_link);
        if (!t->cancelled) async__task_cancel(t);
    }
    return 0;
}

static void task_done(async_task_impl_t *t, void *arg)
{
    async_group_t *g = arg;
    async__list_remove(&t->group_link);
    t->on_exit = NULL;
    t->on_exit_arg = NULL;
    g->live--;
    if (t->error && !g->first_error) {
        g->first_error = t->error;
        if (!g->cancelled) async_group_cancel(g);
    }
    if (g->live == 0) {
        /* The waiters get the outcome with the wake-up: the first of them to
         * run may free the group before the others resume. */
        async__list_t *n;
        while ((n = async__list_pop(&g->waiters)))
            async__task_unpark(container_of(n, async_task_impl_t, wait_link), g->first_error);
    }
}

size_t async_group_live(async_group_t *g) { return g->live; }

int async_group_wait_dl(async_group_t *g, int64_t deadline)
{
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    if (self->loop != g->loop) return ASYNC_EWRONGLOOP;
    if (member(self, g)) return ASYNC_EDEADLK; /* would wait for itself */
    if (g->live == 0) return g->first_error;
    /* Only the group's end (with its first error), the deadline or a
     * cancellation end this wait; after it, g may already be freed. */
    async__list_push(&g->waiters, &self->wait_link);
    rc = async__task_park(self, deadline);
    async__list_remove(&self->wait_link);
    return rc;
}

int async_group_wait(async_group_t *g)
{
    return async_group_wait_dl(g, ASYNC_FOREVER);
}

int async_group_destroy(async_group_t *g)
{
    if (!g) return 0;
    if (g->live > 0) {
        async_task_impl_t *self = async__current();
        if (!self) return ASYNC_EBUSY;
        if (self->loop != g->loop) return ASYNC_EWRONGLOOP;
        if (member(self, g)) return ASYNC_EDEADLK; /* would wait for itself */
        async_group_cancel(g);
        /* Shielded: even a cancelled caller must wait, or tasks would
         * outlive their group. */
        bool was = self->shielded;
        self->shielded = true;
        while (g->live > 0) {
            async__list_push(&g->waiters, &self->wait_link);
            async__task_park(self, ASYNC_FOREVER);
            async__list_remove(&self->wait_link);
        }
        self->shielded = was;
    }
    async__free(g);
    return 0;
}
