// Tests of kernels/common/vector_io.cuh: a vectorized copy with scalar tails for every dtype and legal
// width over the boundary sizes and misaligned views, the host width helper max_vec_width, and (emulated
// build) the checked accesses: exact byte counts, misaligned vectors and out-of-bounds accesses reported
// as launch failures naming the kernel's source file.
#include "kernels/common/common.cuh"
#include "tests/common/common_test_helpers.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

namespace ck = culayers::kernels;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::common::bits_of;
using culayers::test::common::DTypeTraits;
using culayers::test::common::seed_trace;

static_assert(sizeof(ck::Vec<float, 4>) == 16 && alignof(ck::Vec<float, 4>) == 16, "float4-like vector");
static_assert(sizeof(ck::Vec<__half, 8>) == 16 && alignof(ck::Vec<__half, 8>) == 16, "8 halfs in 16 bytes");
static_assert(sizeof(ck::Vec<__nv_bfloat16, 2>) == 4 && alignof(ck::Vec<__nv_bfloat16, 2>) == 4, "bf16x2");
static_assert(sizeof(ck::Vec<float, 1>) == 4 && alignof(ck::Vec<float, 1>) == 4, "scalar vector");

// Elements [0, n / N * N) move as N-wide vectors, the rest as scalars (the tail); grid-stride loops so a
// small grid covers any n.
template <class T, int N>
CULAYERS_GLOBAL void copy_kernel(const T* in, T* out, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t vectors = n / N;
  for (std::int64_t v = start; v < vectors; v += stride) {
    ck::store_vec<N>(out + v * N, ck::load_vec<N>(in + v * N));
  }
  for (std::int64_t i = vectors * N + start; i < n; i += stride) {
    ck::store(out + i, ck::load(in + i));
  }
}

template <class T, int N>
cudaError_t launch_copy_n(const T* in, T* out, std::int64_t n) {
  constexpr unsigned kBlock = 64;
  const std::int64_t vectors = std::max<std::int64_t>(n / N, 1);
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>((vectors + kBlock - 1) / kBlock, 4));
  return CULAYERS_LAUNCH((copy_kernel<T, N>), dim3(grid), dim3(kBlock), 0, nullptr, in, out, n);
}

// Runtime width -> instantiation; widths wider than 16 bytes do not exist for T.
template <class T>
cudaError_t launch_copy(const T* in, T* out, std::int64_t n, int width) {
  constexpr int kMaxWidth = static_cast<int>(16 / sizeof(T));
  if constexpr (kMaxWidth >= 8) {
    if (width == 8) {
      return launch_copy_n<T, 8>(in, out, n);
    }
  }
  if (width == 4) {
    return launch_copy_n<T, 4>(in, out, n);
  }
  if (width == 2) {
    return launch_copy_n<T, 2>(in, out, n);
  }
  return launch_copy_n<T, 1>(in, out, n);
}

// Random bit patterns (any sign, exponent, subnormals, infinities), NaNs excluded so a copy that goes
// through a floating-point register could not legitimately change them.
template <class T>
std::vector<T> random_values(std::mt19937_64& rng, std::size_t n) {
  std::uniform_int_distribution<std::uint32_t> bits;
  std::vector<T> v(n);
  for (auto& x : v) {
    do {
      const std::uint32_t b = bits(rng);
      std::memcpy(static_cast<void*>(&x), &b, sizeof(T));
    } while (std::isnan(ck::to_float(x)));
  }
  return v;
}

constexpr unsigned char kSentinel = 0x5A;

template <class T>
void check_copy(std::mt19937_64& rng) {
  constexpr int kMaxWidth = static_cast<int>(16 / sizeof(T));
  const std::int64_t sizes[] = {1, 7, 31, 33, 65, 511, 1025};
  for (int requested = 1; requested <= kMaxWidth; requested *= 2) {
    for (const std::int64_t n : sizes) {
      for (const int offset : {0, 1}) {
        SCOPED_TRACE(testing::Message() << DTypeTraits<T>::kName << ": requested width " << requested
                                        << ", n = " << n << ", view offset " << offset << " element(s)");
        // One spare element on each side of the view: the copy must not touch them.
        const std::size_t alloc = static_cast<std::size_t>(n) + 2;
        const std::vector<T> host = random_values<T>(rng, alloc);
        DeviceBuffer<T> in(host);
        DeviceBuffer<T> out(alloc);
        out.fill_bytes(kSentinel);
        const T* in_view = in.get() + offset;
        T* out_view = out.get() + offset;

        // cudaMalloc is 256-byte aligned: the requested width fits an aligned view, and a view offset by
        // one element (not a multiple of any vector) allows only scalar accesses.
        const int fitting = ck::max_vec_width<T>(0, {in_view, out_view});
        EXPECT_EQ(fitting, offset == 0 ? kMaxWidth : 1);
        const int width = std::min(requested, fitting);

#if CULAYERS_TEST_EMULATED
        culayers_emu::reset_byte_counters();
#endif
        CULAYERS_ASSERT_CUDA(launch_copy<T>(in_view, out_view, n, width));
        CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
#if CULAYERS_TEST_EMULATED
        // The byte model of a copy: every element read once and written once, vectors and tail alike.
        const culayers_emu::ByteCounters bytes = culayers_emu::byte_counters();
        EXPECT_EQ(bytes.read, static_cast<std::uint64_t>(n) * sizeof(T));
        EXPECT_EQ(bytes.written, static_cast<std::uint64_t>(n) * sizeof(T));
#endif
        const std::vector<T> got = out.download();
        ASSERT_EQ(got.size(), alloc);
        int mismatches = 0;
        for (std::size_t i = 0; i < alloc && mismatches < 5; ++i) {
          const bool inside =
              i >= static_cast<std::size_t>(offset) && i < static_cast<std::size_t>(offset + n);
          if (inside) {
            if (bits_of(got[i]) != bits_of(host[i])) {
              ADD_FAILURE() << "element " << i - static_cast<std::size_t>(offset) << " of the view: 0x"
                            << std::hex << bits_of(got[i]) << " instead of 0x" << bits_of(host[i])
                            << std::dec;
              ++mismatches;
            }
          } else {
            unsigned char raw[sizeof(T)];
            std::memcpy(raw, &got[i], sizeof(T));
            if (std::any_of(raw, raw + sizeof(T), [](unsigned char c) { return c != kSentinel; })) {
              ADD_FAILURE() << "element " << i << " of the allocation lies outside the view but was written";
              ++mismatches;
            }
          }
        }
      }
    }
  }
}

TEST(CommonVectorIo, CopyFloatEveryWidthSizeAndAlignment) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_copy<float>(rng);
}

TEST(CommonVectorIo, CopyHalfEveryWidthSizeAndAlignment) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_copy<__half>(rng);
}

TEST(CommonVectorIo, CopyBFloat16EveryWidthSizeAndAlignment) {
  SCOPED_TRACE(seed_trace());
  auto rng = rng_for_test();
  check_copy<__nv_bfloat16>(rng);
}

// A view shifted by a whole vector keeps the full width; shifted by part of one it drops to what the
// shift allows (2 halfs = 4 bytes -> 2-wide).
TEST(CommonVectorIo, MaxVecWidthOfDeviceViews) {
  DeviceBuffer<__half> h(64);
  DeviceBuffer<float> f(64);
  EXPECT_EQ(ck::max_vec_width<__half>(0, {h.get()}), 8);
  EXPECT_EQ(ck::max_vec_width<__half>(0, {h.get() + 8}), 8);
  EXPECT_EQ(ck::max_vec_width<__half>(0, {h.get() + 4}), 4);
  EXPECT_EQ(ck::max_vec_width<__half>(0, {h.get() + 2}), 2);
  EXPECT_EQ(ck::max_vec_width<__half>(0, {h.get() + 1}), 1);
  EXPECT_EQ(ck::max_vec_width<float>(0, {f.get(), f.get() + 4}), 4);
  EXPECT_EQ(ck::max_vec_width<float>(0, {f.get(), f.get() + 2}), 2);
  EXPECT_EQ(ck::max_vec_width<float>(0, {f.get() + 1, f.get()}), 1);
}

TEST(CommonVectorIo, MaxVecWidthFromAlignmentAndRowLength) {
  alignas(16) static unsigned char buffer[64];
  const unsigned char* b = buffer;
  // float: 16 / 4 = 4 at most.
  EXPECT_EQ(ck::max_vec_width<float>(0, {b}), 4);
  EXPECT_EQ(ck::max_vec_width<float>(-1, {b}), 4); // row_elements <= 0 imposes nothing
  EXPECT_EQ(ck::max_vec_width<float>(8, {b}), 4);
  EXPECT_EQ(ck::max_vec_width<float>(6, {b}), 2);
  EXPECT_EQ(ck::max_vec_width<float>(7, {b}), 1);
  EXPECT_EQ(ck::max_vec_width<float>(0, {b + 8}), 2);
  EXPECT_EQ(ck::max_vec_width<float>(0, {b + 4}), 1);
  EXPECT_EQ(ck::max_vec_width<float>(0, {b, b + 16, b + 8}), 2); // the least aligned pointer decides
  EXPECT_EQ(ck::max_vec_width<float>(4, {b, b + 4}), 1);
  EXPECT_EQ(ck::max_vec_width<float>(0, {}), 4);
  EXPECT_EQ(ck::max_vec_width<float>(0, {nullptr, b}), 4); // null pointers impose nothing
  // half and bfloat16: 8 at most.
  EXPECT_EQ(ck::max_vec_width<__half>(0, {b}), 8);
  EXPECT_EQ(ck::max_vec_width<__half>(12, {b}), 4);
  EXPECT_EQ(ck::max_vec_width<__half>(10, {b}), 2);
  EXPECT_EQ(ck::max_vec_width<__half>(1025, {b}), 1);
  EXPECT_EQ(ck::max_vec_width<__half>(0, {b + 2}), 1);
  EXPECT_EQ(ck::max_vec_width<__half>(0, {b + 4}), 2);
  EXPECT_EQ(ck::max_vec_width<__half>(0, {b + 8}), 4);
  EXPECT_EQ(ck::max_vec_width<__half>(16, {b + 8, b}), 4);
  EXPECT_EQ(ck::max_vec_width<__nv_bfloat16>(0, {b}), 8);
  EXPECT_EQ(ck::max_vec_width<__nv_bfloat16>(24, {b + 16}), 8);
  EXPECT_EQ(ck::max_vec_width<__nv_bfloat16>(0, {b + 6}), 1);
  // Other element sizes: 16 bytes at most, one element at least.
  EXPECT_EQ(ck::max_vec_width<double>(0, {b}), 2);
  EXPECT_EQ(ck::max_vec_width<std::uint8_t>(0, {b}), 16);
  EXPECT_EQ(ck::max_vec_width<std::uint8_t>(0, {b + 3}), 1);
  EXPECT_EQ(ck::max_vec_width<std::uint8_t>(0, {b + 12}), 4);
  EXPECT_EQ((ck::max_vec_width<ck::Vec<float, 4>>(0, {b})), 1);
}

#if CULAYERS_TEST_EMULATED
// ---- emulated build only: the checked accesses -----------------------------------------------------------

using culayers::test::common::fault_of;
using culayers::test::common::QuietEmulatorFaults;

// A 16-byte load from a pointer that is only 4-byte aligned (a bug on a GPU: misaligned address).
CULAYERS_GLOBAL void misaligned_load_kernel(const float* in, float* out) {
  const ck::Vec<float, 4> v = ck::load_vec<4>(in + 1);
  ck::store(out, v[0]);
}

CULAYERS_GLOBAL void misaligned_store_kernel(float* out) {
  ck::Vec<float, 4> v;
  for (int k = 0; k < 4; ++k) {
    v[k] = 1.0f;
  }
  ck::store_vec<4>(out + 2, v);
}

// Reads (or writes) element n of an n-element buffer: one past the end.
CULAYERS_GLOBAL void past_end_load_kernel(const float* in, float* out) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  ck::store(out + i, ck::load(in + i + 1));
}

CULAYERS_GLOBAL void past_end_store_kernel(float* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i == 0) {
    ck::store(out + n, 1.0f);
  }
}

void expect_message_has(const std::string& message, const char* what) {
  EXPECT_NE(message.find(what), std::string::npos) << "'" << what << "' missing from: " << message;
}

TEST(CommonVectorIo, EmulatedMisalignedVectorLoadIsALaunchFailure) {
  DeviceBuffer<float> in(64);
  DeviceBuffer<float> out(64);
  in.fill_bytes(0);
  QuietEmulatorFaults quiet;
  const cudaError_t e =
      fault_of(CULAYERS_LAUNCH(misaligned_load_kernel, dim3(1), dim3(1), 0, nullptr, in.get(), out.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure) << cudaGetErrorName(e);
  const std::string message = culayers_emu::last_error_message();
  expect_message_has(message, "misaligned");
  expect_message_has(message, "16-byte load");
  expect_message_has(message, "misaligned_load_kernel");
  expect_message_has(message, "vector_io_test.cu");
}

TEST(CommonVectorIo, EmulatedMisalignedVectorStoreIsALaunchFailure) {
  DeviceBuffer<float> out(64);
  QuietEmulatorFaults quiet;
  const cudaError_t e =
      fault_of(CULAYERS_LAUNCH(misaligned_store_kernel, dim3(1), dim3(32), 0, nullptr, out.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure) << cudaGetErrorName(e);
  const std::string message = culayers_emu::last_error_message();
  expect_message_has(message, "misaligned");
  expect_message_has(message, "store");
  expect_message_has(message, "vector_io_test.cu");
}

TEST(CommonVectorIo, EmulatedLoadPastTheEndIsALaunchFailure) {
  constexpr int kN = 37; // not a multiple of any allocator granule: the next byte is nobody's
  DeviceBuffer<float> in(kN);
  DeviceBuffer<float> out(kN);
  in.fill_bytes(0);
  QuietEmulatorFaults quiet;
  // Thread kN - 1 reads in[kN].
  const cudaError_t e =
      fault_of(CULAYERS_LAUNCH(past_end_load_kernel, dim3(1), dim3(kN), 0, nullptr, in.get(), out.get()));
  EXPECT_EQ(e, cudaErrorLaunchFailure) << cudaGetErrorName(e);
  const std::string message = culayers_emu::last_error_message();
  expect_message_has(message, "past its end");
  expect_message_has(message, "load");
  expect_message_has(message, "past_end_load_kernel");
  expect_message_has(message, "vector_io_test.cu");
}

TEST(CommonVectorIo, EmulatedStorePastTheEndIsALaunchFailure) {
  constexpr int kN = 37;
  DeviceBuffer<float> out(kN);
  QuietEmulatorFaults quiet;
  const cudaError_t e =
      fault_of(CULAYERS_LAUNCH(past_end_store_kernel, dim3(1), dim3(32), 0, nullptr, out.get(), kN));
  EXPECT_EQ(e, cudaErrorLaunchFailure) << cudaGetErrorName(e);
  const std::string message = culayers_emu::last_error_message();
  expect_message_has(message, "past its end");
  expect_message_has(message, "store");
}

// After a planted fault the emulator keeps working (a fault is not sticky there, unlike on a GPU).
TEST(CommonVectorIo, EmulatedCopyWorksAfterAFault) {
  SCOPED_TRACE(seed_trace());
  {
    DeviceBuffer<float> out(64);
    QuietEmulatorFaults quiet;
    (void)fault_of(CULAYERS_LAUNCH(misaligned_store_kernel, dim3(1), dim3(1), 0, nullptr, out.get()));
  }
  auto rng = rng_for_test();
  const std::vector<float> host = random_values<float>(rng, 33);
  DeviceBuffer<float> in(host);
  DeviceBuffer<float> out(33);
  CULAYERS_ASSERT_CUDA(launch_copy<float>(in.get(), out.get(), 33, 1));
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got = out.download();
  EXPECT_EQ(std::memcmp(got.data(), host.data(), sizeof(float) * host.size()), 0);
}
#endif

} // namespace
