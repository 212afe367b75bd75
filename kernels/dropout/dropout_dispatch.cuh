// Definition of launch_dropout<T>: the runtime (path, vector width) -> kernel instantiation switch.
// Included only by dropout_f32.cu, dropout_f16.cu and dropout_bf16.cu, one dtype each, so that the
// instantiations of the three dtypes compile in parallel.
#pragma once

#include "kernels/dropout/dropout_kernels.cuh"

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace dropout {

template <class T, int V>
cudaError_t launch_dropout_width(const LaunchPlan& plan, const T* in, T* out, std::uint8_t* mask,
                                 DropoutState* state, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(plan.blocks));
  const dim3 block(kThreads);
  switch (plan.path) {
  case Path::kPlain:
    return CULAYERS_LAUNCH((dropout_contig_kernel<T, V, false>), grid, block, 0, stream, in, out, mask, state,
                           plan.args);
  case Path::kRow:
    return CULAYERS_LAUNCH((dropout_contig_kernel<T, V, true>), grid, block, 0, stream, in, out, mask, state,
                           plan.args);
  case Path::kRun:
    return CULAYERS_LAUNCH((dropout_run_kernel<T, V>), grid, block, 0, stream, in, out, mask, state,
                           plan.args);
  case Path::kGeneric:
    break; // width-independent: launch_dropout
  }
  return cudaErrorInvalidValue;
}

template <class T>
Status launch_dropout(const LaunchPlan& plan, const T* in, T* out, std::uint8_t* mask, DropoutState* state,
                      cudaStream_t stream, const char* op) {
  if (plan.path == Path::kGeneric) {
    const dim3 grid(static_cast<unsigned>(plan.blocks));
    const dim3 block(kThreads);
    if (plan.wide) {
      return check_launch(CULAYERS_LAUNCH((dropout_generic_kernel<T, true>), grid, block, 0, stream, in, out,
                                          mask, state, plan.args),
                          op);
    }
    return check_launch(CULAYERS_LAUNCH((dropout_generic_kernel<T, false>), grid, block, 0, stream, in, out,
                                        mask, state, plan.args),
                        op);
  }
  switch (plan.vec) {
  case 1:
    return check_launch(launch_dropout_width<T, 1>(plan, in, out, mask, state, stream), op);
  case 2:
    return check_launch(launch_dropout_width<T, 2>(plan, in, out, mask, state, stream), op);
  case 4:
    return check_launch(launch_dropout_width<T, 4>(plan, in, out, mask, state, stream), op);
  case 8:
    if constexpr (sizeof(T) * 8 <= 16) {
      return check_launch(launch_dropout_width<T, 8>(plan, in, out, mask, state, stream), op);
    }
    break;
  default:
    break;
  }
  return culayers::detail::set_error(Status::kErrorInternal,
                                     "%s: vector width %d is not instantiated for %zu-byte elements", op,
                                     plan.vec, sizeof(T));
}

} // namespace dropout
} // namespace kernels
CULAYERS_NAMESPACE_END
