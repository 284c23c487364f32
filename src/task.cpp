// The steps for a job's target: this server's, for every target today (see task.hpp).
#include "local_steps.hpp"

namespace task {

const Steps &steps_for(const control::Job &) {
    static const LocalSteps local;
    return local;
}

}  // namespace task
