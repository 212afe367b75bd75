// Shared pieces of the emulator's own tests (emulated build only).
#pragma once

#include "kernels/common/common.cuh"
#include "tests/support/test_support.hpp"

#include <string>

namespace culayers::test {

// Runs a launch and waits for it, so a kernel fault is seen in immediate and deferred mode alike.
inline cudaError_t finish(cudaError_t launch_result) {
  const cudaError_t sync = cudaDeviceSynchronize();
  return launch_result != cudaSuccess ? launch_result : sync;
}

// Silences the emulator's stderr report while a planted bug fires.
class QuietEmulator {
 public:
  QuietEmulator() {
    culayers_emu::set_report_to_stderr(false);
    culayers_emu::clear_error_message();
  }
  ~QuietEmulator() { culayers_emu::set_report_to_stderr(true); }
  QuietEmulator(const QuietEmulator&) = delete;
  QuietEmulator& operator=(const QuietEmulator&) = delete;
};

// Forces a stream mode for one test and restores the mode the suite runs in.
class StreamMode {
 public:
  explicit StreamMode(bool deferred) : saved_(culayers_emu::deferred()) {
    culayers_emu::set_deferred(deferred);
  }
  ~StreamMode() { culayers_emu::set_deferred(saved_); }
  StreamMode(const StreamMode&) = delete;
  StreamMode& operator=(const StreamMode&) = delete;

 private:
  bool saved_;
};

inline std::string file_and_line(const char* file, int line) {
  std::string f(file);
  const auto slash = f.find_last_of('/');
  return (slash == std::string::npos ? f : f.substr(slash + 1)) + ":" + std::to_string(line);
}

} // namespace culayers::test
