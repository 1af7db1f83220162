#include "nginx.h"
#include "port.h"
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

void test_nginx_prepare(test_nginx_t *n, const char *name)
{
    n->pid = -1;
    snprintf(n->dir, sizeof n->dir, "/tmp/%s-XXXXXX", name);
    cr_assert_not_null(mkdtemp(n->dir));
    chmod(n->dir, 0755); /* nginx's worker reads the prefix */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem -out %s/cert.pem "
             ">/dev/null 2>&1",
             n->dir, n->dir);
    if (system(cmd) != 0) cr_skip_test("missing package openssl: could not make a certificate");
    snprintf(n->cert, sizeof n->cert, "%s/cert.pem", n->dir);
}

void test_nginx_start(test_nginx_t *n, const char *conf, const unsigned *ports, size_t nports)
{
    char path[128], elog[128];
    snprintf(path, sizeof path, "%s/nginx.conf", n->dir);
    snprintf(elog, sizeof elog, "%s/error.log", n->dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    /* load_module must come first: the caller's text leads. */
    const char *mods_end = conf;
    while (strncmp(mods_end, "load_module ", 12) == 0 && strchr(mods_end, '\n')) mods_end = strchr(mods_end, '\n') + 1;
    fprintf(f, "%.*sdaemon off; master_process off; worker_processes 1;\npid %s/nginx.pid; error_log %s;\n%s",
            (int)(mods_end - conf), conf, n->dir, elog, mods_end);
    fclose(f);
    n->pid = fork();
    if (n->pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execlp("nginx", "nginx", "-p", n->dir, "-c", path, "-e", elog, (char *)NULL);
        execl("/usr/sbin/nginx", "nginx", "-p", n->dir, "-c", path, "-e", elog, (char *)NULL);
        _exit(127);
    }
    for (size_t p = 0; p < nports; p++) {
        for (int i = 0; i < 300 && !test_port_open(ports[p]); i++) {
            if (waitpid(n->pid, NULL, WNOHANG) == n->pid) {
                n->pid = -1;
                cr_skip_test("missing package nginx-light: nginx did not start");
            }
            usleep(10000);
        }
    }
}

void test_nginx_serve_file(test_nginx_t *n, unsigned worker_connections, const char *file,
                           const char *body, char *url, size_t url_size)
{
    char www[128], path[256];
    snprintf(www, sizeof www, "%s/www", n->dir);
    cr_assert_eq(mkdir(www, 0755), 0);
    snprintf(path, sizeof path, "%s/%s", www, file);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(body, f);
    cr_assert_eq(fclose(f), 0);
    unsigned port = test_free_port();
    char conf[1024];
    snprintf(conf, sizeof conf,
             "events { worker_connections %u; }\n"
             "http { access_log off;\n"
             "  server { listen 127.0.0.1:%u ssl http2; root %s;\n"
             "    ssl_certificate %s/cert.pem; ssl_certificate_key %s/key.pem; } }\n",
             worker_connections, port, www, n->dir, n->dir);
    test_nginx_start(n, conf, &port, 1);
    snprintf(url, url_size, "https://127.0.0.1:%u/%s", port, file);
}

void test_nginx_stop(test_nginx_t *n)
{
    if (n->pid > 0) {
        kill(n->pid, SIGTERM);
        waitpid(n->pid, NULL, 0);
        n->pid = -1;
    }
    if (!n->dir[0]) return;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", n->dir);
    if (system(cmd)) {}
    n->dir[0] = 0;
}
