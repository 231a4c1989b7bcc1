# duet-loadgen: see tools/CMakeLists.txt
