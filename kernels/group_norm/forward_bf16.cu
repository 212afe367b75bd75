// Group-normalization forward kernels instantiated for __nv_bfloat16 (one dtype and direction per file:
// parallel builds).
#include "kernels/group_norm/group_norm_kernels.cuh"

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace group_norm {

template Status launch_forward<__nv_bfloat16>(const Plan& plan, const ForwardParams& params,
                                              cudaStream_t stream);
template Residency residency<__nv_bfloat16, false>(::culayers::group_norm::Path path, int vec, bool cl,
                                                   int threads);

} // namespace group_norm
} // namespace kernels
CULAYERS_NAMESPACE_END
