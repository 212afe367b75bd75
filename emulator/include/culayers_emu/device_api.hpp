// The emulator entry points that emulated device code calls (through culayers_emu/device.hpp).
// Not for direct use by kernels: kernels use the CUDA names (__syncthreads, __shfl_xor_sync, ...).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace culayers_emu::detail {

// What a CUDA thread can see of itself. One per emulated thread; the scheduler points tls_thread at
// the running thread before every resume. Fibers never move between OS threads, so a thread_local is
// safe here.
struct ThreadInfo {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  unsigned linear; // linear thread index in the block
  unsigned lane;
  unsigned warp;
  bool must_wait; // a dependent launch's thread that has not called grid_dependency_wait() yet
};

// __thread rather than thread_local: a trivially initialized pointer needs no TLS init function, whose
// weak-symbol check g++ would otherwise fold into UBSan's null check (a false report under -fsanitize).
extern __thread ThreadInfo* tls_thread;

inline ThreadInfo& current_thread() {
  return *tls_thread;
}

enum class BarrierKind : int { kPlain = 0, kCount = 1, kAnd = 2, kOr = 3 };
enum class WarpOpKind : int {
  kShfl = 0,
  kShflUp = 1,
  kShflDown = 2,
  kShflXor = 3,
  kBallot = 4,
  kAny = 5,
  kAll = 6,
  kSyncWarp = 7,
  kMatchAny = 8,
};

// All of these are yield points: opaque out-of-line calls that switch to the block scheduler.
int barrier(BarrierKind kind, int predicate, const char* file, int line);
std::uint64_t warp_op(WarpOpKind kind, unsigned mask, std::uint64_t value, int arg, int width,
                      const char* file, int line);
unsigned active_mask();

// Dynamic shared memory of the running block.
void* dynamic_smem();

// Checks a global-memory access made through the project's load/store helpers: the range must lie
// inside one allocation and `p` must be aligned to `align`. Counts the bytes for byte-model tests.
void check_global_access(const void* p, std::size_t bytes, std::size_t align, bool write, const char* file,
                         int line);

// An atomic on `p` (any address space): reported when the thread has not yet called
// grid_dependency_wait() in a kernel launched with CULAYERS_LAUNCH_DEPENDENT and `p` is device memory (a
// shared-memory atomic before the wait is fine). Not counted by the byte model.
void check_atomic(const void* p, std::size_t bytes, const char* file, int line);

// grid_dependency_wait() of a kernel launched with CULAYERS_LAUNCH_DEPENDENT: from here on the thread
// may access global memory (the emulator runs a stream's kernels one after the other, so there is
// nothing to wait for; it only checks that kernels wait before they access memory, as they must on a GPU).
void grid_dependency_wait();

// Reports a device-side fault naming the kernel, block, thread and source line, and aborts the launch.
[[noreturn]] void device_fail(const char* file, int line, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

} // namespace culayers_emu::detail
