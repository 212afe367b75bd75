// C API of the batch-normalization ops: converts the plain C structs to the C++ argument structs and
// forwards (src/capi_shim.hpp). The conversions cannot fail: the dtype is read as the int the caller stored
// and validated by the op.
#include "src/capi_enum.hpp"
#include "src/capi_shim.hpp"
#include "culayers/c/batch_norm.h"

#include "culayers/batch_norm.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <type_traits>

namespace {

using culayers::DType;
using culayers::Status;
namespace cb = culayers::batch_norm;

static_assert(std::is_same_v<culayersStream_t, cudaStream_t>, "culayersStream_t is cudaStream_t");

cb::BatchNormApplyArgs to_cpp(const culayersBatchNormApplyArgs_t& a) {
  cb::BatchNormApplyArgs r;
  r.dtype = static_cast<DType>(culayers::capi::enum_value(a.dtype));
  r.x = a.x;
  r.rows = a.rows;
  r.channels = a.channels;
  r.inner = a.inner;
  r.mean = a.mean;
  r.variance = a.variance;
  r.gamma = a.gamma;
  r.beta = a.beta;
  r.epsilon = a.epsilon;
  r.y = a.y;
  r.vector_width = a.vector_width;
  r.max_blocks = a.max_blocks;
  return r;
}

cb::BatchNormMergeMomentsArgs to_cpp(const culayersBatchNormMergeMomentsArgs_t& a) {
  cb::BatchNormMergeMomentsArgs r;
  r.rows = a.rows;
  r.channels = a.channels;
  r.count_per_row = a.count_per_row;
  r.mean = a.mean;
  r.variance = a.variance;
  r.mean_out = a.mean_out;
  r.variance_out = a.variance_out;
  r.count_out = a.count_out;
  r.max_blocks = a.max_blocks;
  return r;
}

cb::BatchNormMovingUpdateArgs to_cpp(const culayersBatchNormMovingUpdateArgs_t& a) {
  cb::BatchNormMovingUpdateArgs r;
  r.channels = a.channels;
  r.momentum = a.momentum;
  r.mean = a.mean;
  r.variance = a.variance;
  r.count = a.count;
  r.moving_mean = a.moving_mean;
  r.moving_variance = a.moving_variance;
  return r;
}

// The conversions cannot fail.
constexpr auto kConvert = [](const auto& c, Status*) { return to_cpp(c); };

constexpr const char* kApply = "batch_norm_apply";
constexpr const char* kMerge = "batch_norm_merge_moments";
constexpr const char* kUpdate = "batch_norm_moving_update";

} // namespace

extern "C" {

void culayersBatchNormApplyArgsInit(culayersBatchNormApplyArgs_t* args) {
  if (args == nullptr) {
    return;
  }
  const cb::BatchNormApplyArgs d;
  *args = culayersBatchNormApplyArgs_t{};
  args->dtype = static_cast<culayersDType_t>(d.dtype);
  args->inner = d.inner;
  args->epsilon = d.epsilon;
}

void culayersBatchNormMergeMomentsArgsInit(culayersBatchNormMergeMomentsArgs_t* args) {
  if (args == nullptr) {
    return;
  }
  *args = culayersBatchNormMergeMomentsArgs_t{};
}

void culayersBatchNormMovingUpdateArgsInit(culayersBatchNormMovingUpdateArgs_t* args) {
  if (args == nullptr) {
    return;
  }
  *args = culayersBatchNormMovingUpdateArgs_t{};
  args->momentum = cb::BatchNormMovingUpdateArgs{}.momentum;
}

culayersStatus_t culayersBatchNormApplyCanImplement(const culayersBatchNormApplyArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kApply, kConvert);
}
culayersStatus_t culayersBatchNormApplyWorkspaceSize(const culayersBatchNormApplyArgs_t* args,
                                                     size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kApply, kConvert);
}
culayersStatus_t culayersBatchNormApply(const culayersBatchNormApplyArgs_t* args, void* workspace,
                                        size_t workspace_bytes, culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kApply, kConvert);
}

culayersStatus_t culayersBatchNormMergeMomentsCanImplement(const culayersBatchNormMergeMomentsArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kMerge, kConvert);
}
culayersStatus_t culayersBatchNormMergeMomentsWorkspaceSize(const culayersBatchNormMergeMomentsArgs_t* args,
                                                            size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kMerge, kConvert);
}
culayersStatus_t culayersBatchNormMergeMoments(const culayersBatchNormMergeMomentsArgs_t* args,
                                               void* workspace, size_t workspace_bytes,
                                               culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kMerge, kConvert);
}

culayersStatus_t culayersBatchNormMovingUpdateCanImplement(const culayersBatchNormMovingUpdateArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kUpdate, kConvert);
}
culayersStatus_t culayersBatchNormMovingUpdateWorkspaceSize(const culayersBatchNormMovingUpdateArgs_t* args,
                                                            size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kUpdate, kConvert);
}
culayersStatus_t culayersBatchNormMovingUpdate(const culayersBatchNormMovingUpdateArgs_t* args,
                                               void* workspace, size_t workspace_bytes,
                                               culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kUpdate, kConvert);
}

} // extern "C"
