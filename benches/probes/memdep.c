/* A trade's memory on the 1M book without the state machine: for each of 2,000,000 items, two
 * random 64-byte lines of a 32 MiB table (the position index), then the position line each
 * names (64 MiB table), then the account each position names (100,000 records of 256 bytes),
 * prefetched in three dependent stages D1 / D2 / D3 items ahead as apply_batch does (8/4/2),
 * and WORK dependent multiplies an item standing for the computation (60: ~57 ns at 3.15 GHz).
 * Prints ns an item for three passes.
 *
 *   gcc -O2 benches/probes/memdep.c -o /tmp/memdep && /tmp/memdep 8 4 2 60
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
static char* huge(size_t n){ char*p=mmap(0,n,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0); madvise(p,n,MADV_HUGEPAGE); memset(p,0,n); return p;}
static uint64_t s=88172645463325252ULL; static inline uint64_t rnd(){ s^=s<<13; s^=s>>7; s^=s<<17; return s;}
int main(int argc,char**argv){
  int D1=atoi(argv[1]),D2=atoi(argv[2]),D3=atoi(argv[3]); int work=atoi(argv[4]); size_t N=2000000;
  size_t idx_lines=(32<<20)/64, pos_lines=(64<<20)/64, acc_n=100000;
  uint32_t*idx=(uint32_t*)huge(32<<20); uint32_t*pos=(uint32_t*)huge(64<<20); char*acc=huge(acc_n*256);
  // idx line k holds a pos line number; pos line holds an account number
  for(size_t k=0;k<idx_lines;k++) idx[k*16]=rnd()%pos_lines;
  for(size_t k=0;k<pos_lines;k++) pos[k*16]=rnd()%acc_n;
  uint32_t (*a)[2]=malloc(N*sizeof*a); for(size_t i=0;i<N;i++){a[i][0]=rnd()%idx_lines;a[i][1]=rnd()%idx_lines;}
  uint32_t (*P)[2]=malloc(N*sizeof*P); uint32_t (*A)[2]=malloc(N*sizeof*A);
  for(int rep=0;rep<3;rep++){
  struct timespec t0,t1; clock_gettime(CLOCK_MONOTONIC,&t0); uint64_t sum=0;
  for(size_t i=0;i<N;i++){
    if(i+D1<N){ __builtin_prefetch(idx+a[i+D1][0]*16ul); __builtin_prefetch(idx+a[i+D1][1]*16ul);}
    if(i+D2<N){ for(int k=0;k<2;k++){ uint32_t p=idx[a[i+D2][k]*16ul]; P[i+D2][k]=p; __builtin_prefetch(pos+p*16ul);} }
    if(i+D3<N){ for(int k=0;k<2;k++){ uint32_t r=pos[P[i+D3][k]*16ul]; A[i+D3][k]=r; __builtin_prefetch(acc+r*256ul);} }
    if(i<(size_t)D2) for(int k=0;k<2;k++) P[i][k]=idx[a[i][k]*16ul];
    if(i<(size_t)D3) for(int k=0;k<2;k++) A[i][k]=pos[P[i][k]*16ul];
    for(int k=0;k<2;k++){ pos[P[i][k]*16ul+1]++; acc[A[i][k]*256ul+8]++; }
    uint64_t x=sum; for(int k=0;k<work;k++){ x=x*6364136223846793005ULL+k; } sum+=x&1;
  }
  clock_gettime(CLOCK_MONOTONIC,&t1); double ns=((t1.tv_sec-t0.tv_sec)*1e9+(t1.tv_nsec-t0.tv_nsec))/N;
  printf("D %d/%d/%d work %d: %.1f ns/trade (%lu)\n",D1,D2,D3,work,ns,sum&1);}
}
