// Host side: the device properties launch heuristics need, queried once per device and cached (the launch
// path must not query the runtime on every call, and must stay valid under graph capture).
#pragma once

#include "kernels/common/launch.cuh"
#include "kernels/common/portability.cuh"

#include "culayers/status.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {

struct DeviceInfo {
  int sm_count;             ///< multiprocessors
  int threads_per_sm;       ///< max resident threads per multiprocessor
  int smem_per_sm;          ///< shared memory per multiprocessor (bytes)
  int smem_per_block_optin; ///< max dynamic shared memory per block with the opt-in attribute (bytes)
};

/// The status for a runtime query that failed with `e`: kErrorNoDevice when there is no usable device (none
/// present, or a driver too old for this runtime), otherwise kErrorCudaRuntime.
inline Status device_query_status(cudaError_t e) {
  return is_no_device_error(e) ? Status::kErrorNoDevice : Status::kErrorCudaRuntime;
}

/// The current device's DeviceInfo. kErrorNoDevice when there is no usable device, kErrorCudaRuntime when
/// the runtime cannot answer otherwise, with a message naming `op` (no message when `op` is null: callers
/// with a fallback). Thread-safe: racing first queries store the same values.
inline Status device_info(DeviceInfo* out, const char* op) {
  constexpr int kCachedDevices = 64;
  struct Slot {
    std::atomic<int> ready;
    std::atomic<int> values[4];
  };
  static Slot cache[kCachedDevices] = {};
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) {
    (void)cudaGetLastError(); // reported by the status
    return op == nullptr ? device_query_status(e)
                         : ::culayers::detail::set_error(device_query_status(e), "%s: cudaGetDevice: %s", op,
                                                         cudaGetErrorString(e));
  }
  Slot* slot = device >= 0 && device < kCachedDevices ? &cache[device] : nullptr;
  if (slot != nullptr && slot->ready.load(std::memory_order_acquire) != 0) {
    *out = DeviceInfo{
        slot->values[0].load(std::memory_order_relaxed), slot->values[1].load(std::memory_order_relaxed),
        slot->values[2].load(std::memory_order_relaxed), slot->values[3].load(std::memory_order_relaxed)};
    return Status::kSuccess;
  }
  const cudaDeviceAttr attrs[4] = {cudaDevAttrMultiProcessorCount, cudaDevAttrMaxThreadsPerMultiProcessor,
                                   cudaDevAttrMaxSharedMemoryPerMultiprocessor,
                                   cudaDevAttrMaxSharedMemoryPerBlockOptin};
  int values[4] = {};
  for (int i = 0; i < 4; ++i) {
    e = cudaDeviceGetAttribute(&values[i], attrs[i], device);
    if (e != cudaSuccess) {
      (void)cudaGetLastError(); // reported by the status
      return op == nullptr
                 ? device_query_status(e)
                 : ::culayers::detail::set_error(device_query_status(e), "%s: cudaDeviceGetAttribute(%d): %s",
                                                 op, static_cast<int>(attrs[i]), cudaGetErrorString(e));
    }
    if (values[i] <= 0) {
      return op == nullptr ? Status::kErrorCudaRuntime
                           : ::culayers::detail::set_error(Status::kErrorCudaRuntime,
                                                           "%s: cudaDeviceGetAttribute(%d): returned %d", op,
                                                           static_cast<int>(attrs[i]), values[i]);
    }
  }
  if (slot != nullptr) {
    for (int i = 0; i < 4; ++i) {
      slot->values[i].store(values[i], std::memory_order_relaxed);
    }
    slot->ready.store(1, std::memory_order_release);
  }
  *out = DeviceInfo{values[0], values[1], values[2], values[3]};
  return Status::kSuccess;
}

/// Blocks of `threads` threads that one SM of the current device holds for `kernel`, counting its threads,
/// its registers (as compiled for this device) and the resident-block limit, but no dynamic shared memory
/// (planners add their own shared-memory limit): the runtime's occupancy calculator with 0 bytes, which
/// also spares it the opt-in attribute that larger sizes would need first. On the emulator, which has no
/// registers to count, threads and block slots only. 0 when the runtime cannot say (the caller keeps its
/// estimate), and 0 again on every later call (so two plans of one op agree); the query's own error is
/// cleared (a caller's non-sticky error pending from before is cleared with it: the runtime keeps one).
/// Cached per (kernel, device, threads): planners ask on every call, and may ask under graph capture (the
/// query is not a stream operation). Never throws.
template <class... KArgs>
int resident_blocks(void (*kernel)(KArgs...), int threads) noexcept {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  // Never destroyed, so a plan made from a static destructor still finds them.
  static std::mutex* const mutex = new std::mutex;
  static auto* const known = new std::map<std::tuple<const void*, int, int>, int>;
  const void* key = reinterpret_cast<const void*>(kernel);
  try {
    std::lock_guard<std::mutex> lock(*mutex);
    auto it = known->find({key, device, threads});
    if (it != known->end()) {
      return it->second;
    }
    int blocks = 0;
    const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, key, threads, 0);
    if (e != cudaSuccess) {
      (void)cudaGetLastError(); // the query's own error, not left for the caller
      blocks = 0;
    }
    // A failure is cached too: a plan made for workspace_size and the one made for run must agree.
    blocks = blocks > 0 ? blocks : 0;
    known->emplace(std::make_tuple(key, device, threads), blocks);
    return blocks;
  } catch (...) {
    return 0;
  }
}

} // namespace kernels
CULAYERS_NAMESPACE_END
