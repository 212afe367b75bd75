// Keras Masking (mask creation, optionally zeroing masked steps) and mask expansion for a flattened
// output. Both are streaming kernels: x is read once, outputs written once (see MaskingArgs for the one
// exception).
#include "kernels/masked/masked_reduce_device.cuh"

#include <cstdint>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace masked {
namespace {

/// A team of p.team lanes (a power of two <= 32) per row (o, r); a warp holds 32 / team rows. Lanes stream
/// over the row's vectors, copying them to y on the way and noting whether any element differs from the
/// mask value; a ballot gives the team's answer. A masked row holding anything but +0.0 bits is then
/// zeroed by the lanes that wrote it (each lane rewrites only its own vectors, so program order alone
/// makes the zeros final).
template <class T, int N>
CULAYERS_GLOBAL void __launch_bounds__(kNarrowThreads) masking_kernel(const MaskingParams p) {
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int team = p.team;
  const int l = lane % team;
  const int t = lane / team;
  const std::int64_t teams_per_warp = kWarpSize / team;
  const std::int64_t warps_per_block = blockDim.x / kWarpSize;
  const std::int64_t warp = static_cast<std::int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / kWarpSize;
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * warps_per_block;
  const std::int64_t vecs = p.inner / N;
  const unsigned team_mask = team == kWarpSize ? kFullMask : ((1u << team) - 1u) << (t * team);

  for (std::int64_t base = warp * teams_per_warp; base < p.rows; base += warps * teams_per_warp) {
    const std::int64_t row = base + t;
    const bool in = row < p.rows;
    bool any = false;
    bool dirty = false;
    if (in) {
      for (std::int64_t v = l; v < vecs; v += team) {
        const Vec<T, N> xv = load_vec<N, CacheHint::kStreaming>(x + row * p.inner + v * N);
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          any = any || to_float(xv[j]) != p.mask_value;
          dirty = dirty || !is_positive_zero(xv[j]);
        }
        if (y != nullptr) {
          store_vec<N, CacheHint::kStreaming>(y + row * p.inner + v * N, xv);
        }
      }
    }
    const bool row_valid = (__ballot_sync(kFullMask, any ? 1 : 0) & team_mask) != 0u;
    if (in && !row_valid && dirty && y != nullptr) {
      Vec<T, N> zeros;
      CULAYERS_PRAGMA_UNROLL
      for (int j = 0; j < N; ++j) {
        zeros[j] = from_float<T>(0.0f);
      }
      for (std::int64_t v = l; v < vecs; v += team) {
        store_vec<N, CacheHint::kStreaming>(y + row * p.inner + v * N, zeros);
      }
    }
    if (in && l == 0) {
      store(p.mask + row, static_cast<std::uint8_t>(row_valid ? 1 : 0));
    }
  }
}

/// out[e] = mask[e / features]: 16-byte output chunks when `out` is 16-byte aligned (each mask byte is
/// loaded once per chunk it reaches), scalars for the tail or otherwise.
CULAYERS_GLOBAL void __launch_bounds__(kNarrowThreads)
    expand_kernel(const std::uint8_t* mask, std::uint8_t* out, std::int64_t total, std::int64_t features,
                  int vec_ok) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::int64_t scalar_begin = 0;
  if (vec_ok) {
    constexpr int kChunk = 16;
    const std::int64_t chunks = total / kChunk;
    for (std::int64_t c = first; c < chunks; c += stride) {
      const std::int64_t e0 = c * kChunk;
      std::int64_t src = e0 / features;
      std::int64_t f = e0 - src * features;
      std::uint8_t m = load<CacheHint::kReadOnly>(mask + src);
      Vec<std::uint8_t, kChunk> v;
      CULAYERS_PRAGMA_UNROLL
      for (int j = 0; j < kChunk; ++j) {
        v[j] = m;
        if (j + 1 < kChunk && ++f == features) {
          f = 0;
          ++src;
          m = load<CacheHint::kReadOnly>(mask + src);
        }
      }
      store_vec<kChunk, CacheHint::kStreaming>(out + e0, v);
    }
    scalar_begin = chunks * kChunk;
  }
  for (std::int64_t e = scalar_begin + first; e < total; e += stride) {
    store(out + e, load<CacheHint::kReadOnly>(mask + e / features));
  }
}

template <class T, int N>
Status launch_masking_n(unsigned grid, const MaskingParams& p, cudaStream_t stream) {
  return check_launch(CULAYERS_LAUNCH((masking_kernel<T, N>), dim3(grid), dim3(kNarrowThreads), 0, stream, p),
                      "masking");
}

} // namespace

template <class T>
Status launch_masking(int vec, unsigned grid, const MaskingParams& p, cudaStream_t stream) {
  constexpr int kMaxVec = static_cast<int>(16 / sizeof(T));
  switch (vec) {
  case 1:
    return launch_masking_n<T, 1>(grid, p, stream);
  case 2:
    return launch_masking_n<T, 2>(grid, p, stream);
  case 4:
    return launch_masking_n<T, 4>(grid, p, stream);
  default:
    if constexpr (kMaxVec >= 8) {
      if (vec == 8) {
        return launch_masking_n<T, 8>(grid, p, stream);
      }
    }
    return ::culayers::detail::set_error(Status::kErrorInternal, "masking: vector width %d not instantiated",
                                         vec);
  }
}

template Status launch_masking<float>(int, unsigned, const MaskingParams&, cudaStream_t);
template Status launch_masking<__half>(int, unsigned, const MaskingParams&, cudaStream_t);
template Status launch_masking<__nv_bfloat16>(int, unsigned, const MaskingParams&, cudaStream_t);

Status launch_expand(const std::uint8_t* mask, std::uint8_t* out, std::int64_t total, std::int64_t features,
                     bool vec_ok, unsigned grid, cudaStream_t stream) {
  return check_launch(CULAYERS_LAUNCH(expand_kernel, dim3(grid), dim3(kNarrowThreads), 0, stream, mask, out,
                                      total, features, vec_ok ? 1 : 0),
                      "mask_expand");
}

} // namespace masked
} // namespace kernels
CULAYERS_NAMESPACE_END
