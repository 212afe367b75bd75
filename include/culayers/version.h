/* Version macros: the single source of truth for the library version.
 *
 * Plain C (C99) on purpose: culayers.h and the C++ headers both include it, and build scripts may
 * parse the three `#define CULAYERS_VERSION_*` lines below, so keep each on its own line as a plain
 * integer literal. */
#ifndef CULAYERS_VERSION_H_
#define CULAYERS_VERSION_H_

#define CULAYERS_VERSION_MAJOR 0
#define CULAYERS_VERSION_MINOR 1
#define CULAYERS_VERSION_PATCH 0

/* MAJOR * 10000 + MINOR * 100 + PATCH, so versions compare as integers (0.1.0 -> 100). */
#define CULAYERS_VERSION                                                                                     \
  (CULAYERS_VERSION_MAJOR * 10000 + CULAYERS_VERSION_MINOR * 100 + CULAYERS_VERSION_PATCH)

#define CULAYERS_DETAIL_STRINGIFY_(x) #x
#define CULAYERS_DETAIL_STRINGIFY(x) CULAYERS_DETAIL_STRINGIFY_(x)

/* "MAJOR.MINOR.PATCH", derived from the numbers above so the two can never disagree. */
#define CULAYERS_VERSION_STRING                                                                              \
  CULAYERS_DETAIL_STRINGIFY(CULAYERS_VERSION_MAJOR)                                                          \
  "." CULAYERS_DETAIL_STRINGIFY(CULAYERS_VERSION_MINOR) "." CULAYERS_DETAIL_STRINGIFY(CULAYERS_VERSION_PATCH)

#endif /* CULAYERS_VERSION_H_ */
