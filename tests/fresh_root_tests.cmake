# The README's two commands on a freshly bootstrapped Debian 12
# (tests/deploy/fresh_root_test.py): the main job in full, then the test
# command's set-up, configure and one test binary. Minutes of apt and
# compiling on both cores: it runs alone. Skipped (exit 77) without root or
# debootstrap, and inside a fresh root.
add_test(NAME fresh_root
         COMMAND ${Python3_EXECUTABLE}
                 ${CMAKE_CURRENT_SOURCE_DIR}/deploy/fresh_root_test.py)
set_tests_properties(fresh_root PROPERTIES
  LABELS deploy TIMEOUT 2700 SKIP_RETURN_CODE 77 RUN_SERIAL TRUE)
