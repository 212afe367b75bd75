#include "bench/harness.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bench/cudnn_runtime.hpp"
#include "bench/kernels/roofline.hpp"

namespace culayers {
namespace bench {
namespace {

// Untimed runs before the first timed iteration of every repetition: first-launch costs (module load,
// page mapping of fresh allocations) stay out of the numbers.
constexpr int kWarmupRuns = 3;
// Blocks of the flush's read pass (roofline_reduce_sum): 16 per SM of a 132-SM card, enough to stream.
constexpr int kFlushBlocks = 2112;
// Runs behind each copy-reference number (the median is kept).
constexpr int kCopyReferenceRuns = 21;

std::string cuda_error_text(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")";
}

struct Events {
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  cudaError_t error = cudaSuccess;
};

const Events& events() {
  static const Events e = [] {
    Events ev;
    ev.error = cudaEventCreate(&ev.start);
    if (ev.error == cudaSuccess) {
      ev.error = cudaEventCreate(&ev.stop);
    }
    return ev;
  }();
  return e;
}

// Times one enqueue of `op` between the two events (after an L2 flush); returns milliseconds in *ms.
cudaError_t time_once(const TimedOp& op, cudaStream_t stream, float* ms, Status* status) {
  const Events& ev = events();
  if (ev.error != cudaSuccess) {
    return ev.error;
  }
  cudaError_t err = flush_l2(stream);
  if (err != cudaSuccess) {
    return err;
  }
  err = cudaEventRecord(ev.start, stream);
  if (err != cudaSuccess) {
    return err;
  }
  *status = op(stream);
  err = cudaEventRecord(ev.stop, stream);
  if (err != cudaSuccess) {
    return err;
  }
  err = cudaEventSynchronize(ev.stop);
  if (err != cudaSuccess) {
    return err;
  }
  return cudaEventElapsedTime(ms, ev.start, ev.stop);
}

// ---- self-test of the verifications (harness.hpp) ----

struct PerturbState {
  std::mutex mutex;
  int target = -1;      // K; -1: off
  int next = 0;         // outputs handed over so far by the verification in progress
  bool applied = false; // that verification's output K was perturbed
  std::string where;    // what was changed
  std::mt19937_64 rng{0x5e1f7e57ULL};
  std::vector<std::string> caught, missed, failed, not_applied, unavailable;
};

PerturbState& perturb_state() {
  static PerturbState state;
  return state;
}

double element_value(const unsigned char* bits, DType dtype) {
  switch (dtype) {
  case DType::kFloat32: {
    float v;
    std::memcpy(&v, bits, 4);
    return v;
  }
  case DType::kFloat16: {
    __half_raw raw;
    std::memcpy(&raw.x, bits, 2);
    return static_cast<double>(__half2float(__half(raw)));
  }
  case DType::kBFloat16: {
    __nv_bfloat16_raw raw;
    std::memcpy(&raw.x, bits, 2);
    return static_cast<double>(__bfloat162float(__nv_bfloat16(raw)));
  }
  case DType::kInt32: {
    std::int32_t v;
    std::memcpy(&v, bits, 4);
    return v;
  }
  case DType::kUInt8:
    return bits[0];
  case DType::kInt64: {
    std::int64_t v;
    std::memcpy(&v, bits, 8);
    return static_cast<double>(v);
  }
  }
  return 0.0;
}

std::string element_text(const unsigned char* bits, DType dtype) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.9g", element_value(bits, dtype));
  return buf;
}

// Floating point: v -> v + 1024 (1 + |v|) (NaN or infinity -> 0), a change no tolerance accepts; integers:
// every bit flipped.
void change_element(unsigned char* bits, DType dtype) {
  const double v = element_value(bits, dtype);
  const double changed = std::isfinite(v) ? v + 1024.0 * (1.0 + std::fabs(v)) : 0.0;
  switch (dtype) {
  case DType::kFloat32: {
    const float f = static_cast<float>(changed);
    std::memcpy(bits, &f, 4);
    return;
  }
  case DType::kFloat16: {
    const __half_raw raw = __half_raw(__float2half(static_cast<float>(changed)));
    std::memcpy(bits, &raw.x, 2);
    return;
  }
  case DType::kBFloat16: {
    const __nv_bfloat16_raw raw = __nv_bfloat16_raw(__float2bfloat16(static_cast<float>(changed)));
    std::memcpy(bits, &raw.x, 2);
    return;
  }
  case DType::kInt32:
  case DType::kUInt8:
  case DType::kInt64:
    for (std::size_t i = 0; i < dtype_size(dtype); ++i) {
      bits[i] = static_cast<unsigned char>(~bits[i]);
    }
    return;
  }
}

// The self-test's verdict on one verification (never empty: nothing is timed in this mode).
std::string judge_perturbed(const std::string& key, const std::string& result) {
  PerturbState& p = perturb_state();
  std::lock_guard<std::mutex> lock(p.mutex);
  if (result.rfind(kBaselineUnavailable, 0) == 0) {
    p.unavailable.push_back(key);
    return result;
  }
  if (p.applied && !result.empty()) {
    p.caught.push_back(key);
    return "self-test: caught (" + p.where + "): " + result;
  }
  if (p.applied) {
    p.missed.push_back(key);
    return "self-test: MISSED: " + p.where + ", and the verification passed";
  }
  if (!result.empty()) {
    p.failed.push_back(key);
    return "self-test: FAILED with nothing perturbed: " + result;
  }
  p.not_applied.push_back(key);
  return "self-test: no output " + std::to_string(p.target) + " here (its verification passed)";
}

} // namespace

const DeviceInfo& device_info() {
  static const DeviceInfo info = [] {
    DeviceInfo d;
    std::string reason;
    if (!gpu_visible(&reason)) {
      d.error = reason;
      return d;
    }
    cudaError_t err = cudaGetDevice(&d.device);
    if (err == cudaSuccess) {
      err = cudaGetDeviceProperties(&d.prop, d.device);
    }
    if (err != cudaSuccess) {
      d.error = "cudaGetDeviceProperties: " + cuda_error_text(err);
      return d;
    }
    // Best effort: a missing attribute leaves 0, which add_context reports as unknown.
    (void)cudaDriverGetVersion(&d.driver_version);
    (void)cudaRuntimeGetVersion(&d.runtime_version);
    (void)cudaDeviceGetAttribute(&d.sm_clock_khz, cudaDevAttrClockRate, d.device);
    (void)cudaDeviceGetAttribute(&d.mem_clock_khz, cudaDevAttrMemoryClockRate, d.device);
    (void)cudaDeviceGetAttribute(&d.bus_width_bits, cudaDevAttrGlobalMemoryBusWidth, d.device);
    (void)cudaGetLastError();
    d.ok = true;
    return d;
  }();
  return info;
}

std::string cuda_version_string(int version) {
  if (version <= 0) {
    return "unknown";
  }
  return std::to_string(version / 1000) + "." + std::to_string((version % 1000) / 10);
}

bool gpu_visible(std::string* reason) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (reason != nullptr) {
      *reason = "cudaGetDeviceCount: " + cuda_error_text(err);
    }
    (void)cudaGetLastError();
    return false;
  }
  if (count == 0) {
    if (reason != nullptr) {
      *reason = "cudaGetDeviceCount reports 0 devices";
    }
    return false;
  }
  return true;
}

int max_blocks(int blocks_per_sm) {
  const DeviceInfo& d = device_info();
  const int sms = d.ok ? d.prop.multiProcessorCount : 1;
  return std::max(1, sms * blocks_per_sm);
}

cudaStream_t bench_stream() {
  static cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
      (void)cudaGetLastError();
      s = nullptr; // the legacy default stream still works
    }
    return s;
  }();
  return stream;
}

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  if (bytes > 0) {
    error_ = cudaMalloc(&ptr_, bytes);
    if (error_ != cudaSuccess) {
      ptr_ = nullptr;
      (void)cudaGetLastError();
    }
  }
}

DeviceBuffer::~DeviceBuffer() {
  reset();
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)),
      error_(std::exchange(other.error_, cudaSuccess)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    error_ = std::exchange(other.error_, cudaSuccess);
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (ptr_ != nullptr) {
    (void)cudaFree(ptr_);
  }
  ptr_ = nullptr;
  bytes_ = 0;
  error_ = cudaSuccess;
}

bool check_cuda(benchmark::State& state, cudaError_t err, const char* what) {
  if (err == cudaSuccess) {
    return true;
  }
  const std::string msg = std::string(what) + ": " + cuda_error_text(err);
  (void)cudaGetLastError();
  state.SkipWithError(msg.c_str());
  return false;
}

bool check_status(benchmark::State& state, Status status, const char* what) {
  if (status == Status::kSuccess) {
    return true;
  }
  const std::string msg = std::string(what) + ": " + status_string(status) + ": " + last_error_message();
  state.SkipWithError(msg.c_str());
  return false;
}

bool check_buffer(benchmark::State& state, const DeviceBuffer& buffer, const char* what) {
  if (buffer.ok()) {
    return true;
  }
  const std::string msg = std::string("cudaMalloc(") + std::to_string(buffer.bytes()) + " bytes) for " +
                          what + ": " + cuda_error_text(buffer.error());
  state.SkipWithError(msg.c_str());
  return false;
}

std::string verify_cached(const std::string& key, const std::function<std::string()>& verify) {
  static std::mutex mutex;
  static std::map<std::string, std::string> results;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = results.find(key);
  if (it == results.end()) {
    perturb_begin();
    std::string r = verify();
    if (perturb_enabled()) {
      r = judge_perturbed(key, r);
    }
    it = results.emplace(key, std::move(r)).first;
    if (it->second.rfind(kBaselineUnavailable, 0) == 0 || perturb_enabled()) {
      std::fprintf(stderr, "%s: %s\n", key.c_str(), it->second.c_str());
    } else if (!it->second.empty()) {
      std::fprintf(stderr, "verification FAILED for %s: %s\n", key.c_str(), it->second.c_str());
    }
  }
  return it->second;
}

bool verify_once(benchmark::State& state, const std::string& key,
                 const std::function<std::string()>& verify) {
  const std::string result = verify_cached(key, verify);
  if (result.empty()) {
    return true;
  }
  // A baseline that cannot run here keeps its marker first (scripts/gpu_check.sh counts those apart); so
  // does the self-test's verdict.
  const std::string msg = result.rfind(kBaselineUnavailable, 0) == 0 || perturb_enabled()
                              ? result
                              : "verification failed: " + result;
  state.SkipWithError(msg.c_str());
  return false;
}

void set_perturb_output(int k) {
  PerturbState& p = perturb_state();
  std::lock_guard<std::mutex> lock(p.mutex);
  p.target = k < 0 ? -1 : k;
  p.next = 0;
  p.applied = false;
  p.where.clear();
  for (std::vector<std::string>* v : {&p.caught, &p.missed, &p.failed, &p.not_applied, &p.unavailable}) {
    v->clear();
  }
}

bool perturb_enabled() {
  PerturbState& p = perturb_state();
  std::lock_guard<std::mutex> lock(p.mutex);
  return p.target >= 0;
}

void perturb_begin() {
  PerturbState& p = perturb_state();
  std::lock_guard<std::mutex> lock(p.mutex);
  p.next = 0;
  p.applied = false;
  p.where.clear();
}

bool perturb_applied() {
  PerturbState& p = perturb_state();
  std::lock_guard<std::mutex> lock(p.mutex);
  return p.applied;
}

std::string perturb_output(void* device, DType dtype, std::int64_t count) {
  PerturbState& p = perturb_state();
  std::lock_guard<std::mutex> lock(p.mutex);
  if (p.target < 0 || p.next++ != p.target || count <= 0) {
    return {}; // not output K, or an empty output (nothing to change)
  }
  if (device == nullptr) { // a verification that lost track of its output: a failure, not "no output K"
    return "self-test: output " + std::to_string(p.target) + " (" + std::to_string(count) +
           " elements) has a null pointer";
  }
  const std::size_t size = dtype_size(dtype);
  if (size == 0 || size > 8) {
    return "self-test: cannot perturb an output of dtype " + std::to_string(static_cast<int>(dtype));
  }
  const std::int64_t at = std::uniform_int_distribution<std::int64_t>(0, count - 1)(p.rng);
  unsigned char* element = static_cast<unsigned char*>(device) + static_cast<std::size_t>(at) * size;
  unsigned char bits[8] = {};
  cudaStream_t stream = bench_stream();
  cudaError_t err = cudaMemcpyAsync(bits, element, size, cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) {
    err = cudaStreamSynchronize(stream);
  }
  if (err != cudaSuccess) {
    return "self-test: reading the element to perturb: " + cuda_error_text(err);
  }
  const std::string before = element_text(bits, dtype);
  change_element(bits, dtype);
  const std::string after = element_text(bits, dtype);
  err = cudaMemcpyAsync(element, bits, size, cudaMemcpyHostToDevice, stream);
  if (err == cudaSuccess) {
    err = cudaStreamSynchronize(stream); // `bits` lives on this frame
  }
  if (err != cudaSuccess) {
    return "self-test: writing the perturbed element: " + cuda_error_text(err);
  }
  p.applied = true;
  p.where = "output " + std::to_string(p.target) + ", element " + std::to_string(at) + " of " +
            std::to_string(count) + ": " + before + " -> " + after;
  return {};
}

bool perturb_report() {
  PerturbState& p = perturb_state();
  std::lock_guard<std::mutex> lock(p.mutex);
  const auto list = [](const char* what, const std::vector<std::string>& keys) {
    std::printf("  %-44s %zu\n", what, keys.size());
    for (const std::string& k : keys) {
      std::printf("    %s\n", k.c_str());
    }
  };
  std::printf("self-test of the verifications (output %d perturbed):\n", p.target);
  std::printf("  %-44s %zu\n", "caught (the verification failed, as it must)", p.caught.size());
  list("MISSED (a perturbed output passed)", p.missed);
  list("FAILED with nothing perturbed", p.failed);
  std::printf("  %-44s %zu\n", "no such output (not exercised)", p.not_applied.size());
  std::printf("  %-44s %zu\n", "baseline unavailable", p.unavailable.size());
  const bool ok = p.missed.empty() && p.failed.empty() && !p.caught.empty();
  std::printf("self-test: %s\n", ok ? "passed"
                                    : (p.caught.empty() && p.missed.empty() && p.failed.empty()
                                           ? "FAILED (no verification was exercised)"
                                           : "FAILED"));
  return ok;
}

std::size_t l2_flush_bytes() {
  const DeviceInfo& d = device_info();
  const std::size_t l2 =
      d.ok && d.prop.l2CacheSize > 0 ? static_cast<std::size_t>(d.prop.l2CacheSize) : std::size_t{64} << 20;
  return 2 * l2;
}

cudaError_t flush_l2(cudaStream_t stream) {
  // The memset evicts the op's lines but leaves L2 full of its own dirty ones, whose write-back would overlap
  // the timed op (a cost that grows with the distinct bytes a case touches, so baselines with temporaries
  // paid more of it). A read-only pass over a second, never-written buffer then replaces them with clean
  // lines, and their write-back happens here, outside the timed region. (The second buffer is written once,
  // at the first flush.)
  static DeviceBuffer buffer(l2_flush_bytes());
  static DeviceBuffer clean(l2_flush_bytes());
  static DeviceBuffer partials(roofline_reduce_workspace_bytes(kFlushBlocks) + sizeof(float));
  static const cudaError_t clean_init = [] {
    if (!clean.ok()) {
      return clean.error();
    }
    const cudaError_t e = cudaMemset(clean.data(), 0, clean.bytes());
    return e != cudaSuccess ? e : cudaDeviceSynchronize();
  }();
  static unsigned char value = 0;
  if (!buffer.ok()) {
    return buffer.error();
  }
  if (!partials.ok()) {
    return partials.error();
  }
  if (clean_init != cudaSuccess) {
    return clean_init;
  }
  // A different byte each time, so no layer can skip the writes as redundant.
  ++value;
  if (const cudaError_t e = cudaMemsetAsync(buffer.data(), value, buffer.bytes(), stream); e != cudaSuccess) {
    return e;
  }
  auto* out = reinterpret_cast<float*>(static_cast<unsigned char*>(partials.data()) +
                                       roofline_reduce_workspace_bytes(kFlushBlocks));
  const Status s = roofline_reduce_sum(
      static_cast<const float*>(clean.data()), static_cast<std::int64_t>(clean.bytes() / sizeof(float)), out,
      partials.data(), roofline_reduce_workspace_bytes(kFlushBlocks), kFlushBlocks, stream);
  if (s != Status::kSuccess) {
    std::fprintf(stderr, "flush_l2: roofline_reduce_sum: %s\n", last_error_message());
    return cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}

double median_time_ms(const TimedOp& op, int runs, std::string* error) {
  cudaStream_t stream = bench_stream();
  std::vector<float> ms;
  for (int i = 0; i < kWarmupRuns + runs; ++i) {
    float t = 0.0f;
    Status status = Status::kSuccess;
    const cudaError_t err = time_once(op, stream, &t, &status);
    if (err != cudaSuccess || status != Status::kSuccess) {
      if (error != nullptr) {
        *error = err != cudaSuccess ? cuda_error_text(err)
                                    : std::string(status_string(status)) + ": " + last_error_message();
      }
      (void)cudaGetLastError();
      return 0.0;
    }
    if (i >= kWarmupRuns) {
      ms.push_back(t);
    }
  }
  if (ms.empty()) {
    if (error != nullptr) {
      *error = "no timed run";
    }
    return 0.0;
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return static_cast<double>(ms[ms.size() / 2]);
}

double copy_reference_gbps(std::uint64_t bytes_moved) {
  static std::mutex mutex;
  static std::map<std::uint64_t, double> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const auto it = cache.find(bytes_moved);
  if (it != cache.end()) {
    return it->second;
  }
  double gbps = 0.0;
  const std::size_t half = static_cast<std::size_t>((bytes_moved + 1) / 2);
  DeviceBuffer src(half);
  DeviceBuffer dst(half);
  if (half > 0 && src.ok() && dst.ok() &&
      cudaMemsetAsync(src.data(), 0x5a, half, bench_stream()) == cudaSuccess) {
    const TimedOp copy = [&](cudaStream_t s) {
      return cudaMemcpyAsync(dst.data(), src.data(), half, cudaMemcpyDeviceToDevice, s) == cudaSuccess
                 ? Status::kSuccess
                 : Status::kErrorCudaRuntime;
    };
    const double median_ms = median_time_ms(copy, kCopyReferenceRuns, nullptr);
    if (median_ms > 0.0) {
      gbps = 2.0 * static_cast<double>(half) / (median_ms * 1e-3) * 1e-9;
    }
  }
  (void)cudaGetLastError();
  cache.emplace(bytes_moved, gbps);
  return gbps;
}

void run_timed(benchmark::State& state, std::uint64_t bytes_moved, const TimedOp& op) {
  cudaStream_t stream = bench_stream();
  // Measured first, so its allocations and runs never overlap the op's timed region.
  const double copy_gbps = copy_reference_gbps(bytes_moved);

  for (int i = 0; i < kWarmupRuns; ++i) {
    if (!check_status(state, op(stream), "warm-up run")) {
      return;
    }
  }
  if (!check_cuda(state, cudaStreamSynchronize(stream), "warm-up synchronize")) {
    return;
  }

  double total_s = 0.0;
  std::int64_t iterations = 0;
  for (auto _ : state) {
    float ms = 0.0f;
    Status status = Status::kSuccess;
    const cudaError_t err = time_once(op, stream, &ms, &status);
    if (!check_status(state, status, "timed run") || !check_cuda(state, err, "timed run")) {
      break;
    }
    const double s = static_cast<double>(ms) * 1e-3;
    state.SetIterationTime(s);
    total_s += s;
    ++iterations;
  }
  if (state.error_occurred() || iterations == 0 || total_s <= 0.0) {
    return;
  }
  const double mean_s = total_s / static_cast<double>(iterations);
  const double gbps = static_cast<double>(bytes_moved) / mean_s * 1e-9;
  state.counters["bytes"] = benchmark::Counter(static_cast<double>(bytes_moved));
  // Computed here, not with Counter::kIsRate: the library divides rates by CPU time, which under
  // manual (GPU event) timing is host time, not device time.
  state.counters["GB/s"] = benchmark::Counter(gbps);
  if (copy_gbps > 0.0) {
    state.counters["pct_of_copy"] = benchmark::Counter(100.0 * gbps / copy_gbps);
  }
}

void add_context() {
  const DeviceInfo& d = device_info();
  if (!d.ok) {
    benchmark::AddCustomContext("culayers_device", "unavailable: " + d.error);
    return;
  }
  const auto mib = [](double bytes) { return std::to_string(static_cast<long long>(bytes / 1048576.0)); };
  benchmark::AddCustomContext("culayers_card", d.prop.name);
  benchmark::AddCustomContext("culayers_compute_capability",
                              std::to_string(d.prop.major) + "." + std::to_string(d.prop.minor));
  benchmark::AddCustomContext("culayers_driver_cuda_version", cuda_version_string(d.driver_version));
  benchmark::AddCustomContext("culayers_runtime_version", cuda_version_string(d.runtime_version));
  benchmark::AddCustomContext("culayers_sm_count", std::to_string(d.prop.multiProcessorCount));
  benchmark::AddCustomContext("culayers_l2_bytes", std::to_string(d.prop.l2CacheSize));
  benchmark::AddCustomContext("culayers_global_memory_mib", mib(static_cast<double>(d.prop.totalGlobalMem)));
  benchmark::AddCustomContext("culayers_memory_bus_bits", std::to_string(d.bus_width_bits));
  const auto mhz = [](int khz) {
    return khz > 0 ? std::to_string(khz / 1000) + " MHz" : std::string("unknown");
  };
  benchmark::AddCustomContext("culayers_clocks",
                              "peak SM " + mhz(d.sm_clock_khz) + ", peak memory " + mhz(d.mem_clock_khz) +
                                  " (device attributes); clocks are neither locked nor changed by this "
                                  "benchmark: the card runs as found (scripts/gpu_check.sh records "
                                  "nvidia-smi -q -d CLOCK with the results)");
  // cuDNN is loaded only by the cases that use it (a broken install then fails those alone), so its
  // version is in their labels rather than here.
#if CULAYERS_BENCH_HAVE_CUDNN
  benchmark::AddCustomContext("culayers_cudnn",
                              "loaded at first use by the cuDNN cases; their labels name its version");
#else
  benchmark::AddCustomContext("culayers_cudnn", "not built in (no cudnn.h at build time)");
#endif
  benchmark::AddCustomContext("culayers_l2_flush",
                              "cudaMemsetAsync over " + mib(static_cast<double>(l2_flush_bytes())) +
                                  " MiB (2 x L2), then a read-only roofline_reduce_sum over another " +
                                  mib(static_cast<double>(l2_flush_bytes())) +
                                  " MiB, before every timed iteration, outside the timed region");
  benchmark::AddCustomContext(
      "culayers_timing", "CUDA events around each iteration (manual time), " + std::to_string(kWarmupRuns) +
                             " untimed warm-up runs per repetition; report the median over repetitions");
  benchmark::AddCustomContext(
      "culayers_counters",
      "bytes = byte model (inputs read once, outputs written once); GB/s = 1e9 bytes/s from the mean "
      "iteration time of a repetition; pct_of_copy = GB/s as % of a cudaMemcpyAsync device-to-device copy "
      "moving the same bytes (read + write), median of " +
          std::to_string(kCopyReferenceRuns) + " L2-flushed runs in this process");
}

void parallel_for(std::int64_t n, std::int64_t grain,
                  const std::function<void(std::int64_t, std::int64_t)>& body) {
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const std::int64_t parts =
      std::min<std::int64_t>(hw, std::max<std::int64_t>(1, n / std::max<std::int64_t>(1, grain)));
  std::vector<std::thread> threads;
  for (std::int64_t p = 0; p < parts; ++p) {
    threads.emplace_back([&, p] { body(n * p / parts, n * (p + 1) / parts); });
  }
  for (auto& t : threads) {
    t.join();
  }
}

std::int64_t first_index_where(std::int64_t n, std::int64_t grain,
                               const std::function<bool(std::int64_t)>& pred) {
  std::atomic<std::int64_t> first{n};
  parallel_for(n, grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end && i < first.load(); ++i) {
      if (pred(i)) {
        std::int64_t seen = first.load();
        while (i < seen && !first.compare_exchange_weak(seen, i)) {
        }
        return;
      }
    }
  });
  return first.load();
}

std::int64_t iterations_for(std::uint64_t bytes) {
  const double estimate_s = std::max(static_cast<double>(bytes) / 2.5e12, 5e-6);
  return std::clamp<std::int64_t>(std::llround(0.02 / estimate_s), 20, 200);
}

void configure(benchmark::internal::Benchmark* b) {
  b->UseManualTime();
  b->Unit(benchmark::kMicrosecond);
  b->ReportAggregatesOnly(true);
}

std::vector<std::int64_t> roofline_byte_sizes() {
  return {std::int64_t{64} << 20, std::int64_t{256} << 20, std::int64_t{1024} << 20};
}

} // namespace bench
} // namespace culayers
