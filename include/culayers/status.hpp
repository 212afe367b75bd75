// Status codes returned by every culayers call, and the per-thread detailed error message.
#ifndef CULAYERS_STATUS_HPP_
#define CULAYERS_STATUS_HPP_

#include <cstddef>
#include <iosfwd>

#include "culayers/version.hpp"

#if defined(__GNUC__) || defined(__clang__)
// Lets the compiler check set_error() format strings against their arguments like printf's.
#  define CULAYERS_PRINTF_FORMAT(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#  define CULAYERS_PRINTF_FORMAT(fmt_index, first_arg)
#endif

CULAYERS_NAMESPACE_BEGIN

/// Result of every culayers operation. The numbers are part of the ABI (culayersStatus_t mirrors
/// them) and are grouped by category (value / 100): 0 success, 1xx bad arguments, 2xx resources,
/// 3xx CUDA runtime, 4xx unsupported, 5xx model and file errors, 9xx internal. Values are never
/// renumbered or reused; new codes are appended inside their group.
enum class [[nodiscard]] Status : int{
    kSuccess = 0,

    // 1xx: the call was rejected before any work was enqueued; nothing was written.
    kErrorNullPointer = 100,
    kErrorInvalidShape = 101,
    kErrorInvalidDType = 102,
    kErrorInvalidLayout = 103,
    kErrorMisaligned = 104,
    kErrorInvalidValue = 105,
    kErrorSizeLimit = 106,
    kErrorInconsistentArguments = 107,

    // 2xx: caller-provided or device resources are insufficient.
    kErrorWorkspaceTooSmall = 200,
    kErrorOutOfMemory = 201,

    // 3xx: the CUDA runtime reported a failure; the stream may hold partial work.
    kErrorCudaLaunch = 300,
    kErrorCudaRuntime = 301,
    kErrorNoDevice = 302,

    // 4xx: valid request this build or device does not implement.
    kErrorNotSupported = 400,

    // 5xx: model configuration and weight files (layer front end).
    kErrorParse = 500,
    kErrorIO = 501,
    kErrorUnknownClass = 502,

    // 9xx: a culayers bug; please report it with last_error_message().
    kErrorInternal = 900,
};

/// True only for Status::kSuccess.
constexpr bool ok(Status status) noexcept {
  return status == Status::kSuccess;
}

/// Short human-readable description of `status` ("success", "invalid shape", ...): a static string,
/// never null. Values that are not enumerators give "unknown status". Thread-safe.
const char* status_string(Status status) noexcept;

/// Streams "<status_string> (<number>)", so test failures and logs show both.
std::ostream& operator<<(std::ostream& os, Status status);

/// Detailed message of the most recent error recorded on the calling thread, in the form
/// "op: argument: reason"; "" if none was recorded yet. Successful calls do not clear it, so read it
/// only after a call returned a non-success Status. The pointer stays valid until the next error on
/// the same thread; messages from other threads never appear here.
const char* last_error_message() noexcept;

namespace detail {

/// Capacity of the per-thread message buffer, terminator included. Longer messages are truncated
/// and end in "..." so the truncation is visible.
inline constexpr std::size_t kErrorMessageCapacity = 1024;

/// For library code: formats `fmt` printf-style into the calling thread's last-error message and
/// returns `status` unchanged, so validation reads `return detail::set_error(Status::kErrorX, "op:
/// arg: ...", ...);`. Arguments may point into the current message (e.g. last_error_message()) to
/// prefix it with context. A null `fmt` stores "". Never allocates, never throws.
[[nodiscard]] Status set_error(Status status, const char* fmt, ...) noexcept CULAYERS_PRINTF_FORMAT(2, 3);

/// Resets the calling thread's message to "" (tests, and callers that retry after an error).
void clear_error() noexcept;

} // namespace detail

CULAYERS_NAMESPACE_END

#endif // CULAYERS_STATUS_HPP_
