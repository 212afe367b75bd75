// The single launch helper: the only `<<<...>>>` in the project. On the emulated build the same call
// goes to the emulator, which validates the configuration (CUDA's limits, dynamic shared memory above
// 48 KB without the attribute, host pointers among the arguments) and runs the kernel on fibers.
#pragma once

#include "kernels/common/portability.cuh"

#include "culayers/status.hpp"

#include <cstddef>
#include <map>
#include <mutex>
#include <utility>

#ifndef CULAYERS_DEBUG_SYNC
#  define CULAYERS_DEBUG_SYNC 0
#endif

CULAYERS_NAMESPACE_BEGIN
namespace kernels {

struct LaunchSite {
  const char* kernel;
  const char* file;
  int line;
};

/// Launches `kernel<<<grid, block, smem, stream>>>(args...)` and returns the launch's error (what
/// cudaGetLastError() reports right after it). Never synchronizes, except with CULAYERS_DEBUG_SYNC
/// (debug builds) outside graph capture. Use through CULAYERS_LAUNCH.
template <class... KArgs, class... Args>
cudaError_t launch(const LaunchSite& site, void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem,
                   cudaStream_t stream, Args&&... args) {
#if defined(__CUDACC__)
  (void)site;
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  cudaError_t e = cudaGetLastError();
#  if CULAYERS_DEBUG_SYNC
  if (e == cudaSuccess) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) == cudaSuccess && capture == cudaStreamCaptureStatusNone) {
      e = cudaStreamSynchronize(stream);
    }
  }
#  endif
  return e;
#else
  const cudaError_t e =
      ::culayers_emu::launch_kernel(::culayers_emu::LaunchSite{site.kernel, site.file, site.line}, kernel,
                                    grid, block, smem, stream, std::forward<Args>(args)...);
  (void)cudaGetLastError(); // as after a real launch: the error is returned, not left pending
  return e;
#endif
}

/// True for the runtime's "no usable device" answers (none present, or a driver too old for this runtime),
/// which the ops report as kErrorNoDevice.
inline bool is_no_device_error(cudaError_t e) {
  return e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver;
}

/// Turns a launch error into a Status whose message names the op (last_error_message()):
/// kErrorNoDevice when there is no usable device (none present, or a driver too old for this runtime),
/// kErrorCudaLaunch otherwise.
[[nodiscard]] inline Status check_launch(cudaError_t e, const char* op) {
  if (e == cudaSuccess) {
    return Status::kSuccess;
  }
  return detail::set_error(is_no_device_error(e) ? Status::kErrorNoDevice : Status::kErrorCudaLaunch,
                           "%s: kernel launch failed: %s (%s)", op, cudaGetErrorName(e),
                           cudaGetErrorString(e));
}

/// Allows `kernel` to use up to `bytes` of dynamic shared memory on the current device (needed above
/// 48 KB). Host side and cheap after the first call: the attribute is set only when a launch needs more
/// than any earlier one on that device, and it never shrinks, so a thread launching with less cannot
/// undercut a concurrent launch that needs more (which a plain cudaFuncSetAttribute per launch could).
/// Never throws: a failed allocation of the bookkeeping (or a failed lock) is cudaErrorMemoryAllocation.
template <class... KArgs>
cudaError_t set_max_dynamic_smem(void (*kernel)(KArgs...), std::size_t bytes) noexcept {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, std::size_t> granted;
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) {
    return e;
  }
  const void* key = reinterpret_cast<const void*>(kernel);
  try {
    std::lock_guard<std::mutex> lock(mutex);
    std::size_t& current = granted[{key, device}];
    if (bytes <= current) {
      return cudaSuccess;
    }
    const cudaError_t e =
        cudaFuncSetAttribute(key, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (e == cudaSuccess) {
      current = bytes;
    }
    return e;
  } catch (...) {
    return cudaErrorMemoryAllocation;
  }
}

} // namespace kernels
CULAYERS_NAMESPACE_END

/// Launches a kernel through the one launch helper, recording its name and source line for the
/// emulator's reports. Wrap template kernels in parentheses: CULAYERS_LAUNCH((k<float, 4>), ...).
#define CULAYERS_LAUNCH(kernel, grid, block, smem, stream, ...)                                              \
  ::culayers::kernels::launch(::culayers::kernels::LaunchSite{#kernel, __FILE__, __LINE__}, kernel, grid,    \
                              block, smem, stream, ##__VA_ARGS__)
