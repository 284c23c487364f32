// What the preflight*.cpp files share: the checks plan::problems() runs, each adding the
// problems it finds to `out`, and the helpers that word them.
#pragma once

#include "plan.hpp"
#include "spi.hpp"

#include <string>
#include <utility>
#include <vector>

namespace plan::preflight {

// The oids of the target's partitions (and the target) as an oid[] literal.
std::string oid_array(const Target &target, bool with_target);
// The name of the target, one of its partitions, or any relation.
std::string name_of(const Target &target, Oid rel);
// The first column of each row, joined.
std::string join_rows(const spi::Result &result, const char *separator = ", ");
// Rows of (relation oid, text) into one list of texts per relation, in the rows' order.
std::vector<std::pair<Oid, std::string>> by_relation(const spi::Result &result);
// A problem of the whole target, or of one partition, that refuses the start.
Problem of_target(int sqlstate, std::string what, std::string why, std::string fix);
Problem of_partition(Oid partition, int sqlstate, std::string what, std::string why,
                     std::string fix);

// preflight_rights.cpp: the job's rights on the tables, their schemas and tablespaces.
void check_ownership(const Target &target, Oid run_as, std::vector<Problem> &out);
void check_tablespaces(const Target &target, Oid run_as, std::vector<Problem> &out);

// preflight_objects.cpp: what else is bound to the partitions.
void check_default_partition(const Target &target, std::vector<Problem> &out);
void check_referencing_foreign_keys(const Target &target, std::vector<Problem> &out);
void check_dependents(const Target &target, std::vector<Problem> &out);

// preflight_publications.cpp: publications that would publish a shadow or miss a swap.
void check_publications_of_every_table(const Target &target, std::vector<Problem> &out);
void check_publications(const Target &target, std::vector<Problem> &out);
void check_publication_owners(const Target &target, Oid run_as, std::vector<Problem> &out);

// preflight_citus.cpp: a target Citus distributes or manages.
void check_citus(const Target &target, std::vector<Problem> &out);

// preflight.cpp: another tool rewriting a partition now.
void check_tools_at_work(const Target &target, std::vector<Problem> &out);

}  // namespace plan::preflight
