// The one header kernels include: portability (CUDA or emulator), the launch helper, the dynamic
// shared memory macro, dtype conversions, vectorized and checked loads/stores, and warp/block
// reductions. Kernel code uses nothing else from the toolchain (docs/architecture.md, "Rules for kernel
// code").
#pragma once

#include "kernels/common/portability.cuh"
#include "kernels/common/launch.cuh"
#include "kernels/common/numeric.cuh"
#include "kernels/common/vector_io.cuh"
#include "kernels/common/reduce.cuh"
