// The cast op (culayers/cast.hpp) on a 8192x4096 tensor (the shape of docs/performance.md's shape 7) for
// the conversions the layers' autocast meets most: float32 -> bfloat16 and back, float16 -> bfloat16 and
// float32 -> float16, against
//   - CUB's cub::DeviceTransform::Transform with the same conversion (CCCL's generic elementwise kernel,
//     the natural peer of a hand-written one),
//   - the device-to-device copy of the same bytes, through the harness's pct_of_copy counter.
// Both are verified bit for bit against the host's conversion (round to nearest even) before timing
// (one output for the verification self-test: y).
//
// Byte model (counters "bytes", "GB/s"): x read once and y written once, (in + out element bytes) x n.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <benchmark/benchmark.h>
#include <cub/device/device_transform.cuh>
#include <cuda/std/tuple>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bench/harness.hpp"
#include "culayers/cast.hpp"

namespace culayers {
namespace bench {
namespace {

struct Case {
  DType from;
  DType to;
  std::int64_t rows;
  std::int64_t cols;
};

const char* tag(DType d) {
  return d == DType::kFloat32 ? "f32" : (d == DType::kFloat16 ? "f16" : "bf16");
}

std::string case_name(const Case& c, const char* who) {
  return std::string("cast/") + std::to_string(c.rows) + "x" + std::to_string(c.cols) + "/" + tag(c.from) +
         "_to_" + tag(c.to) + "/" + who;
}

std::uint64_t model_bytes(const Case& c) {
  return static_cast<std::uint64_t>(c.rows * c.cols) * (dtype_size(c.from) + dtype_size(c.to));
}

// Values of element i: a spread of magnitudes (2^-20 .. 2^20, both signs) with full float32 mantissas, so
// the narrowing conversions round (and tie) everywhere.
float value_at(std::int64_t i) {
  std::uint64_t z = static_cast<std::uint64_t>(i) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9ull;
  z ^= z >> 29;
  const int e = static_cast<int>(z >> 58) - 20;                         // -20 .. 43, clamped below
  const float m = 1.0f + static_cast<float>(z & 0x7fffff) / 8388608.0f; // [1, 2)
  const float v = std::ldexp(m, e > 20 ? e - 40 : e);
  return (z >> 57) & 1 ? -v : v;
}

/// The conversion both peers run (and the host's reference): through float32, rounding to nearest even.
template <class From, class To>
struct Convert {
  __host__ __device__ To operator()(From v) const { return from_f_dev(to_f_dev(v)); }
  static __host__ __device__ float to_f_dev(float v) { return v; }
  static __host__ __device__ float to_f_dev(__half v) { return __half2float(v); }
  static __host__ __device__ float to_f_dev(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __host__ __device__ To from_f_dev(float v) {
    if constexpr (std::is_same_v<To, float>) {
      return v;
    } else if constexpr (std::is_same_v<To, __half>) {
      return __float2half_rn(v);
    } else {
      return __float2bfloat16_rn(v);
    }
  }
};

/// Calls f(from, to) with values of the C++ types of the case's dtypes.
template <class F>
void with_types(const Case& c, F&& f) {
  const auto with_to = [&](auto from) {
    switch (c.to) {
    case DType::kFloat16:
      f(from, __half{});
      break;
    case DType::kBFloat16:
      f(from, __nv_bfloat16{});
      break;
    default:
      f(from, float{});
      break;
    }
  };
  switch (c.from) {
  case DType::kFloat16:
    with_to(__half{});
    break;
  case DType::kBFloat16:
    with_to(__nv_bfloat16{});
    break;
  default:
    with_to(float{});
    break;
  }
}

void BM_cast(benchmark::State& st, Case c, bool cub) {
  const std::int64_t n = c.rows * c.cols;
  DeviceBuffer x(static_cast<std::size_t>(n) * dtype_size(c.from));
  DeviceBuffer y(static_cast<std::size_t>(n) * dtype_size(c.to));
  if (!check_buffer(st, x, "x") || !check_buffer(st, y, "y")) {
    return;
  }
  bool ok = true;
  with_types(c, [&](auto from, auto to) {
    using From = decltype(from);
    using To = decltype(to);
    std::vector<From> host(static_cast<std::size_t>(n));
    parallel_for(n, 1 << 16, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t i = begin; i < end; ++i) {
        host[static_cast<std::size_t>(i)] = Convert<float, From>{}(value_at(i));
      }
    });
    if (!check_cuda(st, cudaMemcpy(x.data(), host.data(), x.bytes(), cudaMemcpyHostToDevice), "upload") ||
        !check_cuda(st, cudaDeviceSynchronize(), "upload")) {
      ok = false;
      return;
    }
    const TimedOp op = [&](cudaStream_t s) -> Status {
      if (cub) {
        return cub::DeviceTransform::Transform(::cuda::std::make_tuple(x.as<From>()), y.as<To>(), n,
                                               Convert<From, To>{}, s) == cudaSuccess
                   ? Status::kSuccess
                   : Status::kErrorCudaRuntime;
      }
      cast::CastArgs a;
      a.x_dtype = c.from;
      a.x = x.data();
      a.y_dtype = c.to;
      a.y = y.data();
      a.count = n;
      return cast::run(a, nullptr, 0, s);
    };
    ok = verify_once(st, case_name(c, cub ? "cub" : "ours"), [&]() -> std::string {
      cudaStream_t s = bench_stream();
      if (cudaMemsetAsync(y.data(), 0xff, y.bytes(), s) != cudaSuccess || op(s) != Status::kSuccess ||
          cudaStreamSynchronize(s) != cudaSuccess) {
        return "the cast failed";
      }
      // The verification self-test (harness.hpp): y.
      if (std::string e = perturb_output(y.data(), c.to, n); !e.empty()) {
        return e;
      }
      std::vector<To> got(static_cast<std::size_t>(n));
      if (cudaMemcpy(got.data(), y.data(), y.bytes(), cudaMemcpyDeviceToHost) != cudaSuccess) {
        return "download";
      }
      // Every element, on all host cores: the first that differs in memory order.
      const Convert<From, To> conv{};
      const std::int64_t bad = first_index_where(n, 1 << 16, [&](std::int64_t i) {
        const To want = conv(host[static_cast<std::size_t>(i)]);
        return std::memcmp(&want, &got[static_cast<std::size_t>(i)], sizeof(To)) != 0;
      });
      if (bad < n) {
        return "element " + std::to_string(bad) + " differs from the host's conversion";
      }
      return {};
    });
    if (ok) {
      run_timed(st, model_bytes(c), op);
      st.SetLabel(cub ? "cub::DeviceTransform::Transform" : "culayers::cast::run");
    }
  });
  (void)ok;
}

bool register_all() {
  const Case cases[] = {{DType::kFloat32, DType::kBFloat16, 8192, 4096},
                        {DType::kBFloat16, DType::kFloat32, 8192, 4096},
                        {DType::kFloat16, DType::kBFloat16, 8192, 4096},
                        {DType::kFloat32, DType::kFloat16, 8192, 4096}};
  for (const Case& c : cases) {
    for (const bool cub : {false, true}) {
      benchmark::RegisterBenchmark(case_name(c, cub ? "cub" : "ours").c_str(), BM_cast, c, cub)
          ->Apply(configure)
          ->Iterations(iterations_for(model_bytes(c)));
    }
  }
  return true;
}

[[maybe_unused]] const bool kRegistered = register_all();

} // namespace
} // namespace bench
} // namespace culayers
