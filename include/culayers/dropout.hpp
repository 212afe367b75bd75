// Dropout with a device-resident keep-rate schedule (kernel family 2).
//
// Randomness is counter-based (Philox4x32-10): the keep decision of element i is a pure function of
// (seed, stream, offset, i), identical on every GPU, grid size and vector width, on the emulator and in
// the CPU reference. The keep rate, seed, stream and offset live in a small DropoutState in device
// memory: the forward reads them there, and the update op advances the schedule on the device, so a
// captured CUDA graph moves the schedule forward on every replay with no host involvement.
//
// Typical training step of a DecayingDropout layer (all on one stream, no synchronization):
//
//   run(DropoutInitArgs{state, seed, ...})            once, before the first step
//   run(DropoutForwardArgs{x, y, ..., state})         call k: keep rate of iteration k, stream k
//   run(DropoutUpdateArgs{state})                     iterations += 1, next keep rate
//   (a frozen layer instead: run(DropoutRedrawArgs{state}), a fresh stream at the same keep rate;
//    DropoutRedrawArgs{state, true} returns to stream k; the DecayingDropout layer runs it after every
//    frozen forward)
//   ...
//   run(DropoutBackwardArgs{dy, dx, ..., state})      regenerates call k's mask (the forward recorded
//                                                     its parameters in the state's last_* fields)
//
// Every function here is host-only; none synchronizes, allocates or queries the device in the launch
// path (the SM count is queried once per device and cached), so all are safe under stream capture.
#ifndef CULAYERS_DROPOUT_HPP_
#define CULAYERS_DROPOUT_HPP_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace dropout {

/// Threshold value that keeps every element (keep = r < T for a 32-bit draw r).
inline constexpr std::uint64_t kThresholdKeepAll = 1ull << 32;

/// The device-resident dropout state: 128 bytes, plain data, allocated by the caller in device memory
/// (cudaMalloc(sizeof(DropoutState))) and written only by the ops below. The layout is part of the ABI
/// (culayersDropoutState_t mirrors it; byte offsets in the comments). Who writes what:
///
///   configuration      DropoutInitArgs run                 read by every op
///   iterations         init; the update op (+= 1)
///   current call       init and the update op, from        read by the forward
///                      `iterations`; the redraw op
///                      replaces only its stream
///   redraws            init; the redraw op (+= 1)
///   last_*             the forward (copies the current     read by the backward
///                      call's parameters); init sets them
///                      equal to the current call's and
///                      last_iteration = -1
///
/// The backward therefore reproduces the mask of the most recent forward on this state, whether or not
/// the update op ran in between. Reading the state back (cudaMemcpy) is the way to inspect the schedule.
struct DropoutState {
  // ---- configuration ----
  std::uint64_t seed;          ///< [0]   Philox key
  std::uint64_t offset;        ///< [8]   base Philox offset, a multiple of 4, added to each call's offset
  double initial_keep_rate;    ///< [16]  in (0, 1]
  double decay_rate;           ///< [24]  clamped to [0, 1]; 1 = fixed keep rate (plain Dropout)
  std::int64_t decay_interval; ///< [32] > 0
  // ---- schedule position ----
  std::int64_t iterations; ///< [40]  Keras's `iterations` weight: index k of the next training call
  // ---- the current call (iteration k = iterations) ----
  std::uint64_t stream;    ///< [48]  Philox stream = k
  std::uint64_t threshold; ///< [56]  T = floor(keep_rate * 2^32 + 0.5), in [0, 2^32]
  double keep_rate;        ///< [64]  initial * decay_rate ^ ((k + 1) / decay_interval), computed in double
  float scale;             ///< [72]  (float)(1 / keep_rate)
  std::uint32_t reserved0; ///< [76]  zero
  // ---- the most recent forward (read by the backward) ----
  std::uint64_t last_stream;    ///< [80]
  std::uint64_t last_threshold; ///< [88]
  double last_keep_rate;        ///< [96]
  float last_scale;             ///< [104]
  std::uint32_t reserved1;      ///< [108] zero
  std::int64_t last_iteration;  ///< [112] `iterations` at the most recent forward; -1 before the first
  std::uint64_t redraws;        ///< [120] redraw ops since init (see DropoutRedrawArgs)
};
static_assert(sizeof(DropoutState) == 128 && std::is_trivially_copyable_v<DropoutState> &&
                  std::is_standard_layout_v<DropoutState>,
              "DropoutState is a 128-byte POD shared with the C API and the kernels");

/// Initializes a DropoutState: writes every field with one 1-thread kernel (no host memory is read
/// asynchronously, so the arguments may live on the stack). The current call's keep rate is computed on
/// the device from `iterations` exactly as the update op does.
struct DropoutInitArgs {
  DropoutState* state = nullptr;  ///< device memory, sizeof(DropoutState) bytes, 8-byte aligned
  std::uint64_t seed = 0;         ///< Philox key
  std::uint64_t offset = 0;       ///< base Philox offset; a multiple of 4
  double initial_keep_rate = 1.0; ///< in (0, 1] (1 - Keras's `rate` for plain Dropout)
  double decay_rate = 1.0;        ///< clamped to [0, 1] (as Keras's DecayingDropout); 1 = fixed rate; not NaN
  std::int64_t decay_interval = 10000; ///< > 0
  std::int64_t iterations = 0;         ///< starting value of the counter, >= 0 (0 for a new layer)
  std::uint64_t redraws = 0;           ///< starting value of the redraw counter (a re-initialized state
                                       ///< that keeps its count keeps drawing unused redraw streams)
};

/// The update op: iterations += 1 (saturating at 2^63 - 1), then the current call's stream, keep rate,
/// threshold and scale for the new iteration, computed in double on the device. One 1-thread kernel; the
/// last_* fields are left alone, so the backward of the previous call still reproduces its mask.
struct DropoutUpdateArgs {
  DropoutState* state = nullptr;
};

/// The redraw op: a fresh draw without a step of the schedule (a frozen DecayingDropout's training calls,
/// which Keras runs with new noise at an unchanged rate): redraws += 1 and the current call's stream
/// becomes 2^63 + redraws, a stream no schedule step k < 2^63 uses; iterations, keep rate, threshold,
/// scale and last_* stay. The next update op sets the stream back to the new iteration's; so does this op
/// with `to_schedule` (stream = iterations, nothing else changes: e.g. before the first trainable call
/// after frozen ones, so that call k draws from stream k whatever came before). One 1-thread kernel.
struct DropoutRedrawArgs {
  DropoutState* state = nullptr;
  bool to_schedule = false;
};

/// y = keep ? x * scale : +0.0 over a contiguous (row-major) tensor, with the mask drawn on
/// `noise_shape` and broadcast. Reads seed, offset, stream, threshold and scale of the *current* call
/// from the state and records them in the state's last_* fields (one thread of the grid writes them;
/// no other field is written).
///
/// - keep = r < T (docs/semantics.md, "Dropout"); kept values are multiplied in float32 and rounded once to
/// the dtype;
///   with scale exactly 1 (keep rate 1) kept values are copied bit for bit (NaN payloads included).
///   Dropped values are +0.0 even for NaN or Inf inputs.
/// - Element i (row-major index in x) uses draw q = state.offset + offset + j where j is the row-major
///   index in the noise shape of i's coordinates with the broadcast ones set to 0.
/// - y may equal x (in place); any other overlap of x, y, mask and the state is rejected. x and y must
///   be aligned to their element size (kErrorMisaligned otherwise); beyond that no alignment is
///   required: 16-byte aligned x, y (and 8-byte aligned mask) get 16-byte accesses, others narrower
///   ones, with the same bits.
/// - Noise shapes are served by specialized kernels when the innermost dimension is broadcast
///   ((N, C, 1, 1) over (N, C, H, W)) or drawn with a multiple of 4 elements ((B, 1, F) over (B, T, F),
///   F % 4 == 0); other noise shapes, and broadcast tensors of 2^32 elements or more, take a slower
///   scalar path (one Philox call per element).
/// - Deterministic: the same state and inputs give the same bits for every grid size, vector width and
///   GPU. Never synchronizes.
struct DropoutForwardArgs {
  const void* x = nullptr;
  void* y = nullptr;
  DType dtype = DType::kFloat32; ///< float32, float16 or bfloat16 (x and y)
  Shape shape;                   ///< x's shape (contiguous)
  Shape noise_shape;             ///< rank 0 = x's shape (Keras noise_shape=None); else the same rank as
                                 ///< x, each dimension equal to x's or 1
  DropoutState* state = nullptr; ///< read, and its last_* fields written
  std::uint64_t offset = 0;      ///< extra Philox offset of this tensor (multiple of 4), e.g. when one
                                 ///< (seed, stream) serves several tensors: advance by round_up(m, 4),
                                 ///< m = the number of noise-shape elements (draws) of the tensor before
  std::uint8_t* mask = nullptr;  ///< optional uint8 output in x's shape: 1 kept, 0 dropped
  /// Grid cap; 0 = automatic (vector paths: one block per tile of 4 x 256 chunks; generic path: 4 blocks
  /// per SM). Tuning/test override.
  int max_blocks = 0;
  int force_vector_width = 0; ///< elements per global access: 0 = widest the alignment allows, or
                              ///< 1, 2, 4, 8 (test/tuning override; must fit the dtype and alignment)
};

/// dx = keep ? dy * scale : +0.0, regenerating the mask of the most recent forward on this state from
/// its last_* fields (so it is exact even after the update op has advanced the schedule). Same shape,
/// noise_shape and offset as that forward; dx may equal dy; dy and dx aligned to their element size
/// (kErrorMisaligned otherwise), any wider alignment only widening the accesses. Never synchronizes.
struct DropoutBackwardArgs {
  const void* dy = nullptr;
  void* dx = nullptr;
  DType dtype = DType::kFloat32;
  Shape shape;
  Shape noise_shape;
  const DropoutState* state = nullptr;
  std::uint64_t offset = 0;
  int max_blocks = 0;
  int force_vector_width = 0;
};

/// Validates every argument without touching device memory. On failure returns the status and sets
/// last_error_message() to "<op>: <argument>: <reason>" (op = dropout_init, dropout_update,
/// dropout_redraw, dropout_forward or dropout_backward).
[[nodiscard]] Status can_implement(const DropoutInitArgs& args);
[[nodiscard]] Status can_implement(const DropoutUpdateArgs& args);
[[nodiscard]] Status can_implement(const DropoutRedrawArgs& args);
[[nodiscard]] Status can_implement(const DropoutForwardArgs& args);
[[nodiscard]] Status can_implement(const DropoutBackwardArgs& args);

/// Workspace bytes run() needs: always 0 (kept for the op contract).
std::size_t workspace_size(const DropoutInitArgs& args);
std::size_t workspace_size(const DropoutUpdateArgs& args);
std::size_t workspace_size(const DropoutRedrawArgs& args);
std::size_t workspace_size(const DropoutForwardArgs& args);
std::size_t workspace_size(const DropoutBackwardArgs& args);

/// Enqueues the op on `stream` after can_implement(); on a validation error nothing is launched or
/// written. The workspace may be null (none is needed). Never allocates or synchronizes; safe under
/// graph capture (every per-call value that changes between steps is read from the state on the device).
[[nodiscard]] Status run(const DropoutInitArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);
[[nodiscard]] Status run(const DropoutUpdateArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);
[[nodiscard]] Status run(const DropoutRedrawArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);
[[nodiscard]] Status run(const DropoutForwardArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);
[[nodiscard]] Status run(const DropoutBackwardArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

/// Host evaluation of the formulas the device uses (the same source code), for callers that want to
/// predict the schedule without reading the state back: DecayingDropout's keep rate at call k
/// (decay_rate clamped to [0, 1] first), its threshold T and its scale. On a GPU the device's double
/// pow may differ from the host's in the last bits (CUDA documents 2 ulp), so a threshold can differ by
/// 1 in rare cases: read the state back for the exact values a call used. scheduled_keep_rate returns NaN
/// for arguments the init op refuses (initial_keep_rate outside (0, 1], decay_rate NaN, decay_interval
/// <= 0) and for k < 0.
double scheduled_keep_rate(double initial_keep_rate, double decay_rate, std::int64_t decay_interval,
                           std::int64_t k) noexcept;
std::uint64_t keep_threshold(double keep_rate) noexcept;
float keep_scale(double keep_rate) noexcept;

/// The draws the kernels use, on the host: out[j] = r(first + j) = word ((first + j) & 3) of
/// Philox4x32-10(counter ((first + j) >> 2, stream), key seed), for j < count. Element i of a forward
/// with noise index j is kept iff r(state.offset + offset + j) < threshold. For callers that need a mask
/// on the host (checking or replaying one); `out` is host memory.
void philox_draws(std::uint64_t seed, std::uint64_t stream, std::uint64_t first, std::size_t count,
                  std::uint32_t* out) noexcept;

} // namespace dropout
CULAYERS_NAMESPACE_END

#endif // CULAYERS_DROPOUT_HPP_
