// Umbrella header for the culayers C++ API.
#ifndef CULAYERS_CULAYERS_HPP_
#define CULAYERS_CULAYERS_HPP_

#include "culayers/version.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"

#endif // CULAYERS_CULAYERS_HPP_
