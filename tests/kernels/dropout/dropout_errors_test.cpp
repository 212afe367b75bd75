// Argument validation of the dropout ops (C++ and C API): each bad argument gives its status and a
// message naming the op and the argument, and nothing is written (outputs, mask and state keep their
// bytes). Also the C API end to end against the C++ API.
#include "culayers/c/dropout.h"
#include "culayers/dropout.hpp"
#include "tests/kernels/dropout/dropout_test_util.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace {

namespace cd = culayers::dropout;
using culayers::DType;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;
using culayers::test::dropout::DeviceState;
using culayers::test::dropout::fixed_rate;
using culayers::test::dropout::random_input;
using culayers::test::dropout::shape_of;

constexpr int kSentinel = 0x5A;

/// Buffers pre-filled with a sentinel: the forward's x, y, mask and an initialized state.
struct Fixture {
  static constexpr std::int64_t kN = 96;
  DeviceBuffer<float> x{kN + 8};
  DeviceBuffer<float> y{kN + 8};
  DeviceBuffer<std::uint8_t> mask{kN + 8};
  DeviceState state{fixed_rate(7, 0.5)};
  std::vector<std::uint8_t> state_bytes;

  Fixture() {
    x.fill_bytes(0);
    y.fill_bytes(kSentinel);
    mask.fill_bytes(kSentinel);
    const cd::DropoutState s = state.read();
    state_bytes.resize(sizeof(s));
    std::memcpy(state_bytes.data(), &s, sizeof(s));
  }

  cd::DropoutForwardArgs forward() const {
    cd::DropoutForwardArgs a;
    a.x = x.get();
    a.y = y.get();
    a.dtype = DType::kFloat32;
    a.shape = shape_of({4, 24});
    a.state = state.get();
    a.mask = mask.get();
    return a;
  }

  cd::DropoutBackwardArgs backward() const {
    cd::DropoutBackwardArgs a;
    a.dy = x.get();
    a.dx = y.get();
    a.dtype = DType::kFloat32;
    a.shape = shape_of({4, 24});
    a.state = state.get();
    return a;
  }

  /// Everything still holds its initial bytes.
  void expect_untouched(const std::string& what) const {
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (std::uint8_t b : mask.download()) {
      ASSERT_EQ(b, kSentinel) << what << ": mask written";
    }
    const std::vector<float> yh = y.download();
    std::vector<std::uint8_t> bytes(yh.size() * sizeof(float));
    std::memcpy(bytes.data(), yh.data(), bytes.size());
    for (std::uint8_t b : bytes) {
      ASSERT_EQ(b, kSentinel) << what << ": y written";
    }
    const cd::DropoutState s = state.read();
    ASSERT_EQ(std::memcmp(&s, state_bytes.data(), sizeof(s)), 0) << what << ": state written";
  }
};

/// The call fails with `want`, its message names op and argument, and run() writes nothing.
template <class Args>
void expect_rejected(const Fixture& fx, const Args& a, Status want, const char* op, const char* argument,
                     const std::string& what) {
  culayers::detail::clear_error();
  EXPECT_EQ(cd::can_implement(a), want) << what;
  const std::string message = culayers::last_error_message();
  EXPECT_NE(message.find(op), std::string::npos) << what << ": " << message;
  EXPECT_NE(message.find(argument), std::string::npos) << what << ": " << message;
  EXPECT_EQ(cd::run(a, nullptr, 0, nullptr), want) << what;
  fx.expect_untouched(what);
}

TEST(DropoutErrors, ForwardArguments) {
  Fixture fx;
  struct Case {
    const char* what;
    std::function<void(cd::DropoutForwardArgs&)> edit;
    Status status;
    const char* argument;
  };
  const Case cases[] = {
      {"null state", [](auto& a) { a.state = nullptr; }, Status::kErrorNullPointer, "state"},
      {"null x", [](auto& a) { a.x = nullptr; }, Status::kErrorNullPointer, "x"},
      {"null y", [](auto& a) { a.y = nullptr; }, Status::kErrorNullPointer, "y"},
      {"int32 dtype", [](auto& a) { a.dtype = DType::kInt32; }, Status::kErrorInvalidDType, "dtype"},
      {"bad dtype value", [](auto& a) { a.dtype = static_cast<DType>(42); }, Status::kErrorInvalidDType,
       "dtype"},
      {"negative dimension", [](auto& a) { a.shape = culayers::Shape(4, -24); }, Status::kErrorInvalidShape,
       "shape"},
      {"noise rank", [](auto& a) { a.noise_shape = shape_of({4}); }, Status::kErrorInvalidShape,
       "noise_shape"},
      {"noise dim 2 over 24",
       [](auto& a) {
         a.noise_shape = shape_of({4, 2});
       },
       Status::kErrorInvalidShape, "noise_shape"},
      {"noise dim larger",
       [](auto& a) {
         a.noise_shape = shape_of({8, 24});
       },
       Status::kErrorInvalidShape, "noise_shape"},
      {"offset 2", [](auto& a) { a.offset = 2; }, Status::kErrorInvalidValue, "offset"},
      {"max_blocks -1", [](auto& a) { a.max_blocks = -1; }, Status::kErrorInvalidValue, "max_blocks"},
      {"width 3", [](auto& a) { a.force_vector_width = 3; }, Status::kErrorInvalidValue,
       "force_vector_width"},
      {"width 8 float", [](auto& a) { a.force_vector_width = 8; }, Status::kErrorInvalidValue,
       "force_vector_width"},
      {"width 4 misaligned",
       [&](auto& a) {
         a.force_vector_width = 4;
         a.x = fx.x.get() + 1;
       },
       Status::kErrorMisaligned, "force_vector_width"},
      // An element access must be aligned (a misaligned load faults on a GPU): narrower alignment only
      // narrows the vector width, down to one element.
      {"x one byte off", [&](auto& a) { a.x = reinterpret_cast<const char*>(fx.x.get()) + 1; },
       Status::kErrorMisaligned, "x"},
      {"y two bytes off", [&](auto& a) { a.y = reinterpret_cast<char*>(fx.y.get()) + 2; },
       Status::kErrorMisaligned, "y"},
      {"bfloat16 x one byte off",
       [&](auto& a) {
         a.dtype = DType::kBFloat16;
         a.x = reinterpret_cast<const char*>(fx.x.get()) + 1;
       },
       Status::kErrorMisaligned, "x"},
      {"partial overlap", [&](auto& a) { a.y = fx.x.get() + 1; }, Status::kErrorInconsistentArguments, "y"},
      {"mask overlaps y", [&](auto& a) { a.mask = reinterpret_cast<std::uint8_t*>(fx.y.get()); },
       Status::kErrorInconsistentArguments, "mask"},
      {"misaligned state",
       [&](auto& a) {
         a.state = reinterpret_cast<cd::DropoutState*>(reinterpret_cast<char*>(fx.state.get()) + 4);
       },
       Status::kErrorMisaligned, "state"},
  };
  for (const Case& c : cases) {
    cd::DropoutForwardArgs a = fx.forward();
    c.edit(a);
    expect_rejected(fx, a, c.status, "dropout_forward", c.argument, c.what);
  }
  // Sanity: the unedited arguments are accepted.
  EXPECT_EQ(cd::can_implement(fx.forward()), Status::kSuccess) << culayers::last_error_message();
}

// A broadcast noise shape over more than 2^32 elements takes the scalar generic path whatever the
// innermost extent, so a forced width above 1 is refused with that reason (not a noise-shape one). Only
// can_implement: the addresses are distinct and aligned, and never dereferenced.
TEST(DropoutErrors, ForcedWidthOnTheWideGenericPathSaysWhy) {
  Fixture fx;
  cd::DropoutForwardArgs a = fx.forward();
  a.shape = shape_of({std::int64_t{1} << 31, 4}); // 2^33 elements
  a.noise_shape = shape_of({std::int64_t{1} << 31, 1});
  a.x = reinterpret_cast<const float*>(std::uintptr_t{1} << 40);
  a.y = reinterpret_cast<float*>(std::uintptr_t{1} << 40); // in place
  a.mask = nullptr;
  a.force_vector_width = 1;
  EXPECT_EQ(cd::can_implement(a), Status::kSuccess) << culayers::last_error_message();
  a.force_vector_width = 4;
  EXPECT_EQ(cd::can_implement(a), Status::kErrorInvalidValue);
  const std::string message = culayers::last_error_message();
  EXPECT_NE(message.find("force_vector_width: 4"), std::string::npos) << message;
  EXPECT_NE(message.find("more than 2^32 elements"), std::string::npos) << message;
  // Below 2^32 elements the same broadcast takes the run path, which serves width 4.
  a.shape = shape_of({std::int64_t{1} << 20, 4});
  a.noise_shape = shape_of({std::int64_t{1} << 20, 1});
  EXPECT_EQ(cd::can_implement(a), Status::kSuccess) << culayers::last_error_message();
}

TEST(DropoutErrors, BackwardArguments) {
  Fixture fx;
  cd::DropoutBackwardArgs a = fx.backward();
  a.dy = nullptr;
  expect_rejected(fx, a, Status::kErrorNullPointer, "dropout_backward", "dy", "null dy");
  a = fx.backward();
  a.dx = nullptr;
  expect_rejected(fx, a, Status::kErrorNullPointer, "dropout_backward", "dx", "null dx");
  a = fx.backward();
  a.state = nullptr;
  expect_rejected(fx, a, Status::kErrorNullPointer, "dropout_backward", "state", "null state");
  a = fx.backward();
  a.noise_shape = shape_of({3, 24});
  expect_rejected(fx, a, Status::kErrorInvalidShape, "dropout_backward", "noise_shape", "noise 3 over 4");
  a = fx.backward();
  a.dy = reinterpret_cast<const char*>(fx.x.get()) + 1;
  expect_rejected(fx, a, Status::kErrorMisaligned, "dropout_backward", "dy", "dy one byte off");
  a = fx.backward();
  a.dtype = DType::kFloat16;
  a.dx = reinterpret_cast<char*>(fx.y.get()) + 1;
  expect_rejected(fx, a, Status::kErrorMisaligned, "dropout_backward", "dx", "float16 dx one byte off");
  a = fx.backward();
  a.dtype = DType::kUInt8;
  expect_rejected(fx, a, Status::kErrorInvalidDType, "dropout_backward", "dtype", "uint8");
}

TEST(DropoutErrors, InitArguments) {
  Fixture fx;
  const double nan = std::nan("");
  struct Case {
    const char* what;
    std::function<void(cd::DropoutInitArgs&)> edit;
    Status status;
    const char* argument;
  };
  const Case cases[] = {
      {"null state", [](auto& a) { a.state = nullptr; }, Status::kErrorNullPointer, "state"},
      {"keep 0", [](auto& a) { a.initial_keep_rate = 0.0; }, Status::kErrorInvalidValue, "initial_keep_rate"},
      {"keep -0.1", [](auto& a) { a.initial_keep_rate = -0.1; }, Status::kErrorInvalidValue,
       "initial_keep_rate"},
      {"keep 1.5", [](auto& a) { a.initial_keep_rate = 1.5; }, Status::kErrorInvalidValue,
       "initial_keep_rate"},
      {"keep NaN", [&](auto& a) { a.initial_keep_rate = nan; }, Status::kErrorInvalidValue,
       "initial_keep_rate"},
      {"decay NaN", [&](auto& a) { a.decay_rate = nan; }, Status::kErrorInvalidValue, "decay_rate"},
      {"interval 0", [](auto& a) { a.decay_interval = 0; }, Status::kErrorInvalidValue, "decay_interval"},
      {"interval -5", [](auto& a) { a.decay_interval = -5; }, Status::kErrorInvalidValue, "decay_interval"},
      {"iterations -1", [](auto& a) { a.iterations = -1; }, Status::kErrorInvalidValue, "iterations"},
      {"offset 6", [](auto& a) { a.offset = 6; }, Status::kErrorInvalidValue, "offset"},
  };
  for (const Case& c : cases) {
    cd::DropoutInitArgs a = fixed_rate(99, 0.25);
    a.state = fx.state.get();
    c.edit(a);
    expect_rejected(fx, a, c.status, "dropout_init", c.argument, c.what);
  }
  cd::DropoutUpdateArgs u;
  expect_rejected(fx, u, Status::kErrorNullPointer, "dropout_update", "state", "update without state");
}

// ---- C API ---------------------------------------------------------------------------------------------

TEST(DropoutCApi, MatchesTheCppApi) {
  auto rng = rng_for_test();
  const std::int64_t n = 3 * 5 * 8;
  const std::vector<float> x_host = random_input<float>(rng, n);
  DeviceBuffer<float> x(x_host);
  DeviceBuffer<float> y_c(n);
  DeviceBuffer<float> y_cpp(n);
  DeviceBuffer<std::uint8_t> m_c(n);
  DeviceBuffer<std::uint8_t> m_cpp(n);
  DeviceBuffer<float> dx_c(n);
  DeviceBuffer<float> dx_cpp(n);
  DeviceBuffer<culayersDropoutState_t> s_c(1);
  DeviceBuffer<cd::DropoutState> s_cpp(1);
  const std::uint64_t seed = rng();

  culayersDropoutInitArgs_t init;
  culayersDropoutInitArgsInit(&init);
  EXPECT_EQ(init.initial_keep_rate, 1.0);
  EXPECT_EQ(init.decay_rate, 1.0);
  EXPECT_EQ(init.redraws, 0u);
  init.state = s_c.get();
  init.redraws = 5; // a kept redraw count: the redraw at step 2 gives stream 2^63 + 6 on both sides
  init.seed = seed;
  init.initial_keep_rate = 0.7;
  init.decay_rate = 0.9;
  init.decay_interval = 3;
  size_t bytes = 99;
  ASSERT_EQ(culayersDropoutInitWorkspaceSize(&init, &bytes), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(bytes, 0u);
  ASSERT_EQ(culayersDropoutInitCanImplement(&init), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(culayersDropoutInit(&init, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS);
  cd::DropoutInitArgs cpp_init;
  cpp_init.state = s_cpp.get();
  cpp_init.seed = seed;
  cpp_init.initial_keep_rate = 0.7;
  cpp_init.decay_rate = 0.9;
  cpp_init.decay_interval = 3;
  cpp_init.redraws = 5;
  ASSERT_EQ(cd::run(cpp_init, nullptr, 0, nullptr), Status::kSuccess);

  culayersDropoutForwardArgs_t f;
  std::memset(&f, 0, sizeof(f));
  f.x = x.get();
  f.y = y_c.get();
  f.dtype = CULAYERS_DTYPE_FLOAT32;
  f.rank = 3;
  f.dims[0] = 3;
  f.dims[1] = 5;
  f.dims[2] = 8;
  f.noise_rank = 3;
  f.noise_dims[0] = 3;
  f.noise_dims[1] = 1;
  f.noise_dims[2] = 8;
  f.state = s_c.get();
  f.mask = m_c.get();
  culayersDropoutUpdateArgs_t u{s_c.get()};
  culayersDropoutBackwardArgs_t b;
  std::memset(&b, 0, sizeof(b));
  b.dy = x.get();
  b.dx = dx_c.get();
  b.dtype = CULAYERS_DTYPE_FLOAT32;
  b.rank = 3;
  std::memcpy(b.dims, f.dims, sizeof(b.dims));
  b.noise_rank = 3;
  std::memcpy(b.noise_dims, f.noise_dims, sizeof(b.noise_dims));
  b.state = s_c.get();

  cd::DropoutForwardArgs fc;
  fc.x = x.get();
  fc.y = y_cpp.get();
  fc.shape = shape_of({3, 5, 8});
  fc.noise_shape = shape_of({3, 1, 8});
  fc.state = s_cpp.get();
  fc.mask = m_cpp.get();
  cd::DropoutUpdateArgs uc;
  uc.state = s_cpp.get();
  cd::DropoutBackwardArgs bc;
  bc.dy = x.get();
  bc.dx = dx_cpp.get();
  bc.shape = fc.shape;
  bc.noise_shape = fc.noise_shape;
  bc.state = s_cpp.get();

  for (int step = 0; step < 4; ++step) {
    if (step == 2 || step == 3) { // a redraw before this step's forward, on both sides; then back
      const culayersDropoutRedrawArgs_t r{s_c.get(), step == 3 ? 1 : 0};
      cd::DropoutRedrawArgs rc;
      rc.state = s_cpp.get();
      rc.to_schedule = step == 3;
      ASSERT_EQ(culayersDropoutRedraw(&r, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS);
      ASSERT_EQ(cd::run(rc, nullptr, 0, nullptr), Status::kSuccess);
    }
    ASSERT_EQ(culayersDropoutForwardCanImplement(&f), CULAYERS_STATUS_SUCCESS)
        << culayersGetLastErrorMessage();
    ASSERT_EQ(culayersDropoutForward(&f, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS);
    ASSERT_EQ(culayersDropoutUpdate(&u, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS);
    ASSERT_EQ(culayersDropoutBackward(&b, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS);
    ASSERT_EQ(cd::run(fc, nullptr, 0, nullptr), Status::kSuccess);
    ASSERT_EQ(cd::run(uc, nullptr, 0, nullptr), Status::kSuccess);
    ASSERT_EQ(cd::run(bc, nullptr, 0, nullptr), Status::kSuccess);
    CULAYERS_ASSERT_CUDA(cudaDeviceSynchronize());
    EXPECT_EQ(std::memcmp(y_c.download().data(), y_cpp.download().data(), n * sizeof(float)), 0) << step;
    EXPECT_EQ(m_c.download(), m_cpp.download()) << step;
    EXPECT_EQ(std::memcmp(dx_c.download().data(), dx_cpp.download().data(), n * sizeof(float)), 0) << step;
    const auto sc = s_c.download();
    const auto scpp = s_cpp.download();
    EXPECT_EQ(std::memcmp(sc.data(), scpp.data(), sizeof(cd::DropoutState)), 0) << step;
  }
  EXPECT_EQ(culayersDropoutScheduledKeepRate(0.7, 0.9, 3, 5), cd::scheduled_keep_rate(0.7, 0.9, 3, 5));
  // Arguments the init op refuses have no schedule: NaN (an interval <= 0 gave 0 or a rate above the
  // initial one, which a caller could take for a real schedule).
  const double nan = std::numeric_limits<double>::quiet_NaN();
  struct Bad {
    double initial, decay;
    std::int64_t interval, k;
  };
  for (const Bad& b : {Bad{0.7, 0.9, 0, 5}, Bad{0.7, 0.9, -3, 5}, Bad{0.0, 0.9, 3, 5}, Bad{1.5, 0.9, 3, 5},
                       Bad{nan, 0.9, 3, 5}, Bad{0.7, nan, 3, 5}, Bad{0.7, 0.9, 3, -1}}) {
    EXPECT_TRUE(std::isnan(cd::scheduled_keep_rate(b.initial, b.decay, b.interval, b.k)))
        << b.initial << " " << b.decay << " " << b.interval << " " << b.k;
    EXPECT_TRUE(std::isnan(culayersDropoutScheduledKeepRate(b.initial, b.decay, b.interval, b.k)));
  }
  EXPECT_EQ(cd::scheduled_keep_rate(1.0, 0.9, 1, 0), 0.9); // the edges that are valid still give numbers
  EXPECT_EQ(cd::scheduled_keep_rate(0.5, 1.0, 7, 0), 0.5);
}

TEST(DropoutCApi, Errors) {
  EXPECT_EQ(culayersDropoutForward(nullptr, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("dropout_forward: args"), std::string::npos);
  EXPECT_EQ(culayersDropoutInit(nullptr, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersDropoutUpdateCanImplement(nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersDropoutBackwardCanImplement(nullptr), CULAYERS_STATUS_NULL_POINTER);
  size_t bytes = 0;
  culayersDropoutUpdateArgs_t u{nullptr};
  EXPECT_EQ(culayersDropoutUpdateWorkspaceSize(&u, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersDropoutUpdate(&u, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  culayersDropoutRedrawArgs_t r{nullptr, 0};
  EXPECT_EQ(culayersDropoutRedrawCanImplement(nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersDropoutRedrawWorkspaceSize(&r, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersDropoutRedraw(&r, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("dropout_redraw: state"), std::string::npos)
      << culayersGetLastErrorMessage();

  Fixture fx;
  culayersDropoutForwardArgs_t f;
  std::memset(&f, 0, sizeof(f));
  f.x = fx.x.get();
  f.y = fx.y.get();
  f.mask = fx.mask.get();
  f.dtype = CULAYERS_DTYPE_FLOAT32;
  f.state = reinterpret_cast<culayersDropoutState_t*>(fx.state.get());
  f.rank = 9; // as Shape::make in C++
  EXPECT_EQ(culayersDropoutForward(&f, nullptr, 0, nullptr), CULAYERS_STATUS_SIZE_LIMIT);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("rank"), std::string::npos);
  bytes = 777; // arguments that do not convert: the status says why, and 0 bytes
  EXPECT_EQ(culayersDropoutForwardWorkspaceSize(&f, &bytes), CULAYERS_STATUS_SIZE_LIMIT);
  EXPECT_EQ(bytes, 0u);
  f.rank = -1;
  EXPECT_EQ(culayersDropoutForward(&f, nullptr, 0, nullptr), CULAYERS_STATUS_INVALID_SHAPE);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("rank"), std::string::npos);
  // Element counts that overflow int64: named by the op and the argument; a noise shape that overflows
  // cannot broadcast to x, as the C++ op says of it.
  f.rank = 2;
  f.dims[0] = std::int64_t{1} << 40;
  f.dims[1] = std::int64_t{1} << 40;
  EXPECT_EQ(culayersDropoutForward(&f, nullptr, 0, nullptr), CULAYERS_STATUS_SIZE_LIMIT);
  EXPECT_NE(
      std::string(culayersGetLastErrorMessage()).find("dropout_forward: shape: the element count overflows"),
      std::string::npos)
      << culayersGetLastErrorMessage();
  f.dims[0] = 4;
  f.dims[1] = 24;
  f.noise_rank = 2;
  f.noise_dims[0] = std::int64_t{1} << 40;
  f.noise_dims[1] = std::int64_t{1} << 40;
  EXPECT_EQ(culayersDropoutForward(&f, nullptr, 0, nullptr), CULAYERS_STATUS_INVALID_SHAPE);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find("dropout_forward: noise_shape:"),
            std::string::npos)
      << culayersGetLastErrorMessage();
  f.noise_rank = 0;
  f.rank = 2;
  f.dims[0] = 4;
  f.dims[1] = -24;
  EXPECT_EQ(culayersDropoutForward(&f, nullptr, 0, nullptr), CULAYERS_STATUS_INVALID_SHAPE);
  f.dims[1] = 24;
  f.noise_rank = 2;
  f.noise_dims[0] = 2;
  f.noise_dims[1] = 24;
  EXPECT_EQ(culayersDropoutForward(&f, nullptr, 0, nullptr), CULAYERS_STATUS_INVALID_SHAPE);
  bytes = 99; // workspace_size does not validate: 0 for any convertible arguments
  EXPECT_EQ(culayersDropoutForwardWorkspaceSize(&f, &bytes), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(bytes, 0u);
  f.noise_dims[0] = 1;
  f.dtype = CULAYERS_DTYPE_INT64;
  EXPECT_EQ(culayersDropoutForwardCanImplement(&f), CULAYERS_STATUS_INVALID_DTYPE);
  fx.expect_untouched("C API errors");
  f.dtype = CULAYERS_DTYPE_FLOAT32;
  EXPECT_EQ(culayersDropoutForwardCanImplement(&f), CULAYERS_STATUS_SUCCESS) << culayersGetLastErrorMessage();
}

} // namespace
