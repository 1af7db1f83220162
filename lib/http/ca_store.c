/* One parsed CA bundle per file for every TLS connection of the process
 * (ca_store.h says why).  curl calls on_ssl_ctx for each new connection,
 * after it has set up the connection's SSL_CTX without loading any CA (both
 * CURLOPT_CAINFO and CURLOPT_CAPATH are NULL); the callback hands the
 * context this file's store for the bundle, parsed on the first connection
 * and again only when the file changes (another inode, size or mtime: a
 * certificate update replaces the file).
 *
 * The stores live as long as the process, like curl's global state, up to
 * STORES_MAX of them (the least recently used goes beyond); the mutex
 * guards the list, and a connection holds its own reference to the store it
 * got, so a store replaced or dropped lives on until its last connection
 * ends.  The
 * list comes from malloc, not async__malloc: it belongs to no client, and a
 * client's allocation count must come back to 0 when it is freed. */
#include "ca_store.h"
#include "ascii.h"
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct ca_store {
    struct ca_store *next;
    X509_STORE *store;
    unsigned long used;    /* stores_tick when a connection last got it */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    char path[];
} ca_store_t;

/* Stores kept at most: a program that names a new bundle file per client
 * (a temporary file per tenant) must not grow by a parsed bundle (about
 * 1 MiB for Debian's) per client.  The least recently used one goes. */
#define STORES_MAX 16

static pthread_mutex_t stores_lock = PTHREAD_MUTEX_INITIALIZER;
static ca_store_t *stores;
static unsigned n_stores;
static unsigned long stores_tick, parses; /* under stores_lock */

/* Why this thread's last connection could not get a store, and for which
 * file: curl only reports that the callback failed. */
static _Thread_local char last_error[256];
static _Thread_local char last_error_path[256];

/* ctime too: a rewrite that keeps the size and sets the mtime back (cp -p
 * onto the same inode) still moves it. */
static bool same_file(const ca_store_t *c, const struct stat *st)
{
    return c->dev == st->st_dev && c->ino == st->st_ino && c->size == st->st_size &&
           c->mtime.tv_sec == st->st_mtim.tv_sec && c->mtime.tv_nsec == st->st_mtim.tv_nsec &&
           c->ctime.tv_sec == st->st_ctim.tv_sec && c->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

static void fail(const char *path, const char *fmt, const char *why)
{
    snprintf(last_error_path, sizeof last_error_path, "%s", path);
    snprintf(last_error, sizeof last_error, fmt, path, why);
}

/* Under stores_lock: drops the least recently used store but keep. */
static void evict(const ca_store_t *keep)
{
    ca_store_t **victim = NULL;
    for (ca_store_t **at = &stores; *at; at = &(*at)->next)
        if (*at != keep && (!victim || (*at)->used < (*victim)->used)) victim = at;
    if (!victim) return;
    ca_store_t *c = *victim;
    *victim = c->next;
    X509_STORE_free(c->store); /* connections that use it keep their references */
    free(c);
    n_stores--;
}

/* Under stores_lock: path's entry, made or refreshed for the file as st
 * describes it; NULL (why in last_error) when out of memory or the file
 * holds no certificate that parses. */
static ca_store_t *store_for(const char *path, const struct stat *st)
{
    ca_store_t *c = stores;
    while (c && strcmp(c->path, path)) c = c->next;
    if (c && same_file(c, st)) return c;
    X509_STORE *store = X509_STORE_new();
    parses++;
    if (!store || X509_STORE_load_locations(store, path, NULL) != 1) {
        unsigned long e = ERR_peek_last_error();
        const char *why = e && ERR_reason_error_string(e) ? ERR_reason_error_string(e)
                                                          : "no certificate could be read";
        fail(path, "CA file %s: %s", why);
        ERR_clear_error();
        X509_STORE_free(store);
        return NULL;
    }
    if (!c) {
        size_t n = strlen(path) + 1;
        if (!(c = calloc(1, sizeof *c + n))) {
            fail(path, "CA file %s: %s", "out of memory");
            X509_STORE_free(store);
            return NULL;
        }
        memcpy(c->path, path, n);
        c->next = stores;
        stores = c;
        if (++n_stores > STORES_MAX) evict(c);
    }
    X509_STORE_free(c->store);
    c->store = store;
    c->dev = st->st_dev;
    c->ino = st->st_ino;
    c->size = st->st_size;
    c->mtime = st->st_mtim;
    c->ctime = st->st_ctim;
    return c;
}

static CURLcode on_ssl_ctx(CURL *curl, void *ssl_ctx, void *path)
{
    (void)curl;
    struct stat st;
    /* A directory would read as "no certificate or crl found".  st is
     * looked at only after a stat that filled it. */
    int err = stat(path, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
    if (err) {
        fail(path, "CA file %s: %s", strerror(err));
        return CURLE_SSL_CACERT_BADFILE;
    }
    pthread_mutex_lock(&stores_lock);
    ca_store_t *c = store_for(path, &st);
    if (c) {
        c->used = ++stores_tick;
        /* set1: the context takes its own reference, released with it. */
        SSL_CTX_set1_cert_store(ssl_ctx, c->store);
    }
    pthread_mutex_unlock(&stores_lock);
    return c ? CURLE_OK : CURLE_SSL_CACERT_BADFILE;
}

/* Whether curl's TLS is OpenSSL, whose SSL_CTX on_ssl_ctx is given. */
static bool openssl_under_curl(const curl_version_info_data *v)
{
    return v->ssl_version && !strncmp(v->ssl_version, "OpenSSL/", 8);
}

/* Whether the environment sends https through a TLS proxy: curl calls the
 * SSL_CTX callback for the proxy's handshake too, which must be checked
 * against the system's CAs (CURLOPT_PROXY_CAINFO), not against ca_file. */
static bool tls_proxy(void)
{
    static const char *const names[] = {"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return !async__ascii_ncasecmp(v, "https://", 8);
    }
    return false;
}

const char *async__http_ca_shared(const char *ca_file)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    const char *path = ca_file ? ca_file : v->cainfo;
    return path && openssl_under_curl(v) && !tls_proxy() ? path : NULL;
}

CURLcode async__http_ca_setup(CURL *e, const char *ca_file, const char *shared)
{
    if (!shared) {
        /* curl loads the CAs itself, once a connection; ca_file means
         * those only, not the system's directory beside them. */
        if (!ca_file) return CURLE_OK;
        CURLcode r = curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
        if (!r) r = curl_easy_setopt(e, CURLOPT_CAPATH, (char *)NULL);
        return r;
    }
    CURLcode r = curl_easy_setopt(e, CURLOPT_CAINFO, (char *)NULL);
    if (!r) r = curl_easy_setopt(e, CURLOPT_CAPATH, (char *)NULL);
    if (!r) r = curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, (void *)shared);
    if (!r) r = curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    return r;
}

const char *async__http_ca_error(const char *shared)
{
    if (!shared || !last_error[0] || strcmp(shared, last_error_path)) return NULL;
    return last_error;
}

unsigned long async__http_ca_parses(void)
{
    pthread_mutex_lock(&stores_lock);
    unsigned long n = parses;
    pthread_mutex_unlock(&stores_lock);
    return n;
}
