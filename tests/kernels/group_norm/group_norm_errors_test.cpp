// Group normalization argument errors (culayers/group_norm.hpp): every invalid argument of the forward and
// the backward gives its error status from can_implement() and run(), a "group_norm..." message naming the
// argument, no workspace and the automatic path, and writes nothing (outputs prefilled with a byte pattern
// stay unchanged); the split path's workspace is checked; path names.
#include "culayers/group_norm.hpp"

#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
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
  Status want; ///< the status can_implement and run return
  std::function<void(Args&)> mutate;
  const char* message = nullptr; ///< the error message must contain it (names the argument)
};

/// The last error message starts with the op's name and contains the case's expected text.
template <class Args>
void expect_message(const Case<Args>& e) {
  EXPECT_TRUE(message_names_op()) << e.what << ": " << culayers::last_error_message();
  culayers::test::expect_message_contains(e.message, e.what);
}

/// `p` moved by `bytes` (a misaligned view of the same buffer).
template <class T>
T* shifted(T* p, std::ptrdiff_t bytes) {
  using Byte = std::conditional_t<std::is_const_v<T>, const char, char>;
  return reinterpret_cast<T*>(reinterpret_cast<Byte*>(p) + bytes);
}

template <class Args>
std::vector<Case<Args>> common_cases() {
  return {
      {"C not divisible by G", Status::kErrorInvalidShape, [](Args& a) { a.groups = 3; }, "groups: "},
      {"G > C", Status::kErrorInvalidShape, [](Args& a) { a.groups = 16; }, "groups: "},
      {"G = 0", Status::kErrorInvalidShape, [](Args& a) { a.groups = 0; }, "groups: "},
      {"G negative", Status::kErrorInvalidShape, [](Args& a) { a.groups = -4; }, "groups: "},
      {"C negative", Status::kErrorInvalidShape, [](Args& a) { a.channels = -8; }, "shape: "},
      {"N negative", Status::kErrorInvalidShape, [](Args& a) { a.batch = -1; }, "shape: "},
      {"spatial negative", Status::kErrorInvalidShape, [](Args& a) { a.spatial = -6; }, "shape: "},
      {"C = 0 (G > C)", Status::kErrorInvalidShape, [](Args& a) { a.channels = 0; }, "groups: "},
      {"C/G x spatial >= 2^31", Status::kErrorSizeLimit,
       [](Args& a) {
         a.channels = 8;
         a.groups = 1;
         a.spatial = std::int64_t{1} << 28;
       },
       "shape: a group of 8 channels x 268435456 positions exceeds 2^31 - 1 elements"},
      // Empty tensors keep the limits: their groups' rows are still walked (mean 0 / rstd written).
      {"spatial 0, C/G >= 2^31", Status::kErrorSizeLimit,
       [](Args& a) {
         a.channels = std::int64_t{1} << 32;
         a.groups = 1;
         a.spatial = 0;
       },
       "exceeds 2^31 - 1 elements"},
      {"N 0, G >= 2^31", Status::kErrorSizeLimit,
       [](Args& a) {
         a.channels = std::int64_t{1} << 31;
         a.groups = std::int64_t{1} << 31;
         a.batch = 0;
       },
       "batch x groups"},
      {"x null", Status::kErrorNullPointer, [](Args& a) { a.x = nullptr; }, "x: "},
      {"dtype int32", Status::kErrorInvalidDType, [](Args& a) { a.dtype = DType::kInt32; }, "dtype: "},
      {"dtype uint8", Status::kErrorInvalidDType, [](Args& a) { a.dtype = DType::kUInt8; }, "dtype: "},
      {"dtype not an enumerator", Status::kErrorInvalidDType,
       [](Args& a) { a.dtype = static_cast<DType>(77); }, "dtype: "},
      {"layout not an enumerator", Status::kErrorInvalidLayout,
       [](Args& a) { a.layout = static_cast<Layout>(5); }, "layout: "},
      {"mask with channels first", Status::kErrorInvalidLayout,
       [](Args& a) { a.layout = Layout::kChannelsFirst; }, "mask: "},
      {"activation not an enumerator", Status::kErrorInvalidValue,
       [](Args& a) { a.activation = static_cast<Activation>(9); }, "activation: "},
      {"tuning path not an enumerator", Status::kErrorInvalidValue,
       [](Args& a) { a.tuning.path = static_cast<Path>(7); }, "tuning.path: "},
      {"tuning vector_width 3", Status::kErrorInvalidValue, [](Args& a) { a.tuning.vector_width = 3; },
       "tuning.vector_width: "},
      {"tuning vector_width 16", Status::kErrorInvalidValue, [](Args& a) { a.tuning.vector_width = 16; },
       "tuning.vector_width: "},
      {"tuning vector_width -1", Status::kErrorInvalidValue, [](Args& a) { a.tuning.vector_width = -1; },
       "tuning.vector_width: "},
      {"tuning splits 1025", Status::kErrorInvalidValue, [](Args& a) { a.tuning.splits = 1025; },
       "tuning.splits: "},
      {"tuning splits -1", Status::kErrorInvalidValue, [](Args& a) { a.tuning.splits = -1; },
       "tuning.splits: "},
      {"tuning tile_rows -1", Status::kErrorInvalidValue, [](Args& a) { a.tuning.tile_rows = -1; },
       "tuning.tile_rows: "},
      {"tuning tile_min_bytes -1", Status::kErrorInvalidValue, [](Args& a) { a.tuning.tile_min_bytes = -1; },
       "tuning.tile_min_bytes: "},
      {"tuning split_min_bytes -1", Status::kErrorInvalidValue,
       [](Args& a) { a.tuning.split_min_bytes = -1; }, "tuning.split_min_bytes: "},
      {"tuning max_blocks -1", Status::kErrorInvalidValue, [](Args& a) { a.tuning.max_blocks = -1; },
       "tuning.max_blocks: "},
      {"tuning min_split_elements above 2^31 - 1", Status::kErrorInvalidValue,
       [](Args& a) { a.tuning.min_split_elements = std::numeric_limits<std::int64_t>::max(); },
       "tuning.min_split_elements"},
      {"tuning wave_balance 2", Status::kErrorInvalidValue, [](Args& a) { a.tuning.wave_balance = 2; },
       "tuning.wave_balance: "},
      {"tuning wave_balance -1", Status::kErrorInvalidValue, [](Args& a) { a.tuning.wave_balance = -1; },
       "tuning.wave_balance: "},
      // Forward: gamma and beta in, mean and rstd out; backward: all four in.
      {"gamma misaligned", Status::kErrorMisaligned, [](Args& a) { a.gamma = shifted(a.gamma, 2); },
       "gamma: not aligned"},
      {"beta misaligned", Status::kErrorMisaligned, [](Args& a) { a.beta = shifted(a.beta, 1); },
       "beta: not aligned"},
      {"mean misaligned", Status::kErrorMisaligned, [](Args& a) { a.mean = shifted(a.mean, 2); },
       "mean: not aligned"},
      {"rstd misaligned", Status::kErrorMisaligned, [](Args& a) { a.rstd = shifted(a.rstd, 1); },
       "rstd: not aligned"},
      {"tile path with channels first", Status::kErrorInvalidValue,
       [](Args& a) {
         a.layout = Layout::kChannelsFirst;
         a.mask = nullptr;
         a.tuning.path = Path::kTile;
       },
       "tuning.path: "},
  };
}

// Every invalid forward argument: its error status (the same from can_implement and run), a message
// "group_norm..." naming the argument, workspace_size 0, selected_path kAuto, and y / mean / rstd unchanged
// after a sync.
TEST(GroupNormErrors, ForwardRejectsAndWritesNothing) {
  Buffers b;
  std::vector<Case<gnk::GroupNormArgs>> cases = common_cases<gnk::GroupNormArgs>();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  cases.push_back({"y null", Status::kErrorNullPointer, [](gnk::GroupNormArgs& a) { a.y = nullptr; }, "y: "});
  cases.push_back({"epsilon 0", Status::kErrorInvalidValue, [](gnk::GroupNormArgs& a) { a.epsilon = 0.0f; },
                   "epsilon: "});
  cases.push_back({"epsilon negative", Status::kErrorInvalidValue,
                   [](gnk::GroupNormArgs& a) { a.epsilon = -1e-3f; }, "epsilon: "});
  cases.push_back({"epsilon NaN", Status::kErrorInvalidValue,
                   [nan](gnk::GroupNormArgs& a) { a.epsilon = nan; }, "epsilon: "});
  cases.push_back({"epsilon +Inf", Status::kErrorInvalidValue,
                   [inf](gnk::GroupNormArgs& a) { a.epsilon = inf; }, "epsilon: "});
  using F = gnk::GroupNormArgs;
  cases.push_back(
      {"y misaligned", Status::kErrorMisaligned, [](F& a) { a.y = shifted(a.y, 2); }, "y: not aligned"});
  cases.push_back({"y overlaps x, not equal", Status::kErrorInconsistentArguments,
                   [&b](F& a) { a.y = b.x.get() + 1; }, "y: overlaps x"});
  cases.push_back({"y overlaps gamma", Status::kErrorInconsistentArguments,
                   [&b](F& a) { a.gamma = b.y.get() + 90; }, "y: overlaps gamma"});
  cases.push_back({"y overlaps the mask", Status::kErrorInconsistentArguments,
                   [&b](F& a) { a.mask = reinterpret_cast<const std::uint8_t*>(b.y.get() + 95); },
                   "y: overlaps mask"});
  cases.push_back({"mean overlaps x", Status::kErrorInconsistentArguments,
                   [&b](F& a) { a.mean = b.x.get() + 10; }, "mean: overlaps x"});
  cases.push_back({"mean overlaps rstd", Status::kErrorInconsistentArguments,
                   [](F& a) { a.rstd = a.mean + 7; }, "mean: overlaps rstd"});
  cases.push_back({"rstd overlaps beta", Status::kErrorInconsistentArguments,
                   [](F& a) { a.rstd = const_cast<float*>(a.beta) + 7; }, "rstd: overlaps beta"});
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
    EXPECT_EQ(st, e.want) << e.what << ": " << culayers::last_error_message();
    expect_message(e);
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
  cases.push_back(
      {"dy null", Status::kErrorNullPointer, [](gnk::GroupNormBackwardArgs& a) { a.dy = nullptr; }, "dy: "});
  cases.push_back({"mean null", Status::kErrorNullPointer,
                   [](gnk::GroupNormBackwardArgs& a) { a.mean = nullptr; }, "mean: "});
  cases.push_back({"rstd null", Status::kErrorNullPointer,
                   [](gnk::GroupNormBackwardArgs& a) { a.rstd = nullptr; }, "rstd: "});
  cases.push_back(
      {"dx null", Status::kErrorNullPointer, [](gnk::GroupNormBackwardArgs& a) { a.dx = nullptr; }, "dx: "});
  using B = gnk::GroupNormBackwardArgs;
  // dgamma / dbeta's kernel runs a block per 32 channels: more than 2^31 - 1 blocks is refused (it wrapped
  // the grid before: most of dgamma unwritten, kSuccess).
  cases.push_back({"dgamma over 2^36 channels", Status::kErrorSizeLimit,
                   [](B& a) {
                     a.channels = std::int64_t{1} << 37;
                     a.groups = std::int64_t{1} << 7;
                     a.spatial = 1;
                     a.batch = 1;
                   },
                   "dgamma: 137438953472 channels exceed"});
  cases.push_back({"dgamma misaligned", Status::kErrorMisaligned,
                   [](B& a) { a.dgamma = shifted(a.dgamma, 2); }, "dgamma: not aligned"});
  cases.push_back({"dbeta misaligned", Status::kErrorMisaligned, [](B& a) { a.dbeta = shifted(a.dbeta, 2); },
                   "dbeta: not aligned"});
  cases.push_back(
      {"dy misaligned", Status::kErrorMisaligned, [](B& a) { a.dy = shifted(a.dy, 2); }, "dy: not aligned"});
  cases.push_back({"dx equals x", Status::kErrorInconsistentArguments,
                   [](B& a) { a.dx = const_cast<void*>(a.x); }, "dx: overlaps x"});
  cases.push_back({"dx overlaps dy", Status::kErrorInconsistentArguments,
                   [&b](B& a) { a.dx = b.dy.get() + 3; }, "dx: overlaps dy"});
  cases.push_back({"dx overlaps mean", Status::kErrorInconsistentArguments,
                   [&b](B& a) { a.mean = b.dx.get() + 50; }, "dx: overlaps mean"});
  cases.push_back({"dx overlaps gamma", Status::kErrorInconsistentArguments,
                   [&b](B& a) { a.gamma = b.dx.get() + 88; }, "dx: overlaps gamma"});
  cases.push_back({"dx overlaps the mask", Status::kErrorInconsistentArguments,
                   [&b](B& a) { a.mask = reinterpret_cast<const std::uint8_t*>(b.dx.get()); },
                   "dx: overlaps mask"});
  cases.push_back({"dgamma overlaps dbeta", Status::kErrorInconsistentArguments,
                   [](B& a) { a.dbeta = a.dgamma + 7; }, "dgamma: overlaps dbeta"});
  cases.push_back({"dgamma overlaps rstd", Status::kErrorInconsistentArguments,
                   [&b](B& a) { a.dgamma = b.rstd.get() + 2; }, "dgamma: overlaps rstd"});
  cases.push_back({"dbeta overlaps beta", Status::kErrorInconsistentArguments,
                   [](B& a) { a.dbeta = const_cast<float*>(a.beta); }, "dbeta: overlaps beta"});
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
    EXPECT_EQ(st, e.want) << e.what << ": " << culayers::last_error_message();
    expect_message(e);
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
  EXPECT_EQ(gnk::run(f, nullptr, need, nullptr), Status::kErrorNullPointer);
  EXPECT_EQ(gnk::run(f, ws.get(), need - 1, nullptr), Status::kErrorWorkspaceTooSmall);
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
  EXPECT_EQ(gnk::run(g, nullptr, need_b, nullptr), Status::kErrorNullPointer);
  EXPECT_EQ(gnk::run(g, ws_b.get(), need_b - 1, nullptr), Status::kErrorWorkspaceTooSmall);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(b.outputs_untouched()) << "backward: an output was written";
}

// The tile path's own refusals, each kErrorInvalidValue from can_implement and run (forward and backward),
// with the automatic path and no workspace reported and nothing written: forced where the view is not
// channels last (channels first with spatial > 1); forced with more than 512 column vectors per row
// (V = C / N, where N = 1 for an odd C/G or a pointer one element past an aligned address); a negative
// tile_rows. The accepted neighbours (V = 512, channels first with spatial 1, the aligned pointer) succeed.
TEST(GroupNormErrors, TilePathRefusals) {
  // [2, 3, C] float32 views over buffers large enough for C = 1026 (and one element of offset).
  DeviceBuffer<float> x(2 * 3 * 1026 + 1);
  DeviceBuffer<float> dy(2 * 3 * 1026 + 1);
  DeviceBuffer<float> stats(2 * 512);
  DeviceBuffer<float> y(2 * 3 * 1026 + 1);
  DeviceBuffer<float> dx(2 * 3 * 1026 + 1);
  DeviceBuffer<float> mean(2 * 512);
  DeviceBuffer<float> rstd(2 * 512);
  DeviceBuffer<float> dgamma(1026);
  struct Case {
    const char* what;
    Layout layout;
    std::int64_t channels, groups, spatial;
    int offset;             // elements: x, y, dy, dx one past an aligned address
    std::int64_t tile_rows; // forced
    bool valid;
  };
  const Case cases[] = {
      {"channels first, spatial 3", Layout::kChannelsFirst, 8, 4, 3, 0, 0, false},
      {"channels first, spatial 1 (channels-last memory)", Layout::kChannelsFirst, 8, 4, 1, 0, 0, true},
      {"C = 1026, G = 2: C/G = 513, N = 1, V = 1026", Layout::kChannelsLast, 1026, 2, 3, 0, 0, false},
      {"C = 513, G = 1: N = 1, V = 513", Layout::kChannelsLast, 513, 1, 3, 0, 0, false},
      {"C = 512, G = 512: N = 1, V = 512", Layout::kChannelsLast, 512, 512, 3, 0, 0, true},
      {"C = 1024, G = 512: N = 2, V = 512", Layout::kChannelsLast, 1024, 512, 3, 0, 2, true},
      {"C = 1024, G = 512 misaligned: N = 1, V = 1024", Layout::kChannelsLast, 1024, 512, 3, 1, 2, false},
      {"tile_rows -1", Layout::kChannelsLast, 8, 4, 3, 0, -1, false},
  };
  DeviceBuffer<unsigned char> ws(1 << 20);
  for (const Case& k : cases) {
    for (DeviceBuffer<float>* b : {&y, &dx, &mean, &rstd, &dgamma}) {
      b->fill_bytes(kPoison);
    }
    gnk::GroupNormArgs f;
    f.layout = k.layout;
    f.x = x.get() + k.offset;
    f.y = y.get() + k.offset;
    f.batch = 2;
    f.channels = k.channels;
    f.spatial = k.spatial;
    f.groups = k.groups;
    f.mean = mean.get();
    f.rstd = rstd.get();
    f.tuning.path = Path::kTile;
    f.tuning.tile_rows = k.tile_rows;
    gnk::GroupNormBackwardArgs g;
    g.layout = k.layout;
    g.x = x.get() + k.offset;
    g.dy = dy.get() + k.offset;
    g.dx = dx.get() + k.offset;
    g.batch = 2;
    g.channels = k.channels;
    g.spatial = k.spatial;
    g.groups = k.groups;
    g.mean = stats.get();
    g.rstd = stats.get();
    g.dgamma = dgamma.get();
    g.tuning = f.tuning;
    if (k.valid) {
      EXPECT_EQ(gnk::can_implement(f), Status::kSuccess) << k.what << ": " << culayers::last_error_message();
      EXPECT_EQ(gnk::selected_path(f), Path::kTile) << k.what;
      EXPECT_GT(gnk::workspace_size(f), 0u) << k.what;
      EXPECT_EQ(gnk::can_implement(g), Status::kSuccess) << k.what << ": " << culayers::last_error_message();
      EXPECT_EQ(gnk::selected_path(g), Path::kTile) << k.what;
      EXPECT_GT(gnk::workspace_size(g), 0u) << k.what;
      continue;
    }
    EXPECT_EQ(gnk::can_implement(f), Status::kErrorInvalidValue) << k.what;
    EXPECT_TRUE(message_names_op()) << k.what << ": " << culayers::last_error_message();
    EXPECT_EQ(gnk::workspace_size(f), 0u) << k.what;
    EXPECT_EQ(gnk::selected_path(f), Path::kAuto) << k.what;
    EXPECT_EQ(gnk::run(f, ws.get(), ws.size(), nullptr), Status::kErrorInvalidValue) << k.what;
    EXPECT_EQ(gnk::can_implement(g), Status::kErrorInvalidValue) << k.what;
    EXPECT_TRUE(message_names_op()) << k.what << ": " << culayers::last_error_message();
    EXPECT_EQ(gnk::workspace_size(g), 0u) << k.what;
    EXPECT_EQ(gnk::selected_path(g), Path::kAuto) << k.what;
    EXPECT_EQ(gnk::run(g, ws.get(), ws.size(), nullptr), Status::kErrorInvalidValue) << k.what;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << k.what;
    for (DeviceBuffer<float>* b : {&y, &dx, &mean, &rstd, &dgamma}) {
      EXPECT_TRUE(untouched(b->get(), b->bytes())) << k.what << ": an output was written";
    }
  }
}

// The tile path needs its workspace in both directions (per-tile partials and merged statistics), the
// backward's even without dgamma / dbeta: missing (kErrorNullPointer) or one byte short
// (kErrorWorkspaceTooSmall) is an error before anything runs (outputs unchanged); the exact size works.
TEST(GroupNormErrors, TileWorkspaceMissingOrTooSmall) {
  Buffers b;
  gnk::GroupNormArgs f = valid_forward(b);
  f.tuning.path = Path::kTile;
  f.tuning.tile_rows = 4;
  const std::size_t need = gnk::workspace_size(f);
  ASSERT_GT(need, 0u);
  ASSERT_EQ(gnk::selected_path(f), Path::kTile);
  DeviceBuffer<unsigned char> ws(need);
  b.poison();
  EXPECT_EQ(gnk::run(f, nullptr, need, nullptr), Status::kErrorNullPointer);
  EXPECT_EQ(gnk::run(f, ws.get(), need - 1, nullptr), Status::kErrorWorkspaceTooSmall);
  EXPECT_TRUE(message_names_op()) << culayers::last_error_message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(b.outputs_untouched()) << "forward: an output was written";
  EXPECT_EQ(gnk::run(f, ws.get(), need, nullptr), Status::kSuccess) << culayers::last_error_message();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_FALSE(untouched(b.y.get(), 2 * 8 * 6 * sizeof(float))) << "forward: y not written";

  for (bool channel_sums : {true, false}) {
    gnk::GroupNormBackwardArgs g = valid_backward(b);
    g.tuning.path = Path::kTile;
    g.tuning.tile_rows = 4;
    if (!channel_sums) {
      g.dgamma = nullptr;
      g.dbeta = nullptr;
    }
    const std::size_t need_b = gnk::workspace_size(g);
    ASSERT_GT(need_b, 0u) << "dgamma / dbeta " << channel_sums;
    ASSERT_EQ(gnk::selected_path(g), Path::kTile);
    DeviceBuffer<unsigned char> ws_b(need_b);
    b.poison();
    EXPECT_EQ(gnk::run(g, nullptr, need_b, nullptr), Status::kErrorNullPointer);
    EXPECT_EQ(gnk::run(g, ws_b.get(), need_b - 1, nullptr), Status::kErrorWorkspaceTooSmall);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_TRUE(b.outputs_untouched())
        << "backward: an output was written (dgamma / dbeta " << channel_sums << ")";
    EXPECT_EQ(gnk::run(g, ws_b.get(), need_b, nullptr), Status::kSuccess) << culayers::last_error_message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_FALSE(untouched(b.dx.get(), 2 * 8 * 6 * sizeof(float))) << "backward: dx not written";
  }
}

TEST(GroupNormErrors, PathNames) {
  EXPECT_STREQ(gnk::path_name(Path::kAuto), "auto");
  EXPECT_STREQ(gnk::path_name(Path::kWarp), "warp");
  EXPECT_STREQ(gnk::path_name(Path::kBlock), "block");
  EXPECT_STREQ(gnk::path_name(Path::kSplit), "split");
  EXPECT_STREQ(gnk::path_name(Path::kTile), "tile");
  EXPECT_STREQ(gnk::path_name(static_cast<Path>(42)), "unknown path");
}

} // namespace
