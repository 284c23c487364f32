// backfill_status and backfill_tasks: the jobs and a job's tasks as the caller may see them.
#include "control.hpp"
#include "result_set.hpp"
#include "sql_support.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(backfill_status);
PG_FUNCTION_INFO_V1(backfill_tasks);
}

using namespace sql;

extern "C" {

Datum backfill_status(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        return with_spi([&] {
            spi::Text job = args.null(0) ? std::nullopt : args.text(0);
            if (job)
                control::require_visible(std::stoll(*job));
            result_set::materialize(fcinfo, control::status_rows(job));
            return (Datum)0;
        });
    });
}

Datum backfill_tasks(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        int64 id = args.int8(0, "job");
        return with_spi([&] {
            control::require_sql_version();
            control::require_visible(id);
            result_set::materialize(fcinfo, control::task_rows(id));
            return (Datum)0;
        });
    });
}

}  // extern "C"
