// The C++ half of the consumer: links the installed culayers package and uses both APIs.
#include <culayers/culayers.h>
#include <culayers/culayers.hpp>

#include <cstdio>
#include <cstring>

extern "C" int consumer_check_c_api(void);
int consumer_check_model();

int main() {
  std::printf("linked %s\n", CULAYERS_CONSUMER_TARGET);
  const culayers::Status status = culayers::Status::kErrorInvalidShape;
  std::printf("C++ API: culayers::version() = %d (\"%s\"), Status %d = \"%s\"\n", culayers::version(),
              culayers::version_string(), static_cast<int>(status), culayers::status_string(status));
  int failures = consumer_check_c_api();
  failures += consumer_check_model();
  if (culayers::version() != culayers::kHeaderVersion) {
    std::fprintf(stderr, "header/library version mismatch\n");
    ++failures;
  }
  // Both APIs describe a status the same way.
  if (std::strcmp(culayers::status_string(status),
                  culayersGetStatusString(static_cast<culayersStatus_t>(status))) != 0) {
    std::fprintf(stderr, "C and C++ status strings differ\n");
    ++failures;
  }
  std::printf(failures == 0 ? "consumer: OK\n" : "consumer: FAILED\n");
  return failures == 0 ? 0 : 1;
}
