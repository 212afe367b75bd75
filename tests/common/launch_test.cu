// Tests of kernels/common/launch.cuh and the dynamic shared memory macro: launch errors become a Status
// naming the op, CUDA's configuration limits are enforced by both backends, and dynamic shared memory
// above 48 KB needs the per-kernel opt-in (real GPUs behave the same).
#include "kernels/common/common.cuh"
#include "kernels/common/device_info.cuh"
#include "tests/common/common_test_helpers.hpp"
#include "tests/support/test_support.hpp"

#include "culayers/status.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

namespace ck = culayers::kernels;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::occupancy_unknown;
using culayers::test::rng_for_test;
using culayers::test::common::seed_trace;

CULAYERS_GLOBAL void iota_kernel(int* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) {
    ck::store(out + i, i);
  }
}

// Reverses n floats through dynamic shared memory: every element is written to shared memory by one
// thread and read back by another after the barrier, so the whole buffer must be usable.
// The tag only makes distinct instantiations: the max-dynamic-smem attribute is per kernel.
template <int Tag>
CULAYERS_GLOBAL void smem_reverse_kernel(const float* in, float* out, int n) {
  CULAYERS_DYNAMIC_SMEM(float, buffer);
  for (int i = static_cast<int>(threadIdx.x); i < n; i += static_cast<int>(blockDim.x)) {
    buffer[i] = ck::load(in + i);
  }
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < n; i += static_cast<int>(blockDim.x)) {
    ck::store(out + i, buffer[n - 1 - i]);
  }
}

// Programmatic dependent launch: the producer lets its dependent start early, then computes and writes;
// the consumer (launched with CULAYERS_LAUNCH_DEPENDENT) waits, then reads elements other blocks wrote.
CULAYERS_HD std::uint32_t producer_value(int i, int rounds) {
  std::uint32_t v = static_cast<std::uint32_t>(i) + 1u;
  for (int k = 0; k < rounds; ++k) {
    v = v * 1103515245u + 12345u;
  }
  return v;
}

CULAYERS_GLOBAL void pdl_producer_kernel(std::uint32_t* data, int n, int rounds) {
  ck::allow_dependent_launch();
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) {
    // The rounds keep the producer's blocks busy while the consumer is launched.
    ck::store(data + i, producer_value(i, rounds));
  }
}

CULAYERS_GLOBAL void pdl_consumer_kernel(const std::uint32_t* data, std::uint32_t* out, int n) {
  ck::grid_dependency_wait();
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) {
    ck::store(out + i, ck::load(data + (n - 1 - i)));
  }
}

std::string message_now() {
  return culayers::last_error_message();
}

void expect_contains(const std::string& text, const char* what) {
  EXPECT_NE(text.find(what), std::string::npos) << "'" << what << "' missing from: " << text;
}

TEST(CommonLaunch, CheckLaunchMapsErrorsToStatusNamingTheOp) {
  culayers::detail::clear_error();
  EXPECT_EQ(ck::check_launch(cudaSuccess, "common_test_op"), Status::kSuccess);
  EXPECT_EQ(message_now(), "") << "success must not record a message";

  EXPECT_EQ(ck::check_launch(cudaErrorInvalidConfiguration, "common_test_op"), Status::kErrorCudaLaunch);
  const std::string message = message_now();
  expect_contains(message, "common_test_op");
  expect_contains(message, "cudaErrorInvalidConfiguration");

  EXPECT_EQ(ck::check_launch(cudaErrorLaunchFailure, "another_op"), Status::kErrorCudaLaunch);
  expect_contains(message_now(), "another_op");
  expect_contains(message_now(), "cudaErrorLaunchFailure");
}

// What a launch outside CUDA's limits returns: cudaErrorInvalidConfiguration up to CUDA 12, and
// cudaErrorInvalidValue from the CUDA 13.0 runtime (seen on an H100, driver 580.159.04). The emulator answers
// as the runtime it is built against (exactly); on a GPU either answer of the two passes, since the driver
// in use may be newer than the toolkit.
::testing::AssertionResult is_configuration_error(cudaError_t e) {
#if CULAYERS_TEST_EMULATED
  const bool ok = e == culayers_emu::kLaunchConfigurationError;
#else
  const bool ok = e == cudaErrorInvalidConfiguration || e == cudaErrorInvalidValue;
#endif
  if (ok) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "launch returned " << cudaGetErrorName(e) << ", not a launch-configuration error";
}

// Launches whose configuration CUDA rejects: the launch reports a configuration error, the kernel never
// runs, and the error is not sticky (the next launch works).
TEST(CommonLaunch, InvalidConfigurationsAreRejected) {
  constexpr int kN = 64;
  DeviceBuffer<int> out(kN);
  out.fill_bytes(0xFF);
  struct Config {
    dim3 grid;
    dim3 block;
    const char* why;
  };
  const Config configs[] = {
      {dim3(1), dim3(2048), "2048 threads per block"},
      {dim3(1), dim3(1024, 2), "1024 x 2 threads"},
      {dim3(1), dim3(1, 1, 65), "block z > 64"},
      {dim3(1, 65536), dim3(32), "grid y > 65535"},
      {dim3(0), dim3(32), "empty grid"},
  };
  for (const Config& c : configs) {
    SCOPED_TRACE(c.why);
#if CULAYERS_TEST_EMULATED
    culayers::test::common::QuietEmulatorFaults quiet;
#endif
    const cudaError_t e = CULAYERS_LAUNCH(iota_kernel, c.grid, c.block, 0, nullptr, out.get(), kN);
    EXPECT_TRUE(is_configuration_error(e));
    culayers::detail::clear_error();
    EXPECT_EQ(ck::check_launch(e, "common_iota"), Status::kErrorCudaLaunch);
    expect_contains(message_now(), "common_iota");
#if CULAYERS_TEST_EMULATED
    if (c.block.x == 2048) {
      expect_contains(culayers_emu::last_error_message(), "exceeds CUDA's limits");
      expect_contains(culayers_emu::last_error_message(), "launch_test.cu");
    }
#endif
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << "a configuration error is not sticky";
  }
  const std::vector<int> untouched = out.download();
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(untouched[static_cast<std::size_t>(i)], -1) << "a rejected launch ran: element " << i;
  }
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(iota_kernel, dim3(2), dim3(32), 0, nullptr, out.get(), kN));
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<int> got = out.download();
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(got[static_cast<std::size_t>(i)], i);
  }
}

// The launch helper consumes the launch error with cudaGetLastError() on both backends, so nothing is left
// pending for an unrelated later check.
TEST(CommonLaunch, FailedLaunchLeavesNoPendingError) {
#if CULAYERS_TEST_EMULATED
  culayers::test::common::QuietEmulatorFaults quiet;
#endif
  DeviceBuffer<int> out(32);
  const cudaError_t e = CULAYERS_LAUNCH(iota_kernel, dim3(1), dim3(2048), 0, nullptr, out.get(), 32);
  EXPECT_TRUE(is_configuration_error(e));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// An error the caller has not read yet (here a failed cudaSetDevice) is neither reported as a later
// launch's error nor consumed by it, plain or dependent: it is still there for the caller afterwards.
TEST(CommonLaunch, AnEarlierPendingErrorIsNeitherReportedNorLost) {
  DeviceBuffer<int> out(64);
  DeviceBuffer<std::uint32_t> data(64);
  for (int dependent = 0; dependent < 2; ++dependent) {
    SCOPED_TRACE(dependent ? "dependent launch" : "plain launch");
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    ASSERT_EQ(cudaSetDevice(-1), cudaErrorInvalidDevice);
    const cudaError_t e =
        dependent ? CULAYERS_LAUNCH_DEPENDENT(pdl_consumer_kernel, dim3(2), dim3(32), 0, nullptr, data.get(),
                                              reinterpret_cast<std::uint32_t*>(out.get()), 64)
                  : CULAYERS_LAUNCH(iota_kernel, dim3(2), dim3(32), 0, nullptr, out.get(), 64);
    EXPECT_EQ(e, cudaSuccess);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  }
}

void check_reverse(std::mt19937_64& rng, cudaError_t (*launch)(const float*, float*, int), int n) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> host(static_cast<std::size_t>(n));
  for (auto& v : host) {
    v = normal(rng);
  }
  DeviceBuffer<float> in(host);
  DeviceBuffer<float> out(host.size());
  CULAYERS_ASSERT_CUDA(launch(in.get(), out.get(), n));
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got = out.download();
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(got[static_cast<std::size_t>(i)], host[static_cast<std::size_t>(n - 1 - i)]) << "element " << i;
  }
}

template <int Tag>
cudaError_t launch_reverse(const float* in, float* out, int n) {
  return CULAYERS_LAUNCH((smem_reverse_kernel<Tag>), dim3(1), dim3(256),
                         static_cast<std::size_t>(n) * sizeof(float), nullptr, in, out, n);
}

TEST(CommonLaunch, DynamicSharedMemoryOf1KB) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_reverse(rng, &launch_reverse<0>, 1024 / static_cast<int>(sizeof(float)));
  // Exactly 48 KB needs no opt-in.
  check_reverse(rng, &launch_reverse<0>, 48 * 1024 / static_cast<int>(sizeof(float)));
}

TEST(CommonLaunch, DynamicSharedMemoryAbove48KBNeedsOptIn) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  constexpr std::size_t kBytes = 64 * 1024;
  constexpr int kN = static_cast<int>(kBytes / sizeof(float));
  DeviceBuffer<float> in(kN);
  DeviceBuffer<float> out(kN);
  in.fill_bytes(0);
  {
    // Instantiation 1 is never opted in (in this process): CUDA rejects the launch (invalid argument).
#if CULAYERS_TEST_EMULATED
    culayers::test::common::QuietEmulatorFaults quiet;
#endif
    const cudaError_t e = launch_reverse<1>(in.get(), out.get(), kN);
    EXPECT_EQ(e, cudaErrorInvalidValue) << cudaGetErrorName(e);
    EXPECT_EQ(ck::check_launch(e, "common_smem_64k"), Status::kErrorCudaLaunch);
    expect_contains(message_now(), "common_smem_64k");
#if CULAYERS_TEST_EMULATED
    expect_contains(culayers_emu::last_error_message(), "cudaFuncSetAttribute");
#endif
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << "not sticky";
  }
  // Instantiation 2: opted in, the launch works and all 64 KB are usable.
  CULAYERS_ASSERT_CUDA(ck::set_max_dynamic_smem(smem_reverse_kernel<2>, kBytes));
  check_reverse(rng, &launch_reverse<2>, kN);
  {
    // Back to the 48 KB default: rejected again, so the attribute is what made the difference.
#if CULAYERS_TEST_EMULATED
    culayers::test::common::QuietEmulatorFaults quiet;
#endif
    // (set_max_dynamic_smem never lowers the limit, so lower it with the runtime call; restored below.)
    const void* k = reinterpret_cast<const void*>(&smem_reverse_kernel<2>);
    CULAYERS_ASSERT_CUDA(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, 48 * 1024));
    const cudaError_t e = launch_reverse<2>(in.get(), out.get(), kN);
    EXPECT_EQ(e, cudaErrorInvalidValue) << cudaGetErrorName(e);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    CULAYERS_ASSERT_CUDA(
        cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kBytes)));
  }
  // The limit only grows: asking for less later leaves the larger grant in place.
  CULAYERS_ASSERT_CUDA(ck::set_max_dynamic_smem(smem_reverse_kernel<2>, 48 * 1024));
  check_reverse(rng, &launch_reverse<2>, kN);
}

// Launches on a created stream are ordered with the copies on it; results are read after synchronizing.
TEST(CommonLaunch, LaunchOnACreatedStream) {
  cudaStream_t stream = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamCreate(&stream));
  constexpr int kN = 100;
  DeviceBuffer<int> out(kN);
  std::vector<int> got(kN, -7);
  EXPECT_EQ(ck::check_launch(CULAYERS_LAUNCH(iota_kernel, dim3(2), dim3(64), 0, stream, out.get(), kN),
                             "common_iota_stream"),
            Status::kSuccess);
  EXPECT_EQ(cudaMemcpyAsync(got.data(), out.get(), sizeof(int) * kN, cudaMemcpyDeviceToHost, stream),
            cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(got[static_cast<std::size_t>(i)], i);
  }
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

// A dependent launch sees every write of the kernel before it, launched eagerly (default and created
// stream) and from a captured graph replayed several times. On the emulator (and GPUs below compute
// capability 9.0) it is a plain launch; on an sm_90 GPU the consumer is launched while the producer runs,
// and the test checks that it was.
TEST(CommonLaunch, DependentLaunchSeesThePreviousKernelsWrites) {
  constexpr int kN = 1 << 14;
  const int rounds = CULAYERS_TEST_EMULATED ? 8 : 4096;
  const dim3 grid((kN + 255) / 256);
  std::vector<std::uint32_t> want(kN);
  for (int i = 0; i < kN; ++i) {
    want[static_cast<std::size_t>(i)] = producer_value(kN - 1 - i, rounds);
  }
  DeviceBuffer<std::uint32_t> data(kN);
  DeviceBuffer<std::uint32_t> out(kN);
  cudaStream_t created = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&created, cudaStreamNonBlocking));
  auto enqueue = [&](cudaStream_t stream) {
    EXPECT_EQ(ck::check_launch(
                  CULAYERS_LAUNCH(pdl_producer_kernel, grid, dim3(256), 0, stream, data.get(), kN, rounds),
                  "common_pdl_producer"),
              Status::kSuccess);
    EXPECT_EQ(ck::check_launch(CULAYERS_LAUNCH_DEPENDENT(pdl_consumer_kernel, grid, dim3(256), 0, stream,
                                                         static_cast<const std::uint32_t*>(data.get()),
                                                         out.get(), kN),
                               "common_pdl_consumer"),
              Status::kSuccess);
  };
  auto check = [&](cudaStream_t stream, const char* what) {
    std::vector<std::uint32_t> got(kN);
    EXPECT_EQ(
        cudaMemcpyAsync(got.data(), out.get(), sizeof(std::uint32_t) * kN, cudaMemcpyDeviceToHost, stream),
        cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    int wrong = 0;
    for (int i = 0; i < kN; ++i) {
      wrong += got[static_cast<std::size_t>(i)] != want[static_cast<std::size_t>(i)] ? 1 : 0;
    }
    EXPECT_EQ(wrong, 0) << what;
  };
#if !CULAYERS_TEST_EMULATED
  // On an sm_90 GPU (binaries built for it, a CUDA 12.3+ driver, CULAYERS_NO_PDL unset) the consumer is a
  // programmatic dependent launch, before and after the launches below (none may be refused).
  int device = 0;
  int major = 0;
  int driver = 0;
  CULAYERS_ASSERT_CUDA(cudaGetDevice(&device));
  CULAYERS_ASSERT_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CULAYERS_ASSERT_CUDA(cudaDriverGetVersion(&driver));
  cudaFuncAttributes attributes = {};
  CULAYERS_ASSERT_CUDA(
      cudaFuncGetAttributes(&attributes, reinterpret_cast<const void*>(pdl_consumer_kernel)));
  const char* no_pdl = std::getenv("CULAYERS_NO_PDL");
  const bool expect_pdl = major >= 9 && driver >= 12030 && attributes.ptxVersion >= 90 &&
                          (no_pdl == nullptr || std::string(no_pdl).empty() || std::string(no_pdl) == "0");
  EXPECT_EQ(ck::dependent_launch_used(pdl_consumer_kernel, device), expect_pdl);
#endif
  for (cudaStream_t stream : {cudaStream_t{nullptr}, created}) {
    out.fill_bytes(0);
    data.fill_bytes(0);
    enqueue(stream);
    check(stream, stream == nullptr ? "default stream" : "created stream");
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(created, cudaStreamCaptureModeGlobal));
  enqueue(created);
  CULAYERS_ASSERT_CUDA(cudaStreamEndCapture(created, &graph));
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 3; ++replay) {
    out.fill_bytes(0);
    data.fill_bytes(0);
    CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, created));
    check(created, "graph replay");
  }
#if !CULAYERS_TEST_EMULATED
  EXPECT_EQ(ck::dependent_launch_used(pdl_consumer_kernel, device), expect_pdl)
      << "a dependent launch was refused";
#endif
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(created), cudaSuccess);
}

// resident_blocks: the runtime's occupancy calculator with no dynamic shared memory, cached; 0 (and no
// pending error) where the runtime cannot say; safe to ask during a global-mode stream capture (the group
// norm planner asks on every call, and a first call may come while a graph is being captured).
CULAYERS_GLOBAL void residency_probe_kernel(int* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) {
    ck::store(out + i, 2 * i);
  }
}

TEST(CommonLaunch, ResidentBlocksIsTheOccupancyCalculatorsAnswer) {
  // The calculator's answer, or 0 where the runtime cannot say (the emulator under
  // CULAYERS_EMU_NO_OCCUPANCY), the failed query's error not left pending.
  const auto calculator = [](const void* kernel, int threads) {
    int blocks = 0;
    const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, 0);
    if (occupancy_unknown()) {
      EXPECT_NE(e, cudaSuccess);
      (void)cudaGetLastError();
      return 0;
    }
    EXPECT_EQ(e, cudaSuccess);
    EXPECT_GE(blocks, 1) << threads;
    return blocks;
  };
  for (int threads : {32, 128, 256, 1024}) {
    const int expected = calculator(reinterpret_cast<const void*>(iota_kernel), threads);
    EXPECT_EQ(ck::resident_blocks(iota_kernel, threads), expected) << threads;
    EXPECT_EQ(ck::resident_blocks(iota_kernel, threads), expected) << threads << " (cached)";
  }
  EXPECT_EQ(ck::resident_blocks(iota_kernel, 4096), 0) << "more threads than a block may have";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);

  // A kernel nothing has queried or launched before (with lazy module loading, not yet loaded) first asked
  // during a global-mode capture: the calculator's answer, and the capture still valid.
  cudaStream_t stream = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  DeviceBuffer<int> out(256);
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const int during = ck::resident_blocks(residency_probe_kernel, 256);
  const cudaError_t launched = CULAYERS_LAUNCH(residency_probe_kernel, 1, 256, 0, stream, out.get(), 256);
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  EXPECT_EQ(during, calculator(reinterpret_cast<const void*>(residency_probe_kernel), 256));
  EXPECT_EQ(launched, cudaSuccess);
  EXPECT_EQ(ended, cudaSuccess) << "the query invalidated the capture";
  if (graph != nullptr) {
    cudaGraphExec_t exec = nullptr;
    EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    if (exec != nullptr) {
      EXPECT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      const std::vector<int> got = out.download();
      for (int i = 0; i < 256; ++i) {
        ASSERT_EQ(got[static_cast<std::size_t>(i)], 2 * i) << i;
      }
      EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
    }
    EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  }
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

} // namespace
