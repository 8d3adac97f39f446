// Extended-range non-negative numbers for probability-space recursions, shared by the CPU and CUDA kernels.
//
// A value is m * 2^(256 * level) with m in [2^-256, 2^256), or zero (m = 0, level = kZeroLevel). Sums align
// the mantissas of up to three terms by their levels; products add levels. Nothing underflows or overflows
// for any sequence length, and a term 2^-768 below the largest of a sum is dropped (relative 1e-77).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define MR_HD __host__ __device__ __forceinline__
#else
#define MR_HD inline
#endif

namespace metarecipe {

constexpr int32_t kZeroLevel = -(1 << 29);
constexpr double kLevelLog = 177.44567822334210;  // 256 * ln 2: the natural log of one level
constexpr double kUp = 0x1p256;
constexpr double kDown = 0x1p-256;

struct ExtNum {
  double m;
  int32_t level;
};

MR_HD ExtNum ext_zero() { return {0.0, kZeroLevel}; }

// Log-probabilities at or below -kLogLimit count as impossible (masks such as -1e9 mean probability 0);
// at or above +kLogLimit, or NaN, they give NaN. Levels then stay far inside int32 for any length.
constexpr double kLogLimit = 1e6;
constexpr double kInvLevelLog = 1.0 / kLevelLog;

// exp(x) with m in [2^-128, 2^128].
MR_HD ExtNum ext_exp(double x) {
  if (x <= -kLogLimit) return ext_zero();
  if (!(x < kLogLimit)) return {NAN, 0};
  const int32_t k = static_cast<int32_t>(x * kInvLevelLog + (x >= 0.0 ? 0.5 : -0.5));
  return {exp(x - k * kLevelLog), k};
}

// Brings m * 2^(256 level) back into the mantissa range; m must lie in [2^-512, 2^512) or be 0 or NaN.
MR_HD ExtNum ext_normalize(double m, int32_t level) {
  const bool up = m >= kUp, down = m < kDown;
  const double scale = up ? kDown : (down ? kUp : 1.0);
  const int32_t shifted = level + (up ? 1 : 0) - (down ? 1 : 0);
  return {m * scale, m == 0.0 ? kZeroLevel : shifted};
}

MR_HD ExtNum ext_mul(ExtNum a, ExtNum b) { return ext_normalize(a.m * b.m, a.level + b.level); }

// 2^(-256 d) for a level difference d >= 0; 0 from d = 3 on (a term 2^-512 below the top of a sum).
MR_HD double level_factor(int32_t d) { return d == 0 ? 1.0 : (d == 1 ? kDown : (d == 2 ? kDown * kDown : 0.0)); }

// The mantissa of a rescaled to level `top` >= a.level.
MR_HD double ext_align(ExtNum a, int32_t top) { return a.m * level_factor(top - a.level); }

MR_HD int32_t ext_top(ExtNum a, ExtNum b, ExtNum c) {
  const int32_t ab = a.level > b.level ? a.level : b.level;
  return ab > c.level ? ab : c.level;
}

// (a + b + c) * e: one lattice step. The sum lies in [2^-256, 3 * 2^256) and e.m in [2^-128, 2^128].
MR_HD ExtNum ext_sum3_mul(ExtNum a, ExtNum b, ExtNum c, ExtNum e) {
  const int32_t top = ext_top(a, b, c);
  return ext_normalize((ext_align(a, top) + ext_align(b, top) + ext_align(c, top)) * e.m, top + e.level);
}

MR_HD ExtNum ext_sum3(ExtNum a, ExtNum b, ExtNum c) { return ext_sum3_mul(a, b, c, ExtNum{1.0, 0}); }

MR_HD double ext_log(ExtNum a) { return a.m > 0.0 ? log(a.m) + a.level * kLevelLog : -INFINITY; }

// a * b / z as a double, for a posterior a * b / z <= 1. The mantissa ratio lies in (2^-768, 2^768), so
// the level difference d is at most 2, and from d = -4 on the result is below 2^-256.
MR_HD double ext_ratio(ExtNum a, ExtNum b, ExtNum z) {
  const int32_t d = a.level + b.level - z.level;
  const double scale = d >= 0 ? (d == 0 ? 1.0 : (d == 1 ? kUp : kUp * kUp))
                              : (d == -1 ? kDown : (d == -2 ? kDown * kDown : (d == -3 ? kDown * kDown * kDown : 0.0)));
  return a.m * b.m / z.m * scale;
}

}  // namespace metarecipe
