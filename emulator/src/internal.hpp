// Internal state shared by the emulator's translation units.
#pragma once

#include "culayers_emu/device_api.hpp"
#include "culayers_emu/runtime.hpp"

#include <cstdarg>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

// CULAYERS_EMU_ASAN: 1 when the emulator is built with AddressSanitizer (then its interface is included).
#if defined(__SANITIZE_ADDRESS__)
#  define CULAYERS_EMU_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define CULAYERS_EMU_ASAN 1
#  endif
#endif
#ifndef CULAYERS_EMU_ASAN
#  define CULAYERS_EMU_ASAN 0
#endif
#if CULAYERS_EMU_ASAN
#  include <sanitizer/asan_interface.h>
#  include <sanitizer/common_interface_defs.h>
#endif

namespace culayers_emu::detail {

// One kernel launch, with everything needed to run it later (deferred streams, graph replay).
struct LaunchRecord {
  LaunchSite site{};
  const void* kernel = nullptr;
  dim3 grid{1, 1, 1};
  dim3 block{1, 1, 1};
  std::size_t dynamic_smem = 0;
  std::function<void()> body;
  std::vector<const void*> pointers; // the pointer arguments, checked when the kernel runs
};

// Runs every block of a launch on the calling OS thread. Returns cudaSuccess or
// cudaErrorLaunchFailure (the message is in the error state).
cudaError_t execute_launch(const LaunchRecord& launch);

// The one big lock: the runtime API and kernel execution are serialized (static __shared__ variables
// are function-local statics, so two kernels must never run at once).
std::recursive_mutex& api_mutex();

// Error state: records the message (and prints it unless disabled).
void report_error(const std::string& message);
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string vformat(const char* fmt, va_list args);

// Memory registry.
enum class MemKind { kDevice, kPinnedHost, kManaged };
struct Allocation {
  std::uintptr_t base = 0;
  std::size_t size = 0;
  MemKind kind = MemKind::kDevice;
};
void register_allocation(void* base, std::size_t size, MemKind kind);
bool unregister_allocation(void* base, MemKind* kind_out);
// Finds the allocation containing [p, p + bytes); one-past-the-end pointers with bytes == 0 match.
bool find_allocation(const void* p, std::size_t bytes, Allocation* out);
std::uint64_t registry_generation();
// " (inside an n-byte allocation at base, offset k, released by api: use after free)" when p lies in a freed
// block still held in the quarantine (set_free_quarantine), else "".
std::string freed_note(const void* p);

// Per-kernel attributes set through cudaFuncSetAttribute.
int max_dynamic_smem_attribute(const void* kernel);

void count_launch_stats(std::uint64_t blocks, std::uint64_t threads, std::uint64_t switches);

// Sector counting (culayers_emu::set_sector_counting): whether it is on, and one access of the current
// kernel thread, grouped with its warp's lanes' accesses at the same line (scheduler.cpp).
bool sector_counting_on();
void record_sector_access(const void* p, std::size_t bytes, bool write, const char* file, int line);

} // namespace culayers_emu::detail
