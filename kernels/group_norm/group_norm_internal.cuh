// Internal interface of the group-normalization family: the kernel parameter block, the launch plan the
// host side (group_norm_api.cu) computes, and the per-dtype launchers (forward_<dtype>.cu and
// backward_<dtype>.cu instantiate them so the dtypes compile in parallel). Not a public header.
//
// The group view. Group g of sample n is a 2-D array [rows, cols] with contiguous rows `row_stride` apart:
//   channels first: rows = C/G channels, cols = spatial positions, row_stride = spatial  (channel = row)
//   channels last:  rows = spatial positions, cols = C/G channels, row_stride = C         (channel = col)
// (channels first with spatial == 1 has the memory of channels last with one position and uses that view).
// Element (n, g, r, col) lives at n * C * spatial + g * group_offset + r * row_stride + col. Accesses are
// vectors of N elements along a row (N divides cols and row_stride; pointers N-aligned).
//
// A unit of work is (n, g, chunk): the group itself (splits == 1) or one of `splits` chunks of it cut
// along the spatial axis (channels last: rows; channels first: column vectors) and, where that axis is
// shorter than the chunks wanted, along the channel axis too (csplits). A team (a warp, or the
// whole block) processes one unit at a time and strides over units. Units are numbered (n, g, chunk) for
// channels first and (n, chunk, g) for channels last, so concurrent channels-last teams share the rows'
// DRAM sectors through L2 (make_unit). Inside a team the threads form
// tx x ty (x fastest): along the channel axis and the other axis; the host picks the shape:
//   channels last:  tx threads over column vectors (a power of two), ty over rows
//   channels first: tx lanes over column vectors (a power of two; <= 32 in the backward and the warp path,
//                   whose per-channel sums shuffle across tx), ty over rows (channels)
// so per-channel sums reduce across ty (channels last: shuffles then shared memory) or across tx lanes
// (channels first: shuffles), always in a fixed order.
#pragma once

#include "kernels/common/common.cuh"

#include "culayers/group_norm.hpp"
#include "culayers/status.hpp"

#include <cstddef>
#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace group_norm {

using ::culayers::kernels::kWarpSize;

// ---- tuning constants (where they come from) -------------------------------------------------------------
//  - kSplitThreads = 256: 8 warps, the usual block of memory-bound kernels; 8 such blocks fill an sm_90 SM.
//  - kMaxBlockThreads = 512: a block-path block; with 100+ KB of staged group only 1-2 blocks fit an SM, so
//    a block needs many threads (and kUnroll loads each) to keep enough bytes in flight: 512 x 4 x 16 B =
//    32 KB per SM, above HBM3's bandwidth x latency per SM (3.35 TB/s x ~0.7 us / 132 SMs ~ 18 KB).
//  - kWarpTeamsPerBlock = 4: warp-path blocks of 128 threads, so 16 blocks share an SM and the per-warp
//    shared-memory slices stay under the 48 KB that needs no opt-in.
//  - kUnroll = 4 independent vector loads in flight per thread (see kMaxBlockThreads).
//  - kInFlightBytesPerSm = 18 KB: HBM3's bandwidth x latency per SM on an H100 SXM (3.35 TB/s x ~0.7 us /
//    132 SMs); the block-or-split choice compares the block path's bytes in flight with it (an H200 needs
//    about 25 KB per SM at 4.8 TB/s: there the choice is slightly optimistic for the block path).
//  - kReservedSmemPerBlock = 1 KB: shared memory the hardware reserves per resident block (sm_80 on);
//    kMaxBlocksPerSm = 32: the resident-block limit of sm_80 and sm_90 (sm_86 / sm_89: 16 / 24, where
//    the thread limit, 1536 per SM, binds first for block-path blocks of 128 threads or more).
//  - kMaxSplits = 1024: the merge loops stage at most this many partials per group.
//  - kFinalThreadsX/Y = 32 x 32: the dgamma/dbeta kernel (warp, block and split paths); 32 channels per warp
//    (coalesced), 32 warps over the partial rows, merged in order in shared memory. Its grid is only
//    ceil(C / 32) blocks, so each warp's serial walk is the kernel's time: 32 warps walk a quarter of what 8
//    did (the tile path gave it N x T partial rows, 528 on the training shape, until its dx kernel took the
//    sums over: 17 rows per warp there instead of 66).
constexpr int kSplitThreads = 256;
constexpr int kMaxBlockThreads = 512;
constexpr int kWarpTeamsPerBlock = 4;
constexpr int kUnroll = 4;
constexpr double kInFlightBytesPerSm = 18.0 * 1024.0;
constexpr std::size_t kReservedSmemPerBlock = 1024;
//  - kCachedForwardRegs / kCachedBackwardRegs = 80 / 128: registers per thread of the cached (block-path)
//    kernels, bf16 (the most), from ptxas for sm_90 (the H100 profile read 79 and 128); kRegistersPerSm =
//    64 K registers, every sm_80-sm_90 SM. Only where the runtime cannot say: the planner asks it for each
//    kernel's residency (residency<T, kBackward>, the compiled registers).
constexpr int kCachedForwardRegs = 80;
constexpr int kCachedBackwardRegs = 128;
constexpr std::int64_t kRegistersPerSm = 65536;
constexpr std::int64_t kMaxBlocksPerSm = 32;
constexpr std::int64_t kMaxSplits = 1024;
constexpr int kFinalThreadsX = 32;
//  - kTileMaxThreads = 512: the tile path's block is V x k threads, one per column vector of a full row
//    (V = C / N) times k rows; V <= 512 (C <= 4096 in 16-bit, 2048 in fp32 at full vector width) keeps
//    128 registers per thread available (the bf16 backward sums hold 2 x 8 partials and 8 loads in
//    flight); wider rows take the other paths. k = max(1, 256 / V): 256-thread blocks where the row allows.
//  - kTileWaves = 2: the tile kernels' grid starts from 2 full waves of the blocks an SM holds of the tile
//    kernel that holds fewer (threads, shared memory, and registers from the runtime's occupancy
//    calculator; where it cannot say, kTileForwardRegs / kTileBackwardRegs = 80 / 128, the most ptxas gives
//    any dtype's normalize / backward kernel on sm_90), each block walking at least kUnroll row steps; then
//    up to twice as many tiles where that fills both streaming kernels' last waves better
//    (kernels/common/wave_balance.hpp). Whole waves: a last wave a third full ran at a fraction of
//    bandwidth on the masked path (docs/performance.md, section 3); two of them halve the cost of uneven
//    tiles and keep few partials per group.
//  - kMaxTiles = 65536 tiles per sample at most (a forced tile_rows is raised to meet it): the merge warp
//    reads a group's partials serially.
//  - kTileSliverBytes = 128: the automatic choice takes the tile path when a group's slice of a row
//    (C/G x element bytes) is below one 128-byte cache line, where the per-group paths fetch partial
//    lines one request per row (the H100 profile: shape 3's channels-last block path at 18 % of DRAM
//    bandwidth with 16- and 32-byte slices).
//  - kTileMinBytesPerSm = 32 KB: and when x holds at least this much per SM (4.3 MB on an H100); below it
//    the tensor is latency-bound and one block-path kernel beats three launches.
//  - Second passes run their units last first (the split path's normalize / dx kernels, the tile path's
//    normalize / dx kernels): the first pass read x (and dy) in unit order with the default cache policy,
//    so when the second starts, L2 holds the last units' lines (up to its 50 MB on an H100: all of a
//    training-shape bf16 tensor, the last tenth of the VAE's). Taken first, those reads hit L2 instead of
//    being evicted by the reads of the first units. Results do not depend on the order.
constexpr int kTileMaxThreads = 512;
constexpr int kTileThreads = 256;
constexpr std::int64_t kTileWaves = 2;
constexpr int kTileForwardRegs = 80;
constexpr int kTileBackwardRegs = 128;
constexpr std::int64_t kMaxTiles = 65536;
constexpr std::int64_t kTileSliverBytes = 128;
constexpr std::int64_t kTileMinBytesPerSm = 32 * 1024;
//  - kSplitMinBytesPerSm = 64 KB: channels first, a tensor below this much per SM (8.7 MB on an H100)
//    takes the block path whenever its groups fit, even when the in-flight model prefers the split path:
//    that small, the op never reaches steady streaming and the split path's second launch and second
//    read cost more than the SMs a one-kernel block plan leaves idle. Measured on an H100 (run 2, bf16
//    forward, N = 2, 64 groups of 80 KB, 5.2 MB): the block path (C1280 32x32) 18.5 us, the split path
//    (C320 64x64, S = 5) 24.3 us; C640 32x32 (2.6 MB, split S = 2) 17.6 us where the block path took
//    12.7 us on C1280 16x16 (1.3 MB). Channels last keeps its plans (the block path reads slivers there).
constexpr std::int64_t kSplitMinBytesPerSm = 64 * 1024;
constexpr int kFinalThreadsY = 32;

enum class Act : int { kNone = 0, kSiLU = 1, kReLU = 2 };

struct Geometry {
  std::int64_t batch;
  std::int64_t channels;
  std::int64_t groups;
  std::int64_t cpg; // channels per group
  std::int64_t rows;
  std::int64_t cols;
  std::int64_t colvecs; // cols / N
  std::int64_t row_stride;
  std::int64_t n_stride; // C * spatial
  std::int64_t group_offset;
  std::int64_t spatial; // mask row length
  int cl;               // 1: the channel axis is cols (channels last view)
  int tx;
  int ty;
  std::int64_t splits; // chunks per group: spatial-axis chunks x csplits
  std::int64_t chunk;  // spatial axis per chunk: rows (cl) or column vectors (!cl)
  // Channel-axis chunks of a split plan (1 unless the spatial axis has fewer positions than the chunks
  // wanted) and their extent: column vectors (cl) or rows (!cl). A chunk's index is spatial * csplits +
  // channel (adjacent chunk indices; channels last numbers units (n, chunk, g), so they are G units apart).
  std::int64_t csplits;
  std::int64_t cchunk;
  // splits / csplits, the spatial-axis chunks per group (tile path: T), computed by the host (a 64-bit
  // division in the kernels' unit loops cost registers): a sample's rows of per-channel dgamma / dbeta
  // partials (the channel chunks of one spatial chunk write disjoint channels of the same row).
  std::int64_t ssplits;
};

struct ForwardParams {
  Geometry geo;
  const void* x;
  void* y;
  const float* gamma;
  const float* beta;
  const std::uint8_t* mask;
  float* mean;
  float* rstd;
  float epsilon;
  int act;
  float* partials; // split path: [N * G * splits] Welford triples (mean, m2, count); tile path: [N * G * T]
  float* stats;    // tile path: [N * G] (mean, rstd) pairs written by the merge kernel
};

struct BackwardParams {
  Geometry geo;
  const void* x;
  const void* dy;
  void* dx;
  const float* mean;
  const float* rstd;
  const float* gamma;
  const float* beta;
  const std::uint8_t* mask;
  int act;
  float* group_partials; // split / tile path: [N * G * splits] triples (sum g, sum g * xhat, valid elements)
  float* group_totals;   // tile path: [N * G] triples, the partials summed in a fixed order
  float* channel_partials; // [N * ssplits, C] pairs (dgamma, dbeta) as two planes; null: not wanted
  float* dgamma;
  float* dbeta;
};

/// The path and launch shape the host chose.
struct Plan {
  ::culayers::group_norm::Path path;
  int vec;          // N
  unsigned grid;    // blocks of the main kernel(s)
  unsigned threads; // block size
  std::size_t smem; // dynamic shared memory of the main (warp/block) or both split kernels
  bool smem_optin;  // smem > 48 KB: set the attribute before launching
};

template <class T>
Status launch_forward(const Plan& plan, const ForwardParams& params, cudaStream_t stream);

/// Blocks of `threads` threads one SM holds (threads, registers as compiled for the current device, the
/// block-slot limit; no shared memory: the planner adds its own limit) for the kernels that a plan with
/// this path, vector width and view runs (kernels::resident_blocks). `first`: the block path's kernel, or
/// the split or tile path's first pass; `second`: the split or tile path's second pass (equal to `first` on
/// the block path). 0 where the runtime cannot say (and for the warp path, which the planner never asks
/// about): the planner keeps its estimate.
struct Residency {
  int first = 0;
  int second = 0;
};
template <class T, bool kBackward>
Residency residency(::culayers::group_norm::Path path, int vec, bool cl, int threads);

template <class T>
Status launch_backward(const Plan& plan, const BackwardParams& params, cudaStream_t stream);

/// dgamma[c], dbeta[c] = sums over the `rows` partial rows in order (shared by every dtype).
Status launch_channel_sums(const BackwardParams& params, std::int64_t rows, cudaStream_t stream);

/// Tile path, kernel 2 (one kernel for every dtype): a warp per group merges its T partials in a fixed order
/// (lane l takes tiles l, l + 32, ...; then a butterfly) (forward: Welford partials into mean / rstd and
/// p.stats; backward: sums into p.group_totals).
Status launch_tile_merge(const ForwardParams& params, cudaStream_t stream);
Status launch_tile_merge(const BackwardParams& params, cudaStream_t stream);

/// Dynamic shared memory of the tile path's statistics kernels (host and device agree): a Welford per thread
/// in the forward; in the backward 3 + 2 N floats per thread (sum g, sum g * xhat, valid rows, N dgamma and
/// N dbeta partials).
constexpr std::size_t tile_forward_smem(int threads) {
  return static_cast<std::size_t>(threads) * 3 * sizeof(float);
}
constexpr std::size_t tile_backward_smem(int threads, int vec) {
  return static_cast<std::size_t>(threads) * static_cast<std::size_t>(3 + 2 * vec) * sizeof(float);
}
// The tile launchers never set the opt-in attribute for the forward: its footprint stays far below 48 KB.
static_assert(tile_forward_smem(kTileMaxThreads) <= 48 * 1024, "tile forward needs no shared-memory opt-in");
static_assert(tile_backward_smem(kTileMaxThreads, 8) <= 48 * 1024, "tile backward needs no opt-in");

/// Shared-memory bytes of one team's scratch (host and device agree): the channels-last backward's
/// per-channel slots (threads x 2 x vec floats: its dgamma / dbeta partials merge across the team's rows
/// through them) and, always, 512 bytes for block reductions. The forward has no per-channel sums, and the
/// channels-first backward merges each channel's partials with warp shuffles, so neither reserves slots:
/// the smaller footprint lets more cached-path blocks share an SM (the bf16 training shape's backward:
/// 16 KB of unused slots per 256-thread block had held it to one block per SM, then to 128-thread blocks).
constexpr std::size_t kReduceScratchBytes = 32 * 16;
constexpr std::size_t team_scratch_bytes(int threads, int vec, bool channel_slots) {
  return (channel_slots
              ? static_cast<std::size_t>(threads) * 2 * static_cast<std::size_t>(vec) * sizeof(float)
              : 0) +
         kReduceScratchBytes;
}

} // namespace group_norm
} // namespace kernels
CULAYERS_NAMESPACE_END
