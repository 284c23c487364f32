// Returning rows from a set-returning SQL function.
#pragma once

#include "spi.hpp"

extern "C" {
#include "fmgr.h"
}

namespace result_set {

// Returns `rows` (text values in the order of the function's OUT columns) as its result set.
void materialize(FunctionCallInfo fcinfo, const std::vector<spi::Row> &rows);

}  // namespace result_set
