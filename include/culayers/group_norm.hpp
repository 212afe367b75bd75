// Group normalization (kernel family 3): forward with an optional fused activation, backward (dx, dgamma,
// dbeta), masked statistics for channels-last sequence tensors.
//
// Tensor views (contiguous, no transpose copy in either layout):
//  - channels first: x [N, C, *spatial]
//  - channels last:  x [N, *spatial, C]
// `spatial` is the product of the spatial sizes (1 when there are no spatial dimensions, e.g. [N, C]).
// Group g of sample n holds channels [g * C/G, (g + 1) * C/G) at every spatial position.
//
// Forward (see docs/semantics.md, "Group normalization"):
//   mean, var = statistics of group (n, g) over its valid positions (biased variance, float32,
//               numerically stable: two passes over on-chip data, or Welford partials merged with Chan's
//               formula when a group is split across blocks; never E[x^2] - E[x]^2)
//   rstd      = 1 / sqrt(var + epsilon)
//   pre       = (x - mean) * rstd * gamma[c] + beta[c]      (gamma = 1 / beta = 0 when absent)
//   y         = act(pre)                                     (none, SiLU: pre * sigmoid(pre), ReLU)
// Every position is normalized, masked ones included. With a mask (channels last only; mask [N, spatial],
// nonzero = valid) the statistics cover the valid positions only; a fully masked group has mean 0 and
// variance 0 (rstd = 1 / sqrt(epsilon)).
//
// Backward, with xhat = (x - mean) * rstd, g = dpre * gamma[c] (dpre = dy * act'(pre), pre recomputed),
// M = valid positions x C/G and w = 1 at valid positions, 0 at masked ones:
//   dx     = rstd * (g - w / M * (sum(g) + xhat * sum(g * xhat)))   (sums over every position of the group)
//   dgamma = sum over n and positions of dpre * xhat,   dbeta = sum of dpre
// (for a fully masked group, M = 0: dx = rstd * g).
//
// gamma, beta, mean, rstd, dgamma and dbeta are float32 whatever x's dtype (Keras's mixed-precision
// convention: variables stay float32). Accumulation is float32. Results are deterministic: the same
// arguments on the same device give the same bits every run (fixed combination orders through the
// workspace, no floating-point atomics).
//
// Every run() enqueues on the caller's stream and returns; it never synchronizes or allocates, queries
// device properties once per device (cached), and is safe under CUDA graph capture.
#ifndef CULAYERS_GROUP_NORM_HPP_
#define CULAYERS_GROUP_NORM_HPP_

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace group_norm {

/// Activation fused into the forward's store. Numbers are part of the ABI (culayersActivation_t).
enum class Activation : int {
  kNone = 0,
  kSiLU = 1, ///< pre * sigmoid(pre)
  kReLU = 2, ///< pre where pre > 0 or NaN (NaN propagates), else +0; gradient passed where pre > 0
};

/// Kernel path (normally chosen automatically; see Tuning). Numbers are part of the ABI.
enum class Path : int {
  kAuto = 0,
  kWarp = 1,  ///< one warp per group, the group staged in shared memory: x read once from DRAM
  kBlock = 2, ///< one block per group, the group staged in shared memory: x read once from DRAM
  kSplit = 3, ///< each group split over `splits` blocks: Welford partials through the workspace, merged in
              ///< a fixed order by a second kernel that normalizes (x read twice)
  kTile = 4,  ///< channels last: tiles of whole rows (all groups of a sample) per block, per-group partials
              ///< merged in a fixed order, then a pass that normalizes (x read twice, in whole rows)
};

/// "auto", "warp", "block", "split", "tile" (a static string; "unknown path" for other values).
const char* path_name(Path path) noexcept;

/// Dispatch overrides; every field 0 (or kAuto) = automatic. The automatic choice (E = elements of one
/// group, bytes = what the path stages on chip: x, plus dy in the backward):
///  1. Vector width N: the widest (16 bytes at most) such that every group row starts N-aligned (channels
///     last: N divides C/G and C; channels first: N divides spatial) and the pointers are aligned;
///     capped by `vector_width`.
///  2. Warp path when E <= `warp_max_elements` (default 1024: 32 elements per lane, on chip in a warp's
///     shared-memory slice; beyond that a warp's serial latency dominates).
///  3. Tile path (channels last; `spatial` == 1 counts as channels last) when C / N <= 512, a group's slice
///     of a row (C/G x element bytes) is below 128 bytes (one cache line: the other paths fetch partial
///     lines, one request per row and group) and x holds at least `tile_min_bytes` (default 32 KB per SM:
///     smaller tensors are latency-bound, one kernel beats three). Tiles of `tile_rows` consecutive rows
///     (default: N x tiles two full waves of the blocks an SM holds of the tile kernel that holds fewer
///     (threads, shared memory and its registers as compiled for the device), then up to twice as many
///     tiles where that fills both streaming kernels' last waves better; or `target_blocks`, taken as is;
///     each thread walking at least 4 rows), a block of (C / N) x k threads per tile.
///  4. Block path when the group's bytes fit `block_max_bytes` (default: the device's opt-in shared
///     memory per block minus the reduction scratch) and either the groups resident at once (N * G, at
///     most SMs x the blocks per SM that threads and shared memory allow) keep enough bytes in flight to
///     beat the split path, which reads x (and dy) twice (in flight >= 2/3, backward 3/5, of SMs x
///     18 KB, an H100's HBM bandwidth x latency per SM; an active thread has 4 vectors of x, and 4 of dy
///     in the backward, in flight when it walks at least 4, else one each), or E is too small to split
///     (< 2 x `min_split_elements`), or (channels first) x is smaller than `split_min_bytes` (default
///     64 KB per SM: a tensor that small never streams steadily, and the split path's second launch and
///     second read cost more than idle SMs). Channels first, a block has at most max(128, pow2_ceil(C/G) x
///     tx) threads, tx = min(pow2_ceil(spatial / N), 32) (more would idle).
///  5. Otherwise split: S = ceil(target blocks / (N * G)) chunks of at least `min_split_elements`
///     (default 8192: below that a chunk's partial and its merge are no longer small next to its data),
///     at most 1024 (the merge kernel stages the partials in shared memory). Target blocks = 2 x SMs x
///     (threads per SM / 256: the 256-thread blocks an SM's threads allow), then up to twice as many chunks
///     where that fills the last waves of both kernels better (each holds its own number of blocks per SM:
///     registers); `target_blocks` is taken as is. Chunks cut the spatial axis (positions, or channels
///     first their N-element vectors); where it has fewer than S, it is kept whole and the channel axis is
///     cut into S ranges instead (at most one per channel vector or row, the spatial axis then cut into
///     floor(S / those)), so a huge group over few positions (channels last [1, 4, 2^16], or no spatial
///     dimensions) still spreads over the GPU (no wave balancing then).
///  The blocks per SM that every rule counts come from the runtime's occupancy calculator for the kernels
///  this build compiled (registers included); where the runtime cannot say, the block and tile rules use
///  register estimates and the split count is not balanced.
struct Tuning {
  Path path = Path::kAuto;
  int vector_width = 0;                ///< upper bound on N (1, 2, 4, 8); 0 = widest legal
  std::int64_t warp_max_elements = 0;  ///< default 1024
  std::int64_t block_max_bytes = 0;    ///< default: shared memory per block minus scratch
  std::int64_t min_split_elements = 0; ///< default 8192; <= 2^31 - 1
  std::int64_t target_blocks = 0;      ///< blocks that count as "the whole GPU" (<= 2^31 - 1)
  std::int64_t splits = 0;    ///< force the split path with this many chunks per group (<= 1024; at most one
                              ///< per vector, cut as in rule 5)
  std::int64_t tile_rows = 0; ///< tile path: rows per tile (0 = automatic; raised to spatial / 65536)
  std::int64_t tile_min_bytes = 0; ///< default SMs x 32 KB; above any tensor: never tile automatically
  /// Channels first: x bytes from which the split path may replace a block path that fits (default SMs x
  /// 64 KB; 1: only the in-flight rule decides).
  std::int64_t split_min_bytes = 0;
  /// Split and tile counts chosen automatically: 0 = then raised (up to 2x) where that fills both streaming
  /// kernels' last waves better; 1 = the first count, from the target alone (for comparisons).
  std::int64_t wave_balance = 0;
  /// Grid cap of the streaming kernels (warp, block, split and tile paths; tests: their grid-stride loops
  /// over groups, chunks and tiles; the tile backward's dx kernel keeps its ceil(C / 8) dgamma / dbeta
  /// blocks besides); 0 = as planned. The merge and dgamma / dbeta kernels are not capped. Results do not
  /// depend on it.
  std::int64_t max_blocks = 0;
};

/// The shape checks of the forward and the backward, from the sizes alone (for a caller that plans before
/// it has buffers: a layer's shape check, an engine's format negotiation). kErrorInvalidShape for a
/// negative size, groups < 1, or C not a multiple of G (G > C included); kErrorSizeLimit unless, with
/// spatial 0 and batch 0 counted as 1, (C/G) x spatial <= 2^31 - 1, N x G <= 2^31 - 1 and
/// N x C x spatial x 16 bytes fits int64. can_implement applies exactly these checks to its sizes.
[[nodiscard]] Status check_sizes(std::int64_t batch, std::int64_t channels, std::int64_t spatial,
                                 std::int64_t groups);

/// Forward. y, mean and rstd overlap neither each other nor an input, except that y == x (in place) is
/// allowed; every pointer is aligned to its element size (x and y to the dtype's, the float arrays to 4
/// bytes). can_implement rejects anything else, naming the argument.
struct GroupNormArgs {
  DType dtype = DType::kFloat32; ///< of x and y: float32, float16 or bfloat16
  Layout layout = Layout::kChannelsFirst;
  const void* x = nullptr;
  std::int64_t batch = 0;       ///< N
  std::int64_t channels = 0;    ///< C
  std::int64_t spatial = 1;     ///< product of the spatial sizes (1 with none); with 0 every group is
                                ///< empty and behaves as fully masked (mean 0, rstd 1/sqrt(eps) written)
  std::int64_t groups = 0;      ///< G: divides C; C/G x spatial < 2^31
  float epsilon = 1e-3f;        ///< > 0 and finite
  const float* gamma = nullptr; ///< optional [C] (scale)
  const float* beta = nullptr;  ///< optional [C] (center)
  Activation activation = Activation::kNone;
  const std::uint8_t* mask = nullptr; ///< optional [N, spatial], channels last only
  void* y = nullptr;                  ///< same shape and dtype as x
  float* mean = nullptr;              ///< optional [N, G]
  float* rstd = nullptr;              ///< optional [N, G]
  Tuning tuning{};
};

/// Validates everything run() would use; on failure returns the status and sets last_error_message()
/// ("group_norm: <argument>: <reason>"). Never touches device memory, but plans with the device's limits
/// (queried once per device, cached): kErrorNoDevice without a usable device.
[[nodiscard]] Status can_implement(const GroupNormArgs& args);
/// Workspace bytes (0 unless the split or tile path is taken; includes alignment slack). 0 for invalid
/// arguments.
std::size_t workspace_size(const GroupNormArgs& args);
/// The path run() takes on the current device (kAuto for invalid arguments or when nothing is launched (batch
/// 0)).
Path selected_path(const GroupNormArgs& args);
/// Enqueues the forward on `stream`; on any error nothing is launched or written.
[[nodiscard]] Status run(const GroupNormArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

/// Backward. mean and rstd are the forward's outputs (required); gamma/beta as given to the forward
/// (beta is needed only to recompute the pre-activation of a fused activation). dgamma / dbeta are
/// optional outputs; dx is required; dx, dgamma and dbeta overlap neither each other nor an input.
struct GroupNormBackwardArgs {
  DType dtype = DType::kFloat32; ///< of x, dy and dx
  Layout layout = Layout::kChannelsFirst;
  const void* x = nullptr;
  const void* dy = nullptr;
  std::int64_t batch = 0;
  std::int64_t channels = 0;
  std::int64_t spatial = 1;
  std::int64_t groups = 0;
  const float* mean = nullptr; ///< [N, G]
  const float* rstd = nullptr; ///< [N, G]
  const float* gamma = nullptr;
  const float* beta = nullptr;
  Activation activation = Activation::kNone;
  const std::uint8_t* mask = nullptr; ///< the forward's mask, channels last only
  void* dx = nullptr;
  float* dgamma = nullptr; ///< optional [C]; written (+0) even when the tensor has no element
  float* dbeta = nullptr;  ///< optional [C]; as dgamma
  Tuning tuning{};
};

[[nodiscard]] Status can_implement(const GroupNormBackwardArgs& args);
/// Per-group partial sums for the split path plus per-channel partials for dgamma/dbeta (+ slack).
std::size_t workspace_size(const GroupNormBackwardArgs& args);
Path selected_path(const GroupNormBackwardArgs& args);
[[nodiscard]] Status run(const GroupNormBackwardArgs& args, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

} // namespace group_norm
CULAYERS_NAMESPACE_END

#endif // CULAYERS_GROUP_NORM_HPP_
