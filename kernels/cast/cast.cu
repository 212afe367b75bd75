// The cast op (include/culayers/cast.hpp): validation, the plan (vector width, grid) and the conversion
// kernel for every pair of activation dtypes.
#include "kernels/common/arg_checks.hpp"
#include "kernels/common/common.cuh"
#include "kernels/common/device_info.cuh"

#include "culayers/cast.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace cast {
namespace {

// 256 threads per block and threads_per_sm / 256 blocks per SM: one 16-byte load of the wider dtype in
// flight per resident thread, 32 KB per sm_90 SM, above HBM3's bandwidth x latency per SM (~18 KB; the
// same budget as batch_norm_apply, which measured 93-100 % of a copy on an H100).
constexpr int kThreads = 256;

struct Params {
  const void* x;
  void* y;
  std::int64_t count;
};

/// The canonical NaN of each dtype (PTX's: all exponent and mantissa bits set, sign clear), written by every
/// conversion of a NaN: the hardware conversions disagree on a NaN's bits (bfloat16 -> float32 is a shift
/// that keeps a signaling NaN and its payload before sm_90, a cvt after; the emulator's host conversions
/// drop the sign or keep it), so a fixed pattern keeps the backends bit-identical.
template <class T>
CULAYERS_DEVICE T canonical_nan() {
  if constexpr (std::is_same_v<T, float>) {
    return __int_as_float(0x7fffffff);
  } else if constexpr (std::is_same_v<T, __half>) {
    __half_raw r;
    r.x = 0x7fff;
    return __half(r);
  } else {
    __nv_bfloat16_raw r;
    r.x = 0x7fff;
    return __nv_bfloat16(r);
  }
}

/// Converts one element through float32 (exact for float16 and bfloat16, so one rounding); a NaN becomes
/// the target's canonical NaN; a same-dtype cast copies the bits.
template <class From, class To>
CULAYERS_DEVICE To convert(From v) {
  if constexpr (std::is_same_v<From, To>) {
    return v;
  } else {
    const float f = to_float<From>(v);
    return f != f ? canonical_nan<To>() : from_float<To>(f);
  }
}

template <class From, class To, int V>
CULAYERS_GLOBAL void __launch_bounds__(kThreads) cast_kernel(const Params p) {
  const From* x = static_cast<const From*>(p.x);
  To* y = static_cast<To*>(p.y);
  const std::int64_t tid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t nvec = p.count / V;
  for (std::int64_t i = tid; i < nvec; i += stride) {
    const Vec<From, V> in = load_vec<V, CacheHint::kStreaming>(x + i * V);
    Vec<To, V> out;
    CULAYERS_PRAGMA_UNROLL
    for (int k = 0; k < V; ++k) {
      out[k] = convert<From, To>(in[k]);
    }
    store_vec<V, CacheHint::kStreaming>(y + i * V, out);
  }
  if constexpr (V > 1) {
    // The last count % V elements (< V <= the threads of the first block): one per thread.
    const std::int64_t t = nvec * V + tid;
    if (t < p.count) {
      store(y + t, convert<From, To>(load(x + t)));
    }
  }
}

template <class From, class To>
cudaError_t launch_width(int vec, unsigned blocks, const Params& p, cudaStream_t stream) {
  const dim3 grid(blocks);
  const dim3 block(kThreads);
  constexpr int kWidest = static_cast<int>(16 / std::max(sizeof(From), sizeof(To)));
  switch (vec) {
  case 2:
    return CULAYERS_LAUNCH((cast_kernel<From, To, 2>), grid, block, 0, stream, p);
  case 4:
    return CULAYERS_LAUNCH((cast_kernel<From, To, 4>), grid, block, 0, stream, p);
  case 8:
    if constexpr (kWidest >= 8) {
      return CULAYERS_LAUNCH((cast_kernel<From, To, 8>), grid, block, 0, stream, p);
    }
    break;
  default:
    break;
  }
  return CULAYERS_LAUNCH((cast_kernel<From, To, 1>), grid, block, 0, stream, p);
}

} // namespace
} // namespace cast
} // namespace kernels

namespace cast {
namespace {

using ::culayers::detail::set_error;
using kernels::misaligned;
using kernels::overlaps;

constexpr const char* kOp = "cast";

Status check(const CastArgs& a) {
  const struct {
    DType d;
    const char* name;
  } dtypes[] = {{a.x_dtype, "x_dtype"}, {a.y_dtype, "y_dtype"}};
  for (const auto& d : dtypes) {
    if (!is_floating_point(d.d)) {
      return set_error(Status::kErrorInvalidDType, "%s: %s: %s (%d) is not float32, float16 or bfloat16", kOp,
                       d.name, dtype_name(d.d), static_cast<int>(d.d));
    }
  }
  if (a.count < 0) {
    return set_error(Status::kErrorInvalidShape, "%s: count: %lld is negative", kOp,
                     static_cast<long long>(a.count));
  }
  std::int64_t bytes = 0;
  if (!culayers::detail::checked_mul(a.count, 16, &bytes)) {
    return set_error(Status::kErrorSizeLimit, "%s: count: %lld overflows 64-bit byte offsets", kOp,
                     static_cast<long long>(a.count));
  }
  const int vw = a.vector_width;
  const std::size_t wide = std::max(dtype_size(a.x_dtype), dtype_size(a.y_dtype));
  if (vw != 0 && ((vw != 1 && vw != 2 && vw != 4 && vw != 8) || static_cast<std::size_t>(vw) * wide > 16)) {
    return set_error(Status::kErrorInvalidValue,
                     "%s: vector_width: %d is not 0, or 1, 2, 4, 8 with at most 16 bytes of %s", kOp, vw,
                     dtype_name(dtype_size(a.x_dtype) >= dtype_size(a.y_dtype) ? a.x_dtype : a.y_dtype));
  }
  if (a.max_blocks < 0) {
    return set_error(Status::kErrorInvalidValue, "%s: max_blocks: %d is negative", kOp, a.max_blocks);
  }
  if (a.count > 0 && (a.x == nullptr || a.y == nullptr)) {
    return set_error(Status::kErrorNullPointer, "%s: %s: is null", kOp, a.x == nullptr ? "x" : "y");
  }
  const std::size_t xe = dtype_size(a.x_dtype);
  const std::size_t ye = dtype_size(a.y_dtype);
  if (misaligned(a.x, xe) || misaligned(a.y, ye)) {
    return set_error(Status::kErrorMisaligned, "%s: %s: not aligned to its %zu-byte elements", kOp,
                     misaligned(a.x, xe) ? "x" : "y", misaligned(a.x, xe) ? xe : ye);
  }
  const std::size_t n = static_cast<std::size_t>(a.count);
  const bool in_place = a.x == a.y && xe == ye;
  if (!in_place && overlaps(a.x, n * xe, a.y, n * ye)) {
    return set_error(Status::kErrorInconsistentArguments,
                     "%s: y: overlaps x (allowed only as y == x with dtypes of the same size)", kOp);
  }
  return Status::kSuccess;
}

/// Widest V (power of two, V x the wider element <= 16 bytes, V <= cap when cap > 0) with x and y aligned
/// to V elements.
int widest_vector(const CastArgs& a) {
  const std::size_t xe = dtype_size(a.x_dtype);
  const std::size_t ye = dtype_size(a.y_dtype);
  int v = static_cast<int>(16 / std::max(xe, ye));
  if (a.vector_width > 0) {
    v = std::min(v, a.vector_width);
  }
  while (v > 1 && (misaligned(a.x, static_cast<std::size_t>(v) * xe) ||
                   misaligned(a.y, static_cast<std::size_t>(v) * ye))) {
    v /= 2;
  }
  return v;
}

} // namespace

Status can_implement(const CastArgs& args) {
  return check(args);
}

std::size_t workspace_size(const CastArgs&) {
  return 0;
}

int selected_vector_width(const CastArgs& args) {
  return ok(check(args)) ? widest_vector(args) : 0;
}

Status run(const CastArgs& args, void*, std::size_t, cudaStream_t stream) {
  if (Status s = check(args); !ok(s)) {
    return s;
  }
  if (args.count == 0) {
    return Status::kSuccess;
  }
  namespace kc = kernels::cast;
  const int vec = widest_vector(args);
  std::int64_t cap = args.max_blocks;
  if (cap == 0) {
    kernels::DeviceInfo info{};
    if (Status s = kernels::device_info(&info, kOp); !ok(s)) {
      return s;
    }
    cap = static_cast<std::int64_t>(std::max(1, info.threads_per_sm / kc::kThreads)) * info.sm_count;
  }
  const std::int64_t needed = std::max<std::int64_t>(1, (args.count / vec + kc::kThreads - 1) / kc::kThreads);
  const auto blocks = static_cast<unsigned>(std::min(needed, cap));
  const kc::Params p{args.x, args.y, args.count};
  const cudaError_t e = kernels::with_activation_type(args.x_dtype, [&](auto from) {
    return kernels::with_activation_type(args.y_dtype, [&](auto to) {
      return kc::launch_width<decltype(from), decltype(to)>(vec, blocks, p, stream);
    });
  });
  return kernels::check_launch(e, kOp);
}

} // namespace cast
CULAYERS_NAMESPACE_END
