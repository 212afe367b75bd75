// C API of group normalization: the plain C structs are converted to the C++ argument structs
// (culayers/group_norm.hpp) and forwarded. The fields the forward and backward share are copied by one
// helper; the static_asserts pin the C enums to the C++ ones, so casting between them is exact.
#include "src/capi_enum.hpp"
#include "src/capi_shim.hpp"
#include "culayers/c/group_norm.h"

#include "culayers/group_norm.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"

#include <cuda_runtime_api.h>

#include <type_traits>

namespace {

namespace gn = culayers::group_norm;
using culayers::Status;

template <class CEnum, class CppEnum>
constexpr bool same_value(CEnum c, CppEnum cpp) {
  return static_cast<int>(c) == static_cast<int>(cpp);
}

static_assert(same_value(CULAYERS_ACTIVATION_NONE, gn::Activation::kNone));
static_assert(same_value(CULAYERS_ACTIVATION_SILU, gn::Activation::kSiLU));
static_assert(same_value(CULAYERS_ACTIVATION_RELU, gn::Activation::kReLU));
static_assert(same_value(CULAYERS_GROUP_NORM_PATH_AUTO, gn::Path::kAuto));
static_assert(same_value(CULAYERS_GROUP_NORM_PATH_WARP, gn::Path::kWarp));
static_assert(same_value(CULAYERS_GROUP_NORM_PATH_BLOCK, gn::Path::kBlock));
static_assert(same_value(CULAYERS_GROUP_NORM_PATH_SPLIT, gn::Path::kSplit));
static_assert(same_value(CULAYERS_GROUP_NORM_PATH_TILE, gn::Path::kTile));
static_assert(std::is_same_v<culayersStream_t, cudaStream_t>, "culayersStream_t must be cudaStream_t");

// The numeric fields have the same types on both sides, so a change to the C++ header fails here at compile
// time instead of becoming a silently narrowing copy (pointer fields would not compile if they differed).
#define CULAYERS_SAME_TYPE(CStruct, CppStruct, field)                                                        \
  static_assert(std::is_same_v<decltype(CStruct::field), decltype(CppStruct::field)>,                        \
                #CStruct "." #field " differs from the C++ field")
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, vector_width);
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, warp_max_elements);
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, block_max_bytes);
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, min_split_elements);
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, target_blocks);
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, splits);
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, tile_rows);
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, tile_min_bytes);
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, split_min_bytes);
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, wave_balance);
CULAYERS_SAME_TYPE(culayersGroupNormTuning_t, gn::Tuning, max_blocks);
CULAYERS_SAME_TYPE(culayersGroupNormArgs_t, gn::GroupNormArgs, batch);
CULAYERS_SAME_TYPE(culayersGroupNormArgs_t, gn::GroupNormArgs, channels);
CULAYERS_SAME_TYPE(culayersGroupNormArgs_t, gn::GroupNormArgs, spatial);
CULAYERS_SAME_TYPE(culayersGroupNormArgs_t, gn::GroupNormArgs, groups);
CULAYERS_SAME_TYPE(culayersGroupNormArgs_t, gn::GroupNormArgs, epsilon);
CULAYERS_SAME_TYPE(culayersGroupNormBackwardArgs_t, gn::GroupNormBackwardArgs, batch);
CULAYERS_SAME_TYPE(culayersGroupNormBackwardArgs_t, gn::GroupNormBackwardArgs, channels);
CULAYERS_SAME_TYPE(culayersGroupNormBackwardArgs_t, gn::GroupNormBackwardArgs, spatial);
CULAYERS_SAME_TYPE(culayersGroupNormBackwardArgs_t, gn::GroupNormBackwardArgs, groups);
#undef CULAYERS_SAME_TYPE

constexpr const char* kForward = "group_norm";
constexpr const char* kBackward = "group_norm_backward";

culayersGroupNormPath_t path_to_c(gn::Path p) {
  return static_cast<culayersGroupNormPath_t>(static_cast<int>(p));
}

gn::Tuning to_cpp(const culayersGroupNormTuning_t& c) {
  gn::Tuning t;
  t.path = static_cast<gn::Path>(culayers::capi::enum_value(c.path));
  t.vector_width = c.vector_width;
  t.warp_max_elements = c.warp_max_elements;
  t.block_max_bytes = c.block_max_bytes;
  t.min_split_elements = c.min_split_elements;
  t.target_blocks = c.target_blocks;
  t.splits = c.splits;
  t.tile_rows = c.tile_rows;
  t.tile_min_bytes = c.tile_min_bytes;
  t.split_min_bytes = c.split_min_bytes;
  t.wave_balance = c.wave_balance;
  t.max_blocks = c.max_blocks;
  return t;
}

culayersGroupNormTuning_t to_c(const gn::Tuning& t) {
  culayersGroupNormTuning_t c{};
  c.path = path_to_c(t.path);
  c.vector_width = t.vector_width;
  c.warp_max_elements = t.warp_max_elements;
  c.block_max_bytes = t.block_max_bytes;
  c.min_split_elements = t.min_split_elements;
  c.target_blocks = t.target_blocks;
  c.splits = t.splits;
  c.tile_rows = t.tile_rows;
  c.tile_min_bytes = t.tile_min_bytes;
  c.split_min_bytes = t.split_min_bytes;
  c.wave_balance = t.wave_balance;
  c.max_blocks = t.max_blocks;
  return c;
}

// The fields the forward and backward structs share (same names on both sides), in either direction:
// `From` and `To` are a C struct and its C++ counterpart or the other way round; enums are cast by number.
template <class To, class From>
void copy_shared(const From& from, To& to) {
  using ToDType = std::remove_reference_t<decltype(to.dtype)>;
  using ToLayout = std::remove_reference_t<decltype(to.layout)>;
  using ToActivation = std::remove_reference_t<decltype(to.activation)>;
  to.dtype = static_cast<ToDType>(culayers::capi::enum_value(from.dtype));
  to.layout = static_cast<ToLayout>(culayers::capi::enum_value(from.layout));
  to.x = from.x;
  to.batch = from.batch;
  to.channels = from.channels;
  to.spatial = from.spatial;
  to.groups = from.groups;
  to.gamma = from.gamma;
  to.beta = from.beta;
  to.activation = static_cast<ToActivation>(culayers::capi::enum_value(from.activation));
  to.mask = from.mask;
}

gn::GroupNormArgs to_cpp(const culayersGroupNormArgs_t& c) {
  gn::GroupNormArgs a;
  copy_shared(c, a);
  a.epsilon = c.epsilon;
  a.y = c.y;
  a.mean = c.mean;
  a.rstd = c.rstd;
  a.tuning = to_cpp(c.tuning);
  return a;
}

gn::GroupNormBackwardArgs to_cpp(const culayersGroupNormBackwardArgs_t& c) {
  gn::GroupNormBackwardArgs a;
  copy_shared(c, a);
  a.dy = c.dy;
  a.mean = c.mean;
  a.rstd = c.rstd;
  a.dx = c.dx;
  a.dgamma = c.dgamma;
  a.dbeta = c.dbeta;
  a.tuning = to_cpp(c.tuning);
  return a;
}

// C defaults are taken from default-constructed C++ structs, so the two can never drift apart.
culayersGroupNormArgs_t c_defaults(const gn::GroupNormArgs& d) {
  culayersGroupNormArgs_t c{};
  copy_shared(d, c);
  c.epsilon = d.epsilon;
  c.y = d.y;
  c.mean = d.mean;
  c.rstd = d.rstd;
  c.tuning = to_c(d.tuning);
  return c;
}

culayersGroupNormBackwardArgs_t c_defaults(const gn::GroupNormBackwardArgs& d) {
  culayersGroupNormBackwardArgs_t c{};
  copy_shared(d, c);
  c.dy = d.dy;
  c.mean = d.mean;
  c.rstd = d.rstd;
  c.dx = d.dx;
  c.dgamma = d.dgamma;
  c.dbeta = d.dbeta;
  c.tuning = to_c(d.tuning);
  return c;
}

// The conversions cannot fail.
constexpr auto kConvert = [](const auto& c, Status*) { return to_cpp(c); };

template <class CArgs>
culayersGroupNormPath_t selected_path(const CArgs* args) noexcept {
  // No exception crosses the C boundary (the planner does not throw; this is the backstop): AUTO, as for
  // arguments the op cannot run.
  try {
    return args == nullptr ? CULAYERS_GROUP_NORM_PATH_AUTO : path_to_c(gn::selected_path(to_cpp(*args)));
  } catch (...) {
    return CULAYERS_GROUP_NORM_PATH_AUTO;
  }
}

} // namespace

extern "C" {

void culayersGroupNormArgsInit(culayersGroupNormArgs_t* args) {
  if (args != nullptr) {
    *args = c_defaults(gn::GroupNormArgs{});
  }
}

void culayersGroupNormBackwardArgsInit(culayersGroupNormBackwardArgs_t* args) {
  if (args != nullptr) {
    *args = c_defaults(gn::GroupNormBackwardArgs{});
  }
}

culayersStatus_t culayersGroupNormCheckSizes(int64_t batch, int64_t channels, int64_t spatial,
                                             int64_t groups) {
  return culayers::capi::guarded("culayersGroupNormCheckSizes", [&] {
    return culayers::capi::to_c(culayers::group_norm::check_sizes(batch, channels, spatial, groups));
  });
}

culayersStatus_t culayersGroupNormCanImplement(const culayersGroupNormArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kForward, kConvert);
}

culayersStatus_t culayersGroupNormBackwardCanImplement(const culayersGroupNormBackwardArgs_t* args) {
  return culayers::capi::entry_can_implement(args, kBackward, kConvert);
}

culayersStatus_t culayersGroupNormWorkspaceSize(const culayersGroupNormArgs_t* args, size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kForward, kConvert);
}

culayersStatus_t culayersGroupNormBackwardWorkspaceSize(const culayersGroupNormBackwardArgs_t* args,
                                                        size_t* bytes) {
  return culayers::capi::entry_workspace_size(args, bytes, kBackward, kConvert);
}

culayersGroupNormPath_t culayersGroupNormSelectedPath(const culayersGroupNormArgs_t* args) {
  return selected_path(args);
}

culayersGroupNormPath_t culayersGroupNormBackwardSelectedPath(const culayersGroupNormBackwardArgs_t* args) {
  return selected_path(args);
}

culayersStatus_t culayersGroupNorm(const culayersGroupNormArgs_t* args, void* workspace,
                                   size_t workspace_bytes, culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kForward, kConvert);
}

culayersStatus_t culayersGroupNormBackward(const culayersGroupNormBackwardArgs_t* args, void* workspace,
                                           size_t workspace_bytes, culayersStream_t stream) {
  return culayers::capi::entry_run(args, workspace, workspace_bytes, stream, kBackward, kConvert);
}

} // extern "C"
