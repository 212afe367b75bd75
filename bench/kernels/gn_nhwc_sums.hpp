// A channels-last group normalization forward in the structure of the NHWC diffusion GroupNorm plugins
// (TensorRT's and ONNX Runtime's) and Apex's NHWC GroupNorm, written here as a benchmark peer for
// culayers' channels-last paths (docs/performance.md section 9):
//
//   1. the [N, G] sum / sum-of-squares buffer is zeroed (cudaMemsetAsync);
//   2. a sums kernel: grid (C / Cb, HW blocks, N); a thread owns V consecutive channels (V = 2 when a group
//      has an even channel count and the pointers allow 2-element accesses, else 1) and walks its block's
//      HW range, accumulating sum and sum of squares in float; the block merges its threads per group in
//      shared memory and adds each group's pair to the buffer with float atomics (so the statistics'
//      rounding depends on the order the blocks finish in: not bit-reproducible, like the plugins);
//   3. a scale kernel on the same grid: mean = sum / count, var = max(sum_sq / count - mean^2, 0)
//      (the plugins' one-pass formula, which loses precision when |mean| >> sd: fine for the benchmark's
//      data, not a general-purpose method), y = (x - mean) * rstd * gamma + beta, SiLU optionally fused.
//
// x is read twice and y written once: the same DRAM traffic as culayers' channels-last tile path. Cb, the
// channels per block, is the largest divisor of C that is a multiple of C / G with Cb / V <= 512 threads
// (the plugins fix it at 256, 320 or 480 and reject other C; this version takes any C divisible by G
// whose group fits in one block). The HW range per block is chosen so that the grid fills every SM
// once at 2048 resident threads (at most 65535 ranges: the grid's y limit).
//
// Built with nvcc (culayers_roofline_cuda) and against the emulator (culayers_roofline_emulated), so the
// emulated tests check it against a double-precision reference (tests/bench/nhwc_sums_baseline_test.cpp).
// Enqueues on the caller's stream, never allocates, never synchronizes.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include <culayers/status.hpp>
#include <culayers/types.hpp>

namespace culayers {
namespace bench {

struct NhwcSumsProblem {
  DType dtype = DType::kBFloat16; // x and y
  const void* x = nullptr;        // [N, HW, C]
  void* y = nullptr;              // [N, HW, C]; may not overlap x
  const float* gamma = nullptr;   // [C] or null (1)
  const float* beta = nullptr;    // [C] or null (0)
  std::int64_t n = 0;
  std::int64_t hw = 0;
  std::int64_t c = 0;
  std::int64_t groups = 0;
  float epsilon = 1e-5f;
  bool silu = false;
};

/// The launch shape nhwc_sums_group_norm uses.
struct NhwcSumsPlan {
  int vec = 1; // channels per thread
  std::int64_t channels_per_block = 0;
  int threads = 0; // channels_per_block / vec
  std::int64_t hw_per_block = 0;
  unsigned grid_x = 0; // C / channels_per_block
  unsigned grid_y = 0; // HW blocks
  unsigned grid_z = 0; // N
};

/// Plans p for sm_count SMs; kErrorInvalidValue (with a message) when the problem is outside what this
/// baseline supports: C not divisible by G, a group wider than 512 x V channels, N > 65535.
Status nhwc_sums_plan(const NhwcSumsProblem& p, int sm_count, NhwcSumsPlan* plan);

/// Workspace bytes: two floats per (n, g).
std::size_t nhwc_sums_workspace_bytes(const NhwcSumsProblem& p);

/// Runs the three steps on `stream`. workspace: nhwc_sums_workspace_bytes(p) bytes, 4-byte aligned.
Status nhwc_sums_group_norm(const NhwcSumsProblem& p, void* workspace, std::size_t workspace_bytes,
                            int sm_count, cudaStream_t stream);

} // namespace bench
} // namespace culayers
