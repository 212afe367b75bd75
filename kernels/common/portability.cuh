// One kernel source, two builds: nvcc (the CUDA library) and g++ against the emulator (tests without a
// GPU). This header selects the device headers and qualifiers for each; the few GPU-only branches
// (__CUDACC__ / __CUDA_ARCH__) elsewhere in kernels/common and kernels/dropout (philox.cuh,
// dropout_kernels.cuh) have portable fallbacks (docs/architecture.md, "Rules for kernel code"). Kernels
// get hidden visibility from the build (CMake's visibility presets), so two copies of the library in one
// process do not collide.
//
// A third, host-only use: a file compiled by the host compiler in a CUDA build (neither __CUDACC__ nor
// CULAYERS_EMULATED) may include the headers whose code is all __host__ __device__ (numeric.cuh,
// dropout/philox.cuh) to run that code on the host, e.g. a test's CPU reference. cuda_runtime.h then
// gives __host__/__device__/__forceinline__ their host meaning; device-only code does not compile there.
#pragma once

#if defined(__CUDACC__)
#  include <cuda_runtime.h>
#  include <cuda_fp16.h>
#  include <cuda_bf16.h>
#  define CULAYERS_EMULATED_BUILD 0
#elif defined(CULAYERS_EMULATED)
#  include "culayers_emu/device.hpp"
#  define CULAYERS_EMULATED_BUILD 1
#else
#  include <cuda_runtime.h>
#  include <cuda_fp16.h>
#  include <cuda_bf16.h>
#  define CULAYERS_EMULATED_BUILD 0
#endif

#define CULAYERS_GLOBAL __global__
#define CULAYERS_DEVICE __device__ __forceinline__
#define CULAYERS_HD __host__ __device__ __forceinline__

// Declares `T* name` pointing at the block's dynamic shared memory (16-byte aligned at least). The only
// way kernels may reach dynamic shared memory.
#if defined(__CUDACC__)
#  define CULAYERS_DYNAMIC_SMEM(T, name)                                                                     \
    extern __shared__ __align__(16) unsigned char culayers_dynamic_smem_[];                                  \
    T* name = reinterpret_cast<T*>(culayers_dynamic_smem_)
#else
#  define CULAYERS_DYNAMIC_SMEM(T, name) CULAYERS_EMU_DYNAMIC_SMEM(T, name)
#endif

// `#pragma unroll` through a macro so that g++ builds need no -Wno-unknown-pragmas in project code.
#if defined(__CUDACC__)
#  define CULAYERS_PRAGMA_UNROLL _Pragma("unroll")
#else
#  define CULAYERS_PRAGMA_UNROLL
#endif
