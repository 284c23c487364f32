// backfill.note_key(): the row trigger that logs the key of each row written into a partition
// while its shadow is built (see catch_up.hpp). Arguments: job, task, the key's column numbers.
// It runs in the writer's transaction, so it does little: the key's values go into the log as
// they are (no text, so no DateStyle or TimeZone of the writer's can change them), through one
// prepared INSERT per task that the session keeps.
#include "control.hpp"
#include "pg_bridge.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

PG_FUNCTION_INFO_V1(backfill_note_key);
}

#include <cctype>
#include <cstdio>
#include <cstring>

namespace {

constexpr int kCachedInserts = 8;  // tasks a session writes into at the same time, at most

struct CachedInsert {
    Oid trigger;
    char sql[128];
    SPIPlanPtr plan;
};
CachedInsert cached[kCachedInserts];
int next_slot = 0;

bool all_digits(const char *s) {
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

// The prepared INSERT into the key log named in `sql`, made once per trigger and session.
SPIPlanPtr insert_plan(Oid trigger, const char *sql, int nkeys, Oid *types) {
    for (CachedInsert &c : cached)
        if (c.plan && c.trigger == trigger && strcmp(c.sql, sql) == 0)
            return c.plan;
    CachedInsert &slot = cached[next_slot];
    next_slot = (next_slot + 1) % kCachedInserts;
    if (slot.plan)
        SPI_freeplan(slot.plan);
    slot.plan = nullptr;
    SPIPlanPtr plan = SPI_prepare(sql, nkeys, types);
    if (!plan)
        elog(ERROR, "backfill: could not prepare \"%s\": %s", sql,
             SPI_result_code_string(SPI_result));
    SPI_keepplan(plan);
    slot.trigger = trigger;
    snprintf(slot.sql, sizeof slot.sql, "%s", sql);
    slot.plan = plan;
    return plan;
}

void log_key(SPIPlanPtr plan, HeapTuple tuple, TupleDesc desc, int nkeys, const int *attnums) {
    Datum values[INDEX_MAX_KEYS] = {};
    char nulls[INDEX_MAX_KEYS] = {};
    for (int i = 0; i < nkeys; i++) {
        bool isnull;
        values[i] = heap_getattr(tuple, attnums[i], desc, &isnull);
        nulls[i] = isnull ? 'n' : ' ';
    }
    if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "backfill: could not log a written key");
}

bool same_key(HeapTuple a, HeapTuple b, TupleDesc desc, int nkeys, const int *attnums) {
    for (int i = 0; i < nkeys; i++) {
        bool a_null, b_null;
        Datum av = heap_getattr(a, attnums[i], desc, &a_null);
        Datum bv = heap_getattr(b, attnums[i], desc, &b_null);
        Form_pg_attribute att = TupleDescAttr(desc, attnums[i] - 1);
        if (a_null != b_null || (!a_null && !datumIsEqual(av, bv, att->attbyval, att->attlen)))
            return false;
    }
    return true;
}

void note_key(FunctionCallInfo fcinfo) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        elog(ERROR, "backfill.note_key() is a trigger function");
    TriggerData *data = (TriggerData *)fcinfo->context;
    Trigger *trigger = data->tg_trigger;
    TupleDesc desc = RelationGetDescr(data->tg_relation);
    int nkeys = trigger->tgnargs - 2;
    if (!TRIGGER_FIRED_FOR_ROW(data->tg_event) || !TRIGGER_FIRED_AFTER(data->tg_event) ||
        nkeys < 1 || nkeys > INDEX_MAX_KEYS)
        elog(ERROR, "backfill.note_key() must be an AFTER ROW trigger with a key");
    int attnums[INDEX_MAX_KEYS];
    Oid types[INDEX_MAX_KEYS];
    bool key_intact = true;
    for (int i = 0; i < trigger->tgnargs; i++)
        if (!all_digits(trigger->tgargs[i]))
            elog(ERROR, "backfill.note_key(): argument \"%s\" is not a number",
                 trigger->tgargs[i]);
    for (int i = 0; i < nkeys; i++) {
        attnums[i] = atoi(trigger->tgargs[i + 2]);
        key_intact = key_intact && attnums[i] >= 1 && attnums[i] <= desc->natts &&
                     !TupleDescAttr(desc, attnums[i] - 1)->attisdropped;
        types[i] = key_intact ? TupleDescAttr(desc, attnums[i] - 1)->atttypid : InvalidOid;
    }
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "backfill: SPI_connect failed");
    char log[NAMEDATALEN];
    snprintf(log, sizeof log, "keys_%s_%s", trigger->tgargs[0], trigger->tgargs[1]);
    Oid backfill = get_namespace_oid("backfill", true);
    if (!key_intact || !OidIsValid(backfill) || !OidIsValid(get_relname_relid(log, backfill))) {
        // A key column dropped during the build, or a trigger left without its log: the write
        // is noted all the same (the task then rebuilds), never refused.
        // The statement's text is gone before SPI runs it: no C++ object meets an ERROR.
        char sql[128];
        snprintf(sql, sizeof sql, "%s",
                 control::note_write_sql(trigger->tgargs[0], trigger->tgargs[1]).c_str());
        SPI_execute(sql, false, 0);
        SPI_finish();
        return;
    }
    char sql[128];
    int len = snprintf(sql, sizeof sql, "INSERT INTO backfill.%s VALUES (", log);
    for (int i = 0; i < nkeys && len < (int)sizeof sql; i++)
        len += snprintf(sql + len, sizeof sql - len, "%s$%d", i ? ", " : "", i + 1);
    if (len + 2 > (int)sizeof sql)
        elog(ERROR, "backfill.note_key(): too many key columns");
    strcat(sql, ")");
    SPIPlanPtr plan = insert_plan(trigger->tgoid, sql, nkeys, types);
    bool updated = TRIGGER_FIRED_BY_UPDATE(data->tg_event);
    log_key(plan, data->tg_trigtuple, desc, nkeys, attnums);  // the new row, or the old one
    if (updated && !same_key(data->tg_trigtuple, data->tg_newtuple, desc, nkeys, attnums))
        log_key(plan, data->tg_newtuple, desc, nkeys, attnums);
    SPI_finish();
}

}  // namespace

extern "C" Datum backfill_note_key(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        pg::call([&] { note_key(fcinfo); });
        return PointerGetDatum(NULL);
    });
}
