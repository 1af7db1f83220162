/* The MPI backend on two hosts, simulated on one machine (issue 15): each
 * test makes two network namespaces joined by a veth pair (10.213.0.1/24 in
 * "host" A, .2 in B; nothing else in either, so no packet can leave the
 * machine), runs mpirun inside A with a hostfile naming both addresses and
 * tests/mpi/hosts-agent.sh as the launch agent (plm_rsh_agent), which starts
 * Open MPI's daemon inside B, and checks three things of every run: the
 * suite's verdict, where each rank ran (each prints the inode of its network
 * namespace before it execs the suite) and that the data crossed the veth
 * (its byte counters).  Every mpirun is bounded and killed as a process
 * group on expiry; the namespaces are torn down by the fixture, by a
 * watchdog process when the test process dies without its fixture (a
 * timeout's SIGKILL), and, for a run killed with its watchdog, by the next
 * run, which deletes namespaces whose creator is dead.  Without root, `ip`
 * or namespaces (a container without CAP_SYS_ADMIN) every test skips with
 * the reason. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "support/mpirun.h"
#include "support/run.h"

#define SUITE ASYNC_OUT_DIR "/tests/bin/mpi/mpi-suite"
#define AGENT ASYNC_SRC_DIR "/tests/mpi/hosts-agent.sh"
/* Namespaces are "asmh-PID-a" / "-b", their veth ends "asmhPIDa" / "b"
 * (an interface name has at most 15 characters), PID the creator's. */
#define PREFIX "asmh"
#define SUBNET "10.213.0.0/24"
#define ADDR_A "10.213.0.1"
#define ADDR_B "10.213.0.2"
/* mpi-suite's "all" case replicates a table of 200000 doubles to every
 * serving rank (c_bcast), so rank 2, on host B, receives at least this
 * much over the veth. */
#define BCAST_TABLE_BYTES (200000 * 8)

typedef struct hosts {
    pid_t creator;
    char ns[2][32];   /* netns names, A then B */
    char veth[2][16]; /* the veth's end in each */
    ino_t ino[2];     /* the namespaces' inodes, as /proc/PID/ns/net shows them */
    bool made[2];
    char hostfile[64]; /* /tmp/asmh-PID-hosts, written by each run */
    pid_t watchdog;
} hosts_t;

static hosts_t hosts;

/* Runs a shell command line (our names only: letters, digits, '-', '.'),
 * its output and errors into out; returns its exit status, or -1. */
static int run_cmd(char *out, size_t n, const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    char sink[256];
    if (!out || !n) out = sink, n = sizeof sink;
    size_t len = fread(out, 1, n - 1, f);
    out[len] = '\0';
    while (len && out[len - 1] == '\n') out[--len] = '\0';
    while (fread(sink, 1, sizeof sink, f) > 0) continue;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static ino_t netns_inode(const char *ns)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/run/netns/%s", ns);
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* SIGKILLs every process whose network namespace has inode ino, until none
 * is left (a dying orted may still fork); returns how many were left. */
static int kill_in_netns(ino_t ino)
{
    int left = 0;
    for (int round = 0; round < 50; round++) {
        left = 0;
        DIR *d = opendir("/proc");
        if (!d) return -1;
        struct dirent *e;
        while ((e = readdir(d))) {
            char path[64];
            struct stat st;
            int pid = atoi(e->d_name);
            if (pid <= 0) continue;
            snprintf(path, sizeof path, "/proc/%d/ns/net", pid);
            if (stat(path, &st) == 0 && st.st_ino == ino) {
                kill(pid, SIGKILL);
                left++;
            }
        }
        closedir(d);
        if (!left) return 0;
        usleep(20000);
    }
    return left;
}

/* Kills what runs in the namespace and deletes it; a missing one is fine. */
static void netns_delete(const char *ns)
{
    ino_t ino = netns_inode(ns);
    if (ino) kill_in_netns(ino);
    run_cmd(NULL, 0, "ip netns del %s", ns);
}

static bool pid_alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* Deletes the namespaces, root-namespace veths and hostfiles of earlier
 * runs whose creator is dead (killed with its watchdog); a live creator's
 * are left to it, so concurrent runs (another tree, another sanitizer) do
 * not collide. */
static void clean_leftovers(void)
{
    DIR *d = opendir("/run/netns");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int pid;
        char side;
        if (sscanf(e->d_name, PREFIX "-%d-%c", &pid, &side) == 2 && pid > 0 && !pid_alive(pid)) {
            netns_delete(e->d_name);
        }
    }
    if (d) closedir(d);
    /* A veth is left in the root namespace only by a run killed between
     * making the pair and moving its ends. */
    d = opendir("/sys/class/net");
    while (d && (e = readdir(d))) {
        int pid;
        char side;
        if (sscanf(e->d_name, PREFIX "%d%c", &pid, &side) == 2 && pid > 0 && !pid_alive(pid)) {
            run_cmd(NULL, 0, "ip link del %s", e->d_name);
        }
    }
    if (d) closedir(d);
    d = opendir("/tmp");
    while (d && (e = readdir(d))) {
        int pid;
        char rest[8];
        if (sscanf(e->d_name, PREFIX "-%d-%7s", &pid, rest) == 2 && !strcmp(rest, "hosts") && pid > 0 &&
            !pid_alive(pid)) {
            char path[300];
            snprintf(path, sizeof path, "/tmp/%s", e->d_name);
            unlink(path);
        }
    }
    if (d) closedir(d);
}

/* Deletes h's namespaces (and anything running in them) and its hostfile. */
static void hosts_delete(hosts_t *h)
{
    if (!h->creator) return; /* never made */
    for (int i = 1; i >= 0; i--) {
        if (h->made[i]) netns_delete(h->ns[i]);
        h->made[i] = false;
    }
    run_cmd(NULL, 0, "ip link del %s", h->veth[0]); /* only if it never moved */
    unlink(h->hostfile);
}

/* A process of its own session that deletes h's namespaces once the test
 * process is gone, however it went: the pipe's write end closes with it. */
static pid_t start_watchdog(const hosts_t *h)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        int null = open("/dev/null", O_RDWR);
        for (int fd = 0; fd < 1024; fd++)
            if (fd != p[0] && fd != null) close(fd);
        dup2(null, 0), dup2(null, 1), dup2(null, 2);
        char c;
        while (read(p[0], &c, 1) < 0 && errno == EINTR) continue;
        hosts_t copy = *h;
        copy.made[0] = copy.made[1] = true;
        hosts_delete(&copy);
        _exit(0);
    }
    close(p[0]);
    if (pid < 0) {
        close(p[1]);
        return -1;
    }
    /* p[1] stays open (and close-on-exec) for as long as this process lives. */
    return pid;
}

/* Makes the two hosts; on failure says why in why (0 or -1). */
static int hosts_make(hosts_t *h, char *why, size_t n)
{
    char out[512];
    memset(h, 0, sizeof *h);
    h->creator = getpid();
    for (int i = 0; i < 2; i++) {
        snprintf(h->ns[i], sizeof h->ns[i], PREFIX "-%d-%c", (int)h->creator, 'a' + i);
        snprintf(h->veth[i], sizeof h->veth[i], PREFIX "%d%c", (int)h->creator, 'a' + i);
    }
    snprintf(h->hostfile, sizeof h->hostfile, "/tmp/" PREFIX "-%d-hosts", (int)h->creator);
    h->watchdog = start_watchdog(h);
    if (h->watchdog < 0) return snprintf(why, n, "cannot fork the watchdog: %s", strerror(errno)), -1;
    for (int i = 0; i < 2; i++) {
        if (run_cmd(out, sizeof out, "ip netns add %s", h->ns[i]))
            return snprintf(why, n, "cannot make a network namespace (ip netns add: %s)", out), -1;
        h->made[i] = true;
        h->ino[i] = netns_inode(h->ns[i]);
    }
    if (run_cmd(out, sizeof out, "ip link add %s type veth peer name %s", h->veth[0], h->veth[1]))
        return snprintf(why, n, "cannot make a veth pair (ip link add: %s)", out), -1;
    const char *addr[2] = {ADDR_A "/24", ADDR_B "/24"};
    for (int i = 0; i < 2; i++) {
        if (run_cmd(out, sizeof out,
                    "ip link set %s netns %s && ip -n %s addr add %s dev %s && ip -n %s link set lo up"
                    " && ip -n %s link set %s up",
                    h->veth[i], h->ns[i], h->ns[i], addr[i], h->veth[i], h->ns[i], h->ns[i], h->veth[i]))
            return snprintf(why, n, "cannot set up %s in %s: %s", h->veth[i], h->ns[i], out), -1;
    }
    return 0;
}

static void hosts_up(void)
{
    if (geteuid() != 0)
        cr_skip_test("network namespaces need root (euid %d): the two-host test does not run", (int)geteuid());
    if (access(SUITE, X_OK))
        cr_skip_test("missing package libopenmpi-dev: " SUITE " was not built");
    char out[256], why[600];
    if (run_cmd(out, sizeof out, "mpirun --version") != 0)
        cr_skip_test("missing package openmpi-bin: no mpirun (%s)", out);
    if (run_cmd(out, sizeof out, "ip -V") != 0)
        cr_skip_test("missing package iproute2: no ip command (%s)", out);
    if (run_cmd(out, sizeof out, "unshare --version") != 0)
        cr_skip_test("missing package util-linux: no unshare command (%s)", out);
    clean_leftovers();
    if (hosts_make(&hosts, why, sizeof why)) {
        hosts_delete(&hosts);
        cr_skip_test("%s", why);
    }
}

static void hosts_down(void)
{
    hosts_delete(&hosts);
}

/* A byte counter of h's veth end in host A (tx_bytes, rx_bytes). */
static long long veth_counter(const hosts_t *h, const char *which)
{
    char out[64];
    if (run_cmd(out, sizeof out, "ip netns exec %s cat /sys/class/net/%s/statistics/%s", h->ns[0], h->veth[0],
                which))
        return -1;
    return atoll(out);
}

typedef test_output_t run_t;

/* Runs `mpirun ... -np 3 hosts-agent.sh --rank mpi-suite CASE` inside host
 * A, with slots_a slots on A and 2 on B, filled in rank order (slots_a 2:
 * ranks 0 and 1 on A, 2 on B; slots_a 1: rank 0 on A, 1 and 2 on B), for
 * at most timeout seconds (times the slack), then kills its process group. */
static void run_mpi(run_t *r, const hosts_t *h, int slots_a, const char *c, double timeout)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(h->hostfile, "w");
    cr_assert(f, "%s: %s", h->hostfile, strerror(errno));
    fprintf(f, ADDR_A " slots=%d\n" ADDR_B " slots=2\n", slots_a);
    cr_assert_eq(fclose(f), 0, "%s: %s", h->hostfile, strerror(errno));
    char map[96];
    snprintf(map, sizeof map, "HOSTS_AGENT_NETNS=%s=%s", ADDR_B, h->ns[1]);
    /* Ranks on one host talk over vader, across hosts over tcp; the daemons
     * and the tcp transport are held to the veth's subnet (the transports
     * are on the command line, so no btl for the environment). */
    test_mpi_run(r, NULL, (char *[]){map, NULL},
                 (char *[]){"ip", "netns", "exec", (char *)h->ns[0], "mpirun", "--hostfile",
                            (char *)h->hostfile, "--mca", "plm_rsh_agent", AGENT, "--mca", "btl",
                            "self,vader,tcp", "--mca", "pml", "ob1", "--mca", "btl_tcp_if_include",
                            SUBNET, "--mca", "oob_tcp_if_include", SUBNET, "--bind-to", "none",
                            "--map-by", "slot", "-np", "3", AGENT, "--rank", SUITE, (char *)c, NULL},
                 timeout);
}

/* The namespace inode rank printed ("hosts-agent: rank R netns net:[I] host
 * H"), its host name into host; 0 if it printed none. */
static ino_t rank_netns(const run_t *r, int rank, char *host, size_t n)
{
    char key[48];
    snprintf(key, sizeof key, "hosts-agent: rank %d netns net:[", rank);
    const char *s = strstr(r->out, key);
    if (!s) return 0;
    unsigned long long ino = strtoull(s + strlen(key), NULL, 10);
    const char *hs = strstr(s, "] host ");
    if (host && n) {
        host[0] = '\0';
        if (hs) sscanf(hs + 7, "%31s", host);
    }
    return (ino_t)ino;
}

/* Fails unless rank ran in host side (0 = A, 1 = B). */
static void expect_rank_on(const run_t *r, int rank, int side)
{
    char host[32];
    ino_t ino = rank_netns(r, rank, host, sizeof host);
    cr_assert(ino, "rank %d printed no namespace:\n%s", rank, r->out);
    cr_assert_eq(ino, hosts.ino[side], "rank %d ran in net:[%llu], not in %s (net:[%llu]):\n%s", rank,
                 (unsigned long long)ino, hosts.ns[side], (unsigned long long)hosts.ino[side], r->out);
    if (side == 1) cr_assert_str_eq(host, hosts.ns[1], "rank %d's host name is '%s'", rank, host);
}

static void expect_pass(const run_t *r, const char *c)
{
    char want[64];
    snprintf(want, sizeof want, "PASS %s\n", c);
    cr_assert(!r->timed_out, "mpirun %s timed out after %.1f s:\n%s", c, r->seconds, r->out);
    cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "mpirun %s: status 0x%x:\n%s", c,
              r->status, r->out);
    cr_assert(strstr(r->out, want), "no '%s' line:\n%s", c, r->out);
    cr_assert(!strstr(r->out, "FAIL"), "%s", r->out);
}

TestSuite(mpi_hosts, .init = hosts_up, .fini = hosts_down, .timeout = 60);

/* The hosts are closed: lo and one veth end each, no route out. */
Test(mpi_hosts, each_host_has_only_lo_and_its_veth_end)
{
    for (int i = 0; i < 2; i++) {
        char out[1024];
        cr_assert_eq(run_cmd(out, sizeof out, "ip -n %s -o link show", hosts.ns[i]), 0, "%s", out);
        int links = 0;
        for (const char *s = out; (s = strchr(s, '\n')); s++) links++;
        cr_assert_eq(links + 1, 2, "%s holds other interfaces:\n%s", hosts.ns[i], out);
        cr_assert(strstr(out, ": lo:") && strstr(out, hosts.veth[i]), "%s:\n%s", hosts.ns[i], out);
        cr_assert_eq(run_cmd(out, sizeof out, "ip -n %s route show default", hosts.ns[i]), 0, "%s", out);
        cr_assert_str_eq(out, "", "%s has a default route: %s", hosts.ns[i], out);
    }
    cr_assert_neq(hosts.ino[0], hosts.ino[1]);
}

/* The suite's map, starmap, imap, submit, await, errors, unregistered,
 * bcast and rebcast cases with ranks 0 and 1 on host A and rank 2 on B. */
Test(mpi_hosts, the_suite_passes_with_a_rank_on_the_other_host)
{
    static run_t r;
    long long tx0 = veth_counter(&hosts, "tx_bytes"), rx0 = veth_counter(&hosts, "rx_bytes");
    cr_assert(tx0 >= 0 && rx0 >= 0, "no byte counters on %s", hosts.veth[0]);
    run_mpi(&r, &hosts, 2, "all", 40);
    expect_pass(&r, "all");
    expect_rank_on(&r, 0, 0);
    expect_rank_on(&r, 1, 0);
    expect_rank_on(&r, 2, 1);
    long long tx = veth_counter(&hosts, "tx_bytes") - tx0, rx = veth_counter(&hosts, "rx_bytes") - rx0;
    cr_assert_geq(tx, BCAST_TABLE_BYTES, "only %lld bytes went from A to B over the veth", tx);
    cr_assert_gt(rx, 0, "nothing came back from B over the veth");
    cr_log_info("two hosts: 'all' in %.1f s, %lld bytes A->B, %lld B->A over the veth", r.seconds, tx, rx);
}

/* Which rank takes a job is not fixed (the driver slots share one queue),
 * so the two tests below put both serving ranks on host B. */

/* rank_processes: the job that crashes runs on host B; only its future
 * fails, naming its rank, and a map after it runs whole. */
Test(mpi_hosts, a_job_crashing_on_the_other_host_fails_only_its_future)
{
    static run_t r;
    run_mpi(&r, &hosts, 1, "crash", 40);
    expect_pass(&r, "crash");
    expect_rank_on(&r, 0, 0);
    expect_rank_on(&r, 1, 1);
    expect_rank_on(&r, 2, 1);
    cr_assert(strstr(r.out, "message: rank 1: ") || strstr(r.out, "message: rank 2: "),
              "the crash's message names no serving rank:\n%s", r.out);
}

/* A rank of host B killed by SIGKILL (node loss): Open MPI 4.1's defaults
 * end the whole job, naming the rank and the host; never a hang. */
Test(mpi_hosts, a_rank_killed_on_the_other_host_ends_the_job_naming_it)
{
    static run_t r;
    run_mpi(&r, &hosts, 1, "kill", 40);
    cr_assert(!r.timed_out, "the job hung after a rank was killed (%.1f s):\n%s", r.seconds, r.out);
    expect_rank_on(&r, 1, 1);
    expect_rank_on(&r, 2, 1);
    cr_assert(strstr(r.out, "submitting the killing job"), "%s", r.out);
    cr_assert(!(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0), "mpirun succeeded:\n%s", r.out);
    /* mpirun's own line, not the ranks' "hosts-agent: rank 1 ..." */
    cr_assert((strstr(r.out, "process rank 1 with PID") || strstr(r.out, "process rank 2 with PID")) &&
                  strstr(r.out, "on node " ADDR_B " exited on signal 9"),
              "no rank, host or signal named:\n%s", r.out);
    cr_assert(!strstr(r.out, "PASS") && !strstr(r.out, "went on"), "%s", r.out);
    cr_log_info("two hosts: the job with a killed rank ended in %.1f s", r.seconds);
}

/* The fixture's teardown kills what still runs in the hosts and deletes
 * them. */
Test(mpi_hosts, teardown_kills_what_runs_in_the_hosts_and_deletes_them)
{
    pid_t sleeper = fork();
    cr_assert(sleeper >= 0);
    if (sleeper == 0) {
        execlp("ip", "ip", "netns", "exec", hosts.ns[1], "sleep", "1000", (char *)NULL);
        _exit(127);
    }
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/ns/net", (int)sleeper);
    double end = test_now_s() + 10 * test_slack();
    while (!(stat(path, &st) == 0 && st.st_ino == hosts.ino[1]) && test_now_s() < end) usleep(5000);
    cr_assert_eq(st.st_ino, hosts.ino[1], "the sleeper never entered %s", hosts.ns[1]);
    hosts_delete(&hosts);
    int status;
    cr_assert_eq(waitpid(sleeper, &status, 0), sleeper);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the sleeper: status 0x%x", status);
    for (int i = 0; i < 2; i++) cr_assert_eq(netns_inode(hosts.ns[i]), 0, "%s is still there", hosts.ns[i]);
    char out[256];
    cr_assert_neq(run_cmd(out, sizeof out, "ip link show %s", hosts.veth[0]), 0, "%s", out);
}

/* A test process killed without its fixture (a timeout) leaves nothing:
 * its watchdog deletes the hosts. */
Test(mpi_hosts, a_killed_test_process_leaves_no_hosts)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t child = fork();
    cr_assert(child >= 0);
    if (child == 0) {
        static hosts_t h;
        char why[600];
        int ok = hosts_make(&h, why, sizeof why) == 0;
        if (write(p[1], &h, sizeof h) != sizeof h || !ok) _exit(1);
        raise(SIGKILL);
    }
    close(p[1]);
    hosts_t h;
    ssize_t got = read(p[0], &h, sizeof h);
    close(p[0]);
    int status;
    waitpid(child, &status, 0);
    cr_assert_eq(got, (ssize_t)sizeof h);
    cr_assert(WIFSIGNALED(status), "the child could not make its hosts (status 0x%x)", status);
    double end = test_now_s() + 10 * test_slack();
    while ((netns_inode(h.ns[0]) || netns_inode(h.ns[1])) && test_now_s() < end) usleep(10000);
    cr_assert(!netns_inode(h.ns[0]) && !netns_inode(h.ns[1]), "the watchdog left %s or %s", h.ns[0], h.ns[1]);
}

/* A run killed with its watchdog: the next run deletes what its dead
 * creator left, and leaves the live ones' (this test's own) alone. */
Test(mpi_hosts, leftovers_of_a_dead_run_are_deleted_at_start)
{
    pid_t dead = fork();
    cr_assert(dead >= 0);
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    char ns[32], veth[16], out[512];
    snprintf(ns, sizeof ns, PREFIX "-%d-a", (int)dead);
    snprintf(veth, sizeof veth, PREFIX "%da", (int)dead);
    cr_assert_eq(run_cmd(out, sizeof out, "ip netns add %s", ns), 0, "%s", out);
    cr_assert_eq(run_cmd(out, sizeof out, "ip link add %s type veth peer name %sx", veth, veth), 0, "%s", out);
    /* A concurrent test's sweep may take them first: what counts is that
     * none is left. */
    clean_leftovers();
    bool ns_left = netns_inode(ns) != 0, veth_left = run_cmd(NULL, 0, "ip link show %s", veth) == 0;
    if (ns_left) netns_delete(ns);
    if (veth_left) run_cmd(NULL, 0, "ip link del %s", veth);
    cr_assert(!ns_left && !veth_left, "left: namespace %d, veth %d", ns_left, veth_left);
    cr_assert(netns_inode(hosts.ns[0]) && netns_inode(hosts.ns[1]), "the live run's hosts were deleted");
}
