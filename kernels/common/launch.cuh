// The single launch helper: the only `<<<...>>>` in the project. On the emulated build the same call
// goes to the emulator, which validates the configuration (CUDA's limits, dynamic shared memory above
// 48 KB without the attribute, host pointers among the arguments) and runs the kernel on fibers.
#pragma once

#include "kernels/common/portability.cuh"

#include "culayers/status.hpp"

#include <atomic>
#include <cstddef>
#include <cstdlib>
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
  bool dependent = false; // launched with CULAYERS_LAUNCH_DEPENDENT (the emulator checks its wait)
};

/// A launch's error, after waiting for the stream with CULAYERS_DEBUG_SYNC (debug builds) when the launch
/// succeeded and the stream is not being captured. CUDA build only.
inline cudaError_t after_launch(cudaError_t e, cudaStream_t stream) {
#if CULAYERS_DEBUG_SYNC
  if (e == cudaSuccess) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) == cudaSuccess && capture == cudaStreamCaptureStatusNone) {
      e = cudaStreamSynchronize(stream);
    }
  }
#else
  (void)stream;
#endif
  return e;
}

/// Launches `kernel` on (grid, block, smem, stream) with `args` and returns this launch's own error. An
/// error the caller has not read yet is never reported as this launch's, and a successful launch leaves
/// it pending; a failed launch takes the runtime's one last-error slot and clears it, so nothing is left
/// pending after a failure the Status already reports. Never synchronizes, except with
/// CULAYERS_DEBUG_SYNC (debug builds) outside graph capture. Use through CULAYERS_LAUNCH.
template <class... KArgs, class... Args>
cudaError_t launch(const LaunchSite& site, void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem,
                   cudaStream_t stream, Args&&... args) {
#if defined(__CUDACC__)
  (void)site;
  // cudaLaunchKernelEx returns the launch's own error; `kernel<<<...>>>` reports it only through
  // cudaGetLastError(), which would also return (and consume) an unrelated earlier error.
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  const cudaError_t e = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
  }
  return after_launch(e, stream);
#else
  const cudaError_t e = ::culayers_emu::launch_kernel(
      ::culayers_emu::LaunchSite{site.kernel, site.file, site.line, site.dependent}, kernel, grid, block,
      smem, stream, std::forward<Args>(args)...);
  if (e != cudaSuccess) {
    (void)cudaGetLastError(); // as after a real launch: the error is returned, not left pending
  }
  return e;
#endif
}

// ---- programmatic dependent launch -------------------------------------------------------------------
//
// The second and later kernels of one op (a combine after partials, a normalize after statistics) are
// launched with CULAYERS_LAUNCH_DEPENDENT. On a GPU of compute capability 9.0 or newer that is a
// programmatic dependent launch: the kernel's blocks may be launched while the kernel before it on the
// stream still runs its last blocks, instead of after it has drained, which hides the launch gap between
// the two. Every kernel launched that way calls grid_dependency_wait() before it touches global memory
// (the wait returns once every block of the kernel before it has finished and its writes are visible),
// and a kernel followed by a dependent launch calls allow_dependent_launch() early (without it the
// dependent blocks are launched only as its blocks exit). Since each dependent kernel waits in every
// block, it cannot finish before the kernel it waits for, so a chain of them also orders a kernel after
// everything written two or more launches back (channel_sums_kernel reads what the first kernel of the
// group-norm backward wrote).
//
// Used only where the wait is in the kernel's code: the loaded binary of the kernel comes from sm_90 or
// newer (a build for older architectures JIT-compiled on a newer GPU has no wait in it), the driver is
// CUDA 12.3 or newer (programmatic launches in captured graphs), and CULAYERS_NO_PDL is unset or 0.
// Everywhere else, and in the emulator (which runs a stream's kernels one after the other but reports a
// global access before the wait), it is a plain launch and the device calls do nothing. Not yet run on a
// GPU: CommonLaunch.DependentLaunchSeesThePreviousKernelsWrites checks it there.

/// Blocks until the kernel this one depends on (the previous kernel on the stream, when this one was
/// launched with CULAYERS_LAUNCH_DEPENDENT) has finished and its writes are visible. Call it before any
/// global-memory access.
CULAYERS_DEVICE void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#elif CULAYERS_EMULATED_BUILD
  ::culayers_emu::detail::grid_dependency_wait(); // checks that no global access came before it
#endif
}

/// Lets a kernel launched with CULAYERS_LAUNCH_DEPENDENT after this one be launched before this one ends
/// (its blocks then wait in grid_dependency_wait). Memory order is not affected.
CULAYERS_DEVICE void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/// Per-device state of programmatic dependent launch: 0 not yet known, 1 used, -1 not used.
inline std::atomic<signed char>& dependent_launch_state(int device) {
  constexpr int kDevices = 64;
  static std::atomic<signed char> states[kDevices + 1] = {};
  return states[device >= 0 && device < kDevices ? device : kDevices]; // the last slot: never used
}

/// Whether CULAYERS_LAUNCH_DEPENDENT may use programmatic dependent launch on `device`: compute capability
/// 9.0 or newer, a CUDA 12.3 or newer driver, CULAYERS_NO_PDL unset (or 0), and not refused by the runtime
/// before on that device. (Each kernel's binary is checked too: dependent_launch_used.)
inline bool dependent_launch_enabled(int device) {
  static const bool allowed = [] {
    const char* v = std::getenv("CULAYERS_NO_PDL");
    const bool env_off = v != nullptr && v[0] != '\0' && !(v[0] == '0' && v[1] == '\0');
    int driver = 0;
    if (env_off) {
      return false;
    }
    if (cudaDriverGetVersion(&driver) != cudaSuccess) {
      (void)cudaGetLastError(); // the query's own error, not left for the caller
      return false;
    }
    return driver >= 12030;
  }();
  if (!allowed || device < 0 || device >= 64) {
    return false;
  }
  std::atomic<signed char>& state = dependent_launch_state(device);
  signed char known = state.load(std::memory_order_relaxed);
  if (known == 0) {
    int major = 0;
    const cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (e != cudaSuccess) {
      (void)cudaGetLastError(); // the query's own error, not left for the caller
    }
    known = e == cudaSuccess && major >= 9 ? 1 : -1;
    state.store(known, std::memory_order_relaxed);
  }
  return known > 0;
}

/// Whether a dependent launch of `kernel` on `device` is a programmatic one: dependent_launch_enabled and
/// the kernel's loaded binary compiled for sm_90 or newer (cudaFuncAttributes::ptxVersion, the virtual
/// architecture its code came from, so a compute_80 build JIT-compiled for an sm_90 GPU, whose
/// grid_dependency_wait is empty, is not). Cached per (kernel, device); never throws.
template <class... KArgs>
bool dependent_launch_used(void (*kernel)(KArgs...), int device) noexcept {
  if (!dependent_launch_enabled(device)) {
    return false;
  }
  // Never destroyed, so a launch from a static destructor still finds them.
  static std::mutex* const mutex = new std::mutex;
  static auto* const known = new std::map<std::pair<const void*, int>, bool>;
  const void* key = reinterpret_cast<const void*>(kernel);
  try {
    std::lock_guard<std::mutex> lock(*mutex);
    auto it = known->find({key, device});
    if (it != known->end()) {
      return it->second;
    }
    cudaFuncAttributes attributes = {};
    const cudaError_t e = cudaFuncGetAttributes(&attributes, key);
    if (e != cudaSuccess) {
      (void)cudaGetLastError(); // the query's own error, not left for the caller
    }
    const bool used = e == cudaSuccess && attributes.ptxVersion >= 90;
    known->emplace(std::make_pair(key, device), used);
    return used;
  } catch (...) {
    return false;
  }
}

/// Launches `kernel` after the previous kernel on `stream` as a programmatic dependent launch where
/// dependent_launch_used() says so, else as launch() does. The kernel must call grid_dependency_wait()
/// before its first global-memory access. A runtime that refuses the attribute (cudaErrorNotSupported or
/// cudaErrorInvalidValue) gets the plain launch, and the device is not asked again in this process; a refusal
/// that invalidated a stream capture is returned as it is (nothing is retried). Use through
/// CULAYERS_LAUNCH_DEPENDENT.
template <class... KArgs, class... Args>
cudaError_t launch_dependent(const LaunchSite& site, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                             std::size_t smem, cudaStream_t stream, const Args&... args) {
#if defined(__CUDACC__)
  int device = -1;
  if (cudaGetDevice(&device) == cudaSuccess && dependent_launch_used(kernel, device)) {
    cudaLaunchAttribute attribute[1] = {};
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    config.attrs = attribute;
    config.numAttrs = 1;
    const cudaError_t e = cudaLaunchKernelEx(&config, kernel, args...);
    if (e == cudaSuccess) {
      return after_launch(e, stream);
    }
    (void)cudaGetLastError();
    // A refusal that invalidated a stream capture: a plain retry would fail too and say nothing about the
    // device. Report the error and keep the device's setting. (While the capture is still active the plain
    // launch is captured as usual.)
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
      (void)cudaGetLastError();
      capture = cudaStreamCaptureStatusNone;
    }
    if (capture == cudaStreamCaptureStatusInvalidated) {
      return e;
    }
    const cudaError_t plain = launch(site, kernel, grid, block, smem, stream, args...);
    // The configuration was fine and the runtime refused the attribute itself: not asked again on this
    // device. (Any other error of the programmatic launch leaves the setting: the plain launch's result is
    // returned.)
    if (plain == cudaSuccess && (e == cudaErrorNotSupported || e == cudaErrorInvalidValue)) {
      dependent_launch_state(device).store(-1, std::memory_order_relaxed);
    }
    return plain;
  }
#endif
  LaunchSite dependent_site = site;
  dependent_site.dependent = true; // the emulator reports a global access before grid_dependency_wait()
  return launch(dependent_site, kernel, grid, block, smem, stream, args...);
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

/// CULAYERS_LAUNCH for a kernel that depends on the kernel launched before it on the stream (the next
/// step of the same op): a programmatic dependent launch where supported (see launch_dependent). The
/// kernel calls grid_dependency_wait() before touching global memory.
#define CULAYERS_LAUNCH_DEPENDENT(kernel, grid, block, smem, stream, ...)                                    \
  ::culayers::kernels::launch_dependent(::culayers::kernels::LaunchSite{#kernel, __FILE__, __LINE__},        \
                                        kernel, grid, block, smem, stream, ##__VA_ARGS__)
