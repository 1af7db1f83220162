#!/usr/bin/python3
"""The lab's own Python for the lab demo's workloads, serial and with
multiprocessing.Pool, as the baseline for tests/bench/bench-lab.c.

Usage: peer-lab.py [--scale-busy F] [--heavy-n N] [--chunk-n N] [--workers-tasks N] WORKLOAD...
Prints one JSON object a line: {"workload", "serial", "pool", "workers",
"size", "answer"}.  Seconds exclude starting the pool, as the C lab's do.
The data are the notebooks' (numpy's legacy generator: seed 42 for
normalize, RandomState(100) for howmany, RandomState(SEED).random_sample for
heavy), as the C lab draws them, so the answers can be compared; factors keep
the C lab's splitmix64 numbers (no notebook counterpart)."""
import json
import math
import multiprocessing as mp
import sys
import time

import numpy as np

SEED = 20240917
MASK = (1 << 64) - 1


def splitmix(state):
    """Yields the C lab's lab_rand() sequence for a seed."""
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        yield z ^ (z >> 31)


# --- the lab's functions --------------------------------------------------
def howmany_within_range(row, minimum=4, maximum=8):
    count = 0
    for n in row:
        if minimum <= n <= maximum:
            count = count + 1
    return count


def common_items(a, b):
    return sorted(set(a).intersection(b))


def busy(seconds):
    time.sleep(seconds)
    return seconds


def normalize(row):
    lo, hi = min(row), max(row)
    span = hi - lo
    return [(x - lo) / span if span > 0 else 0.0 for x in row]


def is_prime(n):
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


def count_primes(lo_hi):
    lo, hi = lo_hi
    return sum(1 for n in range(lo, hi) if is_prime(n))


def factorize(n):
    out = []
    while n % 2 == 0:
        out.append(2)
        n //= 2
    d = 3
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 2
    if n > 1:
        out.append(n)
    return out


def sum_square(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def heavy(x):
    """The lecture's heavy computation: three rounds, then the sum."""
    for _ in range(3):
        x = (np.sin(x) + np.cos(x)) ** (x * x)
    return float(np.sum(x))


def square(x):
    return x * x


def spin(prime):
    d, k = 3, 0
    while d * d <= prime:
        if prime % d == 0:
            break
        d += 2
        k += 1
    return k


# --- timing -----------------------------------------------------------------
def timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def run(name, serial, parallel, workers, size, check=None):
    ts, rs = timed(serial)
    with mp.Pool(workers) as pool:
        tp, rp = timed(lambda: parallel(pool))
    if check is not None:
        rs, rp = check(rs), check(rp)
    if rs != rp:
        raise SystemExit(f"{name}: serial and pool disagree")
    print(json.dumps({"workload": name, "serial": ts, "pool": tp, "workers": workers,
                      "size": size, "answer": rs}), flush=True)


def main():
    args = sys.argv[1:]
    opts = {"--scale-busy": 1.0, "--heavy-n": 10_000_000, "--chunk-n": 10_000, "--workers-tasks": 60}
    names = []
    while args:
        a = args.pop(0)
        if a in opts:
            opts[a] = type(opts[a])(args.pop(0))
        else:
            names.append(a)
    cpus = mp.cpu_count()

    for name in names:
        if name == "howmany":
            rows = np.random.RandomState(100).randint(0, 10, size=[1_000_000, 5]).tolist()
            run(name, lambda: [howmany_within_range(r) for r in rows],
                lambda p: p.map(howmany_within_range, rows), cpus, "1000000x5", check=sum)
        elif name == "common":
            a = [[1, 2, 3], [5, 6, 7, 8], [10, 11, 12], [20, 21]]
            b = [[2, 3, 4, 5], [6, 9, 10], [11, 12, 13, 14], [21, 24, 25]]
            run(name, lambda: [common_items(x, y) for x, y in zip(a, b)],
                lambda p: [p.apply(common_items, (x, y)) for x, y in zip(a, b)], cpus, "4 rows")
        elif name == "busywork":
            s = opts["--scale-busy"]
            tasks = [1 * s, 2 * s, 4 * s, 6 * s]
            run(name, lambda: [busy(t) for t in tasks], lambda p: p.map(busy, tasks, chunksize=1), 4,
                f"1,2,4,6 s x {s}, pool of 4", check=len)
        elif name == "normalize":
            rows_n, cols = 50_000, 100  # the lab's XL size, fourth from seed 42's stream
            np.random.seed(42)
            for shape in ((100, 50), (1000, 50), (10000, 50)):
                np.random.randint(0, 1000, size=shape)
            data = np.random.randint(0, 1000, size=(rows_n, cols)).astype(np.float64).tolist()
            chunk = -(-rows_n // (4 * cpus))
            run(name, lambda: [normalize(r) for r in data],
                lambda p: p.map(normalize, data, chunksize=chunk), cpus, "XL 50000x100",
                check=lambda r: round(sum(map(sum, r)), 6))
        elif name == "primes":
            ranges = [(lo, lo + 1000) for lo in range(0, 100_000, 1000)]
            run(name, lambda: sum(count_primes(r) for r in ranges),
                lambda p: sum(p.map(count_primes, ranges, chunksize=1)), cpus, "below 100000")
        elif name == "factors":
            g = splitmix(SEED)
            nums = [10_000_000_000 + next(g) % 990_000_000_001 for _ in range(100)]
            nums[0] = 999_999_999_989
            nums[50] = 999_999_999_959
            run(name, lambda: [factorize(n) for n in nums],
                lambda p: p.map(factorize, nums, chunksize=1), cpus, "100 numbers",
                check=lambda r: sum(len(f) for f in r))
        elif name == "sumsq":
            run(name, lambda: [sum_square(1_000_000) for _ in range(8)],
                lambda p: p.map(sum_square, [1_000_000] * 8, chunksize=1), cpus, "8 x 1000000",
                check=lambda r: r[0])
        elif name == "heavy":
            n = opts["--heavy-n"]
            x = np.random.RandomState(SEED).random_sample(n)
            chunks = np.array_split(x, 4)
            run(name, lambda: sum(heavy(c) for c in chunks),
                lambda p: sum(p.map(heavy, chunks, chunksize=1)), cpus,
                f"{n} doubles, 3 rounds in 4 chunks", check=lambda r: round(r, 3))
        elif name.startswith("chunks"):
            cs = int(name.split("=")[1]) if "=" in name else 1
            n = opts["--chunk-n"]
            items = list(range(n))
            run(name, lambda: [square(x) for x in items],
                lambda p: p.map(square, items, chunksize=cs), cpus, f"{n} items, chunksize {cs}",
                check=sum)
        elif name == "workers":
            tasks = [999_999_999_989] * opts["--workers-tasks"]
            run(name, lambda: [spin(t) for t in tasks], lambda p: p.map(spin, tasks, chunksize=1), cpus,
                f"{len(tasks)} tasks", check=sum)
        else:
            raise SystemExit(f"peer-lab.py: unknown workload {name}")


if __name__ == "__main__":
    main()
