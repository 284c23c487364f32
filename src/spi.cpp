// SPI access for C++ code: parameters in, text rows out, every PostgreSQL call behind pg::call.
#include "spi.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/snapmgr.h"
}

namespace spi {

Param text_param(const Text &value) { return {TEXTOID, value}; }
Param bigint_param(int64 value) { return {INT8OID, std::to_string(value)}; }
Param oid_param(Oid value) { return {OIDOID, std::to_string(value)}; }

bool push_snapshot_if_none() {
    if (ActiveSnapshotSet())
        return false;
    PushActiveSnapshot(GetTransactionSnapshot());
    return true;
}

Prepared prepare_only(const std::string &sql, const std::vector<Oid> &argtypes) {
    int statements = 0, natts = 0;
    bool select = false, modifies = false;
    char **names = nullptr;
    Oid *types = nullptr;
    pg::call([&] {
        bool pushed = push_snapshot_if_none();
        SPIPlanPtr plan = SPI_prepare(sql.c_str(), (int)argtypes.size(),
                                      const_cast<Oid *>(argtypes.data()));
        if (pushed)
            PopActiveSnapshot();
        if (!plan)
            elog(ERROR, "backfill: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
        List *sources = SPI_plan_get_plan_sources(plan);
        statements = list_length(sources);
        CachedPlanSource *ps = statements == 1 ? (CachedPlanSource *)linitial(sources) : NULL;
        select = ps && ps->resultDesc && ps->commandTag == CMDTAG_SELECT;
        if (select) {
            Query *query = ps->query_list ? linitial_node(Query, ps->query_list) : NULL;
            modifies = query && query->hasModifyingCTE;
            natts = ps->resultDesc->natts;
            names = (char **)palloc0(sizeof(char *) * (natts + 1));
            types = (Oid *)palloc0(sizeof(Oid) * (natts + 1));
            for (int i = 0; i < natts; i++) {
                Form_pg_attribute att = TupleDescAttr(ps->resultDesc, i);
                names[i] = pstrdup(NameStr(att->attname));
                types[i] = att->atttypid;
            }
        }
        SPI_freeplan(plan);
    });
    Prepared prepared;
    prepared.statements = statements;
    prepared.select = select;
    prepared.modifies = modifies;
    for (int i = 0; i < natts; i++)
        prepared.columns.push_back({names[i], types[i]});
    return prepared;
}

double plan_cost(const std::string &sql, const std::vector<Oid> &argtypes) {
    double cost = 0;
    pg::call([&] {
        bool pushed = push_snapshot_if_none();
        SPIPlanPtr plan = SPI_prepare(sql.c_str(), (int)argtypes.size(),
                                      const_cast<Oid *>(argtypes.data()));
        if (!plan)
            elog(ERROR, "backfill: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
        CachedPlan *cached = SPI_plan_get_cached_plan(plan);  // generic: no parameter values
        if (cached && list_length(cached->stmt_list) == 1)
            cost = linitial_node(PlannedStmt, cached->stmt_list)->planTree->total_cost;
        if (cached)  // an unsaved plan's is held by no resource owner
#if PG_VERSION_NUM >= 140000
            ReleaseCachedPlan(cached, NULL);
#else
            ReleaseCachedPlan(cached, false);
#endif
        SPI_freeplan(plan);
        if (pushed)
            PopActiveSnapshot();
    });
    return cost;
}

namespace {

// A result copied out of SPI into a private memory context, as C strings.
struct RawResult {
    MemoryContext context;
    uint64 nrows;
    int ncols;
    char **cells;  // nrows * ncols, NULL for SQL NULL
    uint64 processed;
};

// Runs sql with parameters converted from text by their types' input functions.
RawResult run_raw(const char *sql, int nargs, const Oid *types, const char *const *texts) {
    RawResult raw{};
    pg::call([&] {
        raw.context = AllocSetContextCreate(CurrentMemoryContext, "backfill SPI result",
                                            ALLOCSET_SMALL_SIZES);
        MemoryContext caller = MemoryContextSwitchTo(raw.context);
        Oid *argtypes = (Oid *)palloc0(sizeof(Oid) * (nargs + 1));
        Datum *values = (Datum *)palloc0(sizeof(Datum) * (nargs + 1));
        char *nulls = (char *)palloc0(nargs + 1);
        for (int i = 0; i < nargs; i++) {
            argtypes[i] = types[i];
            nulls[i] = texts[i] ? ' ' : 'n';
            if (texts[i]) {
                Oid input, ioparam;
                getTypeInputInfo(types[i], &input, &ioparam);
                values[i] = OidInputFunctionCall(input, (char *)texts[i], ioparam, -1);
            }
        }
        MemoryContextSwitchTo(caller);
        bool pushed = push_snapshot_if_none();
        int rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, false, 0);
        if (pushed)
            PopActiveSnapshot();
        if (rc < 0)
            elog(ERROR, "backfill: SPI_execute_with_args failed (%d) for: %s", rc, sql);
        raw.processed = SPI_processed;
        MemoryContextSwitchTo(raw.context);
        if (SPI_tuptable) {
            raw.nrows = SPI_processed;
            raw.ncols = SPI_tuptable->tupdesc->natts;
            raw.cells = (char **)palloc0(sizeof(char *) * (raw.nrows * raw.ncols + 1));
            for (uint64 r = 0; r < raw.nrows; r++)
                for (int c = 0; c < raw.ncols; c++)
                    raw.cells[r * raw.ncols + c] =
                        SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c + 1);
            SPI_freetuptable(SPI_tuptable);
        }
        MemoryContextSwitchTo(caller);
    });
    return raw;
}

Result to_result(const RawResult &raw) {
    Result result;
    result.processed = raw.processed;
    result.rows.reserve(raw.nrows);
    for (uint64 r = 0; r < raw.nrows; r++) {
        Row row;
        row.reserve(raw.ncols);
        for (int c = 0; c < raw.ncols; c++) {
            const char *cell = raw.cells[r * raw.ncols + c];
            row.push_back(cell ? Text(cell) : std::nullopt);
        }
        result.rows.push_back(std::move(row));
    }
    return result;
}

Result run(const std::string &sql, const std::vector<Oid> &types,
           const std::vector<const char *> &texts) {
    RawResult raw = run_raw(sql.c_str(), (int)types.size(), types.data(), texts.data());
    Result result;
    try {
        result = to_result(raw);
    } catch (...) {
        pg::call([&] { MemoryContextDelete(raw.context); });
        throw;
    }
    pg::call([&] { MemoryContextDelete(raw.context); });
    return result;
}

}  // namespace

Result exec(const std::string &sql, const std::vector<Param> &params) {
    std::vector<Oid> types;
    std::vector<const char *> texts;
    for (const Param &p : params) {
        types.push_back(p.type);
        texts.push_back(p.value ? p.value->c_str() : nullptr);
    }
    return run(sql, types, texts);
}

Text scalar(const std::string &sql, const std::vector<Param> &params) {
    Result result = exec(sql, params);
    if (result.rows.empty() || result.rows[0].empty())
        return std::nullopt;
    return result.rows[0][0];
}

Result exec_with_bounds(const std::string &sql, Oid type, const std::string &lower,
                        const std::string &upper) {
    return run(sql, {type, type}, {lower.c_str(), upper.c_str()});
}

std::string ident(const std::string &name) {
    const char *quoted = nullptr;
    pg::call([&] { quoted = quote_identifier(name.c_str()); });
    return quoted;
}

std::string qualified(const std::string &schema, const std::string &name) {
    return ident(schema) + "." + ident(name);
}

std::string literal(const std::string &value) {
    const char *quoted = nullptr;
    pg::call([&] { quoted = quote_literal_cstr(value.c_str()); });
    return quoted;
}

void connect(bool nonatomic) {
    pg::call([&] {
        if (SPI_connect_ext(nonatomic ? SPI_OPT_NONATOMIC : 0) != SPI_OK_CONNECT)
            elog(ERROR, "backfill: SPI_connect failed");
    });
}

void finish() {
    pg::call([] { SPI_finish(); });
}

}  // namespace spi
