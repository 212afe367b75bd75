// The layer front end in one include: tensors and allocators, initializers, the Layer base, every
// built-in layer, Sequential and safetensors I/O (namespace culayers::nn). The ops alone:
// culayers/culayers.hpp.
#ifndef CULAYERS_NN_HPP_
#define CULAYERS_NN_HPP_

#include "culayers/nn/core_layers.hpp"
#include "culayers/nn/initializer.hpp"
#include "culayers/nn/layer.hpp"
#include "culayers/nn/normalization.hpp"
#include "culayers/nn/safetensors.hpp"
#include "culayers/nn/sequential.hpp"
#include "culayers/nn/tensor.hpp"

#endif // CULAYERS_NN_HPP_
