// Internal interface of the masked-reduction family: kernel parameter blocks, the launch plans the host
// side (masked_reduce_api.cu) computes, and the launchers each kernel source instantiates per dtype
// (forward_{f32,f16,bf16}.cu, backward.cu, masking.cu). Not a public header.
#pragma once

#include "kernels/common/common.cuh"

#include "culayers/masked_reduce.hpp"
#include "culayers/status.hpp"

#include <cstddef>
#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace masked {

using ::culayers::kernels::kWarpSize;

// ---- tuning constants ----------------------------------------------------------------------------------
// Where they come from:
//  - kNarrowThreads / kBackwardThreads / kCombineThreads = 256: 8 warps, the usual block size of
//    memory-bound elementwise/reduction kernels (OneFlow, PyTorch); 8 such blocks fill an sm_80/sm_90 SM
//    (2048 resident threads) when registers allow, and it is a multiple of every warp-level layout here.
//  - kWideMaxThreads = 512: the wide kernel's __launch_bounds__, half of CUDA's block limit, so the
//    compiler may give each thread up to 128 registers (64K per SM / 512) for its unrolled loads and
//    partials without spilling. A wide block grows its R lanes (ty) up to this before R is split across
//    blocks, because a split costs a second kernel and the partials' traffic.
//  - kMaxTx = 256 column vectors per wide block: 4 KB of a row per step with 16-byte vectors, so a
//    warp's 32 lanes read 512 contiguous bytes and several warps share each mask tile.
//  - kMaskTile = 1024 mask bytes staged in shared memory per barrier pair: each mask byte is read once
//    per block (instead of once per column thread) for 2 barriers per 1024 steps of R.
//  - kWideSmemBudget = 48 KB: the dynamic shared memory available without the opt-in attribute on every
//    supported architecture; it caps the wide block so the per-thread partial slots fit.
//  - kUnroll = 4 independent loads in flight per thread: with half of an SM's threads resident that is
//    64 KB in flight per SM for 16-byte vectors, several times HBM3's bandwidth x latency per SM
//    (3.35 TB/s x ~0.7 us / 132 SMs ~ 18 KB on H100 SXM).
//  - kCountLoads = 16 one-byte mask loads in flight per thread of the backward's count kernel: a block
//    counts kCountChunk = 4 KB of a row per item (4 KB x 8 blocks = 32 KB in flight per SM, the same
//    budget as kUnroll's vectors).
//  - kMaxSplits = 4096: bounds the partials' workspace and each combine lane's serial run (512 merges).
//  - kCombineCols = 32 columns x kCombineLanes = 8 lanes per combine block (kCombineThreads): a warp reads
//    32 consecutive columns of a chunk (coalesced), and 8 lanes cut the serial chain of chunk merges per
//    column about 8-fold; the grid (outer x column blocks) is no longer one block per row, which left all
//    but `outer` SMs idle for few-output shapes (B = 2: 2 blocks merging 264 chunks each).
constexpr int kNarrowThreads = 256;
constexpr int kBackwardThreads = 256;
constexpr int kCombineThreads = 256;
constexpr int kCombineCols = 32;
constexpr int kCombineLanes = kCombineThreads / kCombineCols;
constexpr int kWideMaxThreads = 512;
constexpr int kMaxTx = 256;
constexpr int kMaskTile = 1024;
constexpr std::size_t kWideSmemBudget = 48 * 1024;
constexpr int kUnroll = 4;
constexpr std::int64_t kMaxSplits = 4096;
constexpr int kCountLoads = 16;
constexpr std::int64_t kCountChunk = static_cast<std::int64_t>(kBackwardThreads) * kCountLoads;

// Defaults of the heuristic's injectable thresholds (masked_reduce::Tuning documents the heuristic).
//  - narrow_max_inner = 32: one warp covers at least one element of every column per step.
//  - narrow_max_row = 1024: 32 elements per lane; below that a wide block would spend more on its
//    barrier tree than on loads.
//  - min_rows_per_thread = 8: below 8 loads per thread a split's partial (one write and one read per
//    column) is no longer small next to the data it summarizes.
//  - target = SMs x max threads per SM (full residency): half of it already saturates DRAM with kUnroll
//    16-byte loads in flight per thread (see kUnroll); the other half is spare work for the block
//    scheduler, which balances rows of uneven length (ragged lengths, masks) only across items.
constexpr std::int64_t kDefaultNarrowMaxInner = 32;
constexpr std::int64_t kDefaultNarrowMaxRow = 1024;
constexpr std::int64_t kDefaultMinRowsPerThread = 8;

/// The reduction a forward kernel instantiates (sum and mean share one: mean divides at the end).
enum class AccKind : int { kSum = 0, kMax = 1, kMin = 2, kMoments = 3 };

/// Bytes of one accumulator (float32 fields, and an int32 index for max/min).
constexpr std::size_t acc_bytes(AccKind kind) {
  return kind == AccKind::kSum ? 4 : (kind == AccKind::kMoments ? 12 : 8);
}

/// Everything a forward kernel reads; passed by value.
struct ForwardParams {
  const void* x;
  const std::uint8_t* mask;
  const std::int32_t* lengths;
  std::uint32_t* length_errors;
  void* out;
  float* out_mean;
  float* out_var;
  std::int32_t* counts;
  std::int32_t* indices;
  std::int64_t outer;
  std::int64_t reduce;
  std::int64_t inner;
  int validity; // masked_reduce::Validity
  int divide;   // sum kernel: 1 = mean
  float fill;
  int out_vec; // 1: `out` is aligned for vector stores of the path's width
  int aux_vec; // 1: indices / out_mean / out_var are aligned for vector stores
  // Layout. Narrow: tx = groups of lanes per warp (a power of two, tx * inner <= 32), ty unused.
  // Wide/split: a block is tx column vectors x ty steps of R.
  int tx;
  int ty;
  std::int64_t col_blocks;
  std::int64_t splits; // chunks of R per (row, column block)
  int partials;        // 1: split path (chunk partials to the workspace, then combine_kernel)
  std::int64_t rows_per_split;
  // Split partials in the workspace: [outer, splits, inner] fields and [outer, splits] counts.
  float* part_a;            // sum / extremum value / Welford mean
  float* part_b;            // Welford m2
  std::int32_t* part_idx;   // extremum index
  std::int32_t* part_count; // valid steps of the chunk
};

struct ForwardLaunch {
  masked_reduce::Path path; // kNarrow, kWide or kSplit
  int vec;                  // vector width N
  unsigned grid;
  unsigned threads;
  std::size_t smem;
  unsigned combine_grid; // split only
  std::size_t combine_smem;
};

template <class T>
Status launch_forward(AccKind kind, const ForwardLaunch& launch, const ForwardParams& params,
                      cudaStream_t stream);

/// Backward variants: sum and mean (dx = dy * scale), max/min (routing by index), moments.
enum class BackwardKind : int { kScale = 0, kExtremum = 1, kMoments = 2 };

struct BackwardParams {
  int validity;
  int divide; // kScale: 1 = mean
  const void* dy;
  const std::int32_t* indices;
  const float* dmean;
  const float* dvar;
  const float* mean;
  const void* x;
  const std::int32_t* counts; // mean/moments with a mask: caller's or the workspace's
  const std::uint8_t* mask;
  const std::int32_t* lengths;
  std::uint32_t* length_errors;
  void* dx;
  std::int64_t outer;
  std::int64_t reduce;
  std::int64_t inner;
  int dy_vec;  // dy aligned for vector loads of width N
  int aux_vec; // indices / dmean / dvar / mean aligned for vector loads
  int tx;
  int ty;
  std::int64_t col_blocks;
  std::int64_t splits;
  std::int64_t rows_per_split;
};

struct BackwardLaunch {
  int vec;
  unsigned grid;
  unsigned threads;
  bool count_first; // launch the mask-count kernel into `counts_workspace` first
  std::int32_t* counts_workspace;
  std::int64_t count_grid_cap; // the count kernel's grid cap (blocks resident on the whole GPU)
};

template <class T>
Status launch_backward(BackwardKind kind, const BackwardLaunch& launch, const BackwardParams& params,
                       cudaStream_t stream);

struct MaskingParams {
  const void* x;
  void* y;
  std::uint8_t* mask;
  std::int64_t rows; // outer * R
  std::int64_t inner;
  float mask_value; // already rounded to the dtype
  int team;         // lanes per row: a power of two <= 32
};

template <class T>
Status launch_masking(int vec, unsigned grid, const MaskingParams& params, cudaStream_t stream);

Status launch_expand(const std::uint8_t* mask, std::uint8_t* out, std::int64_t total, std::int64_t features,
                     bool vec_ok, unsigned grid, cudaStream_t stream);

} // namespace masked
} // namespace kernels
CULAYERS_NAMESPACE_END
