// Dropout kernels for one dtype (__nv_bfloat16): one instantiation group per source file (parallel builds).
#include "kernels/dropout/dropout_dispatch.cuh"

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace dropout {

template Status launch_dropout<__nv_bfloat16>(const LaunchPlan& plan, const __nv_bfloat16* in,
                                              __nv_bfloat16* out, std::uint8_t* mask, DropoutState* state,
                                              cudaStream_t stream, const char* op);

} // namespace dropout
} // namespace kernels
CULAYERS_NAMESPACE_END
