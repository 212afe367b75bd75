// Host-side argument checks shared by the ops' can_implement: byte-range overlap and pointer alignment,
// with error messages that name the op and the argument.
#pragma once

#include "culayers/status.hpp"

#include <cstddef>
#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {

/// A named byte range of an op's argument (null or empty: overlaps nothing).
struct Span {
  const char* name;
  const void* p;
  std::size_t bytes;
};

/// Whether `p` is not a multiple of `bytes` (null is aligned).
inline bool misaligned(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes != 0;
}

/// Whether the byte ranges [a, a + a_bytes) and [b, b + b_bytes) share a byte (null or empty ranges
/// share none).
inline bool overlaps(const void* a, std::size_t a_bytes, const void* b, std::size_t b_bytes) {
  const auto pa = reinterpret_cast<std::uintptr_t>(a);
  const auto pb = reinterpret_cast<std::uintptr_t>(b);
  return a != nullptr && b != nullptr && a_bytes > 0 && b_bytes > 0 && pa < pb + b_bytes && pb < pa + a_bytes;
}

inline bool overlaps(const Span& a, const Span& b) {
  return overlaps(a.p, a.bytes, b.p, b.bytes);
}

/// kSuccess when no output overlaps another output or any input; otherwise sets "<op>: <output>:
/// overlaps <other>" and returns kErrorInconsistentArguments. Exact in-place pairs an op allows are
/// left out of the lists by the caller.
template <std::size_t NO, std::size_t NI>
[[nodiscard]] Status check_disjoint(const char* op, const Span (&outputs)[NO], const Span (&inputs)[NI]) {
  for (std::size_t i = 0; i < NO; ++i) {
    for (std::size_t k = i + 1; k < NO; ++k) {
      if (overlaps(outputs[i], outputs[k])) {
        return detail::set_error(Status::kErrorInconsistentArguments, "%s: %s: overlaps %s", op,
                                 outputs[i].name, outputs[k].name);
      }
    }
    for (std::size_t k = 0; k < NI; ++k) {
      if (overlaps(outputs[i], inputs[k])) {
        return detail::set_error(Status::kErrorInconsistentArguments, "%s: %s: overlaps %s", op,
                                 outputs[i].name, inputs[k].name);
      }
    }
  }
  return Status::kSuccess;
}

/// A named integer argument (the tuning thresholds).
struct NamedValue {
  const char* name;
  std::int64_t value;
};

/// kSuccess when no threshold is negative; otherwise sets "<op>: tuning.<name>: <value>, must be >= 0
/// (0 = automatic)" for the first negative one and returns kErrorInvalidValue.
template <std::size_t N>
[[nodiscard]] Status check_thresholds(const char* op, const NamedValue (&thresholds)[N]) {
  for (std::size_t i = 0; i < N; ++i) {
    if (thresholds[i].value < 0) {
      return detail::set_error(Status::kErrorInvalidValue,
                               "%s: tuning.%s: %lld, must be >= 0 (0 = automatic)", op, thresholds[i].name,
                               static_cast<long long>(thresholds[i].value));
    }
  }
  return Status::kSuccess;
}

/// kSuccess when every named pointer is aligned to `bytes` (null counts as aligned); otherwise sets
/// "<op>: <name>: not aligned to <bytes> bytes" and returns kErrorMisaligned.
template <std::size_t N>
[[nodiscard]] Status check_aligned(const char* op, const Span (&args)[N], std::size_t bytes) {
  for (std::size_t i = 0; i < N; ++i) {
    if (misaligned(args[i].p, bytes)) {
      return detail::set_error(Status::kErrorMisaligned, "%s: %s: not aligned to %zu bytes", op, args[i].name,
                               bytes);
    }
  }
  return Status::kSuccess;
}

/// The workspace an op's run() is given against the `needed` bytes: kErrorNullPointer for a null
/// workspace when bytes are needed, kErrorWorkspaceTooSmall for fewer bytes than needed, each with a
/// message naming the op.
[[nodiscard]] inline Status check_workspace(const char* op, std::size_t needed, const void* workspace,
                                            std::size_t bytes) {
  if (needed == 0) {
    return Status::kSuccess;
  }
  if (workspace == nullptr) {
    return detail::set_error(Status::kErrorNullPointer, "%s: workspace: is null; %zu bytes are needed", op,
                             needed);
  }
  if (bytes < needed) {
    return detail::set_error(Status::kErrorWorkspaceTooSmall, "%s: workspace: %zu bytes given, %zu needed",
                             op, bytes, needed);
  }
  return Status::kSuccess;
}

} // namespace kernels
CULAYERS_NAMESPACE_END
