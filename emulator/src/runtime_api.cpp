// The CUDA runtime API on the emulator: memory (garbage-filled, registered), streams (immediate or
// deferred), events, graph capture and replay, device properties of a small fake device, and the
// launch entry point with CUDA's launch validation.
#include "internal.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <thread>

namespace culayers_emu::detail {
struct Graph;
}

// The runtime's opaque handle types, defined here (the CUDA headers only declare them).
struct CUstream_st {
  unsigned flags = 0;
  bool legacy = false;
  std::uint64_t last_seq = 0;
  culayers_emu::detail::Graph* capture = nullptr;
  cudaStreamCaptureMode capture_mode = cudaStreamCaptureModeGlobal;
  std::uint64_t capture_id = 0;   // of the capture in progress (unique in the process)
  std::thread::id capture_thread; // the thread that began it
  bool capture_invalidated = false;
};

struct CUevent_st {
  unsigned flags = 0;
  bool recorded = false;
  bool completed = false;
  std::uint64_t record_seq = 0;
  std::uint64_t record_generation = 0; // records outside capture so far
  std::uint64_t captured_into = 0; // capture_id of its latest record's capture; 0: recorded outside capture
  std::chrono::steady_clock::time_point time{};
};

namespace culayers_emu::detail {

using Work = std::function<cudaError_t()>;

struct Node {
  const char* what; // "kernel", "memcpy", "memset", "event", "host"
  Work work;
  CUevent_st* event = nullptr; // an event record: replayed as a fresh record of this event
};

struct Graph {
  std::vector<Node> nodes;
};

} // namespace culayers_emu::detail

struct CUgraph_st : culayers_emu::detail::Graph {};
struct CUgraphExec_st {
  std::vector<culayers_emu::detail::Node> nodes;
};

namespace culayers_emu {
namespace detail {
namespace {

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

std::uint64_t env_u64(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtoull(v, nullptr, 0) : 0;
}

/// The fake device's memory (the default of set_device_memory_limit).
constexpr std::size_t kFakeMemory = std::size_t{16} << 30;

/// The device memory limit a process starts with: CULAYERS_EMU_DEVICE_MEMORY_MB (1 MiB to 16 GiB), else
/// kFakeMemory. Lets a program that links the emulated library run out of device memory early, to test its
/// own out-of-memory paths.
std::size_t initial_memory_limit() {
  const std::uint64_t mb = env_u64("CULAYERS_EMU_DEVICE_MEMORY_MB");
  return mb >= 1 && mb <= (kFakeMemory >> 20) ? static_cast<std::size_t>(mb) << 20 : kFakeMemory;
}

/// Bytes of freed device memory held back by default (set_free_quarantine): enough for every buffer a
/// test of this project frees between two allocations, small beside the CI machine's memory.
constexpr std::size_t kDefaultQuarantine = std::size_t{256} << 20;

/// The quarantine a process starts with: CULAYERS_EMU_QUARANTINE_MB when it is a decimal count of MiB from
/// 0 (frees at once) to 1 TiB, else kDefaultQuarantine.
std::size_t initial_quarantine() {
  const char* v = std::getenv("CULAYERS_EMU_QUARANTINE_MB");
  if (v == nullptr || v[0] < '0' || v[0] > '9') {
    return kDefaultQuarantine;
  }
  char* end = nullptr;
  const unsigned long long mb = std::strtoull(v, &end, 10);
  return *end == '\0' && mb <= (1ull << 20) ? static_cast<std::size_t>(mb) << 20 : kDefaultQuarantine;
}

/// What a held block is counted as: its size rounded up to the allocator's 256-byte alignment, plus a
/// header's worth, so that many small frees cannot hold several times the quarantine's bytes.
std::size_t quarantine_charge(std::size_t size) {
  return (size + 255) / 256 * 256 + 64;
}

/// A freed block held back from the heap (set_free_quarantine).
struct Freed {
  std::uintptr_t base;
  std::size_t size;
  const char* api; // the call that freed it
};

struct Runtime {
  std::recursive_mutex mutex;
  bool deferred = env_flag("CULAYERS_EMU_DEFERRED");
  std::uint64_t seed = env_u64("CULAYERS_EMU_SCHEDULE_SEED");
  bool to_stderr = true;
  std::string message;
  std::map<std::uintptr_t, Allocation> allocations;
  std::uint64_t generation = 1;
  std::map<const void*, int> max_dynamic_smem;
  std::set<CUstream_st*> streams;
  std::set<CUevent_st*> events;
  CUstream_st legacy_stream;
  std::deque<std::pair<std::uint64_t, Work>> queue; // deferred work, in enqueue order
  std::uint64_t next_seq = 1;
  std::uint64_t next_capture_id = 0;
  std::size_t active_captures = 0;
  std::size_t device_bytes = 0;                        // MemKind::kDevice only: what the memory limit counts
  std::size_t memory_limit = initial_memory_limit();   // set_device_memory_limit
  std::deque<std::uintptr_t> quarantine;               // held blocks' addresses, oldest first
  std::map<std::uintptr_t, Freed> quarantined;         // the held blocks by address (freed_note's lookup)
  std::size_t quarantine_bytes = 0;                    // their sizes' sum
  std::size_t quarantine_limit = initial_quarantine(); // set_free_quarantine
  Stats stats;

  Runtime() { legacy_stream.legacy = true; }
};

Runtime& rt() {
  static Runtime* r = new Runtime(); // never destroyed: usable from static destructors
  return *r;
}

std::atomic<std::uint64_t> g_bytes_read{0};
std::atomic<std::uint64_t> g_bytes_written{0};
thread_local cudaError_t tls_last_error = cudaSuccess;

constexpr unsigned char kFillByte = 0xFF; // NaN in every float format, -1 in every integer one
/// Multiprocessors the fake device reports: 4, or CULAYERS_EMU_SM_COUNT (1 to 1024) to plan as a larger
/// GPU does (132: an H100 SXM), read once.
int sm_count() {
  static const int count = [] {
    const std::uint64_t v = env_u64("CULAYERS_EMU_SM_COUNT");
    return v >= 1 && v <= 1024 ? static_cast<int>(v) : 4;
  }();
  return count;
}
constexpr int kMaxSmemPerBlock = 48 * 1024;
constexpr int kMaxSmemPerBlockOptin = 227 * 1024;
constexpr int kSmemPerSm = 228 * 1024;

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) {
    tls_last_error = e;
  }
  return e;
}

cudaError_t fail_api(cudaError_t e, const std::string& message) {
  report_error("culayers emulator: " + message);
  return set_error(e);
}

using Lock = std::lock_guard<std::recursive_mutex>;

CUstream_st* resolve(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) {
    return &rt().legacy_stream;
  }
  return rt().streams.count(s) ? s : nullptr;
}

// Runs deferred work up to and including sequence number `seq`; returns the first error.
cudaError_t flush_until(std::uint64_t seq) {
  Runtime& r = rt();
  cudaError_t first = cudaSuccess;
  while (!r.queue.empty() && r.queue.front().first <= seq) {
    Work w = std::move(r.queue.front().second);
    r.queue.pop_front();
    cudaError_t e = w();
    if (e != cudaSuccess && first == cudaSuccess) {
      first = e;
    }
  }
  return set_error(first);
}

cudaError_t flush_all() {
  return flush_until(~std::uint64_t{0});
}

thread_local cudaStreamCaptureMode tls_capture_mode =
    cudaStreamCaptureModeGlobal; // the thread's interaction mode

/// CUDA's rule for a potentially unsafe call (cudaMalloc, a synchronous copy, a synchronization) made by this
/// thread while captures are active: under the thread's interaction mode
/// (cudaThreadExchangeStreamCaptureMode)
///  - relaxed: allowed;
///  - thread-local: refused while this thread has a capture not begun in relaxed mode;
///  - global (the default): also refused while another thread has a capture begun in global mode.
/// A refused call invalidates the captures it conflicts with. `always` (a call that necessarily conflicts
/// with any capture, such as cudaDeviceSynchronize) is refused whatever the modes, and invalidates them all.
bool capture_violation(const char* api, bool always = false) {
  Runtime& r = rt();
  if (r.active_captures == 0) {
    return false;
  }
  const std::thread::id me = std::this_thread::get_id();
  bool conflict = false;
  for (CUstream_st* s : r.streams) {
    if (s->capture == nullptr) {
      continue;
    }
    const bool own = s->capture_thread == me && s->capture_mode != cudaStreamCaptureModeRelaxed;
    const bool other = s->capture_thread != me && s->capture_mode == cudaStreamCaptureModeGlobal &&
                       tls_capture_mode == cudaStreamCaptureModeGlobal;
    if (always || (tls_capture_mode != cudaStreamCaptureModeRelaxed && (own || other))) {
      s->capture_invalidated = true;
      conflict = true;
    }
  }
  if (conflict) {
    report_error(format("culayers emulator: %s called while a stream is being captured into a graph "
                        "(not allowed under this thread's capture mode; the capture is invalidated)",
                        api));
  }
  return conflict;
}

/// Work on the legacy default stream synchronizes with every blocking stream (not those created with
/// cudaStreamNonBlocking), so it conflicts with a blocking stream's capture whatever the modes.
bool legacy_stream_conflict() {
  Runtime& r = rt();
  bool conflict = false;
  for (CUstream_st* s : r.streams) {
    if (s->capture != nullptr && (s->flags & cudaStreamNonBlocking) == 0) {
      s->capture_invalidated = true;
      conflict = true;
    }
  }
  if (conflict) {
    report_error("culayers emulator: work on the legacy default stream while a blocking stream is being "
                 "captured into a graph (an implicit synchronization; the capture is invalidated)");
  }
  return conflict;
}

/// A synchronous call that runs on the legacy stream (cudaMemcpy, the symbol copies, synchronizing the legacy
/// stream): refused by the capture rules (capture_violation) and, whatever the modes, while a blocking stream
/// is captured (an implicit synchronization). The error to return, or cudaSuccess.
cudaError_t legacy_sync_conflict(const char* api) {
  if (rt().active_captures == 0) {
    return cudaSuccess;
  }
  if (capture_violation(api)) {
    return set_error(cudaErrorStreamCaptureUnsupported);
  }
  return legacy_stream_conflict() ? set_error(cudaErrorStreamCaptureImplicit) : cudaSuccess;
}

// Enqueues work on a stream: records it into the capturing graph, queues it (deferred mode) or runs it.
cudaError_t enqueue(CUstream_st* s, const char* what, Work work) {
  Runtime& r = rt();
  if (s->capture != nullptr) {
    if (s->capture_invalidated) {
      return set_error(cudaErrorStreamCaptureInvalidated);
    }
    s->capture->nodes.push_back(Node{what, std::move(work)});
    return cudaSuccess;
  }
  if (s->legacy && r.active_captures > 0 && legacy_stream_conflict()) {
    return set_error(cudaErrorStreamCaptureImplicit);
  }
  const std::uint64_t seq = r.next_seq++;
  s->last_seq = seq;
  if (r.deferred) {
    r.queue.emplace_back(seq, std::move(work));
    return cudaSuccess;
  }
  return set_error(work());
}

/// cudaEventRecord of a live event on a resolved stream, and the replay of a graph's event node (a fresh
/// record of its event). A record outside capture is the event's latest: an earlier record's completion,
/// still queued, must not mark it complete (generation 0: recorded into a graph, whose replays re-record).
cudaError_t record_event(CUevent_st* event, CUstream_st* s) {
  const bool captured = s->capture != nullptr;
  const CUevent_st before = *event;
  const std::uint64_t generation = captured ? 0 : ++event->record_generation;
  if (!captured) {
    event->recorded = true;
    event->completed = false;
  }
  cudaError_t e = enqueue(s, "event", [event, generation] {
    if (rt().events.count(event) && (generation == 0 || generation == event->record_generation)) {
      event->completed = true;
      event->recorded = true;
      event->time = std::chrono::steady_clock::now();
    }
    return cudaSuccess;
  });
  if (!captured) {
    if (e != cudaSuccess) {
      *event = before; // not recorded: the event stays as it was
    } else {
      event->record_seq = s->last_seq;
      event->captured_into = 0;
    }
  } else if (e == cudaSuccess) {
    event->captured_into = s->capture_id;
    s->capture->nodes.back().event = event;
  }
  return e;
}

bool device_range(const void* p, std::size_t bytes) {
  Allocation a;
  return find_allocation(p, bytes, &a);
}

void* allocate(std::size_t size, MemKind kind) {
  void* p = nullptr;
  // Exact size (ASan then reports the first byte past the end); 256-byte alignment as cudaMalloc.
  if (posix_memalign(&p, 256, size == 0 ? 1 : size) != 0) {
    return nullptr;
  }
  std::memset(p, kFillByte, size);
  register_allocation(p, size, kind);
  return p;
}

/// A device allocation (cudaMalloc, cudaMallocAsync) within the device memory limit:
/// cudaErrorMemoryAllocation, with a message naming `api`, for one that would take the device's allocations
/// past it (as a GPU refuses one beyond its free memory).
cudaError_t allocate_device(void** ptr, std::size_t size, const char* api) {
  Runtime& r = rt();
  *ptr = nullptr;
  if (size == 0) {
    return cudaSuccess;
  }
  auto over = [&r, size] { return size > r.memory_limit - std::min(r.memory_limit, r.device_bytes); };
  if (over() && r.deferred) {
    // Frees still queued on deferred streams release their bytes first (a stream-ordered pool reuses them).
    if (const cudaError_t e = flush_all(); e != cudaSuccess) {
      return e; // a queued kernel's fault, reported here as the GPU reports an earlier asynchronous error
    }
  }
  if (over()) {
    return fail_api(cudaErrorMemoryAllocation,
                    format("%s(%zu): out of device memory (%zu of %zu bytes in use)", api, size,
                           r.device_bytes, r.memory_limit));
  }
  *ptr = allocate(size, MemKind::kDevice);
  return *ptr != nullptr ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}

/// Returns the oldest quarantined blocks to the heap until the rest fit the quarantine's limit.
void trim_quarantine(Runtime& r) {
  while (r.quarantine_bytes > r.quarantine_limit && !r.quarantine.empty()) {
    const auto held = r.quarantined.find(r.quarantine.front());
    const Freed f = held->second;
    r.quarantine.pop_front();
    r.quarantined.erase(held);
    r.quarantine_bytes -= quarantine_charge(f.size);
#if CULAYERS_EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(reinterpret_cast<void*>(f.base), f.size);
#endif
    std::free(reinterpret_cast<void*>(f.base));
  }
}

cudaError_t release(void* p, MemKind expected, const char* api) {
  if (p == nullptr) {
    return cudaSuccess;
  }
  // Checked before anything changes: a refused free leaves the allocation (and the memory accounting) as it
  // was.
  const auto it = rt().allocations.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == rt().allocations.end()) {
    return fail_api(
        cudaErrorInvalidValue,
        format("%s(%p): not the start of a live allocation (double free or foreign pointer)", api, p));
  }
  if (it->second.kind != expected) {
    return fail_api(cudaErrorInvalidValue, format("%s(%p): pointer was allocated by another API", api, p));
  }
  MemKind kind;
  const std::size_t size = it->second.size;
  (void)unregister_allocation(p, &kind);
  // Poisoned and held back, so that no later allocation takes the address and a pointer kept past the free
  // still faults (use after free) instead of reaching new data; under ASan a raw access to it (kernel or
  // host code) is reported too. A block larger than the whole quarantine goes back at once (holding it would
  // push every older block out).
  Runtime& r = rt();
  if (quarantine_charge(size) > r.quarantine_limit) {
    std::free(p);
    return cudaSuccess;
  }
  std::memset(p, kFillByte, size);
#if CULAYERS_EMU_ASAN
  ASAN_POISON_MEMORY_REGION(p, size);
#endif
  const Freed held{reinterpret_cast<std::uintptr_t>(p), size, api};
  r.quarantine.push_back(held.base);
  r.quarantined.emplace(held.base, held);
  r.quarantine_bytes += quarantine_charge(size);
  trim_quarantine(r);
  return cudaSuccess;
}

} // namespace

std::recursive_mutex& api_mutex() {
  return rt().mutex;
}

std::string vformat(const char* fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string out(n > 0 ? static_cast<std::size_t>(n) : 0, '\0');
  if (n > 0) {
    std::vsnprintf(out.data(), out.size() + 1, fmt, args);
  }
  return out;
}

std::string format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string s = vformat(fmt, args);
  va_end(args);
  return s;
}

void report_error(const std::string& message) {
  Runtime& r = rt();
  r.message = message;
  if (r.to_stderr) {
    std::fprintf(stderr, "%s\n", message.c_str());
  }
}

void register_allocation(void* base, std::size_t size, MemKind kind) {
  Runtime& r = rt();
  r.allocations[reinterpret_cast<std::uintptr_t>(base)] =
      Allocation{reinterpret_cast<std::uintptr_t>(base), size, kind};
  if (kind == MemKind::kDevice) {
    r.device_bytes += size;
  }
  ++r.generation;
}

bool unregister_allocation(void* base, MemKind* kind_out) {
  Runtime& r = rt();
  auto it = r.allocations.find(reinterpret_cast<std::uintptr_t>(base));
  if (it == r.allocations.end()) {
    return false;
  }
  *kind_out = it->second.kind;
  if (it->second.kind == MemKind::kDevice) {
    r.device_bytes -= it->second.size;
  }
  r.allocations.erase(it);
  ++r.generation;
  return true;
}

bool find_allocation(const void* p, std::size_t bytes, Allocation* out) {
  // A small per-thread cache: kernels touch the same few buffers over and over.
  thread_local Allocation cache{};
  thread_local std::uint64_t cache_generation = 0;
  Runtime& r = rt();
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  auto inside = [&](const Allocation& a) {
    return addr >= a.base && addr <= a.base + a.size && bytes <= a.base + a.size - addr;
  };
  if (cache_generation == r.generation && inside(cache)) {
    *out = cache;
    return true;
  }
  auto it = r.allocations.upper_bound(addr);
  if (it == r.allocations.begin()) {
    return false;
  }
  --it;
  if (!inside(it->second)) {
    *out = it->second;
    out->size = 0; // tells the caller which allocation was nearest
    return false;
  }
  cache = it->second;
  cache_generation = r.generation;
  *out = cache;
  return true;
}

std::string freed_note(const void* p) {
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  const Runtime& r = rt();
  // Held blocks never overlap (none is returned to the heap while held): the one starting at or below addr.
  auto it = r.quarantined.upper_bound(addr);
  if (it == r.quarantined.begin()) {
    return "";
  }
  const Freed& f = (--it)->second;
  if (addr - f.base >= std::max<std::size_t>(f.size, 1)) {
    return "";
  }
  return format(" (inside a %zu-byte allocation at %p, offset %zu, released by %s: use after free)", f.size,
                reinterpret_cast<void*>(f.base), static_cast<std::size_t>(addr - f.base), f.api);
}

std::uint64_t registry_generation() {
  return rt().generation;
}

int max_dynamic_smem_attribute(const void* kernel) {
  auto& m = rt().max_dynamic_smem;
  auto it = m.find(kernel);
  return it == m.end() ? kMaxSmemPerBlock : it->second;
}

void count_launch_stats(std::uint64_t blocks, std::uint64_t threads, std::uint64_t switches) {
  Stats& s = rt().stats;
  ++s.launches;
  s.blocks += blocks;
  s.threads += threads;
  s.context_switches += switches;
}

void grid_dependency_wait() {
  if (tls_thread != nullptr) {
    tls_thread->must_wait = false;
  }
}

void check_atomic(const void* p, std::size_t bytes, const char* file, int line) {
  if (tls_thread != nullptr && tls_thread->must_wait) {
    Allocation a;
    if (find_allocation(p, bytes, &a)) {
      device_fail(file, line,
                  "%zu-byte atomic at %p before grid_dependency_wait() in a kernel launched with "
                  "CULAYERS_LAUNCH_DEPENDENT (on a GPU it may still be running the kernel before it)",
                  bytes, p);
    }
  }
}

void check_global_access(const void* p, std::size_t bytes, std::size_t align, bool write, const char* file,
                         int line) {
  if (tls_thread != nullptr && tls_thread->must_wait) {
    device_fail(file, line,
                "%zu-byte %s at %p before grid_dependency_wait() in a kernel launched with "
                "CULAYERS_LAUNCH_DEPENDENT (on a GPU it may still be running the kernel before it)",
                bytes, write ? "store" : "load", p);
  }
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  if (align > 1 && addr % align != 0) {
    device_fail(file, line, "misaligned %zu-byte %s at %p (needs %zu-byte alignment)", bytes,
                write ? "store" : "load", p, align);
  }
  Allocation a;
  if (!find_allocation(p, bytes, &a)) {
    // A freed block still in the quarantine is named (use after free), also where the address lies just
    // past a live allocation's end (an overrun into a freed neighbour reads as either).
    const std::string freed = freed_note(p);
    const auto base = a.base;
    const Runtime& r = rt();
    auto it = r.allocations.find(base);
    if (it != r.allocations.end() && addr >= base && addr - base < it->second.size + 4096) {
      device_fail(file, line, "%zu-byte %s at offset %zu of a %zu-byte allocation runs past its end%s", bytes,
                  write ? "store" : "load", static_cast<std::size_t>(addr - base), it->second.size,
                  freed.c_str());
    }
    device_fail(file, line, "%zu-byte %s at %p: not inside any device allocation%s", bytes,
                write ? "store" : "load", p,
                freed.empty() ? " (host pointer or freed memory?)" : freed.c_str());
  }
  (write ? g_bytes_written : g_bytes_read).fetch_add(bytes, std::memory_order_relaxed);
  if (sector_counting_on()) {
    record_sector_access(p, bytes, write, file, line);
  }
}

} // namespace detail

// ---- culayers_emu public API ----------------------------------------------------------------------

using detail::Lock;
using detail::rt;

void set_deferred(bool on) {
  Lock lock(rt().mutex);
  if (!on) {
    detail::flush_all();
  }
  rt().deferred = on;
}
bool deferred() {
  return rt().deferred;
}
void set_schedule_seed(std::uint64_t seed) {
  rt().seed = seed;
}
std::uint64_t schedule_seed() {
  return rt().seed;
}
std::size_t set_device_memory_limit(std::size_t bytes) {
  Lock lock(rt().mutex);
  const std::size_t previous = rt().memory_limit;
  rt().memory_limit = bytes == 0 ? detail::kFakeMemory : bytes;
  return previous;
}
std::size_t device_memory_limit() {
  Lock lock(rt().mutex);
  return rt().memory_limit;
}

void set_report_to_stderr(bool on) {
  rt().to_stderr = on;
}

std::string last_error_message() {
  Lock lock(rt().mutex);
  return rt().message;
}
void clear_error_message() {
  Lock lock(rt().mutex);
  rt().message.clear();
}

ByteCounters byte_counters() {
  return {detail::g_bytes_read.load(), detail::g_bytes_written.load()};
}
void reset_byte_counters() {
  detail::g_bytes_read = 0;
  detail::g_bytes_written = 0;
}

Stats stats() {
  Lock lock(rt().mutex);
  return rt().stats;
}

std::size_t live_allocations() {
  Lock lock(rt().mutex);
  return rt().allocations.size();
}

std::size_t set_free_quarantine(std::size_t bytes) {
  Lock lock(rt().mutex);
  const std::size_t previous = rt().quarantine_limit;
  rt().quarantine_limit = bytes;
  detail::trim_quarantine(rt());
  return previous;
}
std::size_t free_quarantine() {
  Lock lock(rt().mutex);
  return rt().quarantine_limit;
}
std::size_t quarantined_bytes() {
  Lock lock(rt().mutex);
  return rt().quarantine_bytes;
}

bool occupancy_unknown() {
  static const bool unknown = detail::env_flag("CULAYERS_EMU_NO_OCCUPANCY");
  return unknown;
}

cudaError_t launch(const LaunchSite& site, const void* kernel, dim3 grid, dim3 block,
                   std::size_t dynamic_smem, cudaStream_t stream, std::function<void()> body,
                   const void* const* pointers, std::size_t pointer_count) {
  using detail::fail_api;
  using detail::format;
  Lock lock(rt().mutex);
  auto where = [&] { return format("kernel '%s' launched at %s:%d", site.kernel, site.file, site.line); };
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0) {
    return fail_api(kLaunchConfigurationError,
                    where() + format(": zero-sized grid (%u,%u,%u) or block (%u,%u,%u)", grid.x, grid.y,
                                     grid.z, block.x, block.y, block.z));
  }
  if (threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
    return fail_api(
        kLaunchConfigurationError,
        where() + format(": block (%u,%u,%u) exceeds CUDA's limits (1024 threads; x,y <= 1024, z <= 64)",
                         block.x, block.y, block.z));
  }
  if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u) {
    return fail_api(kLaunchConfigurationError,
                    where() + format(": grid (%u,%u,%u) exceeds CUDA's limits (x < 2^31, y and z <= 65535)",
                                     grid.x, grid.y, grid.z));
  }
  const int allowed = detail::max_dynamic_smem_attribute(kernel);
  if (dynamic_smem > static_cast<std::size_t>(allowed)) {
    return fail_api(
        cudaErrorInvalidValue,
        where() + format(": %zu bytes of dynamic shared memory exceed the kernel's limit of %d bytes%s",
                         dynamic_smem, allowed,
                         allowed == detail::kMaxSmemPerBlock ? " (above 48 KB needs cudaFuncSetAttribute("
                                                               "cudaFuncAttributeMaxDynamicSharedMemorySize))"
                                                             : ""));
  }
  CUstream_st* s = detail::resolve(stream);
  if (s == nullptr) {
    return fail_api(cudaErrorInvalidResourceHandle, where() + format(": invalid stream %p", (void*)stream));
  }
  for (std::size_t i = 0; i < pointer_count; ++i) {
    const void* p = pointers[i];
    if (p != nullptr && !detail::device_range(p, 0)) {
      const std::string freed = detail::freed_note(p);
      return fail_api(cudaErrorIllegalAddress,
                      where() + format(": pointer argument %p is not device memory%s", p,
                                       freed.empty() ? " (a host pointer, or freed?)" : freed.c_str()));
    }
  }
  auto record = std::make_shared<detail::LaunchRecord>();
  record->site = site;
  record->kernel = kernel;
  record->grid = grid;
  record->block = block;
  record->dynamic_smem = dynamic_smem;
  record->body = std::move(body);
  record->pointers.assign(pointers, pointers + pointer_count);
  return detail::enqueue(s, "kernel", [record] {
    // Checked again when the kernel runs (queued work, graph replay): memory freed in between (cudaFreeAsync
    // queued before it, cudaFree before a replay) is reported instead of written.
    for (const void* p : record->pointers) {
      if (p != nullptr && !detail::device_range(p, 0)) {
        return fail_api(
            cudaErrorIllegalAddress,
            format("kernel '%s' launched at %s:%d: pointer argument %p was freed before the kernel "
                   "ran (queued or replayed from a graph)",
                   record->site.kernel, record->site.file, record->site.line, p));
      }
    }
    return detail::execute_launch(*record);
  });
}

} // namespace culayers_emu

// ---- the CUDA runtime API -------------------------------------------------------------------------

using culayers_emu::detail::Lock;
using culayers_emu::detail::rt;
namespace emu = culayers_emu::detail;

extern "C" {

cudaError_t cudaGetLastError(void) {
  cudaError_t e = emu::tls_last_error;
  emu::tls_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  return emu::tls_last_error;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
#define CULAYERS_EMU_NAME(e)                                                                                 \
  case e:                                                                                                    \
    return #e;
    CULAYERS_EMU_NAME(cudaSuccess)
    CULAYERS_EMU_NAME(cudaErrorInvalidValue)
    CULAYERS_EMU_NAME(cudaErrorMemoryAllocation)
    CULAYERS_EMU_NAME(cudaErrorInitializationError)
    CULAYERS_EMU_NAME(cudaErrorInvalidConfiguration)
    CULAYERS_EMU_NAME(cudaErrorInvalidDevice)
    CULAYERS_EMU_NAME(cudaErrorInvalidResourceHandle)
    CULAYERS_EMU_NAME(cudaErrorNotReady)
    CULAYERS_EMU_NAME(cudaErrorIllegalAddress)
    CULAYERS_EMU_NAME(cudaErrorLaunchFailure)
    CULAYERS_EMU_NAME(cudaErrorLaunchOutOfResources)
    CULAYERS_EMU_NAME(cudaErrorNoDevice)
    CULAYERS_EMU_NAME(cudaErrorNotSupported)
    CULAYERS_EMU_NAME(cudaErrorStreamCaptureUnsupported)
    CULAYERS_EMU_NAME(cudaErrorStreamCaptureInvalidated)
    CULAYERS_EMU_NAME(cudaErrorStreamCaptureImplicit)
    CULAYERS_EMU_NAME(cudaErrorStreamCaptureUnmatched)
    CULAYERS_EMU_NAME(cudaErrorIllegalState)
    CULAYERS_EMU_NAME(cudaErrorInvalidDevicePointer)
    CULAYERS_EMU_NAME(cudaErrorMisalignedAddress)
#undef CULAYERS_EMU_NAME
  default:
    return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
  case cudaSuccess:
    return "no error";
  case cudaErrorInvalidValue:
    return "invalid argument";
  case cudaErrorMemoryAllocation:
    return "out of memory";
  case cudaErrorInvalidConfiguration:
    return "invalid configuration argument";
  case cudaErrorInvalidResourceHandle:
    return "invalid resource handle";
  case cudaErrorNotReady:
    return "device not ready";
  case cudaErrorIllegalAddress:
    return "an illegal memory access was encountered";
  case cudaErrorLaunchFailure:
    return "unspecified launch failure";
  case cudaErrorNoDevice:
    return "no CUDA-capable device is detected";
  case cudaErrorStreamCaptureUnsupported:
    return "operation not permitted when stream is capturing";
  case cudaErrorStreamCaptureInvalidated:
    return "operation failed due to a previous error during capture";
  case cudaErrorStreamCaptureImplicit:
    return "operation would make the legacy stream depend on a capturing blocking stream";
  case cudaErrorIllegalState:
    return "the operation is not permitted in the current state";
  default:
    return cudaGetErrorName(error);
  }
}

// ---- device ----

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : emu::set_error(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  Lock lock(rt().mutex);
  if (prop == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  if (device != 0) {
    return emu::set_error(cudaErrorInvalidDevice);
  }
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "culayers emulated device");
  prop->totalGlobalMem = rt().memory_limit;
  prop->sharedMemPerBlock = emu::kMaxSmemPerBlock;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->memPitch = 2147483647;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->totalConstMem = 65536;
  prop->major = 9;
  prop->minor = 0;
  prop->textureAlignment = 512;
  prop->multiProcessorCount = emu::sm_count();
  prop->concurrentKernels = 1;
  prop->unifiedAddressing = 1;
  prop->memoryBusWidth = 256;
  prop->l2CacheSize = 1 << 20;
  prop->maxThreadsPerMultiProcessor = 2048;
  prop->sharedMemPerMultiprocessor = emu::kSmemPerSm;
  prop->regsPerMultiprocessor = 65536;
  prop->managedMemory = 1;
  prop->sharedMemPerBlockOptin = emu::kMaxSmemPerBlockOptin;
  prop->maxBlocksPerMultiProcessor = 32;
  prop->reservedSharedMemPerBlock = 1024;
  prop->memoryPoolsSupported = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr || device != 0) {
    return emu::set_error(value == nullptr ? cudaErrorInvalidValue : cudaErrorInvalidDevice);
  }
  switch (attr) {
  case cudaDevAttrMaxThreadsPerBlock:
  case cudaDevAttrMaxBlockDimX:
  case cudaDevAttrMaxBlockDimY:
    *value = 1024;
    break;
  case cudaDevAttrMaxBlockDimZ:
    *value = 64;
    break;
  case cudaDevAttrMaxGridDimX:
    *value = 2147483647;
    break;
  case cudaDevAttrMaxGridDimY:
  case cudaDevAttrMaxGridDimZ:
    *value = 65535;
    break;
  case cudaDevAttrMaxSharedMemoryPerBlock:
    *value = emu::kMaxSmemPerBlock;
    break;
  case cudaDevAttrMaxSharedMemoryPerBlockOptin:
    *value = emu::kMaxSmemPerBlockOptin;
    break;
  case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
    *value = emu::kSmemPerSm;
    break;
  case cudaDevAttrWarpSize:
    *value = 32;
    break;
  case cudaDevAttrMultiProcessorCount:
    *value = emu::sm_count();
    break;
  case cudaDevAttrComputeCapabilityMajor:
    *value = 9;
    break;
  case cudaDevAttrComputeCapabilityMinor:
    *value = 0;
    break;
  case cudaDevAttrL2CacheSize:
    *value = 1 << 20;
    break;
  case cudaDevAttrMaxThreadsPerMultiProcessor:
    *value = 2048;
    break;
  case cudaDevAttrMaxRegistersPerBlock:
  case cudaDevAttrMaxRegistersPerMultiprocessor:
    *value = 65536;
    break;
  case cudaDevAttrMaxBlocksPerMultiprocessor:
    *value = 32;
    break;
  case cudaDevAttrMemoryPoolsSupported:
  case cudaDevAttrUnifiedAddressing:
  case cudaDevAttrConcurrentKernels:
    *value = 1;
    break;
  default:
    return emu::fail_api(
        cudaErrorInvalidValue,
        emu::format("cudaDeviceGetAttribute: attribute %d is not emulated", static_cast<int>(attr)));
  }
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  if (version == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  return cudaDriverGetVersion(version);
}

cudaError_t cudaDeviceSynchronize(void) {
  Lock lock(rt().mutex);
  if (emu::capture_violation("cudaDeviceSynchronize", /*always=*/true)) {
    return emu::set_error(cudaErrorStreamCaptureUnsupported);
  }
  return emu::flush_all();
}

cudaError_t cudaDeviceReset(void) {
  Lock lock(rt().mutex);
  emu::flush_all();
  emu::tls_last_error = cudaSuccess;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  Lock lock(rt().mutex);
  if (free_bytes == nullptr || total == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  *total = rt().memory_limit;
  *free_bytes = rt().memory_limit - std::min(rt().memory_limit, rt().device_bytes);
  return cudaSuccess;
}

// ---- memory ----

cudaError_t cudaMalloc(void** ptr, size_t size) {
  Lock lock(rt().mutex);
  if (ptr == nullptr) {
    return emu::fail_api(cudaErrorInvalidValue, "cudaMalloc: null output pointer");
  }
  if (emu::capture_violation("cudaMalloc")) {
    return emu::set_error(cudaErrorStreamCaptureUnsupported);
  }
  return emu::allocate_device(ptr, size, "cudaMalloc");
}

cudaError_t cudaMallocManaged(void** ptr, size_t size, unsigned int) {
  Lock lock(rt().mutex);
  if (ptr == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  *ptr = size == 0 ? nullptr : emu::allocate(size, emu::MemKind::kManaged);
  return (size == 0 || *ptr != nullptr) ? cudaSuccess : emu::set_error(cudaErrorMemoryAllocation);
}

cudaError_t cudaMallocHost(void** ptr, size_t size) {
  Lock lock(rt().mutex);
  if (ptr == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  if (emu::capture_violation("cudaMallocHost")) {
    return emu::set_error(cudaErrorStreamCaptureUnsupported);
  }
  *ptr = size == 0 ? nullptr : emu::allocate(size, emu::MemKind::kPinnedHost);
  return (size == 0 || *ptr != nullptr) ? cudaSuccess : emu::set_error(cudaErrorMemoryAllocation);
}

cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int) {
  return cudaMallocHost(ptr, size);
}

cudaError_t cudaFree(void* ptr) {
  Lock lock(rt().mutex);
  if (emu::capture_violation("cudaFree")) {
    return emu::set_error(cudaErrorStreamCaptureUnsupported);
  }
  emu::flush_all(); // cudaFree synchronizes the device
  // cudaFree takes cudaMalloc's and cudaMallocManaged's pointers alike.
  const auto it = emu::rt().allocations.find(reinterpret_cast<std::uintptr_t>(ptr));
  const bool managed = it != emu::rt().allocations.end() && it->second.kind == emu::MemKind::kManaged;
  return emu::release(ptr, managed ? emu::MemKind::kManaged : emu::MemKind::kDevice, "cudaFree");
}

cudaError_t cudaFreeHost(void* ptr) {
  Lock lock(rt().mutex);
  emu::flush_all();
  return emu::release(ptr, emu::MemKind::kPinnedHost, "cudaFreeHost");
}

cudaError_t cudaMallocAsync(void** ptr, size_t size, cudaStream_t stream) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (ptr == nullptr || s == nullptr) {
    return emu::set_error(ptr == nullptr ? cudaErrorInvalidValue : cudaErrorInvalidResourceHandle);
  }
  if (s->capture != nullptr) {
    return emu::fail_api(cudaErrorStreamCaptureUnsupported,
                         "cudaMallocAsync inside stream capture is not emulated (graph memory nodes)");
  }
  return emu::allocate_device(ptr, size, "cudaMallocAsync");
}

// Memory pools: the emulator serves cudaMallocAsync from its allocation registry (no pooling), so the
// default pool is a fixed handle whose attributes are accepted and ignored.
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device) {
  if (pool == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  if (device != 0) {
    return emu::set_error(cudaErrorInvalidDevice);
  }
  static int default_pool_tag = 0;
  *pool = reinterpret_cast<cudaMemPool_t>(&default_pool_tag);
  return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  (void)attr;
  return (pool == nullptr || value == nullptr) ? emu::set_error(cudaErrorInvalidValue) : cudaSuccess;
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr) {
    // Undefined on a GPU, where it need not fail: say so (the memory stays allocated here).
    return emu::fail_api(cudaErrorInvalidResourceHandle,
                         emu::format("cudaFreeAsync(%p): stream %p is not a live stream (destroyed before "
                                     "the memory freed on it?)",
                                     ptr, static_cast<void*>(stream)));
  }
  if (s->capture != nullptr) {
    return emu::fail_api(cudaErrorStreamCaptureUnsupported,
                         "cudaFreeAsync inside stream capture is not emulated");
  }
  return emu::enqueue(s, "free", [ptr] { return emu::release(ptr, emu::MemKind::kDevice, "cudaFreeAsync"); });
}

namespace {

// Checks the device side(s) of a copy; host sides cannot be checked.
cudaError_t check_copy(const char* api, void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  if (count == 0) {
    return cudaSuccess;
  }
  if (dst == nullptr || src == nullptr) {
    return emu::fail_api(cudaErrorInvalidValue, emu::format("%s: null pointer", api));
  }
  // Freed memory the quarantine holds, whatever side the kind names (a freed device pointer passed as a
  // host one, or with cudaMemcpyDefault, is still a use after free).
  for (int side = 0; side < 2; ++side) {
    const void* p = side == 0 ? dst : src;
    const std::string freed = emu::freed_note(p);
    if (!freed.empty()) {
      return emu::fail_api(cudaErrorInvalidValue,
                           emu::format("%s: %s %p is freed memory%s", api,
                                       side == 0 ? "destination" : "source", p, freed.c_str()));
    }
  }
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (dst_device && !emu::device_range(dst, count)) {
    return emu::fail_api(
        cudaErrorInvalidValue,
        emu::format("%s: destination [%p, +%zu) is not inside one device allocation", api, dst, count));
  }
  if (src_device && !emu::device_range(src, count)) {
    return emu::fail_api(
        cudaErrorInvalidValue,
        emu::format("%s: source [%p, +%zu) is not inside one device allocation", api, src, count));
  }
  // CUDA: "The memory areas may not overlap" (what a GPU does then is undefined; here it is an error, like
  // a range outside an allocation). Host-to-host copies included: the same rule covers every kind.
  const auto d = reinterpret_cast<std::uintptr_t>(dst);
  const auto s = reinterpret_cast<std::uintptr_t>(src);
  if (d < s + count && s < d + count) {
    return emu::fail_api(cudaErrorInvalidValue,
                         emu::format("%s: source [%p, +%zu) and destination [%p, +%zu) overlap (CUDA: the "
                                     "memory areas may not overlap)",
                                     api, src, count, dst, count));
  }
  return cudaSuccess;
}

} // namespace

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  if (cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, count, kind); e != cudaSuccess) {
    return e;
  }
  return emu::enqueue(s, "memcpy", [dst, src, count, kind] {
    // Checked again when it runs: memory freed after it was queued or captured is reported, not written.
    if (cudaError_t e = check_copy("cudaMemcpyAsync (when it ran)", dst, src, count, kind);
        e != cudaSuccess) {
      return e;
    }
    if (count != 0) {
      std::memmove(dst, src, count);
    }
    return cudaSuccess;
  });
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  Lock lock(rt().mutex);
  if (cudaError_t e = emu::legacy_sync_conflict("cudaMemcpy"); e != cudaSuccess) {
    return e;
  }
  // Queued work first (a queued cudaFreeAsync may release either side), then the check.
  if (cudaError_t e = emu::flush_all(); e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e = check_copy("cudaMemcpy", dst, src, count, kind); e != cudaSuccess) {
    return e;
  }
  if (count != 0) {
    std::memmove(dst, src, count);
  }
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t count, cudaStream_t stream) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  if (count != 0 && !emu::device_range(dst, count)) {
    return emu::fail_api(
        cudaErrorInvalidValue,
        emu::format("cudaMemsetAsync: [%p, +%zu) is not inside one device allocation", dst, count));
  }
  return emu::enqueue(s, "memset", [dst, value, count] {
    if (count != 0 && !emu::device_range(dst, count)) { // freed after it was queued or captured
      return emu::fail_api(
          cudaErrorInvalidValue,
          emu::format(
              "cudaMemsetAsync (when it ran): [%p, +%zu) is not inside one device allocation (freed?)", dst,
              count));
    }
    if (count != 0) {
      std::memset(dst, value, count);
    }
    return cudaSuccess;
  });
}

cudaError_t cudaMemset(void* dst, int value, size_t count) {
  return cudaMemsetAsync(dst, value, count, nullptr);
}

cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t count, size_t offset,
                               cudaMemcpyKind) {
  Lock lock(rt().mutex);
  if (symbol == nullptr || (count != 0 && src == nullptr)) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  if (cudaError_t e = emu::legacy_sync_conflict("cudaMemcpyToSymbol"); e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e = emu::flush_all(); e != cudaSuccess) {
    return e;
  }
  std::memcpy(static_cast<char*>(const_cast<void*>(symbol)) + offset, src, count);
  return cudaSuccess;
}

cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t count, size_t offset, cudaMemcpyKind) {
  Lock lock(rt().mutex);
  if (symbol == nullptr || (count != 0 && dst == nullptr)) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  if (cudaError_t e = emu::legacy_sync_conflict("cudaMemcpyFromSymbol"); e != cudaSuccess) {
    return e;
  }
  if (cudaError_t e = emu::flush_all(); e != cudaSuccess) {
    return e;
  }
  std::memcpy(dst, static_cast<const char*>(symbol) + offset, count);
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  Lock lock(rt().mutex);
  if (attr == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  std::memset(attr, 0, sizeof(*attr));
  emu::Allocation a;
  if (ptr == nullptr || !emu::find_allocation(ptr, 0, &a)) {
    attr->type = cudaMemoryTypeUnregistered;
    attr->device = -2;
    return cudaSuccess;
  }
  attr->type = a.kind == emu::MemKind::kDevice       ? cudaMemoryTypeDevice
               : a.kind == emu::MemKind::kPinnedHost ? cudaMemoryTypeHost
                                                     : cudaMemoryTypeManaged;
  attr->device = 0;
  attr->devicePointer = const_cast<void*>(ptr);
  attr->hostPointer = a.kind == emu::MemKind::kDevice ? nullptr : const_cast<void*>(ptr);
  return cudaSuccess;
}

// ---- kernels' attributes and occupancy ----

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  Lock lock(rt().mutex);
  if (func == nullptr) {
    return emu::set_error(cudaErrorInvalidDeviceFunction);
  }
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > emu::kMaxSmemPerBlockOptin) {
      return emu::fail_api(
          cudaErrorInvalidValue,
          emu::format("cudaFuncSetAttribute: max dynamic shared memory %d exceeds the opt-in limit %d", value,
                      emu::kMaxSmemPerBlockOptin));
    }
    rt().max_dynamic_smem[func] = value;
  }
  return cudaSuccess;
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* func) {
  Lock lock(rt().mutex);
  if (attr == nullptr || func == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  std::memset(attr, 0, sizeof(*attr));
  attr->maxThreadsPerBlock = 1024;
  attr->numRegs = 32;
  attr->maxDynamicSharedSizeBytes = emu::max_dynamic_smem_attribute(func);
  attr->ptxVersion = 90;
  attr->binaryVersion = 90;
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* num_blocks, const void* func, int block_size,
                                                          size_t dynamic_smem) {
  if (num_blocks == nullptr || func == nullptr || block_size <= 0 || block_size > 1024) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  // CULAYERS_EMU_NO_OCCUPANCY: the query fails, as a runtime that cannot say (the planners' estimates).
  if (culayers_emu::occupancy_unknown()) {
    return emu::set_error(cudaErrorNotSupported);
  }
  // A plain model of an sm_90 SM: thread, block-slot and shared-memory limits (registers ignored).
  const int warps = (block_size + 31) / 32;
  int blocks = std::min(32, 64 / warps);
  if (dynamic_smem > 0) {
    blocks = std::min<int>(blocks, static_cast<int>(emu::kSmemPerSm / (dynamic_smem + 1024)));
  }
  *num_blocks = blocks;
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* num_blocks, const void* func,
                                                                   int block_size, size_t dynamic_smem,
                                                                   unsigned int) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(num_blocks, func, block_size, dynamic_smem);
}

// ---- streams ----

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  Lock lock(rt().mutex);
  if (stream == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  auto* s = new CUstream_st();
  s->flags = flags;
  rt().streams.insert(s);
  *stream = s;
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned int flags, int) {
  return cudaStreamCreateWithFlags(stream, flags);
}

cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  if (least != nullptr) {
    *least = 0;
  }
  if (greatest != nullptr) {
    *greatest = -5;
  }
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Lock lock(rt().mutex);
  if (stream == nullptr || !rt().streams.count(stream)) {
    return emu::fail_api(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: not a live stream");
  }
  emu::flush_until(stream->last_seq); // destroy returns at once; queued work still completes
  if (stream->capture != nullptr) {
    --rt().active_captures;
    delete static_cast<CUgraph_st*>(stream->capture);
  }
  rt().streams.erase(stream);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  if (s->capture != nullptr) {
    s->capture_invalidated = true;
    return emu::fail_api(cudaErrorStreamCaptureUnsupported, "cudaStreamSynchronize on a capturing stream");
  }
  if (s->legacy) {
    if (cudaError_t e = emu::legacy_sync_conflict("cudaStreamSynchronize of the legacy stream");
        e != cudaSuccess) {
      return e;
    }
  } else if (emu::capture_violation("cudaStreamSynchronize")) {
    return emu::set_error(cudaErrorStreamCaptureUnsupported);
  }
  // The legacy default stream waits for every blocking stream; flushing everything is a superset.
  return s->legacy ? emu::flush_all() : emu::flush_until(s->last_seq);
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  if (s->capture != nullptr) {
    s->capture_invalidated = true;
    return emu::set_error(cudaErrorStreamCaptureUnsupported);
  }
  const bool pending = !rt().queue.empty() && rt().queue.front().first <= s->last_seq;
  if (!pending) {
    return cudaSuccess;
  }
  // Not done yet; make progress so that a polling loop terminates.
  cudaError_t e = emu::flush_until(s->last_seq);
  return e != cudaSuccess ? e : cudaErrorNotReady;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr || event == nullptr || !rt().events.count(event)) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  // A wait on an event recorded into a capture makes another stream join it on a GPU (fork / join). Capture
  // is single-stream here: refuse it loudly (and invalidate that capture) rather than run the waiting
  // stream's work now, outside the graph.
  if (event->captured_into != 0 && (s->capture == nullptr || s->capture_id != event->captured_into)) {
    for (CUstream_st* c : rt().streams) {
      if (c->capture != nullptr && c->capture_id == event->captured_into) {
        c->capture_invalidated = true;
        return emu::fail_api(
            cudaErrorStreamCaptureUnsupported,
            "cudaStreamWaitEvent on an event recorded into another stream's capture: "
            "multi-stream (fork / join) capture is not emulated; the capture is invalidated");
      }
    }
  }
  // Work runs in enqueue order, so everything before the event's record already precedes this point.
  return cudaSuccess;
}

cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* user_data) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr || fn == nullptr) {
    return emu::set_error(s == nullptr ? cudaErrorInvalidResourceHandle : cudaErrorInvalidValue);
  }
  return emu::enqueue(s, "host", [fn, user_data] {
    fn(user_data);
    return cudaSuccess;
  });
}

// ---- events ----

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  Lock lock(rt().mutex);
  if (event == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  auto* e = new CUevent_st();
  e->flags = flags;
  rt().events.insert(e);
  *event = e;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  Lock lock(rt().mutex);
  if (event == nullptr || !rt().events.count(event)) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  emu::flush_until(event->record_seq);
  rt().events.erase(event);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr || event == nullptr || !rt().events.count(event)) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  return emu::record_event(event, s);
}

cudaError_t cudaEventRecordWithFlags(cudaEvent_t event, cudaStream_t stream, unsigned int) {
  return cudaEventRecord(event, stream);
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  Lock lock(rt().mutex);
  if (event == nullptr || !rt().events.count(event)) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  if (emu::capture_violation("cudaEventSynchronize")) {
    return emu::set_error(cudaErrorStreamCaptureUnsupported);
  }
  return emu::flush_until(event->record_seq);
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  Lock lock(rt().mutex);
  if (event == nullptr || !rt().events.count(event)) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  if (!event->recorded || event->completed) {
    return cudaSuccess;
  }
  cudaError_t e = emu::flush_until(event->record_seq);
  return e != cudaSuccess ? e : cudaErrorNotReady;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Lock lock(rt().mutex);
  if (ms == nullptr || start == nullptr || end == nullptr || !rt().events.count(start) ||
      !rt().events.count(end)) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  if ((start->flags | end->flags) & cudaEventDisableTiming) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  if (!start->completed || !end->completed) {
    return emu::set_error(cudaErrorNotReady);
  }
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

// ---- graphs (single-stream capture: nodes run in capture order on replay) ----

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  if (s->legacy) {
    return emu::fail_api(cudaErrorStreamCaptureUnsupported,
                         "cudaStreamBeginCapture: the legacy stream cannot be captured");
  }
  if (s->capture != nullptr) {
    return emu::set_error(cudaErrorIllegalState);
  }
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  s->capture = new CUgraph_st();
  s->capture_id = ++rt().next_capture_id;
  s->capture_thread = std::this_thread::get_id();
  s->capture_mode = mode;
  s->capture_invalidated = false;
  ++rt().active_captures;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr || graph == nullptr) {
    return emu::set_error(s == nullptr ? cudaErrorInvalidResourceHandle : cudaErrorInvalidValue);
  }
  if (s->capture == nullptr) {
    return emu::set_error(cudaErrorIllegalState);
  }
  auto* g = static_cast<CUgraph_st*>(s->capture);
  s->capture = nullptr;
  --rt().active_captures;
  if (s->capture_invalidated) {
    s->capture_invalidated = false;
    delete g;
    *graph = nullptr;
    return emu::set_error(cudaErrorStreamCaptureInvalidated);
  }
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (s == nullptr || status == nullptr) {
    return emu::set_error(s == nullptr ? cudaErrorInvalidResourceHandle : cudaErrorInvalidValue);
  }
  *status = s->capture == nullptr    ? cudaStreamCaptureStatusNone
            : s->capture_invalidated ? cudaStreamCaptureStatusInvalidated
                                     : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  if (mode == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  // Read as an int: a caller may store any value, and loading one outside the enum's range as the enum is
  // undefined in C++.
  int v = 0;
  static_assert(sizeof(v) == sizeof(*mode), "an int-sized enum");
  std::memcpy(&v, mode, sizeof(v));
  if (v != cudaStreamCaptureModeGlobal && v != cudaStreamCaptureModeThreadLocal &&
      v != cudaStreamCaptureModeRelaxed) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  std::swap(*mode, emu::tls_capture_mode);
  return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* count) {
  Lock lock(rt().mutex);
  if (graph == nullptr || count == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  if (nodes != nullptr) {
    return emu::fail_api(cudaErrorNotSupported,
                         "cudaGraphGetNodes: node handles are not emulated (count only)");
  }
  *count = graph->nodes.size();
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  Lock lock(rt().mutex);
  if (exec == nullptr || graph == nullptr) {
    return emu::set_error(cudaErrorInvalidValue);
  }
  auto* e = new CUgraphExec_st();
  e->nodes = graph->nodes;
  *exec = e;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  Lock lock(rt().mutex);
  CUstream_st* s = emu::resolve(stream);
  if (exec == nullptr || s == nullptr) {
    return emu::set_error(cudaErrorInvalidResourceHandle);
  }
  cudaError_t first = cudaSuccess;
  for (const emu::Node& n : exec->nodes) {
    cudaError_t e = cudaSuccess;
    if (n.event != nullptr) {
      // A fresh record of the event (its latest from now on); nothing once the event is destroyed.
      if (rt().events.count(n.event)) {
        e = emu::record_event(n.event, s);
      }
    } else {
      e = emu::enqueue(s, n.what, n.work);
    }
    if (e != cudaSuccess && first == cudaSuccess) {
      first = e;
    }
  }
  return first;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  Lock lock(rt().mutex);
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  Lock lock(rt().mutex);
  delete graph;
  return cudaSuccess;
}

} // extern "C"
