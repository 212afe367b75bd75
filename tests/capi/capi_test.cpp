#include "culayers/culayers.h"

#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "culayers/culayers.hpp"

namespace {

// Every C enumerator, with the C++ value it must mirror.
struct StatusPair {
  culayersStatus_t c;
  culayers::Status cpp;
};

constexpr StatusPair kStatuses[] = {
    {CULAYERS_STATUS_SUCCESS, culayers::Status::kSuccess},
    {CULAYERS_STATUS_NULL_POINTER, culayers::Status::kErrorNullPointer},
    {CULAYERS_STATUS_INVALID_SHAPE, culayers::Status::kErrorInvalidShape},
    {CULAYERS_STATUS_INVALID_DTYPE, culayers::Status::kErrorInvalidDType},
    {CULAYERS_STATUS_INVALID_LAYOUT, culayers::Status::kErrorInvalidLayout},
    {CULAYERS_STATUS_MISALIGNED, culayers::Status::kErrorMisaligned},
    {CULAYERS_STATUS_INVALID_VALUE, culayers::Status::kErrorInvalidValue},
    {CULAYERS_STATUS_SIZE_LIMIT, culayers::Status::kErrorSizeLimit},
    {CULAYERS_STATUS_INCONSISTENT_ARGUMENTS, culayers::Status::kErrorInconsistentArguments},
    {CULAYERS_STATUS_WORKSPACE_TOO_SMALL, culayers::Status::kErrorWorkspaceTooSmall},
    {CULAYERS_STATUS_OUT_OF_MEMORY, culayers::Status::kErrorOutOfMemory},
    {CULAYERS_STATUS_CUDA_LAUNCH, culayers::Status::kErrorCudaLaunch},
    {CULAYERS_STATUS_CUDA_RUNTIME, culayers::Status::kErrorCudaRuntime},
    {CULAYERS_STATUS_NO_DEVICE, culayers::Status::kErrorNoDevice},
    {CULAYERS_STATUS_NOT_SUPPORTED, culayers::Status::kErrorNotSupported},
    {CULAYERS_STATUS_PARSE, culayers::Status::kErrorParse},
    {CULAYERS_STATUS_IO, culayers::Status::kErrorIO},
    {CULAYERS_STATUS_UNKNOWN_CLASS, culayers::Status::kErrorUnknownClass},
    {CULAYERS_STATUS_INTERNAL, culayers::Status::kErrorInternal},
};

TEST(CApi, VersionMatchesCpp) {
  EXPECT_EQ(culayersGetVersion(), CULAYERS_VERSION);
  EXPECT_EQ(culayersGetVersion(), culayers::version());
  EXPECT_EQ(culayersGetVersion(), 100);
  ASSERT_NE(culayersGetVersionString(), nullptr);
  EXPECT_STREQ(culayersGetVersionString(), culayers::version_string());
  EXPECT_STREQ(culayersGetVersionString(), "0.1.0");
}

TEST(CApi, StatusNumbersAndStringsMatchCpp) {
  for (const StatusPair& p : kStatuses) {
    EXPECT_EQ(static_cast<int>(p.c), static_cast<int>(p.cpp));
    const char* text = culayersGetStatusString(p.c);
    ASSERT_NE(text, nullptr);
    EXPECT_STREQ(text, culayers::status_string(p.cpp));
    EXPECT_STRNE(text, "unknown status") << static_cast<int>(p.c);
  }
  EXPECT_STREQ(culayersGetStatusString(CULAYERS_STATUS_SIZE_LIMIT), "size exceeds a supported limit");
  // Only values within the C enum's range (0..1023 here) are well-defined to cast in C++.
  EXPECT_STREQ(culayersGetStatusString(static_cast<culayersStatus_t>(150)), "unknown status");
}

TEST(CApi, LastErrorMessageIsTheCppMessage) {
  culayers::detail::clear_error();
  EXPECT_STREQ(culayersGetLastErrorMessage(), "");
  EXPECT_EQ(culayers::detail::set_error(culayers::Status::kErrorMisaligned, "dropout: x: %s",
                                        "not 16-byte aligned"),
            culayers::Status::kErrorMisaligned);
  EXPECT_STREQ(culayersGetLastErrorMessage(), "dropout: x: not 16-byte aligned");
  EXPECT_EQ(culayersGetLastErrorMessage(), culayers::last_error_message());
}

TEST(CApi, DTypeAndLayoutMirrorCpp) {
  const culayersDType_t dtypes[] = {CULAYERS_DTYPE_FLOAT32, CULAYERS_DTYPE_FLOAT16, CULAYERS_DTYPE_BFLOAT16,
                                    CULAYERS_DTYPE_INT32,   CULAYERS_DTYPE_UINT8,   CULAYERS_DTYPE_INT64};
  const std::size_t sizes[] = {4, 2, 2, 4, 1, 8};
  const char* names[] = {"float32", "float16", "bfloat16", "int32", "uint8", "int64"};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(static_cast<int>(dtypes[i]), i);
    const auto cpp = static_cast<culayers::DType>(dtypes[i]);
    EXPECT_EQ(culayersGetDTypeSize(dtypes[i]), sizes[i]);
    EXPECT_EQ(culayersGetDTypeSize(dtypes[i]), culayers::dtype_size(cpp));
    EXPECT_STREQ(culayersGetDTypeName(dtypes[i]), names[i]);
    EXPECT_STREQ(culayersGetDTypeName(dtypes[i]), culayers::dtype_name(cpp));
  }
  EXPECT_EQ(culayersGetDTypeSize(static_cast<culayersDType_t>(6)), 0u);
  EXPECT_STREQ(culayersGetDTypeName(static_cast<culayersDType_t>(6)), "unknown dtype");

  EXPECT_EQ(static_cast<int>(CULAYERS_LAYOUT_CHANNELS_FIRST),
            static_cast<int>(culayers::Layout::kChannelsFirst));
  EXPECT_EQ(static_cast<int>(CULAYERS_LAYOUT_CHANNELS_LAST),
            static_cast<int>(culayers::Layout::kChannelsLast));
  EXPECT_EQ(CULAYERS_MAX_RANK, culayers::kMaxRank);
}

} // namespace
