// The shape every op's C entry points share: NULL checks that name the op and the argument, the C args
// converted to the C++ args struct, then the C++ op (CanImplement, WorkspaceSize, the op itself).
//
// `convert(const CArgs& c, Status* status)` returns the C++ args; it sets *status only when the conversion
// fails (a shape with a negative rank, say). The C++ op is found by argument-dependent lookup on the C++
// args struct: culayers::<family>::can_implement / workspace_size / run.
#ifndef CULAYERS_SRC_CAPI_SHIM_HPP_
#define CULAYERS_SRC_CAPI_SHIM_HPP_

#include "culayers/culayers.h"
#include "culayers/status.hpp"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <exception>
#include <new>

namespace culayers::capi {

inline culayersStatus_t to_c(Status s) {
  return static_cast<culayersStatus_t>(static_cast<int>(s));
}

/// CULAYERS_STATUS_NULL_POINTER with "op: name: is null" as the last error message.
inline culayersStatus_t null_arg(const char* op, const char* name) {
  return to_c(::culayers::detail::set_error(Status::kErrorNullPointer, "%s: %s: is null", op, name));
}

/// Runs `body` (which returns a culayersStatus_t) so that no C++ exception crosses the C boundary: a
/// std::bad_alloc becomes CULAYERS_STATUS_OUT_OF_MEMORY, anything else CULAYERS_STATUS_INTERNAL, each with
/// "op: ..." as the last error message. The ops return a Status rather than throw; this is the backstop.
template <class Body>
culayersStatus_t guarded(const char* op, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return to_c(::culayers::detail::set_error(Status::kErrorOutOfMemory, "%s: out of host memory", op));
  } catch (const std::exception& e) {
    return to_c(::culayers::detail::set_error(Status::kErrorInternal, "%s: %s", op, e.what()));
  } catch (...) {
    return to_c(::culayers::detail::set_error(Status::kErrorInternal, "%s: unknown exception", op));
  }
}

template <class CArgs, class Convert>
culayersStatus_t entry_can_implement(const CArgs* args, const char* op, Convert convert) {
  if (args == nullptr) {
    return null_arg(op, "args");
  }
  return guarded(op, [&] {
    Status s = Status::kSuccess;
    const auto a = convert(*args, &s);
    return to_c(ok(s) ? can_implement(a) : s);
  });
}

/// Stores the workspace bytes in *bytes (0 for arguments the op would reject: CanImplement says why; also
/// 0, with the conversion's error status, when the C args do not convert); nothing is stored when args or
/// bytes is NULL.
template <class CArgs, class Convert>
culayersStatus_t entry_workspace_size(const CArgs* args, std::size_t* bytes, const char* op,
                                      Convert convert) {
  if (args == nullptr || bytes == nullptr) {
    return null_arg(op, args == nullptr ? "args" : "bytes");
  }
  return guarded(op, [&] {
    *bytes = 0;
    Status s = Status::kSuccess;
    const auto a = convert(*args, &s);
    if (!ok(s)) {
      return to_c(s);
    }
    *bytes = workspace_size(a);
    return CULAYERS_STATUS_SUCCESS;
  });
}

template <class CArgs, class Convert>
culayersStatus_t entry_run(const CArgs* args, void* workspace, std::size_t workspace_bytes,
                           cudaStream_t stream, const char* op, Convert convert) {
  if (args == nullptr) {
    return null_arg(op, "args");
  }
  return guarded(op, [&] {
    Status s = Status::kSuccess;
    const auto a = convert(*args, &s);
    return to_c(ok(s) ? run(a, workspace, workspace_bytes, stream) : s);
  });
}

} // namespace culayers::capi

#endif // CULAYERS_SRC_CAPI_SHIM_HPP_
