// Dropout ops (include/culayers/dropout.hpp): validation, planning (noise-shape canonicalization,
// path and vector width), the state's init and update kernels, and the launches.
#include "kernels/common/arg_checks.hpp"
#include "kernels/common/device_info.cuh"
#include "kernels/dropout/dropout_kernels.cuh"

#include "culayers/dropout.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <utility>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace dropout {
namespace {

using culayers::dropout::DropoutBackwardArgs;
using culayers::dropout::DropoutForwardArgs;
using culayers::dropout::DropoutInitArgs;
using culayers::dropout::DropoutRedrawArgs;
using culayers::dropout::DropoutUpdateArgs;

constexpr const char* kInitOp = "dropout_init";
constexpr const char* kUpdateOp = "dropout_update";
constexpr const char* kRedrawOp = "dropout_redraw";
constexpr const char* kForwardOp = "dropout_forward";
constexpr const char* kBackwardOp = "dropout_backward";

static_assert(kThresholdKeepAll == culayers::dropout::kThresholdKeepAll, "one keep-all threshold");
static_assert(offsetof(DropoutState, seed) == 0 && offsetof(DropoutState, offset) == 8 &&
                  offsetof(DropoutState, initial_keep_rate) == 16 &&
                  offsetof(DropoutState, decay_rate) == 24 && offsetof(DropoutState, decay_interval) == 32 &&
                  offsetof(DropoutState, iterations) == 40 && offsetof(DropoutState, stream) == 48 &&
                  offsetof(DropoutState, threshold) == 56 && offsetof(DropoutState, keep_rate) == 64 &&
                  offsetof(DropoutState, scale) == 72 && offsetof(DropoutState, reserved0) == 76 &&
                  offsetof(DropoutState, last_stream) == 80 && offsetof(DropoutState, last_threshold) == 88 &&
                  offsetof(DropoutState, last_keep_rate) == 96 && offsetof(DropoutState, last_scale) == 104 &&
                  offsetof(DropoutState, reserved1) == 108 && offsetof(DropoutState, last_iteration) == 112 &&
                  offsetof(DropoutState, redraws) == 120,
              "DropoutState layout documented in dropout.hpp");

// ---- state kernels -----------------------------------------------------------------------------------

/// Writes the current call's parameters for iteration k (shared by init and the update op, so both
/// compute the keep rate with the same device code).
CULAYERS_DEVICE void write_current(DropoutState* s, double initial, double decay_rate, std::int64_t interval,
                                   std::int64_t k) {
  const double p = decayed_keep_rate(initial, decay_rate, interval, k);
  store(&s->stream, static_cast<std::uint64_t>(k));
  store(&s->threshold, keep_threshold(p));
  store(&s->keep_rate, p);
  store(&s->scale, keep_scale(p));
}

struct InitValues {
  std::uint64_t seed;
  std::uint64_t offset;
  double initial_keep_rate;
  double decay_rate;
  std::int64_t decay_interval;
  std::int64_t iterations;
  std::uint64_t redraws;
};

CULAYERS_GLOBAL void dropout_init_kernel(DropoutState* s, InitValues v) {
  store(&s->seed, v.seed);
  store(&s->offset, v.offset);
  store(&s->initial_keep_rate, v.initial_keep_rate);
  store(&s->decay_rate, v.decay_rate);
  store(&s->decay_interval, v.decay_interval);
  store(&s->iterations, v.iterations);
  write_current(s, v.initial_keep_rate, v.decay_rate, v.decay_interval, v.iterations);
  store(&s->reserved0, 0u);
  // Until the first forward, the backward uses the current call's parameters.
  store(&s->last_stream, load(&s->stream));
  store(&s->last_threshold, load(&s->threshold));
  store(&s->last_keep_rate, load(&s->keep_rate));
  store(&s->last_scale, load(&s->scale));
  store(&s->reserved1, 0u);
  store(&s->last_iteration, static_cast<std::int64_t>(-1));
  store(&s->redraws, v.redraws);
}

CULAYERS_GLOBAL void dropout_update_kernel(DropoutState* s) {
  const std::int64_t it = load(&s->iterations);
  const std::int64_t k = it < std::numeric_limits<std::int64_t>::max() ? it + 1 : it; // saturates
  store(&s->iterations, k);
  write_current(s, load(&s->initial_keep_rate), load(&s->decay_rate), load(&s->decay_interval), k);
}

/// A fresh stream for the current call, outside the schedule's [0, 2^63): 2^63 + redraws; or, with
/// to_schedule, the schedule's stream of the current iteration again.
CULAYERS_GLOBAL void dropout_redraw_kernel(DropoutState* s, int to_schedule) {
  if (to_schedule != 0) {
    store(&s->stream, static_cast<std::uint64_t>(load(&s->iterations)));
    return;
  }
  const std::uint64_t r = load(&s->redraws) + 1;
  store(&s->redraws, r);
  store(&s->stream, (std::uint64_t{1} << 63) | (r & ((std::uint64_t{1} << 63) - 1)));
}

// ---- validation helpers ------------------------------------------------------------------------------

Status check_state(const void* state, const char* op) {
  if (state == nullptr) {
    return culayers::detail::set_error(Status::kErrorNullPointer, "%s: state: is null", op);
  }
  if (misaligned(state, alignof(DropoutState))) {
    return culayers::detail::set_error(Status::kErrorMisaligned, "%s: state: %p is not %zu-byte aligned", op,
                                       state, alignof(DropoutState));
  }
  return Status::kSuccess;
}

/// The common arguments of the forward and the backward.
struct TensorOp {
  const char* op;
  const char* in_name;
  const char* out_name;
  const void* in;
  void* out;
  DType dtype;
  Shape shape;
  Shape noise_shape;
  const DropoutState* state;
  std::uint64_t offset;
  std::uint8_t* mask;
  int max_blocks;
  int force_vector_width;
  bool forward;
};

TensorOp tensor_op(const DropoutForwardArgs& a) {
  return TensorOp{kForwardOp,
                  "x",
                  "y",
                  a.x,
                  a.y,
                  a.dtype,
                  a.shape,
                  a.noise_shape,
                  a.state,
                  a.offset,
                  a.mask,
                  a.max_blocks,
                  a.force_vector_width,
                  true};
}

TensorOp tensor_op(const DropoutBackwardArgs& a) {
  return TensorOp{kBackwardOp,
                  "dy",
                  "dx",
                  a.dy,
                  a.dx,
                  a.dtype,
                  a.shape,
                  a.noise_shape,
                  a.state,
                  a.offset,
                  nullptr,
                  a.max_blocks,
                  a.force_vector_width,
                  false};
}

/// x's shape with extent-1 dimensions dropped and adjacent dimensions of equal broadcast status merged.
struct Canonical {
  int m = 0;
  std::uint64_t extent[kMaxRank] = {};
  bool broadcast[kMaxRank] = {};
};

Canonical canonicalize(const Shape& shape, const Shape& noise) {
  Canonical c;
  for (int j = 0; j < shape.rank(); ++j) {
    const std::int64_t d = shape.dims()[j];
    if (d == 1) {
      continue;
    }
    const bool b = noise.rank() != 0 && noise.dims()[j] == 1;
    if (c.m > 0 && c.broadcast[c.m - 1] == b) {
      c.extent[c.m - 1] *= static_cast<std::uint64_t>(d);
    } else {
      c.extent[c.m] = static_cast<std::uint64_t>(d);
      c.broadcast[c.m] = b;
      ++c.m;
    }
  }
  return c;
}

/// Widest V (elements per access, V * elem <= 16) for which every pointer is aligned to V * elem bytes
/// and the mask (one byte per element) to V bytes.
int pointer_width(std::size_t elem, std::initializer_list<const void*> pointers, const void* mask) {
  int v = static_cast<int>(16 / elem);
  for (; v > 1; v /= 2) {
    bool ok = mask == nullptr || !misaligned(mask, static_cast<std::size_t>(v));
    for (const void* p : pointers) {
      ok = ok && !misaligned(p, static_cast<std::size_t>(v) * elem);
    }
    if (ok) {
      break;
    }
  }
  return v;
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

/// Validates `t` and, on success, fills `plan` (except the grid size, which needs the SM count: see
/// finish_plan). Writes nothing anywhere else.
Status plan_dropout(const TensorOp& t, LaunchPlan* plan) {
  const char* op = t.op;
  if (Status s = check_state(t.state, op); !ok(s)) {
    return s;
  }
  if (!is_floating_point(t.dtype)) {
    return culayers::detail::set_error(Status::kErrorInvalidDType,
                                       "%s: dtype: %s is not float32, float16 or bfloat16", op,
                                       dtype_name(t.dtype));
  }
  if (Status s = t.shape.validate(op, "shape"); !ok(s)) {
    return s;
  }
  if (t.noise_shape.rank() != 0) {
    if (t.noise_shape.rank() != t.shape.rank()) {
      return culayers::detail::set_error(
          Status::kErrorInvalidShape,
          "%s: noise_shape: rank %d differs from x's rank %d (use rank 0 for x's shape)", op,
          t.noise_shape.rank(), t.shape.rank());
    }
    for (int j = 0; j < t.shape.rank(); ++j) {
      const std::int64_t e = t.noise_shape.dims()[j];
      if (e != 1 && e != t.shape.dims()[j]) {
        return culayers::detail::set_error(
            Status::kErrorInvalidShape, "%s: noise_shape: dimension %d is %lld; it must be 1 or x's %lld", op,
            j, static_cast<long long>(e), static_cast<long long>(t.shape.dims()[j]));
      }
    }
  }
  const std::int64_t n = t.shape.numel();
  const std::size_t elem = dtype_size(t.dtype);
  if (n > 0 && t.in == nullptr) {
    return culayers::detail::set_error(Status::kErrorNullPointer, "%s: %s: is null", op, t.in_name);
  }
  if (n > 0 && t.out == nullptr) {
    return culayers::detail::set_error(Status::kErrorNullPointer, "%s: %s: is null", op, t.out_name);
  }
  // Narrower alignment only narrows the vector width (pointer_width), down to one element per access;
  // an element access itself must be aligned (a misaligned load faults on the GPU).
  for (const auto& [p, name] : {std::pair<const void*, const char*>{t.in, t.in_name}, {t.out, t.out_name}}) {
    if (n > 0 && misaligned(p, elem)) {
      return culayers::detail::set_error(Status::kErrorMisaligned,
                                         "%s: %s: not aligned to its %zu-byte elements", op, name, elem);
    }
  }
  if (t.offset % 4 != 0) {
    return culayers::detail::set_error(Status::kErrorInvalidValue, "%s: offset: %llu is not a multiple of 4",
                                       op, static_cast<unsigned long long>(t.offset));
  }
  if (t.max_blocks < 0) {
    return culayers::detail::set_error(Status::kErrorInvalidValue, "%s: max_blocks: %d is negative", op,
                                       t.max_blocks);
  }
  const int fw = t.force_vector_width;
  if (fw != 0 && ((fw != 1 && fw != 2 && fw != 4 && fw != 8) || static_cast<std::size_t>(fw) * elem > 16)) {
    return culayers::detail::set_error(
        Status::kErrorInvalidValue,
        "%s: force_vector_width: %d is not 0, or 1, 2, 4, 8 with at most 16 bytes of %s", op, fw,
        dtype_name(t.dtype));
  }
  std::int64_t bytes = 0;
  if (!culayers::detail::checked_mul(n, static_cast<std::int64_t>(elem), &bytes)) {
    return culayers::detail::set_error(Status::kErrorSizeLimit,
                                       "%s: shape: %lld elements overflow int64 bytes", op,
                                       static_cast<long long>(n));
  }
  const std::size_t nb = static_cast<std::size_t>(bytes);
  if (t.in != t.out && overlaps(t.in, nb, t.out, nb)) {
    return culayers::detail::set_error(
        Status::kErrorInconsistentArguments,
        "%s: %s: overlaps %s without being equal to it (only exact in-place is allowed)", op, t.out_name,
        t.in_name);
  }
  if (t.mask != nullptr && (overlaps(t.mask, static_cast<std::size_t>(n), t.in, nb) ||
                            overlaps(t.mask, static_cast<std::size_t>(n), t.out, nb))) {
    return culayers::detail::set_error(Status::kErrorInconsistentArguments, "%s: mask: overlaps %s or %s", op,
                                       t.in_name, t.out_name);
  }
  if (overlaps(t.state, sizeof(DropoutState), t.in, nb) ||
      overlaps(t.state, sizeof(DropoutState), t.out, nb) ||
      overlaps(t.state, sizeof(DropoutState), t.mask, static_cast<std::size_t>(n))) {
    return culayers::detail::set_error(Status::kErrorInconsistentArguments,
                                       "%s: state: overlaps a tensor argument", op);
  }

  // Path and the constraints on the vector width it adds.
  const Canonical c = canonicalize(t.shape, t.noise_shape);
  bool any_broadcast = false;
  for (int j = 0; j < c.m; ++j) {
    any_broadcast = any_broadcast || c.broadcast[j];
  }
  NoiseMap map{};
  Path path = Path::kPlain;
  int shape_width = static_cast<int>(16 / elem); // largest V the shape allows
  // Every index the broadcast kernels divide is below n and every divisor is at most n: below 2^32
  // the 32-bit multiply-high division applies.
  const bool wide = static_cast<std::uint64_t>(n) > 0xffffffffull;
  if (any_broadcast) {
    const std::uint64_t inner = c.extent[c.m - 1];
    const bool inner_kept = !c.broadcast[c.m - 1];
    map.nd = c.m - 1;
    std::uint64_t stride = 1;
    for (int j = c.m - 2; j >= 0; --j) {
      map.outer[j] = DivMod::make(c.extent[j]);
      map.outer_stride[j] = c.broadcast[j] ? 0 : stride;
      stride *= c.broadcast[j] ? 1 : c.extent[j];
    }
    map.inner = DivMod::make(inner);
    map.inner_noise = inner_kept ? inner : 1;
    map.inner_kept = inner_kept ? 1u : 0u;
    if (wide || (inner_kept && inner % 4 != 0)) {
      path = Path::kGeneric;
      shape_width = 1;
    } else if (inner_kept) {
      // Whole rows of F = inner elements whose draws start at multiples of 4.
      path = Path::kRow;
      while (shape_width > 4 && inner % static_cast<std::uint64_t>(shape_width) != 0) {
        shape_width /= 2;
      }
      map.row_len = inner;
    } else {
      // Runs of E = inner elements: a chunk of V <= E elements meets at most two runs.
      path = Path::kRun;
      while (shape_width > 1 && static_cast<std::uint64_t>(shape_width) > inner) {
        shape_width /= 2;
      }
    }
  }
  const int ptr_width = pointer_width(elem, {t.in, t.out}, t.mask);
  int vec = ptr_width < shape_width ? ptr_width : shape_width;
  if (fw != 0) { // the generic path is scalar: shape_width 1, so it serves a forced width of 1 only
    if (fw > ptr_width) {
      return culayers::detail::set_error(
          Status::kErrorMisaligned,
          "%s: force_vector_width: %d, but the pointers' alignment allows at most %d", op, fw, ptr_width);
    }
    if (fw > shape_width && path == Path::kGeneric && wide) {
      return culayers::detail::set_error(Status::kErrorInvalidValue,
                                         "%s: force_vector_width: %d, but a broadcast noise shape over more "
                                         "than 2^32 elements takes the scalar generic path (width 1)",
                                         op, fw);
    }
    if (fw > shape_width) {
      return culayers::detail::set_error(
          Status::kErrorInvalidValue,
          "%s: force_vector_width: %d, but the noise shape allows at most %d on this path", op, fw,
          shape_width);
    }
    vec = fw;
  }
  if (path == Path::kRow) {
    const int chunk = vec < 4 ? 4 : vec;
    map.chunks_per_row = DivMod::make(map.row_len / static_cast<std::uint64_t>(chunk));
  }

  plan->path = path;
  plan->vec = vec;
  plan->blocks = 1;
  plan->wide = wide;
  plan->args.n = n;
  plan->args.offset = t.offset;
  plan->args.forward = t.forward ? 1u : 0u;
  plan->args.map = map;
  return Status::kSuccess;
}

/// Multiprocessor count of the current device (kernels/common/device_info.cuh caches it per device: the
/// launch path must not query device properties on every call).
Status sm_count(int* out, const char* op) {
  kernels::DeviceInfo info{};
  if (Status s = kernels::device_info(&info, op); !ok(s)) {
    return s;
  }
  *out = info.sm_count;
  return Status::kSuccess;
}

/// Grid size. Vector paths: one tile of kUnroll x kThreads chunks per block (dropout_kernels.cuh says why
/// one short-lived block per tile rather than a grid capped at the resident blocks), capped by max_blocks
/// or CUDA's grid limit, beyond which the tile loop strides. Generic path: enough threads for every
/// element, capped at max_blocks or kBlocksPerSm blocks per SM; its grid-stride loop covers the rest.
void finish_plan(LaunchPlan* plan, int sms, int max_blocks) {
  const std::int64_t n = plan->args.n;
  std::int64_t blocks = 0;
  std::int64_t cap = 0;
  if (plan->path == Path::kGeneric) {
    blocks = ceil_div(n, kThreads);
    cap = static_cast<std::int64_t>(sms) * static_cast<std::int64_t>(kBlocksPerSm);
  } else {
    const std::int64_t chunks =
        plan->path == Path::kRun ? n / plan->vec : n / (plan->vec < 4 ? 4 : plan->vec);
    blocks = ceil_div(chunks, static_cast<std::int64_t>(kUnroll) * kThreads);
    cap = kMaxGridBlocks;
  }
  if (max_blocks > 0) {
    cap = max_blocks;
  }
  blocks = blocks < cap ? blocks : cap;
  plan->blocks = static_cast<int>(blocks < 1 ? 1 : blocks);
}

Status run_tensor_op(const TensorOp& t, cudaStream_t stream) {
  LaunchPlan plan{};
  if (Status s = plan_dropout(t, &plan); !ok(s)) {
    return s;
  }
  int sms = 1;
  if (t.max_blocks == 0) {
    if (Status s = sm_count(&sms, t.op); !ok(s)) {
      return s;
    }
  }
  finish_plan(&plan, sms, t.max_blocks);
  // The forward launches even for an empty tensor: it still records the call in the state's last_*.
  if (plan.args.n == 0 && !t.forward) {
    return Status::kSuccess;
  }
  auto* state = const_cast<DropoutState*>(t.state); // the backward kernel only reads it
  return kernels::with_activation_type(t.dtype, [&](auto tag) {
    using T = decltype(tag);
    return launch_dropout<T>(plan, static_cast<const T*>(t.in), static_cast<T*>(t.out), t.mask, state, stream,
                             t.op);
  });
}

double clamp_decay(double r) {
  return r < 0.0 ? 0.0 : (r > 1.0 ? 1.0 : r);
}

} // namespace
} // namespace dropout
} // namespace kernels

namespace dropout {

namespace kd = kernels::dropout;

Status can_implement(const DropoutInitArgs& args) {
  const char* op = kd::kInitOp;
  if (Status s = kd::check_state(args.state, op); !ok(s)) {
    return s;
  }
  if (!(args.initial_keep_rate > 0.0 && args.initial_keep_rate <= 1.0)) {
    return culayers::detail::set_error(
        Status::kErrorInvalidValue, "%s: initial_keep_rate: %g is not in (0, 1]", op, args.initial_keep_rate);
  }
  if (std::isnan(args.decay_rate)) {
    return culayers::detail::set_error(Status::kErrorInvalidValue, "%s: decay_rate: is NaN", op);
  }
  if (args.decay_interval <= 0) {
    return culayers::detail::set_error(Status::kErrorInvalidValue, "%s: decay_interval: %lld is not positive",
                                       op, static_cast<long long>(args.decay_interval));
  }
  if (args.iterations < 0) {
    return culayers::detail::set_error(Status::kErrorInvalidValue, "%s: iterations: %lld is negative", op,
                                       static_cast<long long>(args.iterations));
  }
  if (args.offset % 4 != 0) {
    return culayers::detail::set_error(Status::kErrorInvalidValue, "%s: offset: %llu is not a multiple of 4",
                                       op, static_cast<unsigned long long>(args.offset));
  }
  return Status::kSuccess;
}

Status can_implement(const DropoutUpdateArgs& args) {
  return kd::check_state(args.state, kd::kUpdateOp);
}

Status can_implement(const DropoutRedrawArgs& args) {
  return kd::check_state(args.state, kd::kRedrawOp);
}

Status can_implement(const DropoutForwardArgs& args) {
  kd::LaunchPlan plan{};
  return kd::plan_dropout(kd::tensor_op(args), &plan);
}

Status can_implement(const DropoutBackwardArgs& args) {
  kd::LaunchPlan plan{};
  return kd::plan_dropout(kd::tensor_op(args), &plan);
}

std::size_t workspace_size(const DropoutInitArgs&) {
  return 0;
}
std::size_t workspace_size(const DropoutUpdateArgs&) {
  return 0;
}
std::size_t workspace_size(const DropoutRedrawArgs&) {
  return 0;
}
std::size_t workspace_size(const DropoutForwardArgs&) {
  return 0;
}
std::size_t workspace_size(const DropoutBackwardArgs&) {
  return 0;
}

Status run(const DropoutInitArgs& args, void*, std::size_t, cudaStream_t stream) {
  if (Status s = can_implement(args); !ok(s)) {
    return s;
  }
  const kd::InitValues v{args.seed,
                         args.offset,
                         args.initial_keep_rate,
                         kd::clamp_decay(args.decay_rate),
                         args.decay_interval,
                         args.iterations,
                         args.redraws};
  return kernels::check_launch(
      CULAYERS_LAUNCH(kd::dropout_init_kernel, dim3(1), dim3(1), 0, stream, args.state, v), kd::kInitOp);
}

Status run(const DropoutUpdateArgs& args, void*, std::size_t, cudaStream_t stream) {
  if (Status s = can_implement(args); !ok(s)) {
    return s;
  }
  return kernels::check_launch(
      CULAYERS_LAUNCH(kd::dropout_update_kernel, dim3(1), dim3(1), 0, stream, args.state), kd::kUpdateOp);
}

Status run(const DropoutRedrawArgs& args, void*, std::size_t, cudaStream_t stream) {
  if (Status s = can_implement(args); !ok(s)) {
    return s;
  }
  return kernels::check_launch(CULAYERS_LAUNCH(kd::dropout_redraw_kernel, dim3(1), dim3(1), 0, stream,
                                               args.state, args.to_schedule ? 1 : 0),
                               kd::kRedrawOp);
}

Status run(const DropoutForwardArgs& args, void*, std::size_t, cudaStream_t stream) {
  return kd::run_tensor_op(kd::tensor_op(args), stream);
}

Status run(const DropoutBackwardArgs& args, void*, std::size_t, cudaStream_t stream) {
  return kd::run_tensor_op(kd::tensor_op(args), stream);
}

double scheduled_keep_rate(double initial_keep_rate, double decay_rate, std::int64_t decay_interval,
                           std::int64_t k) noexcept {
  // The arguments the init op accepts (and k >= 0); anything else has no schedule: NaN, never a number
  // (an interval <= 0 gave 0 or a rate above the initial one).
  if (!(initial_keep_rate > 0.0 && initial_keep_rate <= 1.0) || std::isnan(decay_rate) ||
      decay_interval <= 0 || k < 0) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return kd::decayed_keep_rate(initial_keep_rate, kd::clamp_decay(decay_rate), decay_interval, k);
}

std::uint64_t keep_threshold(double keep_rate) noexcept {
  return kd::keep_threshold(keep_rate);
}

float keep_scale(double keep_rate) noexcept {
  return kd::keep_scale(keep_rate);
}

void philox_draws(std::uint64_t seed, std::uint64_t stream, std::uint64_t first, std::size_t count,
                  std::uint32_t* out) noexcept {
  std::size_t j = 0;
  while (j < count) {
    const std::uint64_t q = first + j;
    const kd::PhiloxWords w = kd::philox_group(seed, stream, q >> 2);
    for (unsigned k = static_cast<unsigned>(q & 3u); k < 4 && j < count; ++k, ++j) {
      out[j] = w.w[k];
    }
  }
}

} // namespace dropout
CULAYERS_NAMESPACE_END
