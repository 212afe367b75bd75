// C API of models (include/culayers/c/model.h): a handle around nn::Sequential. No C++ exception crosses
// the C boundary: allocation failures become CULAYERS_STATUS_OUT_OF_MEMORY.
#include "src/capi_enum.hpp"
#include "src/capi_shim.hpp"
#include "culayers/c/model.h"

#include "culayers/nn/sequential.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "kernels/common/arg_checks.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

struct culayersModel_st {
  std::unique_ptr<culayers::nn::Sequential> model;
  std::vector<culayers::nn::UnusedConfigKey> unused_keys; // what creating it did not use from the config
};

namespace {

namespace nn = culayers::nn;
using culayers::Status;
using culayers::detail::set_error;

static_assert(static_cast<int>(CULAYERS_PHASE_INFERENCE) == static_cast<int>(nn::Phase::kInference));
static_assert(static_cast<int>(CULAYERS_PHASE_TRAINING) == static_cast<int>(nn::Phase::kTraining));
static_assert(std::is_same_v<culayersStream_t, cudaStream_t>, "culayersStream_t must be cudaStream_t");

using culayers::capi::guarded;
using culayers::capi::null_arg;
using culayers::capi::to_c;

Status create(const char* fn, culayersModel_t* model, const std::string& config, const char* weights_path,
              const culayersModelOptions_t* options, cudaStream_t stream) {
  std::vector<nn::UnusedConfigKey> unused;
  nn::ConfigReadOptions read;
  read.reject_unknown_keys = options != nullptr && options->reject_unknown_config_keys != 0;
  read.unused_keys = &unused;
  std::unique_ptr<nn::Sequential> seq;
  if (Status s = nn::Sequential::from_json_string(config, read, &seq, stream); !culayers::ok(s)) {
    return s;
  }
  if (!seq->built()) {
    return set_error(Status::kErrorInvalidValue,
                     "%s: config: the model's input shape is missing or has a variable "
                     "extent past the batch (give \"build_input_shape\": save the model after building it)",
                     fn);
  }
  if (weights_path != nullptr) {
    if (Status s = seq->load_weights(weights_path, stream); !culayers::ok(s)) {
      return s;
    }
  }
  auto handle = std::make_unique<culayersModel_st>();
  handle->model = std::move(seq);
  handle->unused_keys = std::move(unused);
  *model = handle.release();
  return Status::kSuccess;
}

/// Reads the config file of culayersModelCreateFromFile*.
Status read_config_file(const char* fn, const char* config_path, std::string* text) {
  // A directory opens as an empty stream on Linux: an I/O error here, not an empty config's parse error.
  // (Pipes and other files without a size are read as streams.)
  std::error_code ec;
  if (std::filesystem::is_directory(config_path, ec)) {
    return set_error(Status::kErrorIO, "%s: \"%s\" is a directory", fn, config_path);
  }
  std::ifstream in(config_path, std::ios::binary);
  if (!in) {
    return set_error(Status::kErrorIO, "%s: cannot open \"%s\"", fn, config_path);
  }
  text->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (in.bad()) {
    return set_error(Status::kErrorIO, "%s: cannot read \"%s\"", fn, config_path);
  }
  return Status::kSuccess;
}

/// The culayersModelCreate* functions: `source` is the config's JSON text, or with `from_file` its path.
culayersStatus_t create_from(const char* fn, culayersModel_t* model, const char* source, bool from_file,
                             const char* weights_path, const culayersModelOptions_t* options,
                             cudaStream_t stream) {
  if (model == nullptr || source == nullptr) {
    return null_arg(fn, model == nullptr ? "model" : from_file ? "config_path" : "config_json");
  }
  return guarded(fn, [&]() -> culayersStatus_t {
    std::string text;
    if (!from_file) {
      text = source;
    } else if (Status s = read_config_file(fn, source, &text); !culayers::ok(s)) {
      return to_c(s);
    }
    return to_c(create(fn, model, text, weights_path, options, stream));
  });
}

/// Copies `s` into a caller's text buffer (NUL-terminated, truncated to `capacity`) and its full length.
void copy_text(const std::string& s, char* buffer, size_t capacity, size_t* length) {
  if (capacity != 0) {
    const std::size_t n = std::min(s.size(), capacity - 1);
    std::memcpy(buffer, s.data(), n);
    buffer[n] = '\0';
  }
  if (length != nullptr) {
    *length = s.size();
  }
}

Status make_shape(const char* fn, const char* arg, int rank, const int64_t* dims, culayers::Shape* out) {
  if (rank < 1 || rank > CULAYERS_MAX_RANK) { // the statuses of Shape::make
    return set_error(rank < 1 ? Status::kErrorInvalidShape : Status::kErrorSizeLimit,
                     "%s: %s: rank %d is not in [1, %d]", fn, arg, rank, CULAYERS_MAX_RANK);
  }
  return culayers::Shape::make(dims, rank, out);
}

} // namespace

extern "C" {

culayersStatus_t culayersModelCreate(culayersModel_t* model, const char* config_json,
                                     const char* weights_path, culayersStream_t stream) {
  return create_from("culayersModelCreate", model, config_json, false, weights_path, nullptr, stream);
}

culayersStatus_t culayersModelCreateFromFile(culayersModel_t* model, const char* config_path,
                                             const char* weights_path, culayersStream_t stream) {
  return create_from("culayersModelCreateFromFile", model, config_path, true, weights_path, nullptr, stream);
}

void culayersModelOptionsInit(culayersModelOptions_t* options) {
  if (options != nullptr) {
    std::memset(options, 0, sizeof(*options));
  }
}

culayersStatus_t culayersModelCreateWithOptions(culayersModel_t* model, const char* config_json,
                                                const char* weights_path,
                                                const culayersModelOptions_t* options,
                                                culayersStream_t stream) {
  return create_from("culayersModelCreateWithOptions", model, config_json, false, weights_path, options,
                     stream);
}

culayersStatus_t culayersModelCreateFromFileWithOptions(culayersModel_t* model, const char* config_path,
                                                        const char* weights_path,
                                                        const culayersModelOptions_t* options,
                                                        culayersStream_t stream) {
  return create_from("culayersModelCreateFromFileWithOptions", model, config_path, true, weights_path,
                     options, stream);
}

void culayersModelDestroy(culayersModel_t model) {
  delete model;
}

culayersStatus_t culayersModelGetInputDType(culayersModel_t model, culayersDType_t* dtype) {
  if (model == nullptr || dtype == nullptr) {
    return null_arg("culayersModelGetInputDType", model == nullptr ? "model" : "dtype");
  }
  return guarded("culayersModelGetInputDType", [&]() -> culayersStatus_t {
    *dtype = static_cast<culayersDType_t>(static_cast<int>(model->model->layer(0).dtype()));
    return CULAYERS_STATUS_SUCCESS;
  });
}

culayersStatus_t culayersModelGetOutputShape(culayersModel_t model, int input_rank, const int64_t* input_dims,
                                             int* output_rank, int64_t* output_dims) {
  constexpr const char* fn = "culayersModelGetOutputShape";
  if (model == nullptr || input_dims == nullptr || output_rank == nullptr || output_dims == nullptr) {
    return null_arg(fn, model == nullptr         ? "model"
                        : input_dims == nullptr  ? "input_dims"
                        : output_rank == nullptr ? "output_rank"
                                                 : "output_dims");
  }
  return guarded(fn, [&]() -> culayersStatus_t {
    culayers::Shape in{};
    if (Status s = make_shape(fn, "input_dims", input_rank, input_dims, &in); !culayers::ok(s)) {
      return to_c(s);
    }
    culayers::Shape out{};
    if (Status s = model->model->compute_output_shape(in, &out); !culayers::ok(s)) {
      return to_c(s);
    }
    *output_rank = out.rank();
    for (int i = 0; i < out.rank(); ++i) {
      output_dims[i] = out.dim(i);
    }
    return CULAYERS_STATUS_SUCCESS;
  });
}

void culayersModelRunArgsInit(culayersModelRunArgs_t* args) {
  if (args != nullptr) {
    std::memset(args, 0, sizeof(*args));
    args->dtype = CULAYERS_DTYPE_FLOAT32;
    args->phase = CULAYERS_PHASE_INFERENCE;
  }
}

culayersStatus_t culayersModelRun(culayersModel_t model, const culayersModelRunArgs_t* args, int* wrote_mask,
                                  culayersStream_t stream) {
  constexpr const char* fn = "culayersModelRun";
  if (model == nullptr || args == nullptr) {
    return null_arg(fn, model == nullptr ? "model" : "args");
  }
  const int phase = culayers::capi::enum_value(args->phase); // any int a C caller stored
  if (phase != CULAYERS_PHASE_INFERENCE && phase != CULAYERS_PHASE_TRAINING) {
    return to_c(set_error(Status::kErrorInvalidValue, "%s: phase: %d is not a culayersPhase_t", fn, phase));
  }
  const int dtype_raw = culayers::capi::enum_value(args->dtype);
  const auto dtype = static_cast<culayers::DType>(dtype_raw);
  if (!culayers::is_valid(dtype)) {
    return to_c(
        set_error(Status::kErrorInvalidDType, "%s: dtype: %d is not a culayersDType_t", fn, dtype_raw));
  }
  return guarded(fn, [&]() -> culayersStatus_t {
    nn::Sequential& seq = *model->model;
    culayers::Shape in{};
    if (Status s = make_shape(fn, "dims", args->rank, args->dims, &in); !culayers::ok(s)) {
      return to_c(s);
    }
    culayers::Shape out_shape{};
    if (Status s = seq.compute_output_shape(in, &out_shape); !culayers::ok(s)) {
      return to_c(s);
    }
    const culayers::DType out_dtype = seq.layer(seq.size() - 1).dtype();
    // numel() of a valid Shape is at most INT64_MAX; times up to 8 bytes it could still wrap.
    const auto numel = static_cast<std::size_t>(out_shape.numel());
    const std::size_t elem = culayers::dtype_size(out_dtype);
    if (elem != 0 && numel > SIZE_MAX / elem) {
      return to_c(
          set_error(Status::kErrorSizeLimit, "%s: the output has %zu elements: too many bytes", fn, numel));
    }
    const std::size_t y_need = numel * elem;
    if (args->y == nullptr && y_need != 0) {
      return null_arg(fn, "y");
    }
    if (args->y_bytes < y_need) {
      return to_c(set_error(Status::kErrorInvalidValue, "%s: y_bytes: %zu, the output needs %zu", fn,
                            args->y_bytes, y_need));
    }
    const culayers::ConstTensorView x = culayers::ConstTensorView::contiguous(args->x, dtype, in);
    culayers::ConstTensorView mask{};
    if (args->mask != nullptr) {
      if (args->rank < 2) {
        return to_c(
            set_error(Status::kErrorInconsistentArguments, "%s: mask: needs an input of rank >= 2", fn));
      }
      mask = culayers::ConstTensorView::contiguous(args->mask, culayers::DType::kUInt8,
                                                   culayers::Shape{args->dims[0], args->dims[1]});
    }
    nn::CallContext ctx{};
    ctx.stream = stream;
    ctx.phase = static_cast<nn::Phase>(phase);
    // y_mask is written only when the model's output carries a mask (Keras's compute_mask along the chain),
    // [batch, steps] of the output: its capacity (and its overlaps, below) are checked before anything runs.
    bool produces_mask = args->mask != nullptr;
    for (std::size_t i = 0; i < seq.size(); ++i) {
      produces_mask = seq.layer(i).compute_mask(produces_mask);
    }
    const std::size_t m_need = produces_mask && out_shape.rank() >= 2
                                   ? static_cast<std::size_t>(out_shape.dim(0) * out_shape.dim(1))
                                   : 0;
    if (args->y_mask != nullptr && args->y_mask_bytes < m_need) {
      return to_c(set_error(Status::kErrorInvalidValue, "%s: y_mask_bytes: %zu, an output mask needs %zu", fn,
                            args->y_mask_bytes, m_need));
    }
    // The outputs are written after the model ran, so y may equal x and y_mask may equal mask (the copy is
    // then skipped, or lands on consumed input); any other overlap between y, y_mask, x and mask would have
    // one copy read or clobber another's bytes: refused before anything runs.
    const auto x_numel = static_cast<std::size_t>(in.numel());
    const std::size_t x_bytes =
        culayers::dtype_size(dtype) != 0 && x_numel > SIZE_MAX / culayers::dtype_size(dtype)
            ? SIZE_MAX
            : x_numel * culayers::dtype_size(dtype);
    const std::size_t mask_bytes =
        args->mask != nullptr ? static_cast<std::size_t>(args->dims[0] * args->dims[1]) : 0;
    const std::size_t y_mask_used = args->y_mask != nullptr ? m_need : 0;
    const struct {
      const char* a;
      const void* pa;
      std::size_t na;
      const char* b;
      const void* pb;
      std::size_t nb;
      bool equal_allowed;
    } pairs[] = {{"y", args->y, y_need, "x", args->x, x_bytes, true},
                 {"y", args->y, y_need, "mask", args->mask, mask_bytes, false},
                 {"y", args->y, y_need, "y_mask", args->y_mask, y_mask_used, false},
                 {"y_mask", args->y_mask, y_mask_used, "mask", args->mask, mask_bytes, true},
                 {"y_mask", args->y_mask, y_mask_used, "x", args->x, x_bytes, false}};
    for (const auto& p : pairs) {
      if (culayers::kernels::overlaps(p.pa, p.na, p.pb, p.nb) && !(p.equal_allowed && p.pa == p.pb)) {
        return to_c(set_error(Status::kErrorInconsistentArguments, "%s: %s: overlaps %s%s", fn, p.a, p.b,
                              p.equal_allowed ? " (it may only equal it)" : ""));
      }
    }
    nn::LayerOutput out{};
    if (Status s = seq.call(ctx, x, mask, &out); !culayers::ok(s)) {
      return to_c(s);
    }
    const bool copy_mask = args->y_mask != nullptr && out.mask.data() != nullptr;
    if (copy_mask && static_cast<std::size_t>(out.mask.shape().numel()) != m_need) {
      return to_c(
          set_error(Status::kErrorInternal, "%s: the output mask is not [batch, steps] of the output", fn));
    }
    // A model that is the identity in this phase (e.g. only dropout layers in inference) returns x itself:
    // with y == x there is nothing to copy (and a copy onto itself is not allowed).
    if (y_need != 0 && args->y != out.y.data()) {
      if (cudaError_t e = cudaMemcpyAsync(args->y, out.y.data(), y_need, cudaMemcpyDeviceToDevice, stream);
          e != cudaSuccess) {
        (void)cudaGetLastError(); // reported by the status
        return to_c(
            set_error(Status::kErrorCudaRuntime, "%s: copying the output: %s", fn, cudaGetErrorString(e)));
      }
    }
    int wrote = 0;
    if (copy_mask) {
      if (cudaError_t e =
              args->y_mask == out.mask.data()
                  ? cudaSuccess // the input mask passed through into the same buffer
                  : cudaMemcpyAsync(args->y_mask, out.mask.data(), m_need, cudaMemcpyDeviceToDevice, stream);
          e != cudaSuccess) {
        (void)cudaGetLastError(); // reported by the status
        return to_c(set_error(Status::kErrorCudaRuntime, "%s: copying the output mask: %s", fn,
                              cudaGetErrorString(e)));
      }
      wrote = 1;
    }
    if (wrote_mask != nullptr) {
      *wrote_mask = wrote;
    }
    return CULAYERS_STATUS_SUCCESS;
  });
}

culayersStatus_t culayersModelSaveWeights(culayersModel_t model, const char* path, culayersStream_t stream) {
  if (model == nullptr || path == nullptr) {
    return null_arg("culayersModelSaveWeights", model == nullptr ? "model" : "path");
  }
  return guarded("culayersModelSaveWeights",
                 [&]() -> culayersStatus_t { return to_c(model->model->save_weights(path, stream)); });
}

culayersStatus_t culayersModelGetBufferBytes(culayersModel_t model, size_t* bytes) {
  if (model == nullptr || bytes == nullptr) {
    return null_arg("culayersModelGetBufferBytes", model == nullptr ? "model" : "bytes");
  }
  *bytes = model->model->buffer_bytes();
  return CULAYERS_STATUS_SUCCESS;
}

culayersStatus_t culayersModelReleaseBuffers(culayersModel_t model) {
  if (model == nullptr) {
    return null_arg("culayersModelReleaseBuffers", "model");
  }
  model->model->release_buffers();
  return CULAYERS_STATUS_SUCCESS;
}

culayersStatus_t culayersModelGetSummary(culayersModel_t model, char* buffer, size_t capacity,
                                         size_t* length) {
  if (model == nullptr || (buffer == nullptr && capacity != 0)) {
    return null_arg("culayersModelGetSummary", model == nullptr ? "model" : "buffer");
  }
  return guarded("culayersModelGetSummary", [&]() -> culayersStatus_t {
    copy_text(model->model->summary(), buffer, capacity, length);
    return CULAYERS_STATUS_SUCCESS;
  });
}

culayersStatus_t culayersModelGetUnusedConfigKeys(culayersModel_t model, char* buffer, size_t capacity,
                                                  size_t* length) {
  if (model == nullptr || (buffer == nullptr && capacity != 0)) {
    return null_arg("culayersModelGetUnusedConfigKeys", model == nullptr ? "model" : "buffer");
  }
  return guarded("culayersModelGetUnusedConfigKeys", [&]() -> culayersStatus_t {
    std::string text;
    for (const nn::UnusedConfigKey& k : model->unused_keys) {
      text += k.path + (k.keras_key ? " (Keras, not applied)\n" : " (unknown)\n");
    }
    copy_text(text, buffer, capacity, length);
    return CULAYERS_STATUS_SUCCESS;
  });
}

} // extern "C"
