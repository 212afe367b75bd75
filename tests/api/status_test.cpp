#include "culayers/status.hpp"

#include <atomic>
#include <cstring>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>

#include <gtest/gtest.h>

namespace {

using culayers::Status;

struct StatusRow {
  Status status;
  int number;
  const char* text;
};

// The numbers are ABI: this table is the contract, so a renumbering or a reworded string fails here.
constexpr StatusRow kStatusTable[] = {
    {Status::kSuccess, 0, "success"},
    {Status::kErrorNullPointer, 100, "null pointer argument"},
    {Status::kErrorInvalidShape, 101, "invalid shape"},
    {Status::kErrorInvalidDType, 102, "invalid or unsupported dtype"},
    {Status::kErrorInvalidLayout, 103, "invalid or unsupported layout"},
    {Status::kErrorMisaligned, 104, "misaligned pointer or stride"},
    {Status::kErrorInvalidValue, 105, "invalid argument value"},
    {Status::kErrorSizeLimit, 106, "size exceeds a supported limit"},
    {Status::kErrorInconsistentArguments, 107, "inconsistent arguments"},
    {Status::kErrorWorkspaceTooSmall, 200, "workspace too small"},
    {Status::kErrorOutOfMemory, 201, "out of memory"},
    {Status::kErrorCudaLaunch, 300, "CUDA kernel launch failed"},
    {Status::kErrorCudaRuntime, 301, "CUDA runtime error"},
    {Status::kErrorNoDevice, 302, "no CUDA device available"},
    {Status::kErrorNotSupported, 400, "not supported"},
    {Status::kErrorParse, 500, "parse error"},
    {Status::kErrorIO, 501, "I/O error"},
    {Status::kErrorUnknownClass, 502, "unknown class name"},
    {Status::kErrorInternal, 900, "internal error"},
};

TEST(ApiStatus, NumbersAreStable) {
  for (const StatusRow& row : kStatusTable) {
    EXPECT_EQ(static_cast<int>(row.status), row.number) << row.text;
  }
  static_assert(std::is_same_v<std::underlying_type_t<Status>, int>);
  static_assert(sizeof(Status) == sizeof(int));
}

TEST(ApiStatus, StringsAreExactNonEmptyAndDistinct) {
  std::set<std::string> seen;
  for (const StatusRow& row : kStatusTable) {
    const char* text = culayers::status_string(row.status);
    ASSERT_NE(text, nullptr) << row.number;
    EXPECT_STREQ(text, row.text) << row.number;
    EXPECT_GT(std::strlen(text), 0u) << row.number;
    EXPECT_TRUE(seen.insert(text).second) << "duplicate status string: " << text;
  }
  EXPECT_EQ(seen.size(), sizeof(kStatusTable) / sizeof(kStatusTable[0]));
}

TEST(ApiStatus, EveryOtherValueIsUnknown) {
  // Sweeps all group ranges, so a new enumerator given a string without a row above fails here.
  std::set<int> known;
  for (const StatusRow& row : kStatusTable) {
    known.insert(row.number);
  }
  for (int value = -5; value < 1000; ++value) {
    if (known.count(value) == 0) {
      EXPECT_STREQ(culayers::status_string(static_cast<Status>(value)), "unknown status") << value;
    }
  }
  EXPECT_STREQ(culayers::status_string(static_cast<Status>(123456)), "unknown status");
}

TEST(ApiStatus, OkAndStreaming) {
  EXPECT_TRUE(culayers::ok(Status::kSuccess));
  EXPECT_FALSE(culayers::ok(Status::kErrorInternal));
  EXPECT_FALSE(culayers::ok(Status::kErrorNullPointer));
  std::ostringstream os;
  os << Status::kErrorInvalidShape;
  EXPECT_EQ(os.str(), "invalid shape (101)");
  os.str("");
  os << static_cast<Status>(7);
  EXPECT_EQ(os.str(), "unknown status (7)");
}

TEST(ApiStatus, SetErrorFormatsAndReturnsStatus) {
  culayers::detail::clear_error();
  EXPECT_STREQ(culayers::last_error_message(), "");
  const Status s = culayers::detail::set_error(Status::kErrorInvalidShape,
                                               "masked_sum: %s: rank %d exceeds %d", "x", 9, 8);
  EXPECT_EQ(s, Status::kErrorInvalidShape);
  EXPECT_STREQ(culayers::last_error_message(), "masked_sum: x: rank 9 exceeds 8");

  // Successful calls leave it alone; the next error replaces it.
  EXPECT_EQ(culayers::detail::set_error(Status::kErrorIO, "load: path: %s", "missing"), Status::kErrorIO);
  EXPECT_STREQ(culayers::last_error_message(), "load: path: missing");

  culayers::detail::clear_error();
  EXPECT_STREQ(culayers::last_error_message(), "");
}

TEST(ApiStatus, SetErrorCanWrapThePreviousMessage) {
  EXPECT_EQ(culayers::detail::set_error(Status::kErrorCudaLaunch, "inner: grid: too large"),
            Status::kErrorCudaLaunch);
  EXPECT_EQ(
      culayers::detail::set_error(Status::kErrorCudaLaunch, "group_norm: %s", culayers::last_error_message()),
      Status::kErrorCudaLaunch);
  EXPECT_STREQ(culayers::last_error_message(), "group_norm: inner: grid: too large");
}

TEST(ApiStatus, SetErrorWithNullFormatStoresEmpty) {
  EXPECT_EQ(culayers::detail::set_error(Status::kErrorInternal, "something"), Status::kErrorInternal);
  EXPECT_EQ(culayers::detail::set_error(Status::kErrorInternal, nullptr), Status::kErrorInternal);
  EXPECT_STREQ(culayers::last_error_message(), "");
}

TEST(ApiStatus, LongMessagesAreTruncatedVisibly) {
  constexpr std::size_t kCap = culayers::detail::kErrorMessageCapacity;
  static_assert(kCap == 1024);

  // Exactly capacity - 1 characters fit unchanged.
  const std::string fits(kCap - 1, 'a');
  EXPECT_EQ(culayers::detail::set_error(Status::kErrorInvalidValue, "%s", fits.c_str()),
            Status::kErrorInvalidValue);
  EXPECT_EQ(std::string(culayers::last_error_message()), fits);

  // One more is cut to capacity - 1 and marked with "...".
  const std::string too_long = fits + "b";
  EXPECT_EQ(culayers::detail::set_error(Status::kErrorInvalidValue, "%s", too_long.c_str()),
            Status::kErrorInvalidValue);
  const std::string got = culayers::last_error_message();
  EXPECT_EQ(got.size(), kCap - 1);
  EXPECT_EQ(got, std::string(kCap - 4, 'a') + "...");

  const std::string huge(100000, 'z');
  EXPECT_EQ(culayers::detail::set_error(Status::kErrorInternal, "op: %s", huge.c_str()),
            Status::kErrorInternal);
  const std::string got_huge = culayers::last_error_message();
  ASSERT_EQ(got_huge.size(), kCap - 1);
  EXPECT_EQ(got_huge.substr(0, 6), "op: zz");
  EXPECT_EQ(got_huge.substr(kCap - 4), "...");
}

// "Tsan" in the name puts it in the ThreadSanitizer preset's subset: the buffer must be per thread.
TEST(ApiStatusTsan, LastErrorMessageIsThreadLocal) {
  EXPECT_EQ(culayers::detail::set_error(Status::kErrorIO, "main: before"), Status::kErrorIO);

  std::atomic<int> written{0};
  std::string seen_a;
  std::string seen_b;
  std::string initial_a;
  auto worker = [&written](const char* tag, std::string* initial, std::string* seen) {
    if (initial != nullptr) {
      *initial = culayers::last_error_message();
    }
    EXPECT_EQ(culayers::detail::set_error(Status::kErrorInvalidValue, "%s: x: from thread", tag),
              Status::kErrorInvalidValue);
    // Both threads have written before either reads, so a shared buffer would show the other tag.
    written.fetch_add(1);
    while (written.load() < 2) {
      std::this_thread::yield();
    }
    *seen = culayers::last_error_message();
  };
  std::thread a(worker, "thread_a", &initial_a, &seen_a);
  std::thread b(worker, "thread_b", nullptr, &seen_b);
  a.join();
  b.join();

  EXPECT_EQ(initial_a, ""); // a new thread starts without a message
  EXPECT_EQ(seen_a, "thread_a: x: from thread");
  EXPECT_EQ(seen_b, "thread_b: x: from thread");
  EXPECT_STREQ(culayers::last_error_message(), "main: before");
}

} // namespace
