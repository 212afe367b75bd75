// culayers_selfcheck: runs the roofline kernels (bench/kernels/roofline.cu) on the CPU emulator and
// checks them against a double-precision CPU reference: copies and sums over sizes with odd tails, on
// misaligned views, for several grid sizes; byte counts against the byte model; run-to-run determinism;
// argument validation. Then reports what the emulator costs on this CPU (a barrier-heavy kernel: time
// per context switch).
//
// This is the CPU emulator, a correctness tool. Its timings describe this CPU running the emulator and
// say nothing about any GPU. Exit status: 0 when every check passed, 1 otherwise.
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include <culayers/status.hpp>
#include <culayers_emu/runtime.hpp>

#include "bench/kernels/roofline.hpp"

namespace {

using culayers::Status;
namespace rl = culayers::bench;

constexpr std::uint64_t kSeed = 20240601;
// Elements of slack around every view: misaligned views start inside it, and the guard elements after
// the view must come back untouched.
constexpr std::int64_t kPad = 8;
constexpr int kMaxMismatchReports = 8;

int g_checks = 0;
int g_failures = 0;

void fail(const std::string& what) {
  ++g_failures;
  if (g_failures <= kMaxMismatchReports) {
    std::printf("  MISMATCH: %s\n", what.c_str());
  }
}

// One check: counts it, reports it when it failed.
bool expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    fail(what);
  }
  return ok;
}

std::string cuda_text(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err) + " [" +
         culayers_emu::last_error_message() + "]";
}

bool cuda_ok(cudaError_t err, const std::string& what) {
  return expect(err == cudaSuccess, what + ": " + (err == cudaSuccess ? "" : cuda_text(err)));
}

bool status_ok(Status status, const std::string& what) {
  return expect(status == Status::kSuccess,
                what + ": " + culayers::status_string(status) + ": " + culayers::last_error_message());
}

// One device allocation of floats, freed on scope exit.
struct DeviceFloats {
  float* ptr = nullptr;
  explicit DeviceFloats(std::int64_t n) {
    if (cudaMalloc(reinterpret_cast<void**>(&ptr), static_cast<std::size_t>(n) * sizeof(float)) !=
        cudaSuccess) {
      ptr = nullptr;
    }
  }
  ~DeviceFloats() { (void)cudaFree(ptr); }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
};

std::vector<float> to_host(const float* dev, std::int64_t n) {
  std::vector<float> host(static_cast<std::size_t>(n));
  if (n > 0) {
    (void)cuda_ok(cudaMemcpy(host.data(), dev, host.size() * sizeof(float), cudaMemcpyDeviceToHost),
                  "copy to host");
  }
  return host;
}

// Names a configuration in mismatch reports; view offsets are in floats from an aligned allocation.
std::string label(const char* op, std::int64_t n, const std::string& views, int max_blocks) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), "%s n=%lld %s max_blocks=%d seed=%llu", op, static_cast<long long>(n),
                views.c_str(), max_blocks, static_cast<unsigned long long>(kSeed));
  return buf;
}

const std::int64_t kSizes[] = {0, 1, 3, 7, 31, 33, 65, 511, 1025, 4099, (1 << 16) + 5, (1 << 20) + 3};
const int kGridCaps[] = {1, 3, 64};

// Copies on every combination of size, view offsets (in floats) and grid cap.
void check_copy(cudaStream_t stream) {
  const int offsets[][2] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}, {2, 2}, {4, 4}, {3, 1}};
  int cases = 0;
  for (const std::int64_t n : kSizes) {
    const std::int64_t alloc = n + 2 * kPad;
    DeviceFloats src(alloc);
    DeviceFloats dst(alloc);
    if (!expect(src.ptr != nullptr && dst.ptr != nullptr, "cudaMalloc for copy")) {
      return;
    }
    if (!status_ok(rl::roofline_fill(src.ptr, alloc, kSeed, 16, stream), "roofline_fill")) {
      return;
    }
    const std::vector<float> src_host = to_host(src.ptr, alloc);
    ++g_checks; // the fill kernel against its host twin, element by element
    for (std::int64_t i = 0; i < alloc; ++i) {
      if (src_host[static_cast<std::size_t>(i)] != rl::roofline_fill_value(kSeed, i)) {
        fail("roofline_fill n=" + std::to_string(alloc) + ": element " + std::to_string(i));
        break;
      }
    }
    for (const auto& off : offsets) {
      for (const int grid_cap : kGridCaps) {
        if (n < 64 && grid_cap != kGridCaps[0]) {
          continue; // one block covers these sizes whatever the cap
        }
        const std::string what =
            label("copy", n, "src+" + std::to_string(off[0]) + " dst+" + std::to_string(off[1]), grid_cap);
        // Poison the whole destination: unwritten elements and writes outside the view both show.
        if (!cuda_ok(cudaMemset(dst.ptr, 0xff, static_cast<std::size_t>(alloc) * sizeof(float)), what)) {
          return;
        }
        culayers_emu::reset_byte_counters();
        if (!status_ok(rl::roofline_copy(dst.ptr + off[1], src.ptr + off[0], n, grid_cap, stream), what) ||
            !cuda_ok(cudaStreamSynchronize(stream), what)) {
          continue;
        }
        const culayers_emu::ByteCounters bytes = culayers_emu::byte_counters();
        const std::uint64_t model = static_cast<std::uint64_t>(n) * sizeof(float);
        expect(bytes.read == model && bytes.written == model,
               what + ": byte model: read " + std::to_string(bytes.read) + ", wrote " +
                   std::to_string(bytes.written) + ", want " + std::to_string(model) + " each");
        const std::vector<float> out = to_host(dst.ptr, alloc);
        std::uint32_t poison = 0;
        std::memset(&poison, 0xff, sizeof(poison));
        ++g_checks; // every element inside the view copied, every one outside untouched
        for (std::int64_t i = 0; i < alloc; ++i) {
          const std::int64_t j = i - off[1]; // index inside the view
          std::uint32_t got_bits = 0;
          std::memcpy(&got_bits, &out[static_cast<std::size_t>(i)], sizeof(got_bits));
          const bool inside = j >= 0 && j < n;
          const bool ok =
              inside ? out[static_cast<std::size_t>(i)] == src_host[static_cast<std::size_t>(j + off[0])]
                     : got_bits == poison;
          if (!ok) {
            fail(what + ": element " + std::to_string(j) + (inside ? " wrong" : " outside the view written"));
            break;
          }
        }
        ++cases;
      }
    }
  }
  std::printf("copy:    %d configurations (sizes 0..%lld, 7 view offsets, grid caps 1/3/64)\n", cases,
              static_cast<long long>(kSizes[sizeof(kSizes) / sizeof(kSizes[0]) - 1]));
}

// Sums on every combination of size, view offset and grid cap, against a double reference.
void check_reduce(cudaStream_t stream) {
  int cases = 0;
  for (const std::int64_t n : kSizes) {
    const std::int64_t alloc = n + 2 * kPad;
    DeviceFloats x(alloc);
    DeviceFloats out(2);
    DeviceFloats workspace(64 + 1);
    if (!expect(x.ptr != nullptr && out.ptr != nullptr && workspace.ptr != nullptr,
                "cudaMalloc for reduce")) {
      return;
    }
    if (!status_ok(rl::roofline_fill(x.ptr, alloc, kSeed + 1, 16, stream), "roofline_fill")) {
      return;
    }
    for (const int off : {0, 1, 2, 3}) {
      double ref = 0.0;
      double abs_sum = 0.0;
      for (std::int64_t i = 0; i < n; ++i) {
        const double v = rl::roofline_fill_value(kSeed + 1, i + off);
        ref += v;
        abs_sum += std::fabs(v);
      }
      for (const int grid_cap : kGridCaps) {
        if (n < 64 && grid_cap != kGridCaps[0]) {
          continue;
        }
        const std::string what = label("reduce_sum", n, "x+" + std::to_string(off), grid_cap);
        float got[2] = {0.0f, 0.0f};
        bool ran = true;
        for (int rep = 0; rep < 2 && ran; ++rep) {
          ran = cuda_ok(cudaMemset(out.ptr, 0xff, 2 * sizeof(float)), what);
          culayers_emu::reset_byte_counters();
          // Workspace at an odd float offset: only 4-byte alignment is required.
          ran = ran && status_ok(rl::roofline_reduce_sum(x.ptr + off, n, out.ptr, workspace.ptr + 1,
                                                         rl::roofline_reduce_workspace_bytes(grid_cap),
                                                         grid_cap, stream),
                                 what);
          ran = ran && cuda_ok(cudaMemcpy(&got[rep], out.ptr, sizeof(float), cudaMemcpyDeviceToHost), what);
        }
        if (!ran) {
          continue;
        }
        const culayers_emu::ByteCounters bytes = culayers_emu::byte_counters();
        // Byte model: x read once plus the partials (one float per block, written then read once),
        // and the result written once. The grid is at most grid_cap blocks.
        const std::uint64_t x_bytes = static_cast<std::uint64_t>(n) * sizeof(float);
        const std::uint64_t partial_bytes = bytes.written - sizeof(float);
        const bool bytes_ok = bytes.written >= 2 * sizeof(float) &&
                              partial_bytes <= static_cast<std::uint64_t>(grid_cap) * sizeof(float) &&
                              bytes.read == x_bytes + partial_bytes;
        expect(bytes_ok, what + ": byte model: read " + std::to_string(bytes.read) + ", wrote " +
                             std::to_string(bytes.written) + " (x is " + std::to_string(x_bytes) + " bytes)");
        const double tol = 1e-5 * abs_sum + 1e-6;
        char buf[160];
        std::snprintf(buf, sizeof(buf), ": got %.9g, want %.9g (tolerance %.3g)", static_cast<double>(got[0]),
                      ref, tol);
        expect(std::fabs(static_cast<double>(got[0]) - ref) <= tol, what + buf);
        expect(std::memcmp(&got[0], &got[1], sizeof(float)) == 0, what + ": two runs differ bitwise");
        ++cases;
      }
    }
  }
  std::printf("reduce:  %d configurations (sizes 0..%lld, 4 view offsets, grid caps 1/3/64)\n", cases,
              static_cast<long long>(kSizes[sizeof(kSizes) / sizeof(kSizes[0]) - 1]));
}

// Bad arguments are rejected with the documented status before anything is launched.
void check_validation(cudaStream_t stream) {
  DeviceFloats buf(16);
  const auto want = [](Status got, Status expected, const char* what) {
    expect(got == expected, std::string("validation: ") + what + ": got " + culayers::status_string(got));
  };
  want(rl::roofline_copy(nullptr, buf.ptr, 4, 1, stream), Status::kErrorNullPointer, "copy null dst");
  want(rl::roofline_copy(buf.ptr, buf.ptr + 8, -1, 1, stream), Status::kErrorInvalidValue, "copy n < 0");
  want(rl::roofline_copy(buf.ptr, buf.ptr + 8, 4, 0, stream), Status::kErrorInvalidValue,
       "copy max_blocks 0");
  want(rl::roofline_reduce_sum(buf.ptr, 4, buf.ptr + 8, buf.ptr + 9, 3, 1, stream),
       Status::kErrorWorkspaceTooSmall, "reduce workspace too small");
  want(rl::roofline_reduce_sum(buf.ptr, 4, nullptr, buf.ptr + 9, 4, 1, stream), Status::kErrorNullPointer,
       "reduce null out");
  want(rl::roofline_barrier(reinterpret_cast<unsigned*>(buf.ptr), 1, 1025, 1, stream),
       Status::kErrorInvalidValue, "barrier 1025 threads");
  std::printf("checks:  argument validation\n");
}

// The barrier kernel: results checked, then timed as the emulator's cost per context switch.
void check_barrier_and_cost(cudaStream_t stream) {
  // The emulator's reference workload: 64 blocks x 256 threads, 10 barriers (5 rounds of 2).
  const int blocks = 64;
  const int threads = 256;
  const int rounds = 5;
  const std::int64_t n = static_cast<std::int64_t>(blocks) * threads;
  DeviceFloats out(n);
  unsigned* dev = reinterpret_cast<unsigned*>(out.ptr);
  if (!status_ok(rl::roofline_barrier(dev, blocks, threads, rounds, stream), "roofline_barrier warm-up") ||
      !cuda_ok(cudaStreamSynchronize(stream), "roofline_barrier warm-up")) {
    return;
  }
  const culayers_emu::Stats before = culayers_emu::stats();
  const auto t0 = std::chrono::steady_clock::now();
  constexpr int kRuns = 5;
  for (int r = 0; r < kRuns; ++r) {
    if (!status_ok(rl::roofline_barrier(dev, blocks, threads, rounds, stream), "roofline_barrier")) {
      return;
    }
  }
  if (!cuda_ok(cudaStreamSynchronize(stream), "roofline_barrier")) {
    return;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const culayers_emu::Stats after = culayers_emu::stats();

  std::vector<unsigned> host(static_cast<std::size_t>(n));
  (void)cuda_ok(cudaMemcpy(host.data(), dev, host.size() * sizeof(unsigned), cudaMemcpyDeviceToHost),
                "barrier out");
  ++g_checks; // every thread's value
  for (std::int64_t i = 0; i < n; ++i) {
    const unsigned want = rl::roofline_barrier_expected(static_cast<int>(i % threads), threads, rounds);
    if (host[static_cast<std::size_t>(i)] != want) {
      fail("barrier: block " + std::to_string(i / threads) + " thread " + std::to_string(i % threads) +
           ": got " + std::to_string(host[static_cast<std::size_t>(i)]) + ", want " + std::to_string(want));
      break;
    }
  }
  const std::uint64_t switches = after.context_switches - before.context_switches;
  std::printf("barrier: %d blocks x %d threads x %d barriers checked\n", blocks, threads, 2 * rounds);
  std::printf("\nEmulator cost on this CPU (the CPU emulator: a correctness tool; these timings mean nothing "
              "for a GPU):\n");
  std::printf("  barrier kernel (%d blocks x %d threads, %d barriers): %.2f ms per launch\n", blocks, threads,
              2 * rounds, seconds * 1e3 / kRuns);
  if (switches > 0) {
    std::printf("  context switches: %" PRIu64
                " per launch, %.1f ns each (resume and return to the scheduler)\n",
                switches / kRuns, seconds * 1e9 / static_cast<double>(switches));
  } else {
    std::printf("  context switches: not counted by this emulator build\n");
  }
}

void report_copy_cost(cudaStream_t stream) {
  const std::int64_t n = std::int64_t{1} << 20;
  DeviceFloats src(n);
  DeviceFloats dst(n);
  if (!status_ok(rl::roofline_fill(src.ptr, n, kSeed, 16, stream), "fill")) {
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  if (!status_ok(rl::roofline_copy(dst.ptr, src.ptr, n, 64, stream), "copy") ||
      !cuda_ok(cudaStreamSynchronize(stream), "copy")) {
    return;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  roofline copy of %lld floats (64 blocks x %d threads): %.2f ms\n", static_cast<long long>(n),
              rl::kRooflineThreads, seconds * 1e3);
}

} // namespace

int main() {
  std::printf(
      "culayers_selfcheck: roofline kernels on the CPU emulator (culayers::emulated), checked against a\n"
      "double-precision CPU reference. This is the CPU emulator, not a GPU: it checks correctness;\n"
      "for GPU numbers build culayers_bench (scripts/gpu_build.sh) and run scripts/gpu_check.sh on a GPU.\n");
  std::printf("emulator: deferred streams %s, schedule seed %" PRIu64 "\n\n",
              culayers_emu::deferred() ? "on" : "off", culayers_emu::schedule_seed());
  cudaStream_t stream = nullptr;
  if (!cuda_ok(cudaStreamCreate(&stream), "cudaStreamCreate")) {
    return 1;
  }
  check_copy(stream);
  check_reduce(stream);
  check_validation(stream);
  check_barrier_and_cost(stream);
  report_copy_cost(stream);
  (void)cudaStreamDestroy(stream);

  std::printf("\n%s: %d checks, %d failed\n", g_failures == 0 ? "PASS" : "FAIL", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
