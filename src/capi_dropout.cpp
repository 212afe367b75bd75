// C API of the dropout ops: converts the plain C structs to the C++ argument structs and forwards. The
// static_asserts pin the C state layout to the C++ one, so a culayersDropoutState_t* is passed through
// as a DropoutState*.
#include "src/capi_enum.hpp"
#include "src/capi_shim.hpp"
#include "culayers/c/dropout.h"

#include "culayers/dropout.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace {

using culayers::DType;
using culayers::Shape;
using culayers::Status;
namespace cd = culayers::dropout;

using CState = culayersDropoutState_t;
using CppState = cd::DropoutState;

#define CULAYERS_SAME_FIELD(field)                                                                           \
  static_assert(offsetof(CState, field) == offsetof(CppState, field) &&                                      \
                    sizeof(CState::field) == sizeof(CppState::field),                                        \
                "culayersDropoutState_t." #field " differs from DropoutState")
CULAYERS_SAME_FIELD(seed);
CULAYERS_SAME_FIELD(offset);
CULAYERS_SAME_FIELD(initial_keep_rate);
CULAYERS_SAME_FIELD(decay_rate);
CULAYERS_SAME_FIELD(decay_interval);
CULAYERS_SAME_FIELD(iterations);
CULAYERS_SAME_FIELD(stream);
CULAYERS_SAME_FIELD(threshold);
CULAYERS_SAME_FIELD(keep_rate);
CULAYERS_SAME_FIELD(scale);
CULAYERS_SAME_FIELD(reserved0);
CULAYERS_SAME_FIELD(last_stream);
CULAYERS_SAME_FIELD(last_threshold);
CULAYERS_SAME_FIELD(last_keep_rate);
CULAYERS_SAME_FIELD(last_scale);
CULAYERS_SAME_FIELD(reserved1);
CULAYERS_SAME_FIELD(last_iteration);
CULAYERS_SAME_FIELD(redraws);
#undef CULAYERS_SAME_FIELD
static_assert(sizeof(CState) == sizeof(CppState) && alignof(CState) == alignof(CppState),
              "culayersDropoutState_t differs from DropoutState");
static_assert(CULAYERS_DROPOUT_THRESHOLD_KEEP_ALL == cd::kThresholdKeepAll, "one keep-all threshold");
static_assert(std::is_same_v<culayersStream_t, cudaStream_t>, "culayersStream_t is cudaStream_t");

CppState* to_cpp(CState* s) {
  return reinterpret_cast<CppState*>(s);
}
const CppState* to_cpp(const CState* s) {
  return reinterpret_cast<const CppState*>(s);
}

/// Builds a Shape from a C (rank, dims) pair, with the op's name and the argument in the messages and
/// Shape::make's statuses (kErrorInvalidShape for a negative rank or dimension, kErrorSizeLimit above
/// kMaxRank); an element count that overflows int64 is `overflow` (kErrorSizeLimit for x; a noise shape's
/// can never broadcast to x, whose count does not: kErrorInvalidShape, as the C++ op reports it). `dims` is
/// a C struct's array member, never null.
Status make_shape(int rank, const std::int64_t* dims, const char* op, const char* name, Status overflow,
                  Shape* out) {
  if (rank < 0 || rank > culayers::kMaxRank) {
    return culayers::detail::set_error(rank < 0 ? Status::kErrorInvalidShape : Status::kErrorSizeLimit,
                                       "%s: %s: rank %d is not in [0, %d]", op, name, rank,
                                       culayers::kMaxRank);
  }
  std::int64_t count = 1;
  for (int j = 0; j < rank; ++j) {
    if (dims[j] < 0) {
      return culayers::detail::set_error(Status::kErrorInvalidShape,
                                         "%s: %s: dimension %d is negative (%lld)", op, name, j,
                                         static_cast<long long>(dims[j]));
    }
    if (dims[j] != 0 && !culayers::detail::checked_mul(count, dims[j], &count)) {
      return culayers::detail::set_error(
          overflow, "%s: %s: the element count overflows int64%s", op, name,
          overflow == Status::kErrorInvalidShape ? " (it cannot broadcast to x's shape)" : "");
    }
  }
  return Shape::make(dims, rank, out);
}

cd::DropoutInitArgs to_cpp_args(const culayersDropoutInitArgs_t& a, Status*) {
  cd::DropoutInitArgs r;
  r.state = to_cpp(a.state);
  r.seed = a.seed;
  r.offset = a.offset;
  r.initial_keep_rate = a.initial_keep_rate;
  r.decay_rate = a.decay_rate;
  r.decay_interval = a.decay_interval;
  r.iterations = a.iterations;
  r.redraws = a.redraws;
  return r;
}

cd::DropoutUpdateArgs to_cpp_args(const culayersDropoutUpdateArgs_t& a, Status*) {
  cd::DropoutUpdateArgs r;
  r.state = to_cpp(a.state);
  return r;
}

cd::DropoutRedrawArgs to_cpp_args(const culayersDropoutRedrawArgs_t& a, Status*) {
  cd::DropoutRedrawArgs r;
  r.state = to_cpp(a.state);
  r.to_schedule = a.to_schedule != 0;
  return r;
}

cd::DropoutForwardArgs to_cpp_args(const culayersDropoutForwardArgs_t& a, Status* status) {
  const char* op = "dropout_forward";
  cd::DropoutForwardArgs out;
  cd::DropoutForwardArgs* r = &out;
  if (Status s = make_shape(a.rank, a.dims, op, "shape", Status::kErrorSizeLimit, &r->shape);
      !culayers::ok(s)) {
    *status = s;
    return out;
  }
  if (Status s = make_shape(a.noise_rank, a.noise_dims, op, "noise_shape", Status::kErrorInvalidShape,
                            &r->noise_shape);
      !culayers::ok(s)) {
    *status = s;
    return out;
  }
  r->x = a.x;
  r->y = a.y;
  r->dtype = static_cast<DType>(culayers::capi::enum_value(a.dtype));
  r->state = to_cpp(a.state);
  r->offset = a.offset;
  r->mask = a.mask;
  r->max_blocks = a.max_blocks;
  r->force_vector_width = a.force_vector_width;
  return out;
}

cd::DropoutBackwardArgs to_cpp_args(const culayersDropoutBackwardArgs_t& a, Status* status) {
  const char* op = "dropout_backward";
  cd::DropoutBackwardArgs out;
  cd::DropoutBackwardArgs* r = &out;
  if (Status s = make_shape(a.rank, a.dims, op, "shape", Status::kErrorSizeLimit, &r->shape);
      !culayers::ok(s)) {
    *status = s;
    return out;
  }
  if (Status s = make_shape(a.noise_rank, a.noise_dims, op, "noise_shape", Status::kErrorInvalidShape,
                            &r->noise_shape);
      !culayers::ok(s)) {
    *status = s;
    return out;
  }
  r->dy = a.dy;
  r->dx = a.dx;
  r->dtype = static_cast<DType>(culayers::capi::enum_value(a.dtype));
  r->state = to_cpp(a.state);
  r->offset = a.offset;
  r->max_blocks = a.max_blocks;
  r->force_vector_width = a.force_vector_width;
  return out;
}

// init and update convert without failing; forward and backward check their shapes while converting.
constexpr auto kConvert = [](const auto& c, Status* status) { return to_cpp_args(c, status); };

constexpr const char* kInit = "dropout_init";
constexpr const char* kUpdate = "dropout_update";
constexpr const char* kRedraw = "dropout_redraw";
constexpr const char* kForward = "dropout_forward";
constexpr const char* kBackward = "dropout_backward";

} // namespace

extern "C" {

void culayersDropoutInitArgsInit(culayersDropoutInitArgs_t* args) {
  if (args == nullptr) {
    return;
  }
  const cd::DropoutInitArgs d;
  args->state = nullptr;
  args->seed = d.seed;
  args->offset = d.offset;
  args->initial_keep_rate = d.initial_keep_rate;
  args->decay_rate = d.decay_rate;
  args->decay_interval = d.decay_interval;
  args->iterations = d.iterations;
  args->redraws = d.redraws;
}

culayersStatus_t culayersDropoutInitCanImplement(const culayersDropoutInitArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kInit, kConvert);
}
culayersStatus_t culayersDropoutInitWorkspaceSize(const culayersDropoutInitArgs_t* args, size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kInit, kConvert);
}
culayersStatus_t culayersDropoutInit(const culayersDropoutInitArgs_t* args, void* workspace,
                                     size_t workspace_bytes, culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kInit, kConvert);
}

culayersStatus_t culayersDropoutRedrawCanImplement(const culayersDropoutRedrawArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kRedraw, kConvert);
}
culayersStatus_t culayersDropoutRedrawWorkspaceSize(const culayersDropoutRedrawArgs_t* args, size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kRedraw, kConvert);
}
culayersStatus_t culayersDropoutRedraw(const culayersDropoutRedrawArgs_t* args, void* workspace,
                                       size_t workspace_bytes, culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kRedraw, kConvert);
}

culayersStatus_t culayersDropoutUpdateCanImplement(const culayersDropoutUpdateArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kUpdate, kConvert);
}
culayersStatus_t culayersDropoutUpdateWorkspaceSize(const culayersDropoutUpdateArgs_t* args, size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kUpdate, kConvert);
}
culayersStatus_t culayersDropoutUpdate(const culayersDropoutUpdateArgs_t* args, void* workspace,
                                       size_t workspace_bytes, culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kUpdate, kConvert);
}

culayersStatus_t culayersDropoutForwardCanImplement(const culayersDropoutForwardArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kForward, kConvert);
}
culayersStatus_t culayersDropoutForwardWorkspaceSize(const culayersDropoutForwardArgs_t* args,
                                                     size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kForward, kConvert);
}
culayersStatus_t culayersDropoutForward(const culayersDropoutForwardArgs_t* args, void* workspace,
                                        size_t workspace_bytes, culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kForward, kConvert);
}

culayersStatus_t culayersDropoutBackwardCanImplement(const culayersDropoutBackwardArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kBackward, kConvert);
}
culayersStatus_t culayersDropoutBackwardWorkspaceSize(const culayersDropoutBackwardArgs_t* args,
                                                      size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kBackward, kConvert);
}
culayersStatus_t culayersDropoutBackward(const culayersDropoutBackwardArgs_t* args, void* workspace,
                                         size_t workspace_bytes, culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kBackward, kConvert);
}

double culayersDropoutScheduledKeepRate(double initial_keep_rate, double decay_rate, int64_t decay_interval,
                                        int64_t k) {
  return cd::scheduled_keep_rate(initial_keep_rate, decay_rate, decay_interval, k);
}

void culayersDropoutPhiloxDraws(uint64_t seed, uint64_t stream, uint64_t first, size_t count, uint32_t* out) {
  if (out != nullptr) {
    cd::philox_draws(seed, stream, first, count, out);
  }
}

} // extern "C"
