/* How this VM translates memory, and what that costs a trade's lines.
 *
 * 1. Granularity. A dependent random walk over K lines, packed (K x 64 bytes) or one line in
 *    each of K 4 KiB pages (at a scattered offset in the page, so every cache set is used),
 *    in 2 MiB-aligned regions advised for transparent huge pages (the guest backs them with
 *    2 MiB pages: AnonHugePages is printed). The data, and so the caches, are the same; only
 *    the pages differ. Were the TLB's entries 2 MiB (the host backing the guest with huge
 *    pages too), 512 lines in one 2 MiB page would cost what packed ones do.
 * 2. A trade's four state-machine lines on the 1M book (two positions of a 64 MiB table, two
 *    accounts' first lines of 100,000 records of 256 bytes), prefetched 8 trades ahead and
 *    read-modify-written: in 4 random 4 KiB pages a trade (today's layout), or with each
 *    account's line in its position's page (2 pages a trade), alone and behind WORK dependent
 *    multiplies a trade (~36: the state machine's ~42 ns of work on its thread).
 *
 *   gcc -O2 benches/probes/pages.c -o /tmp/pages && /tmp/pages [WORK]
 */
#include "probe.h"

#define TRADES 2000000L

static size_t anon_huge_kib(void) {
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char l[256];
    size_t kib = 0;
    while (f && fgets(l, sizeof l, f))
        if (!strncmp(l, "AnonHugePages:", 14)) kib = strtoul(l + 14, 0, 10);
    if (f) fclose(f);
    return kib;
}

/* Line i of a walk: packed, or in page i at a scattered offset (every cache set used). */
static size_t packed(size_t i) { return i * 64; }
static size_t spread(size_t i) { return i * 4096 + ((i * 2654435761u) >> 7) % 64 * 64; }

static double walk(size_t k, int one_a_page) {
    size_t bytes = k * (one_a_page ? 4096 : 64);
    char *p = region(bytes);
    double ns = walk_ns(p, k, one_a_page ? spread : packed);
    munmap(p, bytes);
    return ns;
}

/* The four lines of trade i: positions then accounts, in 4 pages or in 2. */
static void trade_lines(uint32_t *a, int two_pages, char *pos, char *acc, char *mixed, char **out) {
    if (!two_pages) {
        out[0] = pos + a[0] * 64ul;
        out[1] = pos + a[1] * 64ul;
        out[2] = acc + a[2] * 256ul;
        out[3] = acc + a[3] * 256ul;
    } else { /* 24,576 pages of 96 MiB: a position in the first half, its account in the second */
        size_t p0 = a[0] % 24576, p1 = a[1] % 24576;
        out[0] = mixed + p0 * 4096 + a[2] % 32 * 64;
        out[1] = mixed + p1 * 4096 + a[3] % 32 * 64;
        out[2] = mixed + p0 * 4096 + 2048 + a[0] % 32 * 64;
        out[3] = mixed + p1 * 4096 + 2048 + a[1] % 32 * 64;
    }
}

static double trades(uint32_t (*a)[4], int two_pages, int work, char *pos, char *acc, char *mixed) {
    uint64_t sum = 0;
    double t0 = now();
    for (long i = 0; i < TRADES; i++) {
        char *l[4];
        if (i + 8 < TRADES) {
            trade_lines(a[i + 8], two_pages, pos, acc, mixed, l);
            for (int k = 0; k < 4; k++) __builtin_prefetch(l[k], 1);
        }
        trade_lines(a[i], two_pages, pos, acc, mixed, l);
        for (int k = 0; k < 4; k++) sum += (*l[k])++;
        sum += narrow_work(sum, work);
    }
    double ns = (now() - t0) / TRADES;
    if (sum == 42) puts("");
    return ns;
}

int main(int argc, char **argv) {
    int work = argc > 1 ? atoi(argv[1]) : 36;
    size_t ks[] = {512, 2048, 4096, 8192, 16384};
    for (int i = 0; i < 5; i++) {
        double packed = walk(ks[i], 0), spread = walk(ks[i], 1);
        printf("%6zu lines (%4zu KiB): packed %5.1f ns a load; one a 4 KiB page (%2zu MiB) %5.1f ns\n",
               ks[i], ks[i] * 64 >> 10, packed, ks[i] * 4096 >> 20, spread);
    }
    printf("AnonHugePages: %zu KiB\n", anon_huge_kib());
    char *pos = region(64ul << 20), *acc = region(100000ul * 256), *mixed = region(96ul << 20);
    uint32_t (*a)[4] = malloc(TRADES * sizeof *a);
    for (long i = 0; i < TRADES; i++) {
        a[i][0] = rnd() % (1 << 20);
        a[i][1] = rnd() % (1 << 20);
        a[i][2] = rnd() % 100000;
        a[i][3] = rnd() % 100000;
    }
    for (int rep = 0; rep < 3; rep++)
        for (int w = 0; w <= work; w += work ? work : 1)
            printf("a trade's 4 lines, work %2d: in 4 pages %5.1f ns, in 2 pages %5.1f ns\n", w,
                   trades(a, 0, w, pos, acc, mixed), trades(a, 1, w, pos, acc, mixed));
    return 0;
}
