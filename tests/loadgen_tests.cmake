# Load generator tests (see tests/CMakeLists.txt): duet-loadgen against real
# duet-cloud and duet-edge processes on loopback. duet_test_process comes
# from cloud_tests.cmake.
if(TARGET duet-cloud AND TARGET duet-edge AND TARGET duet-loadgen)
  duet_test(loadgen_integration_test
    SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/loadgen_integration_test.cc
    LIBS duet_test_process duet_test_util duet_proto)
  add_dependencies(loadgen_integration_test duet-cloud duet-edge duet-loadgen)
endif()
