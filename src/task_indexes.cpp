// Step 3: the shadow's indexes and constraints, their parallel workers and memory, then its
// foreign keys, added and validated.
#include "local_steps.hpp"
#include "task_common.hpp"

#include "carry_over.hpp"
#include "guc.hpp"
#include "settings.hpp"

extern "C" {
#include "miscadmin.h"
#include "optimizer/paths.h"
}

#include <algorithm>

namespace task {

namespace {

// Turns the partition's index definition into the same index on the shadow.
std::string index_on_shadow(const Task &t, const spi::Row &index, const std::string &new_name) {
    bool unique = *index[2] == "t";
    std::string head = std::string("CREATE ") + (unique ? "UNIQUE " : "") + "INDEX ";
    std::string prefix = head + ident(*index[0]) + " ON " + t.qualified() + " USING ";
    const std::string &definition = *index[1];
    if (definition.compare(0, prefix.size(), prefix) != 0)
        throw pg::Failure(ERRCODE_INTERNAL_ERROR,
                          pg::fmt("unexpected definition of index %1%: %2%", *index[0],
                                  definition));
    return head + ident(new_name) + " ON " + qualified(t.schema, shadow_name(t)) + " USING " +
           definition.substr(prefix.size());
}

// The parallel workers PostgreSQL plans for an index build on a heap of `pages` blocks: none
// below min_parallel_table_scan_size, then one more each time the heap triples, at most
// max_parallel_maintenance_workers (compute_parallel_worker's rule).
int heap_size_index_workers(double pages) {
    double threshold = std::max(min_parallel_table_scan_size, 1);
    if (pages < threshold)
        return 0;
    int workers = 1;
    for (; pages >= threshold * 3 && workers < max_parallel_maintenance_workers; threshold *= 3)
        workers++;
    return std::min(workers, max_parallel_maintenance_workers);
}

// With a fixed budget, PostgreSQL would drop the parallel workers of the shadow's index builds
// (it wants 32MB per participant), yet a parallel build sharing the budget is as fast as one
// with 64MB each (README, Benchmark). The table's parallel_workers option makes PostgreSQL plan
// by heap size alone, as for any table that sets it; a partition that sets it keeps its own.
// Returns whether it set the option, for build_indexes to remove it after the builds.
bool plan_parallel_index_build(const Job &job, const std::string &shadow, bool has_indexes) {
    if (!has_indexes || settings::index_build_mem_kb == -1 || workers_fill_cores(job))
        return false;
    spi::Row facts = spi::exec(
        "SELECT pg_catalog.pg_relation_size(c.oid) / "
        "       pg_catalog.current_setting('block_size')::int, "
        "       EXISTS (SELECT FROM pg_catalog.pg_options_to_table(c.reloptions) "
        "               WHERE option_name = 'parallel_workers') "
        "FROM pg_catalog.pg_class c WHERE c.oid = $1",
        {spi::oid_param((Oid)std::stoul(*relation_oid(shadow)))})
                         .rows.at(0);
    int workers = heap_size_index_workers(std::stod(*facts[0]));
    if (*facts[1] == "t" || workers == 0)
        return false;
    spi::exec("ALTER TABLE " + shadow + " SET (parallel_workers = " + std::to_string(workers) +
              ")");
    return true;
}

// The partition's foreign keys (those it inherits from the parent and its own), by name.
spi::Result partition_foreign_keys(const std::string &oid) {
    return spi::exec("SELECT conname, pg_catalog.pg_get_constraintdef(oid) "
                     "FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND contype = 'f' "
                     "ORDER BY conname",
                     {spi::oid_param((Oid)std::stoul(oid))});
}

}  // namespace

void LocalSteps::build_indexes(const Job &job, const Task &t) const {
    std::string oid = partition_oid(job, t);
    std::string shadow = qualified(t.schema, shadow_name(t));
    spi::Result indexes = partition_indexes(oid);
    bool parallel_option_set = plan_parallel_index_build(job, shadow, !indexes.rows.empty());
    for (size_t n = 0; n < indexes.rows.size(); n++) {
        const spi::Row &index = indexes.rows[n];
        std::string name = new_index_name(t, n);
        // Neither definition names the index's tablespace (and a constraint's clause for it
        // would go before DEFERRABLE or WHERE): the setting puts the index where the old one is.
        guc::Settings settings = {{"default_tablespace", *index[5]}};
        if (workers_fill_cores(job))
            settings.push_back({"max_parallel_maintenance_workers", "0"});
        if (settings::index_build_mem_kb != -1)
            settings.push_back(
                {"maintenance_work_mem", std::to_string(settings::index_build_mem_kb)});
        int level = guc::push(settings);
        if (index[3])  // backs a PRIMARY KEY, UNIQUE or EXCLUDE constraint: ATTACH needs one too
            spi::exec("ALTER TABLE " + shadow + " ADD CONSTRAINT " + ident(name) + " " +
                      *index[4]);
        else
            spi::exec(index_on_shadow(t, index, name));
        guc::pop(level);
    }
    if (parallel_option_set)
        spi::exec("ALTER TABLE " + shadow + " RESET (parallel_workers)");
    carry_over::after_load(oid, t.qualified(), shadow);
    spi::exec("ANALYZE " + shadow);
    control::task_phase(t, states::TaskPhase::indexed);
}

void LocalSteps::add_foreign_keys(const Job &job, const Task &t) const {
    std::string shadow = qualified(t.schema, shadow_name(t));
    for (const spi::Row &fk : partition_foreign_keys(partition_oid(job, t)).rows)
        spi::exec("ALTER TABLE " + shadow + " ADD CONSTRAINT " + ident(*fk[0]) + " " + *fk[1] +
                  " NOT VALID");
}

void LocalSteps::validate_foreign_keys(const Job &job, const Task &t) const {
    std::string shadow = qualified(t.schema, shadow_name(t));
    for (const spi::Row &fk : partition_foreign_keys(partition_oid(job, t)).rows)
        spi::exec("ALTER TABLE " + shadow + " VALIDATE CONSTRAINT " + ident(*fk[0]));
}

}  // namespace task
