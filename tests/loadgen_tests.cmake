# Load generator tests (see tests/CMakeLists.txt): duet-loadgen against real
# duet-cloud and duet-edge processes on loopback. duet_test_process comes
# from cloud_tests.cmake.
if(TARGET duet-cloud AND TARGET duet-edge AND TARGET duet-loadgen)
  duet_test(loadgen_integration_test
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/loadgen_integration_test.cc
    LIBS duet_test_process duet_test_util duet_proto nlohmann_json::nlohmann_json)
  add_dependencies(loadgen_integration_test duet-cloud duet-edge duet-loadgen)
endif()

# bench/e2e --quick produces its CSV, Markdown table and PNG plots (issue 5).
if(TARGET duet-cloud AND TARGET duet-loadgen AND TARGET duet-model)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  add_test(NAME bench_e2e_quick
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/bench_e2e_quick_test.py
            --root ${CMAKE_SOURCE_DIR} --build ${CMAKE_BINARY_DIR})
  set_tests_properties(bench_e2e_quick PROPERTIES
    LABELS bench TIMEOUT 900 RESOURCE_LOCK duet_deploy_stack)
endif()
