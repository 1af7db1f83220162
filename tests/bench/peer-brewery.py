#!/usr/bin/env python3
"""The lab's Python brewery counting, as a baseline for bench-http.

Counts the breweries of each state through the Open Brewery DB API the way
the lab's brewery-serial and brewery-async programs do: requests.get page by
page (per_page=200, until a short or empty page), serially, and "async" as
asyncio running the blocking requests in its default thread pool
(loop.run_in_executor).  Prints one figure per line:

    python-serial: S s
    python-async: S s
    python-client: requests
    python-counts: state=N,...
    python-failed: state=why,...     (only when a state failed)

Unlike the lab's programs, a state whose page fails (a non-200 answer, a
body that is not a JSON array, a full page repeating an earlier one, or more
than 500 full pages) is reported as failed rather than counted short, and
the exit status is then 1: a benchmark figure from a short count is not one.
tests/test-brewery-client-peer.c runs this against brewery-server and checks its
counts against the brewery demo's and the CSV's.

Uses the requests package when installed (python3-requests), else urllib
from the standard library (same blocking calls, one connection per request
either way); --require-requests refuses the fallback.
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
MAX_PAGES = 500  # as the demo's CLIENT_MAX_PAGES
ALL_STATES = (
    "alabama alaska arizona arkansas california colorado connecticut delaware "
    "district_of_columbia florida georgia hawaii idaho illinois indiana iowa kansas "
    "kentucky louisiana maine maryland massachusetts michigan minnesota mississippi "
    "missouri montana nebraska nevada new_hampshire new_jersey new_mexico new_york "
    "north_carolina north_dakota ohio oklahoma oregon pennsylvania rhode_island "
    "south_carolina south_dakota tennessee texas utah vermont virginia washington "
    "west_virginia wisconsin wyoming").split()


class Failed(Exception):
    pass


def count_state(base, state):
    total, seen = 0, set()
    for page in range(1, MAX_PAGES + 1):
        status, body = get_json(base + "/breweries",
                                {"by_state": state, "per_page": PER_PAGE, "page": page})
        if status != 200:
            raise Failed(f"page {page}: HTTP status {status}")
        if not isinstance(body, list):
            raise Failed(f"page {page} is not a JSON array")
        if len(body) < PER_PAGE:
            return total + len(body)
        key = json.dumps(body, sort_keys=True)
        if key in seen:
            raise Failed(f"page {page} repeats an earlier page (the server ignores page)")
        seen.add(key)
        total += len(body)
    raise Failed(f"stopped at the page limit of {MAX_PAGES} full pages")


def count_or_fail(base, state):
    try:
        return count_state(base, state)
    except Failed as e:
        return e
    except Exception as e:  # a transport error: report it, do not count short
        return Failed(f"{type(e).__name__}: {e}")


def serial(base, states):
    return {s: count_or_fail(base, s) for s in states}


async def run_async(base, states):
    loop = asyncio.get_running_loop()
    futures = [loop.run_in_executor(None, count_or_fail, base, s) for s in states]
    counts = await asyncio.gather(*futures)
    return dict(zip(states, counts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--states", default="district_of_columbia,maryland,new_york,virginia")
    ap.add_argument("--mode", default="serial,async")
    ap.add_argument("--require-requests", action="store_true",
                    help="fail instead of falling back to urllib")
    args = ap.parse_args()
    if args.require_requests and CLIENT != "requests":
        raise SystemExit("peer-brewery: the requests package is missing "
                         "(Debian: apt-get install python3-requests)")
    states = ALL_STATES if args.states == "all" else args.states.split(",")
    modes = args.mode.split(",")
    runs = []
    if "serial" in modes:
        t0 = time.perf_counter()
        runs.append(serial(args.base_url, states))
        print(f"python-serial: {time.perf_counter() - t0:.3f} s")
    if "async" in modes:
        t0 = time.perf_counter()
        runs.append(asyncio.run(run_async(args.base_url, states)))
        print(f"python-async: {time.perf_counter() - t0:.3f} s")
    print("python-client: " + CLIENT)
    if not runs:
        return 0
    # Both modes must agree: a count that differs between them is reported
    # as a failure, not averaged away.
    counts, failed = {}, {}
    for s in states:
        got = [r[s] for r in runs]
        bad = [g for g in got if isinstance(g, Failed)]
        if bad:
            failed[s] = str(bad[0])
        elif len(set(got)) > 1:
            failed[s] = "serial and async disagree: " + "/".join(map(str, got))
        else:
            counts[s] = got[0]
    print("python-counts: " + ",".join(f"{k}={v}" for k, v in counts.items()))
    if failed:
        print("python-failed: " + ",".join(f"{k}={v}" for k, v in failed.items()))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
