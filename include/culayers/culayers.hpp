// Umbrella header for the culayers C++ API.
#ifndef CULAYERS_CULAYERS_HPP_
#define CULAYERS_CULAYERS_HPP_

#include "culayers/version.hpp"
#include "culayers/status.hpp"
#include "culayers/types.hpp"
#include "culayers/batch_norm.hpp"
#include "culayers/cast.hpp"
#include "culayers/dropout.hpp"
#include "culayers/group_norm.hpp"
#include "culayers/masked_reduce.hpp"

#endif // CULAYERS_CULAYERS_HPP_
