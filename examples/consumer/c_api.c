/* The C half of the consumer: culayers.h compiled as C99 and linked from a C translation unit. */
#include <culayers/culayers.h>

#include <stdio.h>
#include <string.h>

int consumer_check_c_api(void) {
  const char* status = culayersGetStatusString(CULAYERS_STATUS_INVALID_SHAPE);
  printf("C API:   culayersGetVersion() = %d (\"%s\"), status %d = \"%s\"\n", culayersGetVersion(),
         culayersGetVersionString(), (int)CULAYERS_STATUS_INVALID_SHAPE, status);
  if (culayersGetVersion() != CULAYERS_VERSION ||
      strcmp(culayersGetVersionString(), CULAYERS_VERSION_STRING) != 0) {
    fprintf(stderr, "header/library version mismatch: headers %d, library %d\n", CULAYERS_VERSION,
            culayersGetVersion());
    return 1;
  }
  return status != NULL && status[0] != '\0' ? 0 : 1;
}
