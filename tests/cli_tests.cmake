# Command-line conventions of every binary (DESIGN.md §8): --help, bad flags,
# exit codes, bound ports in the logs. duet_test_process comes from
# cloud_tests.cmake.
duet_test(cli_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/cli_test.cc
  LIBS duet_test_process duet_test_util)
add_dependencies(cli_test duet-cloud duet-edge duet-loadgen duet-health-probe
                 duet-model)
