# Load generator tests (see tests/CMakeLists.txt).
