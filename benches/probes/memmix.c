/* The memory of a trade's layouts on the 1M book without the state machine: for each of
 * 2,000,000 items, two random 64-byte lines of an IDX_MB MiB index, two of a 64 MiB position
 * table and ACC_LINES adjacent lines of two of 100,000 account records of ACC_STRIDE bytes,
 * all prefetched 8 items ahead, and WORK dependent multiplies an item. Today's layout is
 * `32 256 1` (a 32 MiB position index, one account line); a per-account position directory
 * would be `4 320 2` (a 4 MiB account index, the account's narrow line and its directory).
 * Prints ns an item for the third of three passes.
 *
 *   gcc -O2 benches/probes/memmix.c -o /tmp/memmix && /tmp/memmix 32 256 1 60
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
static char* huge(size_t n){ char*p=mmap(0,n,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0); madvise(p,n,MADV_HUGEPAGE); memset(p,1,n); return p;}
static uint64_t s=88172645463325252ULL; static inline uint64_t rnd(){ s^=s<<13; s^=s>>7; s^=s<<17; return s;}
int main(int argc,char**argv){
  size_t idx_mb=atoi(argv[1]); int acc_stride=atoi(argv[2]); int acc_lines=atoi(argv[3]); int work=atoi(argv[4]); size_t N=2000000;
  size_t idx_lines=(idx_mb<<20)/64, pos_lines=(64<<20)/64, acc_n=100000;
  char*idx=huge(idx_mb<<20); char*pos=huge(64<<20); char*acc=huge(acc_n*acc_stride);
  uint32_t (*a)[6]=malloc(N*sizeof*a);
  for(size_t i=0;i<N;i++){ a[i][0]=rnd()%idx_lines; a[i][1]=rnd()%idx_lines; a[i][2]=rnd()%pos_lines; a[i][3]=rnd()%pos_lines; a[i][4]=rnd()%acc_n; a[i][5]=rnd()%acc_n;}
  for(int rep=0;rep<3;rep++){
  struct timespec t0,t1; clock_gettime(CLOCK_MONOTONIC,&t0); uint64_t acc_sum=0;
  for(size_t i=0;i<N;i++){
    if(i+8<N){ uint32_t*b=a[i+8]; __builtin_prefetch(idx+b[0]*64ul);__builtin_prefetch(idx+b[1]*64ul); __builtin_prefetch(pos+b[2]*64ul);__builtin_prefetch(pos+b[3]*64ul);
      for(int l=0;l<acc_lines;l++){__builtin_prefetch(acc+b[4]*(size_t)acc_stride+64*l);__builtin_prefetch(acc+b[5]*(size_t)acc_stride+64*l);}}
    uint32_t*b=a[i];
    acc_sum+=idx[b[0]*64ul]; acc_sum+=idx[b[1]*64ul];
    pos[b[2]*64ul]++; pos[b[3]*64ul]++;
    for(int l=0;l<acc_lines;l++){ acc[b[4]*(size_t)acc_stride+64*l]++; acc[b[5]*(size_t)acc_stride+64*l]++; }
    uint64_t x=acc_sum; for(int k=0;k<work;k++){ x=x*6364136223846793005ULL+k; } acc_sum+=x&1;
  }
  clock_gettime(CLOCK_MONOTONIC,&t1); double ns=((t1.tv_sec-t0.tv_sec)*1e9+(t1.tv_nsec-t0.tv_nsec))/N;
  if(rep==2) printf("idx %zu MB acc %d x%d work %d: %.1f ns/trade (%lu)\n",idx_mb,acc_stride,acc_lines,work,ns,acc_sum&1);}
}
