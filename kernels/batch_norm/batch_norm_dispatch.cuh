// Definition of launch_apply<T>: the runtime (vector width, shared staging, planes) -> kernel instantiation
// switch. Included only by apply_f32.cu, apply_f16.cu and apply_bf16.cu, one dtype each, so that the
// instantiations of the three dtypes compile in parallel.
#pragma once

#include "kernels/batch_norm/batch_norm_kernels.cuh"

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace batch_norm {

template <class T, int V>
cudaError_t launch_apply_width(const ApplyPlan& plan, const ApplyParams& params, cudaStream_t stream) {
  const dim3 grid(plan.blocks);
  const dim3 block(kThreads);
  if (plan.planes != 0) {
    if (plan.shared != 0) {
      return CULAYERS_LAUNCH((batch_norm_apply_kernel<T, V, true, true>), grid, block, plan.smem, stream,
                             params);
    }
    return CULAYERS_LAUNCH((batch_norm_apply_kernel<T, V, false, true>), grid, block, 0, stream, params);
  }
  if (plan.shared != 0) {
    return CULAYERS_LAUNCH((batch_norm_apply_kernel<T, V, true, false>), grid, block, plan.smem, stream,
                           params);
  }
  return CULAYERS_LAUNCH((batch_norm_apply_kernel<T, V, false, false>), grid, block, 0, stream, params);
}

template <class T>
Status launch_apply(const ApplyPlan& plan, const ApplyParams& params, cudaStream_t stream) {
  constexpr const char* kOp = "batch_norm_apply";
  switch (plan.vec) {
  case 1:
    return check_launch(launch_apply_width<T, 1>(plan, params, stream), kOp);
  case 2:
    return check_launch(launch_apply_width<T, 2>(plan, params, stream), kOp);
  case 4:
    return check_launch(launch_apply_width<T, 4>(plan, params, stream), kOp);
  case 8:
    if constexpr (sizeof(T) * 8 <= 16) {
      return check_launch(launch_apply_width<T, 8>(plan, params, stream), kOp);
    }
    break;
  default:
    break;
  }
  return ::culayers::detail::set_error(Status::kErrorInternal,
                                       "%s: vector width %d is not instantiated for %zu-byte elements", kOp,
                                       plan.vec, sizeof(T));
}

} // namespace batch_norm
} // namespace kernels
CULAYERS_NAMESPACE_END
