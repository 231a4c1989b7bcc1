# Integration tests of duet-cloud (see tests/CMakeLists.txt).
