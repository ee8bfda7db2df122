// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a counter-based
// generator, so element i of a dropout mask depends only on (seed, offset + i). The CPU and the CUDA kernels
// include this one header and so draw the same bits. Not a general-purpose Generator (core/tensor.h).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define SPDLAB_HD __host__ __device__ __forceinline__
#else
#define SPDLAB_HD inline
#endif

namespace spdlab::philox {

struct U32x4 {
  uint32_t v[4];
};

SPDLAB_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Ten rounds over counter c with key k (the published constants).
SPDLAB_HD U32x4 philox4x32(uint64_t counter, uint64_t key) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return U32x4{{c0, c1, c2, c3}};
}

// A uniform double in [0, 1) for stream position i: word i % 4 of block i / 4.
SPDLAB_HD double uniform(uint64_t seed, uint64_t i) {
  U32x4 r = philox4x32(i >> 2, seed);
  return static_cast<double>(r.v[i & 3]) * (1.0 / 4294967296.0);
}

}  // namespace spdlab::philox
