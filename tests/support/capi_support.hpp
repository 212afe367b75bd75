// Helpers for the C API tests.
#pragma once

#include "culayers/culayers.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <string>

namespace culayers::test {

/// The bytes a C API WorkspaceSize entry point stores for `args`; the call must succeed.
template <class Args>
std::size_t c_workspace_bytes(culayersStatus_t (*fn)(const Args*, size_t*), const Args* args) {
  size_t bytes = 0;
  const culayersStatus_t s = fn(args, &bytes);
  EXPECT_EQ(s, CULAYERS_STATUS_SUCCESS) << culayersGetLastErrorMessage();
  return s == CULAYERS_STATUS_SUCCESS ? bytes : 0;
}

/// A WorkspaceSize entry point's NULL checks: NULL args or NULL bytes is NULL_POINTER, and nothing is stored.
template <class Args>
void expect_workspace_null_checks(culayersStatus_t (*fn)(const Args*, size_t*), const Args* valid) {
  size_t bytes = 777;
  EXPECT_EQ(fn(nullptr, &bytes), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(bytes, 777u) << "stored through a failed call";
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find(": args: is null"), std::string::npos)
      << culayersGetLastErrorMessage();
  EXPECT_EQ(fn(valid, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_NE(std::string(culayersGetLastErrorMessage()).find(": bytes: is null"), std::string::npos)
      << culayersGetLastErrorMessage();
}

} // namespace culayers::test
