// The built-in layer classes in the layer registry (register_builtin_layers, culayers/nn/sequential.hpp).
// Registration is explicit and lazy rather than done by static objects: a static library drops object
// files nothing references, and with them their registrations.
#include "culayers/nn/core_layers.hpp"
#include "culayers/nn/layer.hpp"
#include "culayers/nn/normalization.hpp"
#include "culayers/nn/sequential.hpp"

#include <mutex>

CULAYERS_NAMESPACE_BEGIN
namespace nn {

void register_builtin_layers() {
  static std::once_flag once;
  std::call_once(once, [] {
    const struct {
      const char* name;
      LayerFactory factory;
    } classes[] = {
        {"Masking", &Masking::from_config},
        {"Dropout", &Dropout::from_config},
        {"DecayingDropout", &DecayingDropout::from_config},
        {"GroupNormalization", &GroupNormalization::from_config},
        // TensorFlow Addons' tfa.layers.GroupNormalization (tf.keras 2 models before Keras had one): the
        // same keys and computation; the layer is written back as Keras's "GroupNormalization".
        {"Addons>GroupNormalization", &GroupNormalization::from_config},
        {"BatchNormalization", &BatchNormalization::from_config},
        {"MaskedGlobalPooling1D", &MaskedGlobalPooling1D::from_config},
        // Keras's GlobalAveragePooling1D: with a mask it is the masked mean over the steps.
        {"GlobalAveragePooling1D", &MaskedGlobalPooling1D::from_keras_average_config},
        {"MaskedFlatten", &MaskedFlatten::from_config},
    };
    for (const auto& c : classes) {
      // A class the user registered first (a replacement) is kept: test and insert under one lock.
      detail::register_layer_class_if_absent(c.name, c.factory);
    }
  });
}

} // namespace nn
CULAYERS_NAMESPACE_END
