// Benchmark harness shared by every culayers benchmark (Google Benchmark + CUDA events).
//
// Method (bench/results/README.md explains it next to the results):
// - Time with CUDA events around each iteration (UseManualTime + SetIterationTime), after a few
//   untimed warm-up runs.
// - Flush L2 before every timed iteration, outside the timed region: write a buffer of twice the L2 size
//   (cudaMemsetAsync), then read another of the same size that is written only once at start-up
//   (roofline_reduce_sum), so no iteration reads a previous iteration's data from cache and no dirty line
//   is left to be written back while the op runs.
// - Verify every configuration against a CPU reference once, before timing it; a mismatch skips the
//   benchmark with an error (state.SkipWithError).
// - Counters: bytes (the op's byte model: each input read once, each output written once), GB/s
//   (1e9 bytes per second) and pct_of_copy (GB/s as a percentage of a cudaMemcpyAsync device-to-device
//   copy that moves the same number of bytes, measured once per byte count in the same process).
// - Repetitions with aggregates only (median, mean, stddev, cv); the median is the number to quote.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <culayers/status.hpp>
#include <culayers/types.hpp>

namespace culayers {
namespace bench {

// Device 0's properties, queried once. ok == false when no device is usable (error says why).
struct DeviceInfo {
  bool ok = false;
  std::string error;
  int device = 0;
  cudaDeviceProp prop{};
  int driver_version = 0;  // cudaDriverGetVersion: 1000 * major + 10 * minor
  int runtime_version = 0; // cudaRuntimeGetVersion
  int sm_clock_khz = 0;    // peak SM clock (cudaDevAttrClockRate)
  int mem_clock_khz = 0;   // peak memory clock (cudaDevAttrMemoryClockRate)
  int bus_width_bits = 0;
};
const DeviceInfo& device_info();

// "13.0" from 13000.
std::string cuda_version_string(int version);

// True when cudaGetDeviceCount succeeds with at least one device; otherwise *reason says why.
bool gpu_visible(std::string* reason);

// Grid cap for grid-stride kernels: blocks_per_sm blocks on each SM of device 0.
int max_blocks(int blocks_per_sm = 8);

// The stream every benchmark enqueues on (created once, non-blocking).
cudaStream_t bench_stream();

// Owns one cudaMalloc allocation. Never throws: check ok() (error() has the CUDA error).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;

  bool ok() const { return error_ == cudaSuccess && (ptr_ != nullptr || bytes_ == 0); }
  cudaError_t error() const { return error_; }
  std::size_t bytes() const { return bytes_; }
  void* data() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  void reset();

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
  cudaError_t error_ = cudaSuccess;
};

// Each returns true on success; otherwise calls state.SkipWithError with "<what>: <reason>" and returns
// false (the benchmark function should return).
bool check_cuda(benchmark::State& state, cudaError_t err, const char* what);
bool check_status(benchmark::State& state, Status status, const char* what);
bool check_buffer(benchmark::State& state, const DeviceBuffer& buffer, const char* what);

// Runs `verify` the first time `key` is seen in this process and remembers its result: an empty string
// means the configuration matches its CPU reference; anything else is the mismatch description. Returns
// false (after state.SkipWithError) for a configuration that failed, now or earlier. A result starting with
// kBaselineUnavailable (bench/cudnn_runtime.hpp) is reported as it is: the baseline cannot run here.
bool verify_once(benchmark::State& state, const std::string& key, const std::function<std::string()>& verify);
// verify_once's result without a benchmark state: "" when the configuration verified, else the (remembered)
// description; in self-test mode the verdict below.
std::string verify_cached(const std::string& key, const std::function<std::string()>& verify);

// ---- self-test of the verifications (culayers_bench --culayers_perturb=K) ------------------------------
// A verification that cannot fail would let a wrong kernel be timed and reported. In self-test mode every
// verification hands each output it checks to perturb_output() right after the op wrote it (before the
// comparison with the reference reads it back; a run-to-run snapshot is taken before it), numbered from 0 in
// that order; output K gets one element, at a random position (fixed
// seed), changed by far more than any tolerance (v -> v + 1024 (1 + |v|); a NaN or infinity -> 0). The
// verification must then fail. verify_cached turns the outcome round: a failure with output K perturbed is
// the expected result ("self-test: caught"), a pass is an error ("self-test: MISSED"); a verification with
// no output K, or one that failed before its perturbation, is reported apart. Nothing is timed in this
// mode. main() prints the tally (perturb_report) and exits non-zero when a perturbation was missed, a
// verification failed unperturbed, or nothing was caught (scripts/gpu_check.sh also fails a run in which a
// case errored outside its verification, e.g. in set-up). The device-to-device copies and the roofline
// kernels are not in it: they trust cudaMemcpyAsync and their own checks (some read windows of the output).
//
// Turns the self-test on for output k (off for k < 0) and clears its tally.
void set_perturb_output(int k);
bool perturb_enabled();
// Starts the numbering of one verification's outputs (verify_cached calls it; run_fastest_candidate before
// each candidate's verify()).
void perturb_begin();
// True when output K of the verification in progress was perturbed.
bool perturb_applied();
// Perturbs `device` (count elements of `dtype`) when it is output K of the verification in progress; a
// no-op otherwise. "" on success, else the CUDA error.
std::string perturb_output(void* device, DType dtype, std::int64_t count);
// Prints the self-test tally to stdout; true when the self-test passed.
bool perturb_report();

// Runs body(begin, end) over [0, n) in up to one part per host core, each part at least `grain` long (the
// CPU references of the verifications).
void parallel_for(std::int64_t n, std::int64_t grain,
                  const std::function<void(std::int64_t, std::int64_t)>& body);

// The smallest i in [0, n) with pred(i) true, or n when there is none; pred runs on all host cores (parts of
// at least `grain`), each part stopping at its first hit or once a smaller hit is known.
std::int64_t first_index_where(std::int64_t n, std::int64_t grain,
                               const std::function<bool(std::int64_t)>& pred);

// Writes 2 x L2 bytes (cudaMemsetAsync) on `stream`, then reads 2 x L2 clean bytes: evicts whatever the
// previous iteration left in L2 and leaves only clean lines.
cudaError_t flush_l2(cudaStream_t stream);
std::size_t l2_flush_bytes();

// One timed run of the op under test, enqueued on the given stream.
using TimedOp = std::function<Status(cudaStream_t)>;

// The benchmark loop: warm-up runs, then per iteration an L2 flush, a start event, op, a stop event and
// SetIterationTime(elapsed). Sets the counters bytes, GB/s and pct_of_copy for bytes_moved bytes.
void run_timed(benchmark::State& state, std::uint64_t bytes_moved, const TimedOp& op);

// Median milliseconds of `runs` L2-flushed, event-timed runs of `op` on bench_stream(), after the warm-up
// runs. Returns 0 on failure (*error, when given, says why). For choices made before timing (the copy
// reference, the fastest of a baseline's candidates), not for the reported numbers.
double median_time_ms(const TimedOp& op, int runs, std::string* error);

// GB/s of a cudaMemcpyAsync device-to-device copy moving `bytes_moved` bytes in total (bytes_moved / 2
// read plus bytes_moved / 2 written), median of several L2-flushed runs, cached per byte count.
// Returns 0 when it cannot be measured (e.g. out of memory).
double copy_reference_gbps(std::uint64_t bytes_moved);

// Adds the run's context (card, driver, runtime, SMs, L2, clocks, method) to the benchmark output.
void add_context();

// A fixed iteration count per repetition for an op moving `bytes`: about 20 ms of device time at 2.5 TB/s,
// between 20 and 200 (small shapes run for microseconds, and timing them until 0.1 s of device time
// accumulates would take tens of thousands of flush + synchronize round trips). Use with ->Iterations().
std::int64_t iterations_for(std::uint64_t bytes);

// Per-benchmark defaults: manual time, microseconds, aggregates only. Use with ->Apply(configure).
void configure(benchmark::internal::Benchmark* b);

// Byte sizes used by the roofline cases: 64 MiB, 256 MiB, 1 GiB (of input).
std::vector<std::int64_t> roofline_byte_sizes();

} // namespace bench
} // namespace culayers
