// Elementwise conversion between the activation dtypes: y[i] = x[i] converted from x_dtype to y_dtype
// (float32, float16, bfloat16 in any combination). The value goes through float32, which holds every
// float16 and bfloat16 value exactly, so each conversion rounds once, to nearest even: ±Inf stays ±Inf;
// magnitudes that round past the target's largest finite value become ±Inf (float16: from 65520 up);
// magnitudes at or below half the target's smallest subnormal become a zero of the same sign (exactly
// half rounds to even: zero); subnormal results are kept. Every NaN becomes the target's canonical NaN
// (0x7fffffff, 0x7fff, 0x7fff: sign and payload are not kept), so every backend writes the same bits. The
// same dtype in and out is a bit-exact copy (NaN payloads included).
//
// The Keras-like layers use it to cast a layer's floating input to the dtype the layer computes in (Keras's
// autocast; include/culayers/nn/layer.hpp). x is read once and y written once: vectors of up to 16 bytes
// of the wider dtype when both pointers are aligned to them, a scalar tail for the last count % V
// elements, a grid-stride loop over a grid sized to the whole GPU.
//
// run() enqueues on the caller's stream and returns; it never synchronizes or allocates, queries device
// properties once per device (cached) and is safe under CUDA graph capture. Errors: "cast: <argument>:
// <reason>" in last_error_message(); on any error nothing is launched or written.
//
// C API: culayers/c/cast.h (culayersCast).
#ifndef CULAYERS_CAST_HPP_
#define CULAYERS_CAST_HPP_

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace cast {

/// y[i] = x[i] in y_dtype, i < count. Preconditions: y == x (in place, only when both dtypes have the same
/// size) or y does not overlap x; each pointer aligned to its element size. count == 0 launches nothing
/// (pointers may be null).
struct CastArgs {
  DType x_dtype = DType::kFloat32; ///< float32, float16 or bfloat16
  const void* x = nullptr;         ///< [count]
  DType y_dtype = DType::kFloat32; ///< float32, float16 or bfloat16
  void* y = nullptr;               ///< [count]
  std::int64_t count = 0;          ///< >= 0
  int vector_width = 0; ///< upper bound on the vector width in elements (0, 1, 2, 4, 8); 0 = widest
  int max_blocks = 0;   ///< grid cap (tuning and tests: the grid-stride loop); 0 = the whole GPU
};

/// Validates everything run() would use; never touches device memory.
[[nodiscard]] Status can_implement(const CastArgs& args);
/// Always 0.
std::size_t workspace_size(const CastArgs& args);
/// The vector width (elements per access) run() uses for these arguments; 0 if they are invalid.
int selected_vector_width(const CastArgs& args);
/// Enqueues the conversion on `stream` (workspace unused: pass nullptr, 0).
[[nodiscard]] Status run(const CastArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

} // namespace cast
CULAYERS_NAMESPACE_END

#endif // CULAYERS_CAST_HPP_
