// Owning device tensors, the stream-ordered pool allocator and the phase names
// (include/culayers/nn/tensor.hpp).
#include "culayers/nn/tensor.hpp"

#include <cstdint>
#include <mutex>
#include <utility>

CULAYERS_NAMESPACE_BEGIN
namespace nn {

using ::culayers::detail::set_error;

const char* phase_name(Phase phase) noexcept {
  switch (phase) {
  case Phase::kInference:
    return "inference";
  case Phase::kTraining:
    return "training";
  }
  return "unknown phase";
}

namespace {

/// Raises the release threshold of the current device's default pool once per device, so memory freed
/// with cudaFreeAsync stays in the pool (steady-state allocations never reach the driver).
void keep_pool_memory() {
  constexpr int kDevices = 64;
  static std::once_flag once[kDevices];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) {
    (void)cudaGetLastError();
    return;
  }
  std::call_once(once[device], [device] {
    // Best effort: a failure here only costs speed. Its own error is cleared (and only then, so an
    // error the caller has not read yet survives).
    cudaMemPool_t pool = nullptr;
    std::uint64_t keep_all = UINT64_MAX;
    if (cudaDeviceGetDefaultMemPool(&pool, device) != cudaSuccess ||
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all) != cudaSuccess) {
      (void)cudaGetLastError();
    }
  });
}

} // namespace

Status StreamPoolAllocator::allocate(void** ptr, std::size_t bytes, cudaStream_t stream) {
  if (ptr == nullptr) {
    return set_error(Status::kErrorNullPointer, "allocator: ptr: is null");
  }
  if (bytes == 0) {
    *ptr = nullptr;
    return Status::kSuccess;
  }
  keep_pool_memory();
  void* p = nullptr;
  const cudaError_t e = cudaMallocAsync(&p, bytes, stream);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return set_error(e == cudaErrorMemoryAllocation ? Status::kErrorOutOfMemory : Status::kErrorCudaRuntime,
                     "allocator: cudaMallocAsync of %zu bytes: %s", bytes, cudaGetErrorString(e));
  }
  *ptr = p;
  return Status::kSuccess;
}

void StreamPoolAllocator::deallocate(void* ptr, std::size_t bytes, cudaStream_t stream) noexcept {
  (void)bytes;
  if (ptr != nullptr && cudaFreeAsync(ptr, stream) != cudaSuccess) {
    (void)cudaGetLastError();
  }
}

Allocator& default_allocator() noexcept {
  static StreamPoolAllocator allocator;
  return allocator;
}

Tensor::Tensor(Tensor&& other) noexcept
    : shape_(other.shape_), dtype_(other.dtype_), data_(other.data_), bytes_(other.bytes_),
      allocator_(other.allocator_), stream_(other.stream_) {
  other.data_ = nullptr;
  other.bytes_ = 0;
  other.allocator_ = nullptr;
  other.shape_ = Shape{};
}

Tensor& Tensor::operator=(Tensor&& other) noexcept {
  if (this != &other) {
    reset();
    shape_ = other.shape_;
    dtype_ = other.dtype_;
    data_ = other.data_;
    bytes_ = other.bytes_;
    allocator_ = other.allocator_;
    stream_ = other.stream_;
    other.data_ = nullptr;
    other.bytes_ = 0;
    other.allocator_ = nullptr;
    other.shape_ = Shape{};
  }
  return *this;
}

Tensor::~Tensor() {
  reset();
}

void Tensor::reset() noexcept {
  if (allocator_ != nullptr && data_ != nullptr) {
    allocator_->deallocate(data_, bytes_, stream_);
  }
  data_ = nullptr;
  bytes_ = 0;
  allocator_ = nullptr;
  shape_ = Shape{};
}

Status Tensor::empty(const Shape& shape, DType dtype, Tensor* out, cudaStream_t stream,
                     Allocator* allocator) {
  constexpr const char* kOp = "tensor";
  if (out == nullptr) {
    return set_error(Status::kErrorNullPointer, "%s: out: is null", kOp);
  }
  if (!is_valid(dtype)) {
    return set_error(Status::kErrorInvalidDType, "%s: dtype: %d is not a dtype", kOp,
                     static_cast<int>(dtype));
  }
  if (Status s = shape.validate(kOp, "shape"); !ok(s)) {
    return s;
  }
  std::int64_t bytes = 0;
  if (!detail::checked_mul(shape.numel(), static_cast<std::int64_t>(dtype_size(dtype)), &bytes)) {
    return set_error(Status::kErrorSizeLimit, "%s: shape: byte count overflows", kOp);
  }
  Allocator& alloc = allocator != nullptr ? *allocator : default_allocator();
  void* p = nullptr;
  if (Status s = alloc.allocate(&p, static_cast<std::size_t>(bytes), stream); !ok(s)) {
    return s;
  }
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.data_ = p;
  t.bytes_ = static_cast<std::size_t>(bytes);
  t.allocator_ = &alloc;
  t.stream_ = stream;
  *out = std::move(t);
  return Status::kSuccess;
}

namespace {

Status copy_error(const char* what, cudaError_t e) {
  (void)cudaGetLastError();
  return set_error(Status::kErrorCudaRuntime, "tensor: %s: %s", what, cudaGetErrorString(e));
}

} // namespace

Status Tensor::copy_from_host(const void* src, std::size_t bytes, cudaStream_t stream) {
  if (bytes != bytes_) {
    return set_error(Status::kErrorInvalidValue,
                     "tensor: copy_from_host: %zu bytes given, the tensor holds %zu", bytes, bytes_);
  }
  if (bytes == 0) {
    return Status::kSuccess;
  }
  if (src == nullptr) {
    return set_error(Status::kErrorNullPointer, "tensor: copy_from_host: src: is null");
  }
  const cudaError_t e = cudaMemcpyAsync(data_, src, bytes, cudaMemcpyHostToDevice, stream);
  return e == cudaSuccess ? Status::kSuccess : copy_error("cudaMemcpyAsync", e);
}

Status Tensor::copy_to_host(void* dst, std::size_t bytes, cudaStream_t stream) const {
  if (bytes != bytes_) {
    return set_error(Status::kErrorInvalidValue,
                     "tensor: copy_to_host: %zu bytes requested, the tensor holds %zu", bytes, bytes_);
  }
  if (bytes == 0) {
    return Status::kSuccess;
  }
  if (dst == nullptr) {
    return set_error(Status::kErrorNullPointer, "tensor: copy_to_host: dst: is null");
  }
  const cudaError_t e = cudaMemcpyAsync(dst, data_, bytes, cudaMemcpyDeviceToHost, stream);
  return e == cudaSuccess ? Status::kSuccess : copy_error("cudaMemcpyAsync", e);
}

Status Tensor::copy_from(const Tensor& src, cudaStream_t stream) {
  if (src.shape_ != shape_ || src.dtype_ != dtype_) {
    return set_error(Status::kErrorInconsistentArguments, "tensor: copy_from: shape or dtype differ");
  }
  if (bytes_ == 0 || src.data_ == data_) {
    return Status::kSuccess;
  }
  const cudaError_t e = cudaMemcpyAsync(data_, src.data_, bytes_, cudaMemcpyDeviceToDevice, stream);
  return e == cudaSuccess ? Status::kSuccess : copy_error("cudaMemcpyAsync", e);
}

Status Tensor::zero(cudaStream_t stream) {
  if (bytes_ == 0) {
    return Status::kSuccess;
  }
  const cudaError_t e = cudaMemsetAsync(data_, 0, bytes_, stream);
  return e == cudaSuccess ? Status::kSuccess : copy_error("cudaMemsetAsync", e);
}

} // namespace nn
CULAYERS_NAMESPACE_END
