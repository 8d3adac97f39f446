// exp, sigmoid and tanh of float32 in plain arithmetic: no calls and no branches, so that loops over them
// vectorise. exp has a relative error below 3e-7 on [-87, 88] (inputs outside are clamped); sigmoid and tanh
// an absolute error below 2e-7. METARECIPE_VECTOR_CLONES compiles a function for SSE2, AVX2 + FMA and
// AVX-512 and picks the one the CPU runs at load time (GCC on x86-64 Linux; elsewhere one plain build).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define METARECIPE_VECTOR_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define METARECIPE_VECTOR_CLONES
#endif

#if defined(__GNUC__)
#define METARECIPE_INLINE inline __attribute__((always_inline))
#else
#define METARECIPE_INLINE inline
#endif

namespace metarecipe {

// e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2: a degree-6 Taylor polynomial for e^r, ln 2 split in
// two (Cody and Waite) so that n ln 2 is exact, and 2^n written straight into the exponent bits.
METARECIPE_INLINE float fast_exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // 1.5 * 2^23 rounds to the nearest integer
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

METARECIPE_INLINE float fast_sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

METARECIPE_INLINE float fast_tanh(float x) { return 1.0f - 2.0f / (fast_exp(2.0f * x) + 1.0f); }

}  // namespace metarecipe
