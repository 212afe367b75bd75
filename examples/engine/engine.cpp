// culayers_engine_example: an inference engine calling culayers ops directly, with no layer front end.
//
// The engine owns everything: its stream, its device buffers (cudaMalloc, once, at setup) and one
// workspace sized for the largest op. For a padded batch of sequences x (B, T, F) with per-sequence
// lengths, one step enqueues on the engine's stream:
//   1. group normalization over the F channels (channels last, G groups) with a fused SiLU, whose
//      statistics skip the padded time steps (uint8 mask [B, T] derived from the lengths);
//   2. dropout with a device-resident DropoutState and a (B, 1, F) noise shape (one mask per sequence,
//      shared by its time steps), writing the keep mask too;
//   3. masked mean pooling over time with the int32 lengths (padded steps skipped, empty sequences
//      filled with 0, out-of-range lengths clamped and counted on the device);
//   4. the dropout update op, which advances the schedule on the device.
// Every op's arguments are checked with can_implement and sized with workspace_size once, at setup; the
// step itself only enqueues (no allocation, no synchronization). Step 0 runs eagerly; the same step is
// then captured into a CUDA graph and replayed as step 1, which draws a fresh dropout mask with no host
// involvement. After each step the results are copied back and checked against a small host
// computation.
//
// Built twice: culayers_engine_example runs on the CPU emulator (culayers::emulated);
// culayers_engine_example_cuda is the same program on a GPU (culayers::culayers). Exit status 0 when
// every check passed, 1 otherwise.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include <culayers/culayers.hpp>

namespace {

using culayers::DType;
using culayers::Shape;
using culayers::Status;
namespace dropout = culayers::dropout;
namespace gn = culayers::group_norm;
namespace mr = culayers::masked_reduce;

// The batch: B sequences of up to T steps of F features. Lengths include an empty sequence and one
// longer than T (clamped to T by the ops; the pooling counts it in its length_errors output).
constexpr std::int64_t kBatch = 4;
constexpr std::int64_t kSteps = 6;
constexpr std::int64_t kFeatures = 8;
constexpr std::int64_t kGroups = 2;
constexpr float kEpsilon = 1e-3f;
constexpr double kKeepRate = 0.75;
constexpr std::uint64_t kSeed = 1234;
const std::int32_t kLengths[kBatch] = {6, 3, 0, 9};

constexpr std::int64_t kElements = kBatch * kSteps * kFeatures;
constexpr std::int64_t kStats = kBatch * kGroups;

int g_failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++g_failures;
    std::printf("  FAILED: %s\n", what.c_str());
  }
}

bool cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    ++g_failures;
    std::printf("  FAILED: %s: %s (%s)\n", what, cudaGetErrorName(e), cudaGetErrorString(e));
    return false;
  }
  return true;
}

bool status_ok(Status s, const char* what) {
  if (!culayers::ok(s)) {
    ++g_failures;
    std::printf("  FAILED: %s: %s: %s\n", what, culayers::status_string(s), culayers::last_error_message());
    return false;
  }
  return true;
}

/// |got - want| <= atol + rtol * |want|, or both NaN.
bool close(double got, double want, double atol, double rtol) {
  if (std::isnan(want) || std::isnan(got)) {
    return std::isnan(want) && std::isnan(got);
  }
  return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

/// The same bits, or both NaN (a GPU may return another NaN payload).
bool same_float(float got, float want) {
  if (std::isnan(want) || std::isnan(got)) {
    return std::isnan(want) && std::isnan(got);
  }
  return std::memcmp(&got, &want, sizeof(float)) == 0;
}

std::int32_t clamped_length(std::int64_t b) {
  return std::min<std::int32_t>(std::max<std::int32_t>(kLengths[b], 0), static_cast<std::int32_t>(kSteps));
}

/// The engine's device memory: every buffer allocated once at setup, freed at exit.
struct DeviceMemory {
  std::vector<void*> blocks;

  template <class T>
  bool allocate(T** ptr, std::size_t count, const char* what) {
    void* p = nullptr;
    if (!cuda_ok(cudaMalloc(&p, std::max<std::size_t>(count, 1) * sizeof(T)), what)) {
      return false;
    }
    blocks.push_back(p);
    *ptr = static_cast<T*>(p);
    return true;
  }
  ~DeviceMemory() {
    for (void* p : blocks) {
      (void)cudaFree(p);
    }
  }
};

/// Device buffers of one step.
struct Buffers {
  float* x = nullptr;              // (B, T, F) input
  std::uint8_t* mask = nullptr;    // (B, T) validity from the lengths
  std::int32_t* lengths = nullptr; // (B)
  float* gamma = nullptr;          // (F)
  float* beta = nullptr;           // (F)
  float* normalized = nullptr;     // (B, T, F) group norm + SiLU
  float* mean = nullptr;           // (B, G)
  float* rstd = nullptr;           // (B, G)
  float* dropped = nullptr;        // (B, T, F) after dropout
  std::uint8_t* keep = nullptr;    // (B, T, F) dropout keep mask
  dropout::DropoutState* state = nullptr;
  float* pooled = nullptr;        // (B, F) masked mean over T
  std::int32_t* counts = nullptr; // (B) valid steps per sequence
  std::uint32_t* length_errors = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
};

/// The arguments of the step's ops, filled once at setup.
struct StepArgs {
  gn::GroupNormArgs norm;
  dropout::DropoutForwardArgs drop;
  mr::MaskedReduceArgs pool;
  dropout::DropoutUpdateArgs update;
};

StepArgs make_step_args(const Buffers& d) {
  StepArgs a;
  a.norm.dtype = DType::kFloat32;
  a.norm.layout = culayers::Layout::kChannelsLast; // x is [N, spatial = T, C = F]
  a.norm.x = d.x;
  a.norm.batch = kBatch;
  a.norm.channels = kFeatures;
  a.norm.spatial = kSteps;
  a.norm.groups = kGroups;
  a.norm.epsilon = kEpsilon;
  a.norm.gamma = d.gamma;
  a.norm.beta = d.beta;
  a.norm.activation = gn::Activation::kSiLU;
  a.norm.mask = d.mask;
  a.norm.y = d.normalized;
  a.norm.mean = d.mean;
  a.norm.rstd = d.rstd;

  a.drop.x = d.normalized;
  a.drop.y = d.dropped;
  a.drop.dtype = DType::kFloat32;
  a.drop.shape = Shape{kBatch, kSteps, kFeatures};
  a.drop.noise_shape = Shape{kBatch, 1, kFeatures};
  a.drop.state = d.state;
  a.drop.mask = d.keep;

  a.pool.op = mr::ReduceOp::kMean;
  a.pool.dtype = DType::kFloat32;
  a.pool.x = d.dropped;
  a.pool.outer = kBatch;
  a.pool.reduce = kSteps;
  a.pool.inner = kFeatures;
  a.pool.validity = mr::Validity::kLengths;
  a.pool.lengths = d.lengths;
  a.pool.length_errors = d.length_errors;
  a.pool.out = d.pooled;
  a.pool.counts = d.counts;

  a.update.state = d.state;
  return a;
}

/// Enqueues one step on `stream`: only launches and a 4-byte memset, so it can be captured.
bool enqueue_step(const StepArgs& a, const Buffers& d, cudaStream_t stream) {
  return cuda_ok(cudaMemsetAsync(d.length_errors, 0, sizeof(std::uint32_t), stream), "zero length_errors") &&
         status_ok(gn::run(a.norm, d.workspace, d.workspace_bytes, stream), "group_norm::run") &&
         status_ok(dropout::run(a.drop, d.workspace, d.workspace_bytes, stream), "dropout forward") &&
         status_ok(mr::run(a.pool, d.workspace, d.workspace_bytes, stream), "masked_reduce::run") &&
         status_ok(dropout::run(a.update, d.workspace, d.workspace_bytes, stream), "dropout update");
}

template <class T>
bool download(std::vector<T>* host, const T* device, std::size_t count, cudaStream_t stream) {
  host->resize(count);
  return cuda_ok(cudaMemcpyAsync(host->data(), device, count * sizeof(T), cudaMemcpyDeviceToHost, stream),
                 "cudaMemcpyAsync to host");
}

/// Copies step k's results back and checks them against the host computation.
void check_step(std::int64_t k, const Buffers& d, const std::vector<float>& x,
                const std::vector<std::uint8_t>& mask, const std::vector<float>& gamma,
                const std::vector<float>& beta, cudaStream_t stream) {
  std::vector<float> normalized, mean, rstd, dropped, pooled;
  std::vector<std::uint8_t> keep;
  std::vector<std::int32_t> counts;
  std::vector<std::uint32_t> length_errors;
  dropout::DropoutState state{};
  bool copied =
      download(&normalized, d.normalized, kElements, stream) && download(&mean, d.mean, kStats, stream) &&
      download(&rstd, d.rstd, kStats, stream) && download(&dropped, d.dropped, kElements, stream) &&
      download(&keep, d.keep, kElements, stream) && download(&pooled, d.pooled, kBatch * kFeatures, stream) &&
      download(&counts, d.counts, kBatch, stream) && download(&length_errors, d.length_errors, 1, stream) &&
      cuda_ok(cudaMemcpyAsync(&state, d.state, sizeof(state), cudaMemcpyDeviceToHost, stream),
              "cudaMemcpyAsync state");
  // The only synchronization of the step: the host reads the results after this.
  copied = copied && cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (!copied) {
    return;
  }
  const int before = g_failures;
  const std::int64_t cpg = kFeatures / kGroups;

  // 1. Group normalization + SiLU, statistics over the valid steps only (double precision reference;
  //    the device accumulates in float32 and the GPU's exp is not the host's: 1e-4 covers both).
  for (std::int64_t b = 0; b < kBatch; ++b) {
    for (std::int64_t g = 0; g < kGroups; ++g) {
      double sum = 0.0;
      double n = 0.0;
      for (std::int64_t t = 0; t < kSteps; ++t) {
        for (std::int64_t c = g * cpg; c < (g + 1) * cpg && mask[b * kSteps + t] != 0; ++c) {
          sum += x[(b * kSteps + t) * kFeatures + c];
          n += 1.0;
        }
      }
      const double mu = n > 0 ? sum / n : 0.0; // a fully masked group: mean 0, variance 0
      double sq = 0.0;
      for (std::int64_t t = 0; t < kSteps; ++t) {
        for (std::int64_t c = g * cpg; c < (g + 1) * cpg && mask[b * kSteps + t] != 0; ++c) {
          const double dx = x[(b * kSteps + t) * kFeatures + c] - mu;
          sq += dx * dx;
        }
      }
      const double var = n > 0 ? sq / n : 0.0;
      const double r = 1.0 / std::sqrt(var + kEpsilon);
      check(close(mean[b * kGroups + g], mu, 1e-5, 1e-5) && close(rstd[b * kGroups + g], r, 1e-5, 1e-4),
            "group norm statistics of sample " + std::to_string(b) + " group " + std::to_string(g));
      for (std::int64_t t = 0; t < kSteps; ++t) { // every step is normalized, padded ones included
        for (std::int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
          const std::int64_t i = (b * kSteps + t) * kFeatures + c;
          const double pre = (x[i] - mu) * r * gamma[c] + beta[c];
          const double want = pre / (1.0 + std::exp(-pre));
          check(close(normalized[i], want, 1e-4, 1e-4), "group norm output " + std::to_string(i) + ": " +
                                                            std::to_string(normalized[i]) + " vs " +
                                                            std::to_string(want));
        }
      }
    }
  }

  // 2. Dropout: the keep decisions are Philox draws the host can reproduce exactly (stream k, one draw
  //    per (b, f) of the noise shape), and kept values are x * scale rounded once: bit-exact.
  check(state.last_iteration == k && state.last_stream == static_cast<std::uint64_t>(k) &&
            state.iterations == k + 1,
        "dropout state after step " + std::to_string(k));
  check(state.last_threshold == dropout::keep_threshold(kKeepRate) &&
            state.last_scale == dropout::keep_scale(kKeepRate),
        "dropout threshold and scale");
  std::vector<std::uint32_t> draws(kBatch * kFeatures);
  dropout::philox_draws(kSeed, static_cast<std::uint64_t>(k), state.offset, draws.size(), draws.data());
  int kept = 0;
  for (std::int64_t b = 0; b < kBatch; ++b) {
    for (std::int64_t t = 0; t < kSteps; ++t) {
      for (std::int64_t f = 0; f < kFeatures; ++f) {
        const std::int64_t i = (b * kSteps + t) * kFeatures + f;
        const bool keep_it = draws[b * kFeatures + f] < state.last_threshold;
        const float want = keep_it ? normalized[i] * state.last_scale : 0.0f;
        kept += keep_it ? 1 : 0;
        check(keep[i] == (keep_it ? 1 : 0) && same_float(dropped[i], want),
              "dropout element " + std::to_string(i));
      }
    }
  }

  // 3. Masked mean over time with the lengths (clamped to [0, T]; the out-of-range one counted).
  check(length_errors[0] == 1, "length_errors: " + std::to_string(length_errors[0]) + " (want 1)");
  for (std::int64_t b = 0; b < kBatch; ++b) {
    const std::int32_t len = clamped_length(b);
    check(counts[b] == len, "count of sequence " + std::to_string(b));
    for (std::int64_t f = 0; f < kFeatures; ++f) {
      double sum = 0.0;
      for (std::int64_t t = 0; t < len; ++t) {
        sum += dropped[(b * kSteps + t) * kFeatures + f];
      }
      const double want = len > 0 ? sum / len : 0.0; // empty sequence: the fill value
      check(close(pooled[b * kFeatures + f], want, 1e-5, 1e-5),
            "pooled (" + std::to_string(b) + ", " + std::to_string(f) + ")");
    }
  }

  std::printf("step %lld: kept %d of %lld dropout draws x %lld steps; pooled features:\n",
              static_cast<long long>(k), kept / static_cast<int>(kSteps),
              static_cast<long long>(kBatch * kFeatures), static_cast<long long>(kSteps));
  for (std::int64_t b = 0; b < kBatch; ++b) {
    std::printf("  sequence %lld (length %d, %d valid):", static_cast<long long>(b), kLengths[b], counts[b]);
    for (std::int64_t f = 0; f < kFeatures; ++f) {
      std::printf(" %7.4f", static_cast<double>(pooled[b * kFeatures + f]));
    }
    std::printf("\n");
  }
  std::printf("  checks against the host computation: %s\n", g_failures == before ? "OK" : "FAILED");
}

int run_engine() {
#if defined(CULAYERS_EMULATED) && CULAYERS_EMULATED
  std::printf("culayers %s engine example on the CPU emulator (culayers::emulated)\n",
              culayers::version_string());
#else
  std::printf("culayers %s engine example on the GPU (culayers::culayers)\n", culayers::version_string());
#endif
  cudaStream_t stream = nullptr;
  if (!cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags")) {
    return 1;
  }
  struct StreamGuard {
    cudaStream_t s;
    ~StreamGuard() { (void)cudaStreamDestroy(s); }
  } stream_guard{stream};

  // ---- host inputs ----
  std::vector<float> x(kElements);
  std::uint64_t lcg = 0x9E3779B97F4A7C15ull;
  for (float& v : x) {
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<float>(static_cast<double>(lcg >> 40) / static_cast<double>(1 << 24) * 4.0 - 2.0);
  }
  // Padded steps hold garbage that must never reach a statistic or a pooled value (group norm still
  // normalizes those positions and dropout passes them on: they are garbage out, ignored downstream).
  for (std::int64_t b = 0; b < kBatch; ++b) {
    for (std::int64_t t = clamped_length(b); t < kSteps; ++t) {
      for (std::int64_t f = 0; f < kFeatures; ++f) {
        x[(b * kSteps + t) * kFeatures + f] = (t + f) % 2 == 0 ? NAN : 1e3f;
      }
    }
  }
  std::vector<std::uint8_t> mask(kBatch * kSteps);
  for (std::int64_t b = 0; b < kBatch; ++b) {
    for (std::int64_t t = 0; t < kSteps; ++t) {
      mask[b * kSteps + t] = t < clamped_length(b) ? 1 : 0;
    }
  }
  std::vector<float> gamma(kFeatures), beta(kFeatures);
  for (std::int64_t c = 0; c < kFeatures; ++c) {
    gamma[c] = 0.5f + 0.125f * static_cast<float>(c);
    beta[c] = 0.25f * static_cast<float>(c % 3) - 0.25f;
  }

  // ---- device buffers (setup: the only allocations) ----
  DeviceMemory memory;
  Buffers d;
  if (!memory.allocate(&d.x, kElements, "x") || !memory.allocate(&d.mask, kBatch * kSteps, "mask") ||
      !memory.allocate(&d.lengths, kBatch, "lengths") || !memory.allocate(&d.gamma, kFeatures, "gamma") ||
      !memory.allocate(&d.beta, kFeatures, "beta") ||
      !memory.allocate(&d.normalized, kElements, "normalized") || !memory.allocate(&d.mean, kStats, "mean") ||
      !memory.allocate(&d.rstd, kStats, "rstd") || !memory.allocate(&d.dropped, kElements, "dropped") ||
      !memory.allocate(&d.keep, kElements, "keep") || !memory.allocate(&d.state, 1, "state") ||
      !memory.allocate(&d.pooled, kBatch * kFeatures, "pooled") ||
      !memory.allocate(&d.counts, kBatch, "counts") ||
      !memory.allocate(&d.length_errors, 1, "length_errors")) {
    return 1;
  }
  const bool uploaded =
      cuda_ok(cudaMemcpyAsync(d.x, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice, stream),
              "upload x") &&
      cuda_ok(cudaMemcpyAsync(d.mask, mask.data(), mask.size(), cudaMemcpyHostToDevice, stream),
              "upload mask") &&
      cuda_ok(cudaMemcpyAsync(d.lengths, kLengths, sizeof(kLengths), cudaMemcpyHostToDevice, stream),
              "upload lengths") &&
      cuda_ok(cudaMemcpyAsync(d.gamma, gamma.data(), gamma.size() * sizeof(float), cudaMemcpyHostToDevice,
                              stream),
              "upload gamma") &&
      cuda_ok(
          cudaMemcpyAsync(d.beta, beta.data(), beta.size() * sizeof(float), cudaMemcpyHostToDevice, stream),
          "upload beta");
  if (!uploaded) {
    return 1;
  }

  // ---- validate and size every op once; one workspace for all ----
  StepArgs args = make_step_args(d);
  dropout::DropoutInitArgs init;
  init.state = d.state;
  init.seed = kSeed;
  init.initial_keep_rate = kKeepRate;
  init.decay_rate = 1.0; // a fixed keep rate (plain dropout)
  if (!status_ok(gn::can_implement(args.norm), "group_norm::can_implement") ||
      !status_ok(dropout::can_implement(init), "dropout init can_implement") ||
      !status_ok(dropout::can_implement(args.drop), "dropout forward can_implement") ||
      !status_ok(mr::can_implement(args.pool), "masked_reduce::can_implement") ||
      !status_ok(dropout::can_implement(args.update), "dropout update can_implement")) {
    return 1;
  }
  const std::size_t sizes[] = {gn::workspace_size(args.norm), dropout::workspace_size(init),
                               dropout::workspace_size(args.drop), mr::workspace_size(args.pool),
                               dropout::workspace_size(args.update)};
  d.workspace_bytes = *std::max_element(std::begin(sizes), std::end(sizes));
  if (d.workspace_bytes > 0) {
    std::uint8_t* ws = nullptr;
    if (!memory.allocate(&ws, d.workspace_bytes, "workspace")) {
      return 1;
    }
    d.workspace = ws;
  }
  args = make_step_args(d);
  std::printf("batch (B, T, F) = (%lld, %lld, %lld), lengths {%d, %d, %d, %d}, %lld groups\n",
              static_cast<long long>(kBatch), static_cast<long long>(kSteps),
              static_cast<long long>(kFeatures), kLengths[0], kLengths[1], kLengths[2], kLengths[3],
              static_cast<long long>(kGroups));
  std::printf(
      "group norm path: %s; masked mean path: %s; workspace: %zu bytes (group norm %zu, masked mean %zu)\n",
      gn::path_name(gn::selected_path(args.norm)), mr::path_name(mr::selected_path(args.pool)),
      d.workspace_bytes, sizes[0], sizes[3]);

  // An engine validates before enqueueing: a bad configuration is reported with the op and argument.
  gn::GroupNormArgs bad = args.norm;
  bad.groups = 3; // does not divide 8 channels
  const Status rejected = gn::can_implement(bad);
  check(rejected != Status::kSuccess, "group_norm::can_implement accepted 3 groups of 8 channels");
  std::printf("can_implement with 3 groups of 8 channels: %s: %s\n", culayers::status_string(rejected),
              culayers::last_error_message());

  if (!status_ok(dropout::run(init, d.workspace, d.workspace_bytes, stream), "dropout init")) {
    return 1;
  }

  // ---- step 0: eager ----
  if (!enqueue_step(args, d, stream)) {
    return 1;
  }
  check_step(0, d, x, mask, gamma, beta, stream);

  // ---- step 1: the same step captured into a graph and replayed ----
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  if (!cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture")) {
    return 1;
  }
  const bool captured = enqueue_step(args, d, stream);
  if (!cuda_ok(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture") || !captured) {
    return 1;
  }
  if (cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate")) {
    if (cuda_ok(cudaGraphLaunch(exec, stream), "cudaGraphLaunch")) {
      std::printf("replaying the captured step as step 1\n");
      check_step(1, d, x, mask, gamma, beta, stream);
    }
    (void)cudaGraphExecDestroy(exec);
  }
  (void)cudaGraphDestroy(graph);

  std::printf(g_failures == 0 ? "engine example: OK\n" : "engine example: FAILED (%d checks)\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}

} // namespace

int main() {
  return run_engine();
}
