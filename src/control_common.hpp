// What the control_*.cpp files share: one statement run as the extension owner, and the SQL
// words of the states.
#pragma once

#include "control.hpp"

namespace control {

using detail::run;
using states::literal;
using states::literals;

}  // namespace control
