#!/usr/bin/env python3
"""Code footprint of a hot path, from a callgrind profile made with per-instruction counts.

    valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no \
        --separate-threads=yes --callgrind-out-file=/tmp/cg <program>
    python3 benches/callgrind_footprint.py /tmp/cg-NN MIN_COUNT

Counts the instructions executed at least MIN_COUNT times (e.g. the number of requests the
thread served: what runs once per request or more), the distinct 64-byte lines and 4 KiB pages
they lie in, and the instructions executed in them.
"""
import collections
import sys


def main():
    path, min_count = sys.argv[1], int(sys.argv[2])
    counts = collections.Counter()
    obj, after_call = None, False
    with open(path) as f:
        for line in f:
            if line.startswith('ob='):
                obj = line[3:].strip()
            elif line.startswith('calls='):
                after_call = True  # the next cost line is the call's inclusive cost
            elif line.startswith('0x'):
                if after_call:
                    after_call = False
                    continue
                fields = line.split()
                if len(fields) > 2:
                    counts[(obj, int(fields[0], 16))] += int(fields[2])
    hot = {k: v for k, v in counts.items() if v >= min_count}
    lines = {(o, a // 64) for o, a in hot}
    pages = {(o, a // 4096) for o, a in hot}
    print(f"instructions run >= {min_count} times: {len(hot)} distinct, {sum(hot.values())} executed")
    print(f"in {len(lines)} distinct 64-byte lines ({len(lines) * 64} bytes), {len(pages)} pages")


if __name__ == '__main__':
    main()
