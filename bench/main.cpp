// culayers_bench: Google Benchmark runner for the culayers kernels and their roofline.
//
// Defaults (each overridable on the command line, later flags win):
//   --benchmark_repetitions=5 --benchmark_counters_tabular=true
// (every case sets a fixed iteration count, so --benchmark_min_time has no effect).
// Machine-readable output: --benchmark_out=<file.json> --benchmark_out_format=json.
// --benchmark_list_tests lists the cases, also on a machine without a GPU.
// --culayers_perturb=K: the self-test of the verifications (bench/harness.hpp): output K of every
// verification gets one element changed; each verification must then fail, nothing is timed, and the exit
// status says whether every exercised verification caught it (one repetition unless given).
#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "bench/harness.hpp"

int main(int argc, char** argv) {
  // Listing the cases needs no GPU (registration touches no device). The last --benchmark_list_tests wins,
  // its value read as Google Benchmark reads a bool flag: one character is true when it is a letter or digit
  // other than 0, f, F, n, N; a longer value unless false, no or off (any case); no value is true.
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const std::string flag = "--benchmark_list_tests";
    if (arg == flag) {
      list = true;
    } else if (arg.rfind(flag + "=", 0) == 0) {
      std::string v = arg.substr(flag.size() + 1);
      if (v.size() == 1) {
        const unsigned char c = static_cast<unsigned char>(v[0]);
        list = std::isalnum(c) != 0 && std::string("0fFnN").find(static_cast<char>(c)) == std::string::npos;
      } else if (!v.empty()) {
        for (char& ch : v) {
          ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        }
        list = !(v == "false" || v == "no" || v == "off");
      } else {
        list = true;
      }
    }
  }
  if (list) {
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks(); // lists (honouring --benchmark_filter), runs nothing
    benchmark::Shutdown();
    return 0;
  }
  // --culayers_perturb=K is ours: taken out before Google Benchmark sees the arguments.
  int perturb = -1;
  std::vector<char*> rest;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const std::string flag = "--culayers_perturb=";
    if (arg.rfind(flag, 0) != 0) {
      rest.push_back(argv[i]);
      continue;
    }
    const std::string v = arg.substr(flag.size());
    if (v.empty() || v.size() > 2 || v.find_first_not_of("0123456789") != std::string::npos) {
      std::fprintf(stderr,
                   "culayers_bench: --culayers_perturb takes an output number from 0 to 99, got '%s'\n",
                   v.c_str());
      return 2;
    }
    perturb = std::stoi(v);
  }
  culayers::bench::set_perturb_output(perturb);

  std::string reason;
  if (!culayers::bench::gpu_visible(&reason)) {
    std::printf("no CUDA GPU visible; benchmarks need a GPU (%s)\n", reason.c_str());
    return 0;
  }
  const culayers::bench::DeviceInfo& device = culayers::bench::device_info();
  if (!device.ok) {
    std::fprintf(stderr, "culayers_bench: %s\n", device.error.c_str());
    return 1;
  }

  // Defaults go right after argv[0] so that flags given on the command line override them.
  std::vector<std::string> defaults = {perturb >= 0 ? "--benchmark_repetitions=1"
                                                    : "--benchmark_repetitions=5",
                                       "--benchmark_counters_tabular=true"};
  std::vector<char*> args;
  args.push_back(argv[0]);
  for (std::string& d : defaults) {
    args.push_back(d.data());
  }
  for (char* a : rest) {
    args.push_back(a);
  }
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);

  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) {
    return 1;
  }
  std::printf("culayers_bench on %s (%d SMs, L2 %d MiB, CUDA driver %s, runtime %s)\n", device.prop.name,
              device.prop.multiProcessorCount, device.prop.l2CacheSize >> 20,
              culayers::bench::cuda_version_string(device.driver_version).c_str(),
              culayers::bench::cuda_version_string(device.runtime_version).c_str());
  culayers::bench::add_context();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (culayers::bench::perturb_enabled()) {
    return culayers::bench::perturb_report() ? 0 : 1;
  }
  return 0;
}
