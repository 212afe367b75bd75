// One benchmarked variant: set up, verify once, time (see variant.hpp).
#include "bench/variant.hpp"

#include <cstdio>
#include <map>
#include <mutex>

#include "bench/cudnn_runtime.hpp"
#include "bench/harness.hpp"

namespace culayers {
namespace bench {

void time_variant(benchmark::State& state, std::uint64_t bytes, Variant& v) {
  run_timed(state, bytes, [&](cudaStream_t s) { return v.op(s); });
  if (state.error_occurred()) {
    return;
  }
  state.SetLabel(v.label());
  if (v.x_reads() > 0) {
    state.counters["x_reads"] = benchmark::Counter(v.x_reads());
  }
}

void run_variant(benchmark::State& state, const std::string& key, std::uint64_t bytes, Variant& v) {
  if (std::string e = v.setup(); !e.empty()) {
    state.SkipWithError(("setup: " + e).c_str());
    return;
  }
  if (!verify_once(state, key, [&] { return v.verify(); })) {
    return;
  }
  time_variant(state, bytes, v);
}

void run_first_candidate(benchmark::State& state, const std::string& key, std::uint64_t bytes, int candidates,
                         const std::function<std::unique_ptr<Variant>(int)>& make) {
  static std::mutex mutex;
  static std::map<std::string, int> chosen;
  const bool verified = verify_once(state, key, [&]() -> std::string {
    std::string errors;
    bool all_unsupported = true;
    for (int i = 0; i < candidates; ++i) {
      std::unique_ptr<Variant> v = make(i);
      std::string e = v->setup();
      if (e.empty()) {
        e = v->verify();
      }
      if (e.empty()) {
        std::lock_guard<std::mutex> lock(mutex);
        chosen[key] = i;
        if (!errors.empty()) { // the candidates passed over, and why (a wrong result is not "unsupported")
          std::fprintf(stderr, "%s: timing candidate %d (%s); passed over: %s\n", key.c_str(), i,
                       v->label().c_str(), errors.c_str());
        }
        return {};
      }
      all_unsupported = all_unsupported && v->unsupported();
      errors += (errors.empty() ? "" : "; ") + v->label() + ": " + e;
    }
    return (all_unsupported && candidates > 0
                ? std::string(kBaselineUnavailable) + "the library does not support this configuration: "
                : std::string()) +
           errors;
  });
  if (!verified) {
    return;
  }
  int pick = 0;
  {
    std::lock_guard<std::mutex> lock(mutex);
    pick = chosen[key];
  }
  std::unique_ptr<Variant> v = make(pick);
  if (std::string e = v->setup(); !e.empty()) {
    state.SkipWithError(("setup: " + e).c_str());
    return;
  }
  time_variant(state, bytes, *v);
}

} // namespace bench
} // namespace culayers
