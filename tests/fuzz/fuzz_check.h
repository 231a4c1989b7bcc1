// FUZZ_CHECK(condition): a fuzz target's invariant. On failure it names the
// file, line and condition on stderr before trapping, so a crash report from
// CI says which invariant broke without a debugger.
#ifndef DUET_TESTS_FUZZ_FUZZ_CHECK_H_
#define DUET_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>

#define FUZZ_CHECK(condition)                                          \
  do {                                                                 \
    if (!(condition)) {                                                \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, \
                   __LINE__, #condition);                              \
      __builtin_trap();                                                \
    }                                                                  \
  } while (false)

#endif  // DUET_TESTS_FUZZ_FUZZ_CHECK_H_
