// The C API is a thin shim over the C++ API; the static_asserts pin the C enums to the C++ ones so
// casting between them is exact.
#include "src/capi_enum.hpp"
#include "culayers/culayers.h"

#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

#include <cuda_runtime_api.h>

#include <type_traits>

namespace {

using culayers::DType;
using culayers::Layout;
using culayers::Status;

template <class CEnum, class CppEnum>
constexpr bool same_value(CEnum c, CppEnum cpp) {
  return static_cast<int>(c) == static_cast<int>(cpp);
}

// C callers pass their stream as culayersStream_t; it must be cudaStream_t itself.
static_assert(std::is_same_v<culayersStream_t, cudaStream_t>);

static_assert(same_value(CULAYERS_STATUS_SUCCESS, Status::kSuccess));
static_assert(same_value(CULAYERS_STATUS_NULL_POINTER, Status::kErrorNullPointer));
static_assert(same_value(CULAYERS_STATUS_INVALID_SHAPE, Status::kErrorInvalidShape));
static_assert(same_value(CULAYERS_STATUS_INVALID_DTYPE, Status::kErrorInvalidDType));
static_assert(same_value(CULAYERS_STATUS_INVALID_LAYOUT, Status::kErrorInvalidLayout));
static_assert(same_value(CULAYERS_STATUS_MISALIGNED, Status::kErrorMisaligned));
static_assert(same_value(CULAYERS_STATUS_INVALID_VALUE, Status::kErrorInvalidValue));
static_assert(same_value(CULAYERS_STATUS_SIZE_LIMIT, Status::kErrorSizeLimit));
static_assert(same_value(CULAYERS_STATUS_INCONSISTENT_ARGUMENTS, Status::kErrorInconsistentArguments));
static_assert(same_value(CULAYERS_STATUS_WORKSPACE_TOO_SMALL, Status::kErrorWorkspaceTooSmall));
static_assert(same_value(CULAYERS_STATUS_OUT_OF_MEMORY, Status::kErrorOutOfMemory));
static_assert(same_value(CULAYERS_STATUS_CUDA_LAUNCH, Status::kErrorCudaLaunch));
static_assert(same_value(CULAYERS_STATUS_CUDA_RUNTIME, Status::kErrorCudaRuntime));
static_assert(same_value(CULAYERS_STATUS_NO_DEVICE, Status::kErrorNoDevice));
static_assert(same_value(CULAYERS_STATUS_NOT_SUPPORTED, Status::kErrorNotSupported));
static_assert(same_value(CULAYERS_STATUS_PARSE, Status::kErrorParse));
static_assert(same_value(CULAYERS_STATUS_IO, Status::kErrorIO));
static_assert(same_value(CULAYERS_STATUS_UNKNOWN_CLASS, Status::kErrorUnknownClass));
static_assert(same_value(CULAYERS_STATUS_INTERNAL, Status::kErrorInternal));

static_assert(same_value(CULAYERS_DTYPE_FLOAT32, DType::kFloat32));
static_assert(same_value(CULAYERS_DTYPE_FLOAT16, DType::kFloat16));
static_assert(same_value(CULAYERS_DTYPE_BFLOAT16, DType::kBFloat16));
static_assert(same_value(CULAYERS_DTYPE_INT32, DType::kInt32));
static_assert(same_value(CULAYERS_DTYPE_UINT8, DType::kUInt8));
static_assert(same_value(CULAYERS_DTYPE_INT64, DType::kInt64));

static_assert(same_value(CULAYERS_LAYOUT_CHANNELS_FIRST, Layout::kChannelsFirst));
static_assert(same_value(CULAYERS_LAYOUT_CHANNELS_LAST, Layout::kChannelsLast));

static_assert(CULAYERS_MAX_RANK == culayers::kMaxRank);
static_assert(sizeof(culayersStatus_t) == sizeof(int), "C enums are passed where C++ expects int");

} // namespace

extern "C" {

int culayersGetVersion(void) {
  return culayers::version();
}

const char* culayersGetVersionString(void) {
  return culayers::version_string();
}

const char* culayersGetStatusString(culayersStatus_t status) {
  return culayers::status_string(static_cast<Status>(culayers::capi::enum_value(status)));
}

const char* culayersGetLastErrorMessage(void) {
  return culayers::last_error_message();
}

size_t culayersGetDTypeSize(culayersDType_t dtype) {
  return culayers::dtype_size(static_cast<DType>(culayers::capi::enum_value(dtype)));
}

const char* culayersGetDTypeName(culayersDType_t dtype) {
  return culayers::dtype_name(static_cast<DType>(culayers::capi::enum_value(dtype)));
}

} // extern "C"
