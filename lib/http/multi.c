/* The HTTP client's engine: curl multi handles ("shards", see
 * http_internal.h) driven by the loop's libev watchers, on the pattern of
 * curl's evhiperfifo.c and multi-uv.c examples with their known traps
 * avoided.  curl tells us, through its socket callback, which sockets to
 * watch for what, and through its timer callback when to call it back;
 * neither callback ever calls into curl.  Every call of
 * curl_multi_socket_action happens from a libev watcher (or right after one
 * of our own callbacks returned), and transfers that ended are collected with
 * curl_multi_info_read after it returns, so curl_multi_remove_handle never
 * runs inside a curl callback.  This file also keeps the shards and
 * initialises curl once per process.  It knows nothing of requests: each
 * finished transfer goes to the completion function its owner gave it
 * (http_transfer_t), the only way out of this file. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include "http_internal.h"

static bool collect(http_shard_t *sh);

/* --- corking a multiplexing shard's connections ----------------------------
 *
 * curl 7.88 writes each HTTP/2 frame with its own SSL_write, that is its own
 * send(): with TCP_NODELAY (curl's default) a burst of streams on one
 * connection goes out one small segment a request, and the loopback or the
 * NIC, and the server, wake once for each.  While curl runs for a
 * multiplexing shard its connections are corked (TCP_CORK), and uncorked as
 * soon as curl returns, before the loop polls: what that one call wrote
 * leaves in full segments, and nothing waits longer than the call, which is
 * what TCP_NODELAY is there for (curl's write-write-read pattern never waits
 * for an ACK). */

/* Sockets of a shard worth corking: a multiplexing shard holds one
 * connection to each host it talks to, rarely more. */
#define CORK_MAX 4

/* What this file keeps of a shard beyond http_shard_t. */
typedef struct shard_box {
    http_shard_t sh;
    curl_socket_t cork[CORK_MAX]; /* sockets our open callback made for it
                                     while it had multiplexing transfers */
    int n_cork;
} shard_box_t;

static shard_box_t *box_of(http_shard_t *sh) { return container_of(sh, shard_box_t, sh); }

static void cork_add(http_shard_t *sh, curl_socket_t s)
{
    shard_box_t *b = box_of(sh);
    if (sh->n_mux && b->n_cork < CORK_MAX) b->cork[b->n_cork++] = s;
}

static void cork_remove(http_shard_t *sh, curl_socket_t s)
{
    shard_box_t *b = box_of(sh);
    for (int i = 0; i < b->n_cork; i++) {
        if (b->cork[i] == s) {
            b->cork[i] = b->cork[--b->n_cork];
            return;
        }
    }
}

/* Best effort: a socket that refuses (not TCP) only goes out uncorked. */
static void cork_set(shard_box_t *b, int on)
{
    for (int i = 0; i < b->n_cork; i++)
        (void)setsockopt(b->cork[i], IPPROTO_TCP, TCP_CORK, &on, sizeof on);
}

/* One curl_multi_socket_action for shard sh, its connections corked for the
 * call, then the transfers it ended collected.  A socket opened during the
 * call was never corked, one closed left the list: uncorking the list as it
 * is afterwards releases every socket that was corked.  Returns false if
 * the shard died and was retired (freed). */
static bool drive(http_shard_t *sh, curl_socket_t fd, int action)
{
    shard_box_t *b = box_of(sh);
    bool corked = b->n_cork > 0;
    if (corked) cork_set(b, 1);
    curl_multi_socket_action(sh->multi, fd, action, &sh->still_running);
    if (corked) cork_set(b, 0);
    return collect(sh);
}

/* --- sockets the poll found ready ------------------------------------------
 *
 * The io watcher does not call curl: it marks its socket ready on its shard,
 * and on_prepare drives every ready socket of the shard together, before the
 * loop polls again, with one collect and one cork for them all.  When a
 * good share of the shard's transfers is ready at once (answers that
 * arrived together), one curl_multi_socket_all serves them all: it runs
 * each transfer once, where a curl_multi_socket_action a socket pays again
 * for the socket hash lookup, the expired-timer walk and the timer update
 * that curl does on every call.  With few ready among many, socket_all
 * would run transfers that have nothing to do, so each ready socket gets
 * its own call.  DRIVE_ALL_SHARE is that share: at 1/4, measured on 64
 * transfers against nginx, the batch costs fewer instructions than the
 * calls one by one (docs/http.md, "Driving curl"). */
#define DRIVE_ALL_SHARE 4

/* Takes k off its shard's ready list, if it is on it. */
static void ready_remove(http_sock_t *k)
{
    if (!k->ready) return;
    k->ready = false;
    k->revents = 0;
    async__list_remove(&k->ready_link);
    k->shard->n_ready--;
}

static void on_io(struct ev_loop *ev, ev_io *w, int revents)
{
    http_sock_t *k = w->data;
    http_shard_t *sh = k->shard;
    k->revents |= ((revents & EV_READ) ? CURL_CSELECT_IN : 0) |
                  ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    if (!k->ready) {
        k->ready = true;
        async__list_push(&sh->ready, &k->ready_link);
        sh->n_ready++;
    }
    ev_prepare_start(ev, &sh->m->start);
}

/* curl_multi_socket_all is deprecated in favour of socket_action, but
 * still supported by every libcurl: it is the one call that runs every
 * transfer of a multi handle without naming a socket. */
static void socket_all(http_shard_t *sh)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    curl_multi_socket_all(sh->multi, &sh->still_running);
#pragma GCC diagnostic pop
}

/* Drives shard sh for what this loop iteration brought it: the sockets the
 * poll found ready and the transfers that joined (sh->pending), with its
 * connections corked throughout, then collects what ended.  Returns false
 * if the shard died and was retired (freed). */
static bool drive_ready(http_shard_t *sh)
{
    shard_box_t *b = box_of(sh);
    bool corked = b->n_cork > 0;
    if (corked) cork_set(b, 1);
    if (sh->n_ready > 1 && sh->n_ready * DRIVE_ALL_SHARE >= sh->n_running) {
        while (!async__list_empty(&sh->ready))
            ready_remove(container_of(sh->ready.next, http_sock_t, ready_link));
        sh->pending = false;
        sh->m->n_drive_all++;
        socket_all(sh);
    } else {
        /* Each socket leaves the list before its call: the call may free it
         * (CURL_POLL_REMOVE) or others of the list, which leave it then. */
        while (!sh->dead && !async__list_empty(&sh->ready)) {
            http_sock_t *k = container_of(sh->ready.next, http_sock_t, ready_link);
            curl_socket_t fd = k->io.fd;
            int action = k->revents;
            ready_remove(k);
            curl_multi_socket_action(sh->multi, fd, action, &sh->still_running);
        }
        if (sh->pending && !sh->dead) {
            sh->pending = false;
            curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &sh->still_running);
        }
    }
    if (corked) cork_set(b, 0);
    return collect(sh);
}

/* --- curl's socket callback ------------------------------------------------ */

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *sockp)
{
    ASYNC_UNUSED(easy);
    http_shard_t *sh = userp;
    http_multi_t *m = sh->m;
    http_sock_t *k = sockp;

    if (what == CURL_POLL_REMOVE) {
        /* curl calls this before it closes the socket, so the watcher is
         * stopped while the fd number is still ours.  curl forgets k now;
         * a kept one waits for the socket's next watch or its close. */
        if (k) {
            ev_io_stop(m->ev, &k->io);
            ready_remove(k);
            if (!k->kept) {
                async__list_remove(&k->link);
                async__free(k);
            }
        }
        return 0;
    }
    int events = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (!k) {
        k = (size_t)s < m->n_by_fd ? m->by_fd[s] : NULL;
        if (k && k->shard == sh) {
            /* Our socket, watched again: same descriptor, same socket (its
             * close would have dropped k), so no ev_io_set, which would make
             * libev tell the kernel again. */
            if (curl_multi_assign(sh->multi, s, k) != CURLM_OK) {
                sh->dead = true;
                return -1;
            }
            ev_io_modify(&k->io, events);
            k->events = events;
            if (events) ev_io_start(m->ev, &k->io);
            return 0;
        }
        /* A socket curl made itself, or one without a kept context: a fresh
         * context, freed when curl stops watching it. */
        k = async__calloc(1, sizeof *k);
        if (!k) {
            /* curl aborts every transfer of this multi handle now; collect
             * retires the shard and fails them with a clear error. */
            sh->dead = true;
            return -1;
        }
        k->shard = sh;
        k->events = events;
        async__list_init(&k->ready_link);
        ev_io_init(&k->io, on_io, s, events);
        k->io.data = k;
        if (curl_multi_assign(sh->multi, s, k) != CURLM_OK) {
            async__free(k);
            sh->dead = true;
            return -1;
        }
        async__list_push(&m->socks, &k->link);
        if (events) ev_io_start(m->ev, &k->io);
        return 0;
    }
    if (events != k->events) {
        /* libev needs the watcher stopped to change its fd or events. */
        ev_io_stop(m->ev, &k->io);
        ev_io_set(&k->io, s, events);
        k->events = events;
        if (events) ev_io_start(m->ev, &k->io);
    }
    return 0;
}

void async__http_sock_opened(http_shard_t *sh, curl_socket_t s)
{
    http_multi_t *m = sh->m;
    if (s < 0) return;
    /* The transfer that connects is counted in n_mux already. */
    cork_add(sh, s);
    if ((size_t)s >= m->n_by_fd) {
        size_t n = m->n_by_fd ? m->n_by_fd : 64;
        while (n <= (size_t)s) n *= 2;
        http_sock_t **t = async__realloc(m->by_fd, n * sizeof *t);
        if (!t) return;
        memset(t + m->n_by_fd, 0, (n - m->n_by_fd) * sizeof *t);
        m->by_fd = t;
        m->n_by_fd = n;
    }
    /* A context left for this number would be a socket closed behind our
     * back, which curl does not do with the sockets we open. */
    if (m->by_fd[s]) return;
    http_sock_t *k = async__calloc(1, sizeof *k);
    if (!k) return;
    k->shard = sh;
    k->kept = true;
    async__list_init(&k->ready_link);
    ev_io_init(&k->io, on_io, s, 0);
    k->io.data = k;
    async__list_push(&m->socks, &k->link);
    m->by_fd[s] = k;
}

static void sock_drop(http_multi_t *m, http_sock_t *k)
{
    ev_io_stop(m->ev, &k->io);
    ready_remove(k);
    async__list_remove(&k->link);
    if (k->kept && (size_t)k->io.fd < m->n_by_fd && m->by_fd[k->io.fd] == k)
        m->by_fd[k->io.fd] = NULL;
    async__free(k);
}

void async__http_sock_closing(http_shard_t *sh, curl_socket_t s)
{
    http_multi_t *m = sh->m;
    cork_remove(sh, s);
    http_sock_t *k = s >= 0 && (size_t)s < m->n_by_fd ? m->by_fd[s] : NULL;
    if (k) sock_drop(m, k);
}

/* --- curl's timer callback ------------------------------------------------- */

static void on_curl_timer(struct ev_loop *ev, ev_timer *w, int revents)
{
    ASYNC_UNUSED(revents);
    http_shard_t *sh = w->data;
    /* curl's timeouts are one-shot; on_timer keeps the watcher's repeat
     * only so that ev_timer_again can move an armed timer in place. */
    ev_timer_stop(ev, w);
    /* This call starts what joined too: on_prepare need not call again. */
    sh->pending = false;
    drive(sh, CURL_SOCKET_TIMEOUT, 0);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    ASYNC_UNUSED(multi);
    http_shard_t *sh = userp;
    struct ev_loop *ev = sh->m->ev;
    if (timeout_ms < 0) {
        ev_timer_stop(ev, &sh->timer);
        return 0;
    }
    /* Zero arms a timer for the next loop iteration: curl must not be
     * called back from inside its own callback.  Milliseconds to seconds in
     * floating point: integer division would make every timeout under a
     * second zero, a busy loop.  curl moves its timeout on nearly every
     * call; ev_timer_again moves an armed timer within libev's heap, where
     * a stop and a start take it out and put it back, and it needs a
     * repeat above zero (zero would stop the timer), hence the floor. */
    double after = (double)timeout_ms / 1000.0;
    sh->timer.repeat = after > 1e-9 ? after : 1e-9;
    ev_timer_again(ev, &sh->timer);
    return 0;
}

static void shard_retire(http_shard_t *sh);

/* Takes t's easy handle out of its shard. */
static void detach(http_transfer_t *t)
{
    http_shard_t *sh = t->shard;
    curl_multi_remove_handle(sh->multi, t->easy);
    async__list_remove(&t->link);
    sh->n_running--;
    sh->n_mux -= t->multiplex;
    t->shard = NULL;
}

/* Reads curl_multi_info_read and reports every finished transfer.  Returns
 * false if the shard had died and is now retired (freed). */
static bool collect(http_shard_t *sh)
{
    http_multi_t *m = sh->m;
    CURLMsg *msg;
    int left;
    if (sh->dead) {
        shard_retire(sh);
        return false;
    }
    while ((msg = curl_multi_info_read(sh->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        /* msg is invalid once the handle is removed: copy what we need. */
        CURLcode rc = msg->data.result;
        http_transfer_t *t = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        detach(t);
        m->n_done++;
        t->done(t, rc, t->ud);
    }
    if (sh->still_running == 0 && sh->n_running == 0) {
        /* Nothing runs here: let a DEFAULT run of the loop end instead of
         * waiting for curl's housekeeping timer. */
        ev_timer_stop(m->ev, &sh->timer);
    }
    return true;
}

/* Stops itself: it only kept one poll from blocking (on_prepare). */
static void on_flush(struct ev_loop *ev, ev_idle *w, int revents)
{
    ASYNC_UNUSED(revents);
    ev_idle_stop(ev, w);
}

/* Drives, from an ev_prepare watcher, that is after every watcher of this
 * loop iteration ran and before the poll, each shard that has sockets the
 * last poll found ready or transfers added since (drive_ready).  The
 * completion functions of all the answers one poll brought (a retry, the
 * next page, the next request of a batch) are started together, where each
 * answer's own call cost as much as a request's own work, and none waits
 * for curl's zero timeout, which would cost one more poll.  Starting
 * transfers can end some (a refused connection) and their completion
 * functions add more: repeat until no shard has any. */
static void on_prepare(struct ev_loop *ev, ev_prepare *w, int revents)
{
    ASYNC_UNUSED(revents);
    http_multi_t *m = w->data;
    unsigned long done = m->n_done;
    ev_prepare_stop(ev, w);
    for (bool again = true; again;) {
        again = false;
        /* Downwards: collect may retire shard i, moving the last (already
         * visited) one into its place. */
        for (size_t i = m->n_shards; i-- > 0;) {
            http_shard_t *sh = m->shards[i];
            if (!sh->pending && !sh->n_ready) continue;
            drive_ready(sh);
            again = true;
        }
    }
    /* Adds inside the loop started the watcher again; the loop has already
     * started their transfers. */
    ev_prepare_stop(ev, w);
    /* Answers reported here came after the poll that brought them: an idle
     * watcher keeps the coming poll from blocking, so that a run of the
     * loop with ASYNC_RUN_ONCE (a blocking fetch) returns with them, as it
     * did when the io watcher drove curl itself. */
    if (m->n_done != done && !ev_is_active(&m->flush)) ev_idle_start(ev, &m->flush);
}

void async__http_multi_kick(http_multi_t *m)
{
    /* Downwards: collect may retire shard i, moving the last (already
     * visited) one into its place. */
    for (size_t i = m->n_shards; i-- > 0;) {
        drive(m->shards[i], CURL_SOCKET_TIMEOUT, 0);
    }
}

/* --- transfers ------------------------------------------------------------- */

CURLMcode async__http_multi_add(http_shard_t *sh, http_transfer_t *t)
{
    /* CURLINFO_PRIVATE is ours: collect finds t through it. */
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (void *)t);
    CURLMcode mc = curl_multi_add_handle(sh->multi, t->easy);
    if (mc != CURLM_OK) return mc;
    t->shard = sh;
    async__list_push(&sh->transfers, &t->link);
    sh->pending = true;
    ev_prepare_start(sh->m->ev, &sh->m->start);
    sh->n_running++;
    sh->n_mux += t->multiplex;
    return CURLM_OK;
}

void async__http_multi_remove(http_transfer_t *t)
{
    http_shard_t *sh = t->shard;
    if (!sh) return;
    http_multi_t *m = sh->m;
    detach(t);
    if (sh->n_running) return;
    /* Nothing of this shard is left for curl to start.  The prepare watcher
     * must not stay armed for it: a task that gave up a request in the very
     * turn it made it (a cancel) armed it from inside the loop's own prepare
     * phase, so libev runs it only after the next poll, and with curl's
     * timer stopped that poll blocked for libev's longest wait (59.7 s)
     * before the loop could end. */
    ev_timer_stop(m->ev, &sh->timer);
    sh->pending = false;
    for (size_t i = 0; i < m->n_shards; i++)
        if (m->shards[i]->pending || m->shards[i]->n_ready) return;
    ev_prepare_stop(m->ev, &m->start);
}

/* --- shards ---------------------------------------------------------------- */

static http_shard_t *shard_new(http_multi_t *m)
{
    shard_box_t *b = async__calloc(1, sizeof *b);
    if (!b) return NULL;
    http_shard_t *sh = &b->sh;
    sh->m = m;
    async__list_init(&sh->transfers);
    async__list_init(&sh->ready);
    sh->multi = curl_multi_init();
    if (!sh->multi) {
        async__free(box_of(sh));
        return NULL;
    }
    CURLM *cm = sh->multi;
    curl_multi_setopt(cm, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(cm, CURLMOPT_SOCKETDATA, sh);
    curl_multi_setopt(cm, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(cm, CURLMOPT_TIMERDATA, sh);
    curl_multi_setopt(cm, CURLMOPT_PIPELINING, m->no_http2 ? CURLPIPE_NOTHING : CURLPIPE_MULTIPLEX);
    curl_multi_setopt(cm, CURLMOPT_MAX_TOTAL_CONNECTIONS, m->max_connections);
    curl_multi_setopt(cm, CURLMOPT_MAX_HOST_CONNECTIONS, m->max_host_connections);
    curl_multi_setopt(cm, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)MUX_SHARD_CAP);
    /* Keep the idle connections a burst leaves behind (until the server or
     * curl's age limit closes them) rather than closing all but a few: with
     * libcurl 7.88 each close beyond the limit walks every connection. */
    long cache = m->max_connections ? m->max_connections : 1L << 20;
    curl_multi_setopt(cm, CURLMOPT_MAXCONNECTS, cache);
    ev_init(&sh->timer, on_curl_timer);
    sh->timer.data = sh;
    m->shards[m->n_shards++] = sh;
    return sh;
}

/* A shard whose socket callback failed (out of memory) is dead in curl's
 * eyes: take it out of the set, take its transfers out of curl, free it,
 * and only then report the transfers (CURLE_OUT_OF_MEMORY), so that their
 * completion functions may start new transfers on a healthy shard. */
static void shard_retire(http_shard_t *sh)
{
    http_multi_t *m = sh->m;
    for (size_t i = 0; i < m->n_shards; i++) {
        if (m->shards[i] == sh) {
            m->shards[i] = m->shards[--m->n_shards];
            break;
        }
    }
    ev_timer_stop(m->ev, &sh->timer);
    async__list_t victims, *l, *next;
    async__list_init(&victims);
    while ((l = async__list_pop(&sh->transfers))) {
        http_transfer_t *t = container_of(l, http_transfer_t, link);
        curl_multi_remove_handle(sh->multi, t->easy);
        t->shard = NULL;
        async__list_push(&victims, &t->link);
    }
    sh->n_running = sh->n_mux = 0;
    curl_multi_cleanup(sh->multi);
    /* curl reported its sockets removed; stop any watcher it did not. */
    for (l = m->socks.next; l != &m->socks; l = next) {
        next = l->next;
        http_sock_t *k = container_of(l, http_sock_t, link);
        if (k->shard == sh) sock_drop(m, k);
    }
    async__free(box_of(sh));
    while ((l = async__list_pop(&victims))) {
        http_transfer_t *t = container_of(l, http_transfer_t, link);
        async__list_init(&t->link);
        m->n_done++;
        t->done(t, CURLE_OUT_OF_MEMORY, t->ud);
    }
}

http_shard_t *async__http_shard_pick(http_multi_t *m, bool mux)
{
    if ((m->max_connections || m->max_host_connections) && m->n_shards) return m->shards[0];
    http_shard_t *room = NULL, *best = NULL;
    for (size_t i = 0; i < m->n_shards; i++) {
        http_shard_t *sh = m->shards[i];
        size_t plain = sh->n_running - sh->n_mux;
        bool fits = sh->n_running < SHARD_CAP &&
                    (mux ? sh->n_mux < MUX_SHARD_CAP : i >= PLAIN_SHARDS || plain < PLAIN_SHARD_CAP);
        /* The first shard with room and an idle connection, else the first
         * with room: steady loads stay in the first shards and reuse their
         * connections; bursts spill over. */
        if (fits && sh->n_sockets > sh->n_running) return sh;
        if (fits && !room) room = sh;
        if (!best || sh->n_running < best->n_running) best = sh;
    }
    if (room) return room;
    if (m->n_shards < MAX_SHARDS) {
        http_shard_t *sh = shard_new(m);
        if (sh) return sh;
    }
    return best;
}

/* --- the set --------------------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static pthread_once_t sigpipe_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* CURLOPT_NOSIGNAL (which a multi-threaded program needs) stops curl from
 * ignoring SIGPIPE itself around each call.  curl's own sends use
 * MSG_NOSIGNAL, but curl documents corner cases, and a TLS library that
 * writes to the socket itself (older libcurl with OpenSSL, sending
 * close_notify to a peer that has gone) can raise it and kill the process:
 * ignore the signal once, unless the program installed its own handler or
 * the client asked us to leave it alone (keep_sigpipe). */
static void sigpipe_init(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
        !(sa.sa_flags & SA_SIGINFO))
        signal(SIGPIPE, SIG_IGN);
}

int async__http_multi_init(http_multi_t *m, struct ev_loop *ev, const async_http_opts_t *o)
{
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) return ASYNC_ECURL;
    if (!o->keep_sigpipe) pthread_once(&sigpipe_once, sigpipe_init);
    m->ev = ev;
    m->max_connections = o->max_connections;
    m->max_host_connections = o->max_host_connections;
    m->no_http2 = o->no_http2;
    m->n_shards = 0;
    async__list_init(&m->socks);
    m->n_drive_all = 0;
    m->by_fd = NULL;
    m->n_by_fd = 0;
    ev_prepare_init(&m->start, on_prepare);
    m->start.data = m;
    m->n_done = 0;
    ev_idle_init(&m->flush, on_flush);
    return shard_new(m) ? 0 : ASYNC_ENOMEM;
}

void async__http_multi_cleanup(http_multi_t *m)
{
    ev_prepare_stop(m->ev, &m->start);
    ev_idle_stop(m->ev, &m->flush);
    for (size_t i = 0; i < m->n_shards; i++) {
        http_shard_t *sh = m->shards[i];
        ev_timer_stop(m->ev, &sh->timer);
        /* curl closes its cached connections here and reports them removed. */
        curl_multi_cleanup(sh->multi);
        ev_timer_stop(m->ev, &sh->timer);
        async__free(box_of(sh));
    }
    m->n_shards = 0;
    async__list_t *l;
    while ((l = async__list_pop(&m->socks))) {
        http_sock_t *k = container_of(l, http_sock_t, link);
        ev_io_stop(m->ev, &k->io);
        async__free(k);
    }
    async__free(m->by_fd);
    m->by_fd = NULL;
    m->n_by_fd = 0;
}
