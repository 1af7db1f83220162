/* The HTTP client's engine: one curl multi handle driven by the loop's libev
 * watchers, on the pattern of curl's evhiperfifo.c and multi-uv.c examples,
 * with their known traps avoided.  curl tells us, through its socket
 * callback, which sockets to watch for what, and through its timer callback
 * when to call it back; neither callback ever calls into curl.  Every call of
 * curl_multi_socket_action happens from a libev watcher, and transfers that
 * ended are collected with curl_multi_info_read after it returns, so
 * curl_multi_remove_handle never runs inside a curl callback.  This file also
 * creates and frees clients and keeps the pool of idle easy handles. */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include "http_internal.h"

/* --- curl's socket callback ------------------------------------------------ */

static void on_io(struct ev_loop *ev, ev_io *w, int revents)
{
    ASYNC_UNUSED(ev);
    http_sock_t *k = w->data;
    async_http_t *http = k->http;
    int action = ((revents & EV_READ) ? CURL_CSELECT_IN : 0) |
                 ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    /* k may be freed inside this call (CURL_POLL_REMOVE); only http is used
     * afterwards. */
    curl_multi_socket_action(http->multi, w->fd, action, &http->still_running);
    async__http_collect(http);
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *sockp)
{
    ASYNC_UNUSED(easy);
    async_http_t *http = userp;
    http_sock_t *k = sockp;

    if (what == CURL_POLL_REMOVE) {
        /* curl calls this before it closes the socket, so the watcher is
         * stopped while the fd number is still ours. */
        if (k) {
            ev_io_stop(http->ev, &k->io);
            async__list_remove(&k->link);
            async__free(k);
        }
        return 0;
    }
    int events = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (!k) {
        k = async__calloc(1, sizeof *k);
        if (!k) return -1; /* curl fails the transfers on this socket */
        k->http = http;
        k->events = events;
        ev_io_init(&k->io, on_io, s, events);
        k->io.data = k;
        if (curl_multi_assign(http->multi, s, k) != CURLM_OK) {
            async__free(k);
            return -1;
        }
        async__list_push(&http->socks, &k->link);
        if (events) ev_io_start(http->ev, &k->io);
        return 0;
    }
    if (events != k->events) {
        /* libev needs the watcher stopped to change its fd or events. */
        ev_io_stop(http->ev, &k->io);
        ev_io_set(&k->io, s, events);
        k->events = events;
        if (events) ev_io_start(http->ev, &k->io);
    }
    return 0;
}

/* --- curl's timer callback ------------------------------------------------- */

static void on_curl_timer(struct ev_loop *ev, ev_timer *w, int revents)
{
    ASYNC_UNUSED(ev);
    ASYNC_UNUSED(revents);
    async__http_multi_kick(w->data);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    ASYNC_UNUSED(multi);
    async_http_t *http = userp;
    ev_timer_stop(http->ev, &http->curl_timer);
    if (timeout_ms >= 0) {
        /* Zero arms a timer for the next loop iteration: curl must not be
         * called back from inside its own callback. */
        ev_timer_set(&http->curl_timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(http->ev, &http->curl_timer);
    }
    return 0;
}

void async__http_multi_kick(async_http_t *http)
{
    curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &http->still_running);
    async__http_collect(http);
}

void async__http_collect(async_http_t *http)
{
    CURLMsg *msg;
    int left;
    for (;;) {
        http->added = false;
        while ((msg = curl_multi_info_read(http->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            /* msg is invalid once the handle is removed: copy what we need. */
            CURL *easy = msg->easy_handle;
            CURLcode rc = msg->data.result;
            http_xfer_t *x = NULL;
            curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
            curl_multi_remove_handle(http->multi, easy);
            if (x) async__http_attempt_done(http, x, rc);
        }
        if (!http->added) break;
        /* Callbacks started new transfers (the next page, the next request
         * of a batch): start them now rather than one loop iteration later
         * through curl's zero timeout.  We are outside every curl callback
         * here, so calling curl is allowed. */
        curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &http->still_running);
    }
    if (http->still_running == 0 && async__list_empty(&http->running)) {
        /* Nothing is running: let a DEFAULT run of the loop end instead of
         * waiting for curl's housekeeping timer. */
        ev_timer_stop(http->ev, &http->curl_timer);
    }
}

/* --- easy handle pool ------------------------------------------------------ */

CURL *async__http_easy_get(async_http_t *http)
{
    if (http->n_pool) return http->pool[--http->n_pool];
    CURL *easy = curl_easy_init();
    if (easy && async__http_easy_init(http, easy)) {
        curl_easy_cleanup(easy);
        return NULL;
    }
    return easy;
}

void async__http_easy_put(async_http_t *http, CURL *easy)
{
    if (!easy) return;
    if (http->n_pool < http->cap_pool && !http->closing) {
        /* Kept configured, not reset: the next request sets every option
         * that differs between requests (async__http_easy_setup). */
        http->pool[http->n_pool++] = easy;
        return;
    }
    curl_easy_cleanup(easy);
}

/* --- clients --------------------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    /* CURLOPT_NOSIGNAL stops curl from ignoring SIGPIPE itself around each
     * call, so a peer that closes a socket would kill the process: ignore the
     * signal once, unless the program installed its own handler. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
        !(sa.sa_flags & SA_SIGINFO))
        signal(SIGPIPE, SIG_IGN);
}

int async__http_multi_init(async_http_t *http)
{
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) return ASYNC_ECURL;
    http->multi = curl_multi_init();
    if (!http->multi) return ASYNC_ECURL;
    CURLM *m = http->multi;
    curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m, CURLMOPT_SOCKETDATA, http);
    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(m, CURLMOPT_TIMERDATA, http);
    curl_multi_setopt(m, CURLMOPT_PIPELINING,
                      http->opts.no_http2 ? CURLPIPE_NOTHING : CURLPIPE_MULTIPLEX);
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, http->opts.max_connections);
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, http->opts.max_host_connections);
    /* Keep the idle connections a burst leaves behind (until the server or
     * curl's age limit closes them) rather than closing all but a few: with
     * libcurl 7.88 each close beyond the limit walks every connection, which
     * makes a burst of thousands quadratic. */
    long cache = http->opts.max_connections ? http->opts.max_connections : 1L << 20;
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, cache);
    ev_init(&http->curl_timer, on_curl_timer);
    http->curl_timer.data = http;
    return 0;
}

void async__http_multi_cleanup(async_http_t *http)
{
    ev_timer_stop(http->ev, &http->curl_timer);
    for (size_t i = 0; i < http->n_pool; i++) curl_easy_cleanup(http->pool[i]);
    http->n_pool = 0;
    /* curl closes its cached connections here and reports them removed. */
    if (http->multi) curl_multi_cleanup(http->multi);
    http->multi = NULL;
    async__list_t *l;
    while ((l = async__list_pop(&http->socks))) {
        http_sock_t *k = container_of(l, http_sock_t, link);
        ev_io_stop(http->ev, &k->io);
        async__free(k);
    }
    ev_timer_stop(http->ev, &http->curl_timer);
}
