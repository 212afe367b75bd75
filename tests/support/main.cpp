// Test main for both backends. The CUDA test binary skips every test, with the reason, when no GPU is
// visible; the emulated binary says which emulator mode it runs in, and checks that no test leaves device
// memory behind (a leak there is a lost free on a real GPU too: e.g. freeing on a stream that was already
// destroyed, which the CUDA runtime does not have to diagnose).
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

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

#if CULAYERS_TEST_EMULATED
// Counts the emulator's live allocations (device, pinned and managed) around every test, after the device
// has drained its deferred work; a test that ends with more than it started with leaked, and the binary
// fails naming it (a listener cannot fail a test that has ended, so the verdict comes from main).
class LeakListener : public ::testing::EmptyTestEventListener {
 public:
  void OnTestStart(const ::testing::TestInfo&) override { before_ = live(); }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    const std::size_t after = live();
    if (after > before_) {
      const std::string name = std::string(info.test_suite_name()) + "." + info.name();
      std::printf(
          "[culayers] LEAK: %s ended with %zu more live allocations (device, pinned or managed) than it "
          "started with\n",
          name.c_str(), after - before_);
      leaked_.push_back(name);
    }
  }
  const std::vector<std::string>& leaked() const { return leaked_; }

 private:
  static std::size_t live() {
    (void)cudaDeviceSynchronize();
    (void)cudaGetLastError();
    return culayers_emu::live_allocations();
  }
  std::size_t before_ = 0;
  std::vector<std::string> leaked_;
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
#if CULAYERS_TEST_EMULATED
  auto* leaks = new LeakListener; // owned by gtest's listener list
  ::testing::UnitTest::GetInstance()->listeners().Append(leaks);
  const int rc = RUN_ALL_TESTS();
  if (!leaks->leaked().empty()) {
    std::printf("[culayers] FAILED: %zu test(s) leaked emulator allocations:\n", leaks->leaked().size());
    for (const std::string& name : leaks->leaked()) {
      std::printf("[culayers]   %s\n", name.c_str());
    }
    return 1;
  }
  return rc;
#else
  return RUN_ALL_TESTS();
#endif
}
