// Host side of group normalization: argument validation, the dispatch heuristic (path, vector width,
// thread shape, splits), workspace carving, and the dgamma/dbeta kernel shared by every dtype.
#include "kernels/common/arg_checks.hpp"
#include "kernels/common/device_info.cuh"
#include "kernels/common/wave_balance.hpp"
#include "kernels/group_norm/group_norm_device.cuh"
#include "kernels/group_norm/group_norm_internal.cuh"

#include "culayers/group_norm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace group_norm {

/// dgamma / dbeta: a block of kFinalThreadsX x kFinalThreadsY threads per 32 channels (channel_sums_block).
CULAYERS_GLOBAL void __launch_bounds__(kFinalThreadsX* kFinalThreadsY)
    channel_sums_kernel(const BackwardParams p, const std::int64_t rows) {
  grid_dependency_wait(); // a dependent launch after the kernel that wrote the partials
  CULAYERS_DYNAMIC_SMEM(float, smem);
  channel_sums_block<kFinalThreadsX>(p, rows, blockIdx.x, static_cast<int>(threadIdx.x),
                                     kFinalThreadsX * kFinalThreadsY, smem);
}

Status launch_channel_sums(const BackwardParams& params, std::int64_t rows, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((params.geo.channels + kFinalThreadsX - 1) / kFinalThreadsX));
  const dim3 block(kFinalThreadsX * kFinalThreadsY);
  const std::size_t smem = channel_sums_smem<kFinalThreadsX>(kFinalThreadsX * kFinalThreadsY);
  // A dependent launch after the backward kernels; with no partial rows (nothing to read) no kernel of
  // this op ran before it, so a plain launch.
  const cudaError_t e =
      rows > 0 ? CULAYERS_LAUNCH_DEPENDENT(channel_sums_kernel, grid, block, smem, stream, params, rows)
               : CULAYERS_LAUNCH(channel_sums_kernel, grid, block, smem, stream, params, rows);
  return check_launch(e, "group_norm_backward");
}

/// Tile path, forward kernel 2: a warp per group merges its T Welford partials in a fixed order (lane l takes
/// tiles l, l + 32, ...; then a butterfly in lane order), writes mean / rstd (when wanted) and p.stats.
CULAYERS_GLOBAL void __launch_bounds__(kWarpSize* kWarpTeamsPerBlock)
    forward_tile_merge_kernel(const ForwardParams p) {
  grid_dependency_wait();   // a dependent launch after forward_tile_stats_kernel
  allow_dependent_launch(); // forward_tile_normalize_kernel follows
  const std::int64_t ng = static_cast<std::int64_t>(blockIdx.x) * kWarpTeamsPerBlock +
                          static_cast<std::int64_t>(threadIdx.x) / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  if (ng >= p.geo.batch * p.geo.groups) {
    return; // the whole warp: the butterfly below needs every lane
  }
  const std::int64_t tiles = p.geo.splits;
  Welford w{};
  // kMergeBatch of this lane's tiles are loaded before any is merged (a tile past the end reads nothing and
  // counts 0, which the merge skips): one round trip per batch instead of two per tile (the merge's
  // count test made each tile's loads wait for the previous merge), same order, same bits. A sample can have
  // hundreds of tiles (the VAE shapes 792), and this kernel's small grid is pure latency.
  constexpr int kMergeBatch = 8;
  for (std::int64_t t0 = lane; t0 < tiles; t0 += kMergeBatch * kWarpSize) {
    Welford batch[kMergeBatch];
    CULAYERS_PRAGMA_UNROLL
    for (int b = 0; b < kMergeBatch; ++b) {
      const std::int64_t t = t0 + static_cast<std::int64_t>(b) * kWarpSize;
      const float* part = p.partials + 3 * group_partial_slot(p.geo, ng, t < tiles ? t : t0); // in bounds
      batch[b] =
          t < tiles ? Welford{load(part + 0), load(part + 1), load(part + 2)} : Welford{0.0f, 0.0f, 0.0f};
    }
    CULAYERS_PRAGMA_UNROLL
    for (int b = 0; b < kMergeBatch; ++b) {
      w = welford_merge<true>(w, batch[b]);
    }
  }
  w = warp_welford<kWarpSize, true>(w);
  float mean = 0.0f;
  float rstd = 0.0f;
  finish_stats(w, p.epsilon, mean, rstd);
  if (lane == 0) {
    store(p.stats + 2 * ng + 0, mean);
    store(p.stats + 2 * ng + 1, rstd);
    if (p.mean != nullptr) {
      store(p.mean + ng, mean);
    }
    if (p.rstd != nullptr) {
      store(p.rstd + ng, rstd);
    }
  }
}

/// Tile path, backward kernel 2: a warp per group adds its T (sum g, sum g * xhat, valid) triples in tile
/// order into p.group_totals.
CULAYERS_GLOBAL void __launch_bounds__(kWarpSize* kWarpTeamsPerBlock)
    backward_tile_merge_kernel(const BackwardParams p) {
  grid_dependency_wait();   // a dependent launch after backward_tile_sums_kernel
  allow_dependent_launch(); // backward_tile_dx_kernel follows
  const std::int64_t ng = static_cast<std::int64_t>(blockIdx.x) * kWarpTeamsPerBlock +
                          static_cast<std::int64_t>(threadIdx.x) / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  if (ng >= p.geo.batch * p.geo.groups) {
    return;
  }
  const std::int64_t tiles = p.geo.splits;
  float sg = 0.0f;
  float sgx = 0.0f;
  float valid = 0.0f;
  for (std::int64_t t = lane; t < tiles; t += kWarpSize) {
    const float* part = p.group_partials + 3 * group_partial_slot(p.geo, ng, t);
    sg += load(part + 0);
    sgx += load(part + 1);
    valid += load(part + 2);
  }
  sg = warp_reduce_sum(sg);
  sgx = warp_reduce_sum(sgx);
  valid = warp_reduce_sum(valid);
  if (lane == 0) {
    store(p.group_totals + 3 * ng + 0, sg);
    store(p.group_totals + 3 * ng + 1, sgx);
    store(p.group_totals + 3 * ng + 2, valid);
  }
}

namespace {
unsigned tile_merge_grid(const Geometry& geo) {
  return static_cast<unsigned>((geo.batch * geo.groups + kWarpTeamsPerBlock - 1) / kWarpTeamsPerBlock);
}
} // namespace

Status launch_tile_merge(const ForwardParams& params, cudaStream_t stream) {
  return check_launch(CULAYERS_LAUNCH_DEPENDENT(forward_tile_merge_kernel, dim3(tile_merge_grid(params.geo)),
                                                dim3(kWarpSize * kWarpTeamsPerBlock), 0, stream, params),
                      "group_norm");
}

Status launch_tile_merge(const BackwardParams& params, cudaStream_t stream) {
  return check_launch(CULAYERS_LAUNCH_DEPENDENT(backward_tile_merge_kernel, dim3(tile_merge_grid(params.geo)),
                                                dim3(kWarpSize * kWarpTeamsPerBlock), 0, stream, params),
                      "group_norm_backward");
}

} // namespace group_norm
} // namespace kernels

namespace group_norm {
namespace {

using ::culayers::detail::set_error;
namespace k = ::culayers::kernels::group_norm;
using ::culayers::kernels::check_aligned;
using ::culayers::kernels::check_disjoint;
using ::culayers::kernels::check_thresholds;
using ::culayers::kernels::check_workspace;
using ::culayers::kernels::kWarpSize;
using ::culayers::kernels::misaligned;
using ::culayers::kernels::overlaps;

constexpr const char* kForwardOp = "group_norm";
constexpr const char* kBackwardOp = "group_norm_backward";
constexpr std::size_t kWorkspaceAlign = 256;
constexpr std::int64_t kMaxGrid = std::numeric_limits<std::int32_t>::max();
constexpr std::size_t kNoOptinSmem = 48 * 1024;

// Defaults of the injectable thresholds (Tuning documents the heuristic).
constexpr std::int64_t kDefaultWarpMaxElements = 1024;
constexpr std::int64_t kDefaultMinSplitElements = 8192;

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}
std::size_t align_up(std::size_t a, std::size_t b) {
  return (a + b - 1) / b * b;
}
int pow2_ceil(std::int64_t v) {
  int p = 1;
  while (p < v && p < (1 << 30)) {
    p *= 2;
  }
  return p;
}
std::size_t dtype_bytes(DType d) {
  return d == DType::kFloat32 ? 4 : 2;
}
bool float_dtype(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}

// Tensor passes of the two streaming kernels of the split and tile paths (their weights in balance_waves):
// forward, x read, then x read and y written; backward, x and dy read, then x and dy read and dx written.
constexpr double kForwardPasses[2] = {1.0, 2.0};
constexpr double kBackwardPasses[2] = {2.0, 3.0};

// The shape checks of group_norm::check_sizes, reported as `op`.
Status check_sizes_as(const char* op, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                      std::int64_t groups) {
  if (batch < 0 || channels < 0 || spatial < 0) {
    return set_error(
        Status::kErrorInvalidShape, "%s: shape: negative size (batch %lld, channels %lld, spatial %lld)", op,
        static_cast<long long>(batch), static_cast<long long>(channels), static_cast<long long>(spatial));
  }
  if (groups < 1) {
    return set_error(Status::kErrorInvalidShape, "%s: groups: %lld, must be at least 1", op,
                     static_cast<long long>(groups));
  }
  if (channels < groups) {
    return set_error(Status::kErrorInvalidShape,
                     "%s: groups: %lld groups for %lld channels (fewer channels than groups)", op,
                     static_cast<long long>(groups), static_cast<long long>(channels));
  }
  if (channels % groups != 0) {
    return set_error(Status::kErrorInvalidShape, "%s: groups: %lld channels are not divisible by %lld groups",
                     op, static_cast<long long>(channels), static_cast<long long>(groups));
  }
  // The limits hold for empty tensors too (spatial or batch 0 counted as 1): the kernels still walk a
  // group's C/G rows and the N x G groups (writing mean 0 / rstd), with 32-bit counts, and plan C x spatial
  // strides; an empty tensor with 2^32 channels per group would loop for minutes.
  const std::int64_t cpg = channels / groups;
  const std::int64_t spatial1 = std::max<std::int64_t>(spatial, 1);
  const std::int64_t batch1 = std::max<std::int64_t>(batch, 1);
  if (cpg > (std::numeric_limits<std::int32_t>::max)() / spatial1) {
    return set_error(Status::kErrorSizeLimit,
                     "%s: shape: a group of %lld channels x %lld positions exceeds 2^31 - 1 elements", op,
                     static_cast<long long>(cpg), static_cast<long long>(spatial));
  }
  if (groups > (std::numeric_limits<std::int32_t>::max)() / batch1) {
    return set_error(Status::kErrorSizeLimit, "%s: shape: batch x groups (%lld x %lld) exceeds 2^31 - 1", op,
                     static_cast<long long>(batch), static_cast<long long>(groups));
  }
  // C x spatial1 < 2^62 here (G and (C/G) x spatial1 are each below 2^31): no overflow before the test.
  if (channels * spatial1 > (std::numeric_limits<std::int64_t>::max)() / 16 / batch1) {
    return set_error(Status::kErrorSizeLimit, "%s: shape: too many elements", op);
  }
  return Status::kSuccess;
}

/// What forward and backward share.
struct Common {
  const char* op;
  bool backward;
  DType dtype;
  Layout layout;
  std::int64_t batch;
  std::int64_t channels;
  std::int64_t spatial;
  std::int64_t groups;
  Activation activation;
  const std::uint8_t* mask;
  kernels::Span data[3]; // x, y (and null) / x, dy, dx: element and vector alignment
  Tuning tuning;
};

Status validate_common(const Common& c) {
  const char* op = c.op;
  if (!float_dtype(c.dtype)) {
    return set_error(Status::kErrorInvalidDType, "%s: dtype: %d is not float32, float16 or bfloat16", op,
                     static_cast<int>(c.dtype));
  }
  if (c.layout != Layout::kChannelsFirst && c.layout != Layout::kChannelsLast) {
    return set_error(Status::kErrorInvalidLayout, "%s: layout: %d is not channels-first or channels-last", op,
                     static_cast<int>(c.layout));
  }
  if (Status s = check_sizes_as(op, c.batch, c.channels, c.spatial, c.groups); !ok(s)) {
    return s;
  }
  if (c.activation != Activation::kNone && c.activation != Activation::kSiLU &&
      c.activation != Activation::kReLU) {
    return set_error(Status::kErrorInvalidValue, "%s: activation: %d is not none, SiLU or ReLU", op,
                     static_cast<int>(c.activation));
  }
  if (c.mask != nullptr && c.layout != Layout::kChannelsLast) {
    return set_error(Status::kErrorInvalidLayout,
                     "%s: mask: a mask [batch, spatial] needs the channels-last layout", op);
  }
  const Tuning& t = c.tuning;
  if (t.path != Path::kAuto && t.path != Path::kWarp && t.path != Path::kBlock && t.path != Path::kSplit &&
      t.path != Path::kTile) {
    return set_error(Status::kErrorInvalidValue, "%s: tuning.path: %d is not a path", op,
                     static_cast<int>(t.path));
  }
  if (t.vector_width != 0 && t.vector_width != 1 && t.vector_width != 2 && t.vector_width != 4 &&
      t.vector_width != 8) {
    return set_error(Status::kErrorInvalidValue, "%s: tuning.vector_width: %d is not 0, 1, 2, 4 or 8", op,
                     t.vector_width);
  }
  if (Status st = check_thresholds(op, {{"warp_max_elements", t.warp_max_elements},
                                        {"block_max_bytes", t.block_max_bytes},
                                        {"min_split_elements", t.min_split_elements},
                                        {"target_blocks", t.target_blocks},
                                        {"splits", t.splits},
                                        {"tile_rows", t.tile_rows},
                                        {"tile_min_bytes", t.tile_min_bytes},
                                        {"split_min_bytes", t.split_min_bytes},
                                        {"max_blocks", t.max_blocks}});
      !ok(st)) {
    return st;
  }
  if (t.wave_balance != 0 && t.wave_balance != 1) {
    return set_error(Status::kErrorInvalidValue, "%s: tuning.wave_balance: %lld is not 0 (on) or 1 (off)", op,
                     static_cast<long long>(t.wave_balance));
  }
  // A group has at most 2^31 - 1 elements, so a larger minimum means "never split" as well; rejecting it
  // keeps the planner's 2 x min_split_elements from overflowing.
  if (t.min_split_elements > (std::numeric_limits<std::int32_t>::max)()) {
    return set_error(Status::kErrorInvalidValue, "%s: tuning.min_split_elements: %lld exceeds 2^31 - 1", op,
                     static_cast<long long>(t.min_split_elements));
  }
  if (t.target_blocks > kMaxGrid) {
    return set_error(Status::kErrorInvalidValue, "%s: tuning.target_blocks: %lld exceeds 2^31 - 1", op,
                     static_cast<long long>(t.target_blocks));
  }
  if (t.splits > k::kMaxSplits) {
    return set_error(Status::kErrorInvalidValue, "%s: tuning.splits: %lld exceeds %lld", op,
                     static_cast<long long>(t.splits), static_cast<long long>(k::kMaxSplits));
  }
  return check_aligned(op, c.data, dtype_bytes(c.dtype));
}

using kernels::with_activation_type;

struct Planned {
  k::Plan plan;
  k::Geometry geo;
  std::int64_t units; // batch * groups
};

/// The path and launch shape for these (valid) arguments on the current device.
Status make_plan(const Common& c, Planned* out) {
  const char* op = c.op;
  kernels::DeviceInfo info{};
  if (Status s = kernels::device_info(&info, op); !ok(s)) {
    return s;
  }
  const Tuning& t = c.tuning;
  const std::size_t elem = dtype_bytes(c.dtype);
  k::Geometry geo{};
  geo.batch = c.batch;
  geo.channels = c.channels;
  geo.groups = c.groups;
  geo.cpg = c.channels / c.groups;
  geo.spatial = c.spatial;
  geo.n_stride = c.channels * c.spatial;
  geo.cl = (c.layout == Layout::kChannelsLast || c.spatial == 1) ? 1 : 0;
  if (geo.cl) {
    geo.rows = c.spatial;
    geo.cols = geo.cpg;
    geo.row_stride = c.channels;
    geo.group_offset = geo.cpg;
  } else {
    geo.rows = geo.cpg;
    geo.cols = c.spatial;
    geo.row_stride = c.spatial;
    geo.group_offset = geo.cpg * c.spatial;
  }

  if (c.spatial == 0) {
    geo.group_offset = 0; // no element: every group starts at offset 0 (no arithmetic on a null x)
  }

  // 1. Vector width.
  int vec = static_cast<int>(16 / elem);
  if (t.vector_width > 0 && t.vector_width < vec) {
    vec = t.vector_width;
  }
  for (; vec > 1; vec /= 2) {
    bool fits = geo.cols % vec == 0 && geo.row_stride % vec == 0 && geo.group_offset % vec == 0;
    for (const kernels::Span& d : c.data) {
      fits = fits && !misaligned(d.p, elem * static_cast<std::size_t>(vec));
    }
    if (fits) {
      break;
    }
  }
  geo.colvecs = geo.cols / vec;

  const std::int64_t elements = geo.cpg * c.spatial;
  const std::int64_t vecs = geo.rows * geo.colvecs;
  const std::size_t planes = c.backward ? 2 : 1;
  const bool channel_slots = c.backward && geo.cl != 0; // team_scratch_bytes
  const std::size_t cache =
      align_up(static_cast<std::size_t>(vecs) * elem * static_cast<std::size_t>(vec), 16);
  const std::size_t warp_team = planes * cache + k::team_scratch_bytes(kWarpSize, vec, channel_slots);
  const std::size_t warp_block_smem = warp_team * k::kWarpTeamsPerBlock;
  // A block-path team is tx x ty (see "Thread shape" below). Channels first, tx <= 32 lanes walk a channel's
  // column vectors and ty rows walk the group's channels, so rows beyond pow2_ceil(C/G) would idle: the
  // block is capped there (the residency it frees serves other groups).
  const std::int64_t block_tx_cap = geo.cl ? k::kMaxBlockThreads : kWarpSize;
  const int block_tx_cols =
      std::min<int>(pow2_ceil(std::max<std::int64_t>(geo.colvecs, 1)), static_cast<int>(block_tx_cap));
  int block_threads = vecs >= 4096 ? k::kMaxBlockThreads : (vecs >= 1024 ? 256 : 128);
  if (!geo.cl) {
    const std::int64_t rows_cap =
        static_cast<std::int64_t>(pow2_ceil(std::max<std::int64_t>(geo.rows, 1))) * block_tx_cols;
    block_threads =
        static_cast<int>(std::min<std::int64_t>(block_threads, std::max<std::int64_t>(128, rows_cap)));
  }
  const std::int64_t units = c.batch * c.groups;
  // Blocks of `threads` threads one SM holds for each kernel of a path (threads, registers as compiled for
  // this device, block slots: the runtime's occupancy calculator; shared memory is added below), or 0
  // where the runtime cannot say.
  const auto residency = [&](Path p, int threads) {
    return with_activation_type(
        c.dtype,
        [&](auto tag) {
          using T = decltype(tag);
          return c.backward ? k::residency<T, true>(p, vec, geo.cl != 0, threads)
                            : k::residency<T, false>(p, vec, geo.cl != 0, threads);
        },
        k::Residency{});
  };
  // The estimate where the runtime cannot say: threads, and registers at `regs` per thread.
  const auto estimated_blocks = [&](int threads, std::int64_t regs) {
    return std::min<std::int64_t>(info.threads_per_sm / threads, k::kRegistersPerSm / (regs * threads));
  };
  // Blocks of a kernel an SM holds: `queried` (or the estimate) and shared memory (1 KB reserved per block).
  const auto with_smem = [&](std::int64_t queried, std::size_t smem) {
    return std::clamp<std::int64_t>(
        std::min(queried, static_cast<std::int64_t>(info.smem_per_sm) /
                              static_cast<std::int64_t>(smem + k::kReservedSmemPerBlock)),
        1, k::kMaxBlocksPerSm);
  };
  // Block-path blocks of a given size one SM holds (k::kCachedRegs*: the estimate, from ptxas).
  const auto blocks_per_sm = [&](int threads) {
    const std::size_t smem = planes * cache + k::team_scratch_bytes(threads, vec, channel_slots);
    const int queried = residency(Path::kBlock, threads).first;
    return with_smem(
        queried > 0 ? queried
                    : estimated_blocks(threads, c.backward ? k::kCachedBackwardRegs : k::kCachedForwardRegs),
        smem);
  };
  // Waves: a block-path group is a block, so the last wave of groups can leave most SMs idle (shape 3 in
  // bf16: 512 groups, 3 blocks of 256 threads per SM = 396 a wave, so a second wave 29 % full). A smaller
  // block is taken when it needs fewer waves and no more time: a block's time is taken as proportional to
  // its vectors per thread (latency-bound streaming), so the cost is waves / threads.
  const auto waves = [&](int threads) {
    return ceil_div(units, static_cast<std::int64_t>(info.sm_count) * blocks_per_sm(threads));
  };
  // Channels first only: channels-last groups are read as C/G-channel slivers of each row (16 bytes of a
  // 512-byte row for bf16 shape 3), which need every thread an SM holds to hide their latency; halving
  // their blocks made shape 3 channels last slower on an H100 (fp32 forward 64.2 -> 75.1 us, bf16
  // backward 88.2 -> 101.9 us) while channels first gained (bf16 forward 31.6 -> 25.9 us).
  for (int smaller = block_threads / 2; !geo.cl && smaller >= 128 && units > 0; smaller /= 2) {
    const std::int64_t w_now = waves(block_threads);
    const std::int64_t w_smaller = waves(smaller);
    if (w_smaller < w_now && w_smaller * block_threads <= w_now * smaller) {
      block_threads = smaller;
    }
  }
  const std::size_t block_smem = planes * cache + k::team_scratch_bytes(block_threads, vec, channel_slots);
  const std::size_t optin = static_cast<std::size_t>(info.smem_per_block_optin);
  const std::size_t block_cap = t.block_max_bytes > 0 ? static_cast<std::size_t>(t.block_max_bytes) : optin;
  const bool warp_fits = warp_block_smem <= optin;
  const bool block_fits = block_smem <= block_cap && block_smem <= optin;
  const std::int64_t warp_max = t.warp_max_elements > 0 ? t.warp_max_elements : kDefaultWarpMaxElements;
  const std::int64_t min_split = t.min_split_elements > 0 ? t.min_split_elements : kDefaultMinSplitElements;
  // The block path reads x (and dy) once; the split path twice, but with the whole GPU busy. The block path
  // wins when the groups it can hold on chip at once keep enough bytes in flight (Little's law: bandwidth x
  // latency, kInFlightBytesPerSm per SM) to stream at least at the fraction of full bandwidth that its
  // smaller byte count allows: forward x + y against 2 x + y (2/3), backward x + dy + dx against
  // 2 x + 2 dy + dx (3/5). Resident groups: SMs x blocks per SM (threads, shared memory with 1 KB per block
  // reserved by the hardware, and estimated registers: blocks_per_sm). Bytes in flight per active thread: the
  // unrolled loads of `visit` (kUnroll vectors, of x and of dy in the backward) when a thread has at least
  // kUnroll vectors along its walk (positions channels last, column vectors channels first), else one.
  const int block_tx = std::min<int>(block_tx_cols, block_threads);
  const std::int64_t block_ty = block_threads / block_tx;
  const std::int64_t block_active =
      std::min<std::int64_t>(geo.colvecs, block_tx) * std::min<std::int64_t>(geo.rows, block_ty);
  const std::int64_t walk = geo.cl ? ceil_div(geo.rows, block_ty) : ceil_div(geo.colvecs, block_tx);
  const double loads_in_flight = (walk >= k::kUnroll ? k::kUnroll : 1) * static_cast<double>(planes);
  const double resident =
      static_cast<double>(std::min<std::int64_t>(units, info.sm_count * blocks_per_sm(block_threads)));
  const double in_flight =
      resident * static_cast<double>(block_active) * loads_in_flight * static_cast<double>(vec * elem);
  const double needed = static_cast<double>(info.sm_count) * k::kInFlightBytesPerSm;
  const double byte_ratio = c.backward ? 3.0 / 5.0 : 2.0 / 3.0;
  const bool block_streams = in_flight >= byte_ratio * needed;

  // A tensor-size threshold: the tuning's value when set, else a per-SM default times the SMs.
  const auto bytes_knob = [&](std::int64_t knob, std::int64_t per_sm) {
    return knob > 0 ? knob : static_cast<std::int64_t>(info.sm_count) * per_sm;
  };
  // Tile path (channels last): one thread per column vector of a whole row, so C / N <= kTileMaxThreads.
  const std::int64_t row_vecs = c.channels / vec;
  const bool tile_fits = geo.cl != 0 && row_vecs <= k::kTileMaxThreads;
  const std::int64_t x_bytes = c.batch * c.channels * c.spatial * static_cast<std::int64_t>(elem);
  const bool tile_wins = geo.cpg * static_cast<std::int64_t>(elem) < k::kTileSliverBytes &&
                         x_bytes >= bytes_knob(t.tile_min_bytes, k::kTileMinBytesPerSm);

  // Channels first: a tensor too small to stream takes the block path whenever it fits (kSplitMinBytesPerSm).
  const bool small_tensor = geo.cl == 0 && x_bytes < bytes_knob(t.split_min_bytes, k::kSplitMinBytesPerSm);

  // 2-5. Path.
  Path path = t.path;
  if (path == Path::kAuto) {
    if (t.splits > 0) {
      path = Path::kSplit;
    } else if (elements <= warp_max && warp_fits) {
      path = Path::kWarp;
    } else if (tile_fits && tile_wins) {
      path = Path::kTile;
    } else if (block_fits && (block_streams || elements < 2 * min_split || small_tensor)) {
      path = Path::kBlock;
    } else {
      path = Path::kSplit;
    }
  } else if (path == Path::kWarp && !warp_fits) {
    return set_error(Status::kErrorInvalidValue,
                     "%s: tuning.path: a group of %lld elements does not fit a warp's shared memory", op,
                     static_cast<long long>(elements));
  } else if (path == Path::kTile && !tile_fits) {
    return set_error(Status::kErrorInvalidValue,
                     "%s: tuning.path: the tile path needs the channels-last view (channels last, or spatial "
                     "1) and at most %d vectors per row (C / N = %lld)",
                     op, k::kTileMaxThreads, static_cast<long long>(row_vecs));
  } else if (path == Path::kBlock && !block_fits) {
    return set_error(Status::kErrorInvalidValue,
                     "%s: tuning.path: a group of %lld elements does not fit a block's shared memory", op,
                     static_cast<long long>(elements));
  }

  k::Plan plan{};
  plan.path = path;
  plan.vec = vec;
  geo.splits = 1;
  geo.chunk = geo.cl ? geo.rows : geo.colvecs;
  geo.csplits = 1;
  geo.cchunk = geo.cl ? geo.colvecs : geo.rows;
  geo.ssplits = 1;
  int team = kWarpSize;
  if (path == Path::kWarp) {
    plan.threads = static_cast<unsigned>(kWarpSize * k::kWarpTeamsPerBlock);
    plan.smem = warp_block_smem;
    // Capped so that the grid's warp teams (Team::count, an int) stay below 2^31; the kernels stride.
    plan.grid = static_cast<unsigned>(
        std::min<std::int64_t>(ceil_div(units, k::kWarpTeamsPerBlock), kMaxGrid / k::kWarpTeamsPerBlock));
  } else if (path == Path::kBlock) {
    team = block_threads;
    plan.threads = static_cast<unsigned>(block_threads);
    plan.smem = block_smem;
    plan.grid = static_cast<unsigned>(std::min<std::int64_t>(units, kMaxGrid));
  } else if (path == Path::kTile) {
    // A block of V x k threads per tile (group_norm_tile_kernels.cuh); tiles of `chunk` rows, T per sample.
    const int V = static_cast<int>(row_vecs);
    const int rows_at_once = std::max(1, k::kTileThreads / V);
    team = V * rows_at_once;
    // Empty tensors (batch or spatial 0) plan one empty tile per sample: its partial merges as nothing.
    const std::int64_t batch = std::max<std::int64_t>(c.batch, 1);
    const std::int64_t spatial = std::max<std::int64_t>(c.spatial, 1);
    std::int64_t chunk = t.tile_rows;
    if (chunk == 0) {
      // Blocks an SM holds of each of the two streaming kernels (the statistics kernel's shared memory
      // counted); the estimate, kTile*Regs for both, where the runtime cannot say.
      const k::Residency queried = residency(Path::kTile, team);
      const std::int64_t estimate =
          estimated_blocks(team, c.backward ? k::kTileBackwardRegs : k::kTileForwardRegs);
      const std::size_t first_smem =
          c.backward ? k::tile_backward_smem(team, vec) : k::tile_forward_smem(team);
      const std::int64_t resident[2] = {with_smem(queried.first > 0 ? queried.first : estimate, first_smem),
                                        with_smem(queried.second > 0 ? queried.second : estimate, 0)};
      // At least kTileWaves full waves of the kernel that holds fewer blocks, N * T <= that target; each
      // thread walks at least kUnroll rows.
      const std::int64_t target =
          t.target_blocks > 0
              ? t.target_blocks
              : static_cast<std::int64_t>(info.sm_count) * std::min(resident[0], resident[1]) * k::kTileWaves;
      const std::int64_t most =
          std::min(std::max<std::int64_t>(1, spatial / (rows_at_once * k::kUnroll)), k::kMaxTiles);
      std::int64_t tiles = std::clamp<std::int64_t>(target / batch, 1, most);
      if (t.target_blocks == 0 && t.wave_balance == 0) {
        // Then up to twice as many tiles where that fills the two kernels' last waves better.
        const std::int64_t slots[2] = {info.sm_count * resident[0], info.sm_count * resident[1]};
        tiles = kernels::balance_waves(tiles, std::min(2 * tiles, most), batch, spatial, slots,
                                       c.backward ? kBackwardPasses : kForwardPasses);
      }
      chunk = ceil_div(spatial, tiles);
    }
    // N * T + C / 8 < 2^31: the dx kernel adds a dgamma / dbeta block per 8 channels (C <= 8 x 512 here).
    const std::int64_t tile_grid_cap = kMaxGrid - k::kTileMaxThreads;
    chunk = std::max(chunk, ceil_div(spatial, std::max<std::int64_t>(1, tile_grid_cap / batch)));
    chunk = std::max(chunk, ceil_div(spatial, k::kMaxTiles));
    geo.chunk = std::min(chunk, spatial);
    geo.splits = ceil_div(spatial, geo.chunk);
    geo.ssplits = geo.splits;
    geo.tx = V;
    geo.ty = rows_at_once;
    plan.threads = static_cast<unsigned>(team);
    plan.smem = c.backward ? k::tile_backward_smem(team, vec) : k::tile_forward_smem(team);
    plan.smem_optin = plan.smem > kNoOptinSmem;
    // The tile kernels stride over units: a batch above the cap (T = 1) runs in a capped grid.
    plan.grid = static_cast<unsigned>(std::min<std::int64_t>(c.batch * geo.splits, tile_grid_cap));
    if (t.max_blocks > 0) {
      plan.grid = static_cast<unsigned>(std::min<std::int64_t>(plan.grid, t.max_blocks));
    }
    out->plan = plan;
    out->geo = geo;
    out->units = units;
    return Status::kSuccess;
  } else {
    team = k::kSplitThreads;
    // The spatial axis and the channel axis in their units (rows or column vectors). Chunks cut the spatial
    // axis; where it is shorter than the chunks wanted (a huge group over few positions: [1, 2^20] with
    // G = 1, or [1, 4, 65536] channels last), the channel axis takes them (below).
    const std::int64_t axis = geo.cl ? geo.rows : geo.colvecs;
    const std::int64_t channel_axis = geo.cl ? geo.colvecs : geo.rows;
    const std::int64_t cells =
        std::max<std::int64_t>(axis, 1) * std::max<std::int64_t>(channel_axis, 1); // <= 2^31 vectors
    std::int64_t splits = t.splits;
    const std::int64_t unit_cap = units > 0 ? kMaxGrid / units : 1; // keeps N * G * splits below 2^31
    const std::int64_t most =
        std::max<std::int64_t>(1, std::min({k::kMaxSplits, cells, std::max<std::int64_t>(unit_cap, 1)}));
    if (splits == 0) {
      const std::int64_t target = t.target_blocks > 0 ? t.target_blocks
                                                      : 2 * static_cast<std::int64_t>(info.sm_count) *
                                                            (info.threads_per_sm / k::kSplitThreads);
      splits = units > 0 ? ceil_div(target, units) : 1;
      const std::int64_t by_size = std::max<std::int64_t>(1, elements / min_split);
      splits = std::clamp<std::int64_t>(std::min(splits, by_size), 1, most);
      if (t.target_blocks == 0 && t.wave_balance == 0 && units > 0 && splits <= axis) {
        // Then up to twice as many chunks (each still of at least min_split elements) where that fills the
        // two kernels' last waves better: blocks an SM holds of each by registers, threads and the reduction
        // scratch. Where the runtime cannot say, S stays.
        const k::Residency queried = residency(Path::kSplit, k::kSplitThreads);
        if (queried.first > 0 && queried.second > 0) {
          const std::size_t smem = k::team_scratch_bytes(k::kSplitThreads, vec, channel_slots);
          const std::int64_t slots[2] = {info.sm_count * with_smem(queried.first, smem),
                                         info.sm_count * with_smem(queried.second, smem)};
          splits = kernels::balance_waves(splits, std::min({2 * splits, by_size, most, axis}), units, axis,
                                          slots, c.backward ? kBackwardPasses : kForwardPasses);
        }
      }
    }
    splits = std::clamp<std::int64_t>(splits, 1, most);
    // S chunks along the spatial axis where it is that long. A shorter spatial axis is kept whole and the
    // channel axis takes the chunks (up to one per channel-axis unit; then the spatial axis floor(S / that)):
    // a unit then spans every position, which the kernels walk with kUnroll loads in flight (channels last,
    // each thread walks its column vector down the rows; one position per unit left one load per thread in
    // flight). The count stays within S, so each chunk keeps its min_split elements.
    std::int64_t spatial_chunks = std::min(splits, std::max<std::int64_t>(axis, 1));
    std::int64_t channel_chunks = 1;
    if (splits > std::max<std::int64_t>(axis, 1)) {
      channel_chunks = std::min(splits, std::max<std::int64_t>(channel_axis, 1));
      spatial_chunks = std::clamp<std::int64_t>(splits / channel_chunks, 1, std::max<std::int64_t>(axis, 1));
    }
    geo.chunk = std::max<std::int64_t>(1, ceil_div(axis, spatial_chunks));
    geo.cchunk = std::max<std::int64_t>(1, ceil_div(channel_axis, channel_chunks));
    geo.csplits = channel_axis > 0 ? ceil_div(channel_axis, geo.cchunk) : 1;
    geo.ssplits = axis > 0 ? ceil_div(axis, geo.chunk) : 1;
    geo.splits = geo.ssplits * geo.csplits;
    plan.threads = static_cast<unsigned>(k::kSplitThreads);
    plan.smem = k::team_scratch_bytes(k::kSplitThreads, vec, channel_slots);
    plan.grid = static_cast<unsigned>(std::min<std::int64_t>(units * geo.splits, kMaxGrid));
  }
  plan.smem_optin = plan.smem > kNoOptinSmem;

  // Thread shape inside a team.
  // A unit's extent along each axis of the view (a chunk's, on the split path).
  const std::int64_t cols_in_unit = std::max<std::int64_t>(geo.cl ? geo.cchunk : geo.chunk, 1);
  const std::int64_t rows_in_unit = std::max<std::int64_t>(geo.cl ? geo.chunk : geo.cchunk, 1);
  if (geo.cl) {
    geo.tx = std::min(pow2_ceil(cols_in_unit), team);
  } else if (c.backward || path == Path::kWarp) {
    // The backward's per-channel sums shuffle across the tx lanes: tx <= 32.
    geo.tx = std::min(pow2_ceil(cols_in_unit), kWarpSize);
  } else {
    // The forward reduces over the whole team only, so tx x ty is free: the shape that idles the fewest
    // threads (ties: more rows, fewer batches per thread). With tx <= 32 a 256-thread team had ty = 8 rows
    // for C/G = 4 (VAE shape: half the threads idle, the H100 run's normalize kernel at 41 % of DRAM
    // bandwidth) and 16 slots for C/G = 10 (UNet C = 320).
    double best = -1.0;
    for (int ty = 1; ty <= team; ty *= 2) {
      const int tx = team / ty;
      const double row_use =
          static_cast<double>(rows_in_unit) / static_cast<double>(ceil_div(rows_in_unit, ty) * ty);
      const double col_use =
          static_cast<double>(cols_in_unit) / static_cast<double>(ceil_div(cols_in_unit, tx) * tx);
      if (row_use * col_use >= best) {
        best = row_use * col_use;
        geo.tx = tx;
      }
    }
  }
  geo.ty = team / geo.tx;
  if (t.max_blocks > 0) { // the kernels stride over their units
    plan.grid = static_cast<unsigned>(std::min<std::int64_t>(plan.grid, t.max_blocks));
  }

  out->plan = plan;
  out->geo = geo;
  out->units = units;
  return Status::kSuccess;
}

Common forward_common(const GroupNormArgs& a) {
  Common c{};
  c.op = kForwardOp;
  c.backward = false;
  c.dtype = a.dtype;
  c.layout = a.layout;
  c.batch = a.batch;
  c.channels = a.channels;
  c.spatial = a.spatial;
  c.groups = a.groups;
  c.activation = a.activation;
  c.mask = a.mask;
  c.data[0] = {"x", a.x, 0};
  c.data[1] = {"y", a.y, 0};
  c.data[2] = {"", nullptr, 0};
  c.tuning = a.tuning;
  return c;
}

Common backward_common(const GroupNormBackwardArgs& a) {
  Common c{};
  c.op = kBackwardOp;
  c.backward = true;
  c.dtype = a.dtype;
  c.layout = a.layout;
  c.batch = a.batch;
  c.channels = a.channels;
  c.spatial = a.spatial;
  c.groups = a.groups;
  c.activation = a.activation;
  c.mask = a.mask;
  c.data[0] = {"x", a.x, 0};
  c.data[1] = {"dy", a.dy, 0};
  c.data[2] = {"dx", a.dx, 0};
  c.tuning = a.tuning;
  return c;
}

Status validate_forward(const GroupNormArgs& a) {
  const Common c = forward_common(a);
  if (Status s = validate_common(c); !ok(s)) {
    return s;
  }
  const char* op = kForwardOp;
  const std::int64_t elements = a.batch * a.channels * a.spatial;
  if (elements > 0 && a.x == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: x: null", op);
  }
  if (elements > 0 && a.y == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: y: null", op);
  }
  if (!(a.epsilon > 0.0f) || !std::isfinite(a.epsilon)) {
    return set_error(Status::kErrorInvalidValue, "%s: epsilon: %g, must be positive and finite", op,
                     static_cast<double>(a.epsilon));
  }
  if (Status s = check_aligned(
          op, {{"gamma", a.gamma, 0}, {"beta", a.beta, 0}, {"mean", a.mean, 0}, {"rstd", a.rstd, 0}},
          sizeof(float));
      !ok(s)) {
    return s;
  }
  const std::size_t bytes = static_cast<std::size_t>(elements) * dtype_bytes(a.dtype);
  if (a.x != a.y && overlaps(a.x, bytes, a.y, bytes)) {
    return set_error(Status::kErrorInconsistentArguments, "%s: y: overlaps x without being x (in place)", op);
  }
  // y == x (in place) is checked above; every output against the other outputs and the inputs.
  const std::size_t stat_bytes = static_cast<std::size_t>(a.batch * a.groups) * sizeof(float);
  const std::size_t cbytes = static_cast<std::size_t>(a.channels) * sizeof(float);
  return check_disjoint(op, {{"y", a.y, bytes}, {"mean", a.mean, stat_bytes}, {"rstd", a.rstd, stat_bytes}},
                        {{"x", a.x == a.y ? nullptr : a.x, bytes},
                         {"gamma", a.gamma, cbytes},
                         {"beta", a.beta, cbytes},
                         {"mask", a.mask, static_cast<std::size_t>(a.batch * a.spatial)}});
}

Status validate_backward(const GroupNormBackwardArgs& a) {
  const Common c = backward_common(a);
  if (Status s = validate_common(c); !ok(s)) {
    return s;
  }
  const char* op = kBackwardOp;
  const std::int64_t elements = a.batch * a.channels * a.spatial;
  const struct {
    const void* p;
    const char* name;
  } required[] = {{a.x, "x"}, {a.dy, "dy"}, {a.dx, "dx"}, {a.mean, "mean"}, {a.rstd, "rstd"}};
  if (elements > 0) {
    for (const auto& r : required) {
      if (r.p == nullptr) {
        return set_error(Status::kErrorNullPointer, "%s: %s: null", op, r.name);
      }
    }
  }
  if (Status s = check_aligned(op,
                               {{"mean", a.mean, 0},
                                {"rstd", a.rstd, 0},
                                {"gamma", a.gamma, 0},
                                {"beta", a.beta, 0},
                                {"dgamma", a.dgamma, 0},
                                {"dbeta", a.dbeta, 0}},
                               sizeof(float));
      !ok(s)) {
    return s;
  }
  // dgamma / dbeta: channel_sums_kernel's grid is one block per kFinalThreadsX channels (not strided).
  if ((a.dgamma != nullptr || a.dbeta != nullptr) &&
      (a.channels + k::kFinalThreadsX - 1) / k::kFinalThreadsX > (std::numeric_limits<std::int32_t>::max)()) {
    return set_error(Status::kErrorSizeLimit, "%s: dgamma: %lld channels exceed %lld (2^31 - 1 blocks of %d)",
                     op, static_cast<long long>(a.channels),
                     static_cast<long long>(k::kFinalThreadsX) * (std::numeric_limits<std::int32_t>::max)(),
                     k::kFinalThreadsX);
  }
  const std::size_t bytes = static_cast<std::size_t>(elements) * dtype_bytes(a.dtype);
  const std::size_t stat_bytes = static_cast<std::size_t>(a.batch * a.groups) * sizeof(float);
  const std::size_t cbytes = static_cast<std::size_t>(a.channels) * sizeof(float);
  return check_disjoint(op, {{"dx", a.dx, bytes}, {"dgamma", a.dgamma, cbytes}, {"dbeta", a.dbeta, cbytes}},
                        {{"x", a.x, bytes},
                         {"dy", a.dy, bytes},
                         {"mean", a.mean, stat_bytes},
                         {"rstd", a.rstd, stat_bytes},
                         {"gamma", a.gamma, cbytes},
                         {"beta", a.beta, cbytes},
                         {"mask", a.mask, static_cast<std::size_t>(a.batch * a.spatial)}});
}

/// Forward workspace: split and tile paths, the per-chunk Welford triples; tile path, then the merged
/// (mean, rstd) pairs.
std::size_t forward_stats_offset(const Planned& pl) {
  return align_up(static_cast<std::size_t>(pl.units * pl.geo.splits) * 3 * sizeof(float), kWorkspaceAlign);
}

std::size_t forward_workspace(const Planned& pl) {
  if ((pl.plan.path != Path::kSplit && pl.plan.path != Path::kTile) || pl.units == 0) {
    return 0;
  }
  if (pl.plan.path == Path::kTile) {
    return forward_stats_offset(pl) + static_cast<std::size_t>(pl.units) * 2 * sizeof(float) +
           kWorkspaceAlign;
  }
  return static_cast<std::size_t>(pl.units * pl.geo.splits) * 3 * sizeof(float) + kWorkspaceAlign;
}

struct BackwardCarve {
  std::size_t group_bytes;  // split and tile paths: per-chunk group triples
  std::size_t totals_bytes; // tile path: per-group totals
  std::size_t channel_bytes;
};

BackwardCarve backward_carve(const GroupNormBackwardArgs& a, const Planned& pl) {
  BackwardCarve b{0, 0, 0};
  // Without elements (batch or spatial 0) no backward kernel runs (run's has_elements; dgamma / dbeta are
  // sums over no rows): no workspace.
  if (pl.units == 0 || a.spatial == 0) {
    return b;
  }
  if (pl.plan.path == Path::kSplit || pl.plan.path == Path::kTile) {
    b.group_bytes =
        align_up(static_cast<std::size_t>(pl.units * pl.geo.splits) * 3 * sizeof(float), kWorkspaceAlign);
  }
  if (pl.plan.path == Path::kTile) {
    b.totals_bytes = align_up(static_cast<std::size_t>(pl.units) * 3 * sizeof(float), kWorkspaceAlign);
  }
  if (a.dgamma != nullptr || a.dbeta != nullptr) {
    b.channel_bytes = align_up(
        static_cast<std::size_t>(2 * a.batch * pl.geo.ssplits * a.channels) * sizeof(float), kWorkspaceAlign);
  }
  return b;
}

std::size_t backward_workspace(const GroupNormBackwardArgs& a, const Planned& pl) {
  const BackwardCarve b = backward_carve(a, pl);
  const std::size_t total = b.group_bytes + b.totals_bytes + b.channel_bytes;
  return total == 0 ? 0 : total + kWorkspaceAlign;
}

void* align_ptr(void* p) {
  const auto v = reinterpret_cast<std::uintptr_t>(p);
  return reinterpret_cast<void*>((v + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign);
}

} // namespace

Status check_sizes(std::int64_t batch, std::int64_t channels, std::int64_t spatial, std::int64_t groups) {
  return check_sizes_as("group_norm::check_sizes", batch, channels, spatial, groups);
}

const char* path_name(Path path) noexcept {
  switch (path) {
  case Path::kAuto:
    return "auto";
  case Path::kWarp:
    return "warp";
  case Path::kBlock:
    return "block";
  case Path::kSplit:
    return "split";
  case Path::kTile:
    return "tile";
  }
  return "unknown path";
}

Status can_implement(const GroupNormArgs& args) {
  if (Status s = validate_forward(args); !ok(s)) {
    return s;
  }
  Planned pl{};
  return make_plan(forward_common(args), &pl);
}

std::size_t workspace_size(const GroupNormArgs& args) {
  Planned pl{};
  if (!ok(validate_forward(args)) || !ok(make_plan(forward_common(args), &pl))) {
    return 0;
  }
  return forward_workspace(pl);
}

Path selected_path(const GroupNormArgs& args) {
  Planned pl{};
  if (!ok(validate_forward(args)) || !ok(make_plan(forward_common(args), &pl)) || pl.units == 0) {
    return Path::kAuto;
  }
  return pl.plan.path;
}

Status run(const GroupNormArgs& args, void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  if (Status s = validate_forward(args); !ok(s)) {
    return s;
  }
  Planned pl{};
  if (Status s = make_plan(forward_common(args), &pl); !ok(s)) {
    return s;
  }
  const std::size_t need = forward_workspace(pl);
  if (Status s = check_workspace(kForwardOp, need, workspace, workspace_bytes); !ok(s)) {
    return s;
  }
  if (pl.units == 0) {
    return Status::kSuccess;
  }
  k::ForwardParams p{};
  p.geo = pl.geo;
  p.x = args.x;
  p.y = args.y;
  p.gamma = args.gamma;
  p.beta = args.beta;
  p.mask = args.mask;
  p.mean = args.mean;
  p.rstd = args.rstd;
  p.epsilon = args.epsilon;
  p.act = static_cast<int>(args.activation);
  p.partials = need > 0 ? static_cast<float*>(align_ptr(workspace)) : nullptr;
  p.stats = pl.plan.path == Path::kTile
                ? reinterpret_cast<float*>(static_cast<unsigned char*>(align_ptr(workspace)) +
                                           forward_stats_offset(pl))
                : nullptr;
  return with_activation_type(args.dtype,
                              [&](auto tag) { return k::launch_forward<decltype(tag)>(pl.plan, p, stream); });
}

Status can_implement(const GroupNormBackwardArgs& args) {
  if (Status s = validate_backward(args); !ok(s)) {
    return s;
  }
  Planned pl{};
  return make_plan(backward_common(args), &pl);
}

std::size_t workspace_size(const GroupNormBackwardArgs& args) {
  Planned pl{};
  if (!ok(validate_backward(args)) || !ok(make_plan(backward_common(args), &pl))) {
    return 0;
  }
  return backward_workspace(args, pl);
}

Path selected_path(const GroupNormBackwardArgs& args) {
  Planned pl{};
  if (!ok(validate_backward(args)) || !ok(make_plan(backward_common(args), &pl)) || pl.units == 0 ||
      args.spatial == 0) {
    return Path::kAuto; // nothing of the path is launched (see run)
  }
  return pl.plan.path;
}

Status run(const GroupNormBackwardArgs& args, void* workspace, std::size_t workspace_bytes,
           cudaStream_t stream) {
  if (Status s = validate_backward(args); !ok(s)) {
    return s;
  }
  Planned pl{};
  if (Status s = make_plan(backward_common(args), &pl); !ok(s)) {
    return s;
  }
  const std::size_t need = backward_workspace(args, pl);
  if (Status s = check_workspace(kBackwardOp, need, workspace, workspace_bytes); !ok(s)) {
    return s;
  }
  const BackwardCarve carve = backward_carve(args, pl);
  unsigned char* base = need > 0 ? static_cast<unsigned char*>(align_ptr(workspace)) : nullptr;
  k::BackwardParams p{};
  p.geo = pl.geo;
  p.x = args.x;
  p.dy = args.dy;
  p.dx = args.dx;
  p.mean = args.mean;
  p.rstd = args.rstd;
  p.gamma = args.gamma;
  p.beta = args.beta;
  p.mask = args.mask;
  p.act = static_cast<int>(args.activation);
  p.group_partials = carve.group_bytes > 0 ? reinterpret_cast<float*>(base) : nullptr;
  p.group_totals = carve.totals_bytes > 0 ? reinterpret_cast<float*>(base + carve.group_bytes) : nullptr;
  p.channel_partials = carve.channel_bytes > 0
                           ? reinterpret_cast<float*>(base + carve.group_bytes + carve.totals_bytes)
                           : nullptr;
  p.dgamma = args.dgamma;
  p.dbeta = args.dbeta;
  // Without elements (batch or spatial 0) nothing is read: mean / rstd may be null. dgamma / dbeta are
  // still written, as sums over no partial rows (+0).
  const bool has_elements = pl.units > 0 && args.spatial > 0;
  if (has_elements) {
    if (Status s = with_activation_type(
            args.dtype, [&](auto tag) { return k::launch_backward<decltype(tag)>(pl.plan, p, stream); });
        !ok(s)) {
      return s;
    }
  }
  // dgamma / dbeta: the tile path's dx kernel sums them itself; every other plan (and no elements) here.
  if ((args.dgamma != nullptr || args.dbeta != nullptr) && args.channels > 0 &&
      !(has_elements && pl.plan.path == Path::kTile)) {
    const std::int64_t rows = has_elements ? args.batch * pl.geo.ssplits : 0;
    return k::launch_channel_sums(p, rows, stream);
  }
  return Status::kSuccess;
}

} // namespace group_norm
CULAYERS_NAMESPACE_END
