// The masked-reduction C API (culayers/c/masked_reduce.h) on both backends: defaults, enum numbers, the
// same bits as the C++ API, and statuses/messages for bad arguments.
#include "culayers/c/masked_reduce.h"

#include "culayers/masked_reduce.hpp"

#include "tests/reference/masked_reduce_reference.hpp"
#include "tests/support/capi_support.hpp"
#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

namespace mr = culayers::masked_reduce;
namespace tm = culayers::test::masked;
using culayers::Status;
using culayers::test::DeviceBuffer;
using culayers::test::rng_for_test;

TEST(MaskedReduceCApi, InitGivesCppDefaults) {
  culayersMaskedReduceArgs_t c;
  std::memset(&c, 0x5a, sizeof(c));
  culayersMaskedReduceArgsInit(&c);
  const mr::MaskedReduceArgs cpp;
  EXPECT_EQ(static_cast<int>(c.op), static_cast<int>(cpp.op));
  EXPECT_EQ(static_cast<int>(c.dtype), static_cast<int>(cpp.dtype));
  EXPECT_EQ(static_cast<int>(c.validity), static_cast<int>(cpp.validity));
  EXPECT_EQ(c.x, nullptr);
  EXPECT_EQ(c.out, nullptr);
  EXPECT_EQ(c.fill_value, 0.0f);
  EXPECT_EQ(c.tuning.splits, 0);
  EXPECT_EQ(static_cast<int>(c.tuning.path), CULAYERS_MASKED_REDUCE_PATH_AUTO);
  culayersMaskedReduceBackwardArgs_t b;
  std::memset(&b, 0x5a, sizeof(b));
  culayersMaskedReduceBackwardArgsInit(&b);
  EXPECT_EQ(b.dx, nullptr);
  EXPECT_EQ(b.row_chunks, 0);
  culayersMaskingArgs_t m;
  culayersMaskingArgsInit(&m);
  EXPECT_EQ(m.mask_value, 0.0f);
  culayersMaskExpandArgs_t e;
  culayersMaskExpandArgsInit(&e);
  EXPECT_EQ(e.features, 0);
  culayersMaskedReduceArgsInit(nullptr); // ignored
  EXPECT_EQ(CULAYERS_MASKED_REDUCE_MOMENTS, static_cast<int>(mr::ReduceOp::kMoments));
  EXPECT_EQ(CULAYERS_VALIDITY_LENGTHS, static_cast<int>(mr::Validity::kLengths));
}

TEST(MaskedReduceCApi, NullArgs) {
  EXPECT_EQ(culayersMaskedReduce(nullptr, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_STREQ(culayersGetLastErrorMessage(), "masked_reduce: args: is null");
  EXPECT_EQ(culayersMaskedReduceBackward(nullptr, nullptr, 0, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersMasking(nullptr, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersMaskExpand(nullptr, nullptr), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(culayersMaskedReduceCanImplement(nullptr), CULAYERS_STATUS_NULL_POINTER);
  culayersMaskedReduceArgs_t fa;
  culayersMaskedReduceArgsInit(&fa);
  culayers::test::expect_workspace_null_checks(culayersMaskedReduceWorkspaceSize, &fa);
  culayersMaskedReduceBackwardArgs_t ba;
  culayersMaskedReduceBackwardArgsInit(&ba);
  culayers::test::expect_workspace_null_checks(culayersMaskedReduceBackwardWorkspaceSize, &ba);
  EXPECT_EQ(culayersMaskedReduceSelectedPath(nullptr), CULAYERS_MASKED_REDUCE_PATH_AUTO);
}

// Forward (max with indices and counts, mask validity, split path), backward, Masking and expansion through
// the C API give the same bits as the C++ API.
// A C caller may store any int in an enum field; the shim reads it as an int (loading it as the C++ view
// of the C enum would be undefined, which UBSan reports) and validation names the field.
TEST(MaskedReduceCApi, OutOfRangeEnumValuesAreRejected) {
  DeviceBuffer<float> x(8), out(2);
  const int bad = 1000;
  for (int field = 0; field < 3; ++field) {
    culayersMaskedReduceArgs_t c;
    culayersMaskedReduceArgsInit(&c);
    c.x = x.get();
    c.out = out.get();
    c.outer = 2;
    c.reduce = 4;
    c.inner = 1;
    ASSERT_EQ(culayersMaskedReduceCanImplement(&c), CULAYERS_STATUS_SUCCESS) << culayersGetLastErrorMessage();
    const char* name = field == 0 ? "op" : (field == 1 ? "dtype" : "validity");
    void* target = field == 0 ? static_cast<void*>(&c.op)
                              : (field == 1 ? static_cast<void*>(&c.dtype) : static_cast<void*>(&c.validity));
    std::memcpy(target, &bad, sizeof(bad));
    EXPECT_NE(culayersMaskedReduceCanImplement(&c), CULAYERS_STATUS_SUCCESS) << name;
    EXPECT_NE(std::string(culayersGetLastErrorMessage()).find(name), std::string::npos)
        << name << ": " << culayersGetLastErrorMessage();
  }
}

TEST(MaskedReduceCApi, SameBitsAsCpp) {
  auto rng = rng_for_test();
  const std::int64_t outer = 3;
  const std::int64_t reduce = 40;
  const std::int64_t inner = 24;
  const std::size_t n_x = static_cast<std::size_t>(outer * reduce * inner);
  const std::size_t n_out = static_cast<std::size_t>(outer * inner);
  const std::vector<__half> x = tm::normal_values<__half>(rng, n_x);
  const tm::ValidityData v = tm::make_validity(rng, mr::Validity::kMask, outer, reduce);
  DeviceBuffer<__half> d_x(x);
  DeviceBuffer<std::uint8_t> d_mask(v.mask);
  DeviceBuffer<__half> out_c(n_out), out_cpp(n_out);
  DeviceBuffer<std::int32_t> idx_c(n_out), idx_cpp(n_out), cnt_c(3), cnt_cpp(3);
  // Different poison per API: outputs that one of them left unwritten cannot compare equal.
  out_c.fill_bytes(0xa5);
  idx_c.fill_bytes(0xa5);
  cnt_c.fill_bytes(0xa5);
  out_cpp.fill_bytes(0x5a);
  idx_cpp.fill_bytes(0x5a);
  cnt_cpp.fill_bytes(0x5a);

  culayersMaskedReduceArgs_t c;
  culayersMaskedReduceArgsInit(&c);
  c.op = CULAYERS_MASKED_REDUCE_MAX;
  c.dtype = CULAYERS_DTYPE_FLOAT16;
  c.x = d_x.get();
  c.outer = outer;
  c.reduce = reduce;
  c.inner = inner;
  c.validity = CULAYERS_VALIDITY_MASK;
  c.mask = d_mask.get();
  c.out = out_c.get();
  c.indices = idx_c.get();
  c.counts = cnt_c.get();
  c.fill_value = -1.0f;
  c.tuning.splits = 3;
  ASSERT_EQ(culayersMaskedReduceCanImplement(&c), CULAYERS_STATUS_SUCCESS);
  EXPECT_EQ(culayersMaskedReduceSelectedPath(&c), CULAYERS_MASKED_REDUCE_PATH_SPLIT);
  const size_t ws_bytes = culayers::test::c_workspace_bytes(culayersMaskedReduceWorkspaceSize, &c);
  ASSERT_GT(ws_bytes, 0u);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  ASSERT_EQ(culayersMaskedReduce(&c, ws.get(), ws_bytes, nullptr), CULAYERS_STATUS_SUCCESS);

  mr::MaskedReduceArgs a;
  a.op = mr::ReduceOp::kMax;
  a.dtype = culayers::DType::kFloat16;
  a.x = d_x.get();
  a.outer = outer;
  a.reduce = reduce;
  a.inner = inner;
  a.validity = mr::Validity::kMask;
  a.mask = d_mask.get();
  a.out = out_cpp.get();
  a.indices = idx_cpp.get();
  a.counts = cnt_cpp.get();
  a.fill_value = -1.0f;
  a.tuning.splits = 3;
  ASSERT_EQ(mr::workspace_size(a), ws_bytes);
  ASSERT_EQ(mr::run(a, ws.get(), ws_bytes, nullptr), Status::kSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<__half> oc = out_c.download();
  const std::vector<__half> op = out_cpp.download();
  for (std::size_t i = 0; i < n_out; ++i) {
    ASSERT_EQ(tm::bits(oc[i]), tm::bits(op[i])) << i;
  }
  EXPECT_EQ(idx_c.download(), idx_cpp.download());
  EXPECT_EQ(cnt_c.download(), cnt_cpp.download());

  // Backward through the C API.
  DeviceBuffer<__half> dx(n_x);
  culayersMaskedReduceBackwardArgs_t b;
  culayersMaskedReduceBackwardArgsInit(&b);
  b.op = CULAYERS_MASKED_REDUCE_MAX;
  b.dtype = CULAYERS_DTYPE_FLOAT16;
  b.outer = outer;
  b.reduce = reduce;
  b.inner = inner;
  b.validity = CULAYERS_VALIDITY_MASK;
  b.mask = d_mask.get();
  b.dy = out_c.get();
  b.indices = idx_c.get();
  b.dx = dx.get();
  EXPECT_EQ(culayers::test::c_workspace_bytes(culayersMaskedReduceBackwardWorkspaceSize, &b), 0u);
  ASSERT_EQ(culayersMaskedReduceBackward(&b, nullptr, 0, nullptr), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<__half> g = dx.download();
  const std::vector<std::int32_t> idx = idx_c.download();
  for (std::int64_t o = 0; o < outer; ++o) {
    for (std::int64_t r = 0; r < reduce; ++r) {
      for (std::int64_t i = 0; i < inner; ++i) {
        const std::size_t xi = static_cast<std::size_t>((o * reduce + r) * inner + i);
        const std::size_t at = static_cast<std::size_t>(o * inner + i);
        const std::uint32_t want = idx[at] == r ? tm::bits(oc[at]) : 0u;
        ASSERT_EQ(tm::bits(g[xi]), want) << o << " " << r << " " << i;
      }
    }
  }
  b.indices = nullptr;
  EXPECT_EQ(culayersMaskedReduceBackwardCanImplement(&b), CULAYERS_STATUS_NULL_POINTER);
  EXPECT_EQ(std::string(culayersGetLastErrorMessage()).rfind("masked_reduce_backward: indices", 0), 0u);

  // Masking and expansion.
  DeviceBuffer<std::uint8_t> m(static_cast<std::size_t>(outer * reduce));
  culayersMaskingArgs_t mk;
  culayersMaskingArgsInit(&mk);
  mk.dtype = CULAYERS_DTYPE_FLOAT16;
  mk.x = d_x.get();
  mk.outer = outer;
  mk.reduce = reduce;
  mk.inner = inner;
  mk.mask = m.get();
  ASSERT_EQ(culayersMaskingCanImplement(&mk), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(culayersMasking(&mk, nullptr), CULAYERS_STATUS_SUCCESS);
  DeviceBuffer<std::uint8_t> e(static_cast<std::size_t>(outer * reduce * 5));
  culayersMaskExpandArgs_t ex;
  culayersMaskExpandArgsInit(&ex);
  ex.mask = m.get();
  ex.out = e.get();
  ex.outer = outer;
  ex.steps = reduce;
  ex.features = 5;
  ASSERT_EQ(culayersMaskExpandCanImplement(&ex), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(culayersMaskExpand(&ex, nullptr), CULAYERS_STATUS_SUCCESS);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<std::uint8_t> mask = m.download();
  for (std::uint8_t bit : mask) {
    EXPECT_EQ(bit, 1) << "normal data never equals 0 across a whole row";
  }
  EXPECT_EQ(e.download(), tm::expand_reference(mask, 5));

  ex.features = -1;
  EXPECT_EQ(culayersMaskExpand(&ex, nullptr), CULAYERS_STATUS_INVALID_SHAPE);
  c.dtype = CULAYERS_DTYPE_INT32;
  EXPECT_EQ(culayersMaskedReduce(&c, ws.get(), ws_bytes, nullptr), CULAYERS_STATUS_INVALID_DTYPE);
  EXPECT_EQ(std::string(culayersGetLastErrorMessage()).rfind("masked_reduce: dtype", 0), 0u);
}

} // namespace
