// Returning rows from a set-returning SQL function (see result_set.hpp).
#include "result_set.hpp"

extern "C" {
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/tuplestore.h"
}

namespace result_set {

void materialize(FunctionCallInfo fcinfo, const std::vector<spi::Row> &rows) {
    ReturnSetInfo *rsinfo = (ReturnSetInfo *)fcinfo->resultinfo;
    Tuplestorestate *store = nullptr;
    AttInMetadata *meta = nullptr;
    pg::call([&] {
        if (!rsinfo || !IsA(rsinfo, ReturnSetInfo) ||
            !(rsinfo->allowedModes & SFRM_Materialize))
            ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                            errmsg("set-valued function called in context that cannot accept a "
                                   "set")));
        TupleDesc desc;
        if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
            elog(ERROR, "backfill: return type must be a row type");
        MemoryContext old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
        desc = CreateTupleDescCopy(desc);
        store = tuplestore_begin_heap(true, false, work_mem);
        rsinfo->returnMode = SFRM_Materialize;
        rsinfo->setResult = store;
        rsinfo->setDesc = desc;
        meta = TupleDescGetAttInMetadata(desc);
        MemoryContextSwitchTo(old);
    });
    std::vector<char *> values;
    for (const spi::Row &row : rows) {
        values.clear();
        for (const spi::Text &cell : row)
            values.push_back(cell ? const_cast<char *>(cell->c_str()) : nullptr);
        pg::call([&] {
            MemoryContext old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
            HeapTuple tuple = BuildTupleFromCStrings(meta, values.data());
            tuplestore_puttuple(store, tuple);
            MemoryContextSwitchTo(old);
        });
    }
}

}  // namespace result_set
