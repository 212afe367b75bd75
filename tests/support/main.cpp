// Test main for both backends. The CUDA test binary skips every test, with the reason, when no GPU is
// visible; the emulated binary says which emulator mode it runs in.
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace {

#if !CULAYERS_TEST_EMULATED
class NoGpuEnvironment : public ::testing::Environment {
 public:
  explicit NoGpuEnvironment(std::string reason) : reason_(std::move(reason)) {}
  void SetUp() override { GTEST_SKIP() << reason_; }

 private:
  std::string reason_;
};
#endif

} // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
#if CULAYERS_TEST_EMULATED
  std::printf("[culayers] backend: CPU emulator (deferred streams: %s, schedule seed: %llu)\n",
              culayers_emu::deferred() ? "on" : "off",
              static_cast<unsigned long long>(culayers_emu::schedule_seed()));
#else
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    const std::string reason = std::string("no CUDA GPU visible (cudaGetDeviceCount: ") +
                               cudaGetErrorName(e) + ", " + std::to_string(count) +
                               " devices); the CUDA test binary needs a GPU, the emulated one does not";
    std::printf("[culayers] %s\n", reason.c_str());
    ::testing::AddGlobalTestEnvironment(new NoGpuEnvironment(reason));
  } else {
    cudaDeviceProp prop{};
    (void)cudaGetDeviceProperties(&prop, 0);
    std::printf("[culayers] backend: CUDA on %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount);
  }
#endif
  std::printf("[culayers] random seed: %llu (set CULAYERS_TEST_SEED to repeat)\n",
              static_cast<unsigned long long>(culayers::test::base_seed()));
  return RUN_ALL_TESTS();
}
