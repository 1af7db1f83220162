"""asyncio figures for bench-tasks: the same measurements in the labs' Python.

Prints `name value` lines that bench-tasks.c reads and re-prints beside its own.
"""
import asyncio
import resource
import sys
import time


async def trivial():
    return None


async def spawn_complete(n):
    t0 = time.perf_counter()
    batch = 1000
    for _ in range(n // batch):
        await asyncio.gather(*[asyncio.create_task(trivial()) for _ in range(batch)])
    return (time.perf_counter() - t0) / n


async def yield_round_trip(n):
    async def spinner():
        for _ in range(n):
            await asyncio.sleep(0)
    t0 = time.perf_counter()
    await asyncio.gather(spinner(), spinner())
    return (time.perf_counter() - t0) / n


async def queue_ping_pong(n):
    ping, pong = asyncio.Queue(1), asyncio.Queue(1)

    async def echo():
        for _ in range(n):
            await pong.put(await ping.get())
    t0 = time.perf_counter()
    e = asyncio.create_task(echo())
    for i in range(n):
        await ping.put(i)
        await pong.get()
    await e
    return (time.perf_counter() - t0) / n


async def many_sleepers(n, nap):
    t0 = time.perf_counter()
    await asyncio.gather(*[asyncio.sleep(nap) for _ in range(n)])
    return time.perf_counter() - t0


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    print("spawn_complete_ns", asyncio.run(spawn_complete(int(200000 * scale))) * 1e9)
    print("yield_round_trip_ns", asyncio.run(yield_round_trip(int(200000 * scale))) * 1e9)
    print("chan_ping_pong_ns", asyncio.run(queue_ping_pong(int(100000 * scale))) * 1e9)
    print("sleepers_100k_s", asyncio.run(many_sleepers(100000, 0.01)))
    print("sleepers_100k_rss_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


main()
