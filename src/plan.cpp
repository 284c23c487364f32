// Partition discovery and start-time checks (see plan.hpp).
#include "plan.hpp"

#include "compat.hpp"
#include "guc.hpp"
#include "spi.hpp"

#include <functional>

extern "C" {
#include "access/relation.h"
#include "access/table.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/tablecmds.h"
#include "nodes/makefuncs.h"
#include "partitioning/partbounds.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "executor/spi.h"
}

namespace plan {

std::string Target::qualified() const { return spi::qualified(schema, name); }

namespace {

// What the catalogs say about the target, read in one guarded pass.
struct RawTarget {
    bool exists;
    char relkind;
    char strategy;
    int key_columns;
    bool key_is_expression;
    Oid key_type;
    char *key_column;
    char *schema;
    char *name;
};

RawTarget read_target(Oid target) {
    RawTarget raw{};
    pg::call([&] {
        Relation rel = try_relation_open(target, AccessShareLock);
        if (!rel)
            return;
        raw.exists = true;
        raw.relkind = rel->rd_rel->relkind;
        raw.schema = get_namespace_name(RelationGetNamespace(rel));
        raw.name = pstrdup(RelationGetRelationName(rel));
        if (raw.relkind == RELKIND_PARTITIONED_TABLE) {
            PartitionKey key = RelationGetPartitionKey(rel);
            raw.strategy = key->strategy;
            raw.key_columns = key->partnatts;
            raw.key_is_expression = key->partattrs[0] == 0;
            raw.key_type = key->parttypid[0];
            if (!raw.key_is_expression)
                raw.key_column = get_attname(target, key->partattrs[0], false);
        }
        relation_close(rel, NoLock);
    });
    return raw;
}

// Runs the cast of a bound (sql: $1 cast, and whether it casts back to the same value) and
// returns the value in the caller's memory context; lossless says whether it casts back.
Datum convert_bound(const std::string &sql, const Bound &bound, Oid from_type, Oid key_type,
                    bool &lossless) {
    Datum result = (Datum)0;
    pg::call([&] {
        Oid argtypes[1] = {from_type};
        Datum values[1] = {bound.value};
        if (SPI_execute_with_args(sql.c_str(), 1, argtypes, values, NULL, true, 1) !=
                SPI_OK_SELECT ||
            SPI_processed != 1)
            elog(ERROR, "backfill: bound conversion returned no row");
        bool isnull;
        Datum converted = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
                                        &isnull);
        Datum same = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
        lossless = !isnull && DatumGetBool(same);
        int16 typlen;
        bool typbyval;
        get_typlenbyval(key_type, &typlen, &typbyval);
        result = SPI_datumTransfer(converted, typbyval, typlen);
    });
    return result;
}

// Converts a caller's bound to the key type in the caller's session; a lossy cast is an error.
Datum to_key_type(const Bound &bound, Oid key_type, const char *which) {
    if (bound.is_null)
        throw pg::Failure(ERRCODE_NULL_VALUE_NOT_ALLOWED, pg::fmt("%1% must not be NULL", which),
                          "", "Give both bounds of the range, e.g. '2024-01-01' and '2024-07-01'.");
    if (bound.type == key_type)
        return bound.value;
    Oid from_type = bound.type == UNKNOWNOID ? TEXTOID : bound.type;
    bool textual = from_type == TEXTOID || from_type == VARCHAROID || from_type == BPCHAROID;
    Datum result = (Datum)0;
    char *type_name = nullptr;
    char *key_type_name = nullptr;
    char *qualified_type = nullptr, *qualified_key_type = nullptr;
    pg::call([&] {
        type_name = format_type_be(from_type);
        key_type_name = format_type_be(key_type);
        qualified_type = format_type_be_qualified(from_type);
        qualified_key_type = format_type_be_qualified(key_type);
    });
    // Converted in the caller's session for its TimeZone and DateStyle, but not with its
    // search_path: a type or `=` planted on that path must not be the one used.
    std::string cast = pg::fmt("CAST($1 AS %1%)", qualified_key_type);
    std::string sql = textual ? pg::fmt("SELECT %1%, true", cast)
                              : pg::fmt("SELECT %1%, CAST(%1% AS %2%) OPERATOR(pg_catalog.=) $1",
                                        cast, qualified_type);
    int level = guc::push({{"search_path", "pg_catalog, pg_temp"}});
    bool lossless = true;
    std::string cause;
    try {
        result = convert_bound(sql, bound, from_type, key_type, lossless);
    } catch (const pg::Error &e) {
        cause = e.what();
    }
    if (!cause.empty())
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("%1% cannot be converted to the partition key's type %2%",
                                  which, key_type_name),
                          cause, "Give the bound as a value of the key's type.");
    if (!lossless)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("%1% does not convert exactly to the partition key's type %2%",
                                  which, key_type_name),
                          "Converting it would change its value, so the range would not be the "
                          "one asked for.",
                          "Give a bound that is a value of the key's type.");
    guc::pop(level);  // (an error leaves it to the transaction's abort)
    return result;
}

// One partition as the catalogs describe it; comparisons are against the requested range.
struct RawPartition {
    Oid oid;
    char relkind;
    bool is_default;
    bool lower_infinite, upper_infinite;  // MINVALUE / MAXVALUE
    char *schema, *name, *lower, *upper;
    int lower_vs_from, lower_vs_to, upper_vs_from, upper_vs_to;
    int64 estimated_rows, estimated_bytes;
};

struct RawPartitions {
    int count;
    RawPartition *items;
    int from_vs_to;
    char *from, *to;
};

int sign(int32 cmp) { return cmp < 0 ? -1 : (cmp > 0 ? 1 : 0); }

// One partition's name, size estimate and bound, compared with [from, to); runs inside pg::call.
void read_partition(Oid oid, Oid output, FmgrInfo *cmp, Oid collation, Datum from, Datum to,
                    RawPartition *p) {
    p->oid = oid;
    p->relkind = get_rel_relkind(p->oid);
    p->schema = get_namespace_name(get_rel_namespace(p->oid));
    p->name = get_rel_name(p->oid);
    HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(p->oid));
    if (!HeapTupleIsValid(tuple))
        elog(ERROR, "backfill: cache lookup failed for relation %u", p->oid);
    bool isnull;
    Datum bound = SysCacheGetAttr(RELOID, tuple, Anum_pg_class_relpartbound, &isnull);
    Form_pg_class form = (Form_pg_class)GETSTRUCT(tuple);
    p->estimated_rows = form->reltuples < 0 ? 0 : (int64)form->reltuples;
    ReleaseSysCache(tuple);
    PartitionBoundSpec *spec =
        castNode(PartitionBoundSpec, stringToNode(TextDatumGetCString(bound)));
    p->is_default = spec->is_default;
    if (p->is_default)
        return;
    PartitionRangeDatum *lower = linitial_node(PartitionRangeDatum, spec->lowerdatums);
    PartitionRangeDatum *upper = linitial_node(PartitionRangeDatum, spec->upperdatums);
    auto vs = [&](Datum a, Datum b) {
        return sign(DatumGetInt32(FunctionCall2Coll(cmp, collation, a, b)));
    };
    p->lower_infinite = lower->kind != PARTITION_RANGE_DATUM_VALUE;
    p->upper_infinite = upper->kind != PARTITION_RANGE_DATUM_VALUE;
    if (p->lower_infinite) {
        p->lower = pstrdup("MINVALUE");
        p->lower_vs_from = p->lower_vs_to = -1;
    } else {
        Datum lo = castNode(Const, lower->value)->constvalue;
        p->lower = OidOutputFunctionCall(output, lo);
        p->lower_vs_from = vs(lo, from);
        p->lower_vs_to = vs(lo, to);
    }
    if (p->upper_infinite) {
        p->upper = pstrdup("MAXVALUE");
        p->upper_vs_from = p->upper_vs_to = 1;
    } else {
        Datum hi = castNode(Const, upper->value)->constvalue;
        p->upper = OidOutputFunctionCall(output, hi);
        p->upper_vs_from = vs(hi, from);
        p->upper_vs_to = vs(hi, to);
    }
}

// Reads every partition's bound and compares it with [from, to) using the key's own ordering.
RawPartitions read_partitions(Oid target, Oid key_type, Datum from, Datum to) {
    RawPartitions raw{};
    pg::call([&] {
        Relation rel = table_open(target, AccessShareLock);
        PartitionKey key = RelationGetPartitionKey(rel);
        PartitionDesc desc = RelationGetPartitionDesc(rel, true);
        FmgrInfo *cmp = &key->partsupfunc[0];
        Oid collation = key->partcollation[0];
        Oid output;
        bool varlena;
        getTypeOutputInfo(key_type, &output, &varlena);
        raw.from = OidOutputFunctionCall(output, from);
        raw.to = OidOutputFunctionCall(output, to);
        raw.from_vs_to = sign(DatumGetInt32(FunctionCall2Coll(cmp, collation, from, to)));
        raw.count = desc->nparts;
        raw.items = (RawPartition *)palloc0(sizeof(RawPartition) * (desc->nparts + 1));
        for (int i = 0; i < desc->nparts; i++)
            read_partition(desc->oids[i], output, cmp, collation, from, to, &raw.items[i]);
        table_close(rel, NoLock);
    });
    return raw;
}

[[noreturn]] void refuse(const std::string &message, const std::string &detail,
                         const std::string &hint, int sqlstate = ERRCODE_INVALID_PARAMETER_VALUE) {
    throw pg::Failure(sqlstate, message, detail, hint);
}

// Refuses a target backfill cannot replace partitions of, saying what it is.
void check_target(const RawTarget &raw, const std::string &name) {
    // Not every relation is a table: say what it is.
    const char *kind = raw.relkind == RELKIND_VIEW         ? "view"
                       : raw.relkind == RELKIND_MATVIEW    ? "materialized view"
                       : raw.relkind == RELKIND_FOREIGN_TABLE ? "foreign table"
                       : raw.relkind == RELKIND_SEQUENCE   ? "sequence"
                       : raw.relkind == RELKIND_INDEX ||
                               raw.relkind == RELKIND_PARTITIONED_INDEX
                           ? "index"
                           : nullptr;
    if (kind)
        refuse(pg::fmt("%1% is a %2%, not a partitioned table", name, kind),
               "backfill replaces the partitions of a RANGE-partitioned table one at a time.",
               "Pass the partitioned table itself.", ERRCODE_WRONG_OBJECT_TYPE);
    if (raw.relkind != RELKIND_PARTITIONED_TABLE)
        refuse(pg::fmt("table %1% is not partitioned", name),
               "backfill replaces the partitions of a RANGE-partitioned table one at a time.",
               "Partition the table with PARTITION BY RANGE, or backfill it with a plain "
               "INSERT ... SELECT.",
               ERRCODE_WRONG_OBJECT_TYPE);
    if (raw.strategy != PARTITION_STRATEGY_RANGE)
        refuse(pg::fmt("table %1% is not partitioned by RANGE", name),
               "backfill works on ranges of a RANGE partition key; LIST and HASH partitions "
               "have no range to backfill.",
               "Use a table partitioned with PARTITION BY RANGE.", ERRCODE_WRONG_OBJECT_TYPE);
    if (raw.key_columns != 1)
        refuse(pg::fmt("table %1% has a partition key of %2% columns", name, raw.key_columns),
               "backfill supports a RANGE partition key of a single column.",
               "Backfill a table whose partition key is one column.",
               ERRCODE_FEATURE_NOT_SUPPORTED);
    if (raw.key_is_expression)
        refuse(pg::fmt("table %1% is partitioned by an expression", name),
               "backfill supports a partition key that is a plain column.",
               "Backfill a table partitioned by a column.", ERRCODE_FEATURE_NOT_SUPPORTED);
}

// Checks a partition overlapping [from, to): problem() refuses it at once, or (for
// backfill_plan) notes it on the partition's row.
void check_partition(const RawPartition &p, const RawPartitions &parts,
                     const std::function<void(const std::string &, const std::string &,
                                              const std::string &, int)> &problem) {
    std::string pname = spi::qualified(p.schema, p.name);
    if (p.lower_infinite || p.upper_infinite)
        problem(pg::fmt("partition %1% is bounded by %2%", pname,
                       p.lower_infinite ? "MINVALUE" : "MAXVALUE"),
               "A partition with an unbounded side has no range a source can be asked for.",
               "Choose a range that leaves this partition out.",
               ERRCODE_FEATURE_NOT_SUPPORTED);
    if (p.lower_vs_from < 0 || p.upper_vs_to > 0) {
        std::string aligned_from = p.lower_vs_from < 0 ? p.lower : parts.from;
        std::string aligned_to = p.upper_vs_to > 0 ? p.upper : parts.to;
        problem(pg::fmt("partition %1% only partly overlaps the range [%2%, %3%)", pname,
                       parts.from, parts.to),
               pg::fmt("Partition %1% holds [%2%, %3%); backfill replaces whole partitions.",
                       pname, p.lower, p.upper),
               pg::fmt("Align the range with the partition bounds, e.g. range_from => '%1%', "
                       "range_to => '%2%'.",
                       aligned_from, aligned_to),
                ERRCODE_INVALID_PARAMETER_VALUE);
    }
    if (p.relkind == RELKIND_PARTITIONED_TABLE)
        problem(pg::fmt("partition %1% is itself partitioned", pname),
               "Sub-partitioned partitions are not supported yet.",
               "Backfill the sub-partitioned table itself, with its own range.",
               ERRCODE_FEATURE_NOT_SUPPORTED);
    if (p.relkind != RELKIND_RELATION)
        problem(pg::fmt("partition %1% is not a plain table", pname),
               "Foreign-table partitions cannot be rebuilt by backfill.",
               "Choose a range that leaves this partition out.",
               ERRCODE_WRONG_OBJECT_TYPE);
}

}  // namespace

Target resolve(Oid target_oid, const Bound &from, const Bound &to,
               std::vector<Problem> *partition_problems) {
    RawTarget raw = read_target(target_oid);
    if (!raw.exists)
        refuse(pg::fmt("relation with OID %1% does not exist", target_oid), "",
               "Pass the partitioned table's name, e.g. 'public.events'.",
               ERRCODE_UNDEFINED_TABLE);
    Target target;
    target.oid = target_oid;
    target.schema = raw.schema;
    target.name = raw.name;
    std::string name = target.qualified();
    check_target(raw, name);
    target.key_column = raw.key_column;
    target.key_type = raw.key_type;

    Datum from_value = to_key_type(from, raw.key_type, "range_from");
    Datum to_value = to_key_type(to, raw.key_type, "range_to");

    int level = guc::push(guc::canonical());
    RawPartitions parts = read_partitions(target_oid, raw.key_type, from_value, to_value);
    guc::pop(level);
    target.range_from = parts.from;
    target.range_to = parts.to;
    if (parts.from_vs_to >= 0)
        refuse(pg::fmt("range_from (%1%) must be less than range_to (%2%)", parts.from, parts.to),
               "The range is [range_from, range_to): range_from inclusive, range_to exclusive.",
               "Swap the bounds, or give a non-empty range.");

    for (int i = 0; i < parts.count; i++) {
        const RawPartition &p = parts.items[i];
        if (p.is_default)
            continue;
        bool overlaps = p.lower_vs_to < 0 && p.upper_vs_from > 0;
        if (!overlaps)
            continue;
        bool refused = false;
        check_partition(p, parts, [&](const std::string &message, const std::string &detail,
                                      const std::string &hint, int sqlstate) {
            if (!partition_problems)
                refuse(message, detail, hint, sqlstate);
            if (!refused)
                partition_problems->push_back(
                    Problem{p.oid, pg::Failure(sqlstate, message, detail, hint), false});
            refused = true;
        });
        target.partitions.push_back(
            {p.oid, p.schema, p.name, p.lower, p.upper, p.estimated_rows, 0});
    }
    if (target.partitions.empty())
        refuse(pg::fmt("no partition of %1% overlaps the range [%2%, %3%)", name, parts.from,
                       parts.to),
               "There is nothing to backfill in that range.",
               pg::fmt("SELECT * FROM backfill_plan('%1%', ...) lists the partitions a range "
                       "covers; check the bounds of the partitions of %1%.",
                       name));
    return target;
}

}  // namespace plan
