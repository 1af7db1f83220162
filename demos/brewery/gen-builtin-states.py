#!/usr/bin/env python3
"""Generate demos/brewery/common/builtin-states.c from an Open Brewery DB CSV.

The table holds, for every (state_province, country, brewery_type) present in
the file, how many breweries have it.  brewery-server synthesises its built-in
dataset from it, so queries on the built-in data count exactly what the real
file counts (per state, per type, and for every substring/wildcard query on
the state name).

    python3 demos/brewery/gen-builtin-states.py \
        ../shared/data/openbrewerydb/breweries.csv > demos/brewery/common/builtin-states.c
"""
import collections
import csv
import sys


def c_string(s):
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append("\\%03o" % b)
    return '"' + "".join(out) + '"'


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/openbrewerydb/breweries.csv"
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    counts = collections.Counter(
        (r["state_province"], r["country"], r["brewery_type"]) for r in rows)
    print("/* Built-in dataset of brewery-server: how many breweries the Open Brewery DB")
    print(" * CSV has per (state_province, country, brewery_type).  GENERATED, do not edit:")
    print(" *     python3 demos/brewery/gen-builtin-states.py \\")
    print(" *         ../shared/data/openbrewerydb/breweries.csv > demos/brewery/common/builtin-states.c")
    print(" * from a file of %d rows (%d distinct states).  The server synthesises one" % (
        len(rows), len({k[0] for k in counts})))
    print(" * brewery per count with deterministic ids and names (server-data.c). */")
    print('#include "builtin-states.h"')
    print()
    print("const bsrv_builtin_row_t bsrv_builtin_rows[] = {")
    for (state, country, btype), n in sorted(counts.items()):
        print("    {%s, %s, %s, %d}," % (c_string(state), c_string(country), c_string(btype), n))
    print("};")
    print()
    print("const size_t bsrv_builtin_nrows = sizeof bsrv_builtin_rows / sizeof bsrv_builtin_rows[0];")
    print("const size_t bsrv_builtin_total = %d;" % len(rows))


if __name__ == "__main__":
    main()
