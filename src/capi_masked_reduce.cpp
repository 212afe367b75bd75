// C API of the masked-reduction family: plain structs copied field by field into the C++ argument structs
// (culayers/masked_reduce.hpp). The static_asserts pin the C enums to the C++ ones.
#include "src/capi_enum.hpp"
#include "src/capi_shim.hpp"
#include "culayers/c/masked_reduce.h"

#include "culayers/masked_reduce.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"

#include <cuda_runtime_api.h>

#include <type_traits>

namespace {

namespace mr = culayers::masked_reduce;
using culayers::DType;
using culayers::Status;

template <class CEnum, class CppEnum>
constexpr bool same_value(CEnum c, CppEnum cpp) {
  return static_cast<int>(c) == static_cast<int>(cpp);
}

static_assert(same_value(CULAYERS_MASKED_REDUCE_SUM, mr::ReduceOp::kSum));
static_assert(same_value(CULAYERS_MASKED_REDUCE_MEAN, mr::ReduceOp::kMean));
static_assert(same_value(CULAYERS_MASKED_REDUCE_MAX, mr::ReduceOp::kMax));
static_assert(same_value(CULAYERS_MASKED_REDUCE_MIN, mr::ReduceOp::kMin));
static_assert(same_value(CULAYERS_MASKED_REDUCE_MOMENTS, mr::ReduceOp::kMoments));
static_assert(same_value(CULAYERS_VALIDITY_NONE, mr::Validity::kNone));
static_assert(same_value(CULAYERS_VALIDITY_MASK, mr::Validity::kMask));
static_assert(same_value(CULAYERS_VALIDITY_LENGTHS, mr::Validity::kLengths));
static_assert(same_value(CULAYERS_MASKED_REDUCE_PATH_AUTO, mr::Path::kAuto));
static_assert(same_value(CULAYERS_MASKED_REDUCE_PATH_NARROW, mr::Path::kNarrow));
static_assert(same_value(CULAYERS_MASKED_REDUCE_PATH_WIDE, mr::Path::kWide));
static_assert(same_value(CULAYERS_MASKED_REDUCE_PATH_SPLIT, mr::Path::kSplit));
static_assert(std::is_same_v<culayersStream_t, cudaStream_t>, "culayersStream_t must be cudaStream_t");

mr::MaskedReduceArgs to_cpp(const culayersMaskedReduceArgs_t& c) {
  mr::MaskedReduceArgs a;
  a.op = static_cast<mr::ReduceOp>(culayers::capi::enum_value(c.op));
  a.dtype = static_cast<DType>(culayers::capi::enum_value(c.dtype));
  a.x = c.x;
  a.outer = c.outer;
  a.reduce = c.reduce;
  a.inner = c.inner;
  a.validity = static_cast<mr::Validity>(culayers::capi::enum_value(c.validity));
  a.mask = c.mask;
  a.lengths = c.lengths;
  a.length_errors = c.length_errors;
  a.out = c.out;
  a.mean = c.mean;
  a.variance = c.variance;
  a.fill_value = c.fill_value;
  a.counts = c.counts;
  a.indices = c.indices;
  a.tuning.path = static_cast<mr::Path>(culayers::capi::enum_value(c.tuning.path));
  a.tuning.vector_width = c.tuning.vector_width;
  a.tuning.target_threads = c.tuning.target_threads;
  a.tuning.narrow_max_inner = c.tuning.narrow_max_inner;
  a.tuning.narrow_max_row = c.tuning.narrow_max_row;
  a.tuning.min_rows_per_thread = c.tuning.min_rows_per_thread;
  a.tuning.splits = c.tuning.splits;
  return a;
}

mr::MaskedReduceBackwardArgs to_cpp(const culayersMaskedReduceBackwardArgs_t& c) {
  mr::MaskedReduceBackwardArgs a;
  a.op = static_cast<mr::ReduceOp>(culayers::capi::enum_value(c.op));
  a.dtype = static_cast<DType>(culayers::capi::enum_value(c.dtype));
  a.outer = c.outer;
  a.reduce = c.reduce;
  a.inner = c.inner;
  a.validity = static_cast<mr::Validity>(culayers::capi::enum_value(c.validity));
  a.mask = c.mask;
  a.lengths = c.lengths;
  a.length_errors = c.length_errors;
  a.dy = c.dy;
  a.indices = c.indices;
  a.dmean = c.dmean;
  a.dvar = c.dvar;
  a.mean = c.mean;
  a.x = c.x;
  a.counts = c.counts;
  a.dx = c.dx;
  a.vector_width = c.vector_width;
  a.row_chunks = c.row_chunks;
  return a;
}

mr::MaskingArgs to_cpp(const culayersMaskingArgs_t& c) {
  mr::MaskingArgs a;
  a.dtype = static_cast<DType>(culayers::capi::enum_value(c.dtype));
  a.x = c.x;
  a.outer = c.outer;
  a.reduce = c.reduce;
  a.inner = c.inner;
  a.mask_value = c.mask_value;
  a.mask = c.mask;
  a.y = c.y;
  return a;
}

mr::MaskExpandArgs to_cpp(const culayersMaskExpandArgs_t& c) {
  mr::MaskExpandArgs a;
  a.mask = c.mask;
  a.out = c.out;
  a.outer = c.outer;
  a.steps = c.steps;
  a.features = c.features;
  return a;
}

// The conversions cannot fail.
constexpr auto kConvert = [](const auto& c, Status*) { return to_cpp(c); };

constexpr const char* kReduce = "masked_reduce";
constexpr const char* kBackward = "masked_reduce_backward";
constexpr const char* kMasking = "masking";
constexpr const char* kExpand = "mask_expand";

} // namespace

extern "C" {

void culayersMaskedReduceArgsInit(culayersMaskedReduceArgs_t* args) {
  if (args == nullptr) {
    return;
  }
  *args = culayersMaskedReduceArgs_t{};
  args->op = CULAYERS_MASKED_REDUCE_SUM;
  args->dtype = CULAYERS_DTYPE_FLOAT32;
  args->validity = CULAYERS_VALIDITY_NONE;
  args->fill_value = 0.0f;
  args->tuning.path = CULAYERS_MASKED_REDUCE_PATH_AUTO;
}

void culayersMaskedReduceBackwardArgsInit(culayersMaskedReduceBackwardArgs_t* args) {
  if (args == nullptr) {
    return;
  }
  *args = culayersMaskedReduceBackwardArgs_t{};
  args->op = CULAYERS_MASKED_REDUCE_SUM;
  args->dtype = CULAYERS_DTYPE_FLOAT32;
  args->validity = CULAYERS_VALIDITY_NONE;
}

void culayersMaskingArgsInit(culayersMaskingArgs_t* args) {
  if (args == nullptr) {
    return;
  }
  *args = culayersMaskingArgs_t{};
  args->dtype = CULAYERS_DTYPE_FLOAT32;
  args->mask_value = 0.0f;
}

void culayersMaskExpandArgsInit(culayersMaskExpandArgs_t* args) {
  if (args == nullptr) {
    return;
  }
  *args = culayersMaskExpandArgs_t{};
}

culayersStatus_t culayersMaskedReduceCanImplement(const culayersMaskedReduceArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kReduce, kConvert);
}

culayersStatus_t culayersMaskedReduceBackwardCanImplement(const culayersMaskedReduceBackwardArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kBackward, kConvert);
}

culayersStatus_t culayersMaskingCanImplement(const culayersMaskingArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kMasking, kConvert);
}

culayersStatus_t culayersMaskExpandCanImplement(const culayersMaskExpandArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kExpand, kConvert);
}

culayersStatus_t culayersMaskedReduceCheckSizes(int64_t outer, int64_t reduce, int64_t inner) {
  return culayers::capi::guarded("culayersMaskedReduceCheckSizes", [&] {
    return culayers::capi::to_c(culayers::masked_reduce::check_sizes(outer, reduce, inner));
  });
}

culayersStatus_t culayersMaskingCheckSizes(int64_t outer, int64_t reduce, int64_t inner) {
  return culayers::capi::guarded("culayersMaskingCheckSizes", [&] {
    return culayers::capi::to_c(culayers::masked_reduce::check_masking_sizes(outer, reduce, inner));
  });
}

culayersStatus_t culayersMaskedReduceWorkspaceSize(const culayersMaskedReduceArgs_t* args, size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kReduce, kConvert);
}

culayersStatus_t culayersMaskedReduceBackwardWorkspaceSize(const culayersMaskedReduceBackwardArgs_t* args,
                                                           size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kBackward, kConvert);
}

culayersMaskedReducePath_t culayersMaskedReduceSelectedPath(const culayersMaskedReduceArgs_t* args) {
  if (args == nullptr) {
    return CULAYERS_MASKED_REDUCE_PATH_AUTO;
  }
  try { // no exception crosses the C boundary (the planner does not throw; this is the backstop)
    return static_cast<culayersMaskedReducePath_t>(static_cast<int>(mr::selected_path(to_cpp(*args))));
  } catch (...) {
    return CULAYERS_MASKED_REDUCE_PATH_AUTO;
  }
}

culayersStatus_t culayersMaskedReduce(const culayersMaskedReduceArgs_t* args, void* workspace,
                                      size_t workspace_bytes, culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kReduce, kConvert);
}

culayersStatus_t culayersMaskedReduceBackward(const culayersMaskedReduceBackwardArgs_t* args, void* workspace,
                                              size_t workspace_bytes, culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kBackward, kConvert);
}

culayersStatus_t culayersMasking(const culayersMaskingArgs_t* args, culayersStream_t stream) {
  return culayers::capi::entry_run(args, nullptr, 0, stream, kMasking, kConvert);
}

culayersStatus_t culayersMaskExpand(const culayersMaskExpandArgs_t* args, culayersStream_t stream) {
  return culayers::capi::entry_run(args, nullptr, 0, stream, kExpand, kConvert);
}

} // extern "C"
