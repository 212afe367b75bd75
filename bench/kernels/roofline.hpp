// Roofline kernels for the benchmarks: the limits every memory-bound op is measured against.
//
// - roofline_copy: a vectorized device-to-device copy (the bandwidth ceiling for ops that read and write).
// - roofline_reduce_sum: a read-only sum (the ceiling for reductions): one launch reduces grid-stride
//   ranges into per-block partials, a second one-block launch sums the partials in a fixed order.
// - roofline_barrier: a __syncthreads-heavy kernel (barrier cost on a GPU; context-switch cost on the
//   emulator).
// - roofline_fill: deterministic pseudo-random inputs whose values the host can regenerate
//   (roofline_fill_value), so a reference never needs the device buffer copied back.
//
// The same source builds with nvcc (culayers_roofline_cuda) and with g++ through the emulator
// (culayers_roofline_emulated). Every function enqueues on the caller's stream, never allocates, never
// synchronizes, and returns a Status (the detailed message is in culayers::last_error_message()).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include <culayers/status.hpp>

namespace culayers {
namespace bench {

// Threads per block of every roofline kernel (a multiple of the warp size).
constexpr int kRooflineThreads = 256;
// Independent vector loads each thread keeps in flight per loop trip.
constexpr int kRooflineUnroll = 4;

// The value roofline_fill writes at index i: uniform in [-1, 1), exact in float (24 random bits).
float roofline_fill_value(std::uint64_t seed, std::int64_t i);

// x[i] = roofline_fill_value(seed, i) for i in [0, n). Uses at most max_blocks blocks.
Status roofline_fill(float* x, std::int64_t n, std::uint64_t seed, int max_blocks, cudaStream_t stream);

// Vector width (floats per access: 4, 2 or 1) the copy uses for these pointers: the widest access both
// pointers are aligned for. Misaligned views fall back to narrower accesses, never to an error.
int roofline_copy_vec_width(const float* dst, const float* src);

// dst[i] = src[i] for i in [0, n). dst and src must not overlap. Uses at most max_blocks blocks
// (grid-stride loop), each of kRooflineThreads threads. n == 0 launches nothing.
Status roofline_copy(float* dst, const float* src, std::int64_t n, int max_blocks, cudaStream_t stream);

// Workspace roofline_reduce_sum needs for a grid of at most max_blocks blocks (one float per block).
std::size_t roofline_reduce_workspace_bytes(int max_blocks);

// *out = sum of x[0, n) in float arithmetic. Deterministic: for a given n, max_blocks and alignment of x
// the summation order is fixed, so repeated runs give bit-identical results. workspace must hold
// roofline_reduce_workspace_bytes(max_blocks) bytes and be 4-byte aligned. n == 0 writes 0.
Status roofline_reduce_sum(const float* x, std::int64_t n, float* out, void* workspace,
                           std::size_t workspace_bytes, int max_blocks, cudaStream_t stream);

// Each block runs `rounds` rounds of: write a shared slot, __syncthreads, read the neighbour's slot,
// __syncthreads (two barriers per round). Afterwards out[b * threads + t] ==
// roofline_barrier_expected(t, threads, rounds) for every block b. threads <= 1024.
Status roofline_barrier(unsigned* out, int blocks, int threads, int rounds, cudaStream_t stream);

// The value roofline_barrier writes for thread t.
unsigned roofline_barrier_expected(int t, int threads, int rounds);

} // namespace bench
} // namespace culayers
