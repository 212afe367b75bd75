// The block scheduler: CUDA threads as fibers on one OS thread, barriers and warp collectives as
// exchanges the scheduler completes once every participant has arrived, and the checks that turn
// undefined behaviour on a GPU into a clear error naming the kernel and the source line.
#include "internal.hpp"

#include <boost/context/fiber.hpp>
#include <boost/context/preallocated.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>

#if defined(CULAYERS_EMU_TSAN) && CULAYERS_EMU_TSAN
#  include <sanitizer/tsan_interface.h>
#  define CULAYERS_EMU_TSAN_ON 1
#else
#  define CULAYERS_EMU_TSAN_ON 0
#endif

namespace ctx = boost::context;

extern "C" const int warpSize = 32;

namespace culayers_emu::detail {

__thread ThreadInfo* tls_thread = nullptr;

namespace {

constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxThreads = 1024;

// Thrown at a yield point of a thread whose launch was aborted; caught at the top of the fiber.
struct AbortLaunch {};

enum class Wait : unsigned char { kNotStarted, kRunnable, kBarrier, kWarpOp, kExited };

struct PendingWarpOp {
  WarpOpKind kind = WarpOpKind::kShfl;
  unsigned mask = 0;
  std::uint64_t value = 0;
  int arg = 0;
  int width = 32;
  const char* file = "";
  int line = 0;
  std::uint64_t result = 0;
};

struct Thread {
  ThreadInfo info{};
  Wait wait = Wait::kNotStarted;
  bool started = false;
  // barrier
  BarrierKind bar_kind = BarrierKind::kPlain;
  int bar_pred = 0;
  const char* bar_file = "";
  int bar_line = 0;
  int bar_result = 0;
  PendingWarpOp op;
};

std::size_t fiber_stack_size() {
  static const std::size_t size = [] {
    std::size_t kb = CULAYERS_EMU_ASAN ? 256 : 64;
    if (const char* env = std::getenv("CULAYERS_EMU_STACK_KB")) {
      kb = std::max<std::size_t>(16, std::strtoull(env, nullptr, 10));
    }
    return kb * 1024;
  }();
  return size;
}

class Block;

// A pooled fiber: its body loops, running one CUDA thread of one block per resume cycle.
struct Worker {
  ctx::fiber fiber;
  ctx::fiber sink; // the scheduler's continuation while this worker runs
  ctx::stack_context stack{};
  Block* block = nullptr;
  unsigned index = 0;
  bool abort_requested = false;
#if CULAYERS_EMU_ASAN
  const void* sched_stack_bottom = nullptr;
  std::size_t sched_stack_size = 0;
  void* fake_stack = nullptr;
#endif
#if CULAYERS_EMU_TSAN_ON
  void* tsan_fiber = nullptr;
  void* tsan_scheduler = nullptr;
#endif

  void yield(); // back to the scheduler; throws AbortLaunch if the launch is being aborted
  void body();
};

struct LaunchState {
  const LaunchRecord* launch = nullptr;
  uint3 block_idx{};
  bool failed = false;
  std::string message;
};

class Block {
 public:
  explicit Block(std::vector<Worker*>& workers) : workers_(workers) {}

  std::uint64_t run(const LaunchRecord& launch, uint3 block_idx, unsigned char* smem, LaunchState& state);
  std::uint64_t run_threads(const LaunchRecord& launch, uint3 block_idx, unsigned char* smem,
                            LaunchState& state);
  Thread& thread(unsigned i) { return threads_[i]; }
  const LaunchRecord& launch() const { return *state_->launch; }
  LaunchState& state() { return *state_; }
  unsigned size() const { return n_; }
  void fail(unsigned thread_index, const char* file, int line, const std::string& what);
  void* smem() const { return smem_; }
#if CULAYERS_EMU_TSAN_ON
  void* barrier_sync_object() {
    return &tsan_block_sync_;
  }
  // Orders the scheduler's work (shared-memory poisoning, host code around the launch) before a block's
  // threads start, and their work before whatever follows the block.
  void* start_sync_object() {
    return &tsan_start_sync_;
  }
  void* end_sync_object() {
    return &tsan_end_sync_;
  }
  void* warp_sync_object(unsigned warp) {
    return &tsan_warp_sync_[warp];
  }
#endif

 private:
  void resume(unsigned i);
  bool resolve_warp_ops();
  bool resolve_barrier(bool& all_exited);
  void abort_all();
  std::string describe_thread(unsigned i) const;

  std::vector<Worker*>& workers_;
  Thread threads_[kMaxThreads];
  unsigned n_ = 0;
  unsigned warps_ = 0;
  LaunchState* state_ = nullptr;
  void* smem_ = nullptr;
  std::uint64_t switches_ = 0;
  std::vector<unsigned> order_;
  std::mt19937_64 rng_;
#if CULAYERS_EMU_TSAN_ON
  char tsan_block_sync_ = 0;
  char tsan_start_sync_ = 0;
  char tsan_end_sync_ = 0;
  char tsan_warp_sync_[kMaxThreads / kWarpSize] = {};
#endif
};

// Per OS thread: the fibers and the block object. Intentionally leaked at thread exit: destroying a
// suspended fiber would unwind it outside the sanitizer annotations.
struct Pool {
  std::vector<Worker*> workers;
  Block block{workers};

  Worker& worker(unsigned i);
};

thread_local Pool* tls_pool = nullptr;
thread_local Worker* tls_worker = nullptr;

Pool& pool() {
  if (tls_pool == nullptr) {
    tls_pool = new Pool();
  }
  return *tls_pool;
}

// ---- sector counting --------------------------------------------------------------------------------------

std::atomic<bool> g_sector_counting{false};

// One warp-wide access: the k-th access of the warp's lanes at one source line since their last barrier or
// warp collective (where diverged lanes have met again), loads and stores apart.
struct SectorKey {
  unsigned warp;
  const char* file;
  int line;
  bool write;
  std::uint32_t epoch;
  std::uint32_t k;
  bool operator==(const SectorKey& o) const {
    return warp == o.warp && file == o.file && line == o.line && write == o.write && epoch == o.epoch &&
           k == o.k;
  }
};
struct SectorKeyHash {
  std::size_t operator()(const SectorKey& key) const {
    std::uint64_t h = reinterpret_cast<std::uintptr_t>(key.file) * 0x9E3779B97F4A7C15ull;
    h ^= (static_cast<std::uint64_t>(key.line) << 1 | (key.write ? 1u : 0u)) * 0xBF58476D1CE4E5B9ull;
    h ^= (static_cast<std::uint64_t>(key.warp) << 32 | key.k) * 0x94D049BB133111EBull;
    h ^= static_cast<std::uint64_t>(key.epoch) * 0xD6E8FEB86659FD93ull;
    return static_cast<std::size_t>(h ^ (h >> 31));
  }
};
struct SectorGroup {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> ranges; // [begin, end) of each lane's access
};
// How many accesses a thread has made at one source line.
struct SiteCount {
  const char* file;
  int line;
  bool write;
  std::uint32_t count;
};
// The block being run's accesses (kernels run one at a time, under the API lock, and a block's threads on
// one OS thread: no locking).
struct ThreadSectors {
  std::uint32_t epoch = 0; // barriers and warp collectives passed
  std::vector<SiteCount> sites;
};
struct SectorTable {
  std::vector<ThreadSectors> per_thread;
  std::unordered_map<SectorKey, SectorGroup, SectorKeyHash> groups;
};
SectorTable g_sector_table;
// Totals per source line since reset_sector_counters (the only totals kept: sector_counters sums them):
// (file, line, write) -> (bytes, sectors).
std::map<std::tuple<const char*, int, bool>, std::pair<std::uint64_t, std::uint64_t>> g_sector_sites;

// The calling thread reached a barrier or a warp collective: its lanes (which every such point requires to
// arrive together) count their accesses afresh, so lanes that skipped an access before it (a guarded load)
// are grouped with their warp again after it.
void reconverge_sectors(unsigned thread) {
  if (thread < g_sector_table.per_thread.size()) {
    ThreadSectors& t = g_sector_table.per_thread[thread];
    ++t.epoch;
    t.sites.clear();
  }
}

void begin_block_sectors(unsigned threads) {
  g_sector_table.per_thread.assign(threads, {});
  g_sector_table.groups.clear();
}

// Charges each warp-wide access its distinct sectors.
void end_block_sectors() {
  for (auto& [key, group] : g_sector_table.groups) {
    auto& site = g_sector_sites[std::make_tuple(key.file, key.line, key.write)];
    // The union of the lanes' byte ranges (lanes reading the same bytes, a broadcast, count them once),
    // and the sectors it covers.
    std::sort(group.ranges.begin(), group.ranges.end());
    std::uintptr_t end = 0;         // of the bytes counted so far
    std::uintptr_t next_sector = 0; // sectors below it are counted
    for (const auto& [b, e] : group.ranges) {
      const std::uintptr_t from = std::max(b, end);
      if (from < e) {
        site.first += e - from;
        end = e;
      }
      const std::uintptr_t first = std::max(b / 32, next_sector);
      const std::uintptr_t last = (e - 1) / 32;
      if (first <= last) {
        site.second += last - first + 1;
        next_sector = last + 1;
      }
    }
  }
  g_sector_table.groups.clear();
}

void Worker::yield() {
  Worker* self = this;
#if CULAYERS_EMU_TSAN_ON
  __tsan_switch_to_fiber(tsan_scheduler, __tsan_switch_to_fiber_no_sync);
#endif
#if CULAYERS_EMU_ASAN
  __sanitizer_start_switch_fiber(&fake_stack, sched_stack_bottom, sched_stack_size);
#endif
  sink = std::move(sink).resume();
#if CULAYERS_EMU_ASAN
  __sanitizer_finish_switch_fiber(self->fake_stack, &self->sched_stack_bottom, &self->sched_stack_size);
#endif
  if (self->abort_requested) {
    throw AbortLaunch{};
  }
}

void Worker::body() {
  for (;;) {
#if CULAYERS_EMU_TSAN_ON
    __tsan_acquire(block->start_sync_object());
#endif
    try {
      block->launch().body();
    } catch (const AbortLaunch&) {
      // The launch failed elsewhere; this thread stops where it was.
    }
#if CULAYERS_EMU_TSAN_ON
    __tsan_release(block->end_sync_object());
#endif
    block->thread(index).wait = Wait::kExited;
    try {
      yield();
    } catch (const AbortLaunch&) {
      // Aborting an exited thread: nothing to unwind.
    }
  }
}

Worker& Pool::worker(unsigned i) {
  while (workers.size() <= i) {
    auto* w = new Worker();
    w->index = static_cast<unsigned>(workers.size());
    ctx::protected_fixedsize_stack salloc(fiber_stack_size());
    w->stack = salloc.allocate();
#if CULAYERS_EMU_TSAN_ON
    w->tsan_fiber = __tsan_create_fiber(0);
#endif
    w->fiber =
        ctx::fiber(std::allocator_arg, ctx::preallocated(w->stack.sp, w->stack.size, w->stack), salloc,
                   [w](ctx::fiber&& sink) {
#if CULAYERS_EMU_ASAN
                     __sanitizer_finish_switch_fiber(nullptr, &w->sched_stack_bottom, &w->sched_stack_size);
#endif
                     w->sink = std::move(sink);
                     w->body();
                     return std::move(w->sink);
                   });
    workers.push_back(w);
  }
  return *workers[i];
}

std::string Block::describe_thread(unsigned i) const {
  const ThreadInfo& t = threads_[i].info;
  return format("block (%u,%u,%u) thread (%u,%u,%u)", t.block_idx.x, t.block_idx.y, t.block_idx.z,
                t.thread_idx.x, t.thread_idx.y, t.thread_idx.z);
}

void Block::fail(unsigned thread_index, const char* file, int line, const std::string& what) {
  if (state_->failed) {
    return;
  }
  const LaunchRecord& l = *state_->launch;
  state_->failed = true;
  state_->message =
      format("culayers emulator: kernel '%s' (launched at %s:%d), %s: %s (at %s:%d)", l.site.kernel,
             l.site.file, l.site.line, describe_thread(thread_index).c_str(), what.c_str(), file, line);
}

void Block::resume(unsigned i) {
  Worker& w = *workers_[i];
  Thread& t = threads_[i];
  t.started = true;
  if (t.wait != Wait::kExited) {
    t.wait = Wait::kRunnable;
  }
  tls_thread = &t.info;
  ++switches_;
#if CULAYERS_EMU_TSAN_ON
  w.tsan_scheduler = __tsan_get_current_fiber();
  __tsan_switch_to_fiber(w.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
#if CULAYERS_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, static_cast<char*>(w.stack.sp) - w.stack.size, w.stack.size);
#endif
  tls_worker = &w;
  w.fiber = std::move(w.fiber).resume();
#if CULAYERS_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  tls_worker = nullptr;
  tls_thread = nullptr;
}

void Block::abort_all() {
  for (unsigned i = 0; i < n_; ++i) {
    Thread& t = threads_[i];
    if (t.wait == Wait::kExited) {
      continue;
    }
    if (!t.started) {
      t.wait = Wait::kExited;
      continue;
    }
    workers_[i]->abort_requested = true;
    resume(i);
    workers_[i]->abort_requested = false;
  }
}

// Completes every warp collective whose participants have all arrived. Returns true on progress.
bool Block::resolve_warp_ops() {
  bool progress = false;
  for (unsigned w = 0; w < warps_; ++w) {
    const unsigned first = w * kWarpSize;
    const unsigned lanes = std::min(kWarpSize, n_ - first);
    // __syncwarp: a lane is released once every lane of its own mask waits at a __syncwarp (decided
    // on a snapshot, so lanes with different masks release consistently).
    unsigned at_syncwarp = 0;
    for (unsigned l = 0; l < lanes; ++l) {
      const Thread& t = threads_[first + l];
      if (t.wait == Wait::kWarpOp && t.op.kind == WarpOpKind::kSyncWarp) {
        at_syncwarp |= 1u << l;
      }
    }
    for (unsigned l = 0; l < lanes; ++l) {
      Thread& t = threads_[first + l];
      if (!(at_syncwarp & (1u << l))) {
        continue;
      }
      // CUDA: every non-exited lane named in the mask must reach the __syncwarp; exited lanes are absent.
      unsigned exited = 0;
      for (unsigned m = 0; m < lanes; ++m) {
        if (threads_[first + m].wait == Wait::kExited) {
          exited |= 1u << m;
        }
      }
      if ((t.op.mask & ~at_syncwarp & ~exited) == 0) {
        t.wait = Wait::kRunnable;
        progress = true;
      }
    }
    for (unsigned l = 0; l < lanes; ++l) {
      Thread& t = threads_[first + l];
      if (t.wait != Wait::kWarpOp || t.op.kind == WarpOpKind::kSyncWarp) {
        continue;
      }
      const PendingWarpOp& op = t.op;
      // Every non-exited lane named in the mask must be waiting at a warp collective too (CUDA: exited lanes
      // named in the mask are absent; a shuffle reading one is reported below).
      bool ready = true;
      unsigned present = 0; // the mask's lanes that take part
      for (unsigned m = 0; m < lanes; ++m) {
        if (!(op.mask & (1u << m))) {
          continue;
        }
        const Thread& o = threads_[first + m];
        if (o.wait == Wait::kExited) {
          continue;
        }
        present |= 1u << m;
        if (o.wait != Wait::kWarpOp) {
          ready = false;
          break;
        }
        if (o.op.kind != op.kind || o.op.mask != op.mask) {
          fail(first + l, op.file, op.line,
               format("lanes %u and %u of warp %u are at different warp collectives (mask 0x%08x here, "
                      "mask 0x%08x at %s:%d)",
                      l, m, w, op.mask, o.op.mask, o.op.file, o.op.line));
          return false;
        }
      }
      if (!ready) {
        continue;
      }
      // Complete the whole group (all lanes of the mask) at once.
      std::uint64_t ballot = 0;
      for (unsigned m = 0; m < lanes; ++m) {
        if ((present & (1u << m)) && threads_[first + m].op.value != 0) {
          ballot |= 1u << m;
        }
      }
      for (unsigned m = 0; m < lanes; ++m) {
        if (!(present & (1u << m))) {
          continue;
        }
        Thread& p = threads_[first + m];
        const PendingWarpOp& q = p.op;
        const unsigned width = static_cast<unsigned>(q.width);
        const unsigned seg_start = m & ~(width - 1);
        const unsigned seg_end = seg_start + width - 1;
        std::uint64_t result = q.value;
        int src = -1;
        switch (q.kind) {
        case WarpOpKind::kShfl:
          src = static_cast<int>(seg_start + (static_cast<unsigned>(q.arg) & (width - 1)));
          break;
        case WarpOpKind::kShflUp: {
          const int j = static_cast<int>(m) - q.arg;
          src = j >= static_cast<int>(seg_start) ? j : -1;
          break;
        }
        case WarpOpKind::kShflDown: {
          const unsigned j = m + static_cast<unsigned>(q.arg);
          src = j <= seg_end ? static_cast<int>(j) : -1;
          break;
        }
        case WarpOpKind::kShflXor: {
          const unsigned j = (m ^ static_cast<unsigned>(q.arg)) & (kWarpSize - 1);
          src = j <= seg_end ? static_cast<int>(j) : -1;
          break;
        }
        case WarpOpKind::kBallot:
          result = ballot;
          break;
        case WarpOpKind::kAny:
          result = ballot != 0;
          break;
        case WarpOpKind::kAll:
          result = ballot == present;
          break;
        case WarpOpKind::kMatchAny: {
          std::uint64_t same = 0;
          for (unsigned k = 0; k < lanes; ++k) {
            if ((present & (1u << k)) && threads_[first + k].op.value == q.value) {
              same |= 1u << k;
            }
          }
          result = same;
          break;
        }
        case WarpOpKind::kSyncWarp:
          break;
        }
        if (src >= 0) {
          if (static_cast<unsigned>(src) >= lanes || !(op.mask & (1u << src))) {
            fail(first + m, q.file, q.line,
                 format("shuffle reads lane %d, which is not in the mask 0x%08x of this warp (%u lanes in "
                        "the block's last warp)",
                        src, op.mask, lanes));
            return false;
          }
          if (!(present & (1u << src))) {
            fail(first + m, q.file, q.line,
                 format("shuffle with mask 0x%08x reads lane %d, which has exited (its value is undefined)",
                        op.mask, src));
            return false;
          }
          result = threads_[first + static_cast<unsigned>(src)].op.value;
        }
        p.op.result = result;
      }
      for (unsigned m = 0; m < lanes; ++m) {
        if (present & (1u << m)) {
          threads_[first + m].wait = Wait::kRunnable;
        }
      }
      progress = true;
    }
  }
  return progress;
}

bool Block::resolve_barrier(bool& all_exited) {
  unsigned at_barrier = 0;
  unsigned exited = 0;
  int first = -1;
  for (unsigned i = 0; i < n_; ++i) {
    if (threads_[i].wait == Wait::kBarrier) {
      ++at_barrier;
      if (first < 0) {
        first = static_cast<int>(i);
      }
    } else if (threads_[i].wait == Wait::kExited) {
      ++exited;
    }
  }
  all_exited = exited == n_;
  if (all_exited || at_barrier == 0) {
    return false;
  }
  const Thread& f = threads_[first];
  if (at_barrier + exited == n_) {
    if (exited > 0) {
      unsigned gone = 0;
      while (threads_[gone].wait != Wait::kExited) {
        ++gone;
      }
      fail(static_cast<unsigned>(first), f.bar_file, f.bar_line,
           format("__syncthreads waits for %s, which returned before reaching it (%u of %u threads exited)",
                  describe_thread(gone).c_str(), exited, n_));
      return false;
    }
    for (unsigned i = 0; i < n_; ++i) {
      const Thread& t = threads_[i];
      if (t.bar_line != f.bar_line || t.bar_kind != f.bar_kind ||
          (t.bar_file != f.bar_file && std::strcmp(t.bar_file, f.bar_file) != 0)) {
        fail(i, t.bar_file, t.bar_line,
             format("threads wait at different barriers: this one here, %s at %s:%d",
                    describe_thread(static_cast<unsigned>(first)).c_str(), f.bar_file, f.bar_line));
        return false;
      }
    }
    int count = 0;
    for (unsigned i = 0; i < n_; ++i) {
      count += threads_[i].bar_pred != 0;
    }
    int result = 0;
    switch (f.bar_kind) {
    case BarrierKind::kPlain:
      break;
    case BarrierKind::kCount:
      result = count;
      break;
    case BarrierKind::kAnd:
      result = count == static_cast<int>(n_);
      break;
    case BarrierKind::kOr:
      result = count > 0;
      break;
    }
    for (unsigned i = 0; i < n_; ++i) {
      threads_[i].bar_result = result;
      threads_[i].wait = Wait::kRunnable;
    }
    return true;
  }
  return false;
}

// Static __shared__ variables (device.hpp puts them in the section culayers_emu_shared outside ASan
// builds): filled with 0xFF before every block, as static shared memory starts with garbage on a GPU. The
// linker defines the section's bounds when some object in this module has one (weak: none otherwise).
extern "C" {
extern unsigned char __start_culayers_emu_shared[] __attribute__((weak));
extern unsigned char __stop_culayers_emu_shared[] __attribute__((weak));
}

void poison_static_shared() {
  unsigned char* begin = __start_culayers_emu_shared;
  unsigned char* end = __stop_culayers_emu_shared;
  if (begin != nullptr && end != nullptr && end > begin) {
    std::memset(begin, 0xFF, static_cast<std::size_t>(end - begin));
  }
}

std::uint64_t Block::run(const LaunchRecord& launch, uint3 block_idx, unsigned char* smem,
                         LaunchState& state) {
  poison_static_shared();
#if CULAYERS_EMU_TSAN_ON
  __tsan_release(start_sync_object());
#endif
  const bool sectors = g_sector_counting.load(std::memory_order_relaxed);
  if (sectors) {
    begin_block_sectors(launch.block.x * launch.block.y * launch.block.z);
  }
  const std::uint64_t switches = run_threads(launch, block_idx, smem, state);
#if CULAYERS_EMU_TSAN_ON
  __tsan_acquire(end_sync_object());
#endif
  if (sectors) {
    end_block_sectors();
  }
  return switches;
}

std::uint64_t Block::run_threads(const LaunchRecord& launch, uint3 block_idx, unsigned char* smem,
                                 LaunchState& state) {
  state_ = &state;
  smem_ = smem;
  n_ = launch.block.x * launch.block.y * launch.block.z;
  warps_ = (n_ + kWarpSize - 1) / kWarpSize;
  switches_ = 0;
  for (unsigned i = 0; i < n_; ++i) {
    Worker& w = pool().worker(i);
    w.block = this;
    w.abort_requested = false;
    Thread& t = threads_[i];
    t = Thread{};
    t.info.thread_idx = uint3{i % launch.block.x, (i / launch.block.x) % launch.block.y,
                              i / (launch.block.x * launch.block.y)};
    t.info.block_idx = block_idx;
    t.info.block_dim = launch.block;
    t.info.grid_dim = launch.grid;
    t.info.linear = i;
    t.info.lane = i % kWarpSize;
    t.info.warp = i / kWarpSize;
    t.info.must_wait = launch.site.dependent;
  }
  const std::uint64_t seed = schedule_seed();
  order_.resize(n_);
  for (unsigned i = 0; i < n_; ++i) {
    order_[i] = i;
  }
  if (seed != 0) {
    rng_.seed(seed ^ (static_cast<std::uint64_t>(block_idx.x) * 0x9E3779B97F4A7C15ull) ^
              (static_cast<std::uint64_t>(block_idx.y) << 32) ^ block_idx.z);
  }
  for (;;) {
    if (seed != 0) {
      std::shuffle(order_.begin(), order_.end(), rng_);
    }
    for (unsigned i : order_) {
      Thread& t = threads_[i];
      if (t.wait == Wait::kNotStarted || t.wait == Wait::kRunnable) {
        resume(i);
        if (state.failed) {
          abort_all();
          return switches_;
        }
      }
    }
    if (resolve_warp_ops()) {
      continue;
    }
    if (state.failed) {
      abort_all();
      return switches_;
    }
    bool all_exited = false;
    if (resolve_barrier(all_exited)) {
      continue;
    }
    if (all_exited) {
      return switches_;
    }
    if (!state.failed) {
      // Nothing can move: a warp collective waits for lanes parked at a barrier (or vice versa).
      for (unsigned i = 0; i < n_; ++i) {
        const Thread& t = threads_[i];
        if (t.wait == Wait::kWarpOp) {
          fail(i, t.op.file, t.op.line,
               format("warp collective with mask 0x%08x can never complete (other lanes of the mask wait "
                      "at __syncthreads or elsewhere)",
                      t.op.mask));
          break;
        }
        if (t.wait == Wait::kBarrier) {
          fail(i, t.bar_file, t.bar_line, "__syncthreads can never complete (deadlock)");
          break;
        }
      }
    }
    abort_all();
    return switches_;
  }
}

Block& current_block() {
  return *tls_worker->block;
}

Thread& current() {
  return current_block().thread(tls_worker->index);
}

// Called by the running thread: park and wait for the scheduler.
void park() {
  tls_worker->yield();
}

} // namespace

int barrier(BarrierKind kind, int predicate, const char* file, int line) {
  Thread& t = current();
  if (g_sector_counting.load(std::memory_order_relaxed)) {
    reconverge_sectors(t.info.linear);
  }
  t.wait = Wait::kBarrier;
  t.bar_kind = kind;
  t.bar_pred = predicate;
  t.bar_file = file;
  t.bar_line = line;
#if CULAYERS_EMU_TSAN_ON
  __tsan_release(current_block().barrier_sync_object());
#endif
  park();
#if CULAYERS_EMU_TSAN_ON
  __tsan_acquire(current_block().barrier_sync_object());
#endif
  return current().bar_result;
}

std::uint64_t warp_op(WarpOpKind kind, unsigned mask, std::uint64_t value, int arg, int width,
                      const char* file, int line) {
  Block& b = current_block();
  Thread& t = current();
  const unsigned lane = t.info.lane;
  const unsigned first = t.info.warp * kWarpSize;
  const unsigned lanes = std::min(kWarpSize, b.size() - first);
  const unsigned existing = lanes == kWarpSize ? 0xffffffffu : ((1u << lanes) - 1u);
  if (!(mask & (1u << lane))) {
    device_fail(file, line, "warp collective called by lane %u, which is not in its own mask 0x%08x", lane,
                mask);
  }
  if (mask & ~existing) {
    device_fail(file, line,
                "warp collective mask 0x%08x names lanes that do not exist: this warp has %u lanes "
                "(block of %u threads)",
                mask, lanes, b.size());
  }
  if (width <= 0 || width > static_cast<int>(kWarpSize) || (width & (width - 1)) != 0) {
    device_fail(file, line, "shuffle width %d is not a power of two in [1, 32]", width);
  }
  if (g_sector_counting.load(std::memory_order_relaxed)) {
    reconverge_sectors(t.info.linear);
  }
  t.wait = Wait::kWarpOp;
  t.op = PendingWarpOp{kind, mask, value, arg, width, file, line, 0};
#if CULAYERS_EMU_TSAN_ON
  const bool sync = kind == WarpOpKind::kSyncWarp;
  if (sync) {
    __tsan_release(b.warp_sync_object(t.info.warp));
  }
#endif
  park();
#if CULAYERS_EMU_TSAN_ON
  if (sync) {
    __tsan_acquire(current_block().warp_sync_object(current().info.warp));
  }
#endif
  return current().op.result;
}

unsigned active_mask() {
  Block& b = current_block();
  const Thread& t = current();
  const unsigned first = t.info.warp * kWarpSize;
  const unsigned lanes = std::min(kWarpSize, b.size() - first);
  unsigned mask = 0;
  for (unsigned m = 0; m < lanes; ++m) {
    if (b.thread(first + m).wait != Wait::kExited) {
      mask |= 1u << m;
    }
  }
  return mask;
}

void* dynamic_smem() {
  return current_block().smem();
}

void device_fail(const char* file, int line, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string what = vformat(fmt, args);
  va_end(args);
  if (tls_worker == nullptr) {
    // Called outside a kernel (host code using a device helper): nothing to abort but the process.
    std::fprintf(stderr, "culayers emulator: %s (at %s:%d)\n", what.c_str(), file, line);
    std::abort();
  }
  current_block().fail(tls_worker->index, file, line, what);
  throw AbortLaunch{};
}

cudaError_t execute_launch(const LaunchRecord& launch) {
  Pool& p = pool();
  LaunchState state;
  state.launch = &launch;
  // Dynamic shared memory: exact size under ASan (overflow is a report); elsewhere a guard zone after it,
  // checked after every block (catches overflowing writes).
  constexpr std::size_t kGuard = CULAYERS_EMU_ASAN ? 0 : 256;
  const std::size_t smem_bytes = launch.dynamic_smem;
  void* raw = nullptr;
  if (posix_memalign(&raw, 128, smem_bytes + kGuard) != 0) {
    report_error(format("culayers emulator: kernel '%s': cannot allocate %zu bytes of dynamic shared memory",
                        launch.site.kernel, smem_bytes));
    return cudaErrorMemoryAllocation;
  }
  auto* smem = static_cast<unsigned char*>(raw);
  std::uint64_t blocks = 0;
  std::uint64_t switches = 0;
  cudaError_t result = cudaSuccess;
  // Block order: ascending with schedule seed 0; otherwise the permutation k -> (a k + b) mod total with
  // a coprime to total, both from the seed, so a kernel whose result depends on the order its blocks run
  // in (one block reading what another wrote in the same launch) shows up under another seed.
  const std::uint64_t gx = launch.grid.x;
  const std::uint64_t gy = launch.grid.y;
  const std::uint64_t total = gx * gy * launch.grid.z;
  const std::uint64_t seed = schedule_seed();
  std::uint64_t step = 1;
  std::uint64_t start = 0;
  if (seed != 0 && total > 1) {
    step = (seed * 0x9E3779B97F4A7C15ull | 1u) % total;
    auto gcd = [](std::uint64_t a, std::uint64_t b) {
      while (b != 0) {
        const std::uint64_t t = a % b;
        a = b;
        b = t;
      }
      return a;
    };
    while (step == 0 || gcd(step, total) != 1) {
      step = (step + 1) % total;
    }
    start = (seed * 0xD1B54A32D192ED03ull >> 17) % total; // mixed: small seeds too start anywhere
  }
  std::uint64_t linear = start; // (start + k * step) mod total; sums stay below 2^64 (total <= 2^63)
  for (std::uint64_t k = 0; k < total && result == cudaSuccess; ++k, linear = (linear + step) % total) {
    const auto x = static_cast<unsigned>(linear % gx);
    const auto y = static_cast<unsigned>((linear / gx) % gy);
    const auto z = static_cast<unsigned>(linear / (gx * gy));
    std::memset(smem, 0xFF, smem_bytes + kGuard);
    state.block_idx = uint3{x, y, z};
    switches += p.block.run(launch, state.block_idx, smem != nullptr ? smem : nullptr, state);
    ++blocks;
    if (!state.failed) {
      for (std::size_t g = 0; g < kGuard; ++g) {
        if (smem[smem_bytes + g] != 0xFF) {
          state.failed = true;
          state.message =
              format("culayers emulator: kernel '%s' (launched at %s:%d), block (%u,%u,%u): dynamic shared "
                     "memory overflow: byte %zu past the end of the %zu-byte buffer was written",
                     launch.site.kernel, launch.site.file, launch.site.line, x, y, z, g, smem_bytes);
          break;
        }
      }
    }
    if (state.failed) {
      report_error(state.message);
      result = cudaErrorLaunchFailure;
    }
  }
  std::free(raw);
  count_launch_stats(blocks,
                     blocks * static_cast<std::uint64_t>(launch.block.x) * launch.block.y * launch.block.z,
                     switches);
  return result;
}

bool sector_counting_on() {
  return g_sector_counting.load(std::memory_order_relaxed);
}

void record_sector_access(const void* p, std::size_t bytes, bool write, const char* file, int line) {
  if (tls_worker == nullptr || bytes == 0) {
    return;
  }
  const unsigned i = tls_worker->index;
  if (i >= g_sector_table.per_thread.size()) {
    return; // counting was switched on while this block ran
  }
  ThreadSectors& mine = g_sector_table.per_thread[i];
  std::vector<SiteCount>& sites = mine.sites;
  std::uint32_t k = 0;
  auto it = std::find_if(sites.begin(), sites.end(), [&](const SiteCount& c) {
    return c.file == file && c.line == line && c.write == write;
  });
  if (it == sites.end()) {
    sites.push_back(SiteCount{file, line, write, 1});
  } else {
    k = it->count++;
  }
  SectorGroup& g = g_sector_table.groups[SectorKey{i / kWarpSize, file, line, write, mine.epoch, k}];
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  g.ranges.emplace_back(addr, addr + bytes);
}

} // namespace culayers_emu::detail

namespace culayers_emu {

void set_sector_counting(bool on) {
  detail::g_sector_counting = on;
}
bool sector_counting() {
  return detail::g_sector_counting.load();
}
SectorCounters sector_counters() {
  std::lock_guard<std::recursive_mutex> lock(detail::api_mutex());
  SectorCounters c;
  for (const auto& [key, v] : detail::g_sector_sites) {
    (std::get<2>(key) ? c.write_bytes : c.read_bytes) += v.first;
    (std::get<2>(key) ? c.write_sectors : c.read_sectors) += v.second;
  }
  return c;
}
std::vector<SectorSite> sector_sites() {
  std::lock_guard<std::recursive_mutex> lock(detail::api_mutex());
  // One entry per file name and line: the same line compiled into two translation units may carry two
  // copies of its file name.
  std::map<std::tuple<std::string, int, bool>, SectorSite> merged;
  for (const auto& [key, v] : detail::g_sector_sites) {
    const auto [file, line, write] = key;
    SectorSite& site =
        merged
            .try_emplace(std::make_tuple(std::string(file), line, write), SectorSite{file, line, write, 0, 0})
            .first->second;
    site.bytes += v.first;
    site.sectors += v.second;
  }
  std::vector<SectorSite> out;
  for (const auto& [key, site] : merged) {
    out.push_back(site);
  }
  std::sort(out.begin(), out.end(),
            [](const SectorSite& a, const SectorSite& b) { return a.bytes > b.bytes; });
  return out;
}
void reset_sector_counters() {
  std::lock_guard<std::recursive_mutex> lock(detail::api_mutex());
  detail::g_sector_sites.clear();
}

} // namespace culayers_emu
