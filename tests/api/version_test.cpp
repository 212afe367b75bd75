#include "culayers/version.hpp"

#include <cstdio>
#include <string>
#include <type_traits>

#include <gtest/gtest.h>

#include "culayers/status.hpp"

namespace {

TEST(ApiVersion, MacrosAreConsistent) {
  EXPECT_EQ(CULAYERS_VERSION_MAJOR, 0);
  EXPECT_EQ(CULAYERS_VERSION_MINOR, 1);
  EXPECT_EQ(CULAYERS_VERSION_PATCH, 0);
  EXPECT_EQ(CULAYERS_VERSION, 100);
  EXPECT_EQ(CULAYERS_VERSION,
            CULAYERS_VERSION_MAJOR * 10000 + CULAYERS_VERSION_MINOR * 100 + CULAYERS_VERSION_PATCH);
  EXPECT_STREQ(CULAYERS_VERSION_STRING, "0.1.0");
}

TEST(ApiVersion, RuntimeGettersMatchHeaders) {
  EXPECT_EQ(culayers::version(), CULAYERS_VERSION);
  EXPECT_EQ(culayers::version(), culayers::kHeaderVersion);
  ASSERT_NE(culayers::version_string(), nullptr);
  EXPECT_STREQ(culayers::version_string(), CULAYERS_VERSION_STRING);

  char expected[32];
  std::snprintf(expected, sizeof(expected), "%d.%d.%d", culayers::version() / 10000,
                culayers::version() / 100 % 100, culayers::version() % 100);
  EXPECT_STREQ(culayers::version_string(), expected);
}

TEST(ApiVersion, PublicNamespaceIsVersionedInline) {
  static_assert(std::is_same_v<culayers::Status, culayers::v0_1::Status>);
  static_assert(std::is_same_v<culayers::Status, culayers::CULAYERS_ABI_NAMESPACE::Status>);
  EXPECT_EQ(&culayers::version, &culayers::v0_1::version);
}

} // namespace
