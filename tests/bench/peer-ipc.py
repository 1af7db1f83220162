"""Python baselines for bench-ipc: multiprocessing.Queue throughput for
64-byte messages between two processes, multiprocessing.Lock cost, and a
multiprocessing.Pipe round trip.  Run from the source root by bench-ipc as
`python3 tests/bench/peer-ipc.py MODE N`; prints one number."""
import multiprocessing as mp
import sys
import time


def consume(q, n):
    for _ in range(n):
        q.get()


def queue_rate(n):
    q = mp.Queue(maxsize=1024)
    msg = b"x" * 64
    p = mp.Process(target=consume, args=(q, n))
    p.start()
    t0 = time.perf_counter()
    for _ in range(n):
        q.put(msg)
    p.join()
    return n / (time.perf_counter() - t0)  # messages per second


def lock_ns(n):
    lock = mp.Lock()
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - t0) / n * 1e9  # ns per acquire+release


def echo(conn, n):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def pipe_rtt_us(n):
    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b, n))
    p.start()
    msg = b"x" * 64
    t0 = time.perf_counter()
    for _ in range(n):
        a.send_bytes(msg)
        a.recv_bytes()
    dt = time.perf_counter() - t0
    p.join()
    return dt / n * 1e6  # microseconds per round trip


if __name__ == "__main__":
    mode, n = sys.argv[1], int(sys.argv[2])
    fn = {"queue": queue_rate, "lock": lock_ns, "pipe": pipe_rtt_us}[mode]
    print(f"{fn(n):.3f}")
