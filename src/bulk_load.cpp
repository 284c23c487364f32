// Loading a shadow the way COPY loads a table (see bulk_load.hpp).
//
// The INSERT is parsed, analyzed and rewritten as PostgreSQL would run it; its query then becomes
// the SELECT of the values the INSERT would store (the planner's NULL for a column left out
// included), is planned (in parallel where the planner finds that faster, as for CREATE TABLE AS)
// and run into a receiver that checks each row as ExecInsert would and hands the rows to
// table_multi_insert a batch at a time.
#include "bulk_load.hpp"

#include "citus.hpp"
#include "compat.hpp"
#include "pg_bridge.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "parser/parse_coerce.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteHandler.h"
#include "tcop/tcopprot.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"
}

namespace bulk_load {

namespace {

// COPY's batch limits: enough rows per call to fill pages, little memory held.
constexpr int batch_rows = 1000;
constexpr Size batch_bytes = 64 * 1024;

// The receiver the executor hands each row to; plain data, as it lives in PostgreSQL memory.
struct Loader {
    DestReceiver receiver;  // first, so that the executor's pointer is the Loader's
    Relation shadow;
    MemoryContext context;  // outlives the executor's: the batch's slots and rows live here
    MemoryContext writing;  // what table_multi_insert allocates for a batch, reset after it
    ResultRelInfo *result;
    EState *estate;  // for constraint and generated-column expressions
    TupleTableSlot *batch[batch_rows];
    int used;
    Size bytes;
    CommandId command;
    int options;
    BulkInsertState bulk;
    uint64 rows;
};

void write_batch(Loader *loader) {
    if (loader->used == 0)
        return;
    MemoryContext executor = MemoryContextSwitchTo(loader->writing);
    table_multi_insert(loader->shadow, loader->batch, loader->used, loader->command,
                       loader->options, loader->bulk);
    MemoryContextSwitchTo(executor);
    MemoryContextReset(loader->writing);
    for (int i = 0; i < loader->used; i++)
        ExecClearTuple(loader->batch[i]);
    loader->used = 0;
    loader->bytes = 0;
}

bool receive_row(TupleTableSlot *row, DestReceiver *self) {
    Loader *loader = (Loader *)self;
    TupleDesc desc = RelationGetDescr(loader->shadow);
    ResetPerTupleExprContext(loader->estate);
    if (!loader->batch[loader->used]) {
        MemoryContext executor = MemoryContextSwitchTo(loader->context);
        loader->batch[loader->used] = table_slot_create(loader->shadow, NULL);
        MemoryContextSwitchTo(executor);
    }
    TupleTableSlot *slot = loader->batch[loader->used];
    // The row's values, formed into the shadow's own tuple (the query's columns have its types).
    slot_getallattrs(row);
    ExecClearTuple(slot);
    memcpy(slot->tts_values, row->tts_values, sizeof(Datum) * desc->natts);
    memcpy(slot->tts_isnull, row->tts_isnull, sizeof(bool) * desc->natts);
    ExecStoreVirtualTuple(slot);
    ExecMaterializeSlot(slot);
    // What ExecInsert does before it writes a row into a table without triggers or indexes.
    if (desc->constr && desc->constr->has_generated_stored)
#if PG_VERSION_NUM >= 140000
        ExecComputeStoredGenerated(loader->result, loader->estate, slot, CMD_INSERT);
#else
        ExecComputeStoredGenerated(loader->estate, slot, CMD_INSERT);
#endif
    if (desc->constr)
        ExecConstraints(loader->result, slot, loader->estate);
    bool should_free;
    HeapTuple tuple = ExecFetchSlotHeapTuple(slot, false, &should_free);
    loader->bytes += tuple->t_len;
    if (should_free)
        heap_freetuple(tuple);
    loader->rows++;
    if (++loader->used == batch_rows || loader->bytes >= batch_bytes)
        write_batch(loader);
    return true;
}

void startup(DestReceiver *self, int operation, TupleDesc typeinfo) {
    Loader *loader = (Loader *)self;
    if (typeinfo->natts != RelationGetDescr(loader->shadow)->natts)
        elog(ERROR, "backfill: the load query returns %d columns for the %d of \"%s\"",
             typeinfo->natts, RelationGetDescr(loader->shadow)->natts,
             RelationGetRelationName(loader->shadow));
}

void shutdown(DestReceiver *self) { write_batch((Loader *)self); }

void destroy(DestReceiver *self) {}

// Whether the shadow takes rows the way COPY writes them: a heap with nothing that acts on a
// row (triggers, rules, policies) and no index to maintain.
bool takes_bulk_rows(Relation rel) {
    return rel->rd_rel->relkind == RELKIND_RELATION &&
           rel->rd_tableam == GetHeapamTableAmRoutine() && !rel->rd_rel->relhasindex &&
           !rel->trigdesc && !rel->rd_rules && !rel->rd_rel->relrowsecurity;
}

// The INSERT's query as the SELECT of the values it would store, one per column of the shadow
// in order; a column the INSERT leaves out (no default) gets the NULL the planner would give it.
void make_select(Query *query, Relation rel) {
    TupleDesc desc = RelationGetDescr(rel);
    List *values = NIL;
    for (int attno = 1; attno <= desc->natts; attno++) {
        Form_pg_attribute att = TupleDescAttr(desc, attno - 1);
        Expr *value = NULL;
        ListCell *cell;
        foreach (cell, query->targetList) {
            TargetEntry *entry = lfirst_node(TargetEntry, cell);
            if (!entry->resjunk && entry->resno == attno)
                value = entry->expr;
        }
        if (!value && att->attisdropped)
            value = (Expr *)makeNullConst(INT4OID, -1, InvalidOid);
        else if (!value && att->attgenerated)  // computed for each row by the receiver
            value = (Expr *)makeNullConst(att->atttypid, att->atttypmod, att->attcollation);
        else if (!value)  // a domain's NOT NULL still applies
            value = (Expr *)coerce_to_domain(
                (Node *)makeNullConst(att->atttypid, -1, att->attcollation), InvalidOid, -1,
                att->atttypid, COERCION_IMPLICIT, COERCE_IMPLICIT_CAST, -1, false);
        values = lappend(values, makeTargetEntry(value, (AttrNumber)attno,
                                                 pstrdup(NameStr(att->attname)), false));
    }
    // The target stays in the range table, so that the INSERT privilege is checked as before.
    query->commandType = CMD_SELECT;
    query->resultRelation = 0;
    query->targetList = values;
}

// Collects the domains the expressions coerce to; not inside subqueries (the source's own query,
// whose expressions the planner judges as in any SELECT).
bool collect_domains(Node *node, void *context) {
    if (!node || IsA(node, Query))
        return false;
    List **domains = (List **)context;
    if (IsA(node, CoerceToDomain))
        *domains = list_append_unique_oid(*domains, castNode(CoerceToDomain, node)->resulttype);
#if PG_VERSION_NUM >= 160000
    return expression_tree_walker(node, collect_domains, context);
#else
    // Declared without a prototype before 16, which C++ reads as taking no arguments.
    return expression_tree_walker(node, (bool (*)())(void (*)(void))collect_domains, context);
#endif
}

// Whether the load's query may run in parallel: what runs in this process while its workers do
// must not write or start a subtransaction (PARALLEL UNSAFE), and the planner judges only the
// query. Besides it, this process evaluates the CHECK constraints and generated columns for each
// row, and the checks of the domains the INSERT coerces its values to (the planner counts those
// as parallel restricted, to run here, where one that writes would fail).
bool may_run_in_parallel(Query *select, Relation rel) {
    TupleDesc desc = RelationGetDescr(rel);
    List *expressions = NIL;
    for (int i = 0; desc->constr && i < desc->constr->num_check; i++)
        expressions = lappend(expressions, stringToNode(desc->constr->check[i].ccbin));
    for (int attno = 1; attno <= desc->natts; attno++)
        if (TupleDescAttr(desc, attno - 1)->attgenerated)
            expressions = lappend(expressions, build_column_default(rel, attno));
    List *domains = NIL;
    (void)collect_domains((Node *)select->targetList, &domains);
    ListCell *cell;
    foreach (cell, domains) {
        // Where the context's reset callback it registers can still find it.
        DomainConstraintRef *constraints = (DomainConstraintRef *)palloc(sizeof(*constraints));
        InitDomainConstraintRef(lfirst_oid(cell), constraints, CurrentMemoryContext, false);
        ListCell *c;
        foreach (c, constraints->constraints) {
            DomainConstraintState *constraint = (DomainConstraintState *)lfirst(c);
            if (constraint->check_expr)
                expressions = lappend(expressions, constraint->check_expr);
        }
    }
    Query *checks = makeNode(Query);
    checks->commandType = CMD_SELECT;
    foreach (cell, expressions)
        checks->targetList =
            lappend(checks->targetList, makeTargetEntry((Expr *)lfirst(cell),
                                                        list_length(checks->targetList) + 1,
                                                        NULL, false));
    return max_parallel_hazard(checks) != PROPARALLEL_UNSAFE;
}

// The rewritten queries of `sql`, one statement whose $1 and $2 are of `types`.
List *analyze(const char *sql, Oid *types) {
    List *raw = pg_parse_query(sql);
    if (list_length(raw) != 1)
        return NIL;
#if PG_VERSION_NUM >= 150000
    return pg_analyze_and_rewrite_fixedparams(linitial_node(RawStmt, raw), sql, types, 2, NULL);
#else
    return pg_analyze_and_rewrite(linitial_node(RawStmt, raw), sql, types, 2, NULL);
#endif
}

struct Request {
    const char *sql;
    const char *reported;  // the text and query id statistics see
    Oid types[2];
    const char *bounds[2];
    bool bulk;  // out: the shadow took the bulk path
    uint64 rows;
};

// The bound parameters $1 and $2 of the request, from their text.
ParamListInfo bound_params(const Request *request) {
    ParamListInfo params = makeParamList(2);
    for (int i = 0; i < 2; i++) {
        Oid input, ioparam;
        getTypeInputInfo(request->types[i], &input, &ioparam);
        params->params[i].value =
            OidInputFunctionCall(input, (char *)request->bounds[i], ioparam, -1);
        params->params[i].isnull = false;
        params->params[i].pflags = PARAM_FLAG_CONST;
        params->params[i].ptype = request->types[i];
    }
    return params;
}

// The plan of the request's SELECT, reported under the request's text and query id.
PlannedStmt *plan_select(Request *request, Query *query, Relation rel, ParamListInfo params) {
    make_select(query, rel);
    // The id statistics file the statement under (set by parse analysis where a module asks).
    List *reported = analyze(request->reported, request->types);
    query->queryId = list_length(reported) == 1 ? linitial_node(Query, reported)->queryId : 0;
    query->stmt_location = -1;  // the whole of the reported text, not a stretch of the INSERT's
    query->stmt_len = 0;
    // As CREATE TABLE AS: the query may run in parallel, the rows are written here, in the
    // leader (an INSERT ... SELECT would run it in this process alone).
    int plan_options = may_run_in_parallel(query, rel) ? CURSOR_OPT_PARALLEL_OK : 0;
    return pg_plan_query(query, request->sql, plan_options, params);
}

// A receiver that writes the rows into the shadow, in batches, in its own memory.
Loader *new_loader(Relation rel, MemoryContext context, bool freeze) {
    Loader *loader = (Loader *)palloc0(sizeof(Loader));
    loader->receiver.receiveSlot = receive_row;
    loader->receiver.rStartup = startup;
    loader->receiver.rShutdown = shutdown;
    loader->receiver.rDestroy = destroy;
    loader->receiver.mydest = DestNone;
    loader->shadow = rel;
    loader->context = context;
    loader->writing = AllocSetContextCreate(context, "backfill bulk load batch",
                                            ALLOCSET_DEFAULT_SIZES);
    loader->estate = CreateExecutorState();
    loader->result = makeNode(ResultRelInfo);
    InitResultRelInfo(loader->result, rel, 0, NULL, 0);
#if PG_VERSION_NUM < 140000
    loader->estate->es_result_relation_info = loader->result;
#endif
    loader->command = GetCurrentCommandId(true);
    loader->options = TABLE_INSERT_SKIP_FSM | (freeze ? TABLE_INSERT_FROZEN : 0);
    loader->bulk = GetBulkInsertState();
    return loader;
}

// Runs the plan into the loader, then finishes the shadow's bulk insert.
void run_into(Loader *loader, PlannedStmt *plan, ParamListInfo params, const char *reported) {
    (void)GetCurrentTransactionId();  // a parallel query cannot assign it at the first write
    CommandCounterIncrement();  // as SPI does: the statement sees what this transaction did
    PushActiveSnapshot(GetTransactionSnapshot());
    QueryDesc *run = CreateQueryDesc(plan, reported, GetActiveSnapshot(), InvalidSnapshot,
                                     &loader->receiver, params, NULL, 0);
    ExecutorStart(run, 0);
    ExecutorRun(run, ForwardScanDirection, 0, true);
    ExecutorFinish(run);
    ExecutorEnd(run);
    FreeQueryDesc(run);
    PopActiveSnapshot();

    FreeBulkInsertState(loader->bulk);
    table_finish_bulk_insert(loader->shadow, loader->options);
    for (int i = 0; i < batch_rows && loader->batch[i]; i++)
        ExecDropSingleTupleTableSlot(loader->batch[i]);
    FreeExecutorState(loader->estate);
}

// Collects the relations a query reads, in its subqueries and sublinks too (the rewriter has
// expanded its views).
bool collect_relations(Node *node, void *context) {
    if (!node)
        return false;
    if (IsA(node, RangeTblEntry)) {
        RangeTblEntry *rte = (RangeTblEntry *)node;
        if (rte->rtekind == RTE_RELATION)
            *(List **)context = list_append_unique_oid(*(List **)context, rte->relid);
        return false;
    }
#if PG_VERSION_NUM >= 160000
    if (IsA(node, Query))
        return query_tree_walker((Query *)node, collect_relations, context,
                                 QTW_EXAMINE_RTES_BEFORE);
    return expression_tree_walker(node, collect_relations, context);
#else
    // Declared without a prototype before 16, which C++ reads as taking no arguments.
    auto walker = (bool (*)())(void (*)(void))collect_relations;
    if (IsA(node, Query))
        return query_tree_walker((Query *)node, walker, context, QTW_EXAMINE_RTES_BEFORE);
    return expression_tree_walker(node, walker, context);
#endif
}

// Citus plans a query that reads its tables in its own way, which the SELECT planned here for
// the shadow does not survive: such a load takes the plain INSERT ... SELECT.
bool reads_citus_tables(Query *query) {
    List *relids = NIL;
    (void)collect_relations((Node *)query, &relids);
    return citus::any_in_metadata(relids);
}

// The shadow, locked, when the request is a plain INSERT ... SELECT into a table that takes
// bulk rows; else NULL.
Relation bulk_target(Query *query) {
    bool plain_insert = query && query->commandType == CMD_INSERT && !query->returningList &&
                        !query->onConflict && !query->withCheckOptions && !query->hasModifyingCTE &&
                        !reads_citus_tables(query);
    // The shadow is the INSERT's target, locked by the analysis.
    Relation rel = plain_insert ? table_open(rt_fetch(query->resultRelation, query->rtable)->relid,
                                             RowExclusiveLock)
                                : NULL;
    if (rel && !takes_bulk_rows(rel)) {
        table_close(rel, NoLock);
        return NULL;
    }
    return rel;
}

void load(Request *request) {
    MemoryContext caller = CurrentMemoryContext;
    MemoryContext context =
        AllocSetContextCreate(caller, "backfill bulk load", ALLOCSET_DEFAULT_SIZES);
    MemoryContextSwitchTo(context);

    List *queries = analyze(request->sql, request->types);
    Query *query = list_length(queries) == 1 ? linitial_node(Query, queries) : NULL;
    Relation rel = bulk_target(query);
    request->bulk = rel != NULL;
    if (!request->bulk) {
        MemoryContextSwitchTo(caller);
        MemoryContextDelete(context);
        return;
    }

    // Rows may be written frozen only into a table emptied in this very subtransaction (no
    // other transaction can see them before it commits) and only when no earlier snapshot of
    // this one is still in use (it would see rows it must not). The query cannot read the
    // shadow: its source was checked when the job started, before any table had that name.
    InvalidateCatalogSnapshot();
    bool freeze = compat::storage_new_in_this_subtransaction(rel) &&
                  ThereAreNoPriorRegisteredSnapshots() && ThereAreNoReadyPortals();

    ParamListInfo params = bound_params(request);
    PlannedStmt *plan = plan_select(request, query, rel, params);
    Loader *loader = new_loader(rel, context, freeze);
    run_into(loader, plan, params, request->reported);
    request->rows = loader->rows;
    table_close(rel, NoLock);
    MemoryContextSwitchTo(caller);
    MemoryContextDelete(context);
}

}  // namespace

std::optional<uint64_t> insert_select(const std::string &insert, const std::string &reported,
                                      Oid type, const std::string &lower,
                                      const std::string &upper) {
    Request request{insert.c_str(), reported.c_str(), {type, type}, {lower.c_str(), upper.c_str()},
                    false, 0};
    pg::call([&] { load(&request); });
    if (!request.bulk)
        return std::nullopt;
    return request.rows;
}

}  // namespace bulk_load
