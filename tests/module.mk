# Unit tests (tests/unit/<layer>/test_<module>.c, one binary each) and fuzz
# targets (tests/fuzz/fuzz_<parser>.c).  The list of every test the suite
# runs, in order, is tests/list.
UNIT_SUPPORT +=
UNIT_TESTS += $(wildcard tests/unit/*/test_*.c)
FUZZ_TARGETS += $(wildcard tests/fuzz/fuzz_*.c)
