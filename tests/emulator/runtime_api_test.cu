// The emulated CUDA runtime: memory registry, streams (immediate and deferred), events, graph capture
// and replay, device properties.
#include "tests/emulator/emulator_test_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace culayers::test {
namespace {

CULAYERS_GLOBAL void add_kernel(float* y, float value, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) {
    kernels::store(y + i, kernels::load(y + i) + value);
  }
}

TEST(EmulatorRuntime, DeviceMemoryIsGarbageFilledAndRegistered) {
  const std::size_t before = culayers_emu::live_allocations();
  float* p = nullptr;
  CULAYERS_ASSERT_CUDA(cudaMalloc(&p, 40));
  EXPECT_EQ(culayers_emu::live_allocations(), before + 1);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 256, 0u);
  std::vector<unsigned char> bytes(40);
  CULAYERS_ASSERT_CUDA(cudaMemcpy(bytes.data(), p, 40, cudaMemcpyDeviceToHost));
  for (unsigned char b : bytes) {
    EXPECT_EQ(b, 0xFF); // never zero: a kernel that forgets to write shows NaN
  }
  cudaPointerAttributes attr{};
  CULAYERS_ASSERT_CUDA(cudaPointerGetAttributes(&attr, p + 3));
  EXPECT_EQ(attr.type, cudaMemoryTypeDevice);
  CULAYERS_ASSERT_CUDA(cudaPointerGetAttributes(&attr, bytes.data()));
  EXPECT_EQ(attr.type, cudaMemoryTypeUnregistered);
  CULAYERS_ASSERT_CUDA(cudaFree(p));
  EXPECT_EQ(culayers_emu::live_allocations(), before);
  QuietEmulator quiet;
  EXPECT_EQ(cudaFree(bytes.data()), cudaErrorInvalidValue); // not a device allocation
  (void)cudaGetLastError();
  float* zero = reinterpret_cast<float*>(0x1);
  CULAYERS_ASSERT_CUDA(cudaMalloc(&zero, 0));
  EXPECT_EQ(zero, nullptr);
}

struct CopyParams {
  const float* x;
  float* y;
  int n;
};

CULAYERS_GLOBAL void copy_through_struct_kernel(const CopyParams p) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < p.n) {
    kernels::store(p.y + i, kernels::load(p.x + i));
  }
}

/// set_free_quarantine for a scope, the previous value restored after (an early return included).
class Quarantine {
 public:
  explicit Quarantine(std::size_t bytes) : previous_(culayers_emu::set_free_quarantine(bytes)) {}
  ~Quarantine() { (void)culayers_emu::set_free_quarantine(previous_); }
  Quarantine(const Quarantine&) = delete;
  Quarantine& operator=(const Quarantine&) = delete;

 private:
  std::size_t previous_;
};

// A pointer kept after its cudaFree is reported as a use after free, naming the free, after later
// allocations of the same size too: the freed block is poisoned and held in the quarantine, so none of them
// can take its address. Without it the heap may give the address to a later allocation (glibc gives a freed
// 4 KiB aligned block to the next malloc of 4000 bytes), and a kernel reading the stale pointer from a
// parameter struct, which no launch check sees, would read that buffer's data (or, as here, an address no
// allocation holds, reported without naming the free). A block larger than the whole quarantine goes back
// at once, leaving the held ones; lowering the quarantine returns the oldest.
TEST(EmulatorRuntime, FreedMemoryIsQuarantined) {
  Quarantine scope(std::size_t{1} << 20);
  float* stale = nullptr;
  CULAYERS_ASSERT_CUDA(cudaMalloc(&stale, 256 * sizeof(float)));
  CULAYERS_ASSERT_CUDA(cudaFree(stale));
  const std::size_t held = culayers_emu::quarantined_bytes();
  EXPECT_GE(held, 256 * sizeof(float));
  std::vector<DeviceBuffer<float>> later;
  for (int k = 0; k < 8; ++k) {
    later.emplace_back(256);
  }
  const auto expect_named = [&] {
    QuietEmulator quiet;
    EXPECT_EQ(finish(CULAYERS_LAUNCH(copy_through_struct_kernel, 1, 256, 0, nullptr,
                                     CopyParams{stale, later[0].get(), 256})),
              cudaErrorLaunchFailure);
    std::string msg = culayers_emu::last_error_message();
    EXPECT_NE(msg.find("released by cudaFree: use after free"), std::string::npos) << msg;
    (void)cudaGetLastError();
    // A pointer argument is checked at the launch, with the same note.
    EXPECT_EQ(CULAYERS_LAUNCH(add_kernel, 1, 256, 0, nullptr, stale + 5, 1.0f, 256), cudaErrorIllegalAddress);
    msg = culayers_emu::last_error_message();
    EXPECT_NE(msg.find("inside a 1024-byte allocation at"), std::string::npos) << msg;
    EXPECT_NE(msg.find("offset 20, released by cudaFree"), std::string::npos) << msg;
    (void)cudaGetLastError();
    // A copy from it, even one that calls it host memory.
    std::vector<float> h(4);
    EXPECT_EQ(cudaMemcpy(h.data(), stale + 1, 16, cudaMemcpyDefault), cudaErrorInvalidValue);
    msg = culayers_emu::last_error_message();
    EXPECT_NE(msg.find("source"), std::string::npos) << msg;
    EXPECT_NE(msg.find("use after free"), std::string::npos) << msg;
    (void)cudaGetLastError();
  };
  expect_named();
  float* big = nullptr;
  CULAYERS_ASSERT_CUDA(cudaMalloc(&big, std::size_t{2} << 20));
  CULAYERS_ASSERT_CUDA(cudaFree(big));
  EXPECT_EQ(culayers_emu::quarantined_bytes(), held) << "the 2 MiB block is not held, nor pushes others out";
  expect_named();
  EXPECT_EQ(culayers_emu::set_free_quarantine(0), std::size_t{1} << 20);
  EXPECT_EQ(culayers_emu::quarantined_bytes(), 0u);
}

TEST(EmulatorRuntime, CopiesOutsideAnAllocationAreRejected) {
  DeviceBuffer<float> d(16);
  std::vector<float> h(32);
  QuietEmulator quiet;
  EXPECT_EQ(cudaMemcpy(d.get(), h.data(), 32 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_NE(culayers_emu::last_error_message().find("not inside one device allocation"), std::string::npos);
  EXPECT_EQ(cudaMemset(d.get() + 8, 0, 9 * sizeof(float)), cudaErrorInvalidValue);
  (void)cudaGetLastError();
}

TEST(EmulatorRuntime, OverlappingCopiesAreRejected) {
  DeviceBuffer<float> d(16);
  const std::vector<float> values{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  d.upload(values);
  {
    QuietEmulator quiet;
    // Onto itself, and shifted by one element either way: CUDA leaves all three undefined.
    EXPECT_EQ(cudaMemcpy(d.get(), d.get(), 8 * sizeof(float), cudaMemcpyDeviceToDevice),
              cudaErrorInvalidValue);
    EXPECT_NE(culayers_emu::last_error_message().find("overlap"), std::string::npos);
    EXPECT_EQ(cudaMemcpyAsync(d.get() + 1, d.get(), 8 * sizeof(float), cudaMemcpyDeviceToDevice, nullptr),
              cudaErrorInvalidValue);
    EXPECT_EQ(cudaMemcpyAsync(d.get(), d.get() + 7, 8 * sizeof(float), cudaMemcpyDeviceToDevice, nullptr),
              cudaErrorInvalidValue);
    std::vector<float> h(8);
    EXPECT_EQ(cudaMemcpy(h.data() + 1, h.data(), 4 * sizeof(float), cudaMemcpyHostToHost),
              cudaErrorInvalidValue);
    (void)cudaGetLastError();
  }
  EXPECT_EQ(d.download(), values); // nothing was copied
  // Adjacent ranges do not overlap.
  CULAYERS_ASSERT_CUDA(cudaMemcpy(d.get() + 8, d.get(), 8 * sizeof(float), cudaMemcpyDeviceToDevice));
  CULAYERS_ASSERT_CUDA(cudaMemcpy(d.get(), d.get() + 8, 0, cudaMemcpyDeviceToDevice)); // nothing to copy
  const std::vector<float> got = d.download();
  EXPECT_TRUE(std::equal(got.begin() + 8, got.end(), values.begin()));
}

TEST(EmulatorRuntime, StreamsRunInOrderAndEventsTime) {
  const int n = 300;
  DeviceBuffer<float> y(n);
  cudaStream_t s1, s2;
  cudaEvent_t start, stop, between;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CULAYERS_ASSERT_CUDA(cudaStreamCreate(&s2));
  CULAYERS_ASSERT_CUDA(cudaEventCreate(&start));
  CULAYERS_ASSERT_CUDA(cudaEventCreate(&stop));
  CULAYERS_ASSERT_CUDA(cudaEventCreateWithFlags(&between, cudaEventDisableTiming));
  CULAYERS_ASSERT_CUDA(cudaMemsetAsync(y.get(), 0, y.bytes(), s1));
  CULAYERS_ASSERT_CUDA(cudaEventRecord(start, s1));
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(add_kernel, 3, 128, 0, s1, y.get(), 1.0f, n));
  CULAYERS_ASSERT_CUDA(cudaEventRecord(between, s1));
  CULAYERS_ASSERT_CUDA(cudaStreamWaitEvent(s2, between, 0));
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(add_kernel, 3, 128, 0, s2, y.get(), 10.0f, n));
  CULAYERS_ASSERT_CUDA(cudaEventRecord(stop, s2));
  CULAYERS_ASSERT_CUDA(cudaEventSynchronize(stop));
  float ms = -1.0f;
  CULAYERS_ASSERT_CUDA(cudaEventElapsedTime(&ms, start, stop));
  EXPECT_GE(ms, 0.0f);
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, between), cudaErrorInvalidResourceHandle); // timing disabled
  (void)cudaGetLastError();
  EXPECT_EQ(cudaStreamQuery(s2), cudaSuccess);
  std::vector<float> h(n);
  CULAYERS_ASSERT_CUDA(cudaMemcpy(h.data(), y.get(), y.bytes(), cudaMemcpyDeviceToHost));
  for (float v : h) {
    EXPECT_EQ(v, 11.0f);
  }
  for (cudaEvent_t e : {start, stop, between}) {
    CULAYERS_ASSERT_CUDA(cudaEventDestroy(e));
  }
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s1));
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s2));
}

TEST(EmulatorRuntime, DeferredStreamsRunWorkOnlyAtSynchronization) {
  StreamMode deferred(true);
  DeviceBuffer<float> y(64);
  cudaStream_t s;
  CULAYERS_ASSERT_CUDA(cudaStreamCreate(&s));
  CULAYERS_ASSERT_CUDA(cudaMemsetAsync(y.get(), 0, y.bytes(), s));
  const auto launches_before = culayers_emu::stats().launches;
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(add_kernel, 1, 64, 0, s, y.get(), 3.0f, 64));
  EXPECT_EQ(culayers_emu::stats().launches, launches_before); // queued, not run
  EXPECT_EQ(cudaStreamQuery(s), cudaErrorNotReady);           // ... and polling makes progress
  EXPECT_EQ(cudaStreamQuery(s), cudaSuccess);
  EXPECT_EQ(culayers_emu::stats().launches, launches_before + 1);
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s));
}

TEST(EmulatorRuntime, DeferredKernelFaultSurfacesAtSynchronization) {
  StreamMode deferred(true);
  DeviceBuffer<float> y(10);
  QuietEmulator quiet;
  EXPECT_EQ(CULAYERS_LAUNCH(add_kernel, 1, 32, 0, nullptr, y.get(), 1.0f, 11),
            cudaSuccess); // planted: n = 11
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_NE(culayers_emu::last_error_message().find("add_kernel"), std::string::npos);
  (void)cudaGetLastError();
}

TEST(EmulatorRuntime, GraphCaptureRecordsArgumentsByValueAndReplays) {
  const int n = 200;
  DeviceBuffer<float> y(n);
  std::vector<float> h(n, 0.0f);
  y.upload(h);
  cudaStream_t s;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t graph = nullptr;
  const auto launches_before = culayers_emu::stats().launches;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  cudaStreamCaptureStatus status;
  CULAYERS_ASSERT_CUDA(cudaStreamIsCapturing(s, &status));
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  float value = 1.0f;
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(add_kernel, 2, 128, 0, s, y.get(), value, n));
  value = 100.0f; // captured by value: the graph keeps 1.0
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(add_kernel, 2, 128, 0, s, y.get(), 0.5f, n));
  CULAYERS_ASSERT_CUDA(cudaStreamEndCapture(s, &graph));
  EXPECT_EQ(culayers_emu::stats().launches, launches_before); // capture runs nothing
  std::size_t nodes = 0;
  CULAYERS_ASSERT_CUDA(cudaGraphGetNodes(graph, nullptr, &nodes));
  EXPECT_EQ(nodes, 2u);
  cudaGraphExec_t exec;
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int r = 0; r < 10; ++r) {
    CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, s));
  }
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(s));
  h = y.download();
  for (float v : h) {
    EXPECT_EQ(v, 15.0f);
  }
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  CULAYERS_ASSERT_CUDA(cudaGraphDestroy(graph));
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s));
}

TEST(EmulatorRuntime, UnsafeCallsDuringCaptureInvalidateIt) {
  cudaStream_t s;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  QuietEmulator quiet;
  for (int which = 0; which < 3; ++which) {
    CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    void* p = nullptr;
    switch (which) {
    case 0:
      EXPECT_EQ(cudaMalloc(&p, 16), cudaErrorStreamCaptureUnsupported);
      break;
    case 1:
      EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
      break;
    case 2:
      EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorStreamCaptureUnsupported);
      break;
    }
    cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(0x1);
    EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated) << "case " << which;
    EXPECT_EQ(graph, nullptr);
    (void)cudaGetLastError();
  }
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s));
}

// Memory freed after work on it was queued (cudaFreeAsync ahead of it on a deferred stream) or captured
// (cudaFree before a graph replay) is reported when that work runs, and nothing is written: before, the
// kernel, copy and memset wrote into the freed heap block.
TEST(EmulatorRuntime, WorkOnMemoryFreedBeforeItRunsIsReported) {
  QuietEmulator quiet;
  {
    StreamMode deferred(true);
    for (int which = 0; which < 3; ++which) {
      float* p = nullptr;
      CULAYERS_ASSERT_CUDA(cudaMalloc(&p, 64 * sizeof(float)));
      DeviceBuffer<float> other(64);
      CULAYERS_ASSERT_CUDA(cudaFreeAsync(p, nullptr)); // queued: p is still live when the next call checks it
      cudaError_t queued = cudaSuccess;
      cudaError_t expected = cudaErrorInvalidValue;
      switch (which) {
      case 0:
        queued = cudaMemsetAsync(p, 0, 64 * sizeof(float), nullptr);
        break;
      case 1:
        queued = cudaMemcpyAsync(other.get(), p, 64 * sizeof(float), cudaMemcpyDeviceToDevice, nullptr);
        break;
      case 2:
        queued = CULAYERS_LAUNCH(add_kernel, 1, 64, 0, nullptr, p, 1.0f, 64);
        expected = cudaErrorIllegalAddress;
        break;
      }
      EXPECT_EQ(queued, cudaSuccess) << "case " << which;
      EXPECT_EQ(cudaDeviceSynchronize(), expected) << "case " << which;
      EXPECT_NE(
          culayers_emu::last_error_message().find(which == 2 ? "freed before the kernel ran" : "when it ran"),
          std::string::npos)
          << "case " << which << ": " << culayers_emu::last_error_message();
      (void)cudaGetLastError();
    }
    // A synchronous copy runs the queued free first, then checks.
    float* p = nullptr;
    CULAYERS_ASSERT_CUDA(cudaMalloc(&p, 16));
    CULAYERS_ASSERT_CUDA(cudaFreeAsync(p, nullptr));
    std::vector<unsigned char> h(16);
    EXPECT_EQ(cudaMemcpy(h.data(), p, 16, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    (void)cudaGetLastError();
  }
  // A graph replayed after the memory its nodes use was freed.
  cudaStream_t s;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  float* p = nullptr;
  CULAYERS_ASSERT_CUDA(cudaMalloc(&p, 64 * sizeof(float)));
  cudaGraph_t graph = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  CULAYERS_ASSERT_CUDA(cudaMemsetAsync(p, 0, 64 * sizeof(float), s));
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(add_kernel, 1, 64, 0, s, p, 1.0f, 64));
  CULAYERS_ASSERT_CUDA(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, s)); // while p is live: fine
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(s));
  CULAYERS_ASSERT_CUDA(cudaFree(p));
  const cudaError_t launched = cudaGraphLaunch(exec, s);
  const cudaError_t synced = cudaStreamSynchronize(s);
  EXPECT_NE(launched == cudaSuccess ? synced : launched,
            cudaSuccess); // immediate: at launch; deferred: at sync
  (void)cudaGetLastError();
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  CULAYERS_ASSERT_CUDA(cudaGraphDestroy(graph));
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s));
}

// An event recorded again is complete only when its latest record has run (an earlier record's completion,
// still queued, does not count), and a record that fails leaves the event as it was.
TEST(EmulatorRuntime, EventQueryFollowsTheLatestRecord) {
  {
    StreamMode deferred(true);
    DeviceBuffer<float> y(32);
    y.upload(std::vector<float>(32, 0.0f));
    cudaStream_t s;
    CULAYERS_ASSERT_CUDA(cudaStreamCreate(&s));
    cudaEvent_t e;
    cudaEvent_t f;
    CULAYERS_ASSERT_CUDA(cudaEventCreate(&e));
    CULAYERS_ASSERT_CUDA(cudaEventCreate(&f));
    CULAYERS_ASSERT_CUDA(cudaEventRecord(e, s));
    CULAYERS_ASSERT_CUDA(cudaEventRecord(f, s));
    CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(add_kernel, 1, 32, 0, s, y.get(), 2.0f, 32));
    CULAYERS_ASSERT_CUDA(cudaEventRecord(e, s));
    CULAYERS_ASSERT_CUDA(cudaEventSynchronize(f)); // runs e's first record, not the kernel
    EXPECT_EQ(cudaEventQuery(e), cudaErrorNotReady);
    CULAYERS_ASSERT_CUDA(cudaEventSynchronize(e));
    EXPECT_EQ(cudaEventQuery(e), cudaSuccess);
    EXPECT_EQ(y.download()[31], 2.0f);
    CULAYERS_ASSERT_CUDA(cudaEventDestroy(e));
    CULAYERS_ASSERT_CUDA(cudaEventDestroy(f));
    CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s));
  }
  // A record refused (legacy-stream work while a blocking stream is captured) changes nothing.
  cudaStream_t blocking;
  CULAYERS_ASSERT_CUDA(cudaStreamCreate(&blocking));
  cudaEvent_t e;
  CULAYERS_ASSERT_CUDA(cudaEventCreate(&e));
  QuietEmulator quiet;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeGlobal));
  EXPECT_EQ(cudaEventRecord(e, nullptr), cudaErrorStreamCaptureImplicit);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(blocking, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaEventQuery(e), cudaSuccess); // never recorded: not "pending forever"
  (void)cudaGetLastError();
  CULAYERS_ASSERT_CUDA(cudaEventDestroy(e));
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(blocking));
}

// Capture is single-stream here: a wait that would fork another stream into a capture is refused and the
// capture invalidated (on a GPU the waiting stream joins it; here its work would run outside the graph).
TEST(EmulatorRuntime, ForkIntoACaptureIsRefused) {
  cudaStream_t s1;
  cudaStream_t s2;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  cudaEvent_t fork;
  CULAYERS_ASSERT_CUDA(cudaEventCreate(&fork));
  QuietEmulator quiet;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal));
  CULAYERS_ASSERT_CUDA(cudaEventRecord(fork, s1));
  EXPECT_EQ(cudaStreamWaitEvent(s2, fork, 0), cudaErrorStreamCaptureUnsupported);
  EXPECT_NE(culayers_emu::last_error_message().find("fork / join"), std::string::npos);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s1, &graph), cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();
  // Recorded outside capture again: a plain wait.
  CULAYERS_ASSERT_CUDA(cudaEventRecord(fork, s1));
  CULAYERS_ASSERT_CUDA(cudaStreamWaitEvent(s2, fork, 0));
  CULAYERS_ASSERT_CUDA(cudaEventDestroy(fork));
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s1));
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s2));
}

// CUDA's capture-interaction rules: a thread's mode (cudaThreadExchangeStreamCaptureMode) decides which
// captures forbid its unsafe calls: its own unless begun relaxed; in global mode also other threads' global
// captures. cudaDeviceSynchronize conflicts with any capture; legacy-stream work only with a blocking
// stream's.
TEST(EmulatorRuntime, CaptureModesFollowCudaRules) {
  QuietEmulator quiet;
  cudaStream_t s;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  auto malloc_free = [] {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, 16);
    if (e == cudaSuccess) {
      (void)cudaFree(p);
    }
    return e;
  };
  auto end = [&s] {
    cudaGraph_t graph = nullptr;
    const cudaError_t e = cudaStreamEndCapture(s, &graph);
    if (graph != nullptr) {
      (void)cudaGraphDestroy(graph);
    }
    (void)cudaGetLastError();
    return e;
  };
  // This thread relaxed: its cudaMalloc inside its own global capture is allowed; the exchange returns the
  // previous mode and restores it.
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  CULAYERS_ASSERT_CUDA(cudaThreadExchangeStreamCaptureMode(&mode));
  EXPECT_EQ(mode, cudaStreamCaptureModeGlobal);
  EXPECT_EQ(malloc_free(), cudaSuccess);
  CULAYERS_ASSERT_CUDA(cudaThreadExchangeStreamCaptureMode(&mode));
  EXPECT_EQ(mode, cudaStreamCaptureModeRelaxed);
  EXPECT_EQ(end(), cudaSuccess);
  const int seven = 7; // not a mode: stored as the int a C caller may store (never loaded as the enum here)
  std::memcpy(&mode, &seven, sizeof(mode));
  EXPECT_EQ(cudaThreadExchangeStreamCaptureMode(&mode), cudaErrorInvalidValue);
  (void)cudaGetLastError();

  // Another thread's call against this thread's capture.
  for (auto capture : {cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal}) {
    for (auto thread_mode : {cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal}) {
      CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(s, capture));
      cudaError_t other = cudaSuccess;
      std::thread t([&] {
        cudaStreamCaptureMode m = thread_mode;
        (void)cudaThreadExchangeStreamCaptureMode(&m);
        other = malloc_free();
        (void)cudaGetLastError();
      });
      t.join();
      const bool refused =
          capture == cudaStreamCaptureModeGlobal && thread_mode == cudaStreamCaptureModeGlobal;
      EXPECT_EQ(other, refused ? cudaErrorStreamCaptureUnsupported : cudaSuccess)
          << "capture " << capture << ", thread mode " << thread_mode;
      EXPECT_EQ(end(), refused ? cudaErrorStreamCaptureInvalidated : cudaSuccess)
          << "capture " << capture << ", thread mode " << thread_mode;
    }
  }
  // A relaxed capture: this thread's cudaMalloc is allowed, cudaDeviceSynchronize is not.
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  EXPECT_EQ(malloc_free(), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(end(), cudaErrorStreamCaptureInvalidated);
  // Legacy-stream work beside a non-blocking stream's capture is fine.
  DeviceBuffer<float> y(8);
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  EXPECT_EQ(cudaMemsetAsync(y.get(), 0, y.bytes(), nullptr), cudaSuccess);
  EXPECT_EQ(end(), cudaSuccess);
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s));

  // A blocking stream's capture: synchronous calls on the legacy stream from another thread conflict with
  // it whatever that thread's mode (an implicit synchronization), as legacy-stream work does.
  cudaStream_t blocking;
  CULAYERS_ASSERT_CUDA(cudaStreamCreate(&blocking));
  for (int which = 0; which < 2; ++which) {
    CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeThreadLocal));
    cudaError_t other = cudaSuccess;
    std::thread t([&] {
      cudaStreamCaptureMode m = cudaStreamCaptureModeRelaxed;
      (void)cudaThreadExchangeStreamCaptureMode(&m);
      float h = 0.0f;
      other = which == 0 ? cudaMemcpy(&h, y.get(), sizeof(h), cudaMemcpyDeviceToHost)
                         : cudaStreamSynchronize(nullptr);
      (void)cudaGetLastError();
    });
    t.join();
    EXPECT_EQ(other, cudaErrorStreamCaptureImplicit) << "case " << which;
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(blocking, &graph), cudaErrorStreamCaptureInvalidated) << "case " << which;
    (void)cudaGetLastError();
  }
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(blocking));
}

// An event recorded into a graph is recorded afresh by every replay: pending until the replay's earlier
// work has run (deferred streams), then complete.
TEST(EmulatorRuntime, ReplayedEventRecordsArePending) {
  StreamMode deferred(true);
  DeviceBuffer<float> y(32);
  y.upload(std::vector<float>(32, 0.0f));
  cudaStream_t s;
  CULAYERS_ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t e;
  CULAYERS_ASSERT_CUDA(cudaEventCreate(&e));
  cudaGraph_t graph = nullptr;
  CULAYERS_ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  CULAYERS_ASSERT_CUDA(CULAYERS_LAUNCH(add_kernel, 1, 32, 0, s, y.get(), 1.0f, 32));
  CULAYERS_ASSERT_CUDA(cudaEventRecord(e, s));
  CULAYERS_ASSERT_CUDA(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  CULAYERS_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int k = 1; k <= 2; ++k) {
    CULAYERS_ASSERT_CUDA(cudaGraphLaunch(exec, s));
    EXPECT_EQ(cudaEventQuery(e), cudaErrorNotReady) << "replay " << k;
    CULAYERS_ASSERT_CUDA(cudaEventSynchronize(e));
    EXPECT_EQ(cudaEventQuery(e), cudaSuccess);
    EXPECT_EQ(y.download()[31], static_cast<float>(k)) << "replay " << k;
  }
  CULAYERS_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  CULAYERS_ASSERT_CUDA(cudaGraphDestroy(graph));
  CULAYERS_ASSERT_CUDA(cudaEventDestroy(e));
  CULAYERS_ASSERT_CUDA(cudaStreamDestroy(s));
}

// Sets the emulated device memory limit for one test and restores the previous one, whatever the test's exit.
class MemoryLimit {
 public:
  explicit MemoryLimit(std::size_t bytes) : previous_(culayers_emu::set_device_memory_limit(bytes)) {}
  ~MemoryLimit() { (void)culayers_emu::set_device_memory_limit(previous_); }
  MemoryLimit(const MemoryLimit&) = delete;
  MemoryLimit& operator=(const MemoryLimit&) = delete;
  std::size_t previous() const { return previous_; }

 private:
  std::size_t previous_;
};

// Bytes of live device allocations (other tests' too, if any), from cudaMemGetInfo.
std::size_t device_bytes_in_use() {
  std::size_t free_bytes = 0;
  std::size_t total = 0;
  EXPECT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  return total - free_bytes;
}

// The device memory limit counts live device allocations (cudaMalloc and cudaMallocAsync together, host
// allocations not at all): one past it fails with cudaErrorMemoryAllocation and a message naming the API,
// and freeing makes room again. A refused free (a pointer of another API) changes nothing; cudaFree of
// managed memory succeeds without leaving an error.
TEST(EmulatorRuntime, DeviceMemoryLimitCountsLiveDeviceAllocations) {
  constexpr std::size_t kLimit = std::size_t{1} << 20;
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize()); // earlier tests' queued frees (deferred streams) run first
  const std::size_t in_use = device_bytes_in_use();
  MemoryLimit limit(in_use + kLimit);
  EXPECT_EQ(culayers_emu::device_memory_limit(), in_use + kLimit);
  cudaDeviceProp prop{};
  CULAYERS_ASSERT_CUDA(cudaGetDeviceProperties(&prop, 0));
  EXPECT_EQ(prop.totalGlobalMem, in_use + kLimit);
  void* a = nullptr;
  void* b = nullptr;
  void* pinned = nullptr;
  void* managed = nullptr;
  CULAYERS_ASSERT_CUDA(cudaMalloc(&a, kLimit / 2));
  CULAYERS_ASSERT_CUDA(cudaMallocHost(&pinned, kLimit));     // host memory: not counted
  CULAYERS_ASSERT_CUDA(cudaMallocManaged(&managed, kLimit)); // nor is managed memory
  CULAYERS_ASSERT_CUDA(cudaMallocAsync(&b, kLimit / 4, nullptr));
  EXPECT_EQ(device_bytes_in_use(), in_use + kLimit / 2 + kLimit / 4);
  {
    QuietEmulator quiet;
    void* c = reinterpret_cast<void*>(0x1);
    EXPECT_EQ(cudaMalloc(&c, kLimit / 4 + 1), cudaErrorMemoryAllocation);
    EXPECT_EQ(c, nullptr);
    EXPECT_NE(culayers_emu::last_error_message().find("cudaMalloc("), std::string::npos)
        << culayers_emu::last_error_message();
    EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);
    EXPECT_EQ(cudaMallocAsync(&c, kLimit, nullptr), cudaErrorMemoryAllocation);
    EXPECT_NE(culayers_emu::last_error_message().find("cudaMallocAsync("), std::string::npos)
        << culayers_emu::last_error_message();
    (void)cudaGetLastError();
    // A pinned host pointer is not cudaFree's: refused, and nothing changes.
    EXPECT_EQ(cudaFree(pinned), cudaErrorInvalidValue);
    (void)cudaGetLastError();
    EXPECT_EQ(device_bytes_in_use(), in_use + kLimit / 2 + kLimit / 4);
  }
  void* c = nullptr;
  CULAYERS_ASSERT_CUDA(cudaMalloc(&c, kLimit / 4)); // exactly up to the limit
  CULAYERS_ASSERT_CUDA(cudaFree(a));
  CULAYERS_ASSERT_CUDA(cudaMalloc(&a, kLimit / 2)); // room again after a free
  CULAYERS_ASSERT_CUDA(cudaFree(a));
  CULAYERS_ASSERT_CUDA(cudaFree(c));
  CULAYERS_ASSERT_CUDA(cudaFreeAsync(b, nullptr));
  CULAYERS_ASSERT_CUDA(cudaFreeHost(pinned)); // still pinned memory after the refused cudaFree
  CULAYERS_ASSERT_CUDA(cudaFree(managed));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "cudaFree of managed memory left an error";
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(nullptr));
  EXPECT_EQ(device_bytes_in_use(), in_use);
}

// With deferred streams a cudaFreeAsync still queued releases its bytes when an allocation would otherwise
// go past the limit (a stream-ordered pool reuses them); a limit below what is in use refuses every
// allocation until enough is freed; 0 restores the default.
TEST(EmulatorRuntime, DeviceMemoryLimitWithDeferredFreesAndBelowUse) {
  constexpr std::size_t kLimit = std::size_t{1} << 20;
  StreamMode deferred(true);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize()); // earlier tests' queued frees (deferred streams) run first
  const std::size_t in_use = device_bytes_in_use();
  MemoryLimit limit(in_use + kLimit);
  void* a = nullptr;
  CULAYERS_ASSERT_CUDA(cudaMallocAsync(&a, kLimit, nullptr));
  CULAYERS_ASSERT_CUDA(cudaFreeAsync(a, nullptr)); // queued, not yet run
  void* b = nullptr;
  CULAYERS_ASSERT_CUDA(cudaMallocAsync(&b, kLimit, nullptr)); // the queued free runs first
  {
    MemoryLimit below(in_use + kLimit / 2); // below what is in use now
    QuietEmulator quiet;
    void* c = nullptr;
    EXPECT_EQ(cudaMalloc(&c, 1), cudaErrorMemoryAllocation);
    (void)cudaGetLastError();
    std::size_t free_bytes = 1;
    std::size_t total = 0;
    CULAYERS_ASSERT_CUDA(cudaMemGetInfo(&free_bytes, &total));
    EXPECT_EQ(free_bytes, 0u);
    EXPECT_EQ(total, in_use + kLimit / 2);
  }
  CULAYERS_ASSERT_CUDA(cudaFreeAsync(b, nullptr));
  CULAYERS_ASSERT_CUDA(cudaStreamSynchronize(nullptr));
  const std::size_t previous = culayers_emu::set_device_memory_limit(0);
  EXPECT_EQ(previous, in_use + kLimit);
  EXPECT_EQ(culayers_emu::device_memory_limit(), std::size_t{16} << 30) << "0 restores the default";
  (void)culayers_emu::set_device_memory_limit(previous); // the guard restores its own previous value
}

// CULAYERS_EMU_DEVICE_MEMORY_MB sets the limit a process starts with (ctest emulated_memory_env runs this
// test with 64); skipped when it is unset.
TEST(EmulatorRuntime, DeviceMemoryLimitFromTheEnvironment) {
  const char* mb = std::getenv("CULAYERS_EMU_DEVICE_MEMORY_MB");
  if (mb == nullptr) {
    GTEST_SKIP() << "CULAYERS_EMU_DEVICE_MEMORY_MB is not set";
  }
  const std::size_t limit = static_cast<std::size_t>(std::strtoull(mb, nullptr, 10)) << 20;
  EXPECT_EQ(culayers_emu::device_memory_limit(), limit);
  cudaDeviceProp prop{};
  CULAYERS_ASSERT_CUDA(cudaGetDeviceProperties(&prop, 0));
  EXPECT_EQ(prop.totalGlobalMem, limit);
  QuietEmulator quiet;
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, limit + 1), cudaErrorMemoryAllocation);
  (void)cudaGetLastError();
}

TEST(EmulatorRuntime, FakeDeviceProperties) {
  int count = 0;
  CULAYERS_ASSERT_CUDA(cudaGetDeviceCount(&count));
  EXPECT_EQ(count, 1);
  cudaDeviceProp prop{};
  CULAYERS_ASSERT_CUDA(cudaGetDeviceProperties(&prop, 0));
  EXPECT_STREQ(prop.name, "culayers emulated device");
  EXPECT_EQ(prop.major, 9);
  EXPECT_EQ(prop.warpSize, 32);
  EXPECT_EQ(prop.maxThreadsPerBlock, 1024);
  EXPECT_EQ(prop.sharedMemPerBlock, 48u * 1024u);
  int sms = 0;
  CULAYERS_ASSERT_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  EXPECT_EQ(sms, prop.multiProcessorCount);
  int blocks = 0;
  if (occupancy_unknown()) { // CULAYERS_EMU_NO_OCCUPANCY: the query fails, nothing written
    EXPECT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, add_kernel, 256, 0),
              cudaErrorNotSupported);
    EXPECT_EQ(blocks, 0);
    (void)cudaGetLastError();
  } else {
    CULAYERS_ASSERT_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, add_kernel, 256, 0));
    EXPECT_EQ(blocks, 8); // 2048 threads per SM / 256
  }
  QuietEmulator quiet;
  EXPECT_EQ(cudaGetDeviceProperties(&prop, 1), cudaErrorInvalidDevice);
  (void)cudaGetLastError();
}

} // namespace
} // namespace culayers::test
