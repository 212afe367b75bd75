// C API of the dropout ops: converts the plain C structs to the C++ argument structs and forwards. The
// static_asserts pin the C state layout to the C++ one, so a culayersDropoutState_t* is passed through
// as a DropoutState*.
#include "src/capi_enum.hpp"
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
CULAYERS_SAME_FIELD(reserved2);
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

culayersStatus_t to_c(Status s) {
  return static_cast<culayersStatus_t>(s);
}

Status null_args(const char* op) {
  return culayers::detail::set_error(Status::kErrorNullPointer, "%s: args: is null", op);
}

/// Builds a Shape from a C (rank, dims) pair, with the op's name in the messages.
Status make_shape(int rank, const std::int64_t* dims, const char* op, const char* name, Shape* out) {
  if (rank < 0 || rank > culayers::kMaxRank) {
    return culayers::detail::set_error(Status::kErrorInvalidShape, "%s: %s: rank %d is not in [0, %d]", op,
                                       name, rank, culayers::kMaxRank);
  }
  for (int j = 0; j < rank; ++j) {
    if (dims[j] < 0) {
      return culayers::detail::set_error(Status::kErrorInvalidShape,
                                         "%s: %s: dimension %d is negative (%lld)", op, name, j,
                                         static_cast<long long>(dims[j]));
    }
  }
  return Shape::make(dims, rank, out);
}

cd::DropoutInitArgs convert(const culayersDropoutInitArgs_t& a) {
  cd::DropoutInitArgs r;
  r.state = to_cpp(a.state);
  r.seed = a.seed;
  r.offset = a.offset;
  r.initial_keep_rate = a.initial_keep_rate;
  r.decay_rate = a.decay_rate;
  r.decay_interval = a.decay_interval;
  r.iterations = a.iterations;
  return r;
}

cd::DropoutUpdateArgs convert(const culayersDropoutUpdateArgs_t& a) {
  cd::DropoutUpdateArgs r;
  r.state = to_cpp(a.state);
  return r;
}

Status convert(const culayersDropoutForwardArgs_t& a, cd::DropoutForwardArgs* r) {
  const char* op = "dropout_forward";
  if (Status s = make_shape(a.rank, a.dims, op, "shape", &r->shape); !culayers::ok(s)) {
    return s;
  }
  if (Status s = make_shape(a.noise_rank, a.noise_dims, op, "noise_shape", &r->noise_shape);
      !culayers::ok(s)) {
    return s;
  }
  r->x = a.x;
  r->y = a.y;
  r->dtype = static_cast<DType>(culayers::capi::enum_value(a.dtype));
  r->state = to_cpp(a.state);
  r->offset = a.offset;
  r->mask = a.mask;
  r->max_blocks = a.max_blocks;
  r->force_vector_width = a.force_vector_width;
  return Status::kSuccess;
}

Status convert(const culayersDropoutBackwardArgs_t& a, cd::DropoutBackwardArgs* r) {
  const char* op = "dropout_backward";
  if (Status s = make_shape(a.rank, a.dims, op, "shape", &r->shape); !culayers::ok(s)) {
    return s;
  }
  if (Status s = make_shape(a.noise_rank, a.noise_dims, op, "noise_shape", &r->noise_shape);
      !culayers::ok(s)) {
    return s;
  }
  r->dy = a.dy;
  r->dx = a.dx;
  r->dtype = static_cast<DType>(culayers::capi::enum_value(a.dtype));
  r->state = to_cpp(a.state);
  r->offset = a.offset;
  r->max_blocks = a.max_blocks;
  r->force_vector_width = a.force_vector_width;
  return Status::kSuccess;
}

// One body for the three entry points of ops whose C args convert without failing (init, update).
template <class CArgs>
culayersStatus_t can_implement_simple(const CArgs* args, const char* op) {
  if (args == nullptr) {
    return to_c(null_args(op));
  }
  return to_c(cd::can_implement(convert(*args)));
}

template <class CArgs>
culayersStatus_t workspace_simple(const CArgs* args, size_t* bytes, const char* op) {
  if (args == nullptr || bytes == nullptr) {
    return to_c(culayers::detail::set_error(Status::kErrorNullPointer, "%s: %s: is null", op,
                                            args == nullptr ? "args" : "bytes"));
  }
  *bytes = cd::workspace_size(convert(*args));
  return CULAYERS_STATUS_SUCCESS;
}

template <class CArgs>
culayersStatus_t run_simple(const CArgs* args, void* workspace, size_t workspace_bytes,
                            culayersStream_t stream, const char* op) {
  if (args == nullptr) {
    return to_c(null_args(op));
  }
  return to_c(cd::run(convert(*args), workspace, workspace_bytes, stream));
}

// The same for the tensor ops, whose shapes are checked while converting.
template <class CppArgs, class CArgs>
culayersStatus_t can_implement_tensor(const CArgs* args, const char* op) {
  if (args == nullptr) {
    return to_c(null_args(op));
  }
  CppArgs a;
  if (Status s = convert(*args, &a); !culayers::ok(s)) {
    return to_c(s);
  }
  return to_c(cd::can_implement(a));
}

template <class CppArgs, class CArgs>
culayersStatus_t workspace_tensor(const CArgs* args, size_t* bytes, const char* op) {
  if (args == nullptr || bytes == nullptr) {
    return to_c(culayers::detail::set_error(Status::kErrorNullPointer, "%s: %s: is null", op,
                                            args == nullptr ? "args" : "bytes"));
  }
  CppArgs a;
  if (Status s = convert(*args, &a); !culayers::ok(s)) {
    return to_c(s);
  }
  *bytes = cd::workspace_size(a);
  return CULAYERS_STATUS_SUCCESS;
}

template <class CppArgs, class CArgs>
culayersStatus_t run_tensor(const CArgs* args, void* workspace, size_t workspace_bytes,
                            culayersStream_t stream, const char* op) {
  if (args == nullptr) {
    return to_c(null_args(op));
  }
  CppArgs a;
  if (Status s = convert(*args, &a); !culayers::ok(s)) {
    return to_c(s);
  }
  return to_c(cd::run(a, workspace, workspace_bytes, stream));
}

constexpr const char* kInit = "dropout_init";
constexpr const char* kUpdate = "dropout_update";
constexpr const char* kForward = "dropout_forward";
constexpr const char* kBackward = "dropout_backward";

} // namespace

extern "C" {

void culayersDropoutInitArgsDefault(culayersDropoutInitArgs_t* args) {
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
}

culayersStatus_t culayersDropoutInitCanImplement(const culayersDropoutInitArgs_t* args) {
  return can_implement_simple(args, kInit);
}
culayersStatus_t culayersDropoutInitWorkspaceSize(const culayersDropoutInitArgs_t* args, size_t* bytes) {
  return workspace_simple(args, bytes, kInit);
}
culayersStatus_t culayersDropoutInit(const culayersDropoutInitArgs_t* args, void* workspace,
                                     size_t workspace_bytes, culayersStream_t stream) {
  return run_simple(args, workspace, workspace_bytes, stream, kInit);
}

culayersStatus_t culayersDropoutUpdateCanImplement(const culayersDropoutUpdateArgs_t* args) {
  return can_implement_simple(args, kUpdate);
}
culayersStatus_t culayersDropoutUpdateWorkspaceSize(const culayersDropoutUpdateArgs_t* args, size_t* bytes) {
  return workspace_simple(args, bytes, kUpdate);
}
culayersStatus_t culayersDropoutUpdate(const culayersDropoutUpdateArgs_t* args, void* workspace,
                                       size_t workspace_bytes, culayersStream_t stream) {
  return run_simple(args, workspace, workspace_bytes, stream, kUpdate);
}

culayersStatus_t culayersDropoutForwardCanImplement(const culayersDropoutForwardArgs_t* args) {
  return can_implement_tensor<cd::DropoutForwardArgs>(args, kForward);
}
culayersStatus_t culayersDropoutForwardWorkspaceSize(const culayersDropoutForwardArgs_t* args,
                                                     size_t* bytes) {
  return workspace_tensor<cd::DropoutForwardArgs>(args, bytes, kForward);
}
culayersStatus_t culayersDropoutForward(const culayersDropoutForwardArgs_t* args, void* workspace,
                                        size_t workspace_bytes, culayersStream_t stream) {
  return run_tensor<cd::DropoutForwardArgs>(args, workspace, workspace_bytes, stream, kForward);
}

culayersStatus_t culayersDropoutBackwardCanImplement(const culayersDropoutBackwardArgs_t* args) {
  return can_implement_tensor<cd::DropoutBackwardArgs>(args, kBackward);
}
culayersStatus_t culayersDropoutBackwardWorkspaceSize(const culayersDropoutBackwardArgs_t* args,
                                                      size_t* bytes) {
  return workspace_tensor<cd::DropoutBackwardArgs>(args, bytes, kBackward);
}
culayersStatus_t culayersDropoutBackward(const culayersDropoutBackwardArgs_t* args, void* workspace,
                                         size_t workspace_bytes, culayersStream_t stream) {
  return run_tensor<cd::DropoutBackwardArgs>(args, workspace, workspace_bytes, stream, kBackward);
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
