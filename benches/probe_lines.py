#!/usr/bin/env python3
"""How often a successful lookup in a linear-probing table runs past its home cache line.

Models `FixedMap` (crates/core/src/map.rs): 16-byte entries, four to a 64-byte line, the home
slot chosen by the hash, linear probing, no deletions. Prints, for the position index's load
(995,332 positions in 2^21 slots on the 1M book: 0.475) and a lighter one, the share of lookups
that read a second line, and what is left if the line after the home one is also prefetched
when the home slot is the last of its line, or in the last half.

    python3 benches/probe_lines.py [slots_log2] [seed]
"""
import random
import sys


def simulate(slots: int, load: float, rng: random.Random):
    table = [False] * slots
    homes = []  # (home slot, slot found at) per key
    for _ in range(int(slots * load)):
        h = rng.randrange(slots)
        i = h
        while table[i]:
            i = (i + 1) % slots
        table[i] = True
        homes.append((h, i))
    n = len(homes)
    line = lambda s: s // 4
    crosses = [(h, i) for h, i in homes if line(h) != line(i)]
    # A crossing covered by one extra prefetch of the next line: it ends there.
    covered = lambda h, i, offsets: h % 4 in offsets and line(i) == line(h) + 1
    left_last = sum(1 for h, i in crosses if not covered(h, i, {3})) / n
    left_half = sum(1 for h, i in crosses if not covered(h, i, {2, 3})) / n
    return len(crosses) / n, left_last, left_half


def main() -> None:
    slots = 1 << int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 18
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    for load in (0.475, 0.3):
        cross, last, half = simulate(slots, load, rng)
        print(
            f"load {load}: lookups reading a second line {cross:.3f}; with the next line also "
            f"prefetched from a last-slot home {last:.3f}, from a last-half home {half:.3f}"
        )


if __name__ == "__main__":
    main()
