/* One parsed CA bundle per file for every TLS connection of the process
 * (ca_store.h says why).  curl calls on_ssl_ctx for each new connection,
 * after it has set up the connection's SSL_CTX without loading any CA (both
 * CURLOPT_CAINFO and CURLOPT_CAPATH are NULL); the callback hands the
 * context this file's store for the bundle, parsed on the first connection
 * and again only when the file changes (another inode, size or mtime: a
 * certificate update replaces the file).
 *
 * The stores live as long as the process, like curl's global state: they
 * are few (one per bundle a program names), the mutex guards the list, and
 * a connection holds its own reference to the store it got, so a store
 * replaced after a change lives on until its last connection ends.  The
 * list comes from malloc, not async__malloc: it belongs to no client, and a
 * client's allocation count must come back to 0 when it is freed. */
#include "ca_store.h"
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct ca_store {
    struct ca_store *next;
    X509_STORE *store;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    char path[];
} ca_store_t;

static pthread_mutex_t stores_lock = PTHREAD_MUTEX_INITIALIZER;
static ca_store_t *stores;
static unsigned long parses; /* under stores_lock */

static bool same_file(const ca_store_t *c, const struct stat *st)
{
    return c->dev == st->st_dev && c->ino == st->st_ino && c->size == st->st_size &&
           c->mtime.tv_sec == st->st_mtim.tv_sec && c->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Under stores_lock: path's entry, made or refreshed for the file as st
 * describes it; NULL when out of memory or the file does not parse. */
static ca_store_t *store_for(const char *path, const struct stat *st)
{
    ca_store_t *c = stores;
    while (c && strcmp(c->path, path)) c = c->next;
    if (c && same_file(c, st)) return c;
    X509_STORE *store = X509_STORE_new();
    parses++;
    if (!store || X509_STORE_load_locations(store, path, NULL) != 1) {
        X509_STORE_free(store);
        return NULL;
    }
    if (!c) {
        size_t n = strlen(path) + 1;
        if (!(c = calloc(1, sizeof *c + n))) {
            X509_STORE_free(store);
            return NULL;
        }
        memcpy(c->path, path, n);
        c->next = stores;
        stores = c;
    }
    X509_STORE_free(c->store); /* connections that use it keep their references */
    c->store = store;
    c->dev = st->st_dev;
    c->ino = st->st_ino;
    c->size = st->st_size;
    c->mtime = st->st_mtim;
    return c;
}

static CURLcode on_ssl_ctx(CURL *curl, void *ssl_ctx, void *path)
{
    (void)curl;
    struct stat st;
    if (stat(path, &st) != 0) return CURLE_SSL_CACERT_BADFILE;
    pthread_mutex_lock(&stores_lock);
    ca_store_t *c = store_for(path, &st);
    /* set1: the context takes its own reference, released with it. */
    if (c) SSL_CTX_set1_cert_store(ssl_ctx, c->store);
    pthread_mutex_unlock(&stores_lock);
    return c ? CURLE_OK : CURLE_SSL_CACERT_BADFILE;
}

/* Whether curl's TLS is OpenSSL, whose SSL_CTX on_ssl_ctx is given. */
static bool openssl_under_curl(const curl_version_info_data *v)
{
    return v->ssl_version && !strncmp(v->ssl_version, "OpenSSL/", 8);
}

CURLcode async__http_ca_setup(CURL *e, const char *ca_file)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    const char *path = ca_file ? ca_file : v->cainfo;
    if (!path || !openssl_under_curl(v))
        return ca_file ? curl_easy_setopt(e, CURLOPT_CAINFO, ca_file) : CURLE_OK;
    CURLcode r = curl_easy_setopt(e, CURLOPT_CAINFO, (char *)NULL);
    if (!r) r = curl_easy_setopt(e, CURLOPT_CAPATH, (char *)NULL);
    if (!r) r = curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, (void *)path);
    if (!r) r = curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    return r;
}

unsigned long async__http_ca_parses(void)
{
    pthread_mutex_lock(&stores_lock);
    unsigned long n = parses;
    pthread_mutex_unlock(&stores_lock);
    return n;
}
