// The layer front end's memory: an allocator interface with a stream-ordered pool as the default, an
// owning device tensor, and the per-call context (stream, phase, allocator).
//
// Allocation happens when a layer is built or first called for a shape; a warmed-up call allocates
// nothing and never synchronizes, so a whole model call can be captured in a CUDA graph.
#ifndef CULAYERS_NN_TENSOR_HPP_
#define CULAYERS_NN_TENSOR_HPP_

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/version.hpp"

CULAYERS_NAMESPACE_BEGIN
namespace nn {

/// Keras's learning phase. Numbers are part of the ABI (culayersPhase_t mirrors them).
enum class Phase : int {
  kInference = 0, ///< dropout is the identity, normalization uses moving statistics, no update runs
  kTraining = 1,  ///< dropout drops, batch statistics, update ops run after the call
};

/// "inference" / "training" (a static string; "unknown phase" otherwise).
const char* phase_name(Phase phase) noexcept;

/// Device memory for tensors and layer workspaces. Implementations must be thread-safe.
class Allocator {
 public:
  virtual ~Allocator() = default;
  /// Memory usable by work enqueued on `stream` after this call. kErrorOutOfMemory when it cannot.
  [[nodiscard]] virtual Status allocate(void** ptr, std::size_t bytes, cudaStream_t stream) = 0;
  /// Returns memory once the work enqueued on `stream` so far is done with it.
  virtual void deallocate(void* ptr, std::size_t bytes, cudaStream_t stream) noexcept = 0;
};

/// The default: cudaMallocAsync / cudaFreeAsync on the current device's default memory pool. On first use
/// the pool's release threshold is raised to keep freed memory (UINT64_MAX), so steady-state
/// allocations are served from the pool without calls into the driver.
class StreamPoolAllocator final : public Allocator {
 public:
  [[nodiscard]] Status allocate(void** ptr, std::size_t bytes, cudaStream_t stream) override;
  void deallocate(void* ptr, std::size_t bytes, cudaStream_t stream) noexcept override;
};

/// Process-wide StreamPoolAllocator.
Allocator& default_allocator() noexcept;

/// An owning, contiguous device tensor. Move-only; the memory goes back to its allocator when the tensor
/// is destroyed or reset, on its release stream: the stream it was allocated on, until release_on()
/// names another.
class Tensor {
 public:
  Tensor() = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor(Tensor&& other) noexcept;
  Tensor& operator=(Tensor&& other) noexcept;
  ~Tensor();

  /// Allocates an uninitialized tensor (null `allocator`: default_allocator()). *out is replaced only on
  /// success. kErrorInvalidShape / kErrorSizeLimit for a bad shape, kErrorInvalidDType for a bad dtype.
  [[nodiscard]] static Status empty(const Shape& shape, DType dtype, Tensor* out,
                                    cudaStream_t stream = nullptr, Allocator* allocator = nullptr);

  const Shape& shape() const noexcept { return shape_; }
  DType dtype() const noexcept { return dtype_; }
  std::int64_t numel() const noexcept { return shape_.numel(); }
  std::size_t bytes() const noexcept { return bytes_; }
  void* data() noexcept { return data_; }
  const void* data() const noexcept { return data_; }
  /// True once created by empty() (also for zero elements) and until reset() or moved from.
  bool defined() const noexcept { return allocator_ != nullptr; }

  TensorView view() noexcept { return TensorView::contiguous(data_, dtype_, shape_); }
  ConstTensorView view() const noexcept { return ConstTensorView::contiguous(data_, dtype_, shape_); }

  /// Enqueues a copy of bytes() bytes from host memory (kErrorInvalidValue if `bytes` differs).
  [[nodiscard]] Status copy_from_host(const void* src, std::size_t bytes, cudaStream_t stream);
  /// Enqueues a copy of bytes() bytes to host memory; the caller synchronizes `stream` before reading.
  [[nodiscard]] Status copy_to_host(void* dst, std::size_t bytes, cudaStream_t stream) const;
  /// Enqueues a device-to-device copy from a tensor of the same shape and dtype.
  [[nodiscard]] Status copy_from(const Tensor& src, cudaStream_t stream);
  /// Enqueues a fill with zero bytes.
  [[nodiscard]] Status zero(cudaStream_t stream);

  /// Frees the memory (ordered on the release stream) and leaves an undefined tensor.
  void reset() noexcept;

  /// Makes `stream` the release stream. A tensor used by work on another stream than its allocation's
  /// names the last stream that uses it, so the free is ordered after that work (the layers do this on
  /// every call); work on other streams must be ordered before it by the caller.
  void release_on(cudaStream_t stream) noexcept { stream_ = stream; }
  cudaStream_t release_stream() const noexcept { return stream_; }

 private:
  Shape shape_{};
  DType dtype_ = DType::kFloat32;
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  Allocator* allocator_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

/// What a layer call needs besides its inputs.
struct CallContext {
  cudaStream_t stream = nullptr;
  Phase phase = Phase::kInference;
  /// null: default_allocator(). Layers keep the buffers a call allocates and free them through this allocator
  /// later (when a buffer is replaced, and when the layer is destroyed): it must outlive every layer or
  /// model called with it.
  Allocator* allocator = nullptr;

  Allocator& alloc() const noexcept { return allocator != nullptr ? *allocator : default_allocator(); }
};

} // namespace nn
CULAYERS_NAMESPACE_END

#endif // CULAYERS_NN_TENSOR_HPP_
