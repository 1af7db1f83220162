"""Python figures for bench-executor: the labs' concurrent.futures and
multiprocessing code on the same jobs.

Prints `name value` lines that bench-executor.c reads and re-prints beside its
own.  Sizes are smaller than the C ones where the full size would take too
long; the C side says so in its output.
"""
import concurrent.futures as cf
import multiprocessing as mp
import random
import time


def trivial(x):
    return 0


def tpe_overhead(n=50_000):
    with cf.ThreadPoolExecutor(max_workers=2) as ex:
        t0 = time.perf_counter()
        fs = [ex.submit(trivial, 1) for _ in range(n)]
        cf.wait(fs)
        return (time.perf_counter() - t0) / n


def tpe_round_trip(n=5_000):
    with cf.ThreadPoolExecutor(max_workers=2) as ex:
        t0 = time.perf_counter()
        for _ in range(n):
            ex.submit(trivial, 1).result()
        return (time.perf_counter() - t0) / n


def howmany_within_range(row, minimum=4, maximum=8):
    count = 0
    for n in row:
        if minimum <= n <= maximum:
            count += 1
    return count


def squares(n):
    return sum(i * i for i in range(n))


def sleeper(_):
    time.sleep(0.1)


def main():
    print("tpe_overhead_us", tpe_overhead() * 1e6)
    print("tpe_round_trip_us", tpe_round_trip() * 1e6)

    rows_n = 200_000
    random.seed(1)
    rows = [[random.randrange(10) for _ in range(5)] for _ in range(rows_n)]
    print("howmany_rows", rows_n)
    t0 = time.perf_counter()
    serial = [howmany_within_range(r) for r in rows]
    print("howmany_serial_s", time.perf_counter() - t0)
    with mp.Pool(2) as pool:
        t0 = time.perf_counter()
        pooled = pool.map(howmany_within_range, rows)
        print("howmany_pool_s", time.perf_counter() - t0)
    assert serial == pooled

    ns = [1_000_000] * 8
    t0 = time.perf_counter()
    s = [squares(n) for n in ns]
    print("squares_serial_s", time.perf_counter() - t0)
    with mp.Pool(2) as pool:
        t0 = time.perf_counter()
        p = pool.map(squares, ns)
        print("squares_pool_s", time.perf_counter() - t0)
    assert s == p

    with cf.ThreadPoolExecutor(max_workers=4) as ex:
        t0 = time.perf_counter()
        list(ex.map(sleeper, range(20)))
        print("sleep_tpe_s", time.perf_counter() - t0)


if __name__ == "__main__":
    main()
