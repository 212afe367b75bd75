// Batch normalization: the BatchNormalization layer's device work against cuDNN's batch normalization and
// the device-to-device copy of the same bytes, in one run.
//
// Shapes: "resnet" N = 32, C = 256, 56x56 (a ResNet-50 stage-2 activation) in float32 and bfloat16,
// channels first and channels last; "seq" B = 128, T = 512, F = 768 in bfloat16, channels last (a
// transformer activation, the case Keras's BatchNormalization takes a [batch, steps] mask for), also
// with a ragged mask (ours only: cuDNN has no masked statistics). Each in the training phase (batch
// statistics, normalize, moving averages) and the inference phase (normalize with the moving
// statistics).
//
//   - "ours": nn::BatchNormalization::call on a built layer, as an engine calls it (every call after the
//     first allocates nothing). Training: per-channel moments by masked_reduce (channels last: [1, rows,
//     C]; channels first: per-(sample, channel) planes merged by batch_norm_merge_moments), the apply
//     kernel, then the moving-average update op. Inference: the apply kernel alone.
//   - "cudnn": channels-last training first tries cudnnBatchNormalizationForwardTrainingEx with
//     SPATIAL_PERSISTENT and a workspace (cuDNN's NHWC kernels; in the configuration's dtype, then float16
//     over the same bytes; a dtype it gives no workspace is skipped). Then, and for everything else:
//     cudnnBatchNormalizationForwardTraining (exponential average factor 1 - momentum, the saved
//     mean and inverse std written) or cudnnBatchNormalizationForwardInference, NCHW or NHWC descriptors
//     ([B, T, F] is NHWC with H = T, W = 1). Mode SPATIAL_PERSISTENT, else SPATIAL; bfloat16, else
//     float16 over the same bytes: each is probe-timed, they are verified fastest first, and the first that
//     passes is timed and named in the label (run_fastest_candidate); stderr lists the probe times. If
//     cuDNN answers NOT_SUPPORTED for every one, the case is "baseline unavailable" with its reasons; any
//     other failure is a verification failure.
//   - "copy_same_bytes": cudaMemcpyAsync moving the same bytes (one per shape and dtype, training bytes).
//
// Byte model (counters "bytes", "GB/s", "pct_of_copy"): x read once and y written once, plus the [C]
// float32 vectors (training: gamma, beta, the moving mean and variance read and written; inference:
// gamma, beta, moving mean and variance read). Ours reads x twice in training by design (statistics,
// then normalize: counter x_reads = 2, so its DRAM traffic is bytes + |x|); cuDNN's passes are unknown,
// its GB/s is an effective rate.
//
// Verification, once per configuration and variant before timing (gamma and beta per channel in both): y
// against a double-precision reference computed from the same x (training: the batch statistics over the
// valid positions; inference: the given moving statistics), with a tolerance scaled to the output dtype's
// rounding unit (every element); ours also the moving mean and
// variance after that one call from their initial values, and bit-identical outputs run to run; cuDNN
// also its saved mean.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bench/cudnn_runtime.hpp"
#include "bench/harness.hpp"
#include "bench/variant.hpp"
#include "culayers/nn.hpp"
#include "kernels/common/common.cuh"

namespace culayers {
namespace bench {
namespace {

namespace ck = ::culayers::kernels;
namespace nn = ::culayers::nn;

constexpr float kEpsilon = 1e-3f;
constexpr float kMomentum = 0.99f;
constexpr std::uint64_t kSeed = 0x62617463686e6f72ull;

// ---- configurations -------------------------------------------------------------------------------------

struct Config {
  std::string shape;              // name of the shape ("resnet_N32_C256_56x56", ...)
  std::vector<std::int64_t> dims; // the layer's input shape
  bool channels_last = true;      // channels on the last axis (else axis 1)
  DType dtype = DType::kBFloat16;
  bool training = true;
  bool masked = false; // a ragged [dims[0], dims[1]] mask (rank-3 channels last only)

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int64_t d : dims) {
      n *= d;
    }
    return n;
  }
  std::int64_t channels() const { return channels_last ? dims.back() : dims[1]; }
  /// Elements per (sample, channel) run: 1 channels last, the spatial product channels first.
  std::int64_t inner() const { return channels_last ? 1 : numel() / (dims[0] * channels()); }
  Shape input_shape() const {
    Shape s;
    (void)Shape::make(dims.data(), static_cast<int>(dims.size()), &s);
    return s;
  }
};

const char* dtype_tag(DType d) {
  return d == DType::kFloat32 ? "f32" : (d == DType::kFloat16 ? "f16" : "bf16");
}

std::string config_name(const Config& c, const char* variant) {
  return std::string("batch_norm/") + c.shape + "/" + dtype_tag(c.dtype) + "/" +
         (c.channels_last ? "nhwc" : "nchw") + "/" + (c.training ? "train" : "infer") +
         (c.masked ? "_masked" : "") + "/" + variant;
}

std::uint64_t model_bytes(const Config& c) {
  const std::uint64_t tensor = static_cast<std::uint64_t>(c.numel()) * dtype_size(c.dtype);
  const std::uint64_t vec = static_cast<std::uint64_t>(c.channels()) * 4;
  return 2 * tensor + (c.training ? 6 : 4) * vec;
}

// ---- data -----------------------------------------------------------------------------------------------

CULAYERS_HD std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// x of element e in channel c: a per-channel offset and scale around uniform noise, so the statistics
// differ between channels.
CULAYERS_HD float x_value(std::int64_t e, std::int64_t c) {
  const float u = static_cast<float>(mix(kSeed + static_cast<std::uint64_t>(e)) >> 40) * 0x1p-24f; // [0, 1)
  const float offset = static_cast<float>(c % 13) * 0.25f - 1.5f;
  const float scale = 0.5f + static_cast<float>(c % 7) * 0.25f;
  return offset + scale * (2.0f * u - 1.0f);
}

template <class T>
CULAYERS_GLOBAL void fill_kernel(T* x, std::int64_t n, std::int64_t channels, std::int64_t inner) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    ck::store(x + i, ck::from_float<T>(x_value(i, (i / inner) % channels)));
  }
}

// The moving statistics the inference cases normalize with (also the cuDNN inference's estimates).
float moving_mean_of(std::int64_t c) {
  return static_cast<float>(c % 13) * 0.25f - 1.4f;
}
float moving_variance_of(std::int64_t c) {
  return 0.3f + static_cast<float>(c % 5) * 0.2f;
}

// gamma and beta of both variants (per channel, so their handling is checked too).
float gamma_of(std::int64_t c) {
  return 0.75f + static_cast<float>(c % 11) * 0.05f;
}
float beta_of(std::int64_t c) {
  return static_cast<float>(c % 5) * 0.1f - 0.2f;
}

// Ragged valid steps of row b of the mask: row 0 full, the others in [1, T].
std::int64_t valid_steps(std::int64_t b, std::int64_t t) {
  return b == 0 ? t : 1 + static_cast<std::int64_t>(mix(kSeed ^ static_cast<std::uint64_t>(b)) % t);
}

template <class T>
float host_float(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else {
    return __bfloat162float(v);
  }
}

std::string cuda_failure(const char* what, cudaError_t e) {
  (void)cudaGetLastError();
  return std::string(what) + ": " + cudaGetErrorName(e);
}

/// x (element type T) filled on the device; "" or what failed.
template <class T>
std::string make_input(const Config& c, DeviceBuffer* x) {
  *x = DeviceBuffer(static_cast<std::size_t>(c.numel()) * sizeof(T));
  if (!x->ok()) {
    return cuda_failure("x", x->error());
  }
  const cudaError_t e =
      CULAYERS_LAUNCH((fill_kernel<T>), dim3(static_cast<unsigned>(max_blocks(4))), dim3(256), 0,
                      bench_stream(), x->as<T>(), c.numel(), c.channels(), c.inner());
  if (e != cudaSuccess) {
    return cuda_failure("fill", e);
  }
  const cudaError_t s = cudaStreamSynchronize(bench_stream());
  return s == cudaSuccess ? std::string() : cuda_failure("fill synchronize", s);
}

/// The [B, T] mask of a masked configuration, uploaded; "" or what failed.
std::string make_mask(const Config& c, DeviceBuffer* mask, std::vector<std::uint8_t>* host) {
  const std::int64_t b = c.dims[0];
  const std::int64_t t = c.dims[1];
  host->assign(static_cast<std::size_t>(b * t), 0);
  for (std::int64_t r = 0; r < b; ++r) {
    const std::int64_t valid = valid_steps(r, t);
    for (std::int64_t s = 0; s < valid; ++s) {
      (*host)[static_cast<std::size_t>(r * t + s)] = 1;
    }
  }
  *mask = DeviceBuffer(host->size());
  if (!mask->ok()) {
    return cuda_failure("mask", mask->error());
  }
  cudaError_t e = cudaMemcpy(mask->data(), host->data(), host->size(), cudaMemcpyHostToDevice);
  if (e == cudaSuccess) {
    e = cudaDeviceSynchronize(); // the DMA of a pageable copy may land after cudaMemcpy returns
  }
  return e == cudaSuccess ? std::string() : cuda_failure("mask upload", e);
}

// ---- reference --------------------------------------------------------------------------------------------

struct Reference {
  std::vector<double> mean;     // per channel: batch mean (training) or the moving mean (inference)
  std::vector<double> variance; // biased batch variance, or the moving variance
  std::int64_t count = 0;       // valid positions per channel (training)
};

/// Statistics of x (downloaded, as float) over the valid positions, in double.
Reference reference_stats(const Config& c, const std::vector<float>& x,
                          const std::vector<std::uint8_t>& mask) {
  const std::int64_t channels = c.channels();
  const std::int64_t inner = c.inner();
  Reference r;
  r.mean.assign(static_cast<std::size_t>(channels), 0.0);
  r.variance.assign(static_cast<std::size_t>(channels), 0.0);
  if (!c.training) {
    for (std::int64_t ch = 0; ch < channels; ++ch) {
      r.mean[static_cast<std::size_t>(ch)] = moving_mean_of(ch);
      r.variance[static_cast<std::size_t>(ch)] = moving_variance_of(ch);
    }
    return r;
  }
  std::vector<std::int64_t> count(static_cast<std::size_t>(channels), 0);
  for (int pass = 0; pass < 2; ++pass) {
    for (std::int64_t i = 0; i < c.numel(); ++i) {
      const std::int64_t ch = (i / inner) % channels;
      if (c.masked && mask[static_cast<std::size_t>(i / channels)] == 0) {
        continue; // channels last [B, T, F]: position i / F is the (b, t) step
      }
      const auto k = static_cast<std::size_t>(ch);
      const double v = x[static_cast<std::size_t>(i)];
      if (pass == 0) {
        r.mean[k] += v;
        count[k] += 1;
      } else {
        r.variance[k] += (v - r.mean[k]) * (v - r.mean[k]);
      }
    }
    for (std::int64_t ch = 0; ch < channels; ++ch) {
      const auto k = static_cast<std::size_t>(ch);
      if (count[k] > 0) {
        (pass == 0 ? r.mean[k] : r.variance[k]) /= static_cast<double>(count[k]);
      }
    }
  }
  r.count = count.empty() ? 0 : count[0];
  return r;
}

/// y (downloaded as float) against the reference (x - mean) / sqrt(variance + epsilon) * gamma + beta:
/// |y - ref| <= k u |ref| + abs_tol, u the output dtype's rounding unit (k = 4 for float32, 2 for the 16-bit
/// types: one rounding of the output), abs_tol covering float32 statistics (the mean's and rsqrt's
/// rounding) on unit-scale data; tight enough that ignoring the mask or using another epsilon fails. Every
/// element.
std::string check_y(const Config& c, DType out_dtype, const std::vector<float>& x,
                    const std::vector<float>& y, const Reference& r) {
  const double u = out_dtype == DType::kFloat32 ? 0x1p-24 : (out_dtype == DType::kFloat16 ? 0x1p-11 : 0x1p-8);
  const double rel = out_dtype == DType::kFloat32 ? 4.0 * u : 2.0 * u;
  const double abs_tol = out_dtype == DType::kFloat32 ? 1e-5 : 1e-4;
  const std::int64_t channels = c.channels();
  const std::int64_t inner = c.inner();
  // Per channel: gamma / sqrt(variance + epsilon), in double (one division per channel, not per element).
  std::vector<double> scale(static_cast<std::size_t>(channels));
  for (std::int64_t ch = 0; ch < channels; ++ch) {
    const auto k = static_cast<std::size_t>(ch);
    scale[k] = static_cast<double>(gamma_of(ch)) / std::sqrt(r.variance[k] + kEpsilon);
  }
  for (std::int64_t i = 0; i < c.numel(); ++i) {
    const auto k = static_cast<std::size_t>((i / inner) % channels);
    const auto ch = static_cast<std::int64_t>(k);
    const double want =
        (x[static_cast<std::size_t>(i)] - r.mean[k]) * scale[k] + static_cast<double>(beta_of(ch));
    const double got = y[static_cast<std::size_t>(i)];
    if (!(std::fabs(got - want) <= rel * std::fabs(want) + abs_tol)) {
      char buf[200];
      std::snprintf(buf, sizeof(buf), "y[%lld] = %.7g, reference %.7g (channel %zu)",
                    static_cast<long long>(i), got, want, k);
      return buf;
    }
  }
  return {};
}

template <class T>
std::string download_floats(const void* device, std::int64_t n, std::vector<float>* out) {
  std::vector<T> raw(static_cast<std::size_t>(n));
  const cudaError_t e = cudaMemcpy(raw.data(), device, raw.size() * sizeof(T), cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) {
    return cuda_failure("download", e);
  }
  out->resize(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    (*out)[i] = host_float(raw[i]);
  }
  return {};
}

// ---- variants -------------------------------------------------------------------------------------------

template <class T>
class Ours final : public Variant {
 public:
  explicit Ours(const Config& c) : cfg_(c) {}

  std::string setup() override {
    nn::BatchNormalizationOptions o;
    o.axis = cfg_.channels_last ? -1 : 1;
    o.momentum = kMomentum;
    o.epsilon = kEpsilon;
    layer_ = std::make_unique<nn::BatchNormalization>(o, "bn", cfg_.dtype);
    if (std::string e = make_input<T>(cfg_, &x_); !e.empty()) {
      return e;
    }
    if (cfg_.masked) {
      if (std::string e = make_mask(cfg_, &mask_, &host_mask_); !e.empty()) {
        return e;
      }
    }
    if (Status s = layer_->build(cfg_.input_shape(), bench_stream()); s != Status::kSuccess) {
      return std::string("build: ") + last_error_message();
    }
    std::vector<float> g(static_cast<std::size_t>(cfg_.channels()));
    std::vector<float> be(g.size());
    for (std::int64_t ch = 0; ch < cfg_.channels(); ++ch) {
      g[static_cast<std::size_t>(ch)] = gamma_of(ch);
      be[static_cast<std::size_t>(ch)] = beta_of(ch);
    }
    nn::Weight* wg = layer_->find_weight("gamma");
    nn::Weight* wb = layer_->find_weight("beta");
    if (wg == nullptr || wb == nullptr ||
        wg->value.copy_from_host(g.data(), g.size() * 4, bench_stream()) != Status::kSuccess ||
        wb->value.copy_from_host(be.data(), be.size() * 4, bench_stream()) != Status::kSuccess) {
      return "setting gamma and beta failed";
    }
    if (!cfg_.training) {
      std::vector<float> m(static_cast<std::size_t>(cfg_.channels()));
      std::vector<float> v(m.size());
      for (std::int64_t ch = 0; ch < cfg_.channels(); ++ch) {
        m[static_cast<std::size_t>(ch)] = moving_mean_of(ch);
        v[static_cast<std::size_t>(ch)] = moving_variance_of(ch);
      }
      nn::Weight* wm = layer_->find_weight("moving_mean");
      nn::Weight* wv = layer_->find_weight("moving_variance");
      if (wm == nullptr || wv == nullptr ||
          wm->value.copy_from_host(m.data(), m.size() * 4, bench_stream()) != Status::kSuccess ||
          wv->value.copy_from_host(v.data(), v.size() * 4, bench_stream()) != Status::kSuccess) {
        return "setting the moving statistics failed";
      }
    }
    const cudaError_t e = cudaStreamSynchronize(bench_stream());
    return e == cudaSuccess ? std::string() : cuda_failure("setup synchronize", e);
  }

  std::string verify() override {
    // One call from the initial moving statistics (0 and 1, or the inference values).
    if (Status s = op(bench_stream()); s != Status::kSuccess) {
      return std::string("call: ") + last_error_message();
    }
    if (cudaError_t e = cudaStreamSynchronize(bench_stream()); e != cudaSuccess) {
      return cuda_failure("synchronize", e);
    }
    // The first call's y for the run-to-run check below, taken before the self-test's perturbation.
    std::vector<T> first(static_cast<std::size_t>(cfg_.numel()));
    if (cudaMemcpy(first.data(), out_.y.data(), first.size() * sizeof(T), cudaMemcpyDeviceToHost) !=
        cudaSuccess) {
      return "download of y failed";
    }
    // The verification self-test (harness.hpp): y, then in training the moving mean and variance.
    std::vector<std::pair<const void*, DType>> outputs = {{out_.y.data(), cfg_.dtype}};
    if (cfg_.training) {
      for (const char* name : {"moving_mean", "moving_variance"}) {
        const nn::Weight* w = layer_->find_weight(name);
        outputs.emplace_back(w != nullptr ? w->value.data() : nullptr, DType::kFloat32);
      }
    }
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      const std::int64_t count = k == 0 ? cfg_.numel() : cfg_.channels();
      if (std::string e = perturb_output(const_cast<void*>(outputs[k].first), outputs[k].second, count);
          !e.empty()) {
        return e;
      }
    }
    std::vector<float> x;
    std::vector<float> y;
    if (std::string e = download_floats<T>(x_.data(), cfg_.numel(), &x); !e.empty()) {
      return e;
    }
    if (std::string e = download_floats<T>(out_.y.data(), cfg_.numel(), &y); !e.empty()) {
      return e;
    }
    const Reference r = reference_stats(cfg_, x, host_mask_);
    if (std::string e = check_y(cfg_, cfg_.dtype, x, y, r); !e.empty()) {
      return e;
    }
    if (cfg_.training) {
      std::vector<float> mm(static_cast<std::size_t>(cfg_.channels()));
      std::vector<float> mv(mm.size());
      const nn::Weight* wm = layer_->find_weight("moving_mean");
      const nn::Weight* wv = layer_->find_weight("moving_variance");
      if (wm == nullptr || wv == nullptr ||
          wm->value.copy_to_host(mm.data(), mm.size() * 4, bench_stream()) != Status::kSuccess ||
          wv->value.copy_to_host(mv.data(), mv.size() * 4, bench_stream()) != Status::kSuccess ||
          cudaStreamSynchronize(bench_stream()) != cudaSuccess) {
        return "reading the moving statistics failed";
      }
      const double n = static_cast<double>(r.count);
      for (std::size_t k = 0; k < mm.size(); ++k) {
        const double want_m = (1.0 - kMomentum) * r.mean[k];
        const double want_v = kMomentum + (1.0 - kMomentum) * r.variance[k] * n / (n - 1.0);
        if (!(std::fabs(mm[k] - want_m) <= 1e-5 + 1e-5 * std::fabs(want_m)) ||
            !(std::fabs(mv[k] - want_v) <= 1e-5 * want_v)) {
          char buf[200];
          std::snprintf(buf, sizeof(buf),
                        "moving statistics of channel %zu: %.7g, %.7g; reference %.7g, %.7g", k, mm[k], mv[k],
                        want_m, want_v);
          return buf;
        }
      }
    }
    // Run to run: a second call gives the same y bits (the moving statistics moved, y does not depend on
    // them in training and they did not change in inference).
    std::vector<T> second(first.size());
    // y (the layer's own output buffer, never x) is poisoned between the calls, so a second call that writes
    // nothing cannot pass.
    if (cudaMemsetAsync(const_cast<void*>(out_.y.data()), 0xff, first.size() * sizeof(T), bench_stream()) !=
            cudaSuccess ||
        op(bench_stream()) != Status::kSuccess || cudaStreamSynchronize(bench_stream()) != cudaSuccess ||
        cudaMemcpy(second.data(), out_.y.data(), second.size() * sizeof(T), cudaMemcpyDeviceToHost) !=
            cudaSuccess) {
      return "second call failed";
    }
    if (std::memcmp(first.data(), second.data(), first.size() * sizeof(T)) != 0) {
      return "a second call gave different output bits";
    }
    return {};
  }

  Status op(cudaStream_t s) override {
    const nn::CallContext ctx{s, cfg_.training ? nn::Phase::kTraining : nn::Phase::kInference, nullptr};
    const ConstTensorView x = ConstTensorView::contiguous(x_.data(), cfg_.dtype, cfg_.input_shape());
    const ConstTensorView mask = cfg_.masked ? ConstTensorView::contiguous(mask_.data(), DType::kUInt8,
                                                                           Shape{cfg_.dims[0], cfg_.dims[1]})
                                             : ConstTensorView{};
    return layer_->call(ctx, x, mask, &out_);
  }

  std::string label() const override {
    if (!cfg_.training) {
      return "BatchNormalization call, inference: apply with the moving statistics";
    }
    return std::string("BatchNormalization call, training: ") +
           (cfg_.channels_last ? "masked_reduce moments over [1, rows, C]" : "per-plane moments + merge") +
           (cfg_.masked ? " (masked)" : "") + ", apply, moving update";
  }
  int x_reads() const override { return cfg_.training ? 2 : 1; }

 private:
  Config cfg_;
  std::unique_ptr<nn::BatchNormalization> layer_;
  DeviceBuffer x_;
  DeviceBuffer mask_;
  std::vector<std::uint8_t> host_mask_;
  nn::LayerOutput out_;
};

#if CULAYERS_BENCH_HAVE_CUDNN

/// cuDNN's batch normalization for cfg with element type T (T differs from cfg.dtype only for the float16
/// fallback of a bfloat16 configuration).
template <class T>
class CudnnBn final : public Variant {
 public:
  /// `ex`: cudnnBatchNormalizationForwardTrainingEx with its workspace and reserve space (training only):
  /// cuDNN's fast NHWC kernels run only through that call (with SPATIAL_PERSISTENT and a workspace; without
  /// one it behaves as the plain call), as frameworks call it for channels-last batch norm.
  CudnnBn(const Config& c, cudnnBatchNormMode_t mode, bool ex = false) : cfg_(c), mode_(mode), ex_(ex) {}
  ~CudnnBn() override {
    if (x_desc_ != nullptr) {
      cudnn().destroy_tensor(x_desc_);
    }
    if (p_desc_ != nullptr) {
      cudnn().destroy_tensor(p_desc_);
    }
  }
  CudnnBn(const CudnnBn&) = delete;
  CudnnBn& operator=(const CudnnBn&) = delete;

  std::string setup() override {
    const Cudnn& dnn = cudnn();
    if (!dnn.error.empty()) {
      return dnn.error;
    }
    const std::int64_t channels = cfg_.channels();
    if (std::string e = make_input<T>(cfg_, &x_); !e.empty()) {
      return e;
    }
    y_ = DeviceBuffer(x_.bytes());
    const std::size_t vec = static_cast<std::size_t>(channels) * 4;
    for (DeviceBuffer* b : {&scale_, &bias_, &mean_, &variance_, &saved_mean_, &saved_inv_std_}) {
      *b = DeviceBuffer(vec);
    }
    for (const DeviceBuffer* b : {&y_, &scale_, &bias_, &mean_, &variance_, &saved_mean_, &saved_inv_std_}) {
      if (!b->ok()) {
        return cuda_failure("cuDNN buffers", b->error());
      }
    }
    std::vector<float> g(static_cast<std::size_t>(channels));
    std::vector<float> be(g.size());
    std::vector<float> m(g.size());
    std::vector<float> v(g.size());
    for (std::int64_t ch = 0; ch < channels; ++ch) {
      const auto k = static_cast<std::size_t>(ch);
      g[k] = gamma_of(ch);
      be[k] = beta_of(ch);
      m[k] = cfg_.training ? 0.0f : moving_mean_of(ch);
      v[k] = cfg_.training ? 1.0f : moving_variance_of(ch);
    }
    const std::pair<DeviceBuffer*, const std::vector<float>*> uploads[] = {
        {&scale_, &g}, {&bias_, &be}, {&mean_, &m}, {&variance_, &v}};
    for (const auto& [b, h] : uploads) {
      if (cudaError_t e = cudaMemcpy(b->data(), h->data(), vec, cudaMemcpyHostToDevice); e != cudaSuccess) {
        return cuda_failure("cuDNN upload", e);
      }
    }
    // A pageable cudaMemcpy may return before its DMA lands, and the legacy stream does not order the
    // non-blocking bench stream: wait for the uploads.
    if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
      return cuda_failure("cuDNN upload synchronize", e);
    }
    if (dnn.create_tensor(&x_desc_) != CUDNN_STATUS_SUCCESS ||
        dnn.create_tensor(&p_desc_) != CUDNN_STATUS_SUCCESS) {
      return "cudnnCreateTensorDescriptor failed";
    }
    cudnnStatus_t s =
        dnn.set_tensor_4d(x_desc_, cfg_.channels_last ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
                          cudnn_type<T>(), static_cast<int>(cfg_.dims[0]), static_cast<int>(channels),
                          static_cast<int>(cfg_.numel() / (cfg_.dims[0] * channels)), 1);
    if (s == CUDNN_STATUS_SUCCESS) {
      s = dnn.set_tensor_4d(p_desc_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, static_cast<int>(channels), 1,
                            1);
    }
    if (s != CUDNN_STATUS_SUCCESS) {
      return cudnn_failure("cudnnSetTensor4dDescriptor", s);
    }
    if (ex_) {
      if (!cfg_.training || dnn.bn_forward_training_ex == nullptr ||
          dnn.bn_training_ex_workspace == nullptr || dnn.bn_training_ex_reserve == nullptr) {
        last_status_ = CUDNN_STATUS_NOT_SUPPORTED;
        return "cudnnBatchNormalizationForwardTrainingEx: not available here (training only)" +
               (dnn.ex_error.empty() ? std::string() : ": " + dnn.ex_error);
      }
      std::size_t ws = 0;
      std::size_t reserve = 0;
      // zDesc as PyTorch passes it to the size query (the x descriptor; null in the call itself).
      s = dnn.bn_training_ex_workspace(dnn.handle, mode_, CUDNN_BATCHNORM_OPS_BN, x_desc_, x_desc_, x_desc_,
                                       p_desc_, nullptr, &ws);
      if (s == CUDNN_STATUS_SUCCESS) {
        s = dnn.bn_training_ex_reserve(dnn.handle, mode_, CUDNN_BATCHNORM_OPS_BN, nullptr, x_desc_, &reserve);
      }
      if (s != CUDNN_STATUS_SUCCESS) {
        last_status_ = s;
        return cudnn_failure("cudnnBatchNormalizationForwardTrainingEx sizes", s);
      }
      // Without a workspace the extended call is the plain one (cuDNN's NHWC kernels take float16 only):
      // not a candidate of its own, so a bfloat16 case goes on to the float16 extended call.
      if (ws == 0) {
        last_status_ = CUDNN_STATUS_NOT_SUPPORTED;
        return "cudnnBatchNormalizationForwardTrainingEx: no workspace for this dtype and layout (the plain "
               "call's path)";
      }
      workspace_ = DeviceBuffer(ws);
      reserve_ = DeviceBuffer(reserve);
      if ((ws > 0 && !workspace_.ok()) || (reserve > 0 && !reserve_.ok())) {
        return cuda_failure("cuDNN Ex workspace",
                            ws > 0 && !workspace_.ok() ? workspace_.error() : reserve_.error());
      }
    }
    // A first run tells whether cuDNN takes this dtype, layout and mode.
    if (Status st = op(bench_stream()); st != Status::kSuccess) {
      return last_error_message();
    }
    const cudaError_t e = cudaStreamSynchronize(bench_stream());
    return e == cudaSuccess ? std::string() : cuda_failure("cuDNN synchronize", e);
  }

  std::string verify() override {
    // From the initial running statistics again (setup's run moved them).
    if (cfg_.training) {
      std::vector<float> zeros(static_cast<std::size_t>(cfg_.channels()), 0.0f);
      std::vector<float> ones(zeros.size(), 1.0f);
      if (cudaMemcpy(mean_.data(), zeros.data(), mean_.bytes(), cudaMemcpyHostToDevice) != cudaSuccess ||
          cudaMemcpy(variance_.data(), ones.data(), variance_.bytes(), cudaMemcpyHostToDevice) !=
              cudaSuccess ||
          cudaDeviceSynchronize() != cudaSuccess) {
        return "cuDNN: resetting the running statistics failed";
      }
    }
    if (Status st = op(bench_stream()); st != Status::kSuccess) {
      return last_error_message();
    }
    if (cudaError_t e = cudaStreamSynchronize(bench_stream()); e != cudaSuccess) {
      return cuda_failure("cuDNN synchronize", e);
    }
    // The verification self-test (harness.hpp): y, then in training the saved mean.
    if (std::string e = perturb_output(y_.data(), dtype_of<T>(), cfg_.numel()); !e.empty()) {
      return e;
    }
    if (cfg_.training) {
      if (std::string e = perturb_output(saved_mean_.data(), DType::kFloat32, cfg_.channels()); !e.empty()) {
        return e;
      }
    }
    std::vector<float> x;
    std::vector<float> y;
    if (std::string e = download_floats<T>(x_.data(), cfg_.numel(), &x); !e.empty()) {
      return e;
    }
    if (std::string e = download_floats<T>(y_.data(), cfg_.numel(), &y); !e.empty()) {
      return e;
    }
    const Reference r = reference_stats(cfg_, x, {});
    if (std::string e = check_y(cfg_, dtype_of<T>(), x, y, r); !e.empty()) {
      return "cuDNN " + e;
    }
    if (cfg_.training) {
      std::vector<float> saved(static_cast<std::size_t>(cfg_.channels()));
      if (cudaMemcpy(saved.data(), saved_mean_.data(), saved_mean_.bytes(), cudaMemcpyDeviceToHost) !=
          cudaSuccess) {
        return "cuDNN: reading the saved mean failed";
      }
      for (std::size_t k = 0; k < saved.size(); ++k) {
        if (!(std::fabs(saved[k] - r.mean[k]) <= 1e-4 + 1e-5 * std::fabs(r.mean[k]))) {
          char buf[160];
          std::snprintf(buf, sizeof(buf), "cuDNN saved mean of channel %zu: %.7g, reference %.7g", k,
                        saved[k], r.mean[k]);
          return buf;
        }
      }
    }
    return {};
  }

  Status op(cudaStream_t s) override {
    const Cudnn& dnn = cudnn();
    const float one = 1.0f;
    const float zero = 0.0f;
    cudnnStatus_t cs = dnn.set_stream(dnn.handle, s);
    if (cs == CUDNN_STATUS_SUCCESS && cfg_.training && ex_) {
      cs = dnn.bn_forward_training_ex(
          dnn.handle, mode_, CUDNN_BATCHNORM_OPS_BN, &one, &zero, x_desc_, x_.data(), nullptr, nullptr,
          x_desc_, y_.data(), p_desc_, scale_.data(), bias_.data(), 1.0 - static_cast<double>(kMomentum),
          mean_.data(), variance_.data(), static_cast<double>(kEpsilon), saved_mean_.data(),
          saved_inv_std_.data(), nullptr, workspace_.bytes() > 0 ? workspace_.data() : nullptr,
          workspace_.bytes(), reserve_.bytes() > 0 ? reserve_.data() : nullptr, reserve_.bytes());
    } else if (cs == CUDNN_STATUS_SUCCESS && cfg_.training) {
      cs = dnn.bn_forward_training(dnn.handle, mode_, &one, &zero, x_desc_, x_.data(), x_desc_, y_.data(),
                                   p_desc_, scale_.data(), bias_.data(), 1.0 - static_cast<double>(kMomentum),
                                   mean_.data(), variance_.data(), static_cast<double>(kEpsilon),
                                   saved_mean_.data(), saved_inv_std_.data());
    } else if (cs == CUDNN_STATUS_SUCCESS) {
      cs = dnn.bn_forward_inference(dnn.handle, mode_, &one, &zero, x_desc_, x_.data(), x_desc_, y_.data(),
                                    p_desc_, scale_.data(), bias_.data(), mean_.data(), variance_.data(),
                                    static_cast<double>(kEpsilon));
    }
    last_status_ = cs;
    if (cs != CUDNN_STATUS_SUCCESS) {
      return detail::set_error(Status::kErrorCudaRuntime, "cudnnBatchNormalizationForward%s%s (%s, %s): %s",
                               cfg_.training ? "Training" : "Inference", ex_ ? "Ex" : "", mode_name(),
                               dtype_tag(dtype_of<T>()), dnn.error_string(cs));
    }
    return Status::kSuccess;
  }

  std::string label() const override {
    std::string l =
        cudnn_version_string() + " BN " +
        (cfg_.training ? (ex_ ? "ForwardTrainingEx (workspace " + std::to_string(workspace_.bytes()) + " B) "
                              : std::string("ForwardTraining "))
                       : std::string("ForwardInference ")) +
        mode_name() + " " + (cfg_.channels_last ? "NHWC " : "NCHW ") + dtype_tag(dtype_of<T>());
    if (dtype_of<T>() != cfg_.dtype) {
      l += ex_ ? " (float16 over the same bytes: cuDNN's NHWC kernels)" : " (float16 over the same bytes)";
    }
    return l;
  }
  // cuDNN 9 also answers NOT_SUPPORTED with detailed codes (3001, ...): the category.
  bool unsupported() const override {
    return CUDNN_STATUS_CATEGORY(last_status_) == CUDNN_STATUS_NOT_SUPPORTED;
  }

 private:
  const char* mode_name() const {
    return mode_ == CUDNN_BATCHNORM_SPATIAL_PERSISTENT ? "SPATIAL_PERSISTENT" : "SPATIAL";
  }

  Config cfg_;
  cudnnBatchNormMode_t mode_;
  bool ex_ = false;
  DeviceBuffer workspace_; // Ex only
  DeviceBuffer reserve_;   // Ex only
  DeviceBuffer x_;
  DeviceBuffer y_;
  DeviceBuffer scale_;
  DeviceBuffer bias_;
  DeviceBuffer mean_;
  DeviceBuffer variance_;
  DeviceBuffer saved_mean_;
  DeviceBuffer saved_inv_std_;
  cudnnTensorDescriptor_t x_desc_ = nullptr;
  cudnnTensorDescriptor_t p_desc_ = nullptr;
  cudnnStatus_t last_status_ = CUDNN_STATUS_SUCCESS;
};

// Channels-last training first tries the extended call (SPATIAL_PERSISTENT with a workspace: cuDNN's NHWC
// kernels), in the configuration's dtype and, for bfloat16, in float16 over the same bytes; then the plain
// calls as below. The fastest candidate that verifies is timed (run_fastest_candidate).
int cudnn_ex_candidates(const Config& c) {
  if (!c.training || !c.channels_last) {
    return 0;
  }
  return c.dtype == DType::kBFloat16 ? 2 : 1;
}

int cudnn_candidates(const Config& c) {
  return cudnn_ex_candidates(c) + (c.dtype == DType::kBFloat16 ? 4 : 2);
}

std::unique_ptr<Variant> make_cudnn(const Config& c, int candidate) {
  const int ex = cudnn_ex_candidates(c);
  if (candidate < ex) {
    if (candidate == 1) {
      return std::make_unique<CudnnBn<__half>>(c, CUDNN_BATCHNORM_SPATIAL_PERSISTENT, true);
    }
    if (c.dtype == DType::kFloat32) {
      return std::make_unique<CudnnBn<float>>(c, CUDNN_BATCHNORM_SPATIAL_PERSISTENT, true);
    }
    return std::make_unique<CudnnBn<__nv_bfloat16>>(c, CUDNN_BATCHNORM_SPATIAL_PERSISTENT, true);
  }
  candidate -= ex;
  const cudnnBatchNormMode_t mode =
      candidate % 2 == 0 ? CUDNN_BATCHNORM_SPATIAL_PERSISTENT : CUDNN_BATCHNORM_SPATIAL;
  if (candidate >= 2) {
    return std::make_unique<CudnnBn<__half>>(c, mode); // float16 over the same bytes
  }
  if (c.dtype == DType::kFloat32) {
    return std::make_unique<CudnnBn<float>>(c, mode);
  }
  return std::make_unique<CudnnBn<__nv_bfloat16>>(c, mode);
}

#endif // CULAYERS_BENCH_HAVE_CUDNN

// ---- benchmark functions ----------------------------------------------------------------------------------

void BM_ours(benchmark::State& st, Config c) {
  std::unique_ptr<Variant> v;
  if (c.dtype == DType::kFloat32) {
    v = std::make_unique<Ours<float>>(c);
  } else {
    v = std::make_unique<Ours<__nv_bfloat16>>(c);
  }
  run_variant(st, config_name(c, "ours"), model_bytes(c), *v);
}

#if CULAYERS_BENCH_HAVE_CUDNN
void BM_cudnn(benchmark::State& st, Config c) {
  if (!cudnn().error.empty()) {
    st.SkipWithError(cudnn().error.c_str());
    return;
  }
  // cuDNN answering NOT_SUPPORTED for every candidate makes the case a baseline that cannot run here.
  run_fastest_candidate(st, config_name(c, "cudnn"), model_bytes(c), cudnn_candidates(c),
                        [&](int i) { return make_cudnn(c, i); });
}
#else
void BM_cudnn(benchmark::State& st, Config) {
  st.SkipWithError((std::string(kBaselineUnavailable) + "built without cudnn.h").c_str());
}
#endif

void BM_copy(benchmark::State& st, std::uint64_t bytes) {
  DeviceBuffer src(bytes / 2);
  DeviceBuffer dst(bytes / 2);
  if (!check_buffer(st, src, "copy source") || !check_buffer(st, dst, "copy destination")) {
    return;
  }
  const TimedOp op = [&](cudaStream_t s) {
    return cudaMemcpyAsync(dst.data(), src.data(), bytes / 2, cudaMemcpyDeviceToDevice, s) == cudaSuccess
               ? Status::kSuccess
               : Status::kErrorCudaRuntime;
  };
  // Verified as every other case: a byte pattern in, the same bytes out (the destination poisoned first).
  const bool verified = verify_once(st, "copy/" + std::to_string(bytes), [&]() -> std::string {
    cudaStream_t s = bench_stream();
    if (cudaMemsetAsync(src.data(), 0x5a, bytes / 2, s) != cudaSuccess ||
        cudaMemsetAsync(dst.data(), 0xff, bytes / 2, s) != cudaSuccess || op(s) != Status::kSuccess ||
        cudaStreamSynchronize(s) != cudaSuccess) {
      return "cudaMemcpyAsync failed";
    }
    std::vector<unsigned char> got(bytes / 2);
    if (cudaMemcpy(got.data(), dst.data(), got.size(), cudaMemcpyDeviceToHost) != cudaSuccess) {
      return "download";
    }
    for (unsigned char b : got) {
      if (b != 0x5a) {
        return "copy differs";
      }
    }
    return {};
  });
  if (!verified) {
    return;
  }
  run_timed(st, bytes, op);
  st.SetLabel("cudaMemcpyAsync D2D, bytes/2 read + bytes/2 written");
}

// ---- registration -----------------------------------------------------------------------------------------

std::vector<Config> all_configs() {
  std::vector<Config> out;
  for (const DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    for (const bool cl : {false, true}) {
      for (const bool training : {true, false}) {
        Config c;
        c.shape = "resnet_N32_C256_56x56";
        c.dims = cl ? std::vector<std::int64_t>{32, 56, 56, 256} : std::vector<std::int64_t>{32, 256, 56, 56};
        c.channels_last = cl;
        c.dtype = dtype;
        c.training = training;
        out.push_back(c);
      }
    }
  }
  for (const int kind : {0, 1, 2}) { // training, training with a mask, inference
    Config c;
    c.shape = "seq_B128_T512_F768";
    c.dims = {128, 512, 768};
    c.channels_last = true;
    c.dtype = DType::kBFloat16;
    c.training = kind < 2;
    c.masked = kind == 1;
    out.push_back(c);
  }
  return out;
}

bool register_all() {
  std::map<std::string, std::uint64_t> copies; // one per shape and dtype, training bytes
  for (const Config& c : all_configs()) {
    const std::int64_t iterations = iterations_for(model_bytes(c));
    benchmark::RegisterBenchmark(config_name(c, "ours").c_str(), BM_ours, c)
        ->Apply(configure)
        ->Iterations(iterations);
    if (!c.masked) {
      benchmark::RegisterBenchmark(config_name(c, "cudnn").c_str(), BM_cudnn, c)
          ->Apply(configure)
          ->Iterations(iterations);
    }
    if (c.training && !c.masked) {
      copies.emplace(std::string("batch_norm/") + c.shape + "/" + dtype_tag(c.dtype) + "/copy_same_bytes",
                     model_bytes(c));
    }
  }
  for (const auto& [name, bytes] : copies) {
    benchmark::RegisterBenchmark(name.c_str(), BM_copy, bytes)
        ->Apply(configure)
        ->Iterations(iterations_for(bytes));
  }
  return true;
}

[[maybe_unused]] const bool kRegistered = register_all();

} // namespace
} // namespace bench
} // namespace culayers
