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
//  - kWideMaxThreads = 512, kWideMinBlocks = 2: the wide kernel's __launch_bounds__. Two 512-thread
//    blocks per SM cap ptxas at 64 registers (65536 per SM / (2 x 512)), so every instantiation has the
//    same residency, kWideResidentWarps = 65536 / (64 x 32) = 32 warps (1024 threads) per SM, which is
//    what the host plans with (an H100: 132 x 2 = 264 resident 512-thread blocks). Before, max/min and
//    16-bit moments with 8 columns per thread took 85 and 96 registers: one 480-thread block per SM, so
//    their grids ran in 5 waves and no second block hid the first one's compute.
//  - kMaxTx = 32 column vectors per wide block (one warp across the columns: 512 contiguous bytes per
//    step with 16-byte vectors). Narrow column blocks turn wide rows into several independent blocks
//    whose R lanes (ty up to 16) merge through shared memory, instead of one block per row that must be
//    split along R (partials through the workspace and a second kernel) to fill the GPU. B128 F768 bf16:
//    3 column blocks x 128 rows = 384 blocks of 32 x 16 threads, wide path, versus 640 chunk blocks of
//    96 x 5 plus a 3072-block combine before (H100, ragged lengths: 35.2 -> 28.1 us). 16 vectors (768
//    blocks) measured no faster (28.5 us), so a warp keeps a whole 512-byte segment.
//  - kMaskTile = 1024 mask bytes staged in shared memory per tile (two tile buffers): each mask byte is
//    read once per block (instead of once per column thread) for 1 barrier per 1024 steps of R.
//  - kWideSmemBudget = 48 KB: the dynamic shared memory available without the opt-in attribute on every
//    supported architecture; it caps the wide block so the per-thread partial slots fit.
//  - kUnroll = 4 independent loads in flight per thread: with the wide kernel's 1024 resident threads per
//    SM that is 64 KB in flight per SM for 16-byte vectors, several times HBM3's bandwidth x latency per
//    SM (3.35 TB/s x ~0.7 us / 132 SMs ~ 18 KB on H100 SXM). 16-bit moments with 8 columns per
//    thread use one less (wide_unroll in forward_kernels.cuh: 64 registers).
//  - kCountLoads = 16 one-byte mask loads in flight per thread of the backward's count kernel: a block
//    counts kCountChunk = 4 KB of a row per item (4 KB x 8 blocks = 32 KB in flight per SM, the same
//    budget as kUnroll's vectors).
//  - kMaxSplits = 4096: bounds the partials' workspace and each combine lane's serial run (512 merges).
//  - kCombineCols = 32 columns x kCombineLanes = 8 lanes per combine block (kCombineThreads): a warp reads
//    32 consecutive columns of a chunk (coalesced), and 8 lanes cut the serial chain of chunk merges per
//    column about 8-fold; the grid (outer x column blocks) is no longer one block per row, which left all
//    but `outer` SMs idle for few-output shapes (B = 2: 2 blocks merging 264 chunks each). Each lane
//    loads kUnroll chunks before merging them, so its chain of dependent L2 round trips (~0.3 us each)
//    is ceil(run / kUnroll) long: B2 T65536 F256 with 66 chunks, 9 per lane, takes 3 round trips, not 9.
//  - kMaskLoadsPerThread = 4: the wide kernel loads the next mask tile into registers (at most 4 bytes
//    per thread, so a tile is min(kMaskTile, 4 x threads) steps) before it accumulates the current one
//    and stores it into the second tile buffer afterwards: one barrier per tile and no mask round trip
//    between two tiles' x loads (B16 T8192: 8 tiles per row were 8 exposed mask latencies per block).
constexpr int kNarrowThreads = 256;
constexpr int kBackwardThreads = 256;
constexpr int kCombineThreads = 256;
constexpr int kCombineCols = 32;
constexpr int kCombineLanes = kCombineThreads / kCombineCols;
constexpr int kWideMaxThreads = 512;
constexpr int kWideMinBlocks = 2;
constexpr int kWideResidentWarps = 32;
constexpr int kMaxTx = 32;
constexpr int kMaskTile = 1024;
constexpr int kMaskLoadsPerThread = 4;
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
//  - target = the wide kernel's resident threads on the whole GPU: SMs x blocks per SM x block threads,
//    blocks per SM = min(threads per SM, kWideResidentWarps x 32) / block threads (an H100 with
//    512-thread blocks: 132 x 2 x 512 = 135 168). The split count is floor(resident blocks / (outer x
//    column blocks)), so the chunks fit in one wave: rounding up (the old rule, with a target of all
//    2048 threads per SM that the registers never allowed) gave B16 T8192 F4096 544 blocks for 264
//    slots, and the third wave's 16 blocks (16 x 32 KB in flight, a quarter of HBM3's bandwidth x
//    latency) ran ~40 us alone. One wave of equal chunks keeps 264 x 32 KB = 8.4 MB in flight until
//    they all finish together.
//  - ty (R lanes per wide block) = as many as the block allows (kWideMaxThreads / tx) while every lane
//    keeps at least min_rows_per_thread steps: more lanes per block, fewer blocks along R.
//  - Wave balance: when the wide path's blocks (outer x column blocks) need more than one wave of
//    resident slots, ty may drop (down to half) if that needs fewer waves at a lower cost, the cost taken
//    as waves / ty (a block's time ~ its steps per lane). B128 T512 F768 bf16 (the sentence-embedding
//    shape) had 384 blocks of 32 x 16 for 264 slots on an H100: a second wave of 120 blocks, 45 % of the
//    first wave's bytes in flight (run 2: 86 % of copy with ragged lengths, 82 % with a mask). 32 x 10 =
//    320 threads fit 3 blocks per SM: 396 slots, one wave. Ties keep the larger ty (B128 T300 F1536 fp32
//    moments: 6 waves of 32 x 16 cost the same as 3 of 32 x 8, and keeps 32 x 16). The group-norm block
//    path's rule of a similar form (ties there take the smaller block) measured 31.6 -> 25.9 us on the
//    bf16 training shape.
//  - Single-column rows (inner = 1) also go narrow when the narrow plan keeps at least as many bytes in
//    flight as the wide or split plan would (Little's law: at equal latency, bandwidth follows the bytes
//    in flight). A narrow lane loads N consecutive steps (16 bytes) where a wide thread loads one element
//    of its single column, so the narrow kernel wins as soon as it has enough rows: the BatchNormalization
//    layer's channels-first statistics (rows = N x C planes of H x W, e.g. 8192 rows of 3136 for
//    N32 C256 56x56) ran the wide kernel with 2-byte loads at 30 % of an H100's DRAM bandwidth (8192 x 32
//    = 262 144 lanes missed the all-threads rule's 270 336). kNarrowResidentNum / Den: the narrow
//    kernels' registers (ptxas sm_90: at most 80, f16 moments with N = 8) keep 3 blocks of 256 per SM,
//    3/4 of the wide kernel's 1024 threads.
constexpr std::int64_t kNarrowResidentNum = 3;
constexpr std::int64_t kNarrowResidentDen = 4;
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
