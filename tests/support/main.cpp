// Test main for both backends. The CUDA test binary skips every test, with the reason, when no GPU is
// visible (after checking that the ops report kErrorNoDevice there); the emulated binary says which emulator
// mode it runs in, and checks that no test leaves device memory behind (a leak there is a lost free on a real
// GPU too: e.g. freeing on a stream that was already destroyed, which the CUDA runtime does not have to
// diagnose).
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#if !CULAYERS_TEST_EMULATED
#  include "culayers/batch_norm.hpp"
#  include "culayers/dropout.hpp"
#  include "culayers/group_norm.hpp"
#  include "culayers/masked_reduce.hpp"
#endif

namespace {

#if !CULAYERS_TEST_EMULATED
// Without a usable device every op must say so with kErrorNoDevice and a message naming it, and never
// crash: checked here, on the machines where the CUDA binary otherwise skips (CI), with valid arguments
// whose pointers are never dereferenced (nothing can run). Returns "" or what went wrong.
std::string check_ops_without_device() {
  // Distinct, well-aligned fake device addresses (no op may touch them: there is no device).
  const auto fake = [](std::uintptr_t i) { return reinterpret_cast<void*>(0x100000 * i); };
  struct Case {
    const char* op;
    std::function<culayers::Status()> run;
  };
  const Case cases[] = {
      {"group_norm",
       [&] {
         culayers::group_norm::GroupNormArgs a;
         a.x = fake(1);
         a.y = fake(2);
         a.batch = 2;
         a.channels = 8;
         a.spatial = 16;
         a.groups = 4;
         return culayers::group_norm::run(a, nullptr, 0, nullptr);
       }},
      {"masked_reduce",
       [&] {
         culayers::masked_reduce::MaskedReduceArgs a;
         a.x = fake(1);
         a.out = fake(2);
         a.outer = 2;
         a.reduce = 8;
         a.inner = 16;
         return culayers::masked_reduce::run(a, nullptr, 0, nullptr);
       }},
      {"dropout_update",
       [&] {
         culayers::dropout::DropoutUpdateArgs a;
         a.state = static_cast<culayers::dropout::DropoutState*>(fake(1));
         return culayers::dropout::run(a, nullptr, 0, nullptr);
       }},
      {"dropout_forward",
       [&] {
         culayers::dropout::DropoutForwardArgs a;
         a.x = fake(1);
         a.y = fake(2);
         a.shape = culayers::Shape{4, 32};
         a.state = static_cast<culayers::dropout::DropoutState*>(fake(3));
         return culayers::dropout::run(a, nullptr, 0, nullptr);
       }},
      {"masked_reduce_backward",
       [&] {
         // Mean with a mask and no counts: counts the mask first (a memset, then a kernel).
         culayers::masked_reduce::MaskedReduceBackwardArgs a;
         a.op = culayers::masked_reduce::ReduceOp::kMean;
         a.validity = culayers::masked_reduce::Validity::kMask;
         a.mask = static_cast<const std::uint8_t*>(fake(1));
         a.dy = fake(2);
         a.dx = fake(3);
         a.outer = 2;
         a.reduce = 8;
         a.inner = 16;
         return culayers::masked_reduce::run(a, fake(4), culayers::masked_reduce::workspace_size(a), nullptr);
       }},
      {"batch_norm_apply",
       [&] {
         culayers::batch_norm::BatchNormApplyArgs a;
         a.x = fake(1);
         a.y = fake(2);
         a.rows = 4;
         a.channels = 8;
         a.mean = static_cast<const float*>(fake(3));
         a.variance = static_cast<const float*>(fake(4));
         return culayers::batch_norm::run(a, nullptr, 0, nullptr);
       }},
  };
  for (const Case& c : cases) {
    culayers::detail::clear_error();
    const culayers::Status st = c.run();
    const std::string message = culayers::last_error_message();
    if (st != culayers::Status::kErrorNoDevice || message.rfind(std::string(c.op) + ":", 0) != 0) {
      std::ostringstream os;
      os << c.op << " without a device returned " << st << " (\"" << message
         << "\"); expected kErrorNoDevice and a message starting with \"" << c.op << ":\"";
      return os.str();
    }
  }
  return {};
}

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
    // Checked before the skip line below is printed: ctest reports the binary Skipped when it sees that
    // line, whatever the exit code.
    // Only for the two "no usable device" answers kErrorNoDevice stands for; other runtime failures
    // (a driver mismatch, say) just skip.
    const bool no_device =
        e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || (e == cudaSuccess && count == 0);
    if (const std::string failure = no_device ? check_ops_without_device() : std::string();
        !failure.empty()) {
      std::printf("[culayers] FAILED: %s\n", failure.c_str());
      return 1;
    }
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
