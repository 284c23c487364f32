// What the SQL-callable functions share: reading arguments, SPI with our settings, the checks
// every function that acts on a job makes.
#pragma once

#include "control.hpp"
#include "guc.hpp"
#include "spi.hpp"

extern "C" {
#include "fmgr.h"
#include "utils/lsyscache.h"
}

namespace sql {

// The arguments of an SQL-callable function, read as C++ values.
class Args {
public:
    explicit Args(FunctionCallInfo fcinfo) : fcinfo(fcinfo) {}
    bool null(int i) const { return PG_ARGISNULL(i); }
    Datum datum(int i) const { return PG_GETARG_DATUM(i); }
    Oid type(int i) const { return get_fn_expr_argtype(fcinfo->flinfo, i); }

    void require(int i, const char *name) const {
        if (null(i))
            throw pg::Failure(ERRCODE_NULL_VALUE_NOT_ALLOWED,
                              pg::fmt("%1% must not be NULL", name), "",
                              pg::fmt("Give a value for %1% (an option left out gets its "
                                      "default).",
                                      name));
    }
    int64 int8(int i, const char *name) const {
        require(i, name);
        return PG_GETARG_INT64(i);
    }
    int32 int4(int i, const char *name) const {
        require(i, name);
        return PG_GETARG_INT32(i);
    }
    bool boolean(int i, const char *name) const {
        require(i, name);
        return PG_GETARG_BOOL(i);
    }
    // Any argument as its type's text output; nullopt for NULL.
    spi::Text text(int i) const {
        if (null(i))
            return std::nullopt;
        char *out = nullptr;
        Oid argtype = type(i);
        Datum value = datum(i);
        pg::call([&] {
            Oid output;
            bool varlena;
            getTypeOutputInfo(argtype, &output, &varlena);
            out = OidOutputFunctionCall(output, value);
        });
        return std::string(out);
    }
    std::string text(int i, const char *name) const {
        require(i, name);
        return *text(i);
    }

private:
    FunctionCallInfo fcinfo;
};

// Milliseconds in an interval given as text.
double interval_ms(const std::string &interval);

// Checks an interval option: zero or positive, or (positive) strictly positive; returns its ms.
double require_interval(const std::string &value, const char *name, bool positive);

// Runs fn with SPI connected and our canonical settings in force. SPI's memory goes with it: a
// result that points to memory (a text) is built from fn's C++ value after this returns.
template <typename Fn>
auto with_spi(Fn &&fn) -> decltype(fn()) {
    spi::connect();
    int level = guc::push(guc::canonical());
    auto result = fn();
    guc::pop(level);
    spi::finish();
    return result;
}

// A job the caller may act on: it must own the job's target (or be a member of its owner).
control::Job job_for_caller(int64 id);

// True for the unique violation of the one-live-job-per-target index (not any other).
bool is_one_live_job_violation(const pg::Error &e);

// Turns a unique violation of the one-live-job-per-target index into the error a DBA can use.
[[noreturn]] void another_job_on_target(Oid target, const std::string &target_name);
// The same refusal, if a live job is on the target now (for backfill_plan).
std::optional<pg::Failure> live_job_on(Oid target, const std::string &target_name);

}  // namespace sql
