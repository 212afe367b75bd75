// Every planted bug below must be reported by the emulator (or by the sanitizer it cooperates with),
// naming the kernel and the source line. These are the bugs that silently pass on a CPU loop and
// corrupt results (or hang) on a GPU.
#include "tests/emulator/emulator_test_util.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#  define CULAYERS_TEST_ASAN 1
#else
#  define CULAYERS_TEST_ASAN 0
#endif

namespace culayers::test {
namespace {

using kernels::load;
using kernels::load_vec;
using kernels::store;

// Records the source line of the statement that holds the planted bug (set from inside the kernel, on
// the same line as the faulty call, so the expected line survives reformatting).
int g_bug_line = 0;
#define CULAYERS_MARK_LINE(stmt) ((void)(g_bug_line = __LINE__), stmt)

// ---- off-by-one global read ------------------------------------------------------------------------

CULAYERS_GLOBAL void off_by_one_helper_kernel(const float* x, float* y, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i <= n) { // planted: <= instead of <
    const float v = CULAYERS_MARK_LINE(load(x + i));
    if (i < n) {
      store(y + i, v);
    }
  }
}

[[maybe_unused]] CULAYERS_GLOBAL void off_by_one_raw_kernel(const float* x, float* y, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i <= n) { // planted: <= instead of <; a raw read only ASan can see
    y[i < n ? i : 0] += x[i];
  }
}

TEST(EmulatorPlantedBugs, OffByOneGlobalReadThroughHelperIsReported) {
  const int n = 100;
  DeviceBuffer<float> x(n), y(n);
  QuietEmulator quiet;
  const cudaError_t e =
      finish(CULAYERS_LAUNCH(off_by_one_helper_kernel, 1, 128, 0, nullptr, x.get(), y.get(), n));
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  const std::string msg = culayers_emu::last_error_message();
  EXPECT_NE(msg.find("off_by_one_helper_kernel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("past its end"), std::string::npos) << msg;
  EXPECT_NE(msg.find(file_and_line(__FILE__, g_bug_line)), std::string::npos) << msg;
  EXPECT_NE(msg.find("thread (100,0,0)"), std::string::npos) << msg;
}

TEST(EmulatorPlantedBugs, OffByOneRawGlobalReadIsReportedByAsan) {
#if CULAYERS_TEST_ASAN
  const int n = 100;
  DeviceBuffer<float> x(n), y(n);
  EXPECT_DEATH((void)finish(CULAYERS_LAUNCH(off_by_one_raw_kernel, 1, 128, 0, nullptr, x.get(), y.get(), n)),
               "heap-buffer-overflow");
#else
  GTEST_SKIP()
      << "a raw out-of-bounds read is found by ASan (asan preset); the checked helpers find it anywhere";
#endif
}

// ---- dynamic shared memory overflow -----------------------------------------------------------------

CULAYERS_GLOBAL void smem_overflow_write_kernel(float* out) {
  CULAYERS_DYNAMIC_SMEM(float, tile);
  tile[threadIdx.x + 1] = 1.0f; // planted: one element past the 64-float buffer for the last thread
  __syncthreads();
  out[threadIdx.x] = tile[threadIdx.x];
}

[[maybe_unused]] CULAYERS_GLOBAL void smem_overflow_read_kernel(float* out) {
  CULAYERS_DYNAMIC_SMEM(float, tile);
  tile[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = tile[threadIdx.x + 1]; // planted: reads one element past the buffer
}

TEST(EmulatorPlantedBugs, DynamicSharedMemoryOverflowIsReported) {
  DeviceBuffer<float> out(64);
#if CULAYERS_TEST_ASAN
  EXPECT_DEATH((void)finish(CULAYERS_LAUNCH(smem_overflow_write_kernel, 1, 64, 64 * sizeof(float), nullptr,
                                            out.get())),
               "heap-buffer-overflow");
  EXPECT_DEATH(
      (void)finish(CULAYERS_LAUNCH(smem_overflow_read_kernel, 1, 64, 64 * sizeof(float), nullptr, out.get())),
      "heap-buffer-overflow");
#else
  // Without ASan a guard zone after the buffer catches overflowing writes (reads need ASan).
  QuietEmulator quiet;
  const cudaError_t e =
      finish(CULAYERS_LAUNCH(smem_overflow_write_kernel, 1, 64, 64 * sizeof(float), nullptr, out.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  const std::string msg = culayers_emu::last_error_message();
  EXPECT_NE(msg.find("smem_overflow_write_kernel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dynamic shared memory overflow"), std::string::npos) << msg;
#endif
}

// ---- misaligned float4 load ------------------------------------------------------------------------

CULAYERS_GLOBAL void misaligned_helper_kernel(const float* x, float* y) {
  const auto v = CULAYERS_MARK_LINE(load_vec<4>(x + 1 + 4 * threadIdx.x)); // planted: x + 1 is not 16-aligned
  y[threadIdx.x] = v[0];
}

[[maybe_unused]] CULAYERS_GLOBAL void misaligned_raw_kernel(const float* x, float* y) {
  const float4 v = *reinterpret_cast<const float4*>(x + 1 + 4 * threadIdx.x); // planted
  y[threadIdx.x] = v.x;
}

TEST(EmulatorPlantedBugs, MisalignedVectorLoadThroughHelperIsReported) {
  DeviceBuffer<float> x(256), y(32);
  QuietEmulator quiet;
  const cudaError_t e =
      finish(CULAYERS_LAUNCH(misaligned_helper_kernel, 1, 32, 0, nullptr, x.get(), y.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  const std::string msg = culayers_emu::last_error_message();
  EXPECT_NE(msg.find("misaligned_helper_kernel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("misaligned 16-byte load"), std::string::npos) << msg;
  EXPECT_NE(msg.find(file_and_line(__FILE__, g_bug_line)), std::string::npos) << msg;
}

TEST(EmulatorPlantedBugs, MisalignedRawFloat4LoadIsReportedByUbsan) {
#if CULAYERS_TEST_ASAN
  DeviceBuffer<float> x(256), y(32);
  EXPECT_DEATH((void)finish(CULAYERS_LAUNCH(misaligned_raw_kernel, 1, 32, 0, nullptr, x.get(), y.get())),
               "misaligned address");
#else
  GTEST_SKIP()
      << "a raw misaligned access is found by UBSan (asan preset); the checked helpers find it anywhere";
#endif
}

// ---- early return before a barrier --------------------------------------------------------------------

CULAYERS_GLOBAL void early_return_kernel(float* out) {
  if (threadIdx.x == 3) {
    return; // planted: thread 3 leaves; the others wait at the barrier forever on a GPU
  }
  CULAYERS_MARK_LINE(__syncthreads());
  out[threadIdx.x] = 1.0f;
}

TEST(EmulatorPlantedBugs, EarlyReturnBeforeBarrierIsReported) {
  DeviceBuffer<float> out(64);
  QuietEmulator quiet;
  const cudaError_t e = finish(CULAYERS_LAUNCH(early_return_kernel, 2, 64, 0, nullptr, out.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  const std::string msg = culayers_emu::last_error_message();
  EXPECT_NE(msg.find("early_return_kernel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("returned before reaching it"), std::string::npos) << msg;
  EXPECT_NE(msg.find("thread (3,0,0)"), std::string::npos) << msg;
  EXPECT_NE(msg.find(file_and_line(__FILE__, g_bug_line)), std::string::npos) << msg;
}

// ---- dependent launch reading before its wait ---------------------------------------------------------

CULAYERS_GLOBAL void read_before_wait_kernel(const float* x, float* y, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  const float v = i < n ? CULAYERS_MARK_LINE(load(x + i)) : 0.0f; // planted: read before the wait
  kernels::grid_dependency_wait();
  if (i < n) {
    store(y + i, v);
  }
}

CULAYERS_GLOBAL void wait_then_read_kernel(const float* x, float* y, int n) {
  kernels::grid_dependency_wait();
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) {
    store(y + i, load(x + i));
  }
}

// On a GPU the read may see the previous kernel's data half written; the emulator names the access.
TEST(EmulatorPlantedBugs, GlobalAccessBeforeDependencyWaitIsReported) {
  const int n = 100;
  DeviceBuffer<float> x(n), y(n);
  {
    QuietEmulator quiet;
    const cudaError_t e =
        finish(CULAYERS_LAUNCH_DEPENDENT(read_before_wait_kernel, 1, 128, 0, nullptr, x.get(), y.get(), n));
    EXPECT_EQ(e, cudaErrorLaunchFailure);
    const std::string msg = culayers_emu::last_error_message();
    EXPECT_NE(msg.find("read_before_wait_kernel"), std::string::npos) << msg;
    EXPECT_NE(msg.find("before grid_dependency_wait()"), std::string::npos) << msg;
    EXPECT_NE(msg.find(file_and_line(__FILE__, g_bug_line)), std::string::npos) << msg;
  }
  // The same kernel launched plainly, and a dependent kernel that waits first, are fine.
  EXPECT_EQ(finish(CULAYERS_LAUNCH(read_before_wait_kernel, 1, 128, 0, nullptr, x.get(), y.get(), n)),
            cudaSuccess);
  EXPECT_EQ(finish(CULAYERS_LAUNCH_DEPENDENT(wait_then_read_kernel, 1, 128, 0, nullptr, x.get(), y.get(), n)),
            cudaSuccess);
}

// An atomic on global memory before the wait (a counter bumped early) is reported too; one on shared
// memory is fine.
CULAYERS_GLOBAL void atomic_before_wait_kernel(unsigned* counter) {
  __shared__ unsigned local;
  if (threadIdx.x == 0) {
    local = 0u;
  }
  __syncthreads();
  atomicAdd(&local, 1u); // shared memory: fine before the wait
  if (threadIdx.x == 0) {
    CULAYERS_MARK_LINE(atomicAdd(counter, 1u)); // planted: global atomic before the wait
  }
  kernels::grid_dependency_wait();
}

TEST(EmulatorPlantedBugs, GlobalAtomicBeforeDependencyWaitIsReported) {
  DeviceBuffer<unsigned> counter(1);
  counter.fill_bytes(0);
  {
    QuietEmulator quiet;
    const cudaError_t e =
        finish(CULAYERS_LAUNCH_DEPENDENT(atomic_before_wait_kernel, 1, 64, 0, nullptr, counter.get()));
    EXPECT_EQ(e, cudaErrorLaunchFailure);
    const std::string msg = culayers_emu::last_error_message();
    EXPECT_NE(msg.find("atomic"), std::string::npos) << msg;
    EXPECT_NE(msg.find("before grid_dependency_wait()"), std::string::npos) << msg;
    EXPECT_NE(msg.find(file_and_line(__FILE__, g_bug_line)), std::string::npos) << msg;
  }
  EXPECT_EQ(finish(CULAYERS_LAUNCH(atomic_before_wait_kernel, 1, 64, 0, nullptr, counter.get())),
            cudaSuccess);
}

// ---- threads at different barriers ------------------------------------------------------------------

CULAYERS_GLOBAL void divergent_barrier_kernel(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads(); // planted: two different barriers for the two halves of the block
    out[threadIdx.x] = 1.0f;
  } else {
    __syncthreads();
    out[threadIdx.x] = 2.0f;
  }
}

TEST(EmulatorPlantedBugs, ThreadsAtDifferentBarriersAreReported) {
  DeviceBuffer<float> out(64);
  QuietEmulator quiet;
  const cudaError_t e = finish(CULAYERS_LAUNCH(divergent_barrier_kernel, 1, 64, 0, nullptr, out.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  const std::string msg = culayers_emu::last_error_message();
  EXPECT_NE(msg.find("divergent_barrier_kernel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("different barriers"), std::string::npos) << msg;
  EXPECT_NE(msg.find("planted_bugs_test.cu:"), std::string::npos) << msg;
}

// ---- full-mask shuffle in a partial warp ---------------------------------------------------------------

CULAYERS_GLOBAL void partial_warp_shuffle_kernel(float* out) {
  float v = static_cast<float>(threadIdx.x);
  v += CULAYERS_MARK_LINE(__shfl_xor_sync(0xffffffffu, v, 1)); // planted: the block has 48 threads
  out[threadIdx.x] = v;
}

TEST(EmulatorPlantedBugs, FullMaskShuffleInPartialWarpIsReported) {
  DeviceBuffer<float> out(48);
  QuietEmulator quiet;
  const cudaError_t e = finish(CULAYERS_LAUNCH(partial_warp_shuffle_kernel, 1, 48, 0, nullptr, out.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  const std::string msg = culayers_emu::last_error_message();
  EXPECT_NE(msg.find("partial_warp_shuffle_kernel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("do not exist"), std::string::npos) << msg;
  EXPECT_NE(msg.find(file_and_line(__FILE__, g_bug_line)), std::string::npos) << msg;
}

CULAYERS_GLOBAL void exited_lane_shuffle_kernel(float* out) {
  if (threadIdx.x == 31) {
    return; // planted: lane 31 leaves, the rest shuffle with a full mask
  }
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

TEST(EmulatorPlantedBugs, ShuffleWaitingForExitedLaneIsReported) {
  DeviceBuffer<float> out(32);
  QuietEmulator quiet;
  const cudaError_t e = finish(CULAYERS_LAUNCH(exited_lane_shuffle_kernel, 1, 32, 0, nullptr, out.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  const std::string msg = culayers_emu::last_error_message();
  EXPECT_NE(msg.find("lane 31, which has exited"), std::string::npos) << msg;
}

CULAYERS_GLOBAL void caller_not_in_mask_kernel(float* out) {
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, 1.0f, 0); // planted: lanes 16..31 call with a mask without them
}

TEST(EmulatorPlantedBugs, CallerMissingFromItsOwnMaskIsReported) {
  DeviceBuffer<float> out(32);
  QuietEmulator quiet;
  const cudaError_t e = finish(CULAYERS_LAUNCH(caller_not_in_mask_kernel, 1, 32, 0, nullptr, out.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  EXPECT_NE(culayers_emu::last_error_message().find("not in its own mask"), std::string::npos);
}

CULAYERS_GLOBAL void shuffle_vs_barrier_kernel(float* out) {
  float v = 1.0f;
  if (threadIdx.x < 16) {
    v = __shfl_xor_sync(0xffffffffu, v, 1); // planted: lanes 16..31 never come; they wait at a barrier
  }
  __syncthreads();
  out[threadIdx.x] = v;
}

TEST(EmulatorPlantedBugs, WarpCollectiveThatCanNeverCompleteIsReported) {
  DeviceBuffer<float> out(32);
  QuietEmulator quiet;
  const cudaError_t e = finish(CULAYERS_LAUNCH(shuffle_vs_barrier_kernel, 1, 32, 0, nullptr, out.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  EXPECT_NE(culayers_emu::last_error_message().find("can never complete"), std::string::npos)
      << culayers_emu::last_error_message();
}

// ---- host pointer argument ---------------------------------------------------------------------------

CULAYERS_GLOBAL void scale_kernel(const float* x, float* y, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) {
    y[i] = 2.0f * x[i];
  }
}

TEST(EmulatorPlantedBugs, HostPointerArgumentIsReportedAtLaunch) {
  std::vector<float> host(64, 1.0f);
  DeviceBuffer<float> y(64);
  QuietEmulator quiet;
  const cudaError_t e = CULAYERS_LAUNCH(scale_kernel, 1, 64, 0, nullptr, host.data(), y.get(), 64);
  EXPECT_EQ(e, cudaErrorIllegalAddress);
  const std::string msg = culayers_emu::last_error_message();
  EXPECT_NE(msg.find("scale_kernel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not device memory"), std::string::npos) << msg;
  // As after a real launch, the launch helper returns the error and leaves none pending.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// ---- more than 48 KB of dynamic shared memory without the attribute --------------------------------

CULAYERS_GLOBAL void big_smem_kernel(float* out) {
  CULAYERS_DYNAMIC_SMEM(float, tile);
  tile[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = tile[blockDim.x - 1 - threadIdx.x];
}

TEST(EmulatorPlantedBugs, LargeDynamicSharedMemoryNeedsTheAttribute) {
  DeviceBuffer<float> out(128);
  const std::size_t bytes = 64 * 1024;
  {
    QuietEmulator quiet;
    EXPECT_EQ(CULAYERS_LAUNCH(big_smem_kernel, 1, 128, bytes, nullptr, out.get()), cudaErrorInvalidValue);
    EXPECT_NE(culayers_emu::last_error_message().find("cudaFuncAttributeMaxDynamicSharedMemorySize"),
              std::string::npos);
    (void)cudaGetLastError();
  }
  CULAYERS_ASSERT_CUDA(kernels::set_max_dynamic_smem(big_smem_kernel, bytes));
  CULAYERS_ASSERT_CUDA(finish(CULAYERS_LAUNCH(big_smem_kernel, 1, 128, bytes, nullptr, out.get())));
  const auto h = out.download();
  EXPECT_EQ(h[0], 127.0f);
  EXPECT_EQ(h[127], 0.0f);
  // Beyond the opt-in maximum even the attribute cannot help.
  EXPECT_EQ(kernels::set_max_dynamic_smem(big_smem_kernel, 300 * 1024), cudaErrorInvalidValue);
  (void)cudaGetLastError();
}

// ---- missing host synchronization (deferred streams) ----------------------------------------------------

CULAYERS_GLOBAL void fill_kernel(float* y, float value, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) {
    y[i] = value;
  }
}

TEST(EmulatorPlantedBugs, MissingHostSynchronizationIsExposedByDeferredStreams) {
  StreamMode deferred(true);
  const int n = 256;
  DeviceBuffer<float> y(n);
  cudaStream_t stream;
  CULAYERS_ASSERT_CUDA(cudaStreamCreate(&stream));
  std::vector<float> host(n, -1.0f);
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(fill_kernel, 2, 128, 0, stream, y.get(), 42.0f, n));
  CULAYERS_ASSERT_CUDA(
      cudaMemcpyAsync(host.data(), y.get(), n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  // planted: the host reads without cudaStreamSynchronize. On a GPU this usually "works" by luck of
  // timing; here the work has not run yet, so the bug shows every time.
  EXPECT_EQ(host[0], -1.0f);
  EXPECT_EQ(host[n - 1], -1.0f);
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(stream));
  EXPECT_EQ(host[0], 42.0f);
  EXPECT_EQ(host[n - 1], 42.0f);
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(stream));
}

// ---- missing __syncthreads --------------------------------------------------------------------------

// Each thread writes its slot, then (planted: no barrier) reads its predecessor's slot. Lanes that run
// in index order (the emulator's natural order, and often a GPU's too) hide the bug.
CULAYERS_GLOBAL void missing_barrier_kernel(int* out) {
  CULAYERS_DYNAMIC_SMEM(int, slots);
  slots[threadIdx.x] = static_cast<int>(threadIdx.x) + 1;
  // __syncthreads() belongs here.
  out[threadIdx.x] = threadIdx.x > 0 ? slots[threadIdx.x - 1] : 0;
}

bool missing_barrier_result_is_wrong(DeviceBuffer<int>& out) {
  out.fill_bytes(0);
  EXPECT_EQ(finish(CULAYERS_LAUNCH(missing_barrier_kernel, 1, 64, 64 * sizeof(int), nullptr, out.get())),
            cudaSuccess);
  const auto h = out.download();
  for (int i = 0; i < 64; ++i) {
    if (h[i] != i) {
      return true;
    }
  }
  return false;
}

TEST(EmulatorPlantedBugs, MissingBarrierIsExposedBySchedulePermutation) {
  DeviceBuffer<int> out(64);
  const std::uint64_t saved = culayers_emu::schedule_seed();
  culayers_emu::set_schedule_seed(0);
  EXPECT_FALSE(missing_barrier_result_is_wrong(out)) << "the natural order is expected to hide this bug";
  bool exposed = false;
  for (std::uint64_t seed = 1; seed <= 8 && !exposed; ++seed) {
    culayers_emu::set_schedule_seed(seed);
    exposed = missing_barrier_result_is_wrong(out);
  }
  culayers_emu::set_schedule_seed(saved);
  EXPECT_TRUE(exposed) << "no permuted schedule exposed the missing barrier";
}

// ---- dependence on block order -----------------------------------------------------------------------

// Each block adds its index to what the previous block wrote (planted: blocks of one launch are not
// ordered on a GPU). Blocks run in ascending order hide the bug; a permuted block order exposes it.
CULAYERS_GLOBAL void chained_blocks_kernel(int* out) {
  if (threadIdx.x == 0) {
    const int prev = blockIdx.x > 0 ? out[blockIdx.x - 1] : 0;
    out[blockIdx.x] = prev + static_cast<int>(blockIdx.x);
  }
}

bool chained_blocks_result_is_wrong(DeviceBuffer<int>& out) {
  out.fill_bytes(0);
  EXPECT_EQ(finish(CULAYERS_LAUNCH(chained_blocks_kernel, 16, 32, 0, nullptr, out.get())), cudaSuccess);
  const auto h = out.download();
  for (int b = 0, sum = 0; b < 16; ++b) {
    sum += b;
    if (h[static_cast<std::size_t>(b)] != sum) {
      return true;
    }
  }
  return false;
}

TEST(EmulatorPlantedBugs, BlockOrderDependenceIsExposedBySchedulePermutation) {
  DeviceBuffer<int> out(16);
  bool exposed = false;
  {
    ScheduleSeed natural(0);
    EXPECT_FALSE(chained_blocks_result_is_wrong(out)) << "ascending block order is expected to hide this bug";
  }
  for (std::uint64_t seed = 1; seed <= 4 && !exposed; ++seed) {
    ScheduleSeed permuted(seed);
    exposed = chained_blocks_result_is_wrong(out);
  }
  EXPECT_TRUE(exposed) << "no permuted block order exposed the dependence";
}

} // namespace
} // namespace culayers::test
