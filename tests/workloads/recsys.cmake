# recsys_tests: the recsys workload's tests, one GoogleTest binary with the
# MPI test main, run under mpiexec with 1 and 2 ranks.
add_executable(recsys_tests
  ${CMAKE_CURRENT_SOURCE_DIR}/test_recsys.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/../mpi/mpi_test_main.cpp
)
target_include_directories(recsys_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/../mpi)
target_link_libraries(recsys_tests PRIVATE embtrain_train GTest::gtest embtrain_warnings)
target_compile_definitions(recsys_tests PRIVATE
  EMBTRAIN_RECSYS_SAMPLE="${PROJECT_SOURCE_DIR}/configs/data/recsys_sample.tsv")

embtrain_add_mpi_tests(workloads.recsys_np recsys_tests 1 2)
