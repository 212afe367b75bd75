// The group-normalization C API (culayers/c/group_norm.h) on both backends: enum numbers and defaults, the
// same bits and workspace sizes as the C++ API, and statuses for bad arguments (with nothing written).
#include "culayers/c/group_norm.h"

#include "culayers/group_norm.hpp"

#include "tests/support/capi_support.hpp"
#include "tests/support/test_support.hpp"

#include <cuda_fp16.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <random>
#include <string>
#include <vector>

namespace {

namespace gn = culayers::group_norm;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;

template <class T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

bool starts_with_group_norm() {
  return std::string(culayersGetLastErrorMessage()).rfind("group_norm", 0) == 0;
}

TEST(GroupNormCapi, EnumsAndDefaultsMatchCpp) {
  EXPECT_EQ(CULAYERS_ACTIVATION_NONE, static_cast<int>(gn::Activation::kNone));
  EXPECT_EQ(CULAYERS_ACTIVATION_SILU, static_cast<int>(gn::Activation::kSiLU));
  EXPECT_EQ(CULAYERS_ACTIVATION_RELU, static_cast<int>(gn::Activation::kReLU));
  EXPECT_EQ(CULAYERS_GROUP_NORM_PATH_AUTO, static_cast<int>(gn::Path::kAuto));
  EXPECT_EQ(CULAYERS_GROUP_NORM_PATH_WARP, static_cast<int>(gn::Path::kWarp));
  EXPECT_EQ(CULAYERS_GROUP_NORM_PATH_BLOCK, static_cast<int>(gn::Path::kBlock));
  EXPECT_EQ(CULAYERS_GROUP_NORM_PATH_SPLIT, static_cast<int>(gn::Path::kSplit));
  EXPECT_EQ(CULAYERS_GROUP_NORM_PATH_TILE, static_cast<int>(gn::Path::kTile));
  EXPECT_EQ(CULAYERS_GROUP_NORM_PATH_TILE, 4);

  culayersGroupNormArgs_t c;
  std::memset(&c, 0x5a, sizeof(c));
  culayersGroupNormArgsInit(&c);
  const gn::GroupNormArgs cpp;
  EXPECT_EQ(static_cast<int>(c.dtype), static_cast<int>(cpp.dtype));
  EXPECT_EQ(static_cast<int>(c.layout), static_cast<int>(cpp.layout));
  EXPECT_EQ(c.spatial, cpp.spatial);
  EXPECT_EQ(c.batch, 0);
  EXPECT_EQ(c.groups, 0);
  EXPECT_EQ(c.epsilon, cpp.epsilon);
  EXPECT_EQ(static_cast<int>(c.activation), CULAYERS_ACTIVATION_NONE);
  EXPECT_EQ(c.x, nullptr);
  EXPECT_EQ(c.y, nullptr);
  EXPECT_EQ(c.mask, nullptr);
  EXPECT_EQ(c.rstd, nullptr);
  EXPECT_EQ(static_cast<int>(c.tuning.path), CULAYERS_GROUP_NORM_PATH_AUTO);
  EXPECT_EQ(c.tuning.vector_width, 0);
  EXPECT_EQ(c.tuning.splits, 0);
  EXPECT_EQ(c.tuning.tile_rows, cpp.tuning.tile_rows);
  EXPECT_EQ(c.tuning.tile_rows, 0);
  EXPECT_EQ(c.tuning.tile_min_bytes, cpp.tuning.tile_min_bytes);
  EXPECT_EQ(c.tuning.tile_min_bytes, 0);
  EXPECT_EQ(c.tuning.split_min_bytes, cpp.tuning.split_min_bytes);
  EXPECT_EQ(c.tuning.split_min_bytes, 0);
  EXPECT_EQ(c.tuning.wave_balance, cpp.tuning.wave_balance);
  EXPECT_EQ(c.tuning.wave_balance, 0);
  EXPECT_EQ(c.tuning.max_blocks, cpp.tuning.max_blocks);
  EXPECT_EQ(c.tuning.max_blocks, 0);

  culayersGroupNormBackwardArgs_t b;
  std::memset(&b, 0x5a, sizeof(b));
  culayersGroupNormBackwardArgsInit(&b);
  const gn::GroupNormBackwardArgs bcpp;
  EXPECT_EQ(b.spatial, bcpp.spatial);
  EXPECT_EQ(b.dy, nullptr);
  EXPECT_EQ(b.dx, nullptr);
  EXPECT_EQ(b.dbeta, nullptr);
  EXPECT_EQ(b.tuning.target_blocks, 0);
  EXPECT_EQ(b.tuning.tile_rows, 0);
  EXPECT_EQ(b.tuning.tile_min_bytes, 0);
  EXPECT_EQ(b.tuning.split_min_bytes, 0);
  EXPECT_EQ(b.tuning.wave_balance, 0);
  culayersGroupNormArgsInit(nullptr); // ignored
  culayersGroupNormBackwardArgsInit(nullptr);
}

TEST(GroupNormCapi, NullArgs) {
  EXPECT_EQ(culayersGroupNorm(nullptr, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_STREQ(culayersGetLastErrorMessage(), "group_norm: args: is null");
  EXPECT_EQ(culayersGroupNormBackward(nullptr, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_STREQ(culayersGetLastErrorMessage(), "group_norm_backward: args: is null");
  EXPECT_EQ(culayersGroupNormCanImplement(nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersGroupNormBackwardCanImplement(nullptr), CULAYERS_STATUS_NULL_POINTER);
  culayersGroupNormArgs_t fa;
  culayersGroupNormArgsInit(&fa);
  culayers::test::expect_workspace_null_checks(culayersGroupNormWorkspaceSize, &fa);
  culayersGroupNormBackwardArgs_t ba;
  culayersGroupNormBackwardArgsInit(&ba);
  culayers::test::expect_workspace_null_checks(culayersGroupNormBackwardWorkspaceSize, &ba);
  EXPECT_EQ(culayersGroupNormSelectedPath(nullptr), CULAYERS_GROUP_NORM_PATH_AUTO);
  EXPECT_EQ(culayersGroupNormBackwardSelectedPath(nullptr), CULAYERS_GROUP_NORM_PATH_AUTO);
}

// A small channels-last float16 problem with a mask, gamma/beta, SiLU and a forced split (so the workspace
// is used): forward and backward through the C API give the C++ API's bits, paths and workspace sizes.
struct Problem {
  static constexpr std::int64_t kN = 2, kSpatial = 24, kC = 16, kG = 4;
  static constexpr std::size_t kElems = kN * kSpatial * kC;
  DeviceBuffer<__half> x, dy;
  DeviceBuffer<float> gamma, beta;
  DeviceBuffer<std::uint8_t> mask;

  explicit Problem(std::mt19937_64& rng) : x(kElems), dy(kElems), gamma(kC), beta(kC), mask(kN * kSpatial) {
    std::normal_distribution<float> normal(0.5f, 2.0f);
    std::vector<__half> hx(kElems), hdy(kElems);
    for (std::size_t i = 0; i < kElems; ++i) {
      hx[i] = __float2half(normal(rng));
      hdy[i] = __float2half(normal(rng));
    }
    std::vector<float> hg(kC), hb(kC);
    for (std::size_t i = 0; i < static_cast<std::size_t>(kC); ++i) {
      hg[i] = normal(rng);
      hb[i] = normal(rng);
    }
    std::vector<std::uint8_t> hm(kN * kSpatial);
    for (std::size_t i = 0; i < hm.size(); ++i) {
      hm[i] = static_cast<std::uint8_t>(i % 5 != 3); // a few masked positions in every sample
    }
    x.upload(hx);
    dy.upload(hdy);
    gamma.upload(hg);
    beta.upload(hb);
    mask.upload(hm);
  }

  culayersGroupNormArgs_t forward_c() const {
    culayersGroupNormArgs_t c;
    culayersGroupNormArgsInit(&c);
    c.dtype = CULAYERS_DTYPE_FLOAT16;
    c.layout = CULAYERS_LAYOUT_CHANNELS_LAST;
    c.x = x.get();
    c.batch = kN;
    c.channels = kC;
    c.spatial = kSpatial;
    c.groups = kG;
    c.epsilon = 1e-4f;
    c.gamma = gamma.get();
    c.beta = beta.get();
    c.activation = CULAYERS_ACTIVATION_SILU;
    c.mask = mask.get();
    c.tuning.splits = 2;
    return c;
  }
  gn::GroupNormArgs forward_cpp() const {
    gn::GroupNormArgs a;
    a.dtype = culayers::DType::kFloat16;
    a.layout = culayers::Layout::kChannelsLast;
    a.x = x.get();
    a.batch = kN;
    a.channels = kC;
    a.spatial = kSpatial;
    a.groups = kG;
    a.epsilon = 1e-4f;
    a.gamma = gamma.get();
    a.beta = beta.get();
    a.activation = gn::Activation::kSiLU;
    a.mask = mask.get();
    a.tuning.splits = 2;
    return a;
  }
};

/// The backward of forward arguments `f` (C or C++ structs: the same tensor, mask, affine, activation and
/// tuning).
template <class Bwd, class Fwd>
Bwd backward_of(const Fwd& f, const void* dy, float* mean, float* rstd, void* dx, float* dgamma,
                float* dbeta) {
  Bwd b{};
  if constexpr (std::is_same_v<Bwd, culayersGroupNormBackwardArgs_t>) {
    culayersGroupNormBackwardArgsInit(&b);
  }
  b.dtype = f.dtype;
  b.layout = f.layout;
  b.x = f.x;
  b.dy = dy;
  b.batch = f.batch;
  b.channels = f.channels;
  b.spatial = f.spatial;
  b.groups = f.groups;
  b.mean = mean;
  b.rstd = rstd;
  b.gamma = f.gamma;
  b.beta = f.beta;
  b.activation = f.activation;
  b.mask = f.mask;
  b.dx = dx;
  b.dgamma = dgamma;
  b.dbeta = dbeta;
  b.tuning = f.tuning;
  return b;
}
culayersGroupNormBackwardArgs_t backward_c(const culayersGroupNormArgs_t& c, const void* dy, float* mean,
                                           float* rstd, void* dx, float* dgamma, float* dbeta) {
  return backward_of<culayersGroupNormBackwardArgs_t>(c, dy, mean, rstd, dx, dgamma, dbeta);
}
gn::GroupNormBackwardArgs backward_cpp(const gn::GroupNormArgs& a, const void* dy, float* mean, float* rstd,
                                       void* dx, float* dgamma, float* dbeta) {
  return backward_of<gn::GroupNormBackwardArgs>(a, dy, mean, rstd, dx, dgamma, dbeta);
}

/// The backward of forward arguments `c` / `a` (whose mean / rstd are given) through both APIs: `path`
/// selected by both, equal workspace sizes, the same bits of dx, dgamma and dbeta (the C outputs start
/// poisoned, the C++ ones zeroed).
void expect_backward_same_bits(const Problem& p, const culayersGroupNormArgs_t& c, const gn::GroupNormArgs& a,
                               float* mean_c, float* rstd_c, float* mean_cpp, float* rstd_cpp,
                               culayersGroupNormPath_t path) {
  DeviceBuffer<__half> dx_c(Problem::kElems), dx_cpp(Problem::kElems);
  DeviceBuffer<float> dg_c(Problem::kC), dg_cpp(Problem::kC), db_c(Problem::kC), db_cpp(Problem::kC);
  const culayersGroupNormBackwardArgs_t bc =
      backward_c(c, p.dy.get(), mean_c, rstd_c, dx_c.get(), dg_c.get(), db_c.get());
  const gn::GroupNormBackwardArgs ba =
      backward_cpp(a, p.dy.get(), mean_cpp, rstd_cpp, dx_cpp.get(), dg_cpp.get(), db_cpp.get());
  dx_c.fill_bytes(0xff);
  dg_c.fill_bytes(0xff);
  db_c.fill_bytes(0xff);
  dx_cpp.fill_bytes(0);
  dg_cpp.fill_bytes(0);
  db_cpp.fill_bytes(0);
  ASSERT_EQ(culayersGroupNormBackwardCanImplement(&bc), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  EXPECT_EQ(culayersGroupNormBackwardSelectedPath(&bc), path);
  EXPECT_EQ(static_cast<int>(culayersGroupNormBackwardSelectedPath(&bc)),
            static_cast<int>(gn::selected_path(ba)));
  const size_t bws_bytes = culayers::test::c_workspace_bytes(culayersGroupNormBackwardWorkspaceSize, &bc);
  EXPECT_GT(bws_bytes, 0u);
  EXPECT_EQ(bws_bytes, gn::workspace_size(ba));
  DeviceBuffer<unsigned char> bws(bws_bytes);
  ASSERT_EQ(culayersGroupNormBackward(&bc, bws.get(), bws_bytes, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  ASSERT_EQ(gn::run(ba, bws.get(), bws_bytes, nullptr), Status::kSuccess);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_TRUE(same_bytes(dx_c.download(), dx_cpp.download()));
  EXPECT_TRUE(same_bytes(dg_c.download(), dg_cpp.download()));
  EXPECT_TRUE(same_bytes(db_c.download(), db_cpp.download()));
}

TEST(GroupNormCapi, SameBitsAsCpp) {
  auto rng = rng_for_test();
  const Problem p(rng);
  const std::size_t stats = static_cast<std::size_t>(Problem::kN * Problem::kG);
  DeviceBuffer<__half> y_c(Problem::kElems), y_cpp(Problem::kElems);
  DeviceBuffer<float> mean_c(stats), mean_cpp(stats), rstd_c(stats), rstd_cpp(stats);

  culayersGroupNormArgs_t c = p.forward_c();
  c.y = y_c.get();
  c.mean = mean_c.get();
  c.rstd = rstd_c.get();
  gn::GroupNormArgs a = p.forward_cpp();
  a.y = y_cpp.get();
  a.mean = mean_cpp.get();
  a.rstd = rstd_cpp.get();
  // Different initial bytes on the two sides: equal results mean both were written.
  y_c.fill_bytes(0xff);
  mean_c.fill_bytes(0xff);
  rstd_c.fill_bytes(0xff);
  y_cpp.fill_bytes(0);
  mean_cpp.fill_bytes(0);
  rstd_cpp.fill_bytes(0);
  ASSERT_EQ(culayersGroupNormCanImplement(&c), CULAYERS_STATUS_SUCCESS) << culayersGetLastErrorMessage();
  EXPECT_EQ(culayersGroupNormSelectedPath(&c), CULAYERS_GROUP_NORM_PATH_SPLIT);
  EXPECT_EQ(static_cast<int>(culayersGroupNormSelectedPath(&c)), static_cast<int>(gn::selected_path(a)));
  const size_t ws_bytes = culayers::test::c_workspace_bytes(culayersGroupNormWorkspaceSize, &c);
  EXPECT_GT(ws_bytes, 0u);
  EXPECT_EQ(ws_bytes, gn::workspace_size(a));
  DeviceBuffer<unsigned char> ws(ws_bytes);
  ASSERT_EQ(culayersGroupNorm(&c, ws.get(), ws_bytes, nullptr), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(gn::run(a, ws.get(), ws_bytes, nullptr), Status::kSuccess);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_TRUE(same_bytes(y_c.download(), y_cpp.download()));
  EXPECT_TRUE(same_bytes(mean_c.download(), mean_cpp.download()));
  EXPECT_TRUE(same_bytes(rstd_c.download(), rstd_cpp.download()));

  expect_backward_same_bits(p, c, a, mean_c.get(), rstd_c.get(), mean_cpp.get(), rstd_cpp.get(),
                            CULAYERS_GROUP_NORM_PATH_SPLIT);
}

// The tile path through the C API: PATH_TILE and tile_rows reach the C++ API (the workspace, which holds a
// partial per group and tile, follows tile_rows: 24 tiles of 1 row vs 3 of 10), and forward and backward give
// the C++ API's bits with the same tuning. Also a forced tile path where it is illegal (channels first with
// spatial > 1) is INVALID_VALUE, and a negative tile_rows too.
TEST(GroupNormCapi, TilePathSameBitsAsCpp) {
  auto rng = rng_for_test();
  const Problem p(rng);
  const std::size_t stats = static_cast<std::size_t>(Problem::kN * Problem::kG);
  DeviceBuffer<__half> y_c(Problem::kElems), y_cpp(Problem::kElems);
  DeviceBuffer<float> mean_c(stats), mean_cpp(stats), rstd_c(stats), rstd_cpp(stats);

  culayersGroupNormArgs_t c = p.forward_c();
  c.tuning.splits = 0;
  c.tuning.path = CULAYERS_GROUP_NORM_PATH_TILE;
  c.y = y_c.get();
  c.mean = mean_c.get();
  c.rstd = rstd_c.get();
  gn::GroupNormArgs a = p.forward_cpp();
  a.tuning.splits = 0;
  a.tuning.path = gn::Path::kTile;
  a.y = y_cpp.get();
  a.mean = mean_cpp.get();
  a.rstd = rstd_cpp.get();

  // tile_min_bytes reaches the C++ API: with warp-path groups ruled out, 1 byte makes the automatic choice
  // the tile path and INT64_MAX rules it out.
  culayersGroupNormArgs_t s = p.forward_c();
  s.y = y_c.get();
  s.tuning.splits = 0;
  s.tuning.path = CULAYERS_GROUP_NORM_PATH_AUTO;
  s.tuning.warp_max_elements = 1;
  s.tuning.tile_min_bytes = 1;
  EXPECT_EQ(culayersGroupNormSelectedPath(&s), CULAYERS_GROUP_NORM_PATH_TILE)
      << culayers::last_error_message();
  s.tuning.tile_min_bytes = std::numeric_limits<std::int64_t>::max();
  EXPECT_NE(culayersGroupNormSelectedPath(&s), CULAYERS_GROUP_NORM_PATH_TILE);
  EXPECT_NE(culayersGroupNormSelectedPath(&s), CULAYERS_GROUP_NORM_PATH_AUTO);

  c.tuning.tile_rows = 1;
  a.tuning.tile_rows = 1;
  const size_t ws_one_row = culayers::test::c_workspace_bytes(culayersGroupNormWorkspaceSize, &c);
  EXPECT_EQ(ws_one_row, gn::workspace_size(a));
  c.tuning.tile_rows = 10;
  a.tuning.tile_rows = 10;
  ASSERT_EQ(culayersGroupNormCanImplement(&c), CULAYERS_STATUS_SUCCESS) << culayersGetLastErrorMessage();
  EXPECT_EQ(culayersGroupNormSelectedPath(&c), CULAYERS_GROUP_NORM_PATH_TILE);
  EXPECT_EQ(gn::selected_path(a), gn::Path::kTile);
  const size_t ws_bytes = culayers::test::c_workspace_bytes(culayersGroupNormWorkspaceSize, &c);
  EXPECT_GT(ws_bytes, 0u);
  EXPECT_EQ(ws_bytes, gn::workspace_size(a));
  EXPECT_LT(ws_bytes, ws_one_row) << "tile_rows did not reach the C++ API";

  y_c.fill_bytes(0xff);
  mean_c.fill_bytes(0xff);
  rstd_c.fill_bytes(0xff);
  y_cpp.fill_bytes(0);
  mean_cpp.fill_bytes(0);
  rstd_cpp.fill_bytes(0);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  ASSERT_EQ(culayersGroupNorm(&c, ws.get(), ws_bytes, nullptr), CULAYERS_STATUS_SUCCESS)
      << culayersGetLastErrorMessage();
  ASSERT_EQ(gn::run(a, ws.get(), ws_bytes, nullptr), Status::kSuccess);
  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_TRUE(same_bytes(y_c.download(), y_cpp.download()));
  EXPECT_TRUE(same_bytes(mean_c.download(), mean_cpp.download()));
  EXPECT_TRUE(same_bytes(rstd_c.download(), rstd_cpp.download()));
  // And the same answer as the split path (another kernel, another summation order): within float32
  // rounding of the statistics (rstd ~ 1, |mean| ~ 1: 1e-5 is hundreds of float32 ulps, far below any
  // mistake in which rows or groups a tile covers).
  {
    gn::GroupNormArgs s = p.forward_cpp(); // splits = 2
    DeviceBuffer<__half> y_split(Problem::kElems);
    DeviceBuffer<float> mean_split(stats), rstd_split(stats);
    s.y = y_split.get();
    s.mean = mean_split.get();
    s.rstd = rstd_split.get();
    ASSERT_EQ(gn::selected_path(s), gn::Path::kSplit);
    DeviceBuffer<unsigned char> ws_split(gn::workspace_size(s));
    ASSERT_EQ(gn::run(s, ws_split.get(), ws_split.size(), nullptr), Status::kSuccess);
    CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
    const std::vector<float> m_tile = mean_c.download(), m_split = mean_split.download();
    const std::vector<float> r_tile = rstd_c.download(), r_split = rstd_split.download();
    for (std::size_t k = 0; k < stats; ++k) {
      EXPECT_NEAR(m_tile[k], m_split[k], 1e-5 * (1.0 + std::fabs(m_split[k]))) << "mean[" << k << "]";
      EXPECT_NEAR(r_tile[k], r_split[k], 1e-5 * r_split[k]) << "rstd[" << k << "]";
    }
  }

  expect_backward_same_bits(p, c, a, mean_c.get(), rstd_c.get(), mean_cpp.get(), rstd_cpp.get(),
                            CULAYERS_GROUP_NORM_PATH_TILE);

  // Refusals: the tile path forced on a channels-first view with spatial > 1 (no mask there), and a
  // negative tile_rows.
  culayersGroupNormArgs_t bad = c;
  bad.layout = CULAYERS_LAYOUT_CHANNELS_FIRST;
  bad.mask = nullptr;
  EXPECT_EQ(culayersGroupNormCanImplement(&bad), CULAYERS_STATUS_INVALID_VALUE);
  EXPECT_TRUE(starts_with_group_norm()) << culayersGetLastErrorMessage();
  EXPECT_EQ(culayersGroupNormSelectedPath(&bad), CULAYERS_GROUP_NORM_PATH_AUTO);
  bad = c;
  bad.tuning.tile_rows = -1;
  EXPECT_EQ(culayersGroupNormCanImplement(&bad), CULAYERS_STATUS_INVALID_VALUE);
  DeviceBuffer<__half> dx(Problem::kElems);
  culayersGroupNormBackwardArgs_t bad_b =
      backward_c(c, p.dy.get(), mean_c.get(), rstd_c.get(), dx.get(), nullptr, nullptr);
  bad_b.tuning.tile_rows = -1;
  EXPECT_EQ(culayersGroupNormBackwardCanImplement(&bad_b), CULAYERS_STATUS_INVALID_VALUE);
}

// split_min_bytes reaches the C++ API: channels first, one group of 4 x 1000 floats (16 000 bytes) that the
// in-flight rule alone splits (min_split_elements 512); the default small-tensor threshold takes the block
// path, 1 byte turns the rule off.
TEST(GroupNormCapi, SplitMinBytesReachesCpp) {
  DeviceBuffer<float> x(4 * 1000);
  culayersGroupNormArgs_t c;
  culayersGroupNormArgsInit(&c);
  c.dtype = CULAYERS_DTYPE_FLOAT32;
  c.layout = CULAYERS_LAYOUT_CHANNELS_FIRST;
  c.x = x.get();
  c.y = x.get();
  c.batch = 1;
  c.channels = 4;
  c.spatial = 1000;
  c.groups = 1;
  c.tuning.target_blocks = 64;
  c.tuning.min_split_elements = 512;
  EXPECT_EQ(culayersGroupNormSelectedPath(&c), CULAYERS_GROUP_NORM_PATH_BLOCK)
      << culayersGetLastErrorMessage();
  c.tuning.split_min_bytes = 1;
  EXPECT_EQ(culayersGroupNormSelectedPath(&c), CULAYERS_GROUP_NORM_PATH_SPLIT)
      << culayersGetLastErrorMessage();
  c.tuning.split_min_bytes = -1;
  EXPECT_EQ(culayersGroupNormCanImplement(&c), CULAYERS_STATUS_INVALID_VALUE);
}

// max_blocks reaches the C++ API: a negative cap is refused naming it; a cap of 1 runs (the grid-stride
// loops) with the uncapped run's bits.
TEST(GroupNormCapi, MaxBlocksReachesCpp) {
  std::vector<float> host(4 * 1000);
  for (std::size_t i = 0; i < host.size(); ++i) {
    host[i] = static_cast<float>((i * 37) % 101) * 0.25f - 12.0f;
  }
  DeviceBuffer<float> x(host);
  DeviceBuffer<float> y1(host.size());
  DeviceBuffer<float> y2(host.size());
  culayersGroupNormArgs_t c;
  culayersGroupNormArgsInit(&c);
  c.dtype = CULAYERS_DTYPE_FLOAT32;
  c.layout = CULAYERS_LAYOUT_CHANNELS_FIRST;
  c.x = x.get();
  c.batch = 4;
  c.channels = 8;
  c.spatial = 125;
  c.groups = 4;
  c.tuning.path = CULAYERS_GROUP_NORM_PATH_BLOCK;
  c.tuning.max_blocks = -1;
  EXPECT_EQ(culayersGroupNormCanImplement(&c), CULAYERS_STATUS_INVALID_VALUE);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("tuning.max_blocks"), std::string::npos)
      << culayersGetLastErrorMessage();
  for (const int64_t cap : {0, 1}) {
    c.tuning.max_blocks = cap;
    c.y = cap == 0 ? y1.get() : y2.get();
    ASSERT_EQ(culayersGroupNorm(&c, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS)
        << culayersGetLastErrorMessage();
  }
  EXPECT_EQ(y1.download(), y2.download());
}

// wave_balance reaches the C++ API: the workspace is the C++ one with the same tuning, for both values (on
// the emulator's default 4 SMs the split counts differ, 32 and 22 chunks: GroupNormForward's
// WaveBalanceFillsTheLastWaves), and a value other than 0 or 1 is INVALID_VALUE.
TEST(GroupNormCapi, WaveBalanceReachesCpp) {
  if (culayers::test::occupancy_unknown()) {
    GTEST_SKIP() << "the runtime cannot say residency: no wave balancing to reach";
  }
  DeviceBuffer<float> x(3 * 22528);
  culayersGroupNormArgs_t c;
  culayersGroupNormArgsInit(&c);
  c.dtype = CULAYERS_DTYPE_FLOAT32;
  c.layout = CULAYERS_LAYOUT_CHANNELS_FIRST;
  c.x = x.get();
  c.y = x.get();
  c.batch = 1;
  c.channels = 3;
  c.spatial = 22528;
  c.groups = 3;
  c.tuning.path = CULAYERS_GROUP_NORM_PATH_SPLIT;
  c.tuning.min_split_elements = 512;
  gn::GroupNormArgs cpp;
  cpp.x = x.get();
  cpp.y = x.get();
  cpp.batch = 1;
  cpp.channels = 3;
  cpp.spatial = 22528;
  cpp.groups = 3;
  cpp.tuning.path = gn::Path::kSplit;
  cpp.tuning.min_split_elements = 512;
  std::size_t bytes[2] = {};
  for (const int64_t balance : {0, 1}) {
    c.tuning.wave_balance = balance;
    cpp.tuning.wave_balance = balance;
    bytes[balance] = culayers::test::c_workspace_bytes(culayersGroupNormWorkspaceSize, &c);
    EXPECT_EQ(bytes[balance], gn::workspace_size(cpp)) << balance;
  }
  EXPECT_GE(bytes[0], bytes[1]);
#if CULAYERS_TEST_EMULATED
  if (culayers::test::sm_count() == 4) {
    EXPECT_EQ(bytes[0], 3u * 32 * 12 + 256);
    EXPECT_EQ(bytes[1], 3u * 22 * 12 + 256);
  }
#endif
  c.tuning.wave_balance = 2;
  EXPECT_EQ(culayersGroupNormCanImplement(&c), CULAYERS_STATUS_INVALID_VALUE);
}

// Bad arguments: the C status is the C++ one (and the expected one), and the outputs keep their sentinel.
TEST(GroupNormCapi, InvalidArgumentsWriteNothing) {
  auto rng = rng_for_test();
  const Problem p(rng);
  const std::size_t stats = static_cast<std::size_t>(Problem::kN * Problem::kG);
  DeviceBuffer<__half> y(Problem::kElems), dx(Problem::kElems);
  DeviceBuffer<float> mean(stats), rstd(stats), dgamma(Problem::kC);
  for (auto* b : {&mean, &rstd, &dgamma}) {
    b->fill_bytes(0x7b);
  }
  y.fill_bytes(0x7b);
  dx.fill_bytes(0x7b);
  culayersGroupNormArgs_t good = p.forward_c();
  good.y = y.get();
  const size_t ws_bytes = 4096 + culayers::test::c_workspace_bytes(culayersGroupNormWorkspaceSize, &good);
  DeviceBuffer<unsigned char> ws(ws_bytes);

  const auto forward = [&](auto&& edit, culayersStatus_t want) {
    culayersGroupNormArgs_t c = p.forward_c();
    c.y = y.get();
    c.mean = mean.get();
    c.rstd = rstd.get();
    edit(c);
    EXPECT_EQ(culayersGroupNormCanImplement(&c), want);
    EXPECT_TRUE(starts_with_group_norm()) << culayersGetLastErrorMessage();
    EXPECT_EQ(culayersGroupNorm(&c, ws.get(), ws_bytes, nullptr), want);
    EXPECT_EQ(culayers::test::c_workspace_bytes(culayersGroupNormWorkspaceSize, &c), 0u);
  };
  forward([](culayersGroupNormArgs_t& c) { c.x = nullptr; }, CULAYERS_STATUS_NULL_POINTER);
  forward([](culayersGroupNormArgs_t& c) { c.y = nullptr; }, CULAYERS_STATUS_NULL_POINTER);
  forward([](culayersGroupNormArgs_t& c) { c.dtype = CULAYERS_DTYPE_INT32; }, CULAYERS_STATUS_INVALID_DTYPE);
  forward([](culayersGroupNormArgs_t& c) { c.groups = 5; }, CULAYERS_STATUS_INVALID_SHAPE);
  forward([](culayersGroupNormArgs_t& c) { c.epsilon = 0.0f; }, CULAYERS_STATUS_INVALID_VALUE);
  forward([](culayersGroupNormArgs_t& c) { c.activation = static_cast<culayersActivation_t>(3); },
          CULAYERS_STATUS_INVALID_VALUE);

  // Too small a workspace for the split path (the arguments themselves are fine).
  const culayersGroupNormArgs_t& c = good;
  ASSERT_GT(culayers::test::c_workspace_bytes(culayersGroupNormWorkspaceSize, &c), 0u);
  EXPECT_EQ(culayersGroupNorm(&c, ws.get(),
                              culayers::test::c_workspace_bytes(culayersGroupNormWorkspaceSize, &c) - 1,
                              nullptr),
            CULAYERS_STATUS_WORKSPACE_TOO_SMALL);
  EXPECT_TRUE(starts_with_group_norm()) << culayersGetLastErrorMessage();

  culayersGroupNormBackwardArgs_t b;
  culayersGroupNormBackwardArgsInit(&b);
  b.dtype = c.dtype;
  b.layout = c.layout;
  b.x = c.x;
  b.dy = p.dy.get();
  b.batch = c.batch;
  b.channels = c.channels;
  b.spatial = c.spatial;
  b.groups = c.groups;
  b.mean = mean.get();
  b.rstd = nullptr; // required
  b.dx = dx.get();
  b.dgamma = dgamma.get();
  EXPECT_EQ(culayersGroupNormBackwardCanImplement(&b), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_TRUE(starts_with_group_norm()) << culayersGetLastErrorMessage();
  EXPECT_EQ(culayersGroupNormBackward(&b, ws.get(), ws_bytes, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayers::test::c_workspace_bytes(culayersGroupNormBackwardWorkspaceSize, &b), 0u);
  b.rstd = rstd.get();
  b.layout = CULAYERS_LAYOUT_CHANNELS_FIRST; // a mask needs channels last
  b.mask = p.mask.get();
  EXPECT_EQ(culayersGroupNormBackward(&b, ws.get(), ws_bytes, nullptr), CULAYERS_STATUS_INVALID_LAYOUT);
  EXPECT_EQ(culayersGroupNormBackwardCanImplement(&b), CULAYERS_STATUS_INVALID_LAYOUT);

  CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
  for (const auto* buf : {&y, &dx}) {
    for (const __half h : buf->download()) {
      std::uint16_t bits = 0;
      std::memcpy(&bits, &h, sizeof(bits));
      ASSERT_EQ(bits, 0x7b7bu);
    }
  }
  for (const auto* buf : {&mean, &rstd, &dgamma}) {
    for (const float f : buf->download()) {
      std::uint32_t bits = 0;
      std::memcpy(&bits, &f, sizeof(bits));
      ASSERT_EQ(bits, 0x7b7b7b7bu);
    }
  }
}

} // namespace
