// culayers_bench: Google Benchmark runner for the culayers kernels and their roofline.
//
// Defaults (each overridable on the command line, later flags win):
//   --benchmark_repetitions=5 --benchmark_min_time=0.1 --benchmark_counters_tabular=true
// Machine-readable output: --benchmark_out=<file.json> --benchmark_out_format=json.
// --benchmark_list_tests lists the cases, also on a machine without a GPU.
#include <cstdio>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "bench/harness.hpp"

int main(int argc, char** argv) {
  // Listing the cases needs no GPU (registration touches no device).
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--benchmark_list_tests" || arg == "--benchmark_list_tests=true") {
      benchmark::Initialize(&argc, argv);
      benchmark::RunSpecifiedBenchmarks(); // lists (honouring --benchmark_filter), runs nothing
      benchmark::Shutdown();
      return 0;
    }
  }
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
  std::vector<std::string> defaults = {"--benchmark_repetitions=5", "--benchmark_min_time=0.1",
                                       "--benchmark_counters_tabular=true"};
  std::vector<char*> args;
  args.push_back(argv[0]);
  for (std::string& d : defaults) {
    args.push_back(d.data());
  }
  for (int i = 1; i < argc; ++i) {
    args.push_back(argv[i]);
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
  return 0;
}
