// The bridge between C++ exceptions and PostgreSQL errors (see pg_bridge.hpp for the rules).
#include "pg_bridge.hpp"

#include <cstring>

extern "C" {
#include "utils/memutils.h"
}

namespace pg {

const char *Error::what() const noexcept {
    return data_->message ? data_->message : "unknown PostgreSQL error";
}

ErrorData *try_pg(void (*fn)(void *), void *arg) {
    MemoryContext caller_context = CurrentMemoryContext;
    ErrorData *volatile error = nullptr;
    PG_TRY();
    {
        fn(arg);
    }
    PG_CATCH();
    {
        // The caller must roll back its (sub)transaction before it does any more work.
        MemoryContextSwitchTo(caller_context);
        error = CopyErrorData();
        FlushErrorState();
    }
    PG_END_TRY();
    return error;
}

static void copy_text(char *to, size_t size, const char *from) {
    std::strncpy(to, from ? from : "", size - 1);
    to[size - 1] = '\0';
}

void capture_current(CaughtError &out) noexcept {
    out.caught = true;
    out.sqlstate = ERRCODE_INTERNAL_ERROR;
    try {
        throw;
    } catch (const Error &e) {
        out.pg_error = e.data();
    } catch (const Failure &e) {
        out.sqlstate = e.sqlstate();
        copy_text(out.message, sizeof out.message, e.what());
        copy_text(out.detail, sizeof out.detail, e.detail().c_str());
        copy_text(out.hint, sizeof out.hint, e.hint().c_str());
    } catch (const std::bad_alloc &) {
        out.sqlstate = ERRCODE_OUT_OF_MEMORY;
        copy_text(out.message, sizeof out.message, "backfill: out of memory");
    } catch (const std::exception &e) {
        copy_text(out.message, sizeof out.message, e.what());
        copy_text(out.hint, sizeof out.hint, "This is a bug in backfill; please report it.");
    } catch (...) {
        copy_text(out.message, sizeof out.message, "backfill: unknown internal error");
    }
}

void raise(const CaughtError &caught) {
    if (caught.pg_error)
        ReThrowError(caught.pg_error);
    ereport(ERROR, (errcode(caught.sqlstate), errmsg("%s", caught.message),
                    caught.detail[0] ? errdetail("%s", caught.detail) : 0,
                    caught.hint[0] ? errhint("%s", caught.hint) : 0));
    pg_unreachable();
}

}  // namespace pg
