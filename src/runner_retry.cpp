// The retry policy: why an attempt failed, and which failures pass.
#include "run.hpp"

namespace runner {

Cause cause_of(std::exception_ptr error) {
    Cause cause;
    try {
        std::rethrow_exception(error);
    } catch (const pg::Error &e) {
        cause.sqlstate = e.sqlstate();
        cause.text = e.what();
        if (e.data()->detail)
            cause.text += std::string(" (") + e.data()->detail + ")";
    } catch (const pg::Failure &e) {
        cause.sqlstate = e.sqlstate();
        cause.text = e.what();
        if (!e.detail().empty())
            cause.text += " (" + e.detail() + ")";
    } catch (const std::exception &e) {
        cause.text = e.what();
    }
    return cause;
}

bool is_transient(int sqlstate) {
    return sqlstate == ERRCODE_LOCK_NOT_AVAILABLE || sqlstate == ERRCODE_T_R_DEADLOCK_DETECTED ||
           sqlstate == ERRCODE_T_R_SERIALIZATION_FAILURE;
}

}  // namespace runner
