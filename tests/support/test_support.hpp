// Helpers shared by the tests of both backends: device buffers, seeded random inputs, CUDA checks.
#pragma once

#include "culayers/status.hpp"

#include <cuda_runtime.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#if defined(CULAYERS_EMULATED) && CULAYERS_EMULATED
#  define CULAYERS_TEST_EMULATED 1
#  include "culayers_emu/runtime.hpp"
#else
#  define CULAYERS_TEST_EMULATED 0
#endif

#define CULAYERS_ASSERT_CUDA(expr)                                                                           \
  do {                                                                                                       \
    const cudaError_t culayers_e_ = (expr);                                                                  \
    ASSERT_EQ(culayers_e_, cudaSuccess)                                                                      \
        << #expr << ": " << cudaGetErrorName(culayers_e_) << " " << cudaGetErrorString(culayers_e_);         \
  } while (0)

namespace culayers::test {

/// The run's base seed: CULAYERS_TEST_SEED if set, else drawn fresh (and printed by main).
inline std::uint64_t base_seed() {
  static const std::uint64_t seed = [] {
    if (const char* env = std::getenv("CULAYERS_TEST_SEED")) {
      return static_cast<std::uint64_t>(std::strtoull(env, nullptr, 0));
    }
    return static_cast<std::uint64_t>(std::random_device{}()) << 32 ^ std::random_device{}();
  }();
  return seed;
}

/// "base seed N (CULAYERS_TEST_SEED)" for failure messages.
inline std::string seed_note() {
  return "base seed " + std::to_string(base_seed()) + " (CULAYERS_TEST_SEED)";
}

/// A generator per test, derived from the base seed and the test's name (reproducible in isolation).
inline std::mt19937_64 rng_for_test() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::uint64_t h = base_seed();
  if (info != nullptr) {
    for (const char* s : {info->test_suite_name(), info->name()}) {
      for (; *s != '\0'; ++s) {
        h = (h ^ static_cast<unsigned char>(*s)) * 0x100000001B3ull;
      }
    }
  }
  return std::mt19937_64(h);
}

/// Owning device buffer of n elements of T (test-only RAII; the library never allocates).
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    if (n > 0 && cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)) != cudaSuccess) {
      p_ = nullptr;
      n_ = 0;
      ADD_FAILURE() << "cudaMalloc of " << n * sizeof(T) << " bytes failed";
    }
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  ~DeviceBuffer() {
    if (p_ != nullptr) {
      (void)cudaFree(p_);
    }
  }

  T* get() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

  // upload and fill_bytes end with the device idle: a pageable cudaMemcpy to the device may return before
  // its DMA lands, and cudaMemset is asynchronous, while work a test then enqueues on a non-blocking stream
  // is not ordered after the legacy stream.
  void upload(const std::vector<T>& host) {
    ASSERT_LE(host.size(), n_);
    ASSERT_EQ(cudaMemcpy(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return host;
  }
  void fill_bytes(int value) {
    EXPECT_EQ(cudaMemset(p_, value, bytes()), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

/// When `expected` is set, the last error message must contain it (an error naming its argument).
inline void expect_message_contains(const char* expected, const std::string& what) {
  if (expected != nullptr) {
    const std::string message = culayers::last_error_message();
    EXPECT_NE(message.find(expected), std::string::npos) << what << ": " << message;
  }
}

/// The test data directory (tests/data): $CULAYERS_TEST_DATA_DIR, else the source tree's (compiled in),
/// else tests/data under the working directory (a test binary carried to another machine with the tree).
inline std::filesystem::path test_data_dir() {
  if (const char* env = std::getenv("CULAYERS_TEST_DATA_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
#ifdef CULAYERS_TEST_DATA_DIR // defined for the test binaries (tests/CMakeLists.txt), not every user
  const std::filesystem::path built = CULAYERS_TEST_DATA_DIR;
  std::error_code ec;
  if (std::filesystem::is_directory(built, ec)) {
    return built;
  }
#endif
  return "tests/data";
}

/// The current device's multiprocessor count (4 on the emulator unless CULAYERS_EMU_SM_COUNT says
/// otherwise): for expectations that follow a planner default scaled by the GPU's size.
inline int sm_count() {
  int device = 0;
  int count = 0;
  EXPECT_EQ(cudaGetDevice(&device), cudaSuccess);
  EXPECT_EQ(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  return count;
}

/// Emulated build under CULAYERS_EMU_NO_OCCUPANCY (ctest's emulated_no_occupancy entry): the runtime's
/// occupancy queries fail, as where it cannot say, so the planners run on their own estimates. Tests of what
/// the runtime's answer changes (wave balancing) skip then; every other test must pass on the estimates.
/// Always false on a GPU.
inline bool occupancy_unknown() {
#if CULAYERS_TEST_EMULATED
  return culayers_emu::occupancy_unknown();
#else
  return false;
#endif
}

/// Blocks the emulator has run so far in this process (0 on a GPU): a test's launch shapes.
inline std::uint64_t emulated_blocks() {
#if CULAYERS_TEST_EMULATED
  return culayers_emu::stats().blocks;
#else
  return 0;
#endif
}

#if CULAYERS_TEST_EMULATED
/// How coalesced the global accesses of what `body` enqueues and runs are
/// (culayers_emu::set_sector_counting): the bytes moved per byte of the 32-byte sectors each warp-wide access
/// touches, loads and stores apart (1 = fully coalesced; 0.25 = each warp access uses a quarter of what it
/// fetches; sector_efficiency), in total and per source line. Emulated build only.
struct Coalescing {
  culayers_emu::SectorCounters counters{};
  std::vector<culayers_emu::SectorSite> sites; // most bytes first
};
inline double sector_efficiency(std::uint64_t bytes, std::uint64_t sectors) {
  return sectors == 0 ? 1.0 : static_cast<double>(bytes) / (32.0 * static_cast<double>(sectors));
}
template <class Body>
Coalescing measure_coalescing(Body&& body) {
  (void)cudaDeviceSynchronize(); // work queued before (deferred streams) is not counted
  culayers_emu::reset_sector_counters();
  culayers_emu::set_sector_counting(true);
  body();
  (void)cudaDeviceSynchronize();
  culayers_emu::set_sector_counting(false);
  Coalescing c;
  c.counters = culayers_emu::sector_counters();
  c.sites = culayers_emu::sector_sites();
  return c;
}
/// Every source line that moves at least `share` of the loads' (stores') bytes uses at least `min_read`
/// (`min_write`) of the sectors its warp accesses touch: the accesses that carry the op's tensors, not the
/// small per-group or per-chunk arrays (whose sectors a shape small enough for the emulator makes look
/// large).
inline void expect_coalesced(const Coalescing& c, double min_read, double min_write, const std::string& what,
                             double share = 0.05) {
  EXPECT_GT(c.counters.read_bytes, 0u) << what << ": nothing was counted";
  int checked = 0;
  for (const culayers_emu::SectorSite& s : c.sites) {
    const std::uint64_t total = s.write ? c.counters.write_bytes : c.counters.read_bytes;
    if (static_cast<double>(s.bytes) < share * static_cast<double>(total)) {
      continue;
    }
    ++checked;
    EXPECT_GE(sector_efficiency(s.bytes, s.sectors), s.write ? min_write : min_read)
        << what << ": " << (s.write ? "stores" : "loads") << " at " << s.file << ":" << s.line << " move "
        << s.bytes << " bytes in " << s.sectors << " sectors";
  }
  EXPECT_GT(checked, 0) << what << ": no source line checked";
}
#endif

/// Emulated build: the emulator's schedule seed (the order in which lanes and warps run between sync
/// points, and blocks in a grid) for this object's lifetime, the previous one restored after; a no-op on a
/// GPU. Repeat-run tests make their second run under another seed, so a result that depends on thread timing
/// (atomics, races) shows up as different bits instead of repeating by construction.
class ScheduleSeed {
 public:
  explicit ScheduleSeed(std::uint64_t seed) {
#if CULAYERS_TEST_EMULATED
    saved_ = culayers_emu::schedule_seed();
    culayers_emu::set_schedule_seed(seed);
#else
    (void)seed;
#endif
  }
  ScheduleSeed(const ScheduleSeed&) = delete;
  ScheduleSeed& operator=(const ScheduleSeed&) = delete;
  ~ScheduleSeed() {
#if CULAYERS_TEST_EMULATED
    culayers_emu::set_schedule_seed(saved_);
#endif
  }

 private:
  std::uint64_t saved_ = 0;
};

/// A non-blocking stream that outlives what is declared after it: declare it BEFORE the layers, models and
/// tensors that use it, since they free their memory on it when destroyed (freeing on a destroyed stream is
/// undefined on a GPU; the emulated test binary reports the leak it causes there).
class Stream {
 public:
  Stream() { EXPECT_EQ(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), cudaSuccess); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    EXPECT_EQ(cudaStreamSynchronize(s_), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(s_), cudaSuccess);
  }
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

} // namespace culayers::test
