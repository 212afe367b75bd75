// Helpers the layer tests share: reading views and weights back, shape text, the seed note.
#pragma once

#include "culayers/nn/layer.hpp"

#include "tests/support/test_support.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <string>
#include <vector>

namespace culayers::test::nn_util {

using culayers::test::seed_note; // "base seed N (CULAYERS_TEST_SEED)"

/// "(2, 3, 8)".
inline std::string shape_str(const culayers::Shape& s) {
  std::string out = "(";
  for (int i = 0; i < s.rank(); ++i) {
    out += (i > 0 ? ", " : "") + std::to_string(s.dim(i));
  }
  return out + ")";
}

inline culayers::ConstTensorView view_of(const void* p, culayers::DType dtype, const culayers::Shape& shape) {
  return culayers::ConstTensorView::contiguous(p, dtype, shape);
}

/// The view's elements as T after the device is idle.
template <class T>
std::vector<T> download(const culayers::ConstTensorView& v) {
  std::vector<T> host(static_cast<std::size_t>(v.numel()));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (!host.empty()) {
    EXPECT_EQ(cudaMemcpy(host.data(), v.data(), host.size() * sizeof(T), cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return host;
}

/// Fills a layer's previous output (y and its mask, when there is one) with 0xFF bytes (NaN, 255) after the
/// device is idle, so a later call that should rewrite them cannot pass by leaving the earlier call's values.
inline void poison(const culayers::nn::LayerOutput& out) {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (const culayers::ConstTensorView* v : {&out.y, &out.mask}) {
    if (v->data() != nullptr && v->numel() > 0) {
      EXPECT_EQ(cudaMemset(const_cast<void*>(v->data()), 0xff, static_cast<std::size_t>(v->storage_bytes())),
                cudaSuccess);
    }
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

/// A float32 weight's values (empty if the layer has no such weight).
inline std::vector<float> weight_floats(const culayers::nn::Layer& layer, const char* name) {
  const culayers::nn::Weight* w = layer.find_weight(name);
  if (w == nullptr) {
    return {};
  }
  std::vector<float> v(static_cast<std::size_t>(w->value.numel()));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(w->value.copy_to_host(v.data(), v.size() * sizeof(float), nullptr), culayers::Status::kSuccess);
  EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  return v;
}

} // namespace culayers::test::nn_util
