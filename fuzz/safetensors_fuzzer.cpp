// libFuzzer target for the safetensors reader (layers/safetensors.cpp), which parses the header of every
// weights file a model loads. Built and run by scripts/fuzz.sh with clang's -fsanitize=fuzzer, address and
// undefined; the reader is host code with no CUDA call, so it is compiled here on its own.
//
// Beyond "no crash, no sanitizer report": an image the reader accepts must serialize again, and the
// serialized image must parse back to the same contents (names, dtypes, shapes, bytes, metadata).
#include "culayers/nn/safetensors.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "safetensors_fuzzer: %s: %s\n", what, culayers::last_error_message());
  std::abort();
}

bool same(const culayers::nn::SafetensorsFile& a, const culayers::nn::SafetensorsFile& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    const culayers::nn::SafetensorsTensor& x = a.tensors[i];
    const culayers::nn::SafetensorsTensor& y = b.tensors[i];
    if (x.name != y.name || x.dtype != y.dtype || !(x.shape == y.shape) || x.data != y.data) {
      return false;
    }
  }
  return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  culayers::nn::SafetensorsFile file;
  if (culayers::nn::parse_safetensors(data, size, &file) != culayers::Status::kSuccess) {
    return 0;
  }
  std::vector<std::uint8_t> image;
  if (culayers::nn::serialize_safetensors(file, &image) != culayers::Status::kSuccess) {
    fail("an accepted image does not serialize");
  }
  culayers::nn::SafetensorsFile again;
  if (culayers::nn::parse_safetensors(image.data(), image.size(), &again) != culayers::Status::kSuccess) {
    fail("a serialized image does not parse");
  }
  if (!same(file, again)) {
    fail("a serialized image parses to other contents");
  }
  return 0;
}
