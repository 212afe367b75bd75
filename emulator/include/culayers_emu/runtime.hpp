// Host-facing interface of the CUDA execution-model emulator.
//
// The emulator implements the CUDA runtime API (cudaMalloc, streams, events, graphs, ...) with the
// exact extern "C" signatures of <cuda_runtime_api.h>, so host code includes <cuda_runtime.h> as usual
// and links culayers::emulator instead of libcudart. This header adds what only the emulator has:
// execution options, byte counters for byte-model tests, and the launch entry point used by the
// project's single launch helper (kernels/common/launch.cuh).
//
// It is a correctness tool: kernels run on the CPU with CUDA's execution semantics (blocks, threads as
// fibers, barriers, warp collectives, shared memory, launch limits). Timings mean nothing for a GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace culayers_emu {

// ---- options --------------------------------------------------------------------------------------

// Deferred streams: work is queued and runs only at synchronization points (stream/event/device
// synchronize, synchronous copies, cudaStreamQuery). Exposes a host read of unfinished results.
// Initial value from the environment variable CULAYERS_EMU_DEFERRED (1 = on).
void set_deferred(bool on);
bool deferred();

// Seed for permuting the order in which threads of a block run between synchronization points
// (0 = natural order, lane 0 first). Initial value from CULAYERS_EMU_SCHEDULE_SEED.
void set_schedule_seed(std::uint64_t seed);
std::uint64_t schedule_seed();

// The fake device's memory: cudaMalloc and cudaMallocAsync fail with cudaErrorMemoryAllocation once the
// live device allocations would exceed it, as a GPU's do past its free memory; cudaMemGetInfo and
// totalGlobalMem report it. Default (and what 0 restores) 16 GiB. Returns the previous limit. Lets a test
// bound what a fuzzed input may allocate, or run a caller out of memory at a chosen point. Initial value
// from CULAYERS_EMU_DEVICE_MEMORY_MB (1 to 16384 MiB; anything else: the default).
std::size_t set_device_memory_limit(std::size_t bytes);
std::size_t device_memory_limit();

// Freed memory (cudaFree, cudaFreeAsync, cudaFreeHost) is filled with 0xFF bytes and held back from the
// heap until later frees push it past this many bytes (oldest first; each block counted at its size rounded
// up to 256 bytes plus 64), so no later allocation takes its address: a pointer kept after its free (inside a
// parameter struct, which no launch check sees) then faults as a use after free, named in the message,
// instead of reaching another buffer's data; under ASan the block is poisoned, so raw accesses to it are
// reported too. A block larger than the whole quarantine is returned at once. Default 256 MiB; 0 returns
// memory at once. Returns the previous value. Initial value from CULAYERS_EMU_QUARANTINE_MB (a decimal
// count of MiB up to 1 TiB; anything else: the default). A process that frees much more than it keeps live
// holds up to this many bytes of host memory more than a GPU build.
std::size_t set_free_quarantine(std::size_t bytes);
std::size_t free_quarantine();
// Bytes the quarantine holds now, each block counted as above.
std::size_t quarantined_bytes();

// Whether cudaOccupancyMaxActiveBlocksPerMultiprocessor fails (cudaErrorNotSupported), as where a runtime
// cannot say, so planners run on their own estimates: set by CULAYERS_EMU_NO_OCCUPANCY=1 (ctest's
// emulated_no_occupancy entry), read once.
bool occupancy_unknown();
// Whether kernel faults are also printed to stderr when they happen (default on; tests that plant
// bugs on purpose may turn it off).
void set_report_to_stderr(bool on);

// ---- launch validation ----------------------------------------------------------------------------

// What a launch whose grid or block is outside CUDA's limits (more than 1024 threads, block z > 64,
// grid y or z > 65535, an empty grid or block) returns, as the runtime the emulator is built against
// does: cudaErrorInvalidConfiguration up to CUDA 12; the CUDA 13.0 runtime returns cudaErrorInvalidValue
// (seen on an H100 with driver 580.159.04).
constexpr cudaError_t kLaunchConfigurationError =
#if CUDART_VERSION >= 13000
    cudaErrorInvalidValue;
#else
    cudaErrorInvalidConfiguration;
#endif

// ---- diagnostics ----------------------------------------------------------------------------------

// The full message of the last error the emulator reported (kernel fault, launch validation,
// bad API argument), or "" if none since clear_error_message().
std::string last_error_message();
void clear_error_message();

// Bytes of global memory moved through the project's vector load/store helpers (kernels/common).
struct ByteCounters {
  std::uint64_t read = 0;
  std::uint64_t written = 0;
};
ByteCounters byte_counters();
void reset_byte_counters();

// Global-memory sectors (off by default: it costs a table entry per access). With counting on, every access
// through the helpers is grouped with the accesses the other lanes of its warp make at the same source line
// for the same time since their last barrier or warp collective (the k-th access of each lane at that line:
// one warp-wide instruction on a GPU, whose lanes run in lockstep through a loop; lanes that skip an access
// between two such points, a guarded load in a loop, are grouped one access off until the next one, which
// over-counts sectors), and each such group is charged the distinct 32-byte sectors it
// touches, the unit a GPU's L1 / L2 fetches from DRAM, and the distinct bytes its lanes asked for (lanes
// reading the same bytes, a broadcast, count them once). bytes / (32 x sectors) is the accesses' coalescing
// efficiency: 1 when a warp's lanes read consecutive bytes (4-byte loads by 32 lanes, 16-byte vectors),
// 1/8 for 4-byte loads 32 bytes apart. It says nothing of reuse across instructions or warps (L1 / L2
// hits), only what each instruction asks of the memory system.
struct SectorCounters {
  std::uint64_t read_bytes = 0;
  std::uint64_t read_sectors = 0;
  std::uint64_t write_bytes = 0;
  std::uint64_t write_sectors = 0;
};
void set_sector_counting(bool on);
bool sector_counting();
SectorCounters sector_counters();
// The same per source line of the accesses (the kernel line that called the load / store helper), the
// lines moving the most bytes first: which access of which kernel wastes sectors.
struct SectorSite {
  const char* file;
  int line;
  bool write;
  std::uint64_t bytes;
  std::uint64_t sectors;
};
std::vector<SectorSite> sector_sites();
void reset_sector_counters();

struct Stats {
  std::uint64_t launches = 0;         // kernels executed
  std::uint64_t blocks = 0;           // blocks executed
  std::uint64_t threads = 0;          // threads of the blocks executed (launch shapes in tests)
  std::uint64_t context_switches = 0; // fiber resumes by the block scheduler
};
Stats stats();

// Number of live device allocations (leak checks in tests).
std::size_t live_allocations();

// ---- launch (used by the launch helper only) ------------------------------------------------------

struct LaunchSite {
  const char* kernel; // the kernel expression as written at the launch site
  const char* file;
  int line;
  // A dependent launch (CULAYERS_LAUNCH_DEPENDENT): each thread must call grid_dependency_wait() before
  // its first global-memory access, which is reported otherwise.
  bool dependent = false;
};

// Validates the configuration and the kernel's pointer arguments, then runs `body` once per thread of
// every block (immediately, or at the next synchronization point in deferred mode). `pointers` lists
// the raw pointer arguments (host pointers are reported). Returns the error a real launch would report
// through cudaGetLastError() (kernel faults too when the kernel ran immediately).
cudaError_t launch(const LaunchSite& site, const void* kernel, dim3 grid, dim3 block,
                   std::size_t dynamic_smem, cudaStream_t stream, std::function<void()> body,
                   const void* const* pointers, std::size_t pointer_count);

namespace detail {

template <class T>
void collect_pointer(const T& arg, const void** out, std::size_t& n) {
  if constexpr (std::is_pointer_v<T>) {
    out[n++] = static_cast<const void*>(arg);
  } else {
    (void)arg;
    (void)out;
    (void)n;
  }
}

} // namespace detail

// Launches `kernel(args...)` with arguments copied by value (as a real launch does), so deferred
// execution and graph replay see the values of the launch call.
template <class... KArgs, class... Args>
cudaError_t launch_kernel(const LaunchSite& site, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                          std::size_t dynamic_smem, cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "wrong number of kernel arguments");
  auto bound = std::make_tuple(static_cast<std::decay_t<KArgs>>(std::forward<Args>(args))...);
  const void* pointers[sizeof...(KArgs) + 1] = {};
  std::size_t n = 0;
  std::apply([&](const auto&... a) { (detail::collect_pointer(a, pointers, n), ...); }, bound);
  return launch(
      site, reinterpret_cast<const void*>(kernel), grid, block, dynamic_smem, stream,
      [kernel, bound]() { std::apply(kernel, bound); }, pointers, n);
}

} // namespace culayers_emu
