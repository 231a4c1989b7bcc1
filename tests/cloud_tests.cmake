# Integration tests of duet-cloud (see tests/CMakeLists.txt).

# Process helper shared by every multi-process suite (cloud, edge, ...).
add_library(duet_test_process STATIC ${CMAKE_CURRENT_LIST_DIR}/test_process.cc)
target_link_libraries(duet_test_process PUBLIC duet_proto duet_test_util
                      gRPC::grpc++ absl::status absl::statusor absl::strings absl::time)

duet_test(cloud_integration_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/cloud_integration_test.cc
  LIBS duet_test_process duet_test_util duet_model)
add_dependencies(cloud_integration_test duet-cloud)

# Reliability suites of issue 7: the bad-input matrix, hot model reload and
# overload (each starts its own duet-cloud).
foreach(t cloud_bad_input_test cloud_reload_test cloud_overload_test)
  duet_test(${t}
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/${t}.cc
    LIBS duet_test_process duet_test_util duet_model)
  add_dependencies(${t} duet-cloud)
endforeach()
