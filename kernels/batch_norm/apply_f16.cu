// Batch-normalization apply kernels for one dtype (float16): one instantiation group per source file
// (parallel builds).
#include "kernels/batch_norm/batch_norm_dispatch.cuh"

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace batch_norm {

template Status launch_apply<__half>(const ApplyPlan& plan, const ApplyParams& params, cudaStream_t stream);

} // namespace batch_norm
} // namespace kernels
CULAYERS_NAMESPACE_END
