// Dropout kernels for one dtype (float): one instantiation group per source file (parallel builds).
#include "kernels/dropout/dropout_dispatch.cuh"

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace dropout {

template Status launch_dropout<float>(const LaunchPlan& plan, const float* in, float* out, std::uint8_t* mask,
                                      DropoutState* state, cudaStream_t stream, const char* op);

} // namespace dropout
} // namespace kernels
CULAYERS_NAMESPACE_END
