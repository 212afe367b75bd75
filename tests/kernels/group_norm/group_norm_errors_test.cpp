// Group normalization argument errors (culayers/group_norm.hpp): every invalid argument of the forward and
// the backward gives a non-success status from can_implement() and run(), a "group_norm..." message, no
// workspace and the automatic path, and writes nothing (outputs prefilled with a byte pattern stay
// unchanged); the split path's workspace is checked; path names.
#include "culayers/group_norm.hpp"

#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace {

namespace gnk = culayers::group_norm;
using culayers::DType;
using culayers::Layout;
using culayers::Status;
using culayers::test::DeviceBuffer;
using gnk::Activation;
using gnk::Path;

constexpr unsigned char kPoison = 0xa5;

bool untouched(const void* dev, std::size_t bytes) {
  std::vector<unsigned char> host(bytes);
  EXPECT_EQ(cudaMemcpy(host.data(), dev, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  for (unsigned char b : host) {
    if (b != kPoison) {
      return false;
    }
  }
  return true;
}

bool message_names_op() {
  return std::string(culayers::last_error_message()).rfind("group_norm", 0) == 0;
}

// Buffers big enough for the valid baseline [N=2, C=8, S=6], G=4, and then some.
struct Buffers {
  DeviceBuffer<float> x{256};
  DeviceBuffer<float> dy{256};
  DeviceBuffer<float> y{256};
  DeviceBuffer<float> dx{256};
  DeviceBuffer<float> gamma{16};
  DeviceBuffer<float> beta{16};
  DeviceBuffer<float> mean{16};
  DeviceBuffer<float> rstd{16};
  DeviceBuffer<float> dgamma{16};
  DeviceBuffer<float> dbeta{16};
  DeviceBuffer<std::uint8_t> mask{64};
  void poison() {
    for (DeviceBuffer<float>* b : {&y, &dx, &mean, &rstd, &dgamma, &dbeta}) {
      b->fill_bytes(kPoison);
    }
  }
  bool outputs_untouched() {
    bool ok = true;
    for (DeviceBuffer<float>* b : {&y, &dx, &mean, &rstd, &dgamma, &dbeta}) {
      ok = untouched(b->get(), b->bytes()) && ok;
    }
    return ok;
  }
};

gnk::GroupNormArgs valid_forward(Buffers& b) {
  gnk::GroupNormArgs a;
  a.layout = Layout::kChannelsLast;
  a.x = b.x.get();
  a.batch = 2;
  a.channels = 8;
  a.spatial = 6;
  a.groups = 4;
  a.gamma = b.gamma.get();
  a.beta = b.beta.get();
  a.activation = Activation::kSiLU;
  a.mask = b.mask.get();
  a.y = b.y.get();
  a.mean = b.mean.get();
  a.rstd = b.rstd.get();
  return a;
}

gnk::GroupNormBackwardArgs valid_backward(Buffers& b) {
  gnk::GroupNormBackwardArgs a;
  a.layout = Layout::kChannelsLast;
  a.x = b.x.get();
  a.dy = b.dy.get();
  a.batch = 2;
  a.channels = 8;
  a.spatial = 6;
  a.groups = 4;
  a.mean = b.mean.get();
  a.rstd = b.rstd.get();
  a.gamma = b.gamma.get();
  a.beta = b.beta.get();
  a.activation = Activation::kSiLU;
  a.mask = b.mask.get();
  a.dx = b.dx.get();
  a.dgamma = b.dgamma.get();
  a.dbeta = b.dbeta.get();
  return a;
}

/// Invalid settings common to both directions (applied through a setter on the shared fields).
template <class Args>
struct Case {
  const char* what;
  std::function<void(Args&)> mutate;
};

template <class Args>
std::vector<Case<Args>> common_cases() {
  return {
      {"C not divisible by G", [](Args& a) { a.groups = 3; }},
      {"G > C", [](Args& a) { a.groups = 16; }},
      {"G = 0", [](Args& a) { a.groups = 0; }},
      {"G negative", [](Args& a) { a.groups = -4; }},
      {"C negative", [](Args& a) { a.channels = -8; }},
      {"N negative", [](Args& a) { a.batch = -1; }},
      {"spatial negative", [](Args& a) { a.spatial = -6; }},
      {"C = 0 (G > C)", [](Args& a) { a.channels = 0; }},
      {"C/G x spatial >= 2^31",
       [](Args& a) {
         a.channels = 8;
         a.groups = 1;
         a.spatial = std::int64_t{1} << 28;
       }},
      {"x null", [](Args& a) { a.x = nullptr; }},
      {"dtype int32", [](Args& a) { a.dtype = DType::kInt32; }},
      {"dtype uint8", [](Args& a) { a.dtype = DType::kUInt8; }},
      {"dtype not an enumerator", [](Args& a) { a.dtype = static_cast<DType>(77); }},
      {"layout not an enumerator", [](Args& a) { a.layout = static_cast<Layout>(5); }},
      {"mask with channels first", [](Args& a) { a.layout = Layout::kChannelsFirst; }},
      {"activation not an enumerator", [](Args& a) { a.activation = static_cast<Activation>(9); }},
      {"tuning path not an enumerator", [](Args& a) { a.tuning.path = static_cast<Path>(7); }},
      {"tuning vector_width 3", [](Args& a) { a.tuning.vector_width = 3; }},
      {"tuning vector_width 16", [](Args& a) { a.tuning.vector_width = 16; }},
      {"tuning vector_width -1", [](Args& a) { a.tuning.vector_width = -1; }},
      {"tuning splits 1025", [](Args& a) { a.tuning.splits = 1025; }},
      {"tuning splits -1", [](Args& a) { a.tuning.splits = -1; }},
  };
}

// Every invalid forward argument: an error status (the same from can_implement and run), a message
// "group_norm...", workspace_size 0, selected_path kAuto, and y / mean / rstd unchanged after a sync.
TEST(GroupNormErrors, ForwardRejectsAndWritesNothing) {
  Buffers b;
  std::vector<Case<gnk::GroupNormArgs>> cases = common_cases<gnk::GroupNormArgs>();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  cases.push_back({"y null", [](gnk::GroupNormArgs& a) { a.y = nullptr; }});
  cases.push_back({"epsilon 0", [](gnk::GroupNormArgs& a) { a.epsilon = 0.0f; }});
  cases.push_back({"epsilon negative", [](gnk::GroupNormArgs& a) { a.epsilon = -1e-3f; }});
  cases.push_back({"epsilon NaN", [nan](gnk::GroupNormArgs& a) { a.epsilon = nan; }});
  cases.push_back({"epsilon +Inf", [inf](gnk::GroupNormArgs& a) { a.epsilon = inf; }});
  // The baseline itself is valid (so each case fails for its own reason).
  {
    b.poison();
    const gnk::GroupNormArgs a = valid_forward(b);
    ASSERT_EQ(gnk::can_implement(a), Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(gnk::run(a, nullptr, gnk::workspace_size(a), nullptr), Status::kSuccess)
        << culayers::last_error_message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  DeviceBuffer<unsigned char> ws(1 << 20);
  for (const auto& e : cases) {
    b.poison();
    gnk::GroupNormArgs a = valid_forward(b);
    e.mutate(a);
    const Status st = gnk::can_implement(a);
    EXPECT_NE(st, Status::kSuccess) << e.what;
    EXPECT_TRUE(message_names_op()) << e.what << ": " << culayers::last_error_message();
    EXPECT_EQ(gnk::workspace_size(a), 0u) << e.what;
    EXPECT_EQ(gnk::selected_path(a), Path::kAuto) << e.what;
    EXPECT_EQ(gnk::run(a, ws.get(), ws.size(), nullptr), st) << e.what;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << e.what;
    EXPECT_TRUE(b.outputs_untouched()) << e.what << ": an output was written";
  }
}

// The same for the backward, plus its own required pointers (dy, mean, rstd, dx).
TEST(GroupNormErrors, BackwardRejectsAndWritesNothing) {
  Buffers b;
  std::vector<Case<gnk::GroupNormBackwardArgs>> cases = common_cases<gnk::GroupNormBackwardArgs>();
  cases.push_back({"dy null", [](gnk::GroupNormBackwardArgs& a) { a.dy = nullptr; }});
  cases.push_back({"mean null", [](gnk::GroupNormBackwardArgs& a) { a.mean = nullptr; }});
  cases.push_back({"rstd null", [](gnk::GroupNormBackwardArgs& a) { a.rstd = nullptr; }});
  cases.push_back({"dx null", [](gnk::GroupNormBackwardArgs& a) { a.dx = nullptr; }});
  {
    b.poison();
    const gnk::GroupNormBackwardArgs a = valid_backward(b);
    ASSERT_EQ(gnk::can_implement(a), Status::kSuccess) << culayers::last_error_message();
  }
  DeviceBuffer<unsigned char> ws(1 << 20);
  for (const auto& e : cases) {
    b.poison();
    gnk::GroupNormBackwardArgs a = valid_backward(b);
    e.mutate(a);
    const Status st = gnk::can_implement(a);
    EXPECT_NE(st, Status::kSuccess) << e.what;
    EXPECT_TRUE(message_names_op()) << e.what << ": " << culayers::last_error_message();
    EXPECT_EQ(gnk::selected_path(a), Path::kAuto) << e.what;
    EXPECT_EQ(gnk::run(a, ws.get(), ws.size(), nullptr), st) << e.what;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << e.what;
    EXPECT_TRUE(b.outputs_untouched()) << e.what << ": an output was written";
  }
}

// The split path needs its workspace: missing or one byte short is an error before anything runs (y,
// mean, rstd / dx, dgamma, dbeta unchanged); the exact size works.
TEST(GroupNormErrors, SplitWorkspaceMissingOrTooSmall) {
  Buffers b;
  gnk::GroupNormArgs f = valid_forward(b);
  f.tuning.splits = 3;
  const std::size_t need = gnk::workspace_size(f);
  ASSERT_GT(need, 0u);
  ASSERT_EQ(gnk::selected_path(f), Path::kSplit);
  DeviceBuffer<unsigned char> ws(need);
  b.poison();
  EXPECT_NE(gnk::run(f, nullptr, need, nullptr), Status::kSuccess);
  EXPECT_NE(gnk::run(f, ws.get(), need - 1, nullptr), Status::kSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(b.outputs_untouched()) << "forward: an output was written";
  EXPECT_EQ(gnk::run(f, ws.get(), need, nullptr), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  gnk::GroupNormBackwardArgs g = valid_backward(b);
  g.tuning.splits = 3;
  const std::size_t need_b = gnk::workspace_size(g);
  ASSERT_GT(need_b, 0u);
  DeviceBuffer<unsigned char> ws_b(need_b);
  b.poison();
  EXPECT_NE(gnk::run(g, nullptr, need_b, nullptr), Status::kSuccess);
  EXPECT_NE(gnk::run(g, ws_b.get(), need_b - 1, nullptr), Status::kSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(b.outputs_untouched()) << "backward: an output was written";
}

TEST(GroupNormErrors, PathNames) {
  EXPECT_STREQ(gnk::path_name(Path::kAuto), "auto");
  EXPECT_STREQ(gnk::path_name(Path::kWarp), "warp");
  EXPECT_STREQ(gnk::path_name(Path::kBlock), "block");
  EXPECT_STREQ(gnk::path_name(Path::kSplit), "split");
  EXPECT_STREQ(gnk::path_name(static_cast<Path>(42)), "unknown path");
}

} // namespace
