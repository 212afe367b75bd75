/* Pure C program linked with the shared C API library (culayers::shared or culayers::emulated_shared). */
#include <stdio.h>

int consumer_check_c_api(void);

int main(void) {
  int failures = consumer_check_c_api();
  printf(failures == 0 ? "consumer (C, shared library): OK\n" : "consumer (C, shared library): FAILED\n");
  return failures == 0 ? 0 : 1;
}
