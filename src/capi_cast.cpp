// C API of the cast op: converts the plain C struct to the C++ argument struct and forwards
// (src/capi_shim.hpp). The conversion cannot fail: the dtypes are read as the ints the caller stored and
// validated by the op.
#include "src/capi_enum.hpp"
#include "src/capi_shim.hpp"
#include "culayers/c/cast.h"

#include "culayers/cast.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"

#include <cuda_runtime_api.h>

#include <cstddef>

namespace {

using culayers::DType;
using culayers::Status;
namespace cc = culayers::cast;

cc::CastArgs to_cpp(const culayersCastArgs_t& a) {
  cc::CastArgs r;
  r.x_dtype = static_cast<DType>(culayers::capi::enum_value(a.x_dtype));
  r.x = a.x;
  r.y_dtype = static_cast<DType>(culayers::capi::enum_value(a.y_dtype));
  r.y = a.y;
  r.count = a.count;
  r.vector_width = a.vector_width;
  r.max_blocks = a.max_blocks;
  return r;
}

constexpr auto kConvert = [](const auto& c, Status*) { return to_cpp(c); };
constexpr const char* kCast = "cast";

} // namespace

extern "C" {

void culayersCastArgsInit(culayersCastArgs_t* args) {
  if (args == nullptr) {
    return;
  }
  const cc::CastArgs d;
  *args = culayersCastArgs_t{};
  args->x_dtype = static_cast<culayersDType_t>(d.x_dtype);
  args->y_dtype = static_cast<culayersDType_t>(d.y_dtype);
}

culayersStatus_t culayersCastCanImplement(const culayersCastArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kCast, kConvert);
}
culayersStatus_t culayersCastWorkspaceSize(const culayersCastArgs_t* args, size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kCast, kConvert);
}
culayersStatus_t culayersCast(const culayersCastArgs_t* args, void* workspace, size_t workspace_bytes,
                              culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kCast, kConvert);
}

} // extern "C"
