#include "culayers/status.hpp"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ostream>

CULAYERS_NAMESPACE_BEGIN

namespace {

// A fixed buffer per thread rather than std::string: recording an error must not allocate or throw,
// since it runs on failure paths (out-of-memory included) and behind the C API, which lets no exception out.
thread_local char t_last_error[detail::kErrorMessageCapacity] = {};

} // namespace

const char* status_string(Status status) noexcept {
  switch (status) {
  case Status::kSuccess:
    return "success";
  case Status::kErrorNullPointer:
    return "null pointer argument";
  case Status::kErrorInvalidShape:
    return "invalid shape";
  case Status::kErrorInvalidDType:
    return "invalid or unsupported dtype";
  case Status::kErrorInvalidLayout:
    return "invalid or unsupported layout";
  case Status::kErrorMisaligned:
    return "misaligned pointer or stride";
  case Status::kErrorInvalidValue:
    return "invalid argument value";
  case Status::kErrorSizeLimit:
    return "size exceeds a supported limit";
  case Status::kErrorInconsistentArguments:
    return "inconsistent arguments";
  case Status::kErrorWorkspaceTooSmall:
    return "workspace too small";
  case Status::kErrorOutOfMemory:
    return "out of memory";
  case Status::kErrorCudaLaunch:
    return "CUDA kernel launch failed";
  case Status::kErrorCudaRuntime:
    return "CUDA runtime error";
  case Status::kErrorNoDevice:
    return "no CUDA device available";
  case Status::kErrorNotSupported:
    return "not supported";
  case Status::kErrorParse:
    return "parse error";
  case Status::kErrorIO:
    return "I/O error";
  case Status::kErrorUnknownClass:
    return "unknown class name";
  case Status::kErrorInternal:
    return "internal error";
  }
  // No default label, so -Wswitch flags a new enumerator missing above.
  return "unknown status";
}

std::ostream& operator<<(std::ostream& os, Status status) {
  return os << status_string(status) << " (" << static_cast<int>(status) << ")";
}

const char* last_error_message() noexcept {
  return t_last_error;
}

namespace detail {

Status set_error(Status status, const char* fmt, ...) noexcept {
  if (fmt == nullptr) {
    t_last_error[0] = '\0';
    return status;
  }
  // Format into a scratch buffer first: arguments may point into t_last_error itself (wrapping the
  // previous message with context), and vsnprintf's source and destination must not overlap.
  char scratch[kErrorMessageCapacity];
  std::va_list args;
  va_start(args, fmt);
  const int needed = std::vsnprintf(scratch, sizeof(scratch), fmt, args);
  va_end(args);
  if (needed < 0) {
    std::snprintf(scratch, sizeof(scratch), "(invalid error message format: \"%s\")", fmt);
  } else if (static_cast<std::size_t>(needed) >= sizeof(scratch)) {
    // Make the cut visible: a silently shortened message reads like a complete (wrong) one.
    std::memcpy(scratch + sizeof(scratch) - 4, "...", 4);
  }
  std::memcpy(t_last_error, scratch, std::strlen(scratch) + 1);
  return status;
}

void clear_error() noexcept {
  t_last_error[0] = '\0';
}

} // namespace detail

CULAYERS_NAMESPACE_END
