// One benchmarked variant: set up, verify once, time (see variant.hpp).
#include "bench/variant.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "bench/cudnn_runtime.hpp"
#include "bench/harness.hpp"

namespace culayers {
namespace bench {
namespace {

// Probe runs behind each candidate's median in run_fastest_candidate (before the timed repetitions).
constexpr int kCandidateProbeRuns = 7;

} // namespace

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

void run_fastest_candidate(benchmark::State& state, const std::string& key, std::uint64_t bytes,
                           int candidates, const std::function<std::unique_ptr<Variant>(int)>& make) {
  static std::mutex mutex;
  static std::map<std::string, int> chosen;
  const bool verified = verify_once(state, key, [&]() -> std::string {
    // Probe-time every candidate that runs (one at a time: its buffers are freed before the next one
    // allocates), then verify in order of speed and keep the first that passes: the CPU reference runs
    // once per key when the fastest candidate is right, not once per candidate.
    std::string errors;  // candidates that could not run or failed verification, and why
    std::string timings; // probe medians of those that ran
    bool all_unsupported = true;
    std::vector<std::pair<double, int>> ran;
    for (int i = 0; i < candidates; ++i) {
      std::unique_ptr<Variant> v = make(i);
      std::string e = v->setup();
      double ms = 0.0;
      if (e.empty()) {
        ms = median_time_ms([&](cudaStream_t s) { return v->op(s); }, kCandidateProbeRuns, &e);
        if (e.empty() && !(ms > 0.0)) {
          e = "probe timing gave no time";
        }
      }
      if (e.empty()) {
        char buf[64];
        std::snprintf(buf, sizeof buf, " %.4f ms", ms);
        timings += (timings.empty() ? "" : ", ") + v->label() + buf;
        ran.emplace_back(ms, i);
        continue;
      }
      all_unsupported = all_unsupported && v->unsupported();
      errors += (errors.empty() ? "" : "; ") + v->label() + ": " + e;
    }
    std::stable_sort(ran.begin(), ran.end());
    for (const auto& [ms, i] : ran) {
      std::unique_ptr<Variant> v = make(i);
      std::string e = v->setup();
      if (e.empty()) {
        perturb_begin(); // the self-test numbers each candidate's outputs from 0
        e = v->verify();
        if (perturb_applied()) {
          return e; // the self-test's verdict is this candidate's (caught or missed); no other is tried
        }
      }
      if (e.empty()) {
        std::lock_guard<std::mutex> lock(mutex);
        chosen[key] = i;
        if (candidates > 1) {
          std::fprintf(stderr,
                       "%s: timing candidate %d (%s), the fastest that verifies (probe medians of %d runs: "
                       "%s)%s%s\n",
                       key.c_str(), i, v->label().c_str(), kCandidateProbeRuns, timings.c_str(),
                       errors.empty() ? "" : "; passed over: ", errors.c_str());
        }
        return {};
      }
      all_unsupported = false; // it ran: a wrong result is not "unsupported"
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
