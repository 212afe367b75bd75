// Host side of the masked-reduction family: argument validation (can_implement), the dispatch heuristic
// (documented at masked_reduce::Tuning), workspace sizing and the launches. Kernels live in
// forward_<dtype>.cu, backward.cu and masking.cu.
#include "culayers/masked_reduce.hpp"

#include "kernels/common/arg_checks.hpp"
#include "kernels/common/device_info.cuh"
#include "kernels/masked/masked_reduce_internal.cuh"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>

CULAYERS_NAMESPACE_BEGIN
namespace masked_reduce {
namespace {

namespace km = ::culayers::kernels::masked;
using ::culayers::detail::set_error;

constexpr const char* kForwardOp = "masked_reduce";
constexpr const char* kBackwardOp = "masked_reduce_backward";
constexpr const char* kMaskingOp = "masking";
constexpr const char* kExpandOp = "mask_expand";

constexpr std::int64_t kMaxGrid = std::numeric_limits<std::int32_t>::max();
constexpr std::size_t kWorkspaceAlign = 256;

// ---- device properties, queried once per device ------------------------------------------------------

struct DeviceLimits {
  std::int64_t sm_count;
  std::int64_t threads_per_sm;
};

// Used when the runtime cannot answer (no device): H100 SXM's numbers; the launch then fails anyway.
constexpr DeviceLimits kFallbackLimits{132, 2048};
DeviceLimits device_limits() {
  kernels::DeviceInfo info{};
  if (kernels::device_info(&info, nullptr) != Status::kSuccess) {
    return kFallbackLimits;
  }
  return DeviceLimits{info.sm_count, info.threads_per_sm};
}

// ---- small helpers -------------------------------------------------------------------------------

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}
std::int64_t round_up(std::int64_t a, std::int64_t b) {
  return ceil_div(a, b) * b;
}
std::size_t align_up(std::size_t v, std::size_t a) {
  return (v + a - 1) / a * a;
}

/// The widest N (power of two, N * elem <= 16, N <= cap) with `row` % N == 0 and every non-null
/// pointer aligned to N * elem bytes.
int widest_vector(std::size_t elem, std::int64_t row, std::initializer_list<const void*> pointers, int cap) {
  int n = static_cast<int>(16 / elem);
  if (cap > 0 && cap < n) {
    n = cap;
  }
  for (; n > 1; n /= 2) {
    bool good = row % n == 0;
    for (const void* p : pointers) {
      good = good && (p == nullptr || !kernels::misaligned(p, static_cast<std::size_t>(n) * elem));
    }
    if (good) {
      break;
    }
  }
  return n;
}

/// Vector stores of width N move chunks of min(N, 16 / elem) elements: the alignment they need.
bool span_aligned(const void* p, int n, std::size_t elem) {
  const std::size_t chunk = std::min<std::size_t>(static_cast<std::size_t>(n), 16 / elem);
  return p == nullptr || !kernels::misaligned(p, chunk * elem);
}

bool valid_dtype(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}
bool valid_op(ReduceOp op) {
  return static_cast<int>(op) >= 0 && static_cast<int>(op) <= static_cast<int>(ReduceOp::kMoments);
}
bool valid_validity(Validity v) {
  return static_cast<int>(v) >= 0 && static_cast<int>(v) <= static_cast<int>(Validity::kLengths);
}
bool is_extremum(ReduceOp op) {
  return op == ReduceOp::kMax || op == ReduceOp::kMin;
}

km::AccKind acc_kind(ReduceOp op) {
  switch (op) {
  case ReduceOp::kMax:
    return km::AccKind::kMax;
  case ReduceOp::kMin:
    return km::AccKind::kMin;
  case ReduceOp::kMoments:
    return km::AccKind::kMoments;
  default:
    return km::AccKind::kSum;
  }
}

// Whether every tensor of an [outer, R, inner] problem has 64-bit byte offsets: x (outer x R x inner), the
// outputs (outer x inner), the mask (outer x R), each in elements of up to 16 bytes. Checked pairwise too,
// so a zero factor cannot hide an overflowing product of the other two.
bool sizes_fit(std::int64_t outer, std::int64_t reduce, std::int64_t inner) {
  std::int64_t steps = 0; // outer x R
  std::int64_t n = 0;
  return detail::checked_mul(outer, reduce, &steps) && detail::checked_mul(steps, 16, &n) &&
         detail::checked_mul(outer, inner, &n) && detail::checked_mul(n, 16, &n) &&
         detail::checked_mul(reduce, inner, &n) && detail::checked_mul(n, 16, &n) &&
         detail::checked_mul(steps, inner, &n) && detail::checked_mul(n, 16, &n);
}

// Sizes >= 0, the first check of both size checks below.
Status check_nonnegative(const char* op, std::int64_t outer, std::int64_t reduce, std::int64_t inner) {
  if (outer < 0 || reduce < 0 || inner < 0) {
    return set_error(Status::kErrorInvalidShape, "%s: sizes: outer %lld, R %lld, inner %lld must be >= 0", op,
                     static_cast<long long>(outer), static_cast<long long>(reduce),
                     static_cast<long long>(inner));
  }
  return Status::kSuccess;
}

// The size limits of masked_reduce::check_sizes, reported as `op`.
Status check_sizes_as(const char* op, std::int64_t outer, std::int64_t reduce, std::int64_t inner) {
  if (Status st = check_nonnegative(op, outer, reduce, inner); !ok(st)) {
    return st;
  }
  if (reduce > std::numeric_limits<std::int32_t>::max()) {
    return set_error(Status::kErrorSizeLimit,
                     "%s: reduce: R = %lld exceeds 2^31 - 1 (int32 indices and counts)", op,
                     static_cast<long long>(reduce));
  }
  if (!sizes_fit(outer, reduce, inner)) {
    return set_error(Status::kErrorSizeLimit,
                     "%s: sizes: outer x R x inner (or one of its partial products) overflows 64-bit byte "
                     "offsets",
                     op);
  }
  return Status::kSuccess;
}

// The size limits of masked_reduce::check_masking_sizes, reported as `op`.
Status check_masking_sizes_as(const char* op, std::int64_t outer, std::int64_t reduce, std::int64_t inner) {
  if (Status st = check_nonnegative(op, outer, reduce, inner); !ok(st)) {
    return st;
  }
  // Masking's tensors are x and y [outer, R, inner] and the mask [outer, R] (no [outer, inner] output).
  std::int64_t n = 0;
  if (!detail::checked_mul(outer, reduce, &n) || !detail::checked_mul(n, 16, &n) ||
      !detail::checked_mul(outer * reduce, inner, &n) || !detail::checked_mul(n, 16, &n)) {
    return set_error(Status::kErrorSizeLimit,
                     "%s: sizes: outer x R (the mask) or outer x R x inner overflows 64-bit byte offsets",
                     op);
  }
  return Status::kSuccess;
}

// Sizes, dtype and validity checks shared by the forward and the backward.
Status check_common(const char* op, ReduceOp rop, DType dtype, std::int64_t outer, std::int64_t reduce,
                    std::int64_t inner, Validity validity, const std::uint8_t* mask,
                    const std::int32_t* lengths) {
  if (!valid_op(rop)) {
    return set_error(Status::kErrorInvalidValue, "%s: op: %d is not a ReduceOp", op, static_cast<int>(rop));
  }
  if (!valid_dtype(dtype)) {
    return set_error(Status::kErrorInvalidDType, "%s: dtype: %s (%d) is not float32, float16 or bfloat16", op,
                     dtype_name(dtype), static_cast<int>(dtype));
  }
  if (Status st = check_sizes_as(op, outer, reduce, inner); !ok(st)) {
    return st;
  }
  if (!valid_validity(validity)) {
    return set_error(Status::kErrorInvalidValue, "%s: validity: %d is not a Validity", op,
                     static_cast<int>(validity));
  }
  if (validity != Validity::kMask && mask != nullptr) {
    return set_error(Status::kErrorInconsistentArguments, "%s: mask: given, but validity is not kMask", op);
  }
  if (validity != Validity::kLengths && lengths != nullptr) {
    return set_error(Status::kErrorInconsistentArguments, "%s: lengths: given, but validity is not kLengths",
                     op);
  }
  if (validity == Validity::kMask && mask == nullptr && outer * reduce > 0) {
    return set_error(Status::kErrorNullPointer, "%s: mask: is null with validity kMask", op);
  }
  if (validity == Validity::kLengths && lengths == nullptr && outer > 0) {
    return set_error(Status::kErrorNullPointer, "%s: lengths: is null with validity kLengths", op);
  }
  if (kernels::misaligned(lengths, 4)) {
    return set_error(Status::kErrorMisaligned, "%s: lengths: not aligned to 4 bytes", op);
  }
  return Status::kSuccess;
}

Status check_vector_width(const char* op, const char* arg, int width) {
  if (width < 0 || width > 16 || (width & (width - 1)) != 0) {
    return set_error(Status::kErrorInvalidValue, "%s: %s: %d is not 0 or a power of two <= 16", op, arg,
                     width);
  }
  return Status::kSuccess;
}

// ---- forward plan ------------------------------------------------------------------------------------

struct ForwardPlan {
  km::ForwardLaunch launch{};
  int tx = 0;
  int ty = 0;
  std::int64_t col_blocks = 1;
  std::int64_t splits = 1;
  std::int64_t rows_per_split = 1;
  // Workspace regions (offsets from the 256-aligned base) and total bytes with slack.
  std::size_t off_a = 0;
  std::size_t off_b = 0;
  std::size_t off_idx = 0;
  std::size_t off_count = 0;
  std::size_t workspace = 0;
};

// Precondition: can_implement(args) succeeded and outer * inner > 0.
ForwardPlan plan_forward(const MaskedReduceArgs& a) {
  const Tuning& t = a.tuning;
  const std::size_t elem = dtype_size(a.dtype);
  const DeviceLimits dev = device_limits();
  const std::int64_t narrow_target =
      t.target_threads > 0 ? t.target_threads : dev.sm_count * dev.threads_per_sm;
  const std::int64_t narrow_max_inner =
      std::min<std::int64_t>(t.narrow_max_inner > 0 ? t.narrow_max_inner : km::kDefaultNarrowMaxInner, 32);
  const std::int64_t narrow_max_row = t.narrow_max_row > 0 ? t.narrow_max_row : km::kDefaultNarrowMaxRow;
  const std::int64_t min_rows =
      t.min_rows_per_thread > 0 ? t.min_rows_per_thread : km::kDefaultMinRowsPerThread;
  const std::int64_t r_cap = std::max<std::int64_t>(a.reduce, 1);

  Path path = t.path;
  if (t.splits > 0) {
    path = Path::kSplit;
  }
  if (path == Path::kAuto && a.inner <= narrow_max_inner &&
      (a.outer * km::kWarpSize >= narrow_target || a.reduce * a.inner <= narrow_max_row)) {
    path = Path::kNarrow;
  }

  ForwardPlan plan;
  const int narrow_vec = a.inner == 1 ? widest_vector(elem, a.reduce, {a.x}, t.vector_width) : 1;
  const auto narrow_plan = [&] {
    int groups = 1;
    while (groups * 2 * a.inner <= km::kWarpSize) {
      groups *= 2;
    }
    const std::int64_t warps_per_block = km::kNarrowThreads / km::kWarpSize;
    plan.launch.path = Path::kNarrow;
    plan.launch.vec = narrow_vec;
    plan.launch.threads = km::kNarrowThreads;
    plan.launch.grid = static_cast<unsigned>(std::min(ceil_div(a.outer, warps_per_block), kMaxGrid));
    plan.tx = groups;
    plan.ty = 1;
    return plan;
  };
  if (path == Path::kNarrow) {
    return narrow_plan();
  }

  const int vec = widest_vector(elem, a.inner, {a.x}, t.vector_width);
  const std::int64_t vecs = a.inner / vec;
  // Column blocks of at most kMaxTx vectors, balanced (65 vectors: 3 blocks of 22, not 32 + 32 + 1).
  std::int64_t col_blocks = ceil_div(vecs, km::kMaxTx);
  const std::int64_t tx = ceil_div(vecs, col_blocks);
  col_blocks = ceil_div(vecs, tx);
  const std::size_t slot = static_cast<std::size_t>(vec) * km::acc_bytes(acc_kind(a.op)) + 4;
  const std::int64_t smem_threads =
      static_cast<std::int64_t>((km::kWideSmemBudget - 2 * km::kMaskTile - 16) / slot) / km::kWarpSize *
      km::kWarpSize;
  const std::int64_t max_threads = std::min<std::int64_t>(km::kWideMaxThreads, smem_threads);
  const std::int64_t max_ty = std::max<std::int64_t>(1, max_threads / tx);
  // Blocks of `threads` resident on the whole GPU (see `target` in masked_reduce_internal.cuh).
  // Threads the wide kernel keeps resident per SM (its 64-register bound).
  const std::int64_t wide_sm_threads =
      std::min<std::int64_t>(dev.threads_per_sm, km::kWideResidentWarps * km::kWarpSize);
  const auto resident_for = [&](std::int64_t threads) {
    const std::int64_t per_sm = std::max<std::int64_t>(threads, wide_sm_threads / threads * threads);
    const std::int64_t target = t.target_threads > 0 ? t.target_threads : dev.sm_count * per_sm;
    return std::max<std::int64_t>(1, target / threads);
  };
  const std::int64_t items = a.outer * col_blocks;
  // As many R lanes as the block holds while each keeps min_rows steps...
  const std::int64_t ty_max =
      std::clamp<std::int64_t>(ceil_div(a.reduce, min_rows), 1, std::min(max_ty, r_cap));
  // ...or fewer, when the blocks outnumber the resident slots and fewer lanes need fewer waves at no more
  // cost (kWaveBalance in masked_reduce_internal.cuh): cost = waves / lanes, lanes down to half.
  std::int64_t ty = ty_max;
  const auto waves_for = [&](std::int64_t lanes) {
    return ceil_div(items, resident_for(round_up(tx * lanes, km::kWarpSize)));
  };
  if (t.splits == 0 && path != Path::kSplit && waves_for(ty_max) > 1) {
    std::int64_t best = waves_for(ty_max);
    for (std::int64_t lanes = ty_max - 1; lanes >= std::max<std::int64_t>(1, ceil_div(ty_max, 2)); --lanes) {
      const std::int64_t w = waves_for(lanes);
      if (w * ty < best * lanes) {
        ty = lanes;
        best = w;
      }
    }
  }
  const std::int64_t block_threads = round_up(tx * ty, km::kWarpSize);
  const std::int64_t resident_blocks = resident_for(block_threads);

  std::int64_t splits = 1;
  if (t.splits > 0) {
    splits = std::min(t.splits, r_cap);
  } else if (path != Path::kWide) {
    // Chunks that fit in one wave, each lane keeping at least min_rows steps.
    const std::int64_t fit = resident_blocks / items;
    const std::int64_t by_rows = std::max<std::int64_t>(1, a.reduce / (ty * min_rows));
    splits = std::clamp<std::int64_t>(std::min(fit, by_rows), 1, km::kMaxSplits);
    if (path == Path::kSplit) {
      splits = std::max<std::int64_t>(splits, std::min<std::int64_t>(2, r_cap));
    }
  }
  const std::int64_t rows_per_split = ceil_div(r_cap, splits);
  splits = ceil_div(r_cap, rows_per_split);
  if (path == Path::kAuto && a.inner == 1) {
    // Single-column rows: the plan with more bytes in flight (masked_reduce_internal.cuh). Wide: its
    // resident threads, one element each; narrow: a lane per step slot of each row, up to the threads its
    // registers keep resident, N elements each.
    const std::int64_t wide_threads =
        std::min(a.outer * col_blocks * splits, resident_blocks) * block_threads;
    const std::int64_t narrow_capacity =
        (t.target_threads > 0 ? t.target_threads : dev.sm_count * wide_sm_threads) * km::kNarrowResidentNum /
        km::kNarrowResidentDen;
    const std::int64_t narrow_threads = std::min(a.outer * km::kWarpSize, narrow_capacity);
    if (narrow_threads * narrow_vec >= wide_threads * vec) {
      return narrow_plan();
    }
  }
  if (path == Path::kAuto) {
    path = splits > 1 ? Path::kSplit : Path::kWide;
  }

  plan.launch.path = path;
  plan.launch.vec = vec;
  plan.launch.threads = static_cast<unsigned>(block_threads);
  plan.launch.grid = static_cast<unsigned>(std::min(a.outer * col_blocks * splits, kMaxGrid));
  plan.launch.smem = align_up(static_cast<std::size_t>(block_threads) * slot, 8) + 2 * km::kMaskTile + 8;
  plan.tx = static_cast<int>(tx);
  plan.ty = static_cast<int>(ty);
  plan.col_blocks = col_blocks;
  plan.splits = splits;
  plan.rows_per_split = rows_per_split;
  if (path == Path::kSplit) {
    const std::size_t parts = static_cast<std::size_t>(a.outer * splits * a.inner);
    std::size_t off = 0;
    plan.off_a = off;
    off = align_up(off + parts * 4, kWorkspaceAlign);
    if (a.op == ReduceOp::kMoments) {
      plan.off_b = off;
      off = align_up(off + parts * 4, kWorkspaceAlign);
    }
    if (is_extremum(a.op)) {
      plan.off_idx = off;
      off = align_up(off + parts * 4, kWorkspaceAlign);
    }
    plan.off_count = off;
    off = align_up(off + static_cast<std::size_t>(a.outer * splits) * 4, kWorkspaceAlign);
    plan.workspace = off + kWorkspaceAlign; // slack: any workspace pointer is aligned up inside it
    plan.launch.combine_grid =
        static_cast<unsigned>(std::min(a.outer * ceil_div(a.inner, km::kCombineCols), kMaxGrid));
    plan.launch.combine_smem = 0;
  }
  return plan;
}

// ---- backward plan -----------------------------------------------------------------------------------

struct BackwardPlan {
  km::BackwardLaunch launch{};
  int tx = 0;
  int ty = 0;
  std::int64_t col_blocks = 1;
  std::int64_t splits = 1;
  std::int64_t rows_per_split = 1;
  std::size_t workspace = 0;
};

bool backward_needs_counts(const MaskedReduceBackwardArgs& a) {
  return (a.op == ReduceOp::kMean || a.op == ReduceOp::kMoments) && a.validity == Validity::kMask &&
         a.counts == nullptr;
}

// Precondition: can_implement(args) succeeded.
BackwardPlan plan_backward(const MaskedReduceBackwardArgs& a) {
  const std::size_t elem = dtype_size(a.dtype);
  const DeviceLimits dev = device_limits();
  const std::int64_t target = dev.sm_count * dev.threads_per_sm;
  const std::int64_t r_cap = std::max<std::int64_t>(a.reduce, 1);
  const bool uses_x = a.op == ReduceOp::kMoments && a.dvar != nullptr;
  const int vec = widest_vector(elem, a.inner, {a.dx, uses_x ? a.x : nullptr}, a.vector_width);
  const std::int64_t vecs = std::max<std::int64_t>(a.inner / vec, 1);
  std::int64_t col_blocks = ceil_div(vecs, km::kBackwardThreads);
  const std::int64_t tx =
      vecs <= km::kWarpSize
          ? vecs
          : std::min<std::int64_t>(round_up(ceil_div(vecs, col_blocks), km::kWarpSize), km::kBackwardThreads);
  col_blocks = ceil_div(vecs, tx);
  const std::int64_t ty = std::clamp<std::int64_t>(km::kBackwardThreads / tx, 1, r_cap);
  const std::int64_t col_threads = std::max<std::int64_t>(a.outer, 1) * col_blocks * tx * ty;
  std::int64_t splits = 0;
  if (a.row_chunks > 0) {
    splits = std::min(a.row_chunks, r_cap);
  } else {
    const std::int64_t by_rows = std::max<std::int64_t>(1, a.reduce / (ty * km::kDefaultMinRowsPerThread));
    splits = std::clamp<std::int64_t>(ceil_div(target, col_threads), 1, by_rows);
  }
  const std::int64_t rows_per_split = ceil_div(r_cap, splits);
  splits = ceil_div(r_cap, rows_per_split);

  BackwardPlan plan;
  plan.launch.vec = vec;
  plan.launch.threads = static_cast<unsigned>(round_up(tx * ty, km::kWarpSize));
  plan.launch.grid = static_cast<unsigned>(std::min(a.outer * col_blocks * splits, kMaxGrid));
  plan.launch.count_first = backward_needs_counts(a);
  plan.launch.count_grid_cap = std::max<std::int64_t>(1, target / km::kBackwardThreads);
  plan.tx = static_cast<int>(tx);
  plan.ty = static_cast<int>(ty);
  plan.col_blocks = col_blocks;
  plan.splits = splits;
  plan.rows_per_split = rows_per_split;
  if (plan.launch.count_first) {
    plan.workspace = align_up(static_cast<std::size_t>(a.outer) * 4, kWorkspaceAlign) + kWorkspaceAlign;
  }
  return plan;
}

void* align_workspace(void* workspace) {
  const std::uintptr_t p = reinterpret_cast<std::uintptr_t>(workspace);
  return reinterpret_cast<void*>((p + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign);
}

using kernels::check_workspace;

float round_to_dtype(float v, DType dtype) {
  return kernels::with_activation_type(
      dtype,
      [&](auto tag) {
        using T = decltype(tag);
        return kernels::to_float(kernels::from_float<T>(v));
      },
      std::numeric_limits<float>::quiet_NaN());
}

} // namespace

const char* path_name(Path path) noexcept {
  switch (path) {
  case Path::kAuto:
    return "auto";
  case Path::kNarrow:
    return "narrow";
  case Path::kWide:
    return "wide";
  case Path::kSplit:
    return "split";
  }
  return "unknown path";
}

Status check_sizes(std::int64_t outer, std::int64_t reduce, std::int64_t inner) {
  return check_sizes_as("masked_reduce::check_sizes", outer, reduce, inner);
}

Status check_masking_sizes(std::int64_t outer, std::int64_t reduce, std::int64_t inner) {
  return check_masking_sizes_as("masked_reduce::check_masking_sizes", outer, reduce, inner);
}

// ---- forward ---------------------------------------------------------------------------------------------

Status can_implement(const MaskedReduceArgs& a) {
  const char* op = kForwardOp;
  Status st = check_common(op, a.op, a.dtype, a.outer, a.reduce, a.inner, a.validity, a.mask, a.lengths);
  if (!ok(st)) {
    return st;
  }
  const std::size_t elem = dtype_size(a.dtype);
  const bool has_input = a.outer * a.reduce * a.inner > 0;
  const bool has_output = a.outer * a.inner > 0;
  if (a.x == nullptr && has_input) {
    return set_error(Status::kErrorNullPointer, "%s: x: is null", op);
  }
  if (a.op == ReduceOp::kMoments) {
    if (a.out != nullptr) {
      return set_error(Status::kErrorInconsistentArguments,
                       "%s: out: must be null for moments (outputs are mean and variance)", op);
    }
    if ((a.mean == nullptr || a.variance == nullptr) && has_output) {
      return set_error(Status::kErrorNullPointer, "%s: %s: is null (moments writes mean and variance)", op,
                       a.mean == nullptr ? "mean" : "variance");
    }
  } else {
    if (a.out == nullptr && has_output) {
      return set_error(Status::kErrorNullPointer, "%s: out: is null", op);
    }
    if (a.mean != nullptr || a.variance != nullptr) {
      return set_error(Status::kErrorInconsistentArguments, "%s: %s: only moments writes mean and variance",
                       op, a.mean != nullptr ? "mean" : "variance");
    }
  }
  if (a.indices != nullptr && !is_extremum(a.op)) {
    return set_error(Status::kErrorInconsistentArguments, "%s: indices: only max and min write indices", op);
  }
  const std::uint32_t* length_errors = a.validity == Validity::kLengths ? a.length_errors : nullptr;
  st = kernels::check_aligned(op, {{"x", a.x, 0}, {"out", a.out, 0}}, elem);
  if (ok(st)) {
    st = kernels::check_aligned(op,
                                {{"mean", a.mean, 0},
                                 {"variance", a.variance, 0},
                                 {"counts", a.counts, 0},
                                 {"indices", a.indices, 0},
                                 {"length_errors", length_errors, 0}},
                                4);
  }
  if (ok(st)) {
    const std::size_t rows = static_cast<std::size_t>(a.outer);
    const std::size_t outputs = rows * static_cast<std::size_t>(a.inner);
    const std::size_t steps = rows * static_cast<std::size_t>(a.reduce);
    st = kernels::check_disjoint(op,
                                 {{"out", a.out, outputs * elem},
                                  {"mean", a.mean, outputs * 4},
                                  {"variance", a.variance, outputs * 4},
                                  {"indices", a.indices, outputs * 4},
                                  {"counts", a.counts, rows * 4},
                                  {"length_errors", length_errors, 4}},
                                 {{"x", a.x, steps * static_cast<std::size_t>(a.inner) * elem},
                                  {"mask", a.mask, steps},
                                  {"lengths", a.lengths, rows * 4}});
  }
  if (!ok(st)) {
    return st;
  }
  const Tuning& t = a.tuning;
  if (static_cast<int>(t.path) < 0 || static_cast<int>(t.path) > static_cast<int>(Path::kSplit)) {
    return set_error(Status::kErrorInvalidValue, "%s: tuning.path: %d is not a Path", op,
                     static_cast<int>(t.path));
  }
  st = check_vector_width(op, "tuning.vector_width", t.vector_width);
  if (!ok(st)) {
    return st;
  }
  if (Status th = kernels::check_thresholds(op, {{"target_threads", t.target_threads},
                                                 {"narrow_max_inner", t.narrow_max_inner},
                                                 {"narrow_max_row", t.narrow_max_row},
                                                 {"min_rows_per_thread", t.min_rows_per_thread},
                                                 {"splits", t.splits}});
      !ok(th)) {
    return th;
  }
  // R is below 2^31, so a larger minimum means "never split" as well; rejecting it keeps the planner's
  // ceil(R / min_rows) from overflowing.
  if (t.min_rows_per_thread > std::numeric_limits<std::int32_t>::max()) {
    return set_error(Status::kErrorInvalidValue, "%s: tuning.min_rows_per_thread: %lld exceeds 2^31 - 1", op,
                     static_cast<long long>(t.min_rows_per_thread));
  }
  // At most the threads of a full grid (2^31 - 1 blocks of 1024); the planner scales it by small factors.
  if (t.target_threads > (std::numeric_limits<std::int32_t>::max)() * std::int64_t{1024}) {
    return set_error(Status::kErrorInvalidValue,
                     "%s: tuning.target_threads: %lld exceeds (2^31 - 1) x 1024, the threads of a full grid",
                     op, static_cast<long long>(t.target_threads));
  }
  if (t.splits > km::kMaxSplits) {
    return set_error(Status::kErrorInvalidValue, "%s: tuning.splits: %lld exceeds %lld", op,
                     static_cast<long long>(t.splits), static_cast<long long>(km::kMaxSplits));
  }
  if (t.splits > 0 && t.path != Path::kAuto && t.path != Path::kSplit) {
    return set_error(Status::kErrorInconsistentArguments, "%s: tuning.splits: given with path %s", op,
                     path_name(t.path));
  }
  if (t.path == Path::kNarrow && a.inner > km::kWarpSize) {
    return set_error(Status::kErrorInvalidValue, "%s: tuning.path: narrow needs inner <= 32 (inner is %lld)",
                     op, static_cast<long long>(a.inner));
  }
  return Status::kSuccess;
}

std::size_t workspace_size(const MaskedReduceArgs& a) {
  if (!ok(can_implement(a)) || a.outer * a.inner == 0) {
    return 0;
  }
  return plan_forward(a).workspace;
}

Path selected_path(const MaskedReduceArgs& a) {
  if (!ok(can_implement(a))) {
    return Path::kAuto;
  }
  if (a.outer * a.inner == 0) {
    return Path::kWide; // nothing is launched
  }
  return plan_forward(a).launch.path;
}

Status run(const MaskedReduceArgs& a, void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  Status st = can_implement(a);
  if (!ok(st)) {
    return st;
  }
  if (a.outer * a.inner == 0) {
    return Status::kSuccess;
  }
  const ForwardPlan plan = plan_forward(a);
  st = check_workspace(kForwardOp, plan.workspace, workspace, workspace_bytes);
  if (!ok(st)) {
    return st;
  }
  const std::size_t elem = dtype_size(a.dtype);
  const int vec = plan.launch.path == Path::kNarrow ? 1 : plan.launch.vec; // output columns per thread

  km::ForwardParams p{};
  p.x = a.x;
  p.mask = a.mask;
  p.lengths = a.lengths;
  p.length_errors = a.validity == Validity::kLengths ? a.length_errors : nullptr;
  p.out = a.out;
  p.out_mean = a.mean;
  p.out_var = a.variance;
  p.counts = a.counts;
  p.indices = a.indices;
  p.outer = a.outer;
  p.reduce = a.reduce;
  p.inner = a.inner;
  p.validity = static_cast<int>(a.validity);
  p.divide = a.op == ReduceOp::kMean ? 1 : 0;
  p.fill = a.fill_value;
  p.out_vec = span_aligned(a.out, vec, elem) ? 1 : 0;
  p.aux_vec =
      span_aligned(a.indices, vec, 4) && span_aligned(a.mean, vec, 4) && span_aligned(a.variance, vec, 4) ? 1
                                                                                                          : 0;
  p.tx = plan.tx;
  p.ty = plan.ty;
  p.col_blocks = plan.col_blocks;
  p.splits = plan.splits;
  p.rows_per_split = plan.rows_per_split;
  p.partials = plan.launch.path == Path::kSplit ? 1 : 0;
  if (plan.launch.path == Path::kSplit) {
    unsigned char* base = static_cast<unsigned char*>(align_workspace(workspace));
    p.part_a = reinterpret_cast<float*>(base + plan.off_a);
    p.part_b = a.op == ReduceOp::kMoments ? reinterpret_cast<float*>(base + plan.off_b) : nullptr;
    p.part_idx = is_extremum(a.op) ? reinterpret_cast<std::int32_t*>(base + plan.off_idx) : nullptr;
    p.part_count = reinterpret_cast<std::int32_t*>(base + plan.off_count);
  }
  const km::AccKind kind = acc_kind(a.op);
  return kernels::with_activation_type(
      a.dtype, [&](auto tag) { return km::launch_forward<decltype(tag)>(kind, plan.launch, p, stream); });
}

// ---- backward --------------------------------------------------------------------------------------------

Status can_implement(const MaskedReduceBackwardArgs& a) {
  const char* op = kBackwardOp;
  Status st = check_common(op, a.op, a.dtype, a.outer, a.reduce, a.inner, a.validity, a.mask, a.lengths);
  if (!ok(st)) {
    return st;
  }
  const std::size_t elem = dtype_size(a.dtype);
  const bool has_dx = a.outer * a.reduce * a.inner > 0;
  const bool has_dy = a.outer * a.inner > 0;
  if (a.dx == nullptr && has_dx) {
    return set_error(Status::kErrorNullPointer, "%s: dx: is null", op);
  }
  if (a.op == ReduceOp::kMoments) {
    if (a.dy != nullptr || a.indices != nullptr) {
      return set_error(Status::kErrorInconsistentArguments, "%s: %s: not used by moments (dmean, dvar are)",
                       op, a.dy != nullptr ? "dy" : "indices");
    }
    if (a.dmean == nullptr && a.dvar == nullptr && has_dy) {
      return set_error(Status::kErrorNullPointer, "%s: dmean, dvar: both null", op);
    }
    if (a.dvar != nullptr && has_dx && (a.x == nullptr || a.mean == nullptr)) {
      return set_error(Status::kErrorNullPointer, "%s: %s: is null (needed with dvar)", op,
                       a.x == nullptr ? "x" : "mean");
    }
    if (a.dvar == nullptr && (a.x != nullptr || a.mean != nullptr)) {
      return set_error(Status::kErrorInconsistentArguments, "%s: %s: only used with dvar", op,
                       a.x != nullptr ? "x" : "mean");
    }
  } else {
    if (a.dy == nullptr && has_dy) {
      return set_error(Status::kErrorNullPointer, "%s: dy: is null", op);
    }
    if (a.dmean != nullptr || a.dvar != nullptr || a.mean != nullptr || a.x != nullptr) {
      return set_error(Status::kErrorInconsistentArguments, "%s: dmean, dvar, mean, x: only used by moments",
                       op);
    }
    if (is_extremum(a.op)) {
      if (a.indices == nullptr && has_dy) {
        return set_error(Status::kErrorNullPointer,
                         "%s: indices: is null (max/min backward needs the forward's indices output)", op);
      }
    } else if (a.indices != nullptr) {
      return set_error(Status::kErrorInconsistentArguments, "%s: indices: only used by max and min", op);
    }
  }
  if (a.counts != nullptr &&
      !(a.validity == Validity::kMask && (a.op == ReduceOp::kMean || a.op == ReduceOp::kMoments))) {
    return set_error(Status::kErrorInconsistentArguments,
                     "%s: counts: only used by mean and moments with a mask", op);
  }
  const std::uint32_t* length_errors = a.validity == Validity::kLengths ? a.length_errors : nullptr;
  st = kernels::check_aligned(op, {{"dx", a.dx, 0}, {"dy", a.dy, 0}, {"x", a.x, 0}}, elem);
  if (ok(st)) {
    st = kernels::check_aligned(op,
                                {{"indices", a.indices, 0},
                                 {"dmean", a.dmean, 0},
                                 {"dvar", a.dvar, 0},
                                 {"mean", a.mean, 0},
                                 {"counts", a.counts, 0},
                                 {"length_errors", length_errors, 0}},
                                4);
  }
  if (ok(st)) {
    const std::size_t rows = static_cast<std::size_t>(a.outer);
    const std::size_t grads = rows * static_cast<std::size_t>(a.inner);
    const std::size_t steps = rows * static_cast<std::size_t>(a.reduce);
    const std::size_t xbytes = steps * static_cast<std::size_t>(a.inner) * elem;
    st = kernels::check_disjoint(op, {{"dx", a.dx, xbytes}, {"length_errors", length_errors, 4}},
                                 {{"x", a.x, xbytes},
                                  {"dy", a.dy, grads * elem},
                                  {"indices", a.indices, grads * 4},
                                  {"dmean", a.dmean, grads * 4},
                                  {"dvar", a.dvar, grads * 4},
                                  {"mean", a.mean, grads * 4},
                                  {"counts", a.counts, rows * 4},
                                  {"mask", a.mask, steps},
                                  {"lengths", a.lengths, rows * 4}});
  }
  if (!ok(st)) {
    return st;
  }
  st = check_vector_width(op, "vector_width", a.vector_width);
  if (!ok(st)) {
    return st;
  }
  if (a.row_chunks < 0) {
    return set_error(Status::kErrorInvalidValue, "%s: row_chunks: %lld must be >= 0", op,
                     static_cast<long long>(a.row_chunks));
  }
  return Status::kSuccess;
}

std::size_t workspace_size(const MaskedReduceBackwardArgs& a) {
  if (!ok(can_implement(a)) || a.outer * a.reduce * a.inner == 0) {
    return 0;
  }
  return plan_backward(a).workspace;
}

Status run(const MaskedReduceBackwardArgs& a, void* workspace, std::size_t workspace_bytes,
           cudaStream_t stream) {
  Status st = can_implement(a);
  if (!ok(st)) {
    return st;
  }
  if (a.outer * a.reduce * a.inner == 0) {
    return Status::kSuccess;
  }
  BackwardPlan plan = plan_backward(a);
  st = check_workspace(kBackwardOp, plan.workspace, workspace, workspace_bytes);
  if (!ok(st)) {
    return st;
  }
  const std::size_t elem = dtype_size(a.dtype);
  const int vec = plan.launch.vec;
  km::BackwardParams p{};
  p.validity = static_cast<int>(a.validity);
  p.divide = a.op == ReduceOp::kMean ? 1 : 0;
  p.dy = a.dy;
  p.indices = a.indices;
  p.dmean = a.dmean;
  p.dvar = a.dvar;
  p.mean = a.mean;
  p.x = a.x;
  p.counts = a.counts;
  if (plan.launch.count_first) {
    plan.launch.counts_workspace = static_cast<std::int32_t*>(align_workspace(workspace));
    p.counts = plan.launch.counts_workspace;
  }
  p.mask = a.mask;
  p.lengths = a.lengths;
  p.length_errors = a.validity == Validity::kLengths ? a.length_errors : nullptr;
  p.dx = a.dx;
  p.outer = a.outer;
  p.reduce = a.reduce;
  p.inner = a.inner;
  p.dy_vec = span_aligned(a.dy, vec, elem) ? 1 : 0;
  p.aux_vec = span_aligned(a.indices, vec, 4) && span_aligned(a.dmean, vec, 4) &&
                      span_aligned(a.dvar, vec, 4) && span_aligned(a.mean, vec, 4)
                  ? 1
                  : 0;
  p.tx = plan.tx;
  p.ty = plan.ty;
  p.col_blocks = plan.col_blocks;
  p.splits = plan.splits;
  p.rows_per_split = plan.rows_per_split;
  const km::BackwardKind kind = a.op == ReduceOp::kMoments ? km::BackwardKind::kMoments
                                : is_extremum(a.op)        ? km::BackwardKind::kExtremum
                                                           : km::BackwardKind::kScale;
  return kernels::with_activation_type(
      a.dtype, [&](auto tag) { return km::launch_backward<decltype(tag)>(kind, plan.launch, p, stream); });
}

// ---- masking --------------------------------------------------------------------------------------------

Status can_implement(const MaskingArgs& a) {
  const char* op = kMaskingOp;
  if (!valid_dtype(a.dtype)) {
    return set_error(Status::kErrorInvalidDType, "%s: dtype: %s (%d) is not float32, float16 or bfloat16", op,
                     dtype_name(a.dtype), static_cast<int>(a.dtype));
  }
  if (Status st = check_masking_sizes_as(op, a.outer, a.reduce, a.inner); !ok(st)) {
    return st;
  }
  const std::size_t elem = dtype_size(a.dtype);
  if (a.x == nullptr && a.outer * a.reduce * a.inner > 0) {
    return set_error(Status::kErrorNullPointer, "%s: x: is null", op);
  }
  if (a.mask == nullptr && a.outer * a.reduce > 0) {
    return set_error(Status::kErrorNullPointer, "%s: mask: is null", op);
  }
  if (Status st = kernels::check_aligned(op, {{"x", a.x, 0}, {"y", a.y, 0}}, elem); !ok(st)) {
    return st;
  }
  // y == x exactly is the in-place form; any other overlap, and the mask overlapping either, is not.
  const std::size_t steps = static_cast<std::size_t>(a.outer) * static_cast<std::size_t>(a.reduce);
  const std::size_t bytes = steps * static_cast<std::size_t>(a.inner) * elem;
  return kernels::check_disjoint(op, {{"mask", a.mask, steps}, {"y", a.y == a.x ? nullptr : a.y, bytes}},
                                 {{"x", a.x, bytes}});
}

std::size_t workspace_size(const MaskingArgs& /*args*/) {
  return 0;
}

Status run(const MaskingArgs& a, void* /*workspace*/, std::size_t /*workspace_bytes*/, cudaStream_t stream) {
  const Status st = can_implement(a);
  if (!ok(st)) {
    return st;
  }
  const std::int64_t rows = a.outer * a.reduce;
  if (rows == 0) {
    return Status::kSuccess;
  }
  const std::size_t elem = dtype_size(a.dtype);
  const int vec = widest_vector(elem, a.inner, {a.x, a.y}, 0);
  const std::int64_t vecs = a.inner / vec;
  int team = 1;
  while (team < km::kWarpSize && team < vecs) {
    team *= 2;
  }
  const std::int64_t rows_per_block = (km::kNarrowThreads / km::kWarpSize) * (km::kWarpSize / team);
  const unsigned grid = static_cast<unsigned>(std::min(ceil_div(rows, rows_per_block), kMaxGrid));
  km::MaskingParams p{};
  p.x = a.x;
  p.y = a.y;
  p.mask = a.mask;
  p.rows = rows;
  p.inner = a.inner;
  p.mask_value = round_to_dtype(a.mask_value, a.dtype);
  p.team = team;
  return kernels::with_activation_type(
      a.dtype, [&](auto tag) { return km::launch_masking<decltype(tag)>(vec, grid, p, stream); });
}

// ---- mask expansion -------------------------------------------------------------------------------------

Status can_implement(const MaskExpandArgs& a) {
  const char* op = kExpandOp;
  if (a.outer < 0 || a.steps < 0 || a.features < 0) {
    return set_error(
        Status::kErrorInvalidShape, "%s: sizes: outer %lld, steps %lld, features %lld must be >= 0", op,
        static_cast<long long>(a.outer), static_cast<long long>(a.steps), static_cast<long long>(a.features));
  }
  // Masking's limits, with R = steps and inner = features: the mask [outer, steps] and the output
  // [outer, steps x features] (so an empty output cannot hide an oversized mask).
  if (Status st = check_masking_sizes_as(op, a.outer, a.steps, a.features); !ok(st)) {
    return st;
  }
  const std::int64_t in_bytes = a.outer * a.steps;
  const std::int64_t out_bytes = in_bytes * a.features;
  if (a.mask == nullptr && out_bytes > 0) {
    return set_error(Status::kErrorNullPointer, "%s: mask: is null", op);
  }
  if (a.out == nullptr && out_bytes > 0) {
    return set_error(Status::kErrorNullPointer, "%s: out: is null", op);
  }
  if (out_bytes > 0) {
    const std::uintptr_t in0 = reinterpret_cast<std::uintptr_t>(a.mask);
    const std::uintptr_t out0 = reinterpret_cast<std::uintptr_t>(a.out);
    if (in0 < out0 + static_cast<std::uintptr_t>(out_bytes) &&
        out0 < in0 + static_cast<std::uintptr_t>(in_bytes)) {
      return set_error(Status::kErrorInconsistentArguments, "%s: out: overlaps mask", op);
    }
  }
  return Status::kSuccess;
}

std::size_t workspace_size(const MaskExpandArgs& /*args*/) {
  return 0;
}

Status run(const MaskExpandArgs& a, void* /*workspace*/, std::size_t /*workspace_bytes*/,
           cudaStream_t stream) {
  const Status st = can_implement(a);
  if (!ok(st)) {
    return st;
  }
  const std::int64_t total = a.outer * a.steps * a.features;
  if (total == 0) {
    return Status::kSuccess;
  }
  const bool vec_ok = !kernels::misaligned(a.out, 16);
  const std::int64_t chunks = vec_ok ? ceil_div(total, 16) : total;
  const unsigned grid = static_cast<unsigned>(std::min(ceil_div(chunks, km::kNarrowThreads), kMaxGrid));
  return km::launch_expand(a.mask, a.out, total, a.features, vec_ok, grid, stream);
}

} // namespace masked_reduce
CULAYERS_NAMESPACE_END
