#!/usr/bin/env python3
"""The lab's Python brewery counting, as a baseline for bench-http.

Counts the breweries of each state through the Open Brewery DB API the way
the lab's brewery-serial and brewery-async programs do: requests.get page by
page (per_page=200, until a short or empty page or a non-200), serially, and
"async" as asyncio running the blocking requests in its default thread pool
(loop.run_in_executor).  Prints one figure per line:

    python-serial: S s
    python-async: S s
    python-counts: state=N,...

Uses the requests package when installed, else urllib from the standard
library (same blocking calls, one connection per request either way).
"""
import argparse
import asyncio
import json
import time

try:
    import requests

    def get_json(url, params):
        r = requests.get(url, params=params, timeout=30)
        return r.status_code, (r.json() if r.status_code == 200 else None)

    CLIENT = "requests"
except ImportError:  # pragma: no cover - depends on the machine
    import urllib.error
    import urllib.parse
    import urllib.request

    def get_json(url, params):
        full = url + "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(full, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, None

    CLIENT = "urllib"

PER_PAGE = 200
ALL_STATES = (
    "alabama alaska arizona arkansas california colorado connecticut delaware "
    "district_of_columbia florida georgia hawaii idaho illinois indiana iowa kansas "
    "kentucky louisiana maine maryland massachusetts michigan minnesota mississippi "
    "missouri montana nebraska nevada new_hampshire new_jersey new_mexico new_york "
    "north_carolina north_dakota ohio oklahoma oregon pennsylvania rhode_island "
    "south_carolina south_dakota tennessee texas utah vermont virginia washington "
    "west_virginia wisconsin wyoming").split()


def count_state(base, state):
    total, page = 0, 1
    while True:
        status, body = get_json(base + "/breweries",
                                {"by_state": state, "per_page": PER_PAGE, "page": page})
        if status != 200:
            return total
        total += len(body)
        if len(body) < PER_PAGE:
            return total
        page += 1


def serial(base, states):
    return {s: count_state(base, s) for s in states}


async def run_async(base, states):
    loop = asyncio.get_running_loop()
    futures = [loop.run_in_executor(None, count_state, base, s) for s in states]
    counts = await asyncio.gather(*futures)
    return dict(zip(states, counts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--states", default="district_of_columbia,maryland,new_york,virginia")
    ap.add_argument("--mode", default="serial,async")
    args = ap.parse_args()
    states = ALL_STATES if args.states == "all" else args.states.split(",")
    modes = args.mode.split(",")
    counts = None
    if "serial" in modes:
        t0 = time.perf_counter()
        counts = serial(args.base_url, states)
        print(f"python-serial: {time.perf_counter() - t0:.3f} s")
    if "async" in modes:
        t0 = time.perf_counter()
        counts = asyncio.run(run_async(args.base_url, states))
        print(f"python-async: {time.perf_counter() - t0:.3f} s")
    print("python-client: " + CLIENT)
    if counts:
        print("python-counts: " + ",".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
