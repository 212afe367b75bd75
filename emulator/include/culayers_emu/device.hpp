// Kernel-side header of the CUDA execution-model emulator: makes CUDA device code compile with a plain
// C++17 compiler and run with CUDA's semantics on the CPU. Included by kernels/common/common.cuh when
// the translation unit is not compiled by nvcc; kernels never include it directly.
//
// Every CUDA thread is a fiber; __syncthreads and warp collectives are yield points completed by the
// block scheduler (emulator/src/scheduler.cpp). Collectives take the caller's source line through
// default arguments so that every reported fault names the kernel and the line.
#pragma once

#if defined(__CUDACC__)
#  error "culayers_emu/device.hpp is for the emulated (non-nvcc) build only"
#endif

// CUDA headers first: they declare threadIdx & co. as extern variables (curand_kernel.h too), which the
// macros below then replace.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <curand_kernel.h>

#include "culayers_emu/device_api.hpp"
#include "culayers_emu/runtime.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---- execution-space qualifiers -------------------------------------------------------------------
// host_defines.h turns them into GNU attributes g++ would warn about; here they mean nothing, except
// __shared__: a function-local static is shared by the fibers of a block (blocks run one at a time on
// one OS thread, and ASan instruments statics, unlike thread_locals). Outside ASan builds those statics
// live in one section that the emulator fills with 0xFF before every block, as a GPU's static shared
// memory starts with garbage in every block: a read of a slot the block never wrote sees NaN / -1, not a
// plausible zero or the previous block's value. (Under ASan they stay ordinary statics: ASan does not
// instrument variables in custom sections.)
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __shared__
#if defined(__SANITIZE_ADDRESS__)
#  define __shared__ static
#else
#  define __shared__ static __attribute__((section("culayers_emu_shared")))
#endif
#undef __constant__
#define __constant__
#undef __managed__
#define __managed__
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __grid_constant__
#define __grid_constant__

// CUDA's warpSize: a constant defined by the emulator library (device_launch_parameters.h, which would
// declare it, is not included by cuda_runtime.h outside nvcc).
extern "C" const int warpSize;

#define threadIdx (::culayers_emu::detail::current_thread().thread_idx)
#define blockIdx (::culayers_emu::detail::current_thread().block_idx)
#define blockDim (::culayers_emu::detail::current_thread().block_dim)
#define gridDim (::culayers_emu::detail::current_thread().grid_dim)

// Dynamic shared memory: the emulator's per-block buffer (exact size, filled with 0xFF before every
// block). Used only through the project's CULAYERS_DYNAMIC_SMEM macro.
#define CULAYERS_EMU_DYNAMIC_SMEM(T, name) T* name = static_cast<T*>(::culayers_emu::detail::dynamic_smem())

// ---- barriers ---------------------------------------------------------------------------------------

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::culayers_emu::detail::barrier(::culayers_emu::detail::BarrierKind::kPlain, 0, file, line);
}
inline int __syncthreads_count(int predicate, const char* file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
  return ::culayers_emu::detail::barrier(::culayers_emu::detail::BarrierKind::kCount, predicate, file, line);
}
inline int __syncthreads_and(int predicate, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  return ::culayers_emu::detail::barrier(::culayers_emu::detail::BarrierKind::kAnd, predicate, file, line);
}
inline int __syncthreads_or(int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::culayers_emu::detail::barrier(::culayers_emu::detail::BarrierKind::kOr, predicate, file, line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  ::culayers_emu::detail::warp_op(::culayers_emu::detail::WarpOpKind::kSyncWarp, mask, 0, 0, 32, file, line);
}

// Memory is sequentially consistent inside the emulator; fences only order the compiler.
inline void __threadfence() {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
inline void __threadfence_block() {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
inline void __threadfence_system() {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

// ---- warp collectives ---------------------------------------------------------------------------

namespace culayers_emu::detail {

template <class T>
std::uint64_t to_bits(const T& v) {
  static_assert(sizeof(T) <= 8, "the emulator shuffles values of at most 8 bytes, as CUDA does");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

template <class T>
T from_bits(std::uint64_t bits) {
  T v;
  std::memcpy(static_cast<void*>(&v), &bits, sizeof(T));
  return v;
}

template <class T>
T shuffle(WarpOpKind kind, unsigned mask, T var, int arg, int width, const char* file, int line) {
  return from_bits<T>(warp_op(kind, mask, to_bits(var), arg, width, file, line));
}

} // namespace culayers_emu::detail

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32, const char* file = __builtin_FILE(),
              int line = __builtin_LINE()) {
  return ::culayers_emu::detail::shuffle(::culayers_emu::detail::WarpOpKind::kShfl, mask, var, src_lane,
                                         width, file, line);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                 int line = __builtin_LINE()) {
  return ::culayers_emu::detail::shuffle(::culayers_emu::detail::WarpOpKind::kShflUp, mask, var,
                                         static_cast<int>(delta), width, file, line);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                   int line = __builtin_LINE()) {
  return ::culayers_emu::detail::shuffle(::culayers_emu::detail::WarpOpKind::kShflDown, mask, var,
                                         static_cast<int>(delta), width, file, line);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32, const char* file = __builtin_FILE(),
                  int line = __builtin_LINE()) {
  return ::culayers_emu::detail::shuffle(::culayers_emu::detail::WarpOpKind::kShflXor, mask, var, lane_mask,
                                         width, file, line);
}
inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  return static_cast<unsigned>(::culayers_emu::detail::warp_op(::culayers_emu::detail::WarpOpKind::kBallot,
                                                               mask, predicate != 0, 0, 32, file, line));
}
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return static_cast<int>(::culayers_emu::detail::warp_op(::culayers_emu::detail::WarpOpKind::kAny, mask,
                                                          predicate != 0, 0, 32, file, line));
}
inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return static_cast<int>(::culayers_emu::detail::warp_op(::culayers_emu::detail::WarpOpKind::kAll, mask,
                                                          predicate != 0, 0, 32, file, line));
}
template <class T>
unsigned __match_any_sync(unsigned mask, T value, const char* file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  return static_cast<unsigned>(::culayers_emu::detail::warp_op(::culayers_emu::detail::WarpOpKind::kMatchAny,
                                                               mask, ::culayers_emu::detail::to_bits(value),
                                                               0, 32, file, line));
}
// The emulator cannot see convergence: this is the set of lanes of the warp that have not exited.
inline unsigned __activemask() {
  return ::culayers_emu::detail::active_mask();
}

// ---- atomics (real atomics, so TSan sees them as synchronized) --------------------------------------

namespace culayers_emu::detail {

template <class T, class F>
T atomic_update(T* address, F f) {
  static_assert(sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8, "unsupported atomic width");
  using Bits = std::conditional_t<sizeof(T) == 2, std::uint16_t,
                                  std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>>;
  Bits* word = reinterpret_cast<Bits*>(address);
  Bits expected = __atomic_load_n(word, __ATOMIC_RELAXED);
  for (;;) {
    T old = from_bits<T>(expected);
    T next = f(old);
    Bits desired = static_cast<Bits>(to_bits(next));
    if (__atomic_compare_exchange_n(word, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
      return old;
    }
  }
}

} // namespace culayers_emu::detail

#define CULAYERS_EMU_INTEGER_ATOMICS(T)                                                                      \
  inline T atomicAdd(T* a, T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {          \
    ::culayers_emu::detail::check_atomic(a, sizeof(T), file, line);                                          \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                                       \
  }                                                                                                          \
  inline T atomicSub(T* a, T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {          \
    ::culayers_emu::detail::check_atomic(a, sizeof(T), file, line);                                          \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                                       \
  }                                                                                                          \
  inline T atomicExch(T* a, T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {         \
    ::culayers_emu::detail::check_atomic(a, sizeof(T), file, line);                                          \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                                      \
  }                                                                                                          \
  inline T atomicAnd(T* a, T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {          \
    ::culayers_emu::detail::check_atomic(a, sizeof(T), file, line);                                          \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                                       \
  }                                                                                                          \
  inline T atomicOr(T* a, T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {           \
    ::culayers_emu::detail::check_atomic(a, sizeof(T), file, line);                                          \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                                        \
  }                                                                                                          \
  inline T atomicXor(T* a, T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {          \
    ::culayers_emu::detail::check_atomic(a, sizeof(T), file, line);                                          \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                                       \
  }                                                                                                          \
  inline T atomicMax(T* a, T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {          \
    ::culayers_emu::detail::check_atomic(a, sizeof(T), file, line);                                          \
    return ::culayers_emu::detail::atomic_update(a, [v](T o) { return o < v ? v : o; });                     \
  }                                                                                                          \
  inline T atomicMin(T* a, T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {          \
    ::culayers_emu::detail::check_atomic(a, sizeof(T), file, line);                                          \
    return ::culayers_emu::detail::atomic_update(a, [v](T o) { return v < o ? v : o; });                     \
  }                                                                                                          \
  inline T atomicCAS(T* a, T compare, T v, const char* file = __builtin_FILE(),                              \
                     int line = __builtin_LINE()) {                                                          \
    ::culayers_emu::detail::check_atomic(a, sizeof(T), file, line);                                          \
    __atomic_compare_exchange_n(a, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                  \
    return compare;                                                                                          \
  }

CULAYERS_EMU_INTEGER_ATOMICS(int)
CULAYERS_EMU_INTEGER_ATOMICS(unsigned int)
CULAYERS_EMU_INTEGER_ATOMICS(unsigned long long)
CULAYERS_EMU_INTEGER_ATOMICS(long long)
#undef CULAYERS_EMU_INTEGER_ATOMICS

inline unsigned short atomicCAS(unsigned short* a, unsigned short compare, unsigned short v,
                                const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::culayers_emu::detail::check_atomic(a, sizeof(*a), file, line);
  __atomic_compare_exchange_n(a, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;
}
inline unsigned atomicInc(unsigned* a, unsigned limit, const char* file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  ::culayers_emu::detail::check_atomic(a, sizeof(*a), file, line);
  return ::culayers_emu::detail::atomic_update(a, [limit](unsigned o) { return o >= limit ? 0u : o + 1u; });
}
inline unsigned atomicDec(unsigned* a, unsigned limit, const char* file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  ::culayers_emu::detail::check_atomic(a, sizeof(*a), file, line);
  return ::culayers_emu::detail::atomic_update(
      a, [limit](unsigned o) { return (o == 0u || o > limit) ? limit : o - 1u; });
}
inline float atomicAdd(float* a, float v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::culayers_emu::detail::check_atomic(a, sizeof(*a), file, line);
  return ::culayers_emu::detail::atomic_update(a, [v](float o) { return o + v; });
}
inline double atomicAdd(double* a, double v, const char* file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
  ::culayers_emu::detail::check_atomic(a, sizeof(*a), file, line);
  return ::culayers_emu::detail::atomic_update(a, [v](double o) { return o + v; });
}
inline float atomicExch(float* a, float v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::culayers_emu::detail::check_atomic(a, sizeof(*a), file, line);
  return ::culayers_emu::detail::atomic_update(a, [v](float) { return v; });
}
inline __half atomicAdd(__half* a, __half v, const char* file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
  ::culayers_emu::detail::check_atomic(a, sizeof(*a), file, line);
  return ::culayers_emu::detail::atomic_update(
      a, [v](__half o) { return __float2half_rn(__half2float(o) + __half2float(v)); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v, const char* file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
  ::culayers_emu::detail::check_atomic(a, sizeof(*a), file, line);
  return ::culayers_emu::detail::atomic_update(
      a, [v](__nv_bfloat16 o) { return __float2bfloat16_rn(__bfloat162float(o) + __bfloat162float(v)); });
}

// ---- cache-hinted loads and stores: plain accesses here ------------------------------------------------

template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcg(const T* p) {
  return *p;
}
template <class T>
T __ldca(const T* p) {
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  return *p;
}
template <class T>
T __ldlu(const T* p) {
  return *p;
}
template <class T>
void __stcg(T* p, T v) {
  *p = v;
}
template <class T>
void __stcs(T* p, T v) {
  *p = v;
}
template <class T>
void __stwb(T* p, T v) {
  *p = v;
}
template <class T>
void __stwt(T* p, T v) {
  *p = v;
}

// ---- math intrinsics (correctly rounded host math: results differ from the GPU's approximations,
// so cross-backend comparisons need tolerances) ----------------------------------------------------

inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline double rsqrt(double x) {
  return 1.0 / std::sqrt(x);
}
inline float rcbrtf(float x) {
  return 1.0f / std::cbrt(x);
}
inline float __expf(float x) {
  return std::exp(x);
}
inline float __exp10f(float x) {
  return std::pow(10.0f, x);
}
inline float __logf(float x) {
  return std::log(x);
}
inline float __log2f(float x) {
  return std::log2(x);
}
inline float __log10f(float x) {
  return std::log10(x);
}
inline float __sinf(float x) {
  return std::sin(x);
}
inline float __cosf(float x) {
  return std::cos(x);
}
inline float __tanf(float x) {
  return std::tan(x);
}
inline float __powf(float x, float y) {
  return std::pow(x, y);
}
inline float __fdividef(float x, float y) {
  return x / y;
}
inline float fdividef(float x, float y) {
  return x / y;
}
inline float __frcp_rn(float x) {
  return 1.0f / x;
}
inline float __fsqrt_rn(float x) {
  return std::sqrt(x);
}
inline float __frsqrt_rn(float x) {
  return 1.0f / std::sqrt(x);
}
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fsub_rn(float a, float b) {
  return a - b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fdiv_rn(float a, float b) {
  return a / b;
}
inline float __fmaf_rn(float a, float b, float c) {
  return std::fma(a, b, c);
}
inline double __dadd_rn(double a, double b) {
  return a + b;
}
inline double __dmul_rn(double a, double b) {
  return a * b;
}
inline double __fma_rn(double a, double b, double c) {
  return std::fma(a, b, c);
}
inline float __saturatef(float x) {
  return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x));
}
inline int __float2int_rn(float x) {
  return static_cast<int>(std::nearbyint(x));
}
inline int __float2int_rz(float x) {
  return static_cast<int>(std::trunc(x));
}
inline int __float2int_rd(float x) {
  return static_cast<int>(std::floor(x));
}
inline int __float2int_ru(float x) {
  return static_cast<int>(std::ceil(x));
}
inline unsigned __float2uint_rn(float x) {
  return static_cast<unsigned>(std::nearbyint(x));
}
inline unsigned __float2uint_rz(float x) {
  return static_cast<unsigned>(std::trunc(x));
}
inline long long __float2ll_rn(float x) {
  return static_cast<long long>(std::nearbyint(x));
}
inline float __int2float_rn(int x) {
  return static_cast<float>(x);
}
inline float __uint2float_rn(unsigned x) {
  return static_cast<float>(x);
}
inline float __ll2float_rn(long long x) {
  return static_cast<float>(x);
}
inline double __ll2double_rn(long long x) {
  return static_cast<double>(x);
}
inline float __int_as_float(int x) {
  return ::culayers_emu::detail::from_bits<float>(static_cast<unsigned>(x));
}
inline int __float_as_int(float x) {
  return static_cast<int>(::culayers_emu::detail::to_bits(x));
}
inline float __uint_as_float(unsigned x) {
  return ::culayers_emu::detail::from_bits<float>(x);
}
inline unsigned __float_as_uint(float x) {
  return static_cast<unsigned>(::culayers_emu::detail::to_bits(x));
}
inline long long __double_as_longlong(double x) {
  return static_cast<long long>(::culayers_emu::detail::to_bits(x));
}
inline double __longlong_as_double(long long x) {
  return ::culayers_emu::detail::from_bits<double>(static_cast<std::uint64_t>(x));
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
inline int __popcll(unsigned long long x) {
  return __builtin_popcountll(x);
}
inline int __clz(int x) {
  return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x));
}
inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
inline int __ffsll(long long x) {
  return __builtin_ffsll(x);
}
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) {
    r |= ((x >> i) & 1u) << (31 - i);
  }
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<std::uint64_t>(a) * b) >> 32);
}
inline int __mulhi(int a, int b) {
  return static_cast<int>((static_cast<std::int64_t>(a) * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline long long __mul64hi(long long a, long long b) {
  return static_cast<long long>((static_cast<__int128>(a) * b) >> 64);
}

// ---- half / bfloat16 pieces cuda_fp16.h and cuda_bf16.h leave device-only -------------------------

#define CULAYERS_EMU_LOW_PRECISION_MATH(T, TO_FLOAT, FROM_FLOAT)                                             \
  inline T __hfma(T a, T b, T c) {                                                                           \
    return FROM_FLOAT(                                                                                       \
        static_cast<float>(std::fma(static_cast<double>(TO_FLOAT(a)), static_cast<double>(TO_FLOAT(b)),      \
                                    static_cast<double>(TO_FLOAT(c)))));                                     \
  }                                                                                                          \
  inline T hexp(T a) {                                                                                       \
    return FROM_FLOAT(std::exp(TO_FLOAT(a)));                                                                \
  }                                                                                                          \
  inline T hlog(T a) {                                                                                       \
    return FROM_FLOAT(std::log(TO_FLOAT(a)));                                                                \
  }                                                                                                          \
  inline T hsqrt(T a) {                                                                                      \
    return FROM_FLOAT(std::sqrt(TO_FLOAT(a)));                                                               \
  }                                                                                                          \
  inline T hrsqrt(T a) {                                                                                     \
    return FROM_FLOAT(1.0f / std::sqrt(TO_FLOAT(a)));                                                        \
  }                                                                                                          \
  inline T hrcp(T a) {                                                                                       \
    return FROM_FLOAT(1.0f / TO_FLOAT(a));                                                                   \
  }                                                                                                          \
  inline T htanh(T a) {                                                                                      \
    return FROM_FLOAT(std::tanh(TO_FLOAT(a)));                                                               \
  }

CULAYERS_EMU_LOW_PRECISION_MATH(__half, __half2float, __float2half_rn)
CULAYERS_EMU_LOW_PRECISION_MATH(__nv_bfloat16, __bfloat162float, __float2bfloat16_rn)
#undef CULAYERS_EMU_LOW_PRECISION_MATH

// ---- host-side templates the CUDA headers define only under nvcc -----------------------------------

template <class T>
cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}
template <class T>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, T* entry) {
  return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(entry));
}
template <class T>
cudaError_t cudaMemcpyToSymbol(const T& symbol, const void* src, std::size_t count, std::size_t offset = 0,
                               cudaMemcpyKind kind = cudaMemcpyHostToDevice) {
  return ::cudaMemcpyToSymbol(static_cast<const void*>(&symbol), src, count, offset, kind);
}
template <class T>
cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, std::size_t count, std::size_t offset = 0,
                                 cudaMemcpyKind kind = cudaMemcpyDeviceToHost) {
  return ::cudaMemcpyFromSymbol(dst, static_cast<const void*>(&symbol), count, offset, kind);
}
