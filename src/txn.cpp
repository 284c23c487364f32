// Transactions of a runner (see txn.hpp).
#include "txn.hpp"

#include <chrono>

extern "C" {
#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/resowner.h"
}

namespace txn {

void in_subtransaction(Oid user, const guc::Settings &settings,
                       const std::function<void()> &body) {
    MemoryContext context = CurrentMemoryContext;
    ResourceOwner owner = CurrentResourceOwner;
    Oid saved_user = InvalidOid;
    int saved_security = 0;
    pg::call([&] {
        BeginInternalSubTransaction(NULL);
        MemoryContextSwitchTo(context);
        GetUserIdAndSecContext(&saved_user, &saved_security);
        SetUserIdAndSecContext(user, saved_security | SECURITY_LOCAL_USERID_CHANGE);
    });
    std::exception_ptr error;
    try {
        int level = guc::push(settings);
        body();
        guc::pop(level);
    } catch (...) {
        error = std::current_exception();
    }
    if (error) {
        pg::call([&] {
            RollbackAndReleaseCurrentSubTransaction();
            MemoryContextSwitchTo(context);
            CurrentResourceOwner = owner;
            SetUserIdAndSecContext(saved_user, saved_security);
        });
        std::rethrow_exception(error);
    }
    pg::call([&] {
        SetUserIdAndSecContext(saved_user, saved_security);
        ReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(context);
        CurrentResourceOwner = owner;
    });
}

void in_subtransaction(const std::function<void()> &body) {
    Oid user = InvalidOid;
    pg::call([&] { user = GetUserId(); });
    in_subtransaction(user, {}, body);
}

void commit() {
    pg::call([] {
        SPI_commit();
#if PG_VERSION_NUM < 150000
        SPI_start_transaction();
#endif
        XactIsoLevel = XACT_READ_COMMITTED;  // no snapshot yet: as SET TRANSACTION would
    });
}

double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace txn
