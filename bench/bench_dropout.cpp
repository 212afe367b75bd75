// Dropout on docs/performance.md's shape 7 (8192x4096, 16384x16384 and 8191x4095 bf16; keep 0.9, 0.5 and
// 0.8731; noise shapes (32, 1, 1024) over (32, 2048, 1024) and (32, 256, 1, 1) over (32, 256, 56, 56)),
// forward and backward, and shape 8 (forward + update op captured in a CUDA graph and replayed), against
//   - cuDNN's cudnnDropoutForward / cudnnDropoutBackward (plain shapes only: cuDNN has no noise shape),
//   - the device-to-device copy of the same bytes (cudaMemcpyAsync), as a case of its own and through
//     the harness's pct_of_copy counter on every case,
//   - the plain forward of the same tensor, next to each broadcast case (target: within 1.1x).
// Every configuration is verified before it is timed: ours bit for bit against a host reference built
// from culayers::dropout::philox_draws (the kernels' draws) and the state read back, including the run
// to run bit identity; cuDNN structurally (each output 0 or x * scale within bf16 rounding, kept fraction
// within 6 sigma of the keep rate, the backward's zeros where the forward's are); the copy byte for byte.
//
// Byte model (counters "bytes", "GB/s"): x read once and y written once, 2 x 2 bytes per bf16 element
// (ours moves no mask; cuDNN also writes and reads its reserve space, which is not counted, so its GB/s
// is an effective rate of the same job).
//
// cuDNN is loaded at run time (bench/cudnn_runtime.hpp): no link-time dependency; its cases skip with a
// message when it is absent (or when cudnn.h was not there at build time).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bench/cudnn_runtime.hpp"
#include "bench/harness.hpp"
#include "culayers/dropout.hpp"

namespace culayers {
namespace bench {
namespace {

// Elements per verification thread at least (parallel_for): below that, a thread costs more than it saves.
constexpr std::int64_t kVerifyGrain = std::int64_t{1} << 16;

namespace cd = culayers::dropout;

constexpr std::uint64_t kSeed = 0x64726f70ull;

// ---- data -----------------------------------------------------------------------------------------------

std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Odd multiples of 1/64 in (-4, 4): exact in bf16 and fp16, never 0 (so a kept element is never 0).
float value_at(std::int64_t i) {
  const int k = static_cast<int>(mix(kSeed + static_cast<std::uint64_t>(i)) >> 56) - 128;
  return static_cast<float>(2 * k + 1) * (1.0f / 64.0f);
}

std::uint16_t to_bf16_bits(float f) {
  const __nv_bfloat16_raw raw = __float2bfloat16_rn(f);
  return raw.x;
}

float bf16_value(std::uint16_t bits) {
  __nv_bfloat16_raw raw;
  raw.x = bits;
  return __bfloat162float(__nv_bfloat16(raw));
}

[[maybe_unused]] float half_value(std::uint16_t bits) { // cuDNN's fp16 fallback
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}

/// x of a shape as bf16 bits, generated once per element count and kept for verification.
std::shared_ptr<const std::vector<std::uint16_t>> host_input(std::int64_t n) {
  static std::mutex mutex;
  static std::map<std::int64_t, std::shared_ptr<const std::vector<std::uint16_t>>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(n);
  if (it == cache.end()) {
    auto v = std::make_shared<std::vector<std::uint16_t>>(static_cast<std::size_t>(n));
    parallel_for(n, kVerifyGrain, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) {
        (*v)[static_cast<std::size_t>(i)] = to_bf16_bits(value_at(i));
      }
    });
    it = cache.emplace(n, std::move(v)).first;
  }
  return it->second;
}

struct Case {
  std::string name;
  std::vector<std::int64_t> dims;
  std::vector<std::int64_t> noise; // empty: x's shape
  double keep;
};

std::int64_t numel(const std::vector<std::int64_t>& dims) {
  std::int64_t n = 1;
  for (std::int64_t d : dims) {
    n *= d;
  }
  return n;
}

Shape to_shape(const std::vector<std::int64_t>& dims) {
  Shape s;
  (void)Shape::make(dims.data(), static_cast<int>(dims.size()), &s);
  return s;
}

std::string keep_name(double keep) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "keep%g", keep);
  return buf;
}

/// Uploads the shape's x; false after SkipWithError.
/// A cudaMemcpy from pageable memory may return before its DMA lands, and the benchmark stream is
/// non-blocking (not ordered after the legacy stream): the device is synchronized after the upload.
bool upload_input(benchmark::State& state, const DeviceBuffer& x, std::int64_t n) {
  const auto host = host_input(n);
  return check_cuda(
             state,
             cudaMemcpy(x.data(), host->data(), host->size() * sizeof(std::uint16_t), cudaMemcpyHostToDevice),
             "upload x") &&
         check_cuda(state, cudaDeviceSynchronize(), "upload x: synchronize");
}

// ---- ours: state, args, reference -----------------------------------------------------------------------

bool init_state(cd::DropoutState* state, double keep, cudaStream_t stream) {
  cd::DropoutInitArgs a;
  a.state = state;
  a.seed = kSeed;
  a.initial_keep_rate = keep;
  return cd::run(a, nullptr, 0, stream) == Status::kSuccess;
}

/// The keep rule the state reports is the case's: T = floor(keep x 2^32 + 0.5) and scale = (float)(1 / keep)
/// (check_ours takes them from the state, so a wrong keep rate would otherwise verify).
std::string check_keep(const Case& c, std::uint64_t threshold, float scale) {
  const auto want_t = static_cast<std::uint64_t>(std::floor(c.keep * 4294967296.0 + 0.5));
  const auto want_scale = static_cast<float>(1.0 / c.keep);
  if (threshold != want_t || scale != want_scale) {
    return "state threshold " + std::to_string(threshold) + " / scale " + std::to_string(scale) + ", want " +
           std::to_string(want_t) + " / " + std::to_string(want_scale) + " for keep " +
           std::to_string(c.keep);
  }
  return {};
}

/// Compares y (downloaded from the device) with the reference for the call parameters `stream`,
/// `threshold`, `scale` of the state. Empty string when equal.
std::string check_ours(const Case& c, const void* y_dev, const cd::DropoutState& s, std::uint64_t stream,
                       std::uint64_t threshold, float scale) {
  const std::int64_t n = numel(c.dims);
  const auto x = host_input(n);
  std::vector<std::uint16_t> y(static_cast<std::size_t>(n));
  const cudaError_t err =
      cudaMemcpy(y.data(), y_dev, y.size() * sizeof(std::uint16_t), cudaMemcpyDeviceToHost);
  if (err != cudaSuccess) {
    return std::string("download y: ") + cudaGetErrorString(err);
  }
  // Keep flags on the noise shape (all of x when there is none: computed per chunk below).
  std::vector<std::uint8_t> noise_keep;
  std::vector<std::int64_t> noise = c.noise.empty() ? c.dims : c.noise;
  const bool broadcast = !c.noise.empty();
  if (broadcast) {
    const std::int64_t nn = numel(noise);
    std::vector<std::uint32_t> r(static_cast<std::size_t>(nn));
    cd::philox_draws(s.seed, stream, s.offset, r.size(), r.data());
    noise_keep.resize(r.size());
    for (std::size_t j = 0; j < r.size(); ++j) {
      noise_keep[j] = r[j] < threshold ? 1 : 0;
    }
  }
  std::mutex mutex;
  std::string first_error;
  parallel_for(n, kVerifyGrain, [&](std::int64_t begin, std::int64_t end) {
    constexpr std::int64_t kBlock = 1 << 20; // draws computed per block of elements
    std::vector<std::uint32_t> r;
    for (std::int64_t b = begin; b < end; b += kBlock) {
      const std::int64_t e = std::min(end, b + kBlock);
      if (!broadcast) {
        r.resize(static_cast<std::size_t>(e - b));
        cd::philox_draws(s.seed, stream, s.offset + static_cast<std::uint64_t>(b), r.size(), r.data());
      }
      for (std::int64_t i = b; i < e; ++i) {
        bool keep;
        if (broadcast) {
          // Row-major index in the noise shape of i's coordinates, broadcast ones set to 0.
          std::int64_t rest = i;
          std::int64_t j = 0;
          std::int64_t stride = 1;
          for (std::size_t a = c.dims.size(); a-- > 0;) {
            const std::int64_t coord = rest % c.dims[a];
            rest /= c.dims[a];
            j += (noise[a] == 1 ? 0 : coord) * stride;
            stride *= noise[a];
          }
          keep = noise_keep[static_cast<std::size_t>(j)] != 0;
        } else {
          keep = r[static_cast<std::size_t>(i - b)] < threshold;
        }
        const std::uint16_t xi = (*x)[static_cast<std::size_t>(i)];
        const std::uint16_t want = !keep ? 0 : (scale == 1.0f ? xi : to_bf16_bits(bf16_value(xi) * scale));
        const std::uint16_t got = y[static_cast<std::size_t>(i)];
        if (got != want) {
          std::lock_guard<std::mutex> lock(mutex);
          if (first_error.empty()) {
            char buf[200];
            std::snprintf(buf, sizeof(buf),
                          "element %lld of %lld: got 0x%04x, want 0x%04x (keep %d, stream %llu)",
                          static_cast<long long>(i), static_cast<long long>(n), got, want, keep ? 1 : 0,
                          static_cast<unsigned long long>(stream));
            first_error = buf;
          }
          return;
        }
      }
    }
  });
  return first_error;
}

struct Ours {
  DeviceBuffer x;
  DeviceBuffer y;
  DeviceBuffer state{sizeof(cd::DropoutState)};
  cd::DropoutForwardArgs fwd;
  cd::DropoutBackwardArgs bwd;

  explicit Ours(const Case& c)
      : x(static_cast<std::size_t>(numel(c.dims)) * 2), y(static_cast<std::size_t>(numel(c.dims)) * 2) {
    fwd.x = x.data();
    fwd.y = y.data();
    fwd.dtype = DType::kBFloat16;
    fwd.shape = to_shape(c.dims);
    if (!c.noise.empty()) {
      fwd.noise_shape = to_shape(c.noise);
    }
    fwd.state = state.as<cd::DropoutState>();
    bwd.dy = x.data(); // dy = x: the backward's expected output is the forward's
    bwd.dx = y.data();
    bwd.dtype = fwd.dtype;
    bwd.shape = fwd.shape;
    bwd.noise_shape = fwd.noise_shape;
    bwd.state = fwd.state;
  }

  bool ready(benchmark::State& st, const Case& c) {
    return check_buffer(st, x, "x") && check_buffer(st, y, "y") && check_buffer(st, state, "state") &&
           upload_input(st, x, numel(c.dims));
  }

  cd::DropoutState read_state() const {
    cd::DropoutState s{};
    (void)cudaMemcpy(&s, state.data(), sizeof(s), cudaMemcpyDeviceToHost);
    return s;
  }
};

std::string status_text(const char* what, Status s) {
  return std::string(what) + ": " + status_string(s) + " (" + last_error_message() + ")";
}

// Forward (backward = false) or backward of our op.
void BM_ours(benchmark::State& st, Case c, bool backward) {
  Ours o(c);
  if (!o.ready(st, c)) {
    return;
  }
  cudaStream_t stream = bench_stream();
  const std::string key = std::string(backward ? "bwd/" : "fwd/") + c.name + "/" + keep_name(c.keep);
  const bool verified = verify_once(st, "ours/" + key, [&]() -> std::string {
    if (!init_state(o.fwd.state, c.keep, stream)) {
      return status_text("dropout_init", Status::kErrorInternal);
    }
    (void)cudaMemsetAsync(o.y.data(), 0xff, o.y.bytes(), stream);
    if (Status s = cd::run(o.fwd, nullptr, 0, stream); s != Status::kSuccess) {
      return status_text("dropout_forward", s);
    }
    // The stream is non-blocking: the legacy-stream read-backs below wait for nothing on it.
    if (cudaStreamSynchronize(stream) != cudaSuccess) {
      return "forward: synchronize failed";
    }
    // The first run's bits for the run-to-run check, taken before the self-test's perturbation.
    std::vector<std::uint16_t> first(o.y.bytes() / 2);
    if (cudaMemcpy(first.data(), o.y.data(), o.y.bytes(), cudaMemcpyDeviceToHost) != cudaSuccess) {
      return "download";
    }
    if (std::string e = perturb_output(o.y.data(), DType::kBFloat16, numel(c.dims)); !e.empty()) {
      return e;
    }
    const cd::DropoutState s = o.read_state();
    if (std::string e = check_keep(c, s.threshold, s.scale); !e.empty()) {
      return "forward: " + e;
    }
    if (std::string e = check_ours(c, o.y.data(), s, s.stream, s.threshold, s.scale); !e.empty()) {
      return "forward: " + e;
    }
    // Run to run: the same state and input give the same bits.
    (void)cudaMemsetAsync(o.y.data(), 0, o.y.bytes(), stream);
    if (cd::run(o.fwd, nullptr, 0, stream) != Status::kSuccess ||
        cudaStreamSynchronize(stream) != cudaSuccess) {
      return "second forward failed";
    }
    std::vector<std::uint16_t> second(first.size());
    if (cudaMemcpy(second.data(), o.y.data(), o.y.bytes(), cudaMemcpyDeviceToHost) != cudaSuccess ||
        std::memcmp(first.data(), second.data(), o.y.bytes()) != 0) {
      return "forward not bit-identical run to run";
    }
    if (backward) {
      // Advance the schedule first: the backward must still use the forward's parameters.
      cd::DropoutUpdateArgs u;
      u.state = o.fwd.state;
      (void)cudaMemsetAsync(o.y.data(), 0xff, o.y.bytes(), stream);
      if (cd::run(u, nullptr, 0, stream) != Status::kSuccess ||
          cd::run(o.bwd, nullptr, 0, stream) != Status::kSuccess ||
          cudaStreamSynchronize(stream) != cudaSuccess) {
        return status_text("dropout_backward", Status::kErrorInternal);
      }
      if (std::string e = perturb_output(o.y.data(), DType::kBFloat16, numel(c.dims)); !e.empty()) {
        return e;
      }
      const cd::DropoutState b = o.read_state();
      if (std::string e = check_keep(c, b.last_threshold, b.last_scale); !e.empty()) {
        return "backward: " + e;
      }
      if (std::string e = check_ours(c, o.y.data(), b, b.last_stream, b.last_threshold, b.last_scale);
          !e.empty()) {
        return "backward: " + e;
      }
    }
    return {};
  });
  if (!verified) {
    return;
  }
  // Google Benchmark calls this function several times per case (iteration-count probes, repetitions), each
  // with a fresh state buffer, while the verification above runs once: initialize this call's state, so the
  // timed runs use this case's keep rate (the backward's last_* fields equal the current call's after init).
  if (!init_state(o.fwd.state, c.keep, stream) || cudaStreamSynchronize(stream) != cudaSuccess) {
    st.SkipWithError("dropout_init failed before timing");
    return;
  }
  const std::uint64_t bytes = 4 * static_cast<std::uint64_t>(numel(c.dims));
  if (backward) {
    run_timed(st, bytes, [&](cudaStream_t s) { return cd::run(o.bwd, nullptr, 0, s); });
  } else {
    run_timed(st, bytes, [&](cudaStream_t s) { return cd::run(o.fwd, nullptr, 0, s); });
  }
}

// Forward + update captured once and replayed: the schedule advances on the device every replay.
void BM_ours_graph(benchmark::State& st, Case c) {
  Ours o(c);
  if (!o.ready(st, c)) {
    return;
  }
  cudaStream_t stream = bench_stream();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cd::DropoutInitArgs init;
  init.state = o.fwd.state;
  init.seed = kSeed;
  init.initial_keep_rate = c.keep;
  init.decay_rate = 0.977;
  init.decay_interval = 10;
  cd::DropoutUpdateArgs u;
  u.state = o.fwd.state;
  if (!check_status(st, cd::run(init, nullptr, 0, stream), "dropout_init") ||
      !check_cuda(st, cudaStreamSynchronize(stream), "init") ||
      !check_cuda(st, cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture")) {
    return;
  }
  const Status fs = cd::run(o.fwd, nullptr, 0, stream);
  const Status us = cd::run(u, nullptr, 0, stream);
  if (!check_cuda(st, cudaStreamEndCapture(stream, &graph), "end capture") ||
      !check_status(st, fs, "captured forward") || !check_status(st, us, "captured update") ||
      !check_cuda(st, cudaGraphInstantiate(&exec, graph, 0), "instantiate")) {
    if (graph != nullptr) {
      (void)cudaGraphDestroy(graph);
    }
    return;
  }
  const TimedOp replay = [&](cudaStream_t s) {
    return cudaGraphLaunch(exec, s) == cudaSuccess ? Status::kSuccess : Status::kErrorCudaLaunch;
  };
  const bool verified = verify_once(st, "graph/" + c.name + "/" + keep_name(c.keep), [&]() -> std::string {
    for (int k = 0; k < 3; ++k) {
      if (replay(stream) != Status::kSuccess || cudaStreamSynchronize(stream) != cudaSuccess) {
        return "replay failed";
      }
      if (std::string e = perturb_output(o.y.data(), DType::kBFloat16, numel(c.dims)); !e.empty()) {
        return e;
      }
      const cd::DropoutState s = o.read_state();
      if (s.iterations != k + 1 || s.last_iteration != k) {
        return "replay " + std::to_string(k) + ": the schedule did not advance";
      }
      if (std::string e = check_ours(c, o.y.data(), s, s.last_stream, s.last_threshold, s.last_scale);
          !e.empty()) {
        return "replay " + std::to_string(k) + ": " + e;
      }
    }
    return {};
  });
  if (verified) {
    run_timed(st, 4 * static_cast<std::uint64_t>(numel(c.dims)), replay);
  }
  (void)cudaGraphExecDestroy(exec);
  (void)cudaGraphDestroy(graph);
}

// The device-to-device copy of the same bytes (x -> y).
void BM_copy(benchmark::State& st, Case c) {
  const std::int64_t n = numel(c.dims);
  DeviceBuffer x(static_cast<std::size_t>(n) * 2);
  DeviceBuffer y(static_cast<std::size_t>(n) * 2);
  if (!check_buffer(st, x, "x") || !check_buffer(st, y, "y") || !upload_input(st, x, n)) {
    return;
  }
  const TimedOp op = [&](cudaStream_t s) {
    return cudaMemcpyAsync(y.data(), x.data(), x.bytes(), cudaMemcpyDeviceToDevice, s) == cudaSuccess
               ? Status::kSuccess
               : Status::kErrorCudaRuntime;
  };
  const bool verified = verify_once(st, "copy/" + c.name, [&]() -> std::string {
    (void)cudaMemsetAsync(y.data(), 0xff, y.bytes(), bench_stream()); // on the op's (non-blocking) stream
    if (op(bench_stream()) != Status::kSuccess || cudaStreamSynchronize(bench_stream()) != cudaSuccess) {
      return "cudaMemcpyAsync failed";
    }
    std::vector<std::uint16_t> got(static_cast<std::size_t>(n));
    (void)cudaMemcpy(got.data(), y.data(), y.bytes(), cudaMemcpyDeviceToHost);
    return std::memcmp(got.data(), host_input(n)->data(), y.bytes()) == 0 ? std::string() : "copy differs";
  });
  if (verified) {
    run_timed(st, 4 * static_cast<std::uint64_t>(n), op);
  }
}

// ---- cuDNN, loaded at run time ----------------------------------------------------------------------------

#if CULAYERS_BENCH_HAVE_CUDNN

/// One cuDNN dropout setup: states, descriptors, reserve space. Tries bf16, then fp16 over the same bytes
/// if cuDNN's legacy dropout rejects bf16 (the byte traffic is the same).
struct CudnnDropout {
  cudnnTensorDescriptor_t desc = nullptr;
  cudnnDropoutDescriptor_t dropout = nullptr;
  cudnnDataType_t type = CUDNN_DATA_BFLOAT16;
  DeviceBuffer states;
  DeviceBuffer reserve;
  ~CudnnDropout() {
    if (desc != nullptr) {
      cudnn().destroy_tensor(desc);
    }
    if (dropout != nullptr) {
      cudnn().destroy_dropout(dropout);
    }
  }
};

void BM_cudnn(benchmark::State& st, Case c, bool backward) {
  const Cudnn& dnn = cudnn();
  if (!dnn.error.empty()) {
    st.SkipWithError(dnn.error.c_str());
    return;
  }
  const std::int64_t n = numel(c.dims);
  DeviceBuffer x(static_cast<std::size_t>(n) * 2);
  DeviceBuffer y(static_cast<std::size_t>(n) * 2);
  DeviceBuffer dx(static_cast<std::size_t>(n) * 2);
  if (!check_buffer(st, x, "x") || !check_buffer(st, y, "y") || !check_buffer(st, dx, "dx") ||
      !upload_input(st, x, n)) {
    return;
  }
  cudaStream_t stream = bench_stream();
  CudnnDropout d;
  // A [1, 1, rows, cols] tensor (the shapes here are 2-D).
  const int dims[4] = {1, 1, static_cast<int>(c.dims[0]), static_cast<int>(n / c.dims[0])};
  const int strides[4] = {static_cast<int>(n), static_cast<int>(n), dims[3], 1};
  std::size_t states_bytes = 0;
  std::size_t reserve_bytes = 0;
  if (!check_cudnn(st, dnn.set_stream(dnn.handle, stream), "cudnnSetStream") ||
      !check_cudnn(st, dnn.create_tensor(&d.desc), "cudnnCreateTensorDescriptor") ||
      !check_cudnn(st, dnn.create_dropout(&d.dropout), "cudnnCreateDropoutDescriptor") ||
      !check_cudnn(st, dnn.dropout_states_size(dnn.handle, &states_bytes), "cudnnDropoutGetStatesSize")) {
    return;
  }
  d.states = DeviceBuffer(states_bytes);
  if (!check_buffer(st, d.states, "cuDNN states") ||
      !check_cudnn(st,
                   dnn.set_dropout(d.dropout, dnn.handle, static_cast<float>(1.0 - c.keep), d.states.data(),
                                   states_bytes, kSeed),
                   "cudnnSetDropoutDescriptor")) {
    return;
  }
  const auto setup = [&](cudnnDataType_t type) {
    d.type = type;
    cudnnStatus_t s = dnn.set_tensor_nd(d.desc, type, 4, dims, strides);
    if (s == CUDNN_STATUS_SUCCESS) {
      s = dnn.dropout_reserve_size(d.desc, &reserve_bytes);
    }
    if (s == CUDNN_STATUS_SUCCESS) {
      d.reserve = DeviceBuffer(reserve_bytes);
      s = dnn.dropout_forward(dnn.handle, d.dropout, d.desc, x.data(), d.desc, y.data(), d.reserve.data(),
                              reserve_bytes);
    }
    return s;
  };
  cudnnStatus_t s = setup(CUDNN_DATA_BFLOAT16);
  if (s == CUDNN_STATUS_NOT_SUPPORTED || s == CUDNN_STATUS_BAD_PARAM) {
    s = setup(CUDNN_DATA_HALF);
  }
  if (!check_cudnn(st, s, "cudnnDropoutForward") || !check_buffer(st, d.reserve, "cuDNN reserve")) {
    return;
  }
  const auto value = [&](std::uint16_t bits) {
    return d.type == CUDNN_DATA_BFLOAT16 ? bf16_value(bits) : half_value(bits);
  };
  const TimedOp fwd = [&](cudaStream_t) {
    return dnn.dropout_forward(dnn.handle, d.dropout, d.desc, x.data(), d.desc, y.data(), d.reserve.data(),
                               reserve_bytes) == CUDNN_STATUS_SUCCESS
               ? Status::kSuccess
               : Status::kErrorCudaRuntime;
  };
  const TimedOp bwd = [&](cudaStream_t) {
    return dnn.dropout_backward(dnn.handle, d.dropout, d.desc, x.data(), d.desc, dx.data(), d.reserve.data(),
                                reserve_bytes) == CUDNN_STATUS_SUCCESS
               ? Status::kSuccess
               : Status::kErrorCudaRuntime;
  };
  const std::string key = std::string("cudnn/") + c.name + "/" + keep_name(c.keep);
  const bool verified = verify_once(st, key, [&]() -> std::string {
    if (fwd(stream) != Status::kSuccess || bwd(stream) != Status::kSuccess ||
        cudaStreamSynchronize(stream) != cudaSuccess) {
      return "cuDNN forward/backward failed";
    }
    const DType dt = d.type == CUDNN_DATA_BFLOAT16 ? DType::kBFloat16 : DType::kFloat16;
    for (const DeviceBuffer* b : {&y, &dx}) {
      if (std::string e = perturb_output(b->data(), dt, n); !e.empty()) {
        return e;
      }
    }
    const auto xin = host_input(n);
    std::vector<std::uint16_t> yh(static_cast<std::size_t>(n));
    std::vector<std::uint16_t> dxh(static_cast<std::size_t>(n));
    (void)cudaMemcpy(yh.data(), y.data(), y.bytes(), cudaMemcpyDeviceToHost);
    (void)cudaMemcpy(dxh.data(), dx.data(), dx.bytes(), cudaMemcpyDeviceToHost);
    const float scale = static_cast<float>(1.0 / c.keep);
    std::int64_t kept = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const float xv = value((*xin)[static_cast<std::size_t>(i)]) * scale;
      const float yv = value(yh[static_cast<std::size_t>(i)]);
      const float dv = value(dxh[static_cast<std::size_t>(i)]);
      const float tol = std::fabs(xv) * (d.type == CUDNN_DATA_BFLOAT16 ? 0x1p-7f : 0x1p-10f);
      const bool kept_y = yv != 0.0f;
      if ((kept_y && !(std::fabs(yv - xv) <= tol)) || (kept_y != (dv != 0.0f)) ||
          (dv != 0.0f && !(std::fabs(dv - xv) <= tol))) {
        return "element " + std::to_string(i) + ": y " + std::to_string(yv) + ", dx " + std::to_string(dv) +
               ", x * scale " + std::to_string(xv);
      }
      kept += kept_y ? 1 : 0;
    }
    const double mean = static_cast<double>(n) * c.keep;
    const double sigma = std::sqrt(static_cast<double>(n) * c.keep * (1.0 - c.keep));
    if (std::fabs(static_cast<double>(kept) - mean) > 6.0 * sigma + 1.0) {
      return "kept " + std::to_string(kept) + " of " + std::to_string(n) + ", expected about " +
             std::to_string(mean);
    }
    return {};
  });
  if (!verified) {
    return;
  }
  st.SetLabel(cudnn_version_string() +
              (d.type == CUDNN_DATA_BFLOAT16 ? " dropout, bf16" : " dropout, fp16 (bf16 rejected)"));
  run_timed(st, 4 * static_cast<std::uint64_t>(n), backward ? bwd : fwd);
}
#else
void BM_cudnn(benchmark::State& st, Case, bool) {
  st.SkipWithError((std::string(kBaselineUnavailable) + "built without cudnn.h").c_str());
}
#endif

// ---- registration ---------------------------------------------------------------------------------------

bool register_all() {
  std::vector<Case> plain;
  for (const double keep : {0.9, 0.5, 0.8731}) {
    plain.push_back({"8192x4096", {8192, 4096}, {}, keep});
  }
  for (const double keep : {0.9, 0.5, 0.8731}) {
    plain.push_back({"16384x16384", {16384, 16384}, {}, keep});
  }
  for (const double keep : {0.9, 0.8731}) {
    plain.push_back({"8191x4095", {8191, 4095}, {}, keep});
  }
  // Broadcast noise shapes, each next to the plain dropout of the same tensor.
  const std::vector<Case> broadcast = {
      {"32x2048x1024/noise32x1x1024", {32, 2048, 1024}, {32, 1, 1024}, 0.9},
      {"32x2048x1024/plain", {32, 2048, 1024}, {}, 0.9},
      {"32x256x56x56/noise32x256x1x1", {32, 256, 56, 56}, {32, 256, 1, 1}, 0.9},
      {"32x256x56x56/plain", {32, 256, 56, 56}, {}, 0.9},
  };
  const auto name = [](const char* what, const Case& c) {
    return std::string("dropout_") + what + "/" + c.name + "/" + keep_name(c.keep);
  };
  // Fixed iteration counts (iterations_for: about 20 ms of device time per repetition): Google Benchmark's
  // own probing would rerun each case's setup (a 0.1-1 GiB upload) for every probe.
  const auto add = [](const std::string& case_name, const Case& c, auto fn, auto... args) {
    benchmark::RegisterBenchmark(case_name.c_str(), fn, c, args...)
        ->Apply(configure)
        ->Iterations(iterations_for(4 * static_cast<std::uint64_t>(numel(c.dims))));
  };
  for (const Case& c : plain) {
    add(name("fwd/ours", c), c, BM_ours, false);
    add(name("fwd/cudnn", c), c, BM_cudnn, false);
    add(name("bwd/ours", c), c, BM_ours, true);
    add(name("bwd/cudnn", c), c, BM_cudnn, true);
  }
  for (const Case& c : broadcast) {
    add(name("fwd/ours", c), c, BM_ours, false);
    add(name("bwd/ours", c), c, BM_ours, true);
  }
  for (const Case& c : {plain[0], plain[3], plain[6], broadcast[0], broadcast[2]}) {
    add("dropout_copy/" + c.name.substr(0, c.name.find('/')), c, BM_copy);
  }
  add(name("graph/ours", plain[2]), plain[2], BM_ours_graph);
  return true;
}

[[maybe_unused]] const bool kRegistered = register_all();

} // namespace
} // namespace bench
} // namespace culayers
