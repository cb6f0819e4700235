// Micro-benchmark of the backward reduce's memory patterns on bench-A's
// shape (81,920 positions x 128, Zipf 1.05 ids over 1M rows, 10% padding):
//   0/1  cpu::segment_sum without / with scale_by_count
//   2    streaming read of the whole gradient (bandwidth reference)
//   3    unordered scatter-copy by positions (racy: a speed reference only)
//   4    zero-init then add in position order, one thread
//   5    CSR order (id by id), one thread
//   6/7  each thread sums every other row / a contiguous half of the rows
// Build: g++ -O3 -fopenmp -fno-math-errno -std=c++17 -Iinclude \
//   bench/micro/segment_sum_patterns.cpp build/libembtrain_core.a $(mpicxx --showme:link)
// Run:   OMP_NUM_THREADS=1 ./a.out; OMP_NUM_THREADS=2 ./a.out
#include <omp.h>
#include <cstdio>
#include <vector>
#include "embtrain/kernels_cpu.hpp"
#include "embtrain/zipf.hpp"
#include "embtrain/random.hpp"
#include "embtrain/huge_pages.hpp"
#include "embtrain/timer.hpp"
using namespace embtrain;
int main(int argc, char**argv){
  int64_t n=81920, dim=128, rows=1000000;
  ZipfSampler z(rows,1.05);
  auto ids=sample_ids(z,n,0.1,1,5);
  cpu::UniqueIndex idx; cpu::unique_ids(ids.data(),n,rows,&idx);
  RowBuffer grad(n*dim); for(int64_t i=0;i<n*dim;++i) grad[i]=random_normal(1,2,i);
  RowBuffer sums(idx.num_unique()*dim);
  for (int mode=0; mode<8; ++mode){
    double best=1e9;
    for(int r=0;r<30;++r){ Stopwatch c;
      if(mode==0) cpu::segment_sum(grad.data(),dim,idx,false,0,sums.data());
      else if(mode==1) cpu::segment_sum(grad.data(),dim,idx,true,0,sums.data());
      else if(mode==2) { // pure streaming read of grad
        double s=0;
        #pragma omp parallel for reduction(+:s)
        for(int64_t i=0;i<n*dim;i+=16) s+=grad[i];
        if(s==1234.5) printf("x");
      } else if (mode==6) { // each thread sums every other row (interleaved)
        double tot=0;
        #pragma omp parallel reduction(+:tot)
        { int me=omp_get_thread_num(), T=omp_get_num_threads(); float acc[128]={0};
          for(int64_t p=me;p<n;p+=T){ const float*g=grad.data()+p*dim; for(int j=0;j<dim;++j) acc[j]+=g[j]; }
          for(int j=0;j<dim;++j) tot+=acc[j]; }
        if(tot==1234.5) printf("x");
      } else if (mode==7) { // each thread sums a contiguous half
        double tot=0;
        #pragma omp parallel reduction(+:tot)
        { int me=omp_get_thread_num(), T=omp_get_num_threads(); float acc[128]={0};
          for(int64_t p=me*n/T;p<(me+1)*n/T;++p){ const float*g=grad.data()+p*dim; for(int j=0;j<dim;++j) acc[j]+=g[j]; }
          for(int j=0;j<dim;++j) tot+=acc[j]; }
        if(tot==1234.5) printf("x");
      } else if (mode==4) { // zero-init then add, serial
        std::fill(sums.begin(), sums.end(), 0.f);
        for(int64_t p=0;p<n;++p){ int64_t u=idx.inverse[p]; if(u==0) continue; const float* __restrict__ g=grad.data()+p*dim; float* __restrict__ a=sums.data()+u*dim; for(int j=0;j<dim;++j) a[j]+=g[j]; }
      } else if (mode==5) { // CSR order, serial (the original)
        for(int64_t u=1;u<idx.num_unique();++u){ float* __restrict__ a=sums.data()+u*dim; const float* f=grad.data()+(int64_t)idx.positions[idx.offsets[u]]*dim; std::copy(f,f+dim,a);
          for(int k=idx.offsets[u]+1;k<idx.offsets[u+1];++k){ const float* __restrict__ g=grad.data()+(int64_t)idx.positions[k]*dim; for(int j=0;j<dim;++j) a[j]+=g[j]; } }
      } else { // copy each position row into sums[inverse] (no add)
        #pragma omp parallel for
        for(int64_t p=0;p<n;++p){ const float*g=grad.data()+p*dim; float*a=sums.data()+idx.inverse[p]*dim; for(int j=0;j<dim;++j) a[j]=g[j]; }
      }
      best=std::min(best,c.lap_ms()); }
    printf("mode %d best %.3f ms (threads %d)\n", mode, best, omp_get_max_threads());
  }
}
