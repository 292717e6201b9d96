/* What a trade's four prefetched lines cost work that is wide (many independent instructions a
 * cycle, as the state machine's ~850 a trade at ~4.4 a cycle are) against work that is narrow
 * (one dependent chain of multiplies) of the same duration (~41 ns a trade on its own).
 *
 * Each trade prefetches (for writing) AHEAD trades ahead (16 unless given) two random lines of
 * a 64 MiB table and the first lines of two of 100,000 records of 256 bytes, then reads and
 * increments them, then works. Layouts of the four lines:
 *   cached  any of 64 lines of each table: no miss at all (the work alone);
 *   dram    random lines of the whole tables: a DRAM line and a page walk each (the 1M book);
 *   walk    one line in each of 16,384 and 6,400 pages (1.4 MiB of lines, in the L2 and L3):
 *           mostly page walks, few DRAM lines.
 * and `prefetch only`: the dram and walk lines prefetched and never read.
 * Medians of 9 alternating passes of 1,000,000 trades.
 *
 * ACCOUNTS lays the accounts' lines out otherwise: `64` in a dense table of first lines (64
 * bytes a record: 6.4 MB, 1,563 pages); `colo` in their positions' pages (positions in the
 * first half of a 64 MiB table's pages, each account's line in the second half of its
 * position's page: two pages a trade); `256` (the default) as above. ACCOUNTS_AHEAD (AHEAD
 * unless given) is how far ahead the accounts' lines are prefetched. (`walk` is laid out for
 * the 256-byte records.) With BURST=n in the environment the prefetches of n trades are issued
 * together every n trades (a walk then stalls retirement once for n trades' walks).
 *
 *   gcc -O2 benches/probes/wide.c -o /tmp/wide && [BURST=n] /tmp/wide [NARROW_WORK WIDE_WORK
 *   [AHEAD [ACCOUNTS [ACCOUNTS_AHEAD]]]]
 */
#include "probe.h"

#define TRADES 1000000L
#define PASSES 9

static char *pos, *acc;
static long ahead = 16, acc_ahead = -1, burst = 1; /* trades */
static uint64_t l1[512];

enum layout { RECORDS, DENSE, COLO }; /* ACCOUNTS: 256, 64, colo */

/* Line k of a trade whose line numbers are `b`: two of `pos` (64-byte units), two of `acc`
 * (256- or 64-byte units), or, co-located, each position in the first half of its page and
 * its account in the second. (Inlined into a pass per layout: no branch on it.) */
static inline __attribute__((always_inline)) char *line(const uint32_t *b, int k, enum layout l) {
    if (l != COLO) return k < 2 ? pos + b[k] * 64ul : acc + b[k] * (l == DENSE ? 64ul : 256ul);
    if (k < 2) return pos + ((b[k] & ~63ul) + b[k] % 32) * 64;
    return pos + ((b[k - 2] & ~63ul) + 32 + b[k] % 32) * 64;
}

static inline __attribute__((always_inline)) double pass_of(enum layout lay, uint32_t (*a)[4],
                                                            int wide, int work, int touch) {
    uint64_t sum = 0;
    double t0 = now();
    for (long i = 0; i < TRADES; i++) {
        if (i % burst == 0) /* one trade's lines, or BURST trades' at once */
            for (long g = i; g < i + burst; g++) {
                if (g + ahead < TRADES)
                    for (int k = 0; k < 2; k++) __builtin_prefetch(line(a[g + ahead], k, lay), 1);
                if (g + acc_ahead < TRADES)
                    for (int k = 2; k < 4; k++)
                        __builtin_prefetch(line(a[g + acc_ahead], k, lay), 1);
            }
        if (touch)
            for (int k = 0; k < 4; k++) sum += (*line(a[i], k, lay))++;
        if (wide) { /* four independent chains, two L1 loads and a store an iteration */
            uint64_t y0 = sum, y1 = sum + 1, y2 = sum + 2, y3 = sum + 3;
            for (int k = 0; k < work; k++) {
                __asm__ volatile("" : "+r"(y0), "+r"(y1), "+r"(y2), "+r"(y3));
                uint64_t j = (uint64_t)(k * 8 + i) & 511;
                y0 += l1[j];
                y1 ^= l1[(j + 64) & 511];
                l1[(j + 128) & 511] = y2;
                y2 += y3 >> 1;
                y3 ^= y0 + k;
            }
            sum += (y0 ^ y1 ^ y2 ^ y3) & 1;
        } else {
            sum += narrow_work(sum, work);
        }
    }
    double ns = (now() - t0) / TRADES;
    if (sum == 42) puts("");
    return ns;
}

static enum layout accounts = RECORDS;

static double pass(uint32_t (*a)[4], int wide, int work, int touch) {
    switch (accounts) {
    case DENSE: return pass_of(DENSE, a, wide, work, touch);
    case COLO: return pass_of(COLO, a, wide, work, touch);
    default: return pass_of(RECORDS, a, wide, work, touch);
    }
}

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv) {
    int work[2] = {argc > 2 ? atoi(argv[1]) : 36, argc > 2 ? atoi(argv[2]) : 34};
    if (argc > 3) ahead = atol(argv[3]);
    if (argc > 4) accounts = !strcmp(argv[4], "colo") ? COLO : !strcmp(argv[4], "64") ? DENSE : RECORDS;
    acc_ahead = argc > 5 ? atol(argv[5]) : ahead;
    if (getenv("BURST")) burst = atol(getenv("BURST")) > 0 ? atol(getenv("BURST")) : 1;
    pos = region(64ul << 20);
    acc = region(100000ul * 256);
    uint32_t (*lay[3])[4];
    for (int l = 0; l < 3; l++) lay[l] = malloc(TRADES * sizeof *lay[l]);
    for (long i = 0; i < TRADES; i++)
        for (int k = 0; k < 4; k++) {
            uint32_t n = k < 2 ? 1u << 20 : 100000, pages = k < 2 ? 16384 : 6400;
            uint32_t per = k < 2 ? 64 : 16, pg = rnd() % pages; /* units a 4 KiB page */
            lay[0][i][k] = rnd() % 64;
            lay[1][i][k] = rnd() % n;
            lay[2][i][k] = pg * per + (pg * 37) % per; /* scattered in the page: every set */
        }
    const char *name[3] = {"cached", "dram", "walk"};
    for (int wide = 0; wide < 2; wide++) {
        double t[5][PASSES];
        for (int p = 0; p < PASSES; p++) {
            for (int l = 0; l < 3; l++) t[l][p] = pass(lay[l], wide, work[wide], 1);
            for (int l = 1; l < 3; l++) t[2 + l][p] = pass(lay[l], wide, work[wide], 0);
        }
        for (int r = 0; r < 5; r++) qsort(t[r], PASSES, sizeof(double), cmp);
        printf("%s work (%d): ", wide ? "wide" : "narrow", work[wide]);
        for (int l = 0; l < 3; l++) printf("%s%s %.1f", l ? ", " : "", name[l], t[l][PASSES / 2]);
        printf("; prefetch only: dram %.1f, walk %.1f (ns a trade)\n", t[3][PASSES / 2],
               t[4][PASSES / 2]);
    }
    return 0;
}
