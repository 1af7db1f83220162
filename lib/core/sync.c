/* Task-level channel, semaphore, mutex, condition variable and event.
 *
 * All five are loop-local: only tasks of one loop may use an object, so no
 * OS lock is taken.  Waiting tasks queue on intrusive lists (task->wait_link)
 * in arrival order.  Ownership moves at wake-up time: a receiver woken with 0
 * already holds its element, a semaphore or mutex waiter woken with 0 already
 * holds the permit or the lock, so a task that runs between the wake-up and
 * the waiter's resumption cannot steal it.  A waiter that leaves by deadline
 * or cancellation is unlinked by async__task_unpark and owns nothing.
 *
 * Each object records its loop: the one running on the creating thread, or,
 * for an object made outside any loop, the first loop whose thread uses it.
 * Every operation first checks the caller against it (own), because a task
 * of another loop runs on another thread, or at another time on this one,
 * and would race the owner's tasks on the unlocked lists.  The record is a
 * link in the loop's list of bound objects (async__bound_t): freeing the
 * loop unbinds the objects that outlive it, so no call reads a freed loop,
 * and such an object binds again like one made outside any loop. */
#include <limits.h>
#include <string.h>
#include "core_internal.h"
#include "select_internal.h"

/* Parks self on list; returns the wake code. */
static int wait_on(async__list_t *list, async_task_impl_t *self, void *data, int64_t deadline)
{
    self->wait_data = data;
    async__list_push(list, &self->wait_link);
    int rc = async__task_park(self, deadline);
    async__list_remove(&self->wait_link); /* if it left early */
    return rc;
}

/* Binds b to loop (NULL: leaves it unbound), at the tail of the loop's list
 * of bound objects. */
static void bind_to(async__bound_t *b, async_loop_t *loop)
{
    b->loop = loop;
    async__list_init(&b->link);
    if (loop) async__list_push(&loop->bound, &b->link);
}

/* Before the object is freed: out of its loop's list (a no-op when unbound,
 * the link then pointing at itself). */
static void unbind(async__bound_t *b) { async__list_remove(&b->link); }

/* 0 when the caller may use an object bound by b: from the owner loop's
 * thread while it runs (a task or a callback of it), or from its thread
 * outside any loop while it does not run.  An unbound object (made outside
 * any loop, or whose loop was freed) is bound here to the first loop that
 * uses it.  Two loops on two threads may use an unbound object first at the
 * same moment: a compare-and-swap of b->loop decides which one that is, and
 * only the winner links b into its loop's list (with a plain test and store
 * both bound it, each call went on, and the one link went into both lists:
 * sync_lifetime::two_loops_using_an_unbound_object_at_once_bind_it_once).
 * b->loop is read once: a second read could see the NULL that freeing the
 * loop stores. */
static int own(async__bound_t *b)
{
    async_loop_t *cur = async_loop_current();
    async_loop_t *l = __atomic_load_n(&b->loop, __ATOMIC_ACQUIRE);
    if (cur) {
        if (!l) {
            if (__atomic_compare_exchange_n(&b->loop, &l, cur, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                async__list_init(&b->link);
                async__list_push(&cur->bound, &b->link);
                return 0;
            }
            /* l is the loop that won */
        }
        return l == cur ? 0 : ASYNC_EWRONGLOOP;
    }
    return !l || async__on_loop_thread(l) ? 0 : ASYNC_EWRONGLOOP;
}

static async_task_impl_t *first_waiter(async__list_t *list)
{
    return async__list_empty(list) ? NULL : container_of(list->next, async_task_impl_t, wait_link);
}

static void wake_all(async__list_t *list, int code)
{
    async__list_t *n;
    while ((n = async__list_pop(list))) async__task_unpark(container_of(n, async_task_impl_t, wait_link), code);
}

/* --- channel -------------------------------------------------------------- */

struct async_chan {
    async__bound_t bound;
    size_t elem_size, capacity, head, len;
    bool closed;
    async__list_t senders, receivers;
    unsigned char *ring;
};

int async_chan_new(async_chan_t **out, size_t elem_size, size_t capacity)
{
    if (!elem_size || (capacity && elem_size > SIZE_MAX / capacity)) return ASYNC_EINVAL;
    async_chan_t *c = async__calloc(1, sizeof *c);
    if (!c) return ASYNC_ENOMEM;
    if (capacity && !(c->ring = async__malloc(elem_size * capacity))) {
        async__free(c);
        return ASYNC_ENOMEM;
    }
    bind_to(&c->bound, async_loop_current());
    c->elem_size = elem_size;
    c->capacity = capacity;
    async__list_init(&c->senders);
    async__list_init(&c->receivers);
    *out = c;
    return 0;
}

int async_chan_destroy(async_chan_t *c)
{
    if (!c) return 0;
    if (own(&c->bound)) return ASYNC_EWRONGLOOP;
    /* A select waiting on it counts, until it has left: one that a close
     * (or any change) woke still tries the channel when it runs. */
    if (!async__list_empty(&c->senders) || !async__list_empty(&c->receivers) ||
        async__chan_watched(c))
        return ASYNC_EBUSY;
    unbind(&c->bound);
    async__free(c->ring);
    async__free(c);
    return 0;
}

static void *slot(async_chan_t *c, size_t i) { return c->ring + ((c->head + i) % c->capacity) * c->elem_size; }

int async__chan_own(async_chan_t *c) { return own(&c->bound); }

static int chan_send(async_chan_t *c, const void *elem, int64_t deadline, bool block)
{
    if (own(&c->bound)) return ASYNC_EWRONGLOOP;
    if (c->closed) return ASYNC_ECLOSED;
    async_task_impl_t *r = first_waiter(&c->receivers);
    if (r) { /* receivers wait only on an empty buffer: hand over */
        memcpy(r->wait_data, elem, c->elem_size);
        async__task_unpark(r, 0);
        return 0;
    }
    if (c->len < c->capacity) {
        memcpy(slot(c, c->len++), elem, c->elem_size);
        async__chan_changed(c);
        return 0;
    }
    if (!block) return ASYNC_EAGAIN;
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    async__chan_changed(c);
    return wait_on(&c->senders, self, (void *)elem, deadline);
}

static int chan_recv(async_chan_t *c, void *elem, int64_t deadline, bool block)
{
    if (own(&c->bound)) return ASYNC_EWRONGLOOP;
    async_task_impl_t *s = first_waiter(&c->senders);
    if (c->len) {
        memcpy(elem, slot(c, 0), c->elem_size);
        c->head = (c->head + 1) % c->capacity;
        c->len--;
        if (s) { /* the freed slot goes to the longest-waiting sender */
            memcpy(slot(c, c->len++), s->wait_data, c->elem_size);
            async__task_unpark(s, 0);
        } else {
            async__chan_changed(c);
        }
        return 0;
    }
    if (s) { /* rendezvous */
        memcpy(elem, s->wait_data, c->elem_size);
        async__task_unpark(s, 0);
        return 0;
    }
    if (c->closed) return ASYNC_EEOF; /* closed and drained: the stream ended */
    if (!block) return ASYNC_EAGAIN;
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    async__chan_changed(c);
    return wait_on(&c->receivers, self, elem, deadline);
}

int async_chan_send_dl(async_chan_t *c, const void *e, int64_t dl) { return chan_send(c, e, dl, true); }
int async_chan_send(async_chan_t *c, const void *e) { return chan_send(c, e, ASYNC_FOREVER, true); }
int async_chan_trysend(async_chan_t *c, const void *e) { return chan_send(c, e, 0, false); }
int async_chan_recv_dl(async_chan_t *c, void *e, int64_t dl) { return chan_recv(c, e, dl, true); }
int async_chan_recv(async_chan_t *c, void *e) { return chan_recv(c, e, ASYNC_FOREVER, true); }
int async_chan_tryrecv(async_chan_t *c, void *e) { return chan_recv(c, e, 0, false); }
size_t async_chan_len(const async_chan_t *c) { return c->len; }

int async_chan_close(async_chan_t *c)
{
    if (own(&c->bound)) return ASYNC_EWRONGLOOP;
    if (c->closed) return ASYNC_EALREADY;
    c->closed = true;
    async__chan_changed(c);
    wake_all(&c->senders, ASYNC_ECLOSED);
    wake_all(&c->receivers, ASYNC_EEOF); /* they wait only on an empty buffer */
    return 0;
}

/* --- semaphore ------------------------------------------------------------ */

struct async_sem {
    async__bound_t bound;
    unsigned value;
    async__list_t waiters;
};

int async_sem_new(async_sem_t **out, unsigned value)
{
    async_sem_t *s = async__calloc(1, sizeof *s);
    if (!s) return ASYNC_ENOMEM;
    bind_to(&s->bound, async_loop_current());
    s->value = value;
    async__list_init(&s->waiters);
    *out = s;
    return 0;
}

int async_sem_destroy(async_sem_t *s)
{
    if (!s) return 0;
    if (own(&s->bound)) return ASYNC_EWRONGLOOP;
    if (!async__list_empty(&s->waiters)) return ASYNC_EBUSY;
    unbind(&s->bound);
    async__free(s);
    return 0;
}

static int sem_acquire(async_sem_t *s, int64_t deadline, bool block)
{
    if (own(&s->bound)) return ASYNC_EWRONGLOOP;
    if (s->value > 0 && async__list_empty(&s->waiters)) {
        s->value--;
        return 0;
    }
    if (!block) return ASYNC_EAGAIN;
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    return wait_on(&s->waiters, self, NULL, deadline);
}

int async_sem_acquire(async_sem_t *s) { return sem_acquire(s, ASYNC_FOREVER, true); }
int async_sem_acquire_dl(async_sem_t *s, int64_t dl) { return sem_acquire(s, dl, true); }
int async_sem_tryacquire(async_sem_t *s) { return sem_acquire(s, 0, false); }
unsigned async_sem_value(const async_sem_t *s) { return s->value; }

int async_sem_release(async_sem_t *s)
{
    if (own(&s->bound)) return ASYNC_EWRONGLOOP;
    async__list_t *n = async__list_pop(&s->waiters);
    if (n) {
        async__task_unpark(container_of(n, async_task_impl_t, wait_link), 0);
        return 0;
    }
    if (s->value == UINT_MAX) return ASYNC_EINVAL; /* would wrap to 0 */
    s->value++;
    return 0;
}

/* --- mutex ---------------------------------------------------------------- */

/* The holder is named by its slot and its generation: a task that ended
 * holding the lock keeps it held, and a later task that gets the same slot
 * is not its holder.  relockers counts the tasks in a condition wait on the
 * mutex: each takes it again before it returns, woken or not, so the mutex
 * is waited for until then even though it is on no list of the mutex. */
struct async_mutex {
    async__bound_t bound;
    async_task_impl_t *owner;
    uint64_t owner_gen;
    async__list_t waiters;
    size_t relockers;
};

static bool holds(const async_mutex_t *m, const async_task_impl_t *t)
{
    return t && m->owner == t && m->owner_gen == t->gen;
}

static void take(async_mutex_t *m, async_task_impl_t *t)
{
    m->owner = t;
    m->owner_gen = t ? t->gen : 0;
}

int async_mutex_new(async_mutex_t **out)
{
    async_mutex_t *m = async__calloc(1, sizeof *m);
    if (!m) return ASYNC_ENOMEM;
    bind_to(&m->bound, async_loop_current());
    async__list_init(&m->waiters);
    *out = m;
    return 0;
}

int async_mutex_destroy(async_mutex_t *m)
{
    if (!m) return 0;
    if (own(&m->bound)) return ASYNC_EWRONGLOOP;
    if (m->owner || !async__list_empty(&m->waiters) || m->relockers) return ASYNC_EBUSY;
    unbind(&m->bound);
    async__free(m);
    return 0;
}

static int mutex_lock(async_mutex_t *m, int64_t deadline, bool block)
{
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    if (own(&m->bound)) return ASYNC_EWRONGLOOP;
    if (!m->owner) {
        take(m, self);
        return 0;
    }
    if (holds(m, self)) return ASYNC_EALREADY; /* not recursive: would deadlock */
    if (!block) return ASYNC_EAGAIN;
    return wait_on(&m->waiters, self, NULL, deadline);
}

int async_mutex_lock(async_mutex_t *m) { return mutex_lock(m, ASYNC_FOREVER, true); }
int async_mutex_lock_dl(async_mutex_t *m, int64_t dl) { return mutex_lock(m, dl, true); }
int async_mutex_trylock(async_mutex_t *m) { return mutex_lock(m, 0, false); }

/* Hands the lock to the longest waiter, or frees it. */
static void mutex_release(async_mutex_t *m)
{
    async__list_t *n = async__list_pop(&m->waiters);
    take(m, n ? container_of(n, async_task_impl_t, wait_link) : NULL);
    if (n) async__task_unpark(m->owner, 0);
}

int async_mutex_unlock(async_mutex_t *m)
{
    if (own(&m->bound)) return ASYNC_EWRONGLOOP;
    if (!holds(m, async__current())) return ASYNC_EPERM;
    mutex_release(m);
    return 0;
}

/* --- condition variable --------------------------------------------------- */

/* A waiter queues on the condition and releases the mutex in one step, with
 * no switch in between, so no other task of the loop can signal in the gap:
 * that is all the atomicity pthread's wait promises.  A signal wakes the
 * longest waiter with 0; the waiter then takes the mutex like any locker
 * (behind those already queued for it), shielded, because it must hold the
 * mutex again when it returns, however its wait ended. */
struct async_cond {
    async__bound_t bound;
    async__list_t waiters;
};

int async_cond_new(async_cond_t **out)
{
    async_cond_t *c = async__calloc(1, sizeof *c);
    if (!c) return ASYNC_ENOMEM;
    bind_to(&c->bound, async_loop_current());
    async__list_init(&c->waiters);
    *out = c;
    return 0;
}

int async_cond_destroy(async_cond_t *c)
{
    if (!c) return 0;
    if (own(&c->bound)) return ASYNC_EWRONGLOOP;
    if (!async__list_empty(&c->waiters)) return ASYNC_EBUSY;
    unbind(&c->bound);
    async__free(c);
    return 0;
}

int async_cond_wait_dl(async_cond_t *c, async_mutex_t *m, int64_t deadline)
{
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    if (own(&c->bound) || own(&m->bound)) return ASYNC_EWRONGLOOP;
    if (!holds(m, self)) return ASYNC_EPERM;
    /* A wait that cannot begin returns with the mutex never let go. */
    if (async__task_cancel_pending(self)) return ASYNC_ECANCELED;
    if (deadline != ASYNC_FOREVER && deadline <= async_now()) return ASYNC_ETIMEDOUT;
    async__list_push(&c->waiters, &self->wait_link);
    m->relockers++;
    mutex_release(m);
    rc = async__task_park(self, deadline);
    async__list_remove(&self->wait_link); /* if it left early */
    bool was = self->shielded;
    self->shielded = true;
    int lrc = mutex_lock(m, ASYNC_FOREVER, true);
    self->shielded = was;
    m->relockers--;
    (void)lrc; /* 0: a shielded wait for a mutex of our loop cannot fail */
    return rc;
}

int async_cond_wait(async_cond_t *c, async_mutex_t *m) { return async_cond_wait_dl(c, m, ASYNC_FOREVER); }

int async_cond_signal(async_cond_t *c)
{
    if (own(&c->bound)) return ASYNC_EWRONGLOOP;
    async__list_t *n = async__list_pop(&c->waiters);
    if (n) async__task_unpark(container_of(n, async_task_impl_t, wait_link), 0);
    return 0;
}

int async_cond_broadcast(async_cond_t *c)
{
    if (own(&c->bound)) return ASYNC_EWRONGLOOP;
    wake_all(&c->waiters, 0);
    return 0;
}

/* --- event ---------------------------------------------------------------- */

struct async_event {
    async__bound_t bound;
    bool set;
    async__list_t waiters;
};

int async_event_new(async_event_t **out)
{
    async_event_t *e = async__calloc(1, sizeof *e);
    if (!e) return ASYNC_ENOMEM;
    bind_to(&e->bound, async_loop_current());
    async__list_init(&e->waiters);
    *out = e;
    return 0;
}

int async_event_destroy(async_event_t *e)
{
    if (!e) return 0;
    if (own(&e->bound)) return ASYNC_EWRONGLOOP;
    if (!async__list_empty(&e->waiters)) return ASYNC_EBUSY;
    unbind(&e->bound);
    async__free(e);
    return 0;
}

int async_event_set(async_event_t *e)
{
    if (own(&e->bound)) return ASYNC_EWRONGLOOP;
    e->set = true;
    wake_all(&e->waiters, 0);
    return 0;
}

int async_event_clear(async_event_t *e)
{
    if (own(&e->bound)) return ASYNC_EWRONGLOOP;
    e->set = false;
    return 0;
}
bool async_event_is_set(const async_event_t *e) { return e->set; }

int async_event_wait_dl(async_event_t *e, int64_t deadline)
{
    if (own(&e->bound)) return ASYNC_EWRONGLOOP;
    if (e->set) return 0;
    async_task_impl_t *self;
    int rc = async__task_check_blocking(&self);
    if (rc) return rc;
    return wait_on(&e->waiters, self, NULL, deadline);
}

int async_event_wait(async_event_t *e) { return async_event_wait_dl(e, ASYNC_FOREVER); }

int async_event_trywait(async_event_t *e)
{
    if (own(&e->bound)) return ASYNC_EWRONGLOOP;
    return e->set ? 0 : ASYNC_EAGAIN;
}
