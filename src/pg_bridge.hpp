// The only place where C++ exceptions meet PostgreSQL's ereport/longjmp.
//
// Two rules keep the two error mechanisms apart:
//  - C++ code calls anything that may ereport(ERROR) through pg::call. The callable runs inside
//    PG_TRY and must hold no live C++ object with a destructor while it calls PostgreSQL; an
//    ERROR comes back as a pg::Error exception carrying a copy of the error.
//  - Every SQL-callable function and the worker enter C++ through pg::entry, which catches every
//    C++ exception and raises it as a PostgreSQL ERROR only after the catch block has ended.
#pragma once

extern "C" {
#include "postgres.h"
}

#include <boost/format.hpp>
#include <exception>
#include <string>
#include <utility>

namespace pg {

// A PostgreSQL ERROR caught by pg::call; `data` is a copy made in the caller's memory context.
class Error : public std::exception {
public:
    explicit Error(ErrorData *data) : data_(data) {}
    const char *what() const noexcept override;
    ErrorData *data() const { return data_; }
    int sqlstate() const { return data_->sqlerrcode; }

private:
    ErrorData *data_;
};

// An error of our own: SQLSTATE, message, and the detail and hint that say what to do.
class Failure : public std::exception {
public:
    Failure(int sqlstate, std::string message, std::string detail = "", std::string hint = "")
        : sqlstate_(sqlstate), message_(std::move(message)), detail_(std::move(detail)),
          hint_(std::move(hint)) {}
    const char *what() const noexcept override { return message_.c_str(); }
    int sqlstate() const { return sqlstate_; }
    const std::string &detail() const { return detail_; }
    const std::string &hint() const { return hint_; }

private:
    int sqlstate_;
    std::string message_, detail_, hint_;
};

// Formats message text with Boost.Format: fmt("partition %1% ...", name).
template <typename... Args>
std::string fmt(const char *pattern, Args &&...args) {
    boost::format f(pattern);
    (void)std::initializer_list<int>{((f % std::forward<Args>(args)), 0)...};
    return f.str();
}

// Low-level guard: runs fn(arg) inside PG_TRY; returns nullptr on success, else the copied error.
ErrorData *try_pg(void (*fn)(void *), void *arg);

// Runs fn, which may ereport(ERROR), and turns an ERROR into pg::Error.
template <typename Fn>
void call(Fn &&fn) {
    std::exception_ptr cxx_error;
    struct Thunk {
        Fn *fn;
        std::exception_ptr *cxx_error;
        static void run(void *self) {
            auto *t = static_cast<Thunk *>(self);
            try {
                (*t->fn)();
            } catch (...) {
                *t->cxx_error = std::current_exception();
            }
        }
    } thunk{&fn, &cxx_error};
    if (ErrorData *error = try_pg(&Thunk::run, &thunk))
        throw Error(error);
    if (cxx_error)
        std::rethrow_exception(cxx_error);
}

// What an entry point caught, copied out of the exception so that no C++ object is alive when
// the PostgreSQL error is raised.
struct CaughtError {
    ErrorData *pg_error = nullptr;  // a PostgreSQL error to re-throw as it was
    bool caught = false;
    int sqlstate = 0;
    char message[4096] = "";
    char detail[2048] = "";
    char hint[2048] = "";
};

// Copies the current exception into `out`. Call only inside a catch block; calls no PostgreSQL.
void capture_current(CaughtError &out) noexcept;

// Raises what capture_current copied as a PostgreSQL ERROR.
[[noreturn]] void raise(const CaughtError &caught);

// Runs fn; on a C++ exception, fills `caught`. All exception objects are gone when it returns.
template <typename Fn>
Datum run_catching(Fn &fn, CaughtError &caught) {
    try {
        return fn();
    } catch (...) {
        capture_current(caught);
    }
    return (Datum)0;
}

// Entry point of every SQL-callable function and of the worker: runs fn and converts any C++
// exception into a PostgreSQL ERROR once no C++ frame or object is left to unwind.
template <typename Fn>
Datum entry(Fn &&fn) {
    CaughtError caught;
    Datum result = run_catching(fn, caught);
    if (caught.caught)
        raise(caught);
    return result;
}

}  // namespace pg
