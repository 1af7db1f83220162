"""multiprocessing figures for bench-procs: the labs' Python, measured in the
same run as the C figures.

Prints `name value` lines that bench-procs.c reads and re-prints beside its
own.  --no-busy skips the 6-second busy-work figure; --full adds the chunk
size 1 sweep point (about 10 s or more here); --killed adds a bounded run of
Pool.map in which one task's worker is SIGKILLed, and reports how long map
took to return, or 10 if it had not returned after 10 s.
"""
import os
import signal
import multiprocessing as mp
import random
import sys
import time


def square(x):
    return x * x


def nothing(x):
    return x


def howmany_within_range(row, minimum=4, maximum=8):
    count = 0
    for n in row:
        if minimum <= n <= maximum:
            count = count + 1
    return count


def busy(seconds):
    time.sleep(seconds)
    return seconds


def die_on_three(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def killed_worker_map(limit=10.0):
    """Seconds until Pool(2).map returned after a worker was killed, capped at limit."""
    pool = mp.Pool(2)
    try:
        t0 = time.perf_counter()
        result = pool.map_async(die_on_three, range(8), chunksize=1)
        try:
            result.get(timeout=limit)
        except mp.TimeoutError:
            return limit
        return time.perf_counter() - t0
    finally:
        pool.terminate()
        pool.join()


def echo(conn):
    while True:
        msg = conn.recv()
        if msg is None:
            break
        conn.send(msg)


def main():
    out = sys.stdout
    full = "--full" in sys.argv
    with mp.Pool(2) as pool:
        pool.map(nothing, range(100))
        n = 20000
        t0 = time.perf_counter()
        results = [pool.apply_async(nothing, (i,)) for i in range(n)]
        for r in results:
            r.get()
        print("apply_async_us", (time.perf_counter() - t0) / n * 1e6, file=out, flush=True)
        n = 2000
        t0 = time.perf_counter()
        for i in range(n):
            pool.apply_async(nothing, (i,)).get()
        print("apply_get_us", (time.perf_counter() - t0) / n * 1e6, file=out, flush=True)
        for chunk in ([1] if full else []) + [10, 100, 1000, 10000]:
            t0 = time.perf_counter()
            pool.map(square, range(100000), chunksize=chunk)
            print("chunk_%d_s" % chunk, time.perf_counter() - t0, file=out, flush=True)
        random.seed(1)
        rows = [[random.randint(0, 9) for _ in range(5)] for _ in range(1000000)]
        t0 = time.perf_counter()
        serial = [howmany_within_range(row) for row in rows]
        print("howmany_serial_s", time.perf_counter() - t0, file=out, flush=True)
        t0 = time.perf_counter()
        pooled = pool.map(howmany_within_range, rows)
        print("howmany_pool_s", time.perf_counter() - t0, file=out, flush=True)
        assert serial == pooled

    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b,))
    p.start()
    n = 5000
    t0 = time.perf_counter()
    for i in range(n):
        a.send(i)
        a.recv()
    print("mp_pipe_us", (time.perf_counter() - t0) / n * 1e6, file=out, flush=True)
    a.send(None)
    p.join()

    if "--no-busy" not in sys.argv:
        with mp.Pool(4) as pool:
            t0 = time.perf_counter()
            pool.map(busy, [1, 2, 4, 6])
            print("busy_s", time.perf_counter() - t0, file=out, flush=True)

    if "--killed" in sys.argv:
        print("pool_killed_map_s", killed_worker_map(), file=out, flush=True)

    for workers in (2, 16):
        t0 = time.perf_counter()
        with mp.Pool(workers) as pool:
            pool.map(nothing, range(workers), chunksize=1)
            print("pool_start_%d_s" % workers, time.perf_counter() - t0, file=out, flush=True)


if __name__ == "__main__":
    main()
