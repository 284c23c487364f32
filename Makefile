# PGXS build of the backfill extension (the primary build; CMakeLists.txt builds the same module).
MODULE_big = backfill
EXTENSION  = backfill
DATA       = sql/backfill--1.0.sql sql/backfill--1.0--1.1.sql
PGFILEDESC = "backfill - shadow-and-swap backfills of partitioned tables"

SRCS = $(wildcard src/*.cpp)
OBJS = $(SRCS:.cpp=.o)

# pg_regress suites live in sql/ and expected/ beside the extension script.
REGRESS      = $(filter-out backfill--%,$(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=test/tmp_check \
               --temp-config=test/regress.conf --load-extension=backfill
ISOLATION      = $(basename $(notdir $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=test/isolation_output \
                 --temp-instance=test/tmp_check_iso --temp-config=test/regress.conf \
                 --load-extension=backfill
TAP_TESTS   = 1
PROVE_TESTS = test/t/*.pl

PG_CONFIG ?= pg_config
BF_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
              -Wno-register -fexceptions
SHLIB_LINK  = -lstdc++
EXTRA_CLEAN = results regression.* test/tmp_check test/tmp_check_iso \
              test/isolation_output test/log tmp_check

# No JIT bitcode: the server inlines C, not C++.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS knows how to compile C; compile C++ with the server's flags less the C-only ones.
C_ONLY_FLAGS = -Wmissing-prototypes -Wdeclaration-after-statement -std=gnu99 \
               -Werror=implicit-function-declaration \
               -fexcess-precision=standard -Wimplicit-fallthrough=3 -Wcast-function-type
%.o: %.cpp $(wildcard src/*.hpp)
	$(CXX) $(filter-out $(C_ONLY_FLAGS),$(CFLAGS)) $(CFLAGS_SL) $(BF_CXXFLAGS) $(CPPFLAGS) -c -o $@ $<

.PHONY: test demo bench
test:
	./test/run_all.sh
demo:
	./demo/run_demo.sh
bench:
	./bench/run_bench.sh
