// A masked mean over the steps of x [B, T, F] in the structure a framework's eager code runs for
// `(x * mask[..., None]).sum(1, dtype=float32) / mask.sum(1).clamp(min=1)`, written here as a benchmark
// peer for culayers' masked mean (docs/performance.md section 9): four kernels, each what the framework's
// generic kernel for that step does, none of them knowing about the others:
//
//   1. multiply: tmp = x * (mask != 0), a temporary of x's dtype and shape (the broadcast elementwise
//      kernel: every step read and written, masked ones too; 16-byte vectors where F and the pointers
//      allow);
//   2. column sums: the reduction over T of tmp with F contiguous (a framework's reduction "vectorized
//      along the output": a thread owns V consecutive columns, 8 threads of a block stride over T and
//      merge in shared memory; T is split over blocks when B x F gives too few blocks to fill the GPU,
//      each block writing float32 partial sums);
//   3. counts: mask.sum(1), one warp per row;
//   4. divide: the partial sums added in a fixed order (bit-reproducible, unlike a framework's atomics or
//      semaphore-ordered global reduction, which changes nothing in its bytes), divided by max(count, 1),
//      rounded to x's dtype.
//
// DRAM traffic: x read and tmp written and read again (3 x B x T x F elements, padded steps included),
// against culayers' one read of the valid steps: the comparison the sentence-embedding goal reports
// besides the CUB baseline (bench/bench_masked_reduce.cu). NaN or Inf at masked steps propagate (x * 0),
// as in the framework expression; the benchmark's data has none.
//
// Built with nvcc (culayers_roofline_cuda) and against the emulator (culayers_roofline_emulated), so the
// emulated tests check it against a double-precision reference (tests/bench/masked_mean_baseline_test.cpp).
// Enqueues on the caller's stream, never allocates, never synchronizes.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include <culayers/status.hpp>
#include <culayers/types.hpp>

namespace culayers {
namespace bench {

struct UnfusedMeanProblem {
  DType dtype = DType::kBFloat16;     // x and out
  const void* x = nullptr;            // [B, T, F]
  const std::uint8_t* mask = nullptr; // [B, T]: nonzero = valid
  void* out = nullptr;                // [B, F]
  std::int64_t b = 0;
  std::int64_t t = 0;
  std::int64_t f = 0;
};

/// The launch shape unfused_masked_mean uses.
struct UnfusedMeanPlan {
  int vec = 1;                // columns per thread (elements per vector in the multiply)
  unsigned column_blocks = 0; // blocks across F in the column sums
  std::int64_t splits = 1;    // blocks across T per (column block, row)
  std::int64_t rows_per_split = 0;
  int sm_count = 1; // the SMs it was made for (the elementwise kernels' grids)
};

/// Plans p for sm_count SMs; kErrorInvalidValue (with a message) for a problem outside what this baseline
/// supports: negative sizes, a dtype that is not a float type, B above 65535 (the grid's y limit).
Status unfused_mean_plan(const UnfusedMeanProblem& p, int sm_count, UnfusedMeanPlan* plan);

/// Workspace bytes: the temporary (B x T x F elements), the partial sums (splits x B x F floats) and the
/// counts (B ints), each 256-byte aligned.
std::size_t unfused_mean_workspace_bytes(const UnfusedMeanProblem& p, const UnfusedMeanPlan& plan);

/// Plans p for sm_count SMs (unfused_mean_plan) and runs the four kernels on `stream`. workspace:
/// unfused_mean_workspace_bytes for that plan, 256-byte aligned.
Status unfused_masked_mean(const UnfusedMeanProblem& p, void* workspace, std::size_t workspace_bytes,
                           int sm_count, cudaStream_t stream);

} // namespace bench
} // namespace culayers
