// The shape-only size checks (masked_reduce::check_sizes, check_masking_sizes, group_norm::check_sizes
// and their C API twins) against the ops' own can_implement: over a grid of edge sizes, a shape the check
// refuses is refused by can_implement with the same status and the same reason, and a shape it accepts
// is never refused by can_implement for its sizes. can_implement never touches device memory, so the
// buffers here are distinct, aligned addresses that are never dereferenced.
#include "culayers/culayers.h"
#include "culayers/group_norm.hpp"
#include "culayers/masked_reduce.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

namespace {

namespace mr = culayers::masked_reduce;
namespace gnk = culayers::group_norm;
using culayers::Status;

constexpr std::int64_t kSizes[] = {-1,
                                   0,
                                   1,
                                   3,
                                   (std::int64_t{1} << 31) - 1,
                                   std::int64_t{1} << 31,
                                   std::int64_t{1} << 32,
                                   std::int64_t{1} << 40,
                                   std::int64_t{1} << 59,
                                   std::int64_t{1} << 60,
                                   std::numeric_limits<std::int64_t>::max()};

// A distinct, 256-byte aligned address per buffer, never dereferenced.
template <class T>
T* fake(int k) {
  return reinterpret_cast<T*>(std::uintptr_t{0x100000} * static_cast<std::uintptr_t>(k + 1));
}

// The message without its leading "<op>: ".
std::string reason(const char* message) {
  const std::string m = message;
  const std::size_t colon = m.find(": ");
  return colon == std::string::npos ? m : m.substr(colon + 2);
}

bool size_status(Status s) {
  return s == Status::kErrorInvalidShape || s == Status::kErrorSizeLimit;
}

// `check` is the shape-only check's status and message; `full` runs can_implement with those sizes.
template <class Full>
void expect_agrees(Status check, const std::string& check_reason, Full&& full, const std::string& what) {
  const Status s = full();
  if (ok(check)) {
    EXPECT_FALSE(size_status(s)) << what << ": can_implement refused sizes check_sizes accepted: "
                                 << culayers::last_error_message();
  } else {
    EXPECT_TRUE(size_status(check)) << what;
    EXPECT_EQ(s, check) << what;
    EXPECT_EQ(reason(culayers::last_error_message()), check_reason) << what;
  }
}

// A max reduction's forward or backward arguments with these sizes (the buffers are the caller's).
template <class Args>
Args max_args(std::int64_t outer, std::int64_t reduce, std::int64_t inner) {
  Args a;
  a.op = mr::ReduceOp::kMax;
  a.outer = outer;
  a.reduce = reduce;
  a.inner = inner;
  return a;
}

TEST(CheckSizes, MaskedReduceAgreesWithCanImplement) {
  int refused = 0;
  for (std::int64_t outer : kSizes) {
    for (std::int64_t reduce : kSizes) {
      for (std::int64_t inner : kSizes) {
        const std::string what = "outer " + std::to_string(outer) + ", R " + std::to_string(reduce) +
                                 ", inner " + std::to_string(inner);
        const Status check = mr::check_sizes(outer, reduce, inner);
        const std::string check_reason = reason(culayers::last_error_message());
        if (!ok(check)) {
          ++refused;
          EXPECT_NE(std::string(culayers::last_error_message()).find("masked_reduce::check_sizes: "),
                    std::string::npos);
        }
        EXPECT_EQ(static_cast<int>(culayersMaskedReduceCheckSizes(outer, reduce, inner)),
                  static_cast<int>(check))
            << what;

        auto f = max_args<mr::MaskedReduceArgs>(outer, reduce, inner);
        f.x = fake<const float>(0);
        f.out = fake<float>(1 << 20);
        f.indices = fake<std::int32_t>(2 << 20);
        expect_agrees(
            check, check_reason, [&] { return mr::can_implement(f); }, "forward: " + what);

        auto b = max_args<mr::MaskedReduceBackwardArgs>(outer, reduce, inner);
        b.dy = fake<const float>(0);
        b.indices = fake<const std::int32_t>(1 << 20);
        b.dx = fake<float>(2 << 20);
        expect_agrees(
            check, check_reason, [&] { return mr::can_implement(b); }, "backward: " + what);

        const Status masking = mr::check_masking_sizes(outer, reduce, inner);
        const std::string masking_reason = reason(culayers::last_error_message());
        EXPECT_EQ(static_cast<int>(culayersMaskingCheckSizes(outer, reduce, inner)),
                  static_cast<int>(masking))
            << what;
        mr::MaskingArgs m;
        m.outer = outer;
        m.reduce = reduce;
        m.inner = inner;
        m.x = fake<const float>(0);
        m.mask = fake<std::uint8_t>(1 << 20);
        expect_agrees(
            masking, masking_reason, [&] { return mr::can_implement(m); }, "masking: " + what);
        // Masking has no R limit and no [outer, inner] output: it accepts whatever the reduction accepts.
        if (ok(check)) {
          EXPECT_TRUE(ok(masking)) << what;
        }
      }
    }
  }
  EXPECT_GT(refused, 100); // the grid reaches the limits
}

// The fields the forward and backward group-norm arguments share, and x.
template <class Args>
Args gn_args(culayers::Layout layout, std::int64_t batch, std::int64_t channels, std::int64_t spatial,
             std::int64_t groups) {
  Args a;
  a.layout = layout;
  a.batch = batch;
  a.channels = channels;
  a.spatial = spatial;
  a.groups = groups;
  a.x = fake<const float>(0);
  return a;
}

TEST(CheckSizes, GroupNormAgreesWithCanImplement) {
  const std::int64_t groups_grid[] = {-1, 0, 1, 2, 3, (std::int64_t{1} << 31) - 1, std::int64_t{1} << 31};
  int refused = 0;
  int accepted = 0;
  for (std::int64_t batch : kSizes) {
    for (std::int64_t channels : kSizes) {
      for (std::int64_t spatial : kSizes) {
        for (std::int64_t groups : groups_grid) {
          const std::string what = "N " + std::to_string(batch) + ", C " + std::to_string(channels) +
                                   ", spatial " + std::to_string(spatial) + ", G " + std::to_string(groups);
          const Status check = gnk::check_sizes(batch, channels, spatial, groups);
          const std::string check_reason = reason(culayers::last_error_message());
          ++(ok(check) ? accepted : refused);
          EXPECT_EQ(static_cast<int>(culayersGroupNormCheckSizes(batch, channels, spatial, groups)),
                    static_cast<int>(check))
              << what;
          for (culayers::Layout layout :
               {culayers::Layout::kChannelsFirst, culayers::Layout::kChannelsLast}) {
            auto f = gn_args<gnk::GroupNormArgs>(layout, batch, channels, spatial, groups);
            f.y = fake<float>(1 << 20);
            expect_agrees(
                check, check_reason, [&] { return gnk::can_implement(f); }, "forward: " + what);

            auto b = gn_args<gnk::GroupNormBackwardArgs>(layout, batch, channels, spatial, groups);
            b.dy = fake<const float>(1 << 20);
            b.dx = fake<float>(2 << 20);
            b.mean = fake<const float>(3 << 20);
            b.rstd = fake<const float>(4 << 20);
            expect_agrees(
                check, check_reason, [&] { return gnk::can_implement(b); }, "backward: " + what);
          }
        }
      }
    }
  }
  EXPECT_GT(refused, 1000);
  EXPECT_GE(accepted, 50); // 57 for this grid: most shapes with a size of 2^40 or more are refused
}

} // namespace
