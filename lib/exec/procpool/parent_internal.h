/* The process pool's parent-side state, shared by procpool.c (jobs, heap,
 * lifecycle), shm_heap.c (the shared heap), supervisor.c (the supervisor
 * thread), deliver.c (a finished job's checks and done) and server_watch.c
 * (the fork server's end and its messages).  PRIVATE. */
#ifndef ASYNC_PROCPOOL_PARENT_INTERNAL_H
#define ASYNC_PROCPOOL_PARENT_INTERNAL_H

#include <assert.h>
#include "shm_internal.h"

/* The parent's own record of the job in each slot.  What it knows here it
 * never reads back from the slot, which any worker may have overwritten. */
typedef struct pp_job {
    async__procpool_done_fn done;
    void *arg;
    uint64_t seq;            /* the job's id; 0 while the slot is free */
    uint64_t in_blk, out_blk; /* heap blocks to free with the slot */
    uint64_t out_cap;        /* the result's capacity, inline or in out_blk */
    uint8_t in_k, out_k;     /* the blocks' size classes: their headers are in the region */
    bool grace;              /* its deadline was put off once (supervisor.c's expire) */
    uint32_t batch;          /* the call_n generation of a chunk, 0: none */
    int zombie_of;           /* revoked from this worker: free the slot when it is reaped */
    _Atomic uint32_t *waiter; /* async__procpool_call's flag: set once done has run */
    /* 0 from placing until one thread takes the right to run done (claim,
     * an exchange): the slot's state word only says which way the job went,
     * and a worker that writes it where it should not must not make a done
     * run twice, nor for a free slot (1 then). */
    _Atomic uint32_t fin;
} pp_job_t;

typedef struct pp_pending {
    struct pp_pending *next;
    async__procjob_t job;
    uint64_t seq;
    char in[];
} pp_pending_t;

/* The shared heap's bookkeeping (shm_heap.c), private to the parent: a
 * stack of free block offsets a size class, and the table of the blocks
 * async__procpool_shm_alloc handed out (usable offset -> class). */
typedef struct pp_free_stack {
    uint64_t *off;
    size_t n, cap;
} pp_free_stack_t;
typedef struct pp_heap_entry {
    uint64_t uoff; /* 0: empty */
    uint8_t k;
} pp_heap_entry_t;
typedef struct pp_heap {
    uint64_t top;  /* the first byte never handed out */
    pp_free_stack_t free[64];
    pp_heap_entry_t *table;
    size_t tn, tcap;
    uint64_t overwritten; /* blocks freed whose canary was overwritten (and reused) */
} pp_heap_t;

typedef struct pp_deadline {
    int64_t t;
    uint32_t idx;
    uint64_t seq;
} pp_deadline_t;

typedef struct pp_pworker {
    pid_t pid;
    bool alive, spawning, ready;
    unsigned early_deaths;   /* deaths in a row before reporting ready */
    int64_t retry_at;        /* when to fork again (a failed fork, a restart
                                held back after early deaths); 0: no */
    uint64_t done_head;      /* its done ring's head: ours, not the region's */
    pid_t kill_owed;         /* a KILL for this pid waits for room on the socket */
    bool spawn_owed;         /* so does a SPAWN */
    /* Set when the parent found this worker's ring or results corrupt and
     * killed it: its ring is read no more, and the jobs it held fail with
     * this. */
    char corrupt[200];
} pp_pworker_t;

enum { PP_OPEN, PP_DRAIN, PP_KILL };

struct async__procpool {
    pp_shm_t *h;
    pp_view_t v;             /* the layout, private (shm_internal.h) */
    uint64_t q_tail;         /* the submit ring's tail, under mu: ours to trust */
    int sock;
    pid_t server;
    int server_pidfd;        /* -1: none (a kernel before 5.3) */
    int64_t server_heard;    /* when the fork server last said something */
    /* The liveness check (supervisor.c): when the unanswered PING went
     * (0: none, or answered by another message meanwhile), and whether a
     * PONG is owed (at most one PING is out). */
    int64_t ping_at;
    bool ping_out;
    /* The server's CPU time (ns) at the first look at it after the answer
     * to the ping of ping_cpu_at (the ping_at it was taken for) was due: a
     * server that used little since, and is runnable, is starved, not
     * wedged (server_watch.c). */
    int64_t ping_cpu, ping_cpu_at;
    unsigned starved;        /* answer waits extended: the server was runnable and starved */
    int64_t last_turn;       /* the supervisor's previous turn: a long gap means it was held */
    /* The spare fork server, a clone of the fork server that is our child
     * (worker.c's serve): it takes over when the server stops answering.
     * spare_sock -1: none; spare_asked: its SPARE went, no SPARED yet. */
    int spare_sock, spare_pidfd;
    pid_t spare_pid;
    bool spare_asked;
    int64_t spare_retry_at;
    /* While spare_asked: the spare is taken on its own word only (its
     * PP_MSG_SELF on spare_sock, which the kernel stamps with its sender's
     * pid), spare_self once it came (0: not yet), and in the running pool
     * only once the server's SPARED named that pid too: the reports since
     * the request are claims (the latest PP_SPARE_CLAIMS, 0: none), the
     * first of them at spare_claimed_at.  spare_mute: the socket of a spare
     * reported but silent for PP_SPARE_SELF_NS, kept in case it speaks
     * later, so that it is reaped then (-1: none). */
    pid_t spare_self;
    pid_t spare_claim[4];
    int64_t spare_claimed_at;
    int spare_mute;
    unsigned replaced;       /* fork servers replaced by their spare */
    /* While the workers of a replaced server are accounted for: why they
     * died, for the jobs they ran. */
    const char *replacing;
    unsigned nowed;          /* messages waiting for room on the socket */
    pthread_t sup;
    bool sup_started, sup_joined, locks_ready;
    pthread_mutex_t join_mu;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    /* Under mu. */
    uint32_t *free_slots;
    uint32_t nfree;
    pp_job_t *jobs;
    pp_pending_t *pending_head, *pending_tail;
    size_t pending_dl;       /* pending jobs with a deadline */
    uint64_t inflight, next_seq;
    pp_heap_t heap;
    pp_deadline_t *dl;
    size_t ndl, dl_cap;
    int mode;
    bool killing, retired_all, server_gone, server_reaped, done;
    bool server_known;       /* once reaped: server_status is its wait status */
    int server_status;
    int64_t closing_at;      /* when the pool began waiting for its workers' exits */
    int64_t requeue_at;      /* the supervisor's next look for lost ring entries */
    int broken;
    bool notify_broken;
    void (*on_broken)(void *arg, int code, const char *msg);
    void *broken_arg;
    void *user;
    /* Under mu: async__procpool_call_n's batch (shm_internal.h): one at a
     * time, its generation, and what async__pp_place writes in the slot's
     * batch field (0 outside call_n). */
    bool batch_busy;
    uint32_t batch_gen, placing_batch;
    int64_t call_spin_ns;    /* see async__procpool_opts_t */
    _Atomic int64_t call_wait_ns; /* recent direct calls' waits for the hand-over */
    char broken_msg[512];
    unsigned nworkers, nready, nalive;
    pp_pworker_t *w;
    _Atomic uint64_t spawned;
};

static inline size_t pp_round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* The shared heap (shm_heap.c), under mu.  The size class of a block for n
 * usable bytes, or 0 if there is none. */
unsigned async__pp_heap_class(size_t n);
/* A block for n bytes (zeroed if zero): the offset of its usable bytes in
 * the region, or 0 when the heap is full. */
uint64_t async__pp_heap_alloc(async__procpool_t *p, size_t n, bool zero);
/* Frees the block at uoff (0: nothing) of class k, both from the parent's
 * own records, whatever its header says: a block whose canary a work
 * function overwrote is counted (heap.overwritten) and reused, its header
 * written again when it is handed out.  No memory to grow the free list
 * leaks the block. */
void async__pp_heap_free_class(async__procpool_t *p, uint64_t uoff, unsigned k);
/* Frees the heap's private bookkeeping (not the region). */
void async__pp_heap_release(pp_heap_t *hp);
int async__pp_place(async__procpool_t *p, const async__procjob_t *job, uint64_t seq,
                    _Atomic uint32_t *waiter, uint32_t *idx_out);

/* Runs the done callback of the finished job in slot idx, which worker w
 * ran (not under mu).  Every field the worker wrote is checked first; a job
 * whose result, length or error the region no longer holds sanely fails
 * with ASYNC_EIO and a message that says what was wrong. */
void async__pp_deliver(async__procpool_t *p, uint32_t idx, unsigned w);
/* Worker w died: wakes the waiter of slot idx, whose job w handed over
 * but did not wake yet, which would otherwise sleep for ever. */
void async__pp_wake_handed(async__procpool_t *p, uint32_t idx);
/* Gives worker w's result area back up to res_end (0: nothing), and wakes
 * the worker if it waits for room there. */
void async__pp_release_results(async__procpool_t *p, unsigned w, uint64_t res_end);
/* Takes the right to run the done of the job in slot idx: true once, for
 * the first caller after placing. */
static inline bool async__pp_claim(async__procpool_t *p, uint32_t idx)
{
    return atomic_exchange(&p->jobs[idx].fin, 1) == 0;
}
/* After a job's done ran anywhere but in its async__procpool_call waiter:
 * tells the waiter (if any) and wakes it.  Never touches *waiter after the
 * store: the waiter may return at once. */
void async__pp_wake_waiter(async__procpool_t *p, uint32_t idx, _Atomic uint32_t *waiter);
void async__pp_slot_free(async__procpool_t *p, uint32_t idx);
/* Under mu: the submit ring's head, which workers advance; one outside
 * [q_tail - ring_cap, q_tail] was overwritten and is put back (and the
 * workers woken to rescan), so that no garbage stalls the ring. */
uint64_t async__pp_q_head(async__procpool_t *p);
void async__pp_job_finished(async__procpool_t *p);
/* Returns whether the job was left to the worker spinning for one (no wake-up). */
bool async__pp_wake_workers(pp_shm_t *h, int n);
void async__pp_deadline_pop(async__procpool_t *p);
/* Under mu, right after a pop (which leaves the room): cannot fail. */
void async__pp_deadline_push(async__procpool_t *p, int64_t t, uint32_t idx, uint64_t seq);
/* Under mu: a job left the pending list. */
static inline void async__pp_unpend(async__procpool_t *p, const pp_pending_t *pj)
{
    if (pj->job.deadline != ASYNC_FOREVER) p->pending_dl--;
}
void async__pp_poke(async__procpool_t *p);
void async__procpool_free_now(async__procpool_t *p);
int async__pp_start_supervisor(async__procpool_t *p);
void async__pp_join_supervisor(async__procpool_t *p);
/* Reaps the fork server, waiting up to patience for it to exit by itself,
 * then killing it (through its pidfd, which cannot reach a stranger once
 * another waiter has reaped it).  Returns whether its wait status is known
 * (*status, OUT), which another waiter (SIGCHLD set to SIG_IGN, libev's
 * default loop) may have taken: the pidfd still tells it on Linux 6.15+.
 * *killed (OUT, may be NULL) says whether it was still alive at the end of
 * its patience.  Not under mu; idempotent. */
bool async__pp_reap_server(async__procpool_t *p, int64_t patience, int *status, bool *killed);
/* The fork server's liveness and its spare (server_watch.c), all on the
 * supervisor thread.  After PP_PING_IDLE_NS without a word from the server
 * the supervisor pings it; one that says nothing for PP_SERVER_ANSWER_NS
 * more is stopped or wedged.  A turn of the supervisor that comes more
 * than PP_TURN_GAP_NS after the last (it was held in a done callback, or
 * the whole process was stopped) restarts that wait. */
#define PP_PING_IDLE_NS ASYNC_SEC(1)
#define PP_SERVER_ANSWER_NS ASYNC_SEC(3)
/* A silent server that is runnable (state R or D) and used less CPU time
 * than this since its answer was due is starved (a loaded machine, a low
 * priority), and is waited for; one that used more without answering (a
 * ping costs microseconds) is wedged in a loop. */
#define PP_SERVER_BUSY_NS ASYNC_SEC(1)
#define PP_TURN_GAP_NS ASYNC_SEC(1)
#define PP_SPARE_RETRY_NS ASYNC_SEC(1)
/* How long free waits for a spare's own word when its server died before
 * reporting it (the socket's end comes at once when there is none). */
#define PP_SPARE_SELF_NS ASYNC_SEC(2)
#define PP_SPARE_CLAIMS 4
/* Asks the server for a spare if there is none (and no request is out). */
void async__pp_ask_spare(async__procpool_t *p, int64_t now);
/* The server's SPARED report (checked already): with an error the request
 * is over (another is made later); else pid is only the server's claim,
 * taken for the spare once the spare's own word (PP_MSG_SELF on
 * spare_sock, sent by that very pid, says the kernel) names it too.  Then
 * the spare is known once its pidfd is open, waitid through that pidfd
 * says it is our child and its end of spare_sock is still open: a pid that
 * names no child of ours by then, or whose spare's socket has ended (the
 * spare died and, SIGCHLD ignored, its pid went to another process) is
 * dropped, and another spare asked for later.  A claim that no word
 * matches (a report naming another child of ours) is never acted on. */
void async__pp_on_spared(async__procpool_t *p, pid_t pid, int err);
/* Reaps a spare that died, so that another is asked for; kills and reaps
 * one that is stopped (SIGSTOP, a debugger: state T or t, or a stop report
 * that waitid shows without taking it), which could not take over.  While
 * a spare is asked for, reads its word; one reported and silent (no word)
 * for PP_SPARE_SELF_NS is given up on (its socket kept as spare_mute: should it
 * speak later, it is killed and reaped then), and another asked for. */
void async__pp_check_spare(async__procpool_t *p, int64_t now);
/* Pings the server when due; returns whether it has been silent too long:
 * PP_SERVER_ANSWER_NS after the ping, and stopped (state T or t in
 * /proc/PID/stat), asleep without answering (wedged), or runnable after
 * PP_SERVER_BUSY_NS of CPU time since the answer was due (wedged in a
 * loop); /proc is read only once the answer is due.
 * A silent server that is runnable and starved of CPU is not given up on:
 * it is looked at again on the next turn (p->starved counts these).
 * want: the pool wants workers (else nothing is checked). */
bool async__pp_server_silent(async__procpool_t *p, int64_t now, bool want);
/* Kills and reaps the server and makes its spare the server: its socket,
 * pid and pidfd; messages owed to the old one are dropped.  Returns the new
 * server's pid, or 0 (and does nothing) when no spare is ready.  A spare
 * asked for whose server has not reported it (or reported another pid) is
 * ready when its own first word (PP_MSG_SELF, sent by that pid) is in its
 * socket.  The caller accounts for the old
 * server's workers, which died with it. */
pid_t async__pp_take_over(async__procpool_t *p);
/* For free, after the server is reaped: takes a spare asked for on its own
 * word (waiting up to PP_SPARE_SELF_NS; the socket's end comes at once when
 * none was made), never on a report, and a spare given up on if it speaks
 * within as long; then tells the spare to quit, kills and reaps it. */
void async__pp_free_spare(async__procpool_t *p);
/* What is wrong with message m from the fork server, written into buf (cap
 * bytes), or NULL when it is sound: one of the two types it sends, about a
 * worker that exists, in the order the protocol allows (SPAWNED answers our
 * SPAWN, EXITED follows SPAWNED for that very pid), naming only its own
 * children.  Under mu. */
const char *async__pp_bad_server_message(async__procpool_t *p, const pp_msg_t *m, char *buf,
                                         size_t cap);

#endif
