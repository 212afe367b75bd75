// The batch-normalization C API (culayers/c/batch_norm.h) on both backends: defaults, the same bits as the
// C++ API for the apply (channels first, bfloat16), the merge and the moving update, and statuses for bad
// arguments (null args, an out-of-range dtype) with nothing written.
#include "culayers/c/batch_norm.h"

#include "culayers/batch_norm.hpp"

#include "tests/support/test_support.hpp"

#include <cuda_bf16.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

namespace cb = culayers::batch_norm;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;

template <class T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

std::vector<float> uniform_floats(std::mt19937_64& rng, std::size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) {
    x = d(rng);
  }
  return v;
}

TEST(BatchNormCapi, DefaultsMatchCpp) {
  culayersBatchNormApplyArgs_t c;
  std::memset(&c, 0x5a, sizeof(c));
  culayersBatchNormApplyArgsInit(&c);
  const cb::BatchNormApplyArgs cpp;
  EXPECT_EQ(static_cast<int>(c.dtype), static_cast<int>(cpp.dtype));
  EXPECT_EQ(c.inner, cpp.inner);
  EXPECT_EQ(c.epsilon, cpp.epsilon);
  EXPECT_EQ(c.rows, 0);
  EXPECT_EQ(c.channels, 0);
  EXPECT_EQ(c.x, nullptr);
  EXPECT_EQ(c.y, nullptr);
  EXPECT_EQ(c.mean, nullptr);
  EXPECT_EQ(c.gamma, nullptr);
  EXPECT_EQ(c.vector_width, 0);
  EXPECT_EQ(c.max_blocks, 0);
  culayersBatchNormApplyArgsInit(nullptr); // does nothing

  culayersBatchNormMergeMomentsArgs_t cm;
  std::memset(&cm, 0x5a, sizeof(cm));
  culayersBatchNormMergeMomentsArgsInit(&cm);
  EXPECT_EQ(cm.rows, 0);
  EXPECT_EQ(cm.channels, 0);
  EXPECT_EQ(cm.count_per_row, 0);
  EXPECT_EQ(cm.mean, nullptr);
  EXPECT_EQ(cm.mean_out, nullptr);
  EXPECT_EQ(cm.count_out, nullptr);
  EXPECT_EQ(cm.max_blocks, 0);
  culayersBatchNormMergeMomentsArgsInit(nullptr);

  culayersBatchNormMovingUpdateArgs_t cu;
  std::memset(&cu, 0x5a, sizeof(cu));
  culayersBatchNormMovingUpdateArgsInit(&cu);
  const cb::BatchNormMovingUpdateArgs cpp_update;
  EXPECT_EQ(cu.momentum, cpp_update.momentum); // 0.99, not the 0 of a zeroed struct
  EXPECT_EQ(cu.channels, 0);
  EXPECT_EQ(cu.count, nullptr);
  EXPECT_EQ(cu.moving_variance, nullptr);
  culayersBatchNormMovingUpdateArgsInit(nullptr);
}

TEST(BatchNormCapi, SameBitsAsCpp) {
  auto rng = rng_for_test();
  const std::int64_t rows = 3;
  const std::int64_t channels = 5;
  const std::int64_t inner = 37;
  const auto n = static_cast<std::size_t>(rows * channels * inner);
  const auto nc = static_cast<std::size_t>(channels);
  std::vector<__nv_bfloat16> x(n);
  for (auto& v : x) {
    v = __float2bfloat16(uniform_floats(rng, 1, -3.0f, 3.0f)[0]);
  }
  const std::vector<float> plane_mean = uniform_floats(rng, static_cast<std::size_t>(rows) * nc, -1.0f, 1.0f);
  const std::vector<float> plane_var = uniform_floats(rng, static_cast<std::size_t>(rows) * nc, 0.1f, 2.0f);
  const std::vector<float> gamma = uniform_floats(rng, nc, 0.5f, 1.5f);
  const std::vector<float> beta = uniform_floats(rng, nc, -0.5f, 0.5f);
  DeviceBuffer<__nv_bfloat16> d_x(x);
  DeviceBuffer<float> d_pm(plane_mean);
  DeviceBuffer<float> d_pv(plane_var);
  DeviceBuffer<float> d_gamma(gamma);
  DeviceBuffer<float> d_beta(beta);
  // Two of everything: one set written through C, one through C++.
  DeviceBuffer<float> stats[2] = {DeviceBuffer<float>(2 * nc), DeviceBuffer<float>(2 * nc)};
  DeviceBuffer<std::int32_t> count[2] = {DeviceBuffer<std::int32_t>(1), DeviceBuffer<std::int32_t>(1)};
  DeviceBuffer<__nv_bfloat16> y[2] = {DeviceBuffer<__nv_bfloat16>(n), DeviceBuffer<__nv_bfloat16>(n)};
  const std::vector<float> moving0 = uniform_floats(rng, 2 * nc, 0.5f, 1.0f);
  DeviceBuffer<float> moving[2] = {DeviceBuffer<float>(moving0), DeviceBuffer<float>(moving0)};

  culayersBatchNormMergeMomentsArgs_t cm;
  culayersBatchNormMergeMomentsArgsInit(&cm);
  cm.rows = rows;
  cm.channels = channels;
  cm.count_per_row = inner;
  cm.mean = d_pm.get();
  cm.variance = d_pv.get();
  cm.mean_out = stats[0].get();
  cm.variance_out = stats[0].get() + nc;
  cm.count_out = count[0].get();
  cm.max_blocks = 1;
  size_t bytes = 123;
  ASSERT_EQ(culayersBatchNormMergeMomentsWorkspaceSize(&cm, &bytes), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(bytes, 0u);
  ASSERT_EQ(culayersBatchNormMergeMomentsCanImplement(&cm), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(culayersBatchNormMergeMoments(&cm, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  cb::BatchNormMergeMomentsArgs m;
  m.rows = rows;
  m.channels = channels;
  m.count_per_row = inner;
  m.mean = d_pm.get();
  m.variance = d_pv.get();
  m.mean_out = stats[1].get();
  m.variance_out = stats[1].get() + nc;
  m.count_out = count[1].get();
  m.max_blocks = 1;
  ASSERT_EQ(cb::run(m, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();

  culayersBatchNormApplyArgs_t ca;
  culayersBatchNormApplyArgsInit(&ca);
  ca.dtype = CULAYERS_DTYPE_BFLOAT16;
  ca.x = d_x.get();
  ca.rows = rows;
  ca.channels = channels;
  ca.inner = inner;
  ca.mean = stats[0].get();
  ca.variance = stats[0].get() + nc;
  ca.gamma = d_gamma.get();
  ca.beta = d_beta.get();
  ca.y = y[0].get();
  ca.epsilon = 1e-2f; // non-default tuning and epsilon: the shim must pass them on
  ca.vector_width = 2;
  ca.max_blocks = 1;
  ASSERT_EQ(culayersBatchNormApplyWorkspaceSize(&ca, &bytes), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(bytes, 0u);
  ASSERT_EQ(culayersBatchNormApplyCanImplement(&ca), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(culayersBatchNormApply(&ca, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  cb::BatchNormApplyArgs a;
  a.dtype = culayers::DType::kBFloat16;
  a.x = d_x.get();
  a.rows = rows;
  a.channels = channels;
  a.inner = inner;
  a.mean = stats[1].get();
  a.variance = stats[1].get() + nc;
  a.gamma = d_gamma.get();
  a.beta = d_beta.get();
  a.y = y[1].get();
  a.epsilon = 1e-2f;
  a.vector_width = 2;
  a.max_blocks = 1;
  ASSERT_EQ(cb::run(a, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();

  culayersBatchNormMovingUpdateArgs_t cu;
  culayersBatchNormMovingUpdateArgsInit(&cu);
  cu.channels = channels;
  cu.momentum = 0.9f;
  cu.mean = stats[0].get();
  cu.variance = stats[0].get() + nc;
  cu.count = count[0].get();
  cu.moving_mean = moving[0].get();
  cu.moving_variance = moving[0].get() + nc;
  ASSERT_EQ(culayersBatchNormMovingUpdateWorkspaceSize(&cu, &bytes), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(bytes, 0u);
  ASSERT_EQ(culayersBatchNormMovingUpdateCanImplement(&cu), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(culayersBatchNormMovingUpdate(&cu, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  cb::BatchNormMovingUpdateArgs u;
  u.channels = channels;
  u.momentum = 0.9f;
  u.mean = stats[1].get();
  u.variance = stats[1].get() + nc;
  u.count = count[1].get();
  u.moving_mean = moving[1].get();
  u.moving_variance = moving[1].get() + nc;
  ASSERT_EQ(cb::run(u, nullptr, 0, nullptr), Status::kSuccess) << culayers::last_error_message();

  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_TRUE(same_bytes(stats[0].download(), stats[1].download()));
  EXPECT_EQ(count[0].download()[0], rows * inner);
  EXPECT_EQ(count[1].download()[0], rows * inner);
  EXPECT_TRUE(same_bytes(y[0].download(), y[1].download()));
  EXPECT_TRUE(same_bytes(moving[0].download(), moving[1].download()));
  EXPECT_FALSE(same_bytes(moving[0].download(), moving0)) << "the update changed nothing";
}

TEST(BatchNormCapi, BadArgumentsReturnStatusesAndWriteNothing) {
  const char* names[] = {"batch_norm_apply: args", "batch_norm_merge_moments: args",
                         "batch_norm_moving_update: args"};
  const culayersStatus_t null_status[] = {culayersBatchNormApplyCanImplement(nullptr),
                                          culayersBatchNormMergeMomentsCanImplement(nullptr),
                                          culayersBatchNormMovingUpdateCanImplement(nullptr)};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(null_status[i], CULAYERS_STATUS_NULL_POINTER) << names[i];
  }
  EXPECT_EQ(culayersBatchNormApply(nullptr, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find(names[0]), std::string::npos);
  EXPECT_EQ(culayersBatchNormMergeMoments(nullptr, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find(names[1]), std::string::npos);
  EXPECT_EQ(culayersBatchNormMovingUpdate(nullptr, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find(names[2]), std::string::npos);
  size_t bytes = 0;
  EXPECT_EQ(culayersBatchNormApplyWorkspaceSize(nullptr, &bytes), CULAYERS_STATUS_NULL_POINTER);
  culayersBatchNormApplyArgs_t ca;
  culayersBatchNormApplyArgsInit(&ca);
  EXPECT_EQ(culayersBatchNormApplyWorkspaceSize(&ca, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("batch_norm_apply: bytes"), std::string::npos);

  // An out-of-range dtype (any int is legal in a C enum) is rejected by name; y is untouched.
  DeviceBuffer<float> x(std::vector<float>(8, 1.0f));
  DeviceBuffer<float> y(std::vector<float>(8, 7.0f));
  DeviceBuffer<float> stats(std::vector<float>{0, 0, 1, 1});
  ca.x = x.get();
  ca.y = y.get();
  ca.rows = 4;
  ca.channels = 2;
  ca.mean = stats.get();
  ca.variance = stats.get() + 2;
  const int bad = 1000;
  std::memcpy(&ca.dtype, &bad, sizeof(bad));
  EXPECT_EQ(culayersBatchNormApply(&ca, nullptr, 0, nullptr), CULAYERS_STATUS_INVALID_DTYPE);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("batch_norm_apply: dtype"), std::string::npos);
  ca.dtype = CULAYERS_DTYPE_FLOAT32;
  ca.inner = -1;
  EXPECT_EQ(culayersBatchNormApply(&ca, nullptr, 0, nullptr), CULAYERS_STATUS_INVALID_SHAPE);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(y.download(), std::vector<float>(8, 7.0f));
}

} // namespace
