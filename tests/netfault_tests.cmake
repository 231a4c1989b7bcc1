# Real network faults between duet-edge and duet-cloud (issue 16, label
# "netfault"): each test creates two network namespaces joined by
# duet-link-emulator (tests/netem/: TUN devices and a userspace link with
# delay, jitter, loss, rate and partitions; this kernel has no sch_netem),
# runs the cloud in one and the edge and its client in the other, and removes
# them afterwards (docs/NETWORK_FAULTS.md). Needs root, /dev/net/tun and
# iproute2; otherwise every test is skipped with the reason (GTEST_SKIP).
add_library(duet_netem_link STATIC ${CMAKE_CURRENT_LIST_DIR}/netem/link_direction.cc)
target_include_directories(duet_netem_link PUBLIC ${PROJECT_SOURCE_DIR})

add_executable(duet-link-emulator ${CMAKE_CURRENT_LIST_DIR}/netem/link_emulator_main.cc)
target_link_libraries(duet-link-emulator PRIVATE duet_netem_link duet_cli_flags
  absl::flags absl::strings absl::str_format)

duet_test(netem_link_direction_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/netem/link_direction_test.cc
  LIBS duet_netem_link)

add_executable(netfault_test ${CMAKE_CURRENT_LIST_DIR}/netfault_test.cc)
target_link_libraries(netfault_test PRIVATE duet_test_process duet_test_util
  duet_model GTest::gmock GTest::gtest_main)
add_dependencies(netfault_test duet-edge duet-cloud duet-link-emulator)
# Like duet_test() (the target's name as a label), plus the "netfault"
# label, a time limit (each test is 20-50 s of real faults; the suite about
# 2.5 minutes on 2 cores) and one at a time (each measures latency). A list
# does not survive gtest_discover_tests' PROPERTIES, so the properties are set
# by a file CTest reads after the discovered tests (netfault_test_TESTS).
gtest_discover_tests(netfault_test DISCOVERY_TIMEOUT 60
  PROPERTIES ENVIRONMENT "DUET_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/netfault_properties.cmake
  "set_tests_properties(\${netfault_test_TESTS} PROPERTIES\n"
  "  LABELS \"netfault_test;netfault\" TIMEOUT 120\n"
  "  RESOURCE_LOCK duet_netfault)\n")
set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES
  ${CMAKE_CURRENT_BINARY_DIR}/netfault_properties.cmake)
