// Masked reductions (kernel family 1): fused sum / mean / max / min / moments over one axis of a tensor
// with per-step validity, their backward, Keras-style mask creation (Masking) and mask expansion for
// a flattened output.
//
// Canonical view: x is row-major [outer, R, inner] with inner contiguous and the reduced axis R in the
// middle (for the usual (B, T, F) sequence tensor reduced over time: outer = B, R = T, inner = F). Any
// axis of a contiguous tensor maps onto this view. Outputs are [outer, inner].
//
// Validity of step (o, r) comes from a uint8 mask [outer, R] (nonzero = valid), from int32 lengths
// [outer] (r < lengths[o] is valid), or is absent (every step valid).
//
// Semantics (see docs/semantics.md, "Masked reductions"):
//  - Masked positions are skipped, never multiplied by zero: a NaN or Inf sitting in a masked position
//    changes no output bit. A NaN in a valid position propagates (sum, mean, moments; max and min
//    select it).
//  - Accumulation is in float32 whatever the input dtype; sum/mean/max/min write x's dtype, moments
//    write float32 mean and biased variance.
//  - Empty rows (no valid step) write `fill_value` (default 0) to every value output; their count is
//    0 and their arg-extremum index is -1.
//  - Lengths live in device memory and are never read by the host: a length outside [0, R] is
//    clamped into it (negative -> 0, above R -> R) and, when `length_errors` is given, counted there
//    (one atomicAdd per offending row per call) so the caller can check it later.
//
// Every run() enqueues work on the caller's stream and returns; it never synchronizes, never
// allocates, never queries device properties after the first call on a device (they are cached), and
// is safe under CUDA graph capture. Results are deterministic: the same arguments on the same device
// give the same bits on every run (fixed combination orders, no floating-point atomics).
#ifndef CULAYERS_MASKED_REDUCE_HPP_
#define CULAYERS_MASKED_REDUCE_HPP_

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace masked_reduce {

/// The reduction. Numbers are part of the ABI (culayersMaskedReduceOp_t mirrors them).
enum class ReduceOp : int {
  kSum = 0,
  kMean = 1,    ///< sum / count of valid steps
  kMax = 2,     ///< NaN wins; among equal values (+0 and -0 compare equal) the first valid index wins
  kMin = 3,     ///< as kMax
  kMoments = 4, ///< mean and biased variance (Welford/Chan merging, float32 outputs)
};

/// Where validity comes from. Numbers are part of the ABI (culayersValidity_t mirrors them).
enum class Validity : int {
  kNone = 0,    ///< every step valid
  kMask = 1,    ///< uint8 mask [outer, R], nonzero = valid
  kLengths = 2, ///< int32 lengths [outer], step r valid iff r < clamp(lengths[o], 0, R)
};

/// Forward kernel path (normally chosen automatically; see Tuning). Numbers are part of the ABI.
enum class Path : int {
  kAuto = 0,
  kNarrow = 1, ///< one warp per outer row, lanes over R x inner (inner <= 32 only)
  kWide = 2,   ///< a block per (outer row, column chunk): threads own a vector of columns and walk R
  kSplit = 3,  ///< as kWide with R split across blocks; partials combined in order by a second kernel
};

/// "auto", "narrow", "wide", "split" (a static string; "unknown path" for other values).
const char* path_name(Path path) noexcept;

/// Dispatch overrides of the forward op; every field 0 (or kAuto) = automatic. The automatic choice:
///  1. N = the widest vector width (16-byte accesses at most) such that x is aligned to N elements and
///     N divides inner (narrow path: N divides R when inner == 1), capped by `vector_width`.
///  2. target = `target_threads`, default SMs x min(threads per SM, 1024) (queried once per device and
///     cached): the threads the wide kernel keeps resident (its 64-register bound allows 1024 per SM).
///  3. Narrow when inner <= `narrow_max_inner` (default 32) and either outer * 32 >= `target_threads`
///     (default here SMs x threads per SM: one warp per row fills the GPU) or R * inner <=
///     `narrow_max_row` (default 1024: rows short enough that a warp finishes them in a few steps).
///  4. Otherwise the row's column vectors are cut into balanced column blocks of tx <= 32 vectors, and a
///     block covers ty = min(ceil(R / `min_rows_per_thread`), 512 / tx, R) steps of R at a time (capped
///     by the 48 KB of shared memory holding one partial per thread). When outer x column blocks needs
///     more than one wave of resident blocks, ty drops (down to half) if that needs fewer waves at a
///     lower cost (cost = waves / ty; ties keep the larger ty).
///     If outer x column blocks x block threads falls short of the target, R is split into
///     S = floor(target / (outer x column blocks x block threads)) chunks (one wave), each giving a thread
///     at least `min_rows_per_thread` (default 8) steps: the split path. S = 1 is the wide path.
///  5. inner == 1 (single-column rows, e.g. batch-norm statistics of channels-first planes): narrow
///     instead when min(outer x 32, 3/4 of the target) x N_narrow >= (the wide or split plan's resident
///     threads) x 1, i.e. when the narrow lanes' N-step vectors keep at least as many bytes in flight
///     as the wide threads' single elements.
struct Tuning {
  Path path = Path::kAuto;              ///< force a path (kNarrow requires inner <= 32)
  int vector_width = 0;                 ///< upper bound on N (1, 2, 4, 8, 16); 0 = widest legal
  std::int64_t target_threads = 0;      ///< threads that count as "the whole GPU" (<= (2^31 - 1) x 1024)
  std::int64_t narrow_max_inner = 0;    ///< default 32
  std::int64_t narrow_max_row = 0;      ///< default 1024 elements (R * inner)
  std::int64_t min_rows_per_thread = 0; ///< default 8; at most 2^31 - 1
  std::int64_t splits = 0; ///< force the split path with this many chunks of R (at most 4096; clamped to R)
};

/// The size limits of the forward and backward reductions for an [outer, R, inner] problem, from the sizes
/// alone (for a caller that plans before it has buffers: a layer's shape check, an engine's format
/// negotiation): every size >= 0 (else kErrorInvalidShape); R <= 2^31 - 1 (int32 counts and indices); and
/// outer x R x inner, outer x R, outer x inner and R x inner, each times 16 bytes, within int64 (pairs
/// too, so an empty extent cannot hide an overflowing product of the other two). Else kErrorSizeLimit.
/// can_implement applies exactly these checks to its sizes.
[[nodiscard]] Status check_sizes(std::int64_t outer, std::int64_t reduce, std::int64_t inner);

/// Masking's size limits (MaskingArgs): every size >= 0; outer x R (the mask) and outer x R x inner,
/// times 16 bytes, within int64. No limit on R. can_implement(MaskingArgs) applies exactly these.
[[nodiscard]] Status check_masking_sizes(std::int64_t outer, std::int64_t reduce, std::int64_t inner);

/// Forward masked reduction. The outputs (out, mean, variance, indices, counts, length_errors) overlap
/// neither each other nor an input (x, mask, lengths), and every pointer is aligned to its element size:
/// can_implement rejects anything else (kErrorInconsistentArguments / kErrorMisaligned, naming the
/// argument). Empty tensors (a zero size) may pass null for the buffers that have no elements.
struct MaskedReduceArgs {
  ReduceOp op = ReduceOp::kSum;
  DType dtype = DType::kFloat32; ///< of x and `out`: float32, float16 or bfloat16
  const void* x = nullptr;       ///< [outer, R, inner]
  std::int64_t outer = 0;
  std::int64_t reduce = 0; ///< R, at most 2^31 - 1
  std::int64_t inner = 0;

  Validity validity = Validity::kNone;
  const std::uint8_t* mask = nullptr;    ///< [outer, R]; only with Validity::kMask
  const std::int32_t* lengths = nullptr; ///< [outer]; only with Validity::kLengths
  /// Optional, Validity::kLengths only (ignored otherwise): incremented once per row whose length lies
  /// outside [0, R]. The caller zeroes it and reads it after synchronizing.
  std::uint32_t* length_errors = nullptr;

  void* out = nullptr;             ///< [outer, inner] in dtype: sum/mean/max/min (must be null for moments)
  float* mean = nullptr;           ///< [outer, inner] float32: moments only (required), null otherwise
  float* variance = nullptr;       ///< [outer, inner] float32 biased variance: moments only (required)
  float fill_value = 0.0f;         ///< written for empty rows (rounded to dtype for `out`)
  std::int32_t* counts = nullptr;  ///< optional [outer]: number of valid steps per row
  std::int32_t* indices = nullptr; ///< optional [outer, inner], max/min only: arg-extremum r (-1 if empty)

  Tuning tuning{};
};

/// Validates everything run() would use. On failure returns the status and sets last_error_message()
/// ("masked_reduce: <argument>: <reason>"). Never touches device memory.
[[nodiscard]] Status can_implement(const MaskedReduceArgs& args);

/// Workspace bytes run() needs (0 unless the split path is taken; includes alignment slack, so any
/// workspace pointer works). 0 for arguments can_implement rejects. Depends on the current device.
std::size_t workspace_size(const MaskedReduceArgs& args);

/// The path run() takes for these arguments on the current device (kAuto if they are invalid; kWide,
/// meaning nothing is launched, when outer * inner == 0).
Path selected_path(const MaskedReduceArgs& args);

/// Enqueues the forward reduction on `stream`. Calls can_implement first; on any error nothing is
/// launched or written. The workspace must hold workspace_size(args) bytes (any alignment).
[[nodiscard]] Status run(const MaskedReduceArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

/// Backward of a forward masked reduction: dx [outer, R, inner] is written everywhere, exactly +0 at
/// masked positions, beyond the lengths and in empty rows.
///  - sum:     dx = dy
///  - mean:    dx = dy / count (count = valid steps of the row)
///  - max/min: dx = dy at r == indices[o, i] (the forward's indices output, which this needs), 0 elsewhere
///  - moments: dx = dmean / n + dvar * 2 (x - mean) / n with n = count and `mean` the forward's float32
///             mean output; dmean or dvar may be null (a zero gradient), not both; x and mean are
///             needed only with dvar.
/// float32 arithmetic, one rounding to dtype. Elementwise, so trivially deterministic.
struct MaskedReduceBackwardArgs {
  ReduceOp op = ReduceOp::kSum;
  DType dtype = DType::kFloat32; ///< of dx, dy and x
  std::int64_t outer = 0;
  std::int64_t reduce = 0;
  std::int64_t inner = 0;

  Validity validity = Validity::kNone;
  const std::uint8_t* mask = nullptr;
  const std::int32_t* lengths = nullptr;
  std::uint32_t* length_errors = nullptr; ///< as in MaskedReduceArgs

  const void* dy = nullptr;              ///< [outer, inner] in dtype: sum/mean/max/min
  const std::int32_t* indices = nullptr; ///< [outer, inner]: max/min (required)
  const float* dmean = nullptr;          ///< [outer, inner]: moments
  const float* dvar = nullptr;           ///< [outer, inner]: moments
  const float* mean = nullptr;           ///< [outer, inner]: moments with dvar (the forward's mean)
  const void* x = nullptr;               ///< [outer, R, inner]: moments with dvar
  /// Optional [outer] valid-step counts (the forward's `counts` output). Mean and moments with a mask
  /// need counts: without this input run() computes them into the workspace first. Given for any other op
  /// or validity: kErrorInconsistentArguments.
  const std::int32_t* counts = nullptr;

  void* dx = nullptr; ///< [outer, R, inner] in dtype; must not overlap any input (nor length_errors)

  int vector_width = 0;        ///< upper bound on the vector width; 0 = widest legal
  std::int64_t row_chunks = 0; ///< chunks of R per row (blocks per row and column chunk); 0 = automatic
};

[[nodiscard]] Status can_implement(const MaskedReduceBackwardArgs& args);
/// outer * 4 bytes (+ slack) for mean/moments with a mask and no counts input; otherwise 0.
std::size_t workspace_size(const MaskedReduceBackwardArgs& args);
[[nodiscard]] Status run(const MaskedReduceBackwardArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

/// Keras Masking(mask_value): over x [outer, R, inner] (Keras: (B, T, F)),
///   mask[o, r] = any over i of (x[o, r, i] != mask_value)        (1 or 0)
/// where the comparison is in x's dtype (mask_value rounded to it first; NaN != anything, so a NaN
/// makes the step valid). Optionally y = x with masked steps written as +0.0 (the layer's output).
/// y may equal x exactly (in place); no other overlap. x is read once; y is written once per element,
/// except that a masked step holding anything other than +0.0 bits is written a second time (zeros).
struct MaskingArgs {
  DType dtype = DType::kFloat32;
  const void* x = nullptr;
  std::int64_t outer = 0;
  std::int64_t reduce = 0; ///< R (time steps)
  std::int64_t inner = 0;  ///< features
  float mask_value = 0.0f;
  std::uint8_t* mask = nullptr; ///< [outer, R] output (required)
  void* y = nullptr;            ///< optional [outer, R, inner] output in dtype
};

[[nodiscard]] Status can_implement(const MaskingArgs& args);
std::size_t workspace_size(const MaskingArgs& args); ///< always 0
[[nodiscard]] Status run(const MaskingArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

/// Mask expansion for a flattened output (mask-aware Flatten): out[b, t * F + f] = mask[b, t] for the
/// [outer, steps] mask and an [outer, steps * features] output; bytes are copied as they are.
struct MaskExpandArgs {
  const std::uint8_t* mask = nullptr; ///< [outer, steps]
  std::uint8_t* out = nullptr;        ///< [outer, steps * features]; must not overlap mask
  std::int64_t outer = 0;
  std::int64_t steps = 0;
  std::int64_t features = 0;
};

[[nodiscard]] Status can_implement(const MaskExpandArgs& args);
std::size_t workspace_size(const MaskExpandArgs& args); ///< always 0
[[nodiscard]] Status run(const MaskExpandArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

} // namespace masked_reduce
CULAYERS_NAMESPACE_END

#endif // CULAYERS_MASKED_REDUCE_HPP_
