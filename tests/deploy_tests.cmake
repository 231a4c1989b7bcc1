# Deployment and observability tests (see tests/CMakeLists.txt).
