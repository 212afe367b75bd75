// Races inside a block, found by ThreadSanitizer through the emulator's fiber and barrier annotations
// (tsan preset). Without TSan the clean kernels still run and check their results.
#include "tests/emulator/emulator_test_util.hpp"

#include <gtest/gtest.h>

#if defined(__SANITIZE_THREAD__)
#  define CULAYERS_TEST_TSAN 1
#else
#  define CULAYERS_TEST_TSAN 0
#endif

namespace culayers::test {
namespace {

CULAYERS_GLOBAL void neighbour_kernel(int* out, bool with_barrier) {
  CULAYERS_DYNAMIC_SMEM(int, slots);
  slots[threadIdx.x] = static_cast<int>(threadIdx.x) + 1;
  if (with_barrier) {
    __syncthreads();
  }
  out[threadIdx.x] = slots[(threadIdx.x + 1) % blockDim.x];
}

CULAYERS_GLOBAL void warp_neighbour_kernel(int* out, bool with_syncwarp) {
  CULAYERS_DYNAMIC_SMEM(int, slots);
  slots[threadIdx.x] = static_cast<int>(threadIdx.x) * 3;
  if (with_syncwarp) {
    __syncwarp();
  }
  out[threadIdx.x] = slots[threadIdx.x ^ 1u];
}

CULAYERS_GLOBAL void reduce_kernel(const float* x, float* out) {
  __shared__ float scratch[32];
  const float s = kernels::block_reduce_sum(x[threadIdx.x], scratch);
  if (threadIdx.x == 0) {
    out[blockIdx.x] = s;
  }
}

TEST(EmulatorTsan, BarrierOrdersSharedMemory) {
  DeviceBuffer<int> out(64);
  CULAYERS_ASSERT_CUDA(
      finish(CULAYERS_LAUNCH(neighbour_kernel, 2, 64, 64 * sizeof(int), nullptr, out.get(), true)));
  const auto h = out.download();
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(h[i], (i + 1) % 64 + 1);
  }
}

TEST(EmulatorTsan, SyncwarpOrdersWarpSynchronousCode) {
  DeviceBuffer<int> out(64);
  CULAYERS_ASSERT_CUDA(
      finish(CULAYERS_LAUNCH(warp_neighbour_kernel, 1, 64, 64 * sizeof(int), nullptr, out.get(), true)));
  const auto h = out.download();
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(h[i], (i ^ 1) * 3);
  }
}

TEST(EmulatorTsan, BlockReductionIsRaceFree) {
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) {
    x[i] = static_cast<float>(i % 5);
  }
  DeviceBuffer<float> dx(x), out(3);
  CULAYERS_ASSERT_CUDA(finish(CULAYERS_LAUNCH(reduce_kernel, 3, 256, 0, nullptr, dx.get(), out.get())));
  const auto h = out.download();
  for (float v : h) {
    EXPECT_EQ(v, 510.0f); // 51 full cycles of 0+1+2+3+4 = 510, plus a trailing 0
  }
}

TEST(EmulatorTsan, MissingSyncthreadsIsReportedByTsan) {
#if CULAYERS_TEST_TSAN
  DeviceBuffer<int> out(64);
  EXPECT_DEATH(
      (void)finish(CULAYERS_LAUNCH(neighbour_kernel, 1, 64, 64 * sizeof(int), nullptr, out.get(), false)),
      "data race");
#else
  GTEST_SKIP() << "needs the tsan preset (a missing barrier is a data race between fibers)";
#endif
}

TEST(EmulatorTsan, MissingSyncwarpIsReportedByTsan) {
#if CULAYERS_TEST_TSAN
  DeviceBuffer<int> out(64);
  EXPECT_DEATH((void)finish(CULAYERS_LAUNCH(warp_neighbour_kernel, 1, 64, 64 * sizeof(int), nullptr,
                                            out.get(), false)),
               "data race");
#else
  GTEST_SKIP() << "needs the tsan preset (implicit warp-synchronous code is a data race between fibers)";
#endif
}

} // namespace
} // namespace culayers::test
