// The emulator's CUDA features, each against results worked out by hand.
#include "tests/emulator/emulator_test_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

namespace culayers::test {
namespace {

CULAYERS_GLOBAL void index_kernel(int* out) {
  const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  int* o = out + 4 * (bid * threads + tid);
  o[0] = static_cast<int>(threadIdx.x + 10 * threadIdx.y + 100 * threadIdx.z);
  o[1] = static_cast<int>(blockIdx.x + 10 * blockIdx.y + 100 * blockIdx.z);
  o[2] = static_cast<int>(blockDim.x + 10 * blockDim.y + 100 * blockDim.z);
  o[3] = static_cast<int>(gridDim.x + 10 * gridDim.y + 100 * gridDim.z) + 1000 * warpSize;
}

TEST(EmulatorFeatures, ThreeDimensionalIndices) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const int total = 12 * 24;
  DeviceBuffer<int> out(4 * total);
  CULAYERS_ASSERT_CUDA(finish(CULAYERS_LAUNCH(index_kernel, grid, block, 0, nullptr, out.get())));
  const auto h = out.download();
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned bx = 0; bx < 3; ++bx)
        for (unsigned tz = 0; tz < 2; ++tz)
          for (unsigned ty = 0; ty < 3; ++ty)
            for (unsigned tx = 0; tx < 4; ++tx) {
              const unsigned bid = bx + 3 * (by + 2 * bz);
              const unsigned tid = tx + 4 * (ty + 3 * tz);
              const int* o = &h[4 * (bid * 24 + tid)];
              EXPECT_EQ(o[0], static_cast<int>(tx + 10 * ty + 100 * tz));
              EXPECT_EQ(o[1], static_cast<int>(bx + 10 * by + 100 * bz));
              EXPECT_EQ(o[2], 4 + 30 + 200);
              EXPECT_EQ(o[3], 3 + 20 + 200 + 32000);
            }
}

CULAYERS_GLOBAL void barrier_forms_kernel(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  out[0 * blockDim.x + t] = __syncthreads_count(t % 3 == 0);
  out[1 * blockDim.x + t] = __syncthreads_and(t < 1000);
  out[2 * blockDim.x + t] = __syncthreads_and(t != 5);
  out[3 * blockDim.x + t] = __syncthreads_or(t == 77);
  out[4 * blockDim.x + t] = __syncthreads_or(t > 1000);
}

TEST(EmulatorFeatures, SyncthreadsCountAndOr) {
  const int n = 96;
  DeviceBuffer<int> out(5 * n);
  CULAYERS_ASSERT_CUDA(finish(CULAYERS_LAUNCH(barrier_forms_kernel, 1, n, 0, nullptr, out.get())));
  const auto h = out.download();
  for (int t = 0; t < n; ++t) {
    EXPECT_EQ(h[0 * n + t], 32); // multiples of 3 in [0, 96)
    EXPECT_EQ(h[1 * n + t], 1);
    EXPECT_EQ(h[2 * n + t], 0);
    EXPECT_EQ(h[3 * n + t], 1);
    EXPECT_EQ(h[4 * n + t], 0);
  }
}

template <class T>
CULAYERS_GLOBAL void shuffle_kernel(T* out, int width) {
  const unsigned lane = threadIdx.x % 32;
  const T v = static_cast<T>(static_cast<int>(threadIdx.x) * 2 + 1);
  T* o = out + 4 * threadIdx.x;
  o[0] = __shfl_sync(0xffffffffu, v, 3, width);
  o[1] = __shfl_up_sync(0xffffffffu, v, 2, width);
  o[2] = __shfl_down_sync(0xffffffffu, v, 5, width);
  o[3] = __shfl_xor_sync(0xffffffffu, v, static_cast<int>(lane % 2 == 0 ? 17 : 6), width);
}

// What the PTX shfl.sync rules give for lane l of a warp (values v(l) = 2 * (warp_base + l) + 1).
template <class T>
void check_shuffles(const std::vector<T>& h, int threads, int width) {
  auto v = [](int t) { return static_cast<double>(t * 2 + 1); };
  for (int t = 0; t < threads; ++t) {
    const int lane = t % 32;
    const int base = t - lane;
    const int seg = lane & ~(width - 1);
    SCOPED_TRACE(::testing::Message() << "thread " << t << " width " << width);
    EXPECT_EQ(static_cast<double>(h[4 * t + 0]), v(base + seg + (3 & (width - 1))));
    EXPECT_EQ(static_cast<double>(h[4 * t + 1]), lane - 2 >= seg ? v(t - 2) : v(t));
    EXPECT_EQ(static_cast<double>(h[4 * t + 2]), lane + 5 <= seg + width - 1 ? v(t + 5) : v(t));
    const int x = lane ^ (lane % 2 == 0 ? 17 : 6);
    EXPECT_EQ(static_cast<double>(h[4 * t + 3]), x <= seg + width - 1 ? v(base + x) : v(t));
  }
}

TEST(EmulatorFeatures, ShufflesFollowCudaRulesForEveryWidth) {
  const int threads = 64;
  for (int width : {32, 16, 8, 4, 2}) {
    DeviceBuffer<int> iout(4 * threads);
    DeviceBuffer<double> dout(4 * threads);
    CULAYERS_ASSERT_CUDA(
        finish(CULAYERS_LAUNCH((shuffle_kernel<int>), 1, threads, 0, nullptr, iout.get(), width)));
    CULAYERS_ASSERT_CUDA(
        finish(CULAYERS_LAUNCH((shuffle_kernel<double>), 1, threads, 0, nullptr, dout.get(), width)));
    check_shuffles(iout.download(), threads, width);
    check_shuffles(dout.download(), threads, width);
  }
}

CULAYERS_GLOBAL void half_shuffle_kernel(__half* out) {
  const __half v = __float2half(static_cast<float>(threadIdx.x) * 0.5f);
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, v, 1);
}

TEST(EmulatorFeatures, HalfShuffle) {
  DeviceBuffer<__half> out(32);
  CULAYERS_ASSERT_CUDA(finish(CULAYERS_LAUNCH(half_shuffle_kernel, 1, 32, 0, nullptr, out.get())));
  const auto h = out.download();
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(__half2float(h[i]), static_cast<float>(i ^ 1) * 0.5f);
  }
}

CULAYERS_GLOBAL void vote_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x % 32;
  unsigned* o = out + 6 * threadIdx.x;
  o[0] = __ballot_sync(0xffffffffu, lane % 3 == 0);
  o[1] = static_cast<unsigned>(__any_sync(0xffffffffu, lane == 31));
  o[2] = static_cast<unsigned>(__all_sync(0xffffffffu, lane < 31));
  o[3] = static_cast<unsigned>(__all_sync(0xffffffffu, lane < 32));
  o[4] = __match_any_sync(0xffffffffu, lane / 8);
  // A sub-warp collective: only the low half takes part.
  o[5] = lane < 16 ? __ballot_sync(0x0000ffffu, lane % 2 == 1) : 0u;
  __syncwarp();
}

TEST(EmulatorFeatures, Votes) {
  DeviceBuffer<unsigned> out(6 * 64);
  CULAYERS_ASSERT_CUDA(finish(CULAYERS_LAUNCH(vote_kernel, 1, 64, 0, nullptr, out.get())));
  const auto h = out.download();
  unsigned every_third = 0;
  for (unsigned l = 0; l < 32; l += 3) {
    every_third |= 1u << l;
  }
  for (unsigned t = 0; t < 64; ++t) {
    const unsigned lane = t % 32;
    const unsigned* o = &h[6 * t];
    EXPECT_EQ(o[0], every_third);
    EXPECT_EQ(o[1], 1u);
    EXPECT_EQ(o[2], 0u);
    EXPECT_EQ(o[3], 1u);
    EXPECT_EQ(o[4], 0xffu << (8 * (lane / 8)));
    EXPECT_EQ(o[5], lane < 16 ? 0x0000aaaau : 0u);
  }
}

// CUDA: all non-exited lanes named in the mask must take part; exited lanes are absent. Lanes 28..31 leave
// after a first vote (so their last values are stale), the rest vote with a full mask: the results cover
// the 28 lanes present, and a shuffle reading a present lane is fine.
CULAYERS_GLOBAL void exited_lanes_vote_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x % 32;
  unsigned* o = out + 6 * threadIdx.x;
  o[0] = __ballot_sync(0xffffffffu, 1); // all 32 present
  if (lane >= 28) {
    return;
  }
  o[1] = __ballot_sync(0xffffffffu, lane % 2 == 0);
  o[2] = static_cast<unsigned>(__all_sync(0xffffffffu, lane < 28));
  o[3] = __match_any_sync(0xffffffffu, lane / 8);
  __syncwarp();
  o[4] = __shfl_sync(0xffffffffu, lane * 10u, 27);
  o[5] = static_cast<unsigned>(__any_sync(0xffffffffu, lane == 27));
}

TEST(EmulatorFeatures, ExitedLanesAreAbsentFromWarpCollectives) {
  DeviceBuffer<unsigned> out(6 * 64);
  out.fill_bytes(0);
  CULAYERS_ASSERT_CUDA(finish(CULAYERS_LAUNCH(exited_lanes_vote_kernel, 1, 64, 0, nullptr, out.get())));
  const auto h = out.download();
  for (unsigned t = 0; t < 64; ++t) {
    const unsigned lane = t % 32;
    const unsigned* o = &h[6 * t];
    EXPECT_EQ(o[0], 0xffffffffu) << t;
    if (lane >= 28) {
      continue;
    }
    EXPECT_EQ(o[1], 0x05555555u) << t;
    EXPECT_EQ(o[2], 1u) << t; // every present lane is below 28
    EXPECT_EQ(o[3], lane < 24 ? 0xffu << (8 * (lane / 8)) : 0x0f000000u) << t;
    EXPECT_EQ(o[4], 270u) << t;
    EXPECT_EQ(o[5], 1u) << t;
  }
}

CULAYERS_GLOBAL void atomics_kernel(int* i, unsigned* u, unsigned long long* ull, float* f, double* d,
                                    __half* h, int* order) {
  atomicAdd(i, 1);
  atomicMax(i + 1, static_cast<int>(threadIdx.x));
  atomicMin(i + 2, -static_cast<int>(threadIdx.x));
  atomicAdd(u, 2u);
  atomicInc(u + 1, 9u);
  atomicOr(u + 2, 1u << (threadIdx.x % 32));
  atomicAdd(ull, 1ull << 33);
  atomicAdd(f, 0.5f);
  atomicAdd(d, 0.25);
  atomicAdd(h, __float2half(1.0f));
  if (atomicCAS(i + 3, 0, static_cast<int>(threadIdx.x) + 1) == 0) {
    atomicExch(i + 4, 7);
  }
  order[atomicAdd(i + 5, 1)] = static_cast<int>(threadIdx.x);
}

TEST(EmulatorFeatures, Atomics) {
  const int n = 128;
  DeviceBuffer<int> i(6), order(n);
  DeviceBuffer<unsigned> u(3);
  DeviceBuffer<unsigned long long> ull(1);
  DeviceBuffer<float> f(1);
  DeviceBuffer<double> d(1);
  DeviceBuffer<__half> h(1);
  i.fill_bytes(0);
  u.fill_bytes(0);
  ull.fill_bytes(0);
  f.fill_bytes(0);
  d.fill_bytes(0);
  h.fill_bytes(0);
  CULAYERS_ASSERT_CUDA(finish(CULAYERS_LAUNCH(atomics_kernel, 1, n, 0, nullptr, i.get(), u.get(), ull.get(),
                                              f.get(), d.get(), h.get(), order.get())));
  const auto hi = i.download();
  const auto hu = u.download();
  EXPECT_EQ(hi[0], n);
  EXPECT_EQ(hi[1], n - 1);
  EXPECT_EQ(hi[2], -(n - 1));
  EXPECT_GE(hi[3], 1);
  EXPECT_EQ(hi[4], 7);
  EXPECT_EQ(hi[5], n);
  EXPECT_EQ(hu[0], 2u * n);
  EXPECT_EQ(hu[1], static_cast<unsigned>(n % 10)); // atomicInc wraps to 0 after 9
  EXPECT_EQ(hu[2], 0xffffffffu);
  EXPECT_EQ(ull.download()[0], static_cast<unsigned long long>(n) << 33);
  EXPECT_EQ(f.download()[0], 0.5f * n);
  EXPECT_EQ(d.download()[0], 0.25 * n);
  EXPECT_EQ(__half2float(h.download()[0]), static_cast<float>(n));
  auto o = order.download();
  std::sort(o.begin(), o.end());
  for (int k = 0; k < n; ++k) {
    EXPECT_EQ(o[k], k); // every thread got a distinct ticket
  }
}

CULAYERS_GLOBAL void shared_memory_kernel(float* out, int* poisoned) {
  __shared__ float stat[128];
  CULAYERS_DYNAMIC_SMEM(float, dyn);
  const unsigned t = threadIdx.x;
  // Dynamic shared memory starts as garbage (0xFF bytes) in every block, and so does static shared memory
  // outside ASan builds (there it stays an ordinary zeroed static): the previous block's values are gone.
  int bits;
  std::memcpy(&bits, &dyn[t], sizeof(bits));
  int static_bits;
  std::memcpy(&static_bits, &stat[t], sizeof(static_bits));
#if defined(__SANITIZE_ADDRESS__)
  static_bits = -1;
#endif
  poisoned[blockIdx.x * blockDim.x + t] = bits == -1 && static_bits == -1;
  stat[t] = static_cast<float>(t + blockIdx.x);
  dyn[t] = 2.0f * static_cast<float>(t);
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = stat[blockDim.x - 1 - t] + dyn[(t + 1) % blockDim.x];
}

TEST(EmulatorFeatures, StaticAndDynamicSharedMemory) {
  const int blocks = 3, threads = 128;
  DeviceBuffer<float> out(blocks * threads);
  DeviceBuffer<int> poisoned(blocks * threads);
  CULAYERS_ASSERT_CUDA(finish(CULAYERS_LAUNCH(shared_memory_kernel, blocks, threads, threads * sizeof(float),
                                              nullptr, out.get(), poisoned.get())));
  const auto h = out.download();
  const auto p = poisoned.download();
  for (int b = 0; b < blocks; ++b) {
    for (int t = 0; t < threads; ++t) {
      EXPECT_EQ(h[b * threads + t], static_cast<float>(threads - 1 - t + b) + 2.0f * ((t + 1) % threads));
      EXPECT_EQ(p[b * threads + t], 1);
    }
  }
}

CULAYERS_GLOBAL void math_kernel(float* out) {
  out[0] = rsqrtf(4.0f);
  out[1] = __expf(0.0f);
  out[2] = __fdividef(1.0f, 4.0f);
  out[3] = __saturatef(1.5f);
  out[4] = static_cast<float>(__popc(0xf0f0u));
  out[5] = static_cast<float>(__clz(1));
  out[6] = static_cast<float>(__ffs(8));
  out[7] = __int_as_float(__float_as_int(3.25f));
  out[8] = __half2float(__hfma(__float2half(2.0f), __float2half(3.0f), __float2half(1.0f)));
  out[9] = __bfloat162float(hsqrt(__float2bfloat16(16.0f)));
  out[10] = static_cast<float>(__umulhi(0x80000000u, 4u));
  out[11] = static_cast<float>(__brev(1u) >> 28);
  out[12] = __ldg(out + 0);
}

TEST(EmulatorFeatures, MathAndBitIntrinsics) {
  DeviceBuffer<float> out(13);
  CULAYERS_ASSERT_CUDA(finish(CULAYERS_LAUNCH(math_kernel, 1, 1, 0, nullptr, out.get())));
  const auto h = out.download();
  const float expected[] = {0.5f, 1.0f, 0.25f, 1.0f, 8.0f, 31.0f, 4.0f, 3.25f, 7.0f, 4.0f, 2.0f, 8.0f, 0.5f};
  for (int k = 0; k < 13; ++k) {
    EXPECT_EQ(h[k], expected[k]) << "result " << k;
  }
}

CULAYERS_GLOBAL void order_kernel(int* order, int* ticket) {
  order[atomicAdd(ticket, 1)] = static_cast<int>(threadIdx.x);
}

TEST(EmulatorFeatures, ScheduleSeedPermutesThreadOrder) {
  DeviceBuffer<int> order(64), ticket(1);
  auto run = [&](std::uint64_t seed) {
    culayers_emu::set_schedule_seed(seed);
    ticket.fill_bytes(0);
    EXPECT_EQ(finish(CULAYERS_LAUNCH(order_kernel, 1, 64, 0, nullptr, order.get(), ticket.get())),
              cudaSuccess);
    return order.download();
  };
  const std::uint64_t saved = culayers_emu::schedule_seed();
  const auto natural = run(0);
  const auto a = run(12345);
  const auto b = run(12345);
  const auto c = run(999);
  culayers_emu::set_schedule_seed(saved);
  std::vector<int> identity(64);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(natural, identity);
  EXPECT_NE(a, identity);
  EXPECT_EQ(a, b); // the same seed gives the same schedule
  EXPECT_NE(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, identity);
}

CULAYERS_GLOBAL void nop_kernel(int* p) {
  kernels::store(p + threadIdx.x, 1);
}

TEST(EmulatorFeatures, LaunchValidationFollowsCudaLimits) {
  DeviceBuffer<int> p(1024);
  QuietEmulator quiet;
  EXPECT_EQ(CULAYERS_LAUNCH(nop_kernel, dim3(1, 65536, 1), 1, 0, nullptr, p.get()),
            culayers_emu::kLaunchConfigurationError);
  EXPECT_EQ(CULAYERS_LAUNCH(nop_kernel, dim3(1, 1, 65536), 1, 0, nullptr, p.get()),
            culayers_emu::kLaunchConfigurationError);
  EXPECT_EQ(CULAYERS_LAUNCH(nop_kernel, 1, dim3(1, 1, 65), 0, nullptr, p.get()),
            culayers_emu::kLaunchConfigurationError);
  EXPECT_EQ(CULAYERS_LAUNCH(nop_kernel, 1, dim3(32, 33, 1), 0, nullptr, p.get()),
            culayers_emu::kLaunchConfigurationError);
  EXPECT_EQ(CULAYERS_LAUNCH(nop_kernel, 0, 32, 0, nullptr, p.get()), culayers_emu::kLaunchConfigurationError);
  EXPECT_NE(culayers_emu::last_error_message().find("nop_kernel"), std::string::npos);
  (void)cudaGetLastError();
  // The largest legal configurations are accepted.
  EXPECT_EQ(finish(CULAYERS_LAUNCH(nop_kernel, 1, 1024, 0, nullptr, p.get())), cudaSuccess);
  EXPECT_EQ(finish(CULAYERS_LAUNCH(nop_kernel, 1, dim3(1, 1, 64), 0, nullptr, p.get())), cudaSuccess);
}

TEST(EmulatorFeatures, FaultIsReportedOnceAndLaterLaunchesRun) {
  DeviceBuffer<int> p(64);
  {
    QuietEmulator quiet;
    EXPECT_EQ(finish(CULAYERS_LAUNCH(nop_kernel, 1, 65, 0, nullptr, p.get())), cudaErrorLaunchFailure);
  }
  (void)cudaGetLastError();
  EXPECT_EQ(finish(CULAYERS_LAUNCH(nop_kernel, 1, 64, 0, nullptr, p.get())), cudaSuccess);
}

// ---- sector counting
// ----------------------------------------------------------------------------------------

namespace ck = culayers::kernels;

// mode 0: lane i loads float i (4 sectors per warp); 1: float 8 i (32 sectors); 2: float4 i (16 sectors);
// 3: float i four times at one line (4 sectors each time: the k-th accesses are separate instructions);
// 4: lanes below 16 load float i (2 sectors); 5: every lane loads float 0 (a broadcast: 4 bytes, 1 sector);
// 6: at one line, even lanes load float i, a __syncwarp, then every lane loads float 32 + i (4 + 4 sectors:
// the odd lanes' first access there is the second instruction's, which the __syncwarp tells the model);
// every mode stores one float per lane, consecutive.
CULAYERS_GLOBAL void sector_kernel(const float* x, float* y, int mode) {
  const int i = static_cast<int>(threadIdx.x);
  float v = 0.0f;
  if (mode == 0) {
    v = ck::load(x + i);
  } else if (mode == 1) {
    v = ck::load(x + 8 * i);
  } else if (mode == 2) {
    const ck::Vec<float, 4> w = ck::load_vec<4>(x + 4 * i);
    v = w[0] + w[1] + w[2] + w[3];
  } else if (mode == 3) {
    for (int k = 0; k < 4; ++k) {
      v += ck::load(x + i);
    }
  } else if (mode == 4 && i < 16) {
    v = ck::load(x + i);
  } else if (mode == 5) {
    v = ck::load(x);
  } else if (mode == 6) {
    for (int k = 0; k < 2; ++k) {
      if (k == 1 || i % 2 == 0) {
        v += ck::load(x + 32 * k + i);
      }
      __syncwarp();
    }
  }
  ck::store(y + i, v);
}

TEST(EmulatorFeatures, SectorCountingGroupsAWarpsAccesses) {
  DeviceBuffer<float> x(32 * 8);
  DeviceBuffer<float> y(64);
  // What one kernel asked of the memory system (measure_coalescing: counting on around the launch).
  const auto run = [&](int mode, unsigned threads) {
    return measure_coalescing([&] {
             EXPECT_EQ(finish(CULAYERS_LAUNCH(sector_kernel, dim3(1), dim3(threads), 0, nullptr, x.get(),
                                              y.get(), mode)),
                       cudaSuccess);
           })
        .counters;
  };
  struct Expect {
    int mode;
    std::uint64_t read_bytes, read_sectors;
  };
  for (const Expect& e : {Expect{0, 128, 4}, Expect{1, 128, 32}, Expect{2, 512, 16}, Expect{3, 512, 16},
                          Expect{4, 64, 2}, Expect{5, 4, 1}, Expect{6, 192, 8}}) {
    SCOPED_TRACE(e.mode);
    const culayers_emu::SectorCounters c = run(e.mode, 32);
    EXPECT_EQ(c.read_bytes, e.read_bytes);
    EXPECT_EQ(c.read_sectors, e.read_sectors);
    EXPECT_EQ(c.write_bytes, 128u);
    EXPECT_EQ(c.write_sectors, 4u);
  }
  // Two warps: each warp's accesses are its own instructions (mode 3: 4 loads of 4 sectors each per warp).
  const culayers_emu::SectorCounters two = run(3, 64);
  EXPECT_EQ(two.read_sectors, 2u * 16u);
  EXPECT_EQ(two.write_sectors, 8u);
  // Per source line: mode 1's load line (32 sectors for 128 bytes) and the store line, most bytes first.
  run(1, 32);
  const std::vector<culayers_emu::SectorSite> sites = culayers_emu::sector_sites();
  ASSERT_EQ(sites.size(), 2u);
  EXPECT_TRUE(sites[0].bytes == 128u && sites[1].bytes == 128u);
  for (const culayers_emu::SectorSite& site : sites) {
    EXPECT_NE(std::string(site.file).find("features_test"), std::string::npos) << site.file;
    EXPECT_EQ(site.sectors, site.write ? 4u : 32u) << site.line;
  }
  EXPECT_NE(sites[0].line, sites[1].line);
  // Off: nothing counted.
  culayers_emu::reset_sector_counters();
  CULAYERS_ASSERT_CUDA(
      finish(CULAYERS_LAUNCH(sector_kernel, dim3(1), dim3(32), 0, nullptr, x.get(), y.get(), 0)));
  EXPECT_EQ(culayers_emu::sector_counters().read_sectors, 0u);
}

} // namespace
} // namespace culayers::test
