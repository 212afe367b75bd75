// Group-normalization kernels (forward: cached warp/block and split stats + normalize; backward: cached
// warp/block and split sums + dx) and their per-dtype launchers. See group_norm_internal.cuh for the
// group view, units, teams and the tx x ty thread shape.
//
// Cached paths: each thread stages the vectors it loads in its own slots of shared memory and reads back
// exactly those slots in the second pass (the same thread-to-vector mapping in both passes), so x (and dy)
// are read from DRAM once and the staging needs no barrier.
//
// Determinism: a thread visits its vectors in a fixed order, partials merge through fixed trees (shuffle
// butterflies, block reductions, in-order sums over shared memory), and split partials are merged in chunk
// order by every block that needs them. No floating-point atomics anywhere.
#pragma once

#include "kernels/common/device_info.cuh"
#include "kernels/group_norm/group_norm_device.cuh"
#include "kernels/group_norm/group_norm_internal.cuh"
#include "kernels/group_norm/group_norm_tile_kernels.cuh"

#include <cstdint>
#include <type_traits>

CULAYERS_NAMESPACE_BEGIN
namespace kernels {
namespace group_norm {

// ---- units and teams -------------------------------------------------------------------------------------

struct Unit {
  std::int64_t n;
  std::int64_t g;
  std::int64_t ng;     // n * groups + g: index of mean / rstd
  std::int64_t chunk;  // chunk index within the group
  std::int64_t schunk; // its spatial-axis index (chunk / csplits): the per-channel partial row within n
  std::int64_t r0, r1; // row range
  std::int64_t v0, v1; // column-vector range
  std::int64_t base;   // element offset of the group's (0, 0)
};

/// Unit u of the grid's numbering. kChunked: a split-path unit, one chunk of a group (the cached paths'
/// units are whole groups: splits == 1, and their kernels skip the chunk arithmetic, which cost registers).
template <bool kChunked>
CULAYERS_DEVICE Unit make_unit(const Geometry& geo, std::int64_t u) {
  // 32-bit divisions (the host keeps N * G * splits below 2^31): a 64-bit division is a called
  // subroutine whose ABI costs spills.
  Unit un;
  const auto u32 = static_cast<std::uint32_t>(u);
  const auto splits = kChunked ? static_cast<std::uint32_t>(geo.splits) : 1u;
  const auto groups = static_cast<std::uint32_t>(geo.groups);
  if (geo.cl) {
    // Channels last: units in (n, chunk, g) order, groups fastest. A group's row is only C/G channels of a
    // C-channel row (8 bytes in a 32-byte sector for bf16 with C/G = 4), so the units that run at the same
    // time must be the groups of the same rows: then one DRAM fetch of a sector serves all its groups
    // through L2. In (n, g, chunk) order every SM read one group's slice of the rows and each sector came
    // from DRAM once per group (seen on an H100: VAE 128 x 1024 x 1024 channels last ran 13x its byte bound).
    const std::uint32_t per_n = splits * groups;
    const std::uint32_t n = u32 / per_n;
    const std::uint32_t rem = u32 - n * per_n;
    const std::uint32_t chunk = rem / groups;
    un.n = n;
    un.chunk = chunk;
    un.g = rem - chunk * groups;
    un.ng = static_cast<std::int64_t>(n) * groups + un.g;
  } else {
    const std::uint32_t ng = u32 / splits;
    un.chunk = u32 - ng * splits;
    un.ng = ng;
    un.n = ng / groups;
    un.g = ng - static_cast<std::uint32_t>(un.n) * groups;
  }
  un.base = un.n * geo.n_stride + un.g * geo.group_offset;
  un.r0 = 0;
  un.r1 = geo.rows;
  un.v0 = 0;
  un.v1 = geo.colvecs;
  un.schunk = un.chunk;
  if constexpr (kChunked) {
    // The chunk's position along each axis (the channel axis is cut only when csplits > 1).
    std::int64_t hchunk = 0;
    if (geo.csplits > 1) {
      const auto cs = static_cast<std::uint32_t>(geo.csplits);
      const auto c32 = static_cast<std::uint32_t>(un.chunk);
      un.schunk = c32 / cs;
      hchunk = c32 - static_cast<std::uint32_t>(un.schunk) * cs;
    }
    if (geo.cl) {
      un.r0 = un.schunk * geo.chunk;
      un.r1 = un.r0 + geo.chunk < geo.rows ? un.r0 + geo.chunk : geo.rows;
    } else {
      un.v0 = un.schunk * geo.chunk;
      un.v1 = un.v0 + geo.chunk < geo.colvecs ? un.v0 + geo.chunk : geo.colvecs;
    }
    if (geo.csplits > 1) {
      if (geo.cl) {
        un.v0 = hchunk * geo.cchunk;
        un.v1 = un.v0 + geo.cchunk < geo.colvecs ? un.v0 + geo.cchunk : geo.colvecs;
      } else {
        un.r0 = hchunk * geo.cchunk;
        un.r1 = un.r0 + geo.cchunk < geo.rows ? un.r0 + geo.cchunk : geo.rows;
      }
    }
  }
  return un;
}

template <bool kWarpTeam>
struct Team {
  int tid;      // thread index in the team
  int size;     // threads in the team
  int index;    // team index in the grid
  int count;    // teams in the grid
  int in_block; // team index in the block

  CULAYERS_DEVICE static Team make() {
    Team t;
    const int lt = static_cast<int>(threadIdx.x);
    if constexpr (kWarpTeam) {
      const int per_block = static_cast<int>(blockDim.x) / kWarpSize;
      t.tid = lt % kWarpSize;
      t.size = kWarpSize;
      t.in_block = lt / kWarpSize;
      t.index = static_cast<int>(blockIdx.x) * per_block + t.in_block;
      t.count = static_cast<int>(gridDim.x) * per_block;
    } else {
      t.tid = lt;
      t.size = static_cast<int>(blockDim.x);
      t.in_block = 0;
      t.index = static_cast<int>(blockIdx.x);
      t.count = static_cast<int>(gridDim.x);
    }
    return t;
  }

  CULAYERS_DEVICE void sync() const {
    if constexpr (kWarpTeam) {
      __syncwarp();
    } else {
      __syncthreads();
    }
  }

  CULAYERS_DEVICE Welford welford(Welford w, void* scratch) const {
    if constexpr (kWarpTeam) {
      (void)scratch;
      return warp_welford<kWarpSize, true>(w);
    } else {
      return block_welford<true>(w, static_cast<Welford*>(scratch));
    }
  }

  CULAYERS_DEVICE float sum(float v, void* scratch) const {
    if constexpr (kWarpTeam) {
      (void)scratch;
      return warp_reduce_sum(v);
    } else {
      return block_reduce_sum(v, static_cast<float*>(scratch));
    }
  }
};

/// Team scratch (team_scratch_bytes): channels-last backward [size * 2 * N floats of per-channel slots][512
/// bytes of reduction scratch]; otherwise only the reduction scratch (slots null).
template <int N>
struct Scratch {
  float* slots;
  void* reduce;
};

template <int N, bool kChannelSlots>
CULAYERS_DEVICE Scratch<N> make_scratch(unsigned char* p, int team_size) {
  Scratch<N> s;
  if constexpr (kChannelSlots) {
    s.slots = reinterpret_cast<float*>(p);
    s.reduce = p + static_cast<std::size_t>(team_size) * 2 * N * sizeof(float);
  } else {
    (void)team_size;
    s.slots = nullptr;
    s.reduce = p;
  }
  return s;
}

/// Visits this thread's vectors of a unit: for each batch of the channel axis (the same number of batches
/// in every thread of the team, so `end` may hold barriers or shuffles), begin(outer, active), then
/// use(r, cv, v) for each inner position with v = load(r, cv) (walk_strided: loads issued in groups of
/// kUnroll before their uses), then end(outer, active). Channel axis: column vectors (channels last) or
/// rows (channels first).
///
/// kAhead (channels last): where the unit has no more rows than ty (a unit of one row: [N, C] with no
/// spatial dims, or a channel-cut chunk over a single position such as [1, 2^20] with G = 1), each thread
/// has at most one row, so the walk down the rows would issue one load per batch, each a dependent round
/// trip to DRAM; there the loads of kUnroll consecutive batches are issued first and the batches then run
/// in order (begin, use, end each), so every thread keeps kUnroll loads in flight. The order of the
/// begin / use / end calls, and hence every result bit, is that of the one-batch-at-a-time walk, provided
/// `load` does not depend on what begin or end do (the loads of later batches run before them). Only the
/// split path's statistics kernel takes it, where it also lowered the registers (ptxas, sm_90, channels
/// last: float32 75 -> 65 with 4-wide vectors, bfloat16 67 -> 56 with 2-wide). In the backward kernels it
/// raised them by up to 49 and in the cached warp kernels enough to cost blocks per SM: residency on
/// common shapes traded for rare ones, unmeasured, so they keep the plain walk.
template <bool kCL, bool kAhead, class Begin, class Load, class Use, class End>
CULAYERS_DEVICE void visit(const Geometry& geo, const Unit& un, int tid, Begin&& begin, Load&& load,
                           Use&& use, End&& end) {
  const int ix = tid % geo.tx;
  const int iy = tid / geo.tx;
  if constexpr (kCL && kAhead) {
    if (un.r1 - un.r0 <= geo.ty) {
      const std::int64_t r = un.r0 + iy;
      const bool has_row = r < un.r1;
      // Divided in 64 bits: a unit's vector count plus tx - 1 can pass 2^31 (C / G up to 2^31 - 1).
      const std::int64_t batches = (un.v1 - un.v0 + geo.tx - 1) / geo.tx;
      for (std::int64_t b = 0; b < batches; b += kUnroll) {
        decltype(load(r, un.v0)) v[kUnroll] = {};
        CULAYERS_PRAGMA_UNROLL
        for (int k = 0; k < kUnroll; ++k) {
          const std::int64_t cv = un.v0 + (b + k) * geo.tx + ix;
          if (b + k < batches && has_row && cv < un.v1) {
            v[k] = load(r, cv);
          }
        }
        CULAYERS_PRAGMA_UNROLL
        for (int k = 0; k < kUnroll; ++k) {
          if (b + k < batches) {
            const std::int64_t cv = un.v0 + (b + k) * geo.tx + ix;
            const bool active = cv < un.v1;
            begin(cv, active);
            if (active && has_row) {
              use(r, cv, v[k]);
            }
            end(cv, active);
          }
        }
      }
      return;
    }
  }
  if constexpr (kCL) {
    // Divided in 64 bits: a unit's vector count plus tx - 1 can pass 2^31 (C / G up to 2^31 - 1).
    const std::int32_t batches = static_cast<std::int32_t>((un.v1 - un.v0 + geo.tx - 1) / geo.tx);
    for (std::int32_t b = 0; b < batches; ++b) {
      const std::int64_t cv = un.v0 + static_cast<std::int64_t>(b) * geo.tx + ix;
      const bool active = cv < un.v1;
      begin(cv, active);
      if (active) {
        walk_strided(
            un.r0 + iy, un.r1, geo.ty, [&](std::int64_t r) { return load(r, cv); },
            [&](std::int64_t r, const auto& v) { use(r, cv, v); });
      }
      end(cv, active);
    }
  } else {
    const std::int32_t batches = static_cast<std::int32_t>((un.r1 - un.r0 + geo.ty - 1) / geo.ty);
    for (std::int32_t b = 0; b < batches; ++b) {
      const std::int64_t r = un.r0 + static_cast<std::int64_t>(b) * geo.ty + iy;
      const bool active = r < un.r1;
      begin(r, active);
      if (active) {
        walk_strided(
            un.v0 + ix, un.v1, geo.tx, [&](std::int64_t cv) { return load(r, cv); },
            [&](std::int64_t cv, const auto& v) { use(r, cv, v); });
      }
      end(r, active);
    }
  }
}

/// Per-channel affine parameters of the channels a thread's vectors hold in this batch: N channels
/// (channels last) or one (channels first, replicated).
template <bool kCL, int N>
CULAYERS_DEVICE void channel_params(const Geometry& geo, const Unit& un, std::int64_t outer, bool active,
                                    const float* gamma, const float* beta, float (&gam)[N], float (&bet)[N]) {
  CULAYERS_PRAGMA_UNROLL
  for (int j = 0; j < N; ++j) {
    gam[j] = 1.0f;
    bet[j] = 0.0f;
  }
  if (!active) {
    return;
  }
  const std::int64_t c0 = un.g * geo.cpg + (kCL ? outer * N : outer);
  CULAYERS_PRAGMA_UNROLL
  for (int j = 0; j < N; ++j) {
    const std::int64_t c = kCL ? c0 + j : c0;
    if (gamma != nullptr) {
      gam[j] = load<CacheHint::kReadOnly>(gamma + c);
    }
    if (beta != nullptr) {
      bet[j] = load<CacheHint::kReadOnly>(beta + c);
    }
  }
}

CULAYERS_DEVICE bool row_valid(const std::uint8_t* mask, const Geometry& geo, const Unit& un,
                               std::int64_t r) {
  return mask == nullptr || load<CacheHint::kReadOnly>(mask + un.n * geo.spatial + r) != 0;
}

// ---- forward ---------------------------------------------------------------------------------------------

/// Normalizes this thread's vectors of `un` (loaded by `load`) and stores y.
template <class T, int N, bool kCL, class Load>
CULAYERS_DEVICE void forward_store(const ForwardParams& p, const Unit& un, int tid, float mean, float rstd,
                                   Load&& load) {
  const Geometry& geo = p.geo;
  T* y = static_cast<T*>(p.y) + un.base;
  float scale[N];
  float bet[N];
  visit<kCL, false>(
      geo, un, tid,
      [&](std::int64_t outer, bool active) {
        channel_params<kCL, N>(geo, un, outer, active, p.gamma, p.beta, scale, bet);
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          scale[j] *= rstd;
        }
      },
      load,
      [&](std::int64_t r, std::int64_t cv, const Vec<T, N>& v) {
        store_vec<N, CacheHint::kStreaming>(y + r * geo.row_stride + cv * N,
                                            normalize_vec<T, N>(v, mean, scale, bet, p.act));
      },
      [](std::int64_t, bool) {});
}

/// Warp and block paths: a team per group, x staged in the team's shared memory (read from DRAM once).
/// Dynamic shared memory per team: the group's vectors, then team_scratch_bytes(team size, N, false).
template <class T, int N, bool kCL, bool kWarpTeam>
CULAYERS_GLOBAL void __launch_bounds__(kWarpTeam ? kWarpSize* kWarpTeamsPerBlock : kMaxBlockThreads, 1)
    forward_cached_kernel(const ForwardParams p) {
  CULAYERS_DYNAMIC_SMEM(unsigned char, smem);
  const Geometry& geo = p.geo;
  const Team<kWarpTeam> team = Team<kWarpTeam>::make();
  const std::size_t cache_bytes =
      (static_cast<std::size_t>(geo.rows * geo.colvecs) * sizeof(Vec<T, N>) + 15) / 16 * 16;
  unsigned char* mine = smem + static_cast<std::size_t>(team.in_block) *
                                   (cache_bytes + team_scratch_bytes(team.size, N, false));
  Vec<T, N>* cache = reinterpret_cast<Vec<T, N>*>(mine);
  const Scratch<N> scratch = make_scratch<N, false>(mine + cache_bytes, team.size);
  const T* x = static_cast<const T*>(p.x);
  const std::int64_t units = geo.batch * geo.groups;

  for (std::int64_t u = team.index; u < units; u += team.count) {
    const Unit un = make_unit<false>(geo, u);
    const T* xg = x + un.base;
    Welford w{};
    visit<kCL, false>(
        geo, un, team.tid, [](std::int64_t, bool) {},
        [&](std::int64_t r, std::int64_t cv) {
          return load_vec<N, CacheHint::kStreaming>(xg + r * geo.row_stride + cv * N);
        },
        [&](std::int64_t r, std::int64_t cv, const Vec<T, N>& v) {
          cache[r * geo.colvecs + cv] = v;
          if (row_valid(p.mask, geo, un, r)) {
            float f[N];
            to_floats(v, f);
            push_vec(w, f);
          }
        },
        [](std::int64_t, bool) {});
    w = team.welford(w, scratch.reduce);
    float mean = 0.0f;
    float rstd = 0.0f;
    finish_stats(w, p.epsilon, mean, rstd);
    if (team.tid == 0) {
      if (p.mean != nullptr) {
        store(p.mean + un.ng, mean);
      }
      if (p.rstd != nullptr) {
        store(p.rstd + un.ng, rstd);
      }
    }
    forward_store<T, N, kCL>(p, un, team.tid, mean, rstd,
                             [&](std::int64_t r, std::int64_t cv) { return cache[r * geo.colvecs + cv]; });
  }
}

/// Split path, kernel 1: a block per unit (group chunk) writes its Welford partial.
template <class T, int N, bool kCL>
CULAYERS_GLOBAL void __launch_bounds__(kSplitThreads, 1) forward_partial_kernel(const ForwardParams p) {
  allow_dependent_launch(); // forward_normalize_kernel follows
  CULAYERS_DYNAMIC_SMEM(unsigned char, smem);
  const Geometry& geo = p.geo;
  const Team<false> team = Team<false>::make();
  const Scratch<N> scratch = make_scratch<N, false>(smem, team.size);
  const T* x = static_cast<const T*>(p.x);
  const std::int64_t units = geo.batch * geo.groups * geo.splits;
  for (std::int64_t u = team.index; u < units; u += team.count) {
    const Unit un = make_unit<true>(geo, u);
    const T* xg = x + un.base;
    Welford w{};
    visit<kCL, true>(
        geo, un, team.tid, [](std::int64_t, bool) {},
        [&](std::int64_t r, std::int64_t cv) {
          return load_vec<N>(xg + r * geo.row_stride + cv * N); // default policy: kernel 2 reads it again
        },
        [&](std::int64_t r, std::int64_t, const Vec<T, N>& v) {
          if (row_valid(p.mask, geo, un, r)) {
            float f[N];
            to_floats(v, f);
            push_vec(w, f);
          }
        },
        [](std::int64_t, bool) {});
    w = team.welford(w, scratch.reduce);
    if (team.tid == 0) {
      const std::int64_t slot = group_partial_slot(geo, un.ng, un.chunk);
      store(p.partials + 3 * slot + 0, w.mean);
      store(p.partials + 3 * slot + 1, w.m2);
      store(p.partials + 3 * slot + 2, w.count);
    }
  }
}

/// Split path, kernel 2: a block per unit merges its group's partials in chunk order (the same order in
/// every block of the group), writes mean / rstd once (chunk 0) and normalizes its chunk. Units are taken
/// last first (see "Second passes" in group_norm_internal.cuh). At least 3 blocks per SM: without the bound
/// ptxas gave the bf16 kernel 87 registers (2 blocks of 256 per SM; the H100 profile read 13.7 % achieved
/// occupancy and 41 % of DRAM bandwidth for the VAE shape); with it 72 on sm_90 and no spill on sm_80-90
/// (a bound of 4 spills).
template <class T, int N, bool kCL>
CULAYERS_GLOBAL void __launch_bounds__(kSplitThreads, 3) forward_normalize_kernel(const ForwardParams p) {
  grid_dependency_wait(); // a dependent launch after forward_partial_kernel
  CULAYERS_DYNAMIC_SMEM(unsigned char, smem);
  const Geometry& geo = p.geo;
  const Team<false> team = Team<false>::make();
  const Scratch<N> scratch = make_scratch<N, false>(smem, team.size);
  const T* x = static_cast<const T*>(p.x);
  const std::int64_t units = geo.batch * geo.groups * geo.splits;
  for (std::int64_t u = team.index; u < units; u += team.count) {
    const Unit un = make_unit<true>(geo, units - 1 - u);
    Welford w{};
    for (std::int64_t k = team.tid; k < geo.splits; k += team.size) {
      const float* part = p.partials + 3 * group_partial_slot(geo, un.ng, k);
      w = welford_merge<true>(w, Welford{load(part + 0), load(part + 1), load(part + 2)});
    }
    w = team.welford(w, scratch.reduce);
    float mean = 0.0f;
    float rstd = 0.0f;
    finish_stats(w, p.epsilon, mean, rstd);
    if (team.tid == 0 && un.chunk == 0) {
      if (p.mean != nullptr) {
        store(p.mean + un.ng, mean);
      }
      if (p.rstd != nullptr) {
        store(p.rstd + un.ng, rstd);
      }
    }
    const T* xg = x + un.base;
    forward_store<T, N, kCL>(p, un, team.tid, mean, rstd, [&](std::int64_t r, std::int64_t cv) {
      return load_vec<N, CacheHint::kStreaming>(xg + r * geo.row_stride + cv * N);
    });
  }
}

// ---- backward --------------------------------------------------------------------------------------------

/// Pass 1 of the backward over one unit: accumulates sum(g) and sum(g * xhat) into sg / sgx, writes the
/// unit's per-channel partials of dgamma / dbeta (when wanted), and calls keep(r, cv, pair) for every
/// pair loaded (the cached path stages them).
template <class T, int N, bool kCL, bool kWarpTeam, class Keep>
CULAYERS_DEVICE void backward_sums(const BackwardParams& p, const Unit& un, const Team<kWarpTeam>& team,
                                   const Scratch<N>& scratch, float mean, float rstd, float& sg, float& sgx,
                                   Keep&& keep) {
  const Geometry& geo = p.geo;
  const T* xg = static_cast<const T*>(p.x) + un.base;
  const T* dyg = static_cast<const T*>(p.dy) + un.base;
  const bool want_channels = p.channel_partials != nullptr;
  const std::int64_t partial_rows = geo.batch * geo.ssplits;
  const std::int64_t partial_row = un.n * geo.ssplits + un.schunk;
  float* dgamma_part = want_channels ? p.channel_partials + partial_row * geo.channels : nullptr;
  float* dbeta_part =
      want_channels ? p.channel_partials + (partial_rows + partial_row) * geo.channels : nullptr;
  const int ix = team.tid % geo.tx;
  const int iy = team.tid / geo.tx;
  float gam[N];
  float bet[N];
  // dgamma / dbeta partials: one pair per element channels last (N channels per vector); channels first the
  // whole vector is one channel, so one pair serves it (with a pair per element the 16-bit, 8-wide block
  // path spilled on sm_80).
  constexpr int kPairs = kCL ? N : 1;
  float dg[kPairs];
  float db[kPairs];
  visit<kCL, false>(
      geo, un, team.tid,
      [&](std::int64_t outer, bool active) {
        channel_params<kCL, N>(geo, un, outer, active, p.gamma, p.beta, gam, bet);
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < kPairs; ++j) {
          dg[j] = 0.0f;
          db[j] = 0.0f;
        }
      },
      [&](std::int64_t r, std::int64_t cv) {
        const std::int64_t off = r * geo.row_stride + cv * N;
        return Pair<T, N>{load_vec<N>(xg + off), load_vec<N>(dyg + off)};
      },
      [&](std::int64_t r, std::int64_t cv, const Pair<T, N>& v) {
        keep(r, cv, v);
        float xhat[N];
        float dpre[N];
        backward_terms<T, N>(v.x, v.dy, mean, rstd, gam, bet, p.act, xhat, dpre);
        accumulate_backward<N, kPairs>(xhat, dpre, gam, sg, sgx, dg, db);
      },
      [&](std::int64_t outer, bool active) {
        if (!want_channels) {
          return;
        }
        if constexpr (kCL) {
          // Channels along tx: merge across ty. Lanes of a warp with the same ix first (butterfly), then
          // one slot row per warp (tx < 32) or per iy (tx >= 32), summed in order by the iy == 0 threads.
          const int lane = team.tid % kWarpSize;
          const bool narrow = geo.tx < kWarpSize;
          CULAYERS_PRAGMA_UNROLL
          for (int j = 0; j < N; ++j) {
            dg[j] = warp_xor_sum(dg[j], kWarpSize / 2, geo.tx);
            db[j] = warp_xor_sum(db[j], kWarpSize / 2, geo.tx);
          }
          const int slot_row = narrow ? team.tid / kWarpSize : iy;
          const int slot_rows = narrow ? team.size / kWarpSize : geo.ty;
          if (!narrow || lane < geo.tx) {
            float* s = scratch.slots + (static_cast<std::size_t>(slot_row) * geo.tx + ix) * 2 * N;
            CULAYERS_PRAGMA_UNROLL
            for (int j = 0; j < N; ++j) {
              s[j] = dg[j];
              s[N + j] = db[j];
            }
          }
          team.sync();
          if (team.tid < geo.tx && active) {
            float tg[N];
            float tb[N];
            CULAYERS_PRAGMA_UNROLL
            for (int j = 0; j < N; ++j) {
              tg[j] = 0.0f;
              tb[j] = 0.0f;
            }
            for (int k = 0; k < slot_rows; ++k) {
              const float* s = scratch.slots + (static_cast<std::size_t>(k) * geo.tx + ix) * 2 * N;
              CULAYERS_PRAGMA_UNROLL
              for (int j = 0; j < N; ++j) {
                tg[j] += s[j];
                tb[j] += s[N + j];
              }
            }
            const std::int64_t c0 = un.g * geo.cpg + outer * N;
            CULAYERS_PRAGMA_UNROLL
            for (int j = 0; j < N; ++j) {
              store(dgamma_part + c0 + j, tg[j]);
              store(dbeta_part + c0 + j, tb[j]);
            }
          }
          team.sync();
        } else {
          // Channels along ty (one row per tx lanes): merge across the tx lanes of the row (the vector's
          // elements were summed into dg[0] / db[0] as they came).
          float tg = dg[0];
          float tb = db[0];
          tg = warp_xor_sum(tg, geo.tx / 2, 1);
          tb = warp_xor_sum(tb, geo.tx / 2, 1);
          if (ix == 0 && active) {
            const std::int64_t c = un.g * geo.cpg + outer;
            store(dgamma_part + c, tg);
            store(dbeta_part + c, tb);
          }
        }
      });
}

/// Valid elements of a unit (M's share): every element without a mask; with a mask (channels last, a row
/// per position) valid rows x the unit's channels. Summed over the team.
template <bool kWarpTeam, int N>
CULAYERS_DEVICE float unit_valid_elements(const BackwardParams& p, const Unit& un,
                                          const Team<kWarpTeam>& team, const Scratch<N>& scratch) {
  if (p.mask == nullptr) {
    return static_cast<float>((un.r1 - un.r0) * (un.v1 - un.v0) * N);
  }
  float count = 0.0f;
  for (std::int64_t r = un.r0 + team.tid; r < un.r1; r += team.size) {
    count += row_valid(p.mask, p.geo, un, r) ? 1.0f : 0.0f;
  }
  return team.sum(count, scratch.reduce) * static_cast<float>((un.v1 - un.v0) * N);
}

/// Pass 2 of the backward: dx = rstd * (g - w / M * (sum g + xhat * sum g xhat)).
template <class T, int N, bool kCL, class Load>
CULAYERS_DEVICE void backward_store(const BackwardParams& p, const Unit& un, int tid, float mean, float rstd,
                                    float sg, float sgx, float valid, Load&& load) {
  const Geometry& geo = p.geo;
  T* dx = static_cast<T*>(p.dx) + un.base;
  const float m = valid;
  const float k1 = m > 0.0f ? __fdividef(sg, m) : 0.0f;
  const float k2 = m > 0.0f ? __fdividef(sgx, m) : 0.0f;
  float gam[N];
  float bet[N];
  visit<kCL, false>(
      geo, un, tid,
      [&](std::int64_t outer, bool active) {
        channel_params<kCL, N>(geo, un, outer, active, p.gamma, p.beta, gam, bet);
      },
      load,
      [&](std::int64_t r, std::int64_t cv, const Pair<T, N>& v) {
        float xhat[N];
        float dpre[N];
        backward_terms<T, N>(v.x, v.dy, mean, rstd, gam, bet, p.act, xhat, dpre);
        const float w = row_valid(p.mask, geo, un, r) ? 1.0f : 0.0f;
        Vec<T, N> out;
        CULAYERS_PRAGMA_UNROLL
        for (int j = 0; j < N; ++j) {
          out[j] = from_float<T>(rstd * (dpre[j] * gam[j] - w * (k1 + xhat[j] * k2)));
        }
        store_vec<N, CacheHint::kStreaming>(dx + r * geo.row_stride + cv * N, out);
      },
      [](std::int64_t, bool) {});
}

/// Warp and block paths of the backward: x and dy staged in shared memory, read from DRAM once.
/// Dynamic shared memory per team: the group's x vectors, its dy vectors, team_scratch_bytes.
template <class T, int N, bool kCL, bool kWarpTeam>
CULAYERS_GLOBAL void __launch_bounds__(kWarpTeam ? kWarpSize* kWarpTeamsPerBlock : kMaxBlockThreads, 1)
    backward_cached_kernel(const BackwardParams p) {
  allow_dependent_launch(); // channel_sums_kernel follows
  CULAYERS_DYNAMIC_SMEM(unsigned char, smem);
  const Geometry& geo = p.geo;
  const Team<kWarpTeam> team = Team<kWarpTeam>::make();
  const std::size_t plane =
      (static_cast<std::size_t>(geo.rows * geo.colvecs) * sizeof(Vec<T, N>) + 15) / 16 * 16;
  unsigned char* mine =
      smem + static_cast<std::size_t>(team.in_block) * (2 * plane + team_scratch_bytes(team.size, N, kCL));
  Vec<T, N>* cache_x = reinterpret_cast<Vec<T, N>*>(mine);
  Vec<T, N>* cache_dy = reinterpret_cast<Vec<T, N>*>(mine + plane);
  const Scratch<N> scratch = make_scratch<N, kCL>(mine + 2 * plane, team.size);
  const std::int64_t units = geo.batch * geo.groups;
  for (std::int64_t u = team.index; u < units; u += team.count) {
    const Unit un = make_unit<false>(geo, u);
    const float mean = load(p.mean + un.ng);
    const float rstd = load(p.rstd + un.ng);
    float sg = 0.0f;
    float sgx = 0.0f;
    backward_sums<T, N, kCL>(p, un, team, scratch, mean, rstd, sg, sgx,
                             [&](std::int64_t r, std::int64_t cv, const Pair<T, N>& v) {
                               cache_x[r * geo.colvecs + cv] = v.x;
                               cache_dy[r * geo.colvecs + cv] = v.dy;
                             });
    sg = team.sum(sg, scratch.reduce);
    sgx = team.sum(sgx, scratch.reduce);
    const float valid = unit_valid_elements(p, un, team, scratch);
    backward_store<T, N, kCL>(
        p, un, team.tid, mean, rstd, sg, sgx, valid, [&](std::int64_t r, std::int64_t cv) {
          return Pair<T, N>{cache_x[r * geo.colvecs + cv], cache_dy[r * geo.colvecs + cv]};
        });
  }
}

/// Split backward, kernel 1: a block per unit writes (sum g, sum g xhat, valid rows) and its per-channel
/// partials.
template <class T, int N, bool kCL>
CULAYERS_GLOBAL void __launch_bounds__(kSplitThreads, 1) backward_partial_kernel(const BackwardParams p) {
  allow_dependent_launch(); // backward_dx_kernel follows
  CULAYERS_DYNAMIC_SMEM(unsigned char, smem);
  const Geometry& geo = p.geo;
  const Team<false> team = Team<false>::make();
  const Scratch<N> scratch = make_scratch<N, kCL>(smem, team.size);
  const std::int64_t units = geo.batch * geo.groups * geo.splits;
  for (std::int64_t u = team.index; u < units; u += team.count) {
    const Unit un = make_unit<true>(geo, u);
    const float mean = load(p.mean + un.ng);
    const float rstd = load(p.rstd + un.ng);
    float sg = 0.0f;
    float sgx = 0.0f;
    backward_sums<T, N, kCL>(p, un, team, scratch, mean, rstd, sg, sgx,
                             [](std::int64_t, std::int64_t, const Pair<T, N>&) {});
    sg = team.sum(sg, scratch.reduce);
    sgx = team.sum(sgx, scratch.reduce);
    const float valid = unit_valid_elements(p, un, team, scratch);
    if (team.tid == 0) {
      const std::int64_t slot = group_partial_slot(geo, un.ng, un.chunk);
      store(p.group_partials + 3 * slot + 0, sg);
      store(p.group_partials + 3 * slot + 1, sgx);
      store(p.group_partials + 3 * slot + 2, valid);
    }
  }
}

/// Split backward, kernel 2: merges the group's partials in chunk order and writes dx for its chunk. Units
/// are taken last first (see "Second passes" in group_norm_internal.cuh).
template <class T, int N, bool kCL>
CULAYERS_GLOBAL void __launch_bounds__(kSplitThreads, 1) backward_dx_kernel(const BackwardParams p) {
  grid_dependency_wait();   // a dependent launch after backward_partial_kernel
  allow_dependent_launch(); // channel_sums_kernel follows
  CULAYERS_DYNAMIC_SMEM(unsigned char, smem);
  const Geometry& geo = p.geo;
  const Team<false> team = Team<false>::make();
  const Scratch<N> scratch = make_scratch<N, kCL>(smem, team.size);
  const std::int64_t units = geo.batch * geo.groups * geo.splits;
  for (std::int64_t u = team.index; u < units; u += team.count) {
    const Unit un = make_unit<true>(geo, units - 1 - u);
    const float mean = load(p.mean + un.ng);
    const float rstd = load(p.rstd + un.ng);
    float sg = 0.0f;
    float sgx = 0.0f;
    float valid = 0.0f;
    for (std::int64_t k = team.tid; k < geo.splits; k += team.size) {
      const float* part = p.group_partials + 3 * group_partial_slot(geo, un.ng, k);
      sg += load(part + 0);
      sgx += load(part + 1);
      valid += load(part + 2);
    }
    sg = team.sum(sg, scratch.reduce);
    sgx = team.sum(sgx, scratch.reduce);
    valid = team.sum(valid, scratch.reduce);
    const T* xg = static_cast<const T*>(p.x) + un.base;
    const T* dyg = static_cast<const T*>(p.dy) + un.base;
    backward_store<T, N, kCL>(p, un, team.tid, mean, rstd, sg, sgx, valid,
                              [&](std::int64_t r, std::int64_t cv) {
                                const std::int64_t off = r * geo.row_stride + cv * N;
                                return Pair<T, N>{load_vec<N, CacheHint::kStreaming>(xg + off),
                                                  load_vec<N, CacheHint::kStreaming>(dyg + off)};
                              });
  }
}

// ---- launchers -------------------------------------------------------------------------------------------

template <class T, int N, bool kCL>
Status launch_forward_typed(const Plan& plan, const ForwardParams& p, cudaStream_t stream) {
  using ::culayers::group_norm::Path;
  constexpr const char* kOp = "group_norm";
  if constexpr (kCL) {
    if (plan.path == Path::kTile) {
      return launch_forward_tile<T, N>(plan, p, stream);
    }
  }
  if (plan.path == Path::kSplit) {
    Status st = check_launch(CULAYERS_LAUNCH((forward_partial_kernel<T, N, kCL>), dim3(plan.grid),
                                             dim3(plan.threads), plan.smem, stream, p),
                             kOp);
    if (st != Status::kSuccess) {
      return st;
    }
    return check_launch(CULAYERS_LAUNCH_DEPENDENT((forward_normalize_kernel<T, N, kCL>), dim3(plan.grid),
                                                  dim3(plan.threads), plan.smem, stream, p),
                        kOp);
  }
  auto kernel = plan.path == Path::kWarp ? forward_cached_kernel<T, N, kCL, true>
                                         : forward_cached_kernel<T, N, kCL, false>;
  if (plan.smem_optin) {
    if (cudaError_t e = set_max_dynamic_smem(kernel, plan.smem); e != cudaSuccess) {
      return check_launch(e, kOp);
    }
  }
  return check_launch(CULAYERS_LAUNCH(kernel, dim3(plan.grid), dim3(plan.threads), plan.smem, stream, p),
                      kOp);
}

template <class T, int N, bool kCL>
Status launch_backward_typed(const Plan& plan, const BackwardParams& p, cudaStream_t stream) {
  using ::culayers::group_norm::Path;
  constexpr const char* kOp = "group_norm_backward";
  if constexpr (kCL) {
    if (plan.path == Path::kTile) {
      return launch_backward_tile<T, N>(plan, p, stream);
    }
  }
  if (plan.path == Path::kSplit) {
    Status st = check_launch(CULAYERS_LAUNCH((backward_partial_kernel<T, N, kCL>), dim3(plan.grid),
                                             dim3(plan.threads), plan.smem, stream, p),
                             kOp);
    if (st != Status::kSuccess) {
      return st;
    }
    return check_launch(CULAYERS_LAUNCH_DEPENDENT((backward_dx_kernel<T, N, kCL>), dim3(plan.grid),
                                                  dim3(plan.threads), plan.smem, stream, p),
                        kOp);
  }
  auto kernel = plan.path == Path::kWarp ? backward_cached_kernel<T, N, kCL, true>
                                         : backward_cached_kernel<T, N, kCL, false>;
  if (plan.smem_optin) {
    if (cudaError_t e = set_max_dynamic_smem(kernel, plan.smem); e != cudaSuccess) {
      return check_launch(e, kOp);
    }
  }
  return check_launch(CULAYERS_LAUNCH(kernel, dim3(plan.grid), dim3(plan.threads), plan.smem, stream, p),
                      kOp);
}

/// Dispatches over the vector width and the layout view.
template <class T, class F>
Status dispatch_vec(int vec, bool cl, F&& f) {
  auto with_layout = [&](auto n) { return cl ? f(n, std::true_type{}) : f(n, std::false_type{}); };
  switch (vec) {
  case 1:
    return with_layout(std::integral_constant<int, 1>{});
  case 2:
    return with_layout(std::integral_constant<int, 2>{});
  case 4:
    if constexpr (sizeof(T) * 4 <= 16) {
      return with_layout(std::integral_constant<int, 4>{});
    }
    break;
  case 8:
    if constexpr (sizeof(T) * 8 <= 16) {
      return with_layout(std::integral_constant<int, 8>{});
    }
    break;
  default:
    break;
  }
  return ::culayers::detail::set_error(Status::kErrorInternal, "group_norm: unsupported vector width %d",
                                       vec);
}

template <class T>
Status launch_forward(const Plan& plan, const ForwardParams& params, cudaStream_t stream) {
  return dispatch_vec<T>(plan.vec, params.geo.cl != 0, [&](auto n, auto cl) {
    return launch_forward_typed<T, decltype(n)::value, decltype(cl)::value>(plan, params, stream);
  });
}

template <class T>
Status launch_backward(const Plan& plan, const BackwardParams& params, cudaStream_t stream) {
  return dispatch_vec<T>(plan.vec, params.geo.cl != 0, [&](auto n, auto cl) {
    return launch_backward_typed<T, decltype(n)::value, decltype(cl)::value>(plan, params, stream);
  });
}

template <class T, bool kBackward>
Residency residency(::culayers::group_norm::Path path, int vec, bool cl, int threads) {
  using ::culayers::group_norm::Path;
  Residency r{};
  (void)dispatch_vec<T>(vec, cl, [&](auto n, auto view) {
    constexpr int N = decltype(n)::value;
    constexpr bool kCL = decltype(view)::value;
    const auto two = [&](auto first, auto second) {
      r = {resident_blocks(first, threads), resident_blocks(second, threads)};
    };
    const auto one = [&](auto kernel) {
      const int blocks = resident_blocks(kernel, threads);
      r = {blocks, blocks};
    };
    if constexpr (kCL) {
      if (path == Path::kTile) {
        if constexpr (kBackward) {
          two(backward_tile_sums_kernel<T, N>, backward_tile_dx_kernel<T, N>);
        } else {
          two(forward_tile_stats_kernel<T, N>, forward_tile_normalize_kernel<T, N>);
        }
        return Status::kSuccess;
      }
    }
    if constexpr (kBackward) {
      if (path == Path::kSplit) {
        two(backward_partial_kernel<T, N, kCL>, backward_dx_kernel<T, N, kCL>);
      } else if (path == Path::kBlock) {
        one(backward_cached_kernel<T, N, kCL, false>);
      }
    } else {
      if (path == Path::kSplit) {
        two(forward_partial_kernel<T, N, kCL>, forward_normalize_kernel<T, N, kCL>);
      } else if (path == Path::kBlock) {
        one(forward_cached_kernel<T, N, kCL, false>);
      }
    }
    return Status::kSuccess;
  });
  return r;
}

} // namespace group_norm
} // namespace kernels
CULAYERS_NAMESPACE_END
