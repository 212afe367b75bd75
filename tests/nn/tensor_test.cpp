// The front end's memory (culayers/nn/tensor.hpp) on both backends: owning tensors (allocation, views,
// copies, moves, zero-element tensors), the stream-ordered pool allocator, custom allocators, and argument
// errors that leave the target untouched.
#include "culayers/nn/tensor.hpp"

#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

namespace {

namespace nn = culayers::nn;
using culayers::DType;
using culayers::Shape;
using culayers::Status;
using culayers::test::rng_for_test;

/// Forwards to the default allocator and records every call.
class CountingAllocator final : public nn::Allocator {
 public:
  Status allocate(void** ptr, std::size_t bytes, cudaStream_t stream) override {
    ++allocations;
    last_bytes = bytes;
    last_stream = stream;
    return nn::default_allocator().allocate(ptr, bytes, stream);
  }
  void deallocate(void* ptr, std::size_t bytes, cudaStream_t stream) noexcept override {
    ++deallocations;
    freed_bytes += bytes;
    nn::default_allocator().deallocate(ptr, bytes, stream);
  }
  int allocations = 0;
  int deallocations = 0;
  std::size_t last_bytes = 0;
  std::size_t freed_bytes = 0;
  cudaStream_t last_stream = nullptr;
};

TEST(NnTensor, EmptyAllocatesContiguousStorage) {
  nn::Tensor t;
  EXPECT_FALSE(t.defined());
  ASSERT_EQ(nn::Tensor::empty(Shape{3, 5, 7}, DType::kBFloat16, &t), Status::kSuccess)
      << culayers::last_error_message();
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.shape(), (Shape{3, 5, 7}));
  EXPECT_EQ(t.dtype(), DType::kBFloat16);
  EXPECT_EQ(t.numel(), 105);
  EXPECT_EQ(t.bytes(), 210u);
  ASSERT_NE(t.data(), nullptr);
  const culayers::TensorView v = t.view();
  EXPECT_EQ(v.data(), t.data());
  EXPECT_EQ(v.shape(), t.shape());
  EXPECT_EQ(v.strides()[0], 35);
  EXPECT_EQ(v.strides()[1], 7);
  EXPECT_EQ(v.strides()[2], 1);
}

TEST(NnTensor, HostRoundTripZeroAndDeviceCopy) {
  auto rng = rng_for_test();
  std::vector<float> host(1000);
  for (float& v : host) {
    v = std::uniform_real_distribution<float>(-4.0f, 4.0f)(rng);
  }
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  nn::Tensor a;
  nn::Tensor b;
  ASSERT_EQ(nn::Tensor::empty(Shape{10, 100}, DType::kFloat32, &a, stream), Status::kSuccess);
  ASSERT_EQ(nn::Tensor::empty(Shape{10, 100}, DType::kFloat32, &b, stream), Status::kSuccess);
  ASSERT_EQ(a.copy_from_host(host.data(), host.size() * sizeof(float), stream), Status::kSuccess);
  ASSERT_EQ(b.copy_from(a, stream), Status::kSuccess);
  std::vector<float> back(host.size(), -1.0f);
  ASSERT_EQ(b.copy_to_host(back.data(), back.size() * sizeof(float), stream), Status::kSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(std::memcmp(back.data(), host.data(), host.size() * sizeof(float)), 0);
  ASSERT_EQ(b.zero(stream), Status::kSuccess);
  ASSERT_EQ(b.copy_to_host(back.data(), back.size() * sizeof(float), stream), Status::kSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  for (float v : back) {
    ASSERT_EQ(v, 0.0f);
  }
  a.reset();
  b.reset();
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

TEST(NnTensor, MovesTransferOwnershipAndFreeOnce) {
  CountingAllocator counting;
  {
    nn::Tensor a;
    ASSERT_EQ(nn::Tensor::empty(Shape{64}, DType::kInt32, &a, nullptr, &counting), Status::kSuccess);
    void* p = a.data();
    nn::Tensor b(std::move(a));
    EXPECT_FALSE(a.defined()); // NOLINT(bugprone-use-after-move): moved-from state is specified
    EXPECT_EQ(a.data(), nullptr);
    EXPECT_EQ(b.data(), p);
    nn::Tensor c;
    ASSERT_EQ(nn::Tensor::empty(Shape{8}, DType::kUInt8, &c, nullptr, &counting), Status::kSuccess);
    c = std::move(b); // frees c's old storage
    EXPECT_EQ(counting.deallocations, 1);
    EXPECT_EQ(c.data(), p);
    EXPECT_EQ(c.bytes(), 256u);
  }
  EXPECT_EQ(counting.allocations, 2);
  EXPECT_EQ(counting.deallocations, 2);
  EXPECT_EQ(counting.freed_bytes, 256u + 8u);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(NnTensor, CustomAllocatorSeesTheStream) {
  CountingAllocator counting;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  {
    nn::Tensor t;
    ASSERT_EQ(nn::Tensor::empty(Shape{4, 4}, DType::kFloat16, &t, stream, &counting), Status::kSuccess);
    EXPECT_EQ(counting.allocations, 1);
    EXPECT_EQ(counting.last_bytes, 32u);
    EXPECT_EQ(counting.last_stream, stream);
  }
  EXPECT_EQ(counting.deallocations, 1);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

TEST(NnTensor, ZeroElementTensorIsDefinedAndEmpty) {
  nn::Tensor t;
  ASSERT_EQ(nn::Tensor::empty(Shape{0, 16}, DType::kFloat32, &t), Status::kSuccess);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.bytes(), 0u);
  EXPECT_EQ(t.numel(), 0);
  EXPECT_EQ(t.copy_from_host(nullptr, 0, nullptr), Status::kSuccess);
  EXPECT_EQ(t.zero(nullptr), Status::kSuccess);
}

TEST(NnTensor, PoolAllocationsAreReleasedAndReused) {
#if CULAYERS_TEST_EMULATED
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::size_t before = culayers_emu::live_allocations();
#endif
  for (int i = 0; i < 50; ++i) {
    nn::Tensor t;
    ASSERT_EQ(nn::Tensor::empty(Shape{1 << 12}, DType::kFloat32, &t), Status::kSuccess);
    ASSERT_EQ(t.zero(nullptr), Status::kSuccess);
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
#if CULAYERS_TEST_EMULATED
  EXPECT_EQ(culayers_emu::live_allocations(), before) << "a tensor leaked its storage";
#endif
}

TEST(NnTensor, BadArgumentsAreErrorsAndLeaveTheTargetAlone) {
  nn::Tensor t;
  ASSERT_EQ(nn::Tensor::empty(Shape{5}, DType::kFloat32, &t), Status::kSuccess);
  void* p = t.data();
  EXPECT_EQ(nn::Tensor::empty(Shape{5}, DType::kFloat32, nullptr), Status::kErrorNullPointer);
  EXPECT_EQ(nn::Tensor::empty(Shape{5}, static_cast<DType>(99), &t), Status::kErrorInvalidDType);
  EXPECT_NE(std::string(culayers::last_error_message()).find("tensor: dtype"), std::string::npos);
  EXPECT_EQ(nn::Tensor::empty(Shape{2, -3}, DType::kFloat32, &t), Status::kErrorInvalidShape);
  EXPECT_EQ(nn::Tensor::empty(Shape{INT64_MAX / 2, 4}, DType::kFloat32, &t), Status::kErrorSizeLimit);
  EXPECT_EQ(t.data(), p);
  EXPECT_EQ(t.shape(), (Shape{5}));
  float host[5] = {};
  EXPECT_EQ(t.copy_from_host(host, 4 * sizeof(float), nullptr), Status::kErrorInvalidValue);
  EXPECT_EQ(t.copy_to_host(host, 6 * sizeof(float), nullptr), Status::kErrorInvalidValue);
  EXPECT_EQ(t.copy_from_host(nullptr, 5 * sizeof(float), nullptr), Status::kErrorNullPointer);
  nn::Tensor other;
  ASSERT_EQ(nn::Tensor::empty(Shape{6}, DType::kFloat32, &other), Status::kSuccess);
  EXPECT_EQ(t.copy_from(other, nullptr), Status::kErrorInconsistentArguments);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(NnTensor, PhaseNamesAndContextDefaults) {
  EXPECT_STREQ(nn::phase_name(nn::Phase::kInference), "inference");
  EXPECT_STREQ(nn::phase_name(nn::Phase::kTraining), "training");
  EXPECT_STREQ(nn::phase_name(static_cast<nn::Phase>(7)), "unknown phase");
  nn::CallContext ctx;
  EXPECT_EQ(ctx.phase, nn::Phase::kInference);
  EXPECT_EQ(&ctx.alloc(), &nn::default_allocator());
  CountingAllocator counting;
  ctx.allocator = &counting;
  EXPECT_EQ(&ctx.alloc(), &counting);
}

} // namespace
