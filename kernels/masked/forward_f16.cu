// Forward masked-reduction kernels instantiated for __half (one dtype per file: parallel builds).
#include "kernels/masked/forward_kernels.cuh"

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace masked {

template Status launch_forward<__half>(AccKind kind, const ForwardLaunch& launch, const ForwardParams& params,
                                       cudaStream_t stream);

} // namespace masked
} // namespace kernels
CULAYERS_NAMESPACE_END
