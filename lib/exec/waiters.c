/* Tasks waiting beside threads on a mutex-guarded condition: see
 * waiters_internal.h.  The executor's queue (room for a submit), the lazy
 * map's iterator and the as-completed iterator use it, so that their waits
 * from a task sleep only the task. */
#include "waiters_internal.h"
#include "async/task.h"

typedef struct twait_rec {
    async__post_t post;
    async__list_t link; /* in the waiters' list, under its mutex, while listed */
    async_waker_t waker;
    _Atomic unsigned refs;
} twait_rec_t;

void async__twaiters_init(async__twaiters_t *w) { async__list_init(&w->list); }

static void rec_drop(twait_rec_t *rec)
{
    if (atomic_fetch_sub_explicit(&rec->refs, 1, memory_order_acq_rel) == 1) async__free(rec);
}

/* On the task's loop thread. */
static void rec_posted(void *arg)
{
    twait_rec_t *rec = arg;
    async_waker_wake(rec->waker, 0); /* ASYNC_ESRCH when that wait has ended: fine */
    rec_drop(rec);
}

int async__twait_locked(async__twaiters_t *w, pthread_mutex_t *mu, int64_t deadline)
{
    twait_rec_t *rec = async__malloc(sizeof *rec);
    if (!rec) return ASYNC_ENOMEM;
    rec->post = (async__post_t){.fn = rec_posted, .arg = rec, .owned = false};
    rec->waker = async_task_waker();
    atomic_init(&rec->refs, 1);
    async__list_push(&w->list, &rec->link);
    pthread_mutex_unlock(mu);
    int r = async_task_suspend_dl(deadline);
    pthread_mutex_lock(mu);
    async__list_remove(&rec->link); /* still listed unless a wake took it */
    rec_drop(rec);
    return r == ASYNC_ETIMEDOUT || r == ASYNC_ECANCELED ? r : 0;
}

void async__twait_shielded_locked(async__twaiters_t *w, pthread_mutex_t *mu)
{
    async_task_impl_t *self = async__current();
    /* The shield makes the suspension deaf to a cancel, which stays recorded
     * for the task's next wait (as async__future_await_shielded). */
    bool was = self->shielded;
    self->shielded = true;
    if (async__twait_locked(w, mu, ASYNC_FOREVER) == ASYNC_ENOMEM) {
        pthread_mutex_unlock(mu);
        async__task_park(self, async_deadline_after(ASYNC_MSEC(1)));
        pthread_mutex_lock(mu);
    }
    self->shielded = was;
}

void async__twaiters_wake_locked(async__twaiters_t *w)
{
    async__list_t *n;
    while ((n = async__list_pop(&w->list))) {
        twait_rec_t *rec = container_of(n, twait_rec_t, link);
        atomic_fetch_add_explicit(&rec->refs, 1, memory_order_relaxed);
        async__loop_post_node(async_waker_loop(rec->waker), &rec->post);
    }
}
